"""Container CPU and memory use, sampled in a background thread for the heartbeat's `stats`.

`Runtime.stats(alloc_id)` returns one raw sample of a container (see `DockerRuntime.stats`):
  {"cpu_total": ns, "system_cpu": ns, "online_cpus": int, "pre_cpu_total": ns|None, "pre_system_cpu": ns|None,
   "mem_usage": bytes, "mem_limit": bytes}
The engine fills the `pre_` pair only when it waited for a second sample itself (about a second per
container); asked for a one-shot sample it leaves them empty, and the sampler uses its own previous
sample of the same container instead, so a pass over 50 containers costs 50 quick calls, not 50 s.

cpu % is Docker's definition (as `docker stats` shows it): the container's share of the host's CPU time
over the interval, times the number of CPUs, so one busy core is 100 and two are 200. mem % is usage
(page cache excluded where the engine says how much) over the limit (the host's memory when unlimited).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from orca.agent.runtime import Runtime, RuntimeFailure

__all__ = ["StatsSampler", "cpu_percent", "mem_percent", "SAMPLE_INTERVAL_S", "MAX_PER_PASS", "MAX_PASS_S"]

log = logging.getLogger("orca.agent.stats")

SAMPLE_INTERVAL_S = 5.0
# Bounded work per pass: at most this many containers and this long (an engine under load takes up to
# a second per one-shot sample); the next pass goes on where this one stopped.
MAX_PER_PASS = 50
MAX_PASS_S = 4.0


def cpu_percent(cur: dict[str, Any], prev: dict[str, Any] | None) -> float | None:
    """CPU % over the interval between `prev` (or the engine's own pre-sample) and `cur`; None when
    there is no interval yet."""
    pre_cpu, pre_sys = cur.get("pre_cpu_total"), cur.get("pre_system_cpu")
    if not pre_cpu or not pre_sys:
        if prev is None:
            return None
        pre_cpu, pre_sys = prev.get("cpu_total"), prev.get("system_cpu")
    if pre_cpu is None or pre_sys is None:
        return None
    cpu_delta = cur["cpu_total"] - pre_cpu
    sys_delta = cur["system_cpu"] - pre_sys
    if sys_delta <= 0 or cpu_delta < 0:
        return None
    return round(cpu_delta / sys_delta * max(1, int(cur.get("online_cpus") or 1)) * 100.0, 2)


def mem_percent(cur: dict[str, Any]) -> float | None:
    limit = cur.get("mem_limit") or 0
    if limit <= 0:
        return None
    return round(100.0 * max(0, cur.get("mem_usage") or 0) / limit, 2)


class StatsSampler:
    """Samples this node's running containers every `interval_s` in its own thread.

    Contract: `running()` returns the alloc ids to sample; it is called from the sampler's thread, so it
    must only read (a `list(...)` copy of a dict is atomic under the GIL). `latest()` is safe from any
    thread and returns `{alloc_id: {"cpu_pct", "mem_pct"}}` for every running container sampled so far
    (cpu % is 0.0 until its second sample). `start()` / `stop()` run and end the thread.
    """

    def __init__(self, runtime: Runtime, running: Callable[[], list[str]], *,
                 interval_s: float = SAMPLE_INTERVAL_S, max_per_pass: int = MAX_PER_PASS,
                 max_pass_s: float = MAX_PASS_S) -> None:
        self.runtime = runtime
        self.running = running
        self.interval_s = interval_s
        self.max_per_pass = max_per_pass
        self.max_pass_s = max_pass_s
        self._latest: dict[str, dict[str, float]] = {}
        self._prev: dict[str, dict[str, Any]] = {}
        self._cursor = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> dict[str, dict[str, float]]:
        return dict(self._latest)  # the dict is replaced whole by each pass, never mutated

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="orca-stats", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample_once()
            except Exception:  # a bad pass must not end the sampling
                log.exception("container stats pass failed")
            self._stop.wait(max(0.1, self.interval_s - (time.monotonic() - started)))

    def sample_once(self) -> dict[str, dict[str, float]]:
        """One pass (at most `max_per_pass` containers and `max_pass_s`); returns and publishes the
        new latest map."""
        alive = sorted(set(self.running()))
        start = self._cursor % len(alive) if alive else 0
        batch = (alive[start:] + alive[:start])[:self.max_per_pass]
        latest = {a: v for a, v in self._latest.items() if a in alive}
        self._prev = {a: v for a, v in self._prev.items() if a in alive}
        deadline = time.monotonic() + self.max_pass_s
        done = 0
        for alloc_id in batch:
            if self._stop.is_set() or (done and time.monotonic() > deadline):
                break
            done += 1
            try:
                cur = self.runtime.stats(alloc_id)
            except RuntimeFailure as exc:
                log.debug("stats of %s: %s", alloc_id, exc.reason)
                continue
            if cur is None:
                latest.pop(alloc_id, None)
                continue
            cpu = cpu_percent(cur, self._prev.get(alloc_id))
            mem = mem_percent(cur)
            self._prev[alloc_id] = cur
            old = latest.get(alloc_id, {})
            latest[alloc_id] = {"cpu_pct": cpu if cpu is not None else old.get("cpu_pct", 0.0),
                                "mem_pct": mem if mem is not None else old.get("mem_pct", 0.0)}
        self._cursor = start + done
        self._latest = latest
        return latest
