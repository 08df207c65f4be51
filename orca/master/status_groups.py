"""Component health in the shapes of two documents, from orca's own component figures (pure).

orca's components (`MasterApi._components()`, the bodies of `GET /api/v1/status/{component}`) are
`raft`, `leases`, `scheduler` and `dispatcher`, each `{status: up|degraded|down, live_pullers, backlog,
in_flight, oldest_unacked_seconds, detail: {...}}`. This module turns them into:

- Porter's ComponentHealth per subsystem (`GET /api/v2/status/{infra,apps,datastores}`): `infra` is the
  worker nodes and their leases (`leases`), `apps` is placing and deploying replicas (`scheduler` and
  `dispatcher`), `datastores` is the replicated state store (`raft`). `detail` is a sentence,
  `oldest_unacked_seconds` whole seconds, and, as the document defines `down` ("no live pullers are
  available"), a master where a subsystem's leader-only loops do not run (a follower) reports it down.
- Dory's health components (`GET /healthz`): `{status: healthy|degraded|unhealthy, message, last_check}`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["GROUPS", "BACKLOG_WARN", "AGE_WARN_S", "describe", "porter_group", "dory_component", "dory_overall"]

GROUPS: dict[str, tuple[str, ...]] = {
    "infra": ("leases",),
    "apps": ("scheduler", "dispatcher"),
    "datastores": ("raft",),
}
# Porter's "warning threshold": a subsystem working through this much is degraded, not up.
BACKLOG_WARN = 100
AGE_WARN_S = 60
_RANK = {"up": 0, "degraded": 1, "down": 2}
_DORY = {"up": "healthy", "degraded": "degraded", "down": "unhealthy"}
_MAX_DETAIL = 300


def _runs_here(component: dict[str, Any]) -> bool:
    detail = component.get("detail")
    return not isinstance(detail, dict) or detail.get("running_here", True) is not False


def describe(name: str, component: dict[str, Any], leader_id: str | None) -> str:
    """One sentence on what is wrong with a component, or "" when nothing is."""
    detail = component.get("detail") if isinstance(component.get("detail"), dict) else {}
    if not _runs_here(component):
        if leader_id is None:
            return f"{name}: no leader is known, so nothing runs it"
        return f"{name}: runs on the leader {leader_id}; this master is a follower"
    if name == "raft":
        if component.get("status") == "down":
            return ("raft: no leader is known" if detail.get("leader_id") is None
                    else "raft: this master has not caught up with the log")
        if component.get("status") == "degraded":
            return "raft: a master is unreachable"
        return ""
    parts = []
    if detail.get("last_error"):
        parts.append(f"last cycle failed: {detail['last_error']}")
    if name == "leases" and detail.get("quarantined"):
        parts.append("reports ignored from " + ", ".join(sorted(detail["quarantined"])))
    if name == "dispatcher" and detail.get("failing_nodes"):
        parts.append("pushes failing to " + ", ".join(sorted(detail["failing_nodes"])))
    if name == "scheduler" and component.get("backlog"):
        parts.append(f"{component['backlog']} replica(s) pending: no node fits")
    return f"{name}: {'; '.join(parts)}" if parts else ""


def _whole_seconds(value: Any) -> int:
    return int(math.ceil(value)) if isinstance(value, int | float) and math.isfinite(value) and value > 0 else 0


def porter_group(group: str, components: dict[str, dict[str, Any]], leader_id: str | None) -> dict[str, Any]:
    """Porter's ComponentHealth of one subsystem: the worst status, live pullers summed, the largest backlog,
    in-flight count and age (whole seconds), and a one-line `detail` ("" when up)."""
    status, live, backlog, in_flight, oldest, notes = "up", 0, 0, 0, 0, []
    for name in GROUPS[group]:
        c = components[name]
        here = _runs_here(c)
        c_status = c.get("status", "down") if here else "down"
        c_live = int(c.get("live_pullers") or 0) if here else 0
        if name == "raft" and c_status != "down":
            c_live += 1  # the masters applying the log: the connected peers and this one
        status = max(status, c_status, key=_RANK.__getitem__)
        live += c_live
        backlog = max(backlog, int(c.get("backlog") or 0))
        in_flight = max(in_flight, int(c.get("in_flight") or 0))
        oldest = max(oldest, _whole_seconds(c.get("oldest_unacked_seconds")))
        if c_status != "up":
            notes.append(describe(name, c, leader_id) or f"{name}: {c_status}")
    if live == 0 and status != "down":
        status = "down"
        notes.append("no live pullers: no worker node has heartbeated within the lease TTL"
                     if group == "infra" else "no live pullers")
    if status == "up" and backlog >= BACKLOG_WARN:
        status = "degraded"
        notes.append("backlog above warning threshold")
    if status == "up" and oldest >= AGE_WARN_S:
        status = "degraded"
        notes.append("oldest unacknowledged work above warning threshold")
    detail = "; ".join(notes) if status != "up" else ""
    return {"status": status, "live_pullers": live, "backlog": backlog, "in_flight": in_flight,
            "oldest_unacked_seconds": oldest, "detail": detail[:_MAX_DETAIL]}


def dory_component(name: str, component: dict[str, Any], leader_id: str | None, checked_at: str) -> dict[str, Any]:
    """Dory's `{status, message, last_check}` of one component (orca's up/degraded/down as healthy/degraded/
    unhealthy; a follower's leader-only loops are healthy when a leader runs them)."""
    status = _DORY.get(component.get("status", "down"), "unhealthy")
    message = describe(name, component, leader_id) or f"{name}: {'ok' if status == 'healthy' else status}"
    return {"status": status, "message": message[:_MAX_DETAIL], "last_check": checked_at}


def dory_overall(components: dict[str, dict[str, Any]]) -> str:
    """Dory's rule: unhealthy if any checker is unhealthy, degraded if any is degraded, else healthy."""
    states = {c["status"] for c in components.values()}
    if "unhealthy" in states:
        return "unhealthy"
    return "degraded" if "degraded" in states else "healthy"
