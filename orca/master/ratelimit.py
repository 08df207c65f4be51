"""Per-client rate limiting: a token bucket per (client address, token id).

A bucket holds up to `burst` requests and refills at `per_minute / 60` per second: a client may burst,
then is held to the sustained rate (the sliding-window behaviour of Orchestry, without keeping every
timestamp). Buckets idle long enough to be full again are dropped, so memory stays bounded by the
number of active clients. The clock is injected so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["RateLimiter", "Decision"]


class Decision(NamedTuple):
    """One request's verdict (immutable; a NamedTuple, as a frozen dataclass's `__init__` costs several times
    more, and one is made per request)."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float        # seconds until the bucket is full again
    retry_after_s: float  # seconds until one request is allowed (0 when allowed)
    capacity: int = 0     # the bucket's size (the burst): what `remaining` counts down from


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000) -> None:
        self.per_minute = per_minute
        self.burst = max(1, burst)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, updated_at)

    def check(self, client: str, token_id: str) -> Decision:
        now = self.clock()
        key = (client, token_id)
        tokens, updated = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._evict(now)
        reset = (self.burst - tokens) / self.rate if self.rate > 0 else 0.0
        retry = 0.0 if allowed else ((1.0 - tokens) / self.rate if self.rate > 0 else 60.0)
        return Decision(allowed, self.per_minute, int(tokens), reset, retry, self.burst)

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate if self.rate > 0 else 0.0
        for key, (_, updated) in list(self._buckets.items()):
            if now - updated > full_after:
                del self._buckets[key]
