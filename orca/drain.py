"""Node drain as a pure decision over the replicated state (Nomad's drainer, without its known gaps).

For each draining node, every cycle (on whichever master leads; all progress lives in Raft):
- replicas pinned to the node (`placement.node`) cannot move: they stop now and their service shows
  pending with the scheduler's reason;
- up to `update.max_parallel` replicas per service are marked `migrate`: the scheduler no longer counts
  them, so it places a replacement in the same slot elsewhere, while the agent keeps them running;
- a migrating replica stops only once its replacement (same service, slot and version, another node)
  is ready: start-before-stop;
- at the deadline (or at once with `force`) whatever is left stops;
- the drain is complete when the state holds no allocation on the node any more — allocations leave the
  state only when the node's own report no longer lists them, i.e. it runs no orca container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orca.rollout import is_ready

__all__ = ["DrainStep", "decide"]


@dataclass
class DrainStep:
    migrate: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)   # subset of stop: replaced, counted as migrated
    complete: list[str] = field(default_factory=list)   # node ids


def decide(state: dict[str, Any], now: float) -> DrainStep:
    step = DrainStep()
    for node_id in sorted(state["nodes"]):
        node = state["nodes"][node_id]
        drain = node.get("drain")
        if node["eligibility"] != "draining" or drain is None:
            continue
        mine = sorted((a for a in state["allocations"].values() if a["node"] == node_id),
                      key=lambda a: (a["service"], a.get("index", 0), a["id"]))
        if not mine:
            step.complete.append(node_id)
            continue
        active = [a for a in mine if a["desired"] in ("run", "migrate")]
        if drain.get("force") or now >= drain["deadline"] or node["status"] == "down":
            step.stop += [a["id"] for a in active]  # deadline (or a dead node): nothing left to wait for
            continue
        by_service: dict[str, list[dict[str, Any]]] = {}
        for a in active:
            by_service.setdefault(a["service"], []).append(a)
        for name, allocs in by_service.items():
            svc = state["services"].get(name)
            if svc is None or svc["state"] != "running":
                step.stop += [a["id"] for a in allocs]
                continue
            spec = svc["spec"]
            if (spec.get("placement") or {}).get("node") == node_id:
                step.stop += [a["id"] for a in allocs]  # pinned here: cannot move, goes pending
                continue
            in_flight = 0
            for a in (a for a in allocs if a["desired"] == "migrate"):
                if _replacement_ready(state, a, now):
                    step.stop.append(a["id"])
                    step.migrated.append(a["id"])
                else:
                    in_flight += 1
            budget = max(1, int((spec.get("update") or {}).get("max_parallel", 1))) - in_flight
            for a in (a for a in allocs if a["desired"] == "run"):
                if budget <= 0:
                    break
                step.migrate.append(a["id"])
                budget -= 1
    return step


def _replacement_ready(state: dict[str, Any], old: dict[str, Any], now: float) -> bool:
    svc = state["services"][old["service"]]
    spec = next((h["spec"] for h in svc["history"] if h["version"] == old["version"]), svc["spec"])
    for a in state["allocations"].values():
        node = state["nodes"].get(a["node"]) or {}
        if (a["service"] == old["service"] and a.get("index") == old.get("index") and a["id"] != old["id"]
                and a["desired"] == "run" and a["node"] != old["node"] and node.get("status") == "ready"
                and is_ready(a, spec, now)):
            return True
    return False
