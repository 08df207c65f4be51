"""The leader's scheduler loop: run the pure deciders on the applied state, commit one entry per cycle.

One cycle = `orca.scheduler.compute_plan` (placement of the current version, and of canaries in a second
pass), cut to the rollout's surge budget (`orca.rollout`), plus the rollout's retirements and the drain's
migrations and stops (`orca.drain`). All of them read only the replicated state and a clock, so a new
leader continues a rollout or a drain exactly where the old one left it.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from orca import depends, drain, rollout, trace
from orca.healthcheck import has_check
from orca.master.loops import LeaderLoop
from orca.scheduler import PlacementView, compute_plan
from orca.volumes import named_volumes

__all__ = ["SchedulerLoop", "Cycle", "decide_cycle", "new_alloc_id"]


IDLE_PERIOD_S = 1.0
BUSY_PERIOD_S = 0.2
IDLE_TRUST_S = 60.0  # an idle pass is redone at least this often even at the same generation (belt and braces)


def new_alloc_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Cycle:
    place: list[dict[str, Any]] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    migrate: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_changed: bool = False
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    busy: bool = False  # a rollout or drain is under way: readiness deadlines pass without any new entry
    next_ready_at: float | None = None  # wall time the next replica becomes ready by min_healthy_s alone
    timed: bool = False  # the outcome can change with the clock alone (a rollout, a drain, a depends_on wait)

    def plan_is_empty(self) -> bool:
        return not (self.place or self.stop or self.migrate or self.pending_changed)

    def is_idle(self) -> bool:
        """Nothing to commit, and nothing that time alone can change: the same state decides the same again."""
        return (self.plan_is_empty() and not self.verdicts and not self.drained and not self.busy
                and not self.timed and self.next_ready_at is None)


def decide_cycle(state: dict[str, Any], now: float, new_id: Any = new_alloc_id) -> Cycle:
    """Everything the leader would do this cycle, computed from the state alone (pure but for `new_id`)."""
    roll = rollout.decide(state, now)
    drn = drain.decide(state, now)
    allocations = state["allocations"]
    if drn.migrate:  # place the replacements in this same cycle: the replicas marked now no longer count
        marked = set(drn.migrate)
        allocations = {k: ({**a, "desired": "migrate"} if k in marked else a) for k, a in allocations.items()}
    view = PlacementView(services=state["services"], nodes=state["nodes"], allocations=allocations)
    plan = compute_plan(view, new_id)
    cycle = Cycle(pending=dict(plan.pending), verdicts=roll.verdicts, drained=drn.complete,
                  migrate=drn.migrate, migrated=drn.migrated,
                  busy=bool(roll.budget) or any(n.get("eligibility") == "draining" for n in state["nodes"].values()))
    have: dict[str, int] = {}
    for a in state["allocations"].values():
        svc = state["services"].get(a["service"])
        if svc is not None and a["desired"] == "run" and a["version"] == svc["version"]:
            have[a["service"]] = have.get(a["service"], 0) + 1
    volume_stops = _volume_handover(state, plan.place)
    waiting = depends.blocked(state, now)
    for p in plan.place:
        if p.alloc_id in volume_stops:
            continue  # its slot's volume is still mounted by the previous replica: placed once it is gone
        if p.service in waiting:
            held = cycle.pending.setdefault(p.service, {"count": 0, "reason": waiting[p.service]})
            held["count"] += 1
            held["reason"] = waiting[p.service]
            continue
        budget = roll.budget.get(p.service)
        if budget is not None and have.get(p.service, 0) >= budget:
            continue  # surge limit of a rolling update: placed in a later cycle
        have[p.service] = have.get(p.service, 0) + 1
        cycle.place.append({"alloc_id": p.alloc_id, "service": p.service, "version": p.version, "node": p.node,
                            "index": p.index})
    canaries = {name: svc for name, svc in state["services"].items() if svc.get("canary") and svc["state"] == "running"}
    if canaries:
        services = {name: ({**svc, "version": svc["canary"]["version"], "replicas": svc["canary"]["replicas"],
                            "spec": next((h["spec"] for h in svc["history"]
                                          if h["version"] == svc["canary"]["version"]), svc["spec"])}
                           if name in canaries else svc) for name, svc in state["services"].items()}
        second = compute_plan(PlacementView(services=services, nodes=state["nodes"],
                                            allocations=state["allocations"]), new_id)
        cycle.place += [{"alloc_id": p.alloc_id, "service": p.service, "version": p.version, "node": p.node,
                         "index": p.index} for p in second.place if p.service in canaries]
        cycle.stop += [a for a in second.stop if state["allocations"][a]["service"] in canaries
                       and state["allocations"][a]["version"] == canaries[state["allocations"][a]["service"]]
                       ["canary"]["version"]]
    cycle.stop = sorted({*plan.stop, *cycle.stop, *roll.stop, *drn.stop, *volume_stops.values()} - {None})
    cycle.pending_changed = any((svc.get("pending") or None) != cycle.pending.get(name)
                                for name, svc in state["services"].items())
    cycle.timed = bool(cycle.busy or waiting or drn.migrate or drn.stop or roll.stop or roll.verdicts
                       or any((svc.get("rollout") or {}).get("state") == "rolling"
                              for svc in state["services"].values()))
    if cycle.busy:
        cycle.next_ready_at = _next_ready_at(state, now)
    return cycle


def _next_ready_at(state: dict[str, Any], now: float) -> float | None:
    """When the earliest running replica without a health check passes its `min_healthy_s`: no entry
    marks that moment, so the loop sets its timer to it (readiness is seen when it happens, not on a
    polling tick). Replicas with a health check become ready through an agent report, which wakes us."""
    soonest: float | None = None
    for a in state["allocations"].values():
        observed = a.get("observed") or {}
        since = observed.get("running_since")
        if a["desired"] != "run" or observed.get("status") != "running" or since is None:
            continue
        svc = state["services"].get(a["service"])
        if svc is None:
            continue
        spec = next((h["spec"] for h in svc["history"] if h["version"] == a["version"]), svc["spec"])
        if has_check(spec):
            continue
        at = since + float((spec.get("update") or {}).get("min_healthy_s", 2.0))
        if at > now and (soonest is None or at < soonest):
            soonest = at
    return soonest


def _volume_handover(state: dict[str, Any], placements: Any) -> dict[str, str | None]:
    """Stop-before-start for slots with named volumes: two containers must never share a replica's data
    (a database would corrupt it). Maps each deferred placement's id to the allocation to stop first
    (None when that one is already stopping)."""
    out: dict[str, str | None] = {}
    for p in placements:
        svc = state["services"].get(p.service)
        binding = (svc or {}).get("volumes", {}).get(str(p.index))
        if svc is None or not named_volumes(svc["spec"]) or binding is None or binding["node"] != p.node:
            continue  # a first placement gets new, empty volumes: nothing to hand over
        for a in state["allocations"].values():
            if a["service"] == p.service and a.get("index", 0) == p.index and a["node"] == p.node:
                if a["desired"] in ("run", "migrate"):
                    out[p.alloc_id] = a["id"]
                    break
                out.setdefault(p.alloc_id, None)
    return out


class SchedulerLoop(LeaderLoop):
    name = "scheduler"
    period_s = 1.0

    def __init__(self, raft: Any) -> None:
        super().__init__(raft)
        self.last_plan_s = 0.0
        self.placements_total = 0
        self.pending: dict[str, dict[str, Any]] = {}
        self.skipped = 0  # cycles left out because nothing they read had changed (`idle_generation`)
        # The layout generation at which the last pass was idle (Cycle.is_idle), and until when (monotonic)
        # that is trusted without a pass: decide_cycle reads only what the layout generation covers, plus
        # the clock where `timed`, so an idle pass at the same generation would decide the same again.
        # At 10,000 services a pass holds the state lock for a few hundred ms (the Raft thread waits on
        # it to apply): wake-ups that change nothing it reads (the loop's period, a lease renewal) must
        # not cost one.
        self.idle_generation: int | None = None
        self.idle_until = 0.0

    def on_enable(self) -> None:
        self.idle_generation = None

    async def cycle(self) -> None:
        for _ in range(5):  # one commit can make the next cycle non-empty (e.g. retire after placing)
            if self.idle_generation == self.raft.store.layout_generation and time.monotonic() < self.idle_until:
                self.skipped += 1
                return
            started = time.perf_counter()
            now = time.time()
            # Without the state lock when no entry applies meanwhile (RaftNode.read_unlocked): a pass at
            # 10,000 services must not hold the Raft thread's apply (and its heartbeats to followers).
            generation, cycle = self.raft.read_unlocked(functools.partial(decide_cycle, now=now))
            self.last_plan_s = time.perf_counter() - started
            if cycle.is_idle():
                self.idle_generation, self.idle_until = generation, time.monotonic() + IDLE_TRUST_S
            else:
                self.idle_generation = None
            self.pending = cycle.pending
            # While a rollout or drain runs, "healthy for min_healthy_s" becomes true with no entry to wake
            # us: look more often then, and idle at 1 s otherwise.
            self.period_s = BUSY_PERIOD_S if cycle.busy else IDLE_PERIOD_S
            # + 3 ms: wake just after the moment, not just before it (a wake-up before it costs a pass and
            # then the loop's rate limit, up to 20 ms); the 10 ms it was went straight onto every drain step.
            if cycle.next_ready_at is not None:
                self.period_s = max(0.0, min(self.period_s, cycle.next_ready_at - now + 0.003))
            for verdict in cycle.verdicts:
                await self.propose("rollout_status", verdict)
            for node_id in cycle.drained:
                await self.propose("drain_complete", {"node_id": node_id})
                trace.mark("drain_complete", node=node_id)
            if cycle.plan_is_empty():
                return
            if trace.enabled():
                trace.mark("decided", place=[p["alloc_id"] for p in cycle.place], stop=cycle.stop,
                           migrate=cycle.migrate, plan_s=round(self.last_plan_s, 4))
            await self.propose("plan", {"place": cycle.place, "stop": cycle.stop, "pending": cycle.pending,
                                        "migrate": cycle.migrate, "migrated": cycle.migrated})
            trace.mark("plan_committed")
            self.placements_total += len(cycle.place)
