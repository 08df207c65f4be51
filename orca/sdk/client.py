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
    """A client for one orca cluster; see `orca.sdk.transport` for the retry and redirect contract.

    `api` is one master URL, a comma-separated string of them, or a list. `timeout` bounds each socket
    read; `connect_timeout` each connect (short: a master that does not accept within it is skipped for
    the next one, and tried last for a while, see `orca.sdk.connections`); `retries` the extra passes
    over the masters: the first 40 after ~30-60 ms each (about 2 s, enough to ride through a leader
    failover), the rest after `backoff_s` doubling, capped at 2 s (or a 503's `Retry-After`, when
    longer). `on_skip(url, error)` is told of every master skipped because it could not be reached.
    `ca_file` is the CA for https masters (system store if None), for requests and streams alike. A `429`
    is waited out as its `Retry-After` says, at most `rate_limit_retries` times and `rate_limit_wait_s`
    seconds per call. `discover()` learns the other masters from any one of them.
    """

