"""Opt-in stage trace of the control path: where a deploy's, a drain's or a node loss's time goes.

With `ORCA_TRACE=/path/file` in a master's or an agent's environment, `mark(stage, ...)` appends one
JSON line `{"t": wall seconds, "pid", "stage", ...}` to that file; without it `mark` is one attribute
test and nothing else. Every process of a local cluster may share one file: each line is a single
`write` on an `O_APPEND` descriptor, so lines never interleave. The fields are ids, counts and node
names only (never a spec, an environment or a token). `scripts/bench/trace_stages.py` turns a file into
per-stage timings.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = ["enabled", "mark", "open_trace"]

_fd: int | None = None


def open_trace(path: str | None) -> None:
    """Start (a path) or stop (None) writing marks; the environment's ORCA_TRACE is opened at import."""
    global _fd
    if _fd is not None:
        os.close(_fd)
        _fd = None
    if path:
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def enabled() -> bool:
    return _fd is not None


def mark(stage: str, **fields: Any) -> None:
    """One line for `stage` now; a failed write is dropped (a trace must never break the traced)."""
    if _fd is None:
        return
    line = json.dumps({"t": round(time.time(), 6), "pid": os.getpid(), "stage": stage, **fields},
                      separators=(",", ":"), default=str)
    try:
        os.write(_fd, (line + "\n").encode())
    except OSError:
        pass


open_trace(os.environ.get("ORCA_TRACE") or None)
