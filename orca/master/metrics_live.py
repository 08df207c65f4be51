"""The master's scrape-time series: Raft, services and cluster objects, read from the live node and the
applied state at each scrape (every master, leader or not, answers them from its own replica).

Per-service series are bounded by the services in the state; jobs (run-to-completion) have no replica
series: their replicas are meant to end, so "running below desired" says nothing about them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orca.jobs import is_job
from orca.master import views
from orca.metrics import LiveCollector
from orca.raft import RaftNode

__all__ = ["register_raft_and_services"]


def _service_rows(state: dict[str, Any]) -> list[tuple[str, int, int, int, int]]:
    """(name, desired, running, healthy, rollout halted) of every long-running service."""
    rows = []
    for row in views.status_list(state, None):
        if row.get("kind") == "job":
            continue
        svc = state["services"][row["name"]]
        if is_job(svc["spec"]):
            continue
        desired = 0 if svc["state"] == "stopped" else int(row["replicas"] or 0)
        halted = 1 if (svc.get("rollout") or {}).get("state") == "halted" else 0
        rows.append((row["name"], desired, int(row["running_replicas"]), int(row["healthy_replicas"]), halted))
    return rows


def register_raft_and_services(live: LiveCollector, raft: RaftNode,
                               members: Callable[[], int]) -> None:
    """Add the Raft and per-service families to `live`; `members` counts the voting masters."""
    live.gauge("orca_raft_term", "Current Raft term seen by this master.", lambda: raft.term)
    live.gauge("orca_raft_is_leader", "1 when this master is the Raft leader.", lambda: 1 if raft.is_leader else 0)
    live.gauge("orca_raft_commit_index", "Raft commit index.", lambda: raft.commit_index)
    live.gauge("orca_raft_applied_index", "Last Raft index applied to the state.", lambda: raft.applied_index)
    live.gauge("orca_raft_has_quorum", "1 when this master is connected to a majority of the masters.",
               lambda: 1 if raft.has_quorum else 0)
    live.gauge("orca_raft_members", "Voting masters in the cluster as this master knows it (itself included).",
               members)
    live.counter("orca_raft_leader_changes_total", "Leader changes this master has seen since it started.",
                 lambda: raft.leader_changes)

    def services() -> list[tuple[tuple[str], int]]:
        states = raft.read(lambda s: [v["state"] for v in s["services"].values()])
        return [((status,), states.count(status)) for status in ("running", "stopped")]

    live.gauge("orca_services", "Services in the replicated state by status.", services, ["status"])

    def column(i: int) -> Callable[[], list[tuple[tuple[str], int]]]:
        return lambda: [((r[0],), r[i]) for r in raft.read(_service_rows)]

    live.gauge("orca_service_replicas_desired", "Replicas a long-running service should have (0 when stopped).",
               column(1), ["service"])
    live.gauge("orca_service_replicas_running", "Replicas of a service whose container runs.", column(2), ["service"])
    live.gauge("orca_service_replicas_healthy", "Running replicas of a service that pass their health check.",
               column(3), ["service"])
    live.gauge("orca_service_rollout_halted", "1 while the service's latest rollout is halted (not healthy in "
               "time and not reverted).", column(4), ["service"])
