"""The base of every leader-only loop: started by `enable(term)`, cancelled by `disable()`.

A loop runs `cycle()` whenever it is woken (an entry was applied, a heartbeat came in) or its period
passes, and proposes through `propose()`, which refuses to commit once this node is no longer the leader
of the term the loop was enabled for (fencing on our side; the state machine fences again on apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from orca.errors import NotReady, OrcaError
from orca.raft import RaftNode

__all__ = ["LeaderLoop"]


class LeaderLoop:
    name = "loop"
    period_s = 1.0
    # Cycles start at least this far apart: wake-ups that come while a cycle runs or within this of its
    # start coalesce into one next cycle (a write burst = one or two passes). A rate limit, not a delay:
    # an isolated wake-up (the one report a drain waits for) cycles at once. A fixed 20 ms sleep before
    # every cycle put 20 ms on each hop of a drain's chain (report -> commit -> plan -> push), ~0.15 s in all.
    min_interval_s = 0.02

    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        self.term: int | None = None
        self.log = logging.getLogger(f"orca.{self.name}")
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.last_cycle_at: float | None = None
        self._cycle_began = float("-inf")  # monotonic start of the last cycle (the rate limit's mark)
        self.last_error: str | None = None

    # --- LeaderComponent --------------------------------------------------------------------------
    def enable(self, term: int) -> None:
        self.term = term
        self.on_enable()
        self._task = asyncio.get_running_loop().create_task(self._run(term), name=f"orca-{self.name}")

    def disable(self) -> None:
        self.term = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.on_disable()

    @property
    def enabled(self) -> bool:
        return self._task is not None

    def wake(self) -> None:
        """Safe to call from the event loop at any time (a no-op cost when disabled)."""
        self._wake.set()

    @property
    def woken_while_disabled(self) -> bool:
        """Disabled, with a wake-up already pending for when it is enabled: another wake-up changes
        nothing (readable from any thread: two attribute reads)."""
        return self._task is None and self._wake.is_set()

    # --- for subclasses ---------------------------------------------------------------------------
    def on_enable(self) -> None:
        """Reset in-memory state for a new term (runs before the first cycle)."""

    def on_disable(self) -> None:
        """Drop in-flight work (runs right after the task is cancelled)."""

    async def cycle(self) -> None:
        raise NotImplementedError

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if self.term is None or not self.raft.is_leader or self.raft.term != self.term:
            raise NotReady(f"{self.name}: no longer the leader of term {self.term}")
        return await self.raft.propose(op, {**args, "term": self.term})

    async def _run(self, term: int) -> None:
        while self.term == term:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period_s)
            hold = self._cycle_began + self.min_interval_s - time.monotonic()
            if hold > 0:
                await asyncio.sleep(hold)
            self._wake.clear()
            self._cycle_began = time.monotonic()
            try:
                await self.cycle()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except OrcaError as err:
                self.last_error = str(err)
                self.log.info("%s cycle: %s", self.name, err)
                await asyncio.sleep(0.2)
            except Exception as err:  # noqa: BLE001 - a bug in one cycle must not kill leader work
                self.last_error = f"{type(err).__name__}: {err}"
                self.log.exception("%s cycle failed", self.name)
                await asyncio.sleep(0.5)
            self.last_cycle_at = time.time()
