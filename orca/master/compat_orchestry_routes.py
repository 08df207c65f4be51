"""Registers Orchestry's API (`compat_orchestry*`) on a master; `orca.master.main` calls this once."""

from __future__ import annotations

from orca.master.api import MasterApi
from orca.master.api_traffic import TrafficEndpoints
from orca.master.compat_orchestry import OrchestryApps
from orca.master.compat_orchestry_logs import OrchestryLogs
from orca.master.compat_orchestry_system import OrchestrySystem

__all__ = ["add_orchestry_routes"]


def add_orchestry_routes(api: MasterApi, traffic: TrafficEndpoints, *, api_listen: tuple[str, int],
                         raft_listen: tuple[str, int], election_timeout_s: float) -> None:
    apps = OrchestryApps(api, traffic)
    api.extra_routes.append(apps.add_routes)
    api.extra_routes.append(OrchestryLogs(api, apps).add_routes)
    api.extra_routes.append(OrchestrySystem(api, traffic, api_listen=api_listen, raft_listen=raft_listen,
                                            election_timeout_s=election_timeout_s).add_routes)
