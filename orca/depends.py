"""Start order within a project: `depends_on = ["db"]` (Compose's `service_healthy` semantics).

A service's replicas are placed only while every dependency is satisfied: a service dependency has all its
desired replicas of the current version ready (running and, with a health check, healthy: the same rule as
rollouts, orca.rollout.is_ready); a job dependency has completed its current run. Dependencies are looked up
in the service's own project; a missing one, one of another project, or a cycle keeps the service pending
with the reason. Replicas already running are left alone (like Compose, the order is about starting).
Pure: the leader's scheduler cycle calls `blocked(state, now)`.
"""

from __future__ import annotations

from typing import Any

from orca.jobs import finished, is_job
from orca.rollout import is_ready

__all__ = ["blocked"]


def _satisfied(state: dict[str, Any], dep: dict[str, Any], now: float) -> bool:
    spec = dep["spec"]
    if dep["state"] != "running":
        return False
    mine = [a for a in state["allocations"].values() if a["service"] == dep["name"] and a["desired"] == "run"
            and a["version"] == dep["version"]]
    if is_job(spec):
        run = int(dep.get("run", 0))
        done = [a for a in mine if int(a.get("run", 0)) == run and finished(a)
                and (a.get("observed") or {}).get("status") == "complete"]
        return len(done) >= dep["replicas"]
    ready_nodes = {n["id"] for n in state["nodes"].values() if n["status"] == "ready"}
    ready = [a for a in mine if a["node"] in ready_nodes and is_ready(a, spec, now)]
    return len(ready) >= dep["replicas"]


def blocked(state: dict[str, Any], now: float) -> dict[str, str]:
    """service name -> why it must wait, for every running service whose dependencies are not satisfied."""
    out: dict[str, str] = {}
    services = state["services"]
    for name in sorted(services):
        svc = services[name]
        deps = svc["spec"].get("depends_on") or []
        if svc["state"] != "running" or not deps:
            continue
        for dep_name in deps:
            dep = services.get(dep_name)
            if dep is None or dep["project"] != svc["project"]:
                out[name] = f"depends on {dep_name}, which is not a service of project {svc['project']}"
                break
            if _in_cycle(services, name):
                out[name] = f"depends_on cycle through {dep_name}"
                break
            if not _satisfied(state, dep, now):
                what = "complete" if is_job(dep["spec"]) else "healthy"
                out[name] = f"waiting for {dep_name} to be {what} (depends_on)"
                break
    return out


def _in_cycle(services: dict[str, Any], start: str) -> bool:
    """Whether `start` can reach itself through depends_on (bounded by the number of services)."""
    seen: set[str] = set()
    todo = list(services[start]["spec"].get("depends_on") or [])
    while todo:
        name = todo.pop()
        if name == start:
            return True
        if name in seen or name not in services:
            continue
        seen.add(name)
        todo.extend(services[name]["spec"].get("depends_on") or [])
    return False
