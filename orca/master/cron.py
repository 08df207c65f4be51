"""The leader's cron loop for periodic jobs (rules in orca.jobs).

Every second it reads the applied state and, for each running job with a `schedule`, proposes `job_tick`
with the newest scheduled time in (last committed tick, now]. The state machine accepts a tick only if it
is newer than the last one: a leader that dies after committing leaves nothing for its successor to redo,
and one that dies before leaves the tick to its successor (it is still the newest one for up to a
schedule period).
"""

from __future__ import annotations

import time
from typing import Any

from orca.errors import OrcaError
from orca.jobs import due_tick, is_job
from orca.master.loops import LeaderLoop

__all__ = ["CronLoop", "due_ticks"]


def due_ticks(state: dict[str, Any], now: float) -> list[tuple[str, float]]:
    """(job name, tick) for every periodic job with a tick due now (pure but for croniter)."""
    out = []
    for name in sorted(state["services"]):
        svc = state["services"][name]
        spec = svc["spec"]
        if svc["state"] != "running" or not is_job(spec) or not spec.get("schedule"):
            continue
        after = float(svc.get("last_tick") or svc.get("created_at") or 0.0)
        tick = due_tick(spec["schedule"], after, now)
        if tick is not None:
            out.append((name, tick))
    return out


class CronLoop(LeaderLoop):
    name = "cron"
    period_s = 1.0

    def __init__(self, raft: Any) -> None:
        super().__init__(raft)
        self.ticks_total = 0

    async def cycle(self) -> None:
        for name, tick in self.raft.read(lambda s: due_ticks(s, time.time())):
            try:
                await self.propose("job_tick", {"name": name, "tick": tick})
                self.ticks_total += 1
            except OrcaError as err:  # TICK_DONE after a race with our own earlier proposal: fine
                self.log.info("tick %s of %s: %s", tick, name, err)
