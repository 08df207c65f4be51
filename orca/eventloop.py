"""The event loop a master runs on: uvloop when it is installed (a dependency on Linux), else asyncio's.

Why: under a write load the master's event loop (aiohttp's request handling, futures, timers, socket
writes) was over half of the leader's GIL time in a py-spy profile; uvloop runs the same code with a
loop written in Cython on libuv and took the leader's writes/s up by about half in the same run
(scripts/bench/raft_writes.py). `ORCA_EVENT_LOOP=asyncio` selects the standard loop (to rule uvloop out
when debugging); any other value, or none, means uvloop if importable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, or None for asyncio's default (not installed, or opted out)."""
    if os.environ.get("ORCA_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
