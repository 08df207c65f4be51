"""The leader's scheduler loop: run the pure scheduler on the applied state, commit the plan as one entry.

Besides `orca.scheduler.compute_plan` (placement of the current version), the loop retires replicas of
older versions once the current version has enough replicas running and healthy: replacements start
before the old ones stop, so a redeploy never drops below the desired count on its own account.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from orca.master.loops import LeaderLoop
from orca.scheduler import PlacementView, Plan, compute_plan

__all__ = ["SchedulerLoop", "retire_old_versions", "new_alloc_id"]


def new_alloc_id() -> str:
    return uuid.uuid4().hex[:12]


def _ready(alloc: dict[str, Any]) -> bool:
    observed = alloc.get("observed") or {}
    return observed.get("status") == "running" and observed.get("health") in (None, "healthy")


def retire_old_versions(state: dict[str, Any]) -> list[str]:
    """Allocation ids of older versions that can stop now: the current version is fully up, or the old
    replica is on a node that is not ready (it is not serving anyway)."""
    stop = []
    live_nodes = {n["id"] for n in state["nodes"].values() if n["status"] == "ready"}
    by_service: dict[str, list[dict[str, Any]]] = {}
    for alloc in state["allocations"].values():
        if alloc["desired"] == "run":
            by_service.setdefault(alloc["service"], []).append(alloc)
    for name, allocs in by_service.items():
        svc = state["services"].get(name)
        if svc is None or svc["state"] != "running":
            continue
        old = [a for a in allocs if a["version"] != svc["version"]]
        if not old:
            continue
        current_ready = sum(1 for a in allocs if a["version"] == svc["version"] and a["node"] in live_nodes
                            and _ready(a))
        for a in sorted(old, key=lambda a: a["id"]):
            if current_ready >= svc["replicas"] or a["node"] not in live_nodes:
                stop.append(a["id"])
    return stop


class SchedulerLoop(LeaderLoop):
    name = "scheduler"
    period_s = 1.0

    def __init__(self, raft: Any) -> None:
        super().__init__(raft)
        self.last_plan_s = 0.0
        self.placements_total = 0
        self.pending: dict[str, dict[str, Any]] = {}

    def plan(self, state: dict[str, Any]) -> tuple[Plan, list[str], bool]:
        view = PlacementView(services=state["services"], nodes=state["nodes"], allocations=state["allocations"])
        plan = compute_plan(view, new_alloc_id)
        retire = [a for a in retire_old_versions(state) if a not in set(plan.stop)]
        pending_changed = any((svc.get("pending") or None) != plan.pending.get(name)
                              for name, svc in state["services"].items())
        return plan, retire, pending_changed

    async def cycle(self) -> None:
        for _ in range(5):  # a plan's commit can make the next one non-empty (e.g. retire after placing)
            started = time.perf_counter()
            plan, retire, pending_changed = self.raft.read(self.plan)
            self.last_plan_s = time.perf_counter() - started
            self.pending = dict(plan.pending)
            if plan.is_empty() and not retire and not pending_changed:
                return
            place = [{"alloc_id": p.alloc_id, "service": p.service, "version": p.version, "node": p.node,
                      "index": p.index} for p in plan.place]
            await self.propose("plan", {"place": place, "stop": list(plan.stop) + retire,
                                        "pending": plan.pending})
            self.placements_total += len(place)
