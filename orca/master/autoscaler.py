"""The leader's metrics sampler and autoscaler: one loop, every `sample_s`.

It turns the heartbeats' counters into samples (`TrafficBook.sample`), then, for every running service
whose spec has `scaling.mode = "auto"`, asks the pure `orca.autoscale.decide` and commits a change as an
`autoscale` entry carrying the reason and figures (an event operators can read). The per-service memory
(cooldown, consecutive low windows) is the leader's; a new leader starts it fresh, which errs on the side
of not scaling in.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from orca import autoscale
from orca.master.loops import LeaderLoop
from orca.master.traffic import TrafficBook
from orca.raft import RaftNode

__all__ = ["Autoscaler"]


class Autoscaler(LeaderLoop):
    name = "autoscaler"

    def __init__(self, raft: RaftNode, traffic: TrafficBook) -> None:
        super().__init__(raft)
        self.traffic = traffic
        self.period_s = traffic.sample_s
        self.memory: dict[str, autoscale.ScalerMemory] = {}
        self.last_decisions: dict[str, dict[str, Any]] = {}

    def on_enable(self) -> None:
        self.traffic.clear()
        self.memory = {}

    async def cycle(self) -> None:
        now = time.time()
        policies = self.raft.read(functools.partial(self._sample_and_collect, now=now))
        for name, (policy, current) in policies.items():
            memory = self.memory.setdefault(name, autoscale.ScalerMemory())
            try:
                window = float(policy.get("window_seconds", 60))
                samples = [autoscale.Sample(at=s.at, replicas=s.replicas, rps=s.rps, p95_ms=s.p95_ms,
                                            cpu_pct=s.cpu_pct, mem_pct=s.mem_pct)
                           for s in self.traffic.history(name, 100000) if s.at >= now - window]
                decision = autoscale.decide(policy, samples, now, current, memory)
            except Exception:  # noqa: BLE001 - one service's bad figures must not stop the others' scaling
                self.log.exception("autoscaler: no decision for %s", name)
                continue
            self.last_decisions[name] = {"at": now, "replicas": decision.replicas, "direction": decision.direction,
                                         "reason": decision.reason}
            if decision.replicas != current:
                await self.propose("autoscale", {"name": name, "replicas": decision.replicas,
                                                 "reason": decision.reason, "figures": _plain(decision.figures)})
                memory.last_change_at = now

    def _sample_and_collect(self, state: dict[str, Any], now: float) -> dict[str, tuple[dict[str, Any], int]]:
        self.traffic.sample(state, now, self.raft.store.layout_generation)  # under the lock: the same moment
        out = {}
        for name, svc in state["services"].items():
            scaling = svc["spec"].get("scaling")
            if svc["state"] == "running" and scaling and scaling.get("mode") == "auto":
                out[name] = (dict(scaling), svc["replicas"])
        return out


def _plain(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures as msgpack-able plain numbers and strings."""
    out: dict[str, Any] = {}
    for k, v in figures.items():
        out[str(k)] = v if isinstance(v, int | float | str | bool) or v is None else str(v)
    return out
