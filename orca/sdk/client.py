"""`Client`: every call of the SDK on one object, assembled from the modules of `orca.sdk`."""

from __future__ import annotations

from orca.client_orchestry import OrchestryMixin
from orca.sdk.access import AccessMixin
from orca.sdk.cluster import ClusterMixin
from orca.sdk.services import ServicesMixin
from orca.sdk.streams import StreamsMixin
from orca.sdk.waiting import WaitingMixin

__all__ = ["Client"]


class Client(ServicesMixin, ClusterMixin, AccessMixin, StreamsMixin, WaitingMixin, OrchestryMixin):
    """A client for one orca cluster; see the module docstring for the retry and redirect contract.

    `api` is one master URL, a comma-separated string of them, or a list. `timeout` bounds each socket
    read; `connect_timeout` each connect (short: a master that does not accept within it is skipped for
    the next one, and tried last for a while, see `orca.sdk.transport`); `retries` the extra passes over
    the masters: the first 40 after ~30-60 ms each (about 2 s, enough to ride through a leader failover),
    the rest after `backoff_s` doubling, capped at 2 s. `on_skip(url, error)` is told of every master
    skipped because it could not be reached. `ca_file` is the CA for https masters (system store if None).
    `discover()` learns the other masters from any one of them.
    """

