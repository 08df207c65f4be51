"""Rolling updates and canaries as a pure decision over the replicated state (no I/O, clock passed in).

The state says what is current (`service.version`), what is a canary (`service.canary`) and how each
replica is doing (`allocation.observed`, with `running_since` stamped on the leader's clock). From that,
every leader cycle decides — the same way after a failover, since nothing lives in leader memory:

- **placement budget**: while replicas of an older version still run, at most `max_parallel`
  current-version replicas may be not-yet-ready at once (surge), so the scheduler's placements are cut
  to `ready + max_parallel` for that service;
- **retire**: an older replica stops only when enough current ones are ready that the ready count stays
  at the desired count (start-before-stop); not-ready old replicas go first;
- **verdict**: a current-version replica not ready within `healthy_deadline_s` of its creation (or one
  reported `failed`) halts the rollout (the state machine auto-reverts when the spec asks); no older
  replica left and all ready means the rollout is done.

Ready = running and (health check passing, or, without one, running for `min_healthy_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orca.healthcheck import has_check
from orca.jobs import is_job

__all__ = ["RolloutStep", "decide", "is_ready"]


@dataclass
class RolloutStep:
    budget: dict[str, int] = field(default_factory=dict)       # service -> max current-version allocs to have
    stop: list[str] = field(default_factory=list)              # older replicas to retire now
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # {"name", "version", "state", "reason"}


def is_ready(alloc: dict[str, Any], spec: dict[str, Any], now: float) -> bool:
    observed = alloc.get("observed") or {}
    if observed.get("status") != "running":
        return False
    if has_check(spec):
        return observed.get("health") == "healthy"
    since = observed.get("running_since")
    min_healthy = float((spec.get("update") or {}).get("min_healthy_s", 2.0))
    return since is not None and now - since >= min_healthy


def _spec_of(svc: dict[str, Any], version: int) -> dict[str, Any]:
    return next((h["spec"] for h in svc["history"] if h["version"] == version), svc["spec"])


def decide(state: dict[str, Any], now: float) -> RolloutStep:
    step = RolloutStep()
    ready_nodes = {n["id"] for n in state["nodes"].values() if n["status"] == "ready"}
    by_service: dict[str, list[dict[str, Any]]] = {}
    for alloc in state["allocations"].values():
        if alloc["desired"] in ("run", "migrate"):
            by_service.setdefault(alloc["service"], []).append(alloc)
    for name in sorted(state["services"]):
        svc = state["services"][name]
        if svc["state"] != "running":
            continue
        allocs = by_service.get(name, [])
        version, wanted = svc["version"], svc["replicas"]
        spec = _spec_of(svc, version)
        if is_job(spec):  # a job's replicas end: no readiness to wait for, a new version simply replaces
            step.stop += [a["id"] for a in allocs if a["version"] != version and a["desired"] == "run"]
            rollout = svc.get("rollout") or {}
            if rollout.get("state") == "rolling" and rollout.get("version") == version:
                step.verdicts.append({"name": name, "version": version, "state": "done", "reason": None})
            continue
        canary_version = (svc.get("canary") or {}).get("version")
        old = [a for a in allocs if a["version"] not in (version, canary_version) and a["desired"] == "run"]
        rollout = svc.get("rollout") or {}
        if not old and (rollout.get("state") != "rolling" or rollout.get("version") != version):
            continue  # nothing under way (most services, most of the time): no readiness to work out
        update = spec.get("update") or {}
        max_parallel = max(1, int(update.get("max_parallel", 1)))
        current = [a for a in allocs if a["version"] == version and a["desired"] == "run"]
        ready = [a for a in current if a["node"] in ready_nodes and is_ready(a, spec, now)]
        halted = rollout.get("state") == "halted" and rollout.get("version") == version
        if old:
            step.budget[name] = len(current) if halted else min(wanted, len(ready) + max_parallel)
            if not halted:
                old_ready = sorted(old, key=lambda a: (a["node"] in ready_nodes and is_ready(a, _spec_of(
                    svc, a["version"]), now), -a.get("index", 0), a["id"]))
                excess = len(ready) + len(old) - wanted
                step.stop += [a["id"] for a in old_ready[:max(0, excess)]]
        if rollout.get("state") != "rolling" or rollout.get("version") != version:
            continue
        deadline = float(update.get("healthy_deadline_s", 60.0))
        late = [a for a in current if a not in ready and (
            now - a["created_at"] > deadline or (a.get("observed") or {}).get("status") == "failed")]
        if late:
            reason = (a := late[0]).get("observed") or {}
            why = reason.get("reason") or f"not healthy within {deadline:g} s"
            step.verdicts.append({"name": name, "version": version, "state": "halted",
                                  "reason": f"replica {a['id']} on {a['node']}: {why}"})
        elif not old and len(ready) >= wanted:
            step.verdicts.append({"name": name, "version": version, "state": "done", "reason": None})
    return step
