"""Token-bucket rate limiting with an injected clock."""

from __future__ import annotations

from orca.master.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_sustained_rate_with_retry_after() -> None:
    clock = Clock()
    rl = RateLimiter(per_minute=60, burst=5, clock=clock)
    decisions = [rl.check("1.2.3.4", "tok") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[0].remaining == 4 and decisions[4].remaining == 0
    assert 0.9 <= decisions[5].retry_after_s <= 1.0
    clock.t += 1.0
    assert rl.check("1.2.3.4", "tok").allowed
    assert not rl.check("1.2.3.4", "tok").allowed


def test_clients_and_tokens_have_separate_buckets() -> None:
    rl = RateLimiter(per_minute=60, burst=1, clock=Clock())
    assert rl.check("a", "t1").allowed and not rl.check("a", "t1").allowed
    assert rl.check("a", "t2").allowed and rl.check("b", "t1").allowed


def test_idle_buckets_are_evicted_past_the_cap() -> None:
    clock = Clock()
    rl = RateLimiter(per_minute=600, burst=10, clock=clock, max_clients=3)
    for i in range(3):
        rl.check(f"c{i}", "-")
    clock.t += 60
    rl.check("c3", "-")
    assert len(rl._buckets) == 1
