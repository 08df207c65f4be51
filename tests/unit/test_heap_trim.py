"""orca.heap_trim: the heap is trimmed after activity, and now and then when idle (pure, no clock)."""

from __future__ import annotations

import asyncio

from orca import heap_trim
from orca.heap_trim import HeapTrimmer


def test_due_once_a_burst_is_over_and_after_idle_time() -> None:
    generation = [0]
    t = HeapTrimmer(lambda: generation[0], period_s=2.0, idle_s=60.0)
    assert t.due(100.0)  # the first check always trims
    assert not t.due(102.0) and not t.due(104.0)  # nothing happened
    generation[0] += 1
    assert not t.due(106.0)  # in the middle of a burst
    generation[0] += 1
    assert not t.due(108.0)
    assert t.due(110.0) and not t.due(112.0)  # it held still for a period: once
    assert not t.due(169.0) and t.due(170.5)  # idle for idle_s: once more anyway


def test_run_trims_in_a_thread_until_stopped() -> None:
    calls: list[int] = []
    generation = [0]

    def trim() -> bool:
        calls.append(generation[0])
        generation[0] += 1  # activity after each trim: trims every other period
        return True

    async def main() -> None:
        stop = asyncio.Event()
        t = HeapTrimmer(lambda: generation[0], period_s=0.001, trim=trim)
        task = asyncio.create_task(t.run(stop))
        while len(calls) < 3:
            await asyncio.sleep(0.001)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert t.trims >= 3

    asyncio.run(main())
    assert calls[:3] == [0, 1, 2]


def test_malloc_trim_answers_or_is_absent() -> None:
    assert heap_trim.malloc_trim() in (True, False, None)
