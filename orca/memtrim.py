"""Give freed heap memory back to the system (glibc), so a master's RSS follows what it holds.

Why: a master at 10,000 services holds ~80 MB of state, but it also makes and drops large transient
objects (a 4 MB `node_reports` entry decoded on every master, the dispatcher's desired sets, push
bodies). CPython hands allocations over 512 bytes (every dict of a dozen keys: each allocation record)
to glibc's malloc, which keeps freed memory in its heaps, and each thread that allocates (the Raft
thread, the event loop, executor threads) gets a heap of its own. The process's RSS then stays at its
high-water mark plus fragmentation, well above what it holds. Two glibc knobs, both standard:

- `mallopt(M_ARENA_MAX, 2)` at start, before the Raft thread exists: at most two heaps (what
  `MALLOC_ARENA_MAX=2` in the environment does);
- `malloc_trim(0)` every `TRIM_EVERY_S` (10 s) on an executor thread (ctypes releases the GIL): free pages
  anywhere in the heaps go back to the system.

Not glibc (musl, macOS): both are no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from typing import Any

__all__ = ["limit_arenas", "trim", "trim_forever", "TRIM_EVERY_S"]

log = logging.getLogger("orca.memtrim")

TRIM_EVERY_S = 10.0
_M_ARENA_MAX = -8  # glibc malloc.h


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def limit_arenas(arenas: int = 2) -> bool:
    """At most `arenas` malloc heaps; call before starting threads. False when not on glibc."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """Release free heap pages to the system now. False when not on glibc (or nothing was released)."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


async def trim_forever(stop: asyncio.Event, every_s: float = TRIM_EVERY_S) -> None:
    """`trim()` every `every_s` until `stop` is set, off the event loop."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            await loop.run_in_executor(None, trim)
        except Exception:  # noqa: BLE001 - never worth stopping the master for
            log.exception("malloc_trim failed")
