"""Blocking queries: `GET ...?index=N&wait=30s` answers once this master's state has moved past index N
(and what the route returns changed), or when the wait is over, whichever comes first.

Why: a watcher (`wait_converged`, `orca top`, a script) would otherwise poll every half second and still
see a change up to half a second late. With a blocking query it asks once with the `X-Orca-Applied-Index`
of the answer it has, and the master answers as soon as there is something new to see.

How, without blocking the Raft thread and without touching the state machine: `ReplicatedState.apply`
calls its `applied_listeners` in PySyncObj's tick thread after each entry; the listener here only records
the index and schedules, with `loop.call_soon_threadsafe` (once per burst of entries), a wake-up on the
event loop, where waiting requests re-check. Entries that never reach `apply` (a new leader's no-op, a
membership change) move the index without a wake-up, so a waiter also re-checks every `RECHECK_S`.

"Changed": a request whose N is this master's current index has seen what the route returns now, so it
waits for an index past N at which the answer differs (the lease renewals of every node, committed every
heartbeat, would otherwise end every wait within a second). A request whose N is behind is answered at
once; one whose N is ahead (it saw a master further along) waits for this master to pass N.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orca import bounds
from orca.errors import Invalid, OrcaError

__all__ = ["BlockingQuery", "AppliedWatch", "parse", "MAX_WAIT_S", "DEFAULT_WAIT_S", "MAX_WAITERS"]

MAX_WAIT_S = 300.0     # a longer wait is a 400: proxies and load balancers cut idle requests at minutes
DEFAULT_WAIT_S = 30.0  # `index` without `wait`
RECHECK_S = 1.0        # see the module docstring: index moves that bypass `apply`
MAX_WAITERS = 1024     # requests waiting at once on one master; past it a blocking query answers at once
_WAIT_RE = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,3}))?(ms|s|m)?", re.ASCII)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


@dataclass(frozen=True)
class BlockingQuery:
    index: int      # answer once the applied index is past this
    wait_s: float   # ... or after this many seconds


def parse(query: Mapping[str, str]) -> BlockingQuery | None:
    """The blocking parameters of a request, None when it has no `index` (an ordinary read).

    `index`: ASCII digits, 0..2^53. `wait`: a number with an optional unit `ms`, `s` (the default) or `m`
    (`30s`, `1.5m`, `500ms`, `10`), from 0 to 5 minutes. Anything else, or `wait` without `index`, is a 400
    VALIDATION_ERROR naming the parameter.
    """
    raw_index = query.get("index")
    raw_wait = query.get("wait")
    if raw_index is None or raw_index == "":
        if raw_wait:
            raise Invalid("wait: only with index (the X-Orca-Applied-Index of the answer you have)",
                          {"field": "wait"})
        return None
    index = bounds.query_int(raw_index, "index", 0, 0, bounds.MAX_INT)
    wait_s = DEFAULT_WAIT_S if not raw_wait else parse_wait(raw_wait)
    return BlockingQuery(index, wait_s)


def parse_wait(raw: str) -> float:
    """Seconds of a `wait` value; raises Invalid (400) for a malformed one or one over `MAX_WAIT_S`."""
    match = _WAIT_RE.fullmatch(raw)
    if match is None:
        raise Invalid(f"wait: expected a duration of at most {MAX_WAIT_S / 60:g}m in ms, s or m, like 30s, 1.5m "
                      "or 500ms", {"field": "wait", "max_s": MAX_WAIT_S})
    whole, frac, unit = match.groups()
    seconds = (int(whole) + (int(frac) / 10 ** len(frac) if frac else 0.0)) * _UNIT_S[unit]
    if seconds > MAX_WAIT_S:
        raise Invalid(f"wait: at most {MAX_WAIT_S:g} s", {"field": "wait", "max_s": MAX_WAIT_S})
    return seconds


class AppliedWatch:
    """Wakes the requests waiting for the applied index to move. Create it on the event loop."""

    def __init__(self, applied_index: Callable[[], int], listeners: list[Callable[[Any], None]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._applied_index = applied_index
        self._seen = 0  # the highest index `apply` has reached (PySyncObj counts it only after apply returns)
        self._changed = asyncio.Event()
        self._wake_pending = False
        self.waiting = 0
        self.released = False
        listeners.append(self._on_applied)

    def release(self) -> None:
        """Answer every waiting request now, and every later one at once: the server is shutting down
        (aiohttp waits for running handlers before it stops, and a wait may be minutes long)."""
        self.released = True
        self._wake()

    def index(self) -> int:
        """This master's applied index, including an entry whose apply has run but is not counted yet."""
        return max(self._applied_index(), self._seen)

    def _on_applied(self, _result: object) -> None:
        """Raft thread: note the index, and wake the loop once per burst (never block here)."""
        self._seen = max(self._seen, self._applied_index() + 1)  # called from inside apply of entry +1
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait(self, query: BlockingQuery, answer: Callable[[], Any]) -> None:
        """Return once the index is past `query.index` with an answer that differs from the one at the
        start (see the module docstring), or after `query.wait_s`. `answer()` computes the route's answer
        from the state (cheap: it is what the read itself runs); an error it raises is an answer too."""
        start = self.index()
        if start > query.index or query.wait_s <= 0 or self.waiting >= MAX_WAITERS or self.released:
            return
        baseline = _outcome(answer) if start == query.index else None
        deadline = self._loop.time() + query.wait_s
        self.waiting += 1
        try:
            while True:
                remaining = deadline - self._loop.time()
                if remaining <= 0 or self.released:
                    return
                changed = self._changed  # taken before the check: a wake-up after it sets this one
                if self.index() > query.index and (baseline is None or _outcome(answer) != baseline):
                    return
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, RECHECK_S))
                except TimeoutError:
                    pass
        finally:
            self.waiting -= 1


def _outcome(answer: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", answer())
    except OrcaError as err:
        return ("error", (err.code, err.message))
