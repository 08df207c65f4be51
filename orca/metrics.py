"""Prometheus metrics of one master, in a registry of its own (several masters may share a test process).

Names follow Prometheus conventions: `orca_` prefix, base units as suffixes, `_total` on counters.
Raft gauges are read at scrape time from the live node rather than pushed, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["MasterMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MasterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.raft_term = Gauge("orca_raft_term", "Current Raft term seen by this master.", registry=r)
        self.raft_is_leader = Gauge("orca_raft_is_leader", "1 when this master is the Raft leader.", registry=r)
        self.raft_commit_index = Gauge("orca_raft_commit_index", "Raft commit index.", registry=r)
        self.raft_applied_index = Gauge("orca_raft_applied_index", "Last Raft index applied to the state.",
                                        registry=r)
        self.raft_leader_changes = Gauge("orca_raft_leader_changes", "Leader changes seen since start.",
                                         registry=r)
        self.raft_has_quorum = Gauge("orca_raft_has_quorum", "1 when this master is connected to a majority.",
                                     registry=r)
        self.api_requests = Counter("orca_api_requests", "API requests by route, method and status code.",
                                    ["route", "method", "code"], registry=r)
        self.api_latency = Histogram(
            "orca_api_request_duration_seconds", "API request latency by route and method.",
            ["route", "method"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.raft_writes = Counter("orca_raft_writes", "Entries proposed through the API by op and outcome.",
                                   ["op", "outcome"], registry=r)
        self.services = Gauge("orca_services", "Services in the replicated state by status.", ["status"],
                              registry=r)
        self._refreshers: list[Callable[[], None]] = []

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Register a function that updates gauges from live state right before each scrape."""
        self._refreshers.append(refresh)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry)
