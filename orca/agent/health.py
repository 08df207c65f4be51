"""HTTP health checks of the node's running replicas (DESIGN §5).

Every second, each running container whose spec has `health` (and `port`) gets
`GET http://{publish_address}:{host_port}{health}` with a 1 s timeout; 2xx and 3xx pass. Health is
"starting" until the first pass, then "healthy". Three failures in a row restart the container in place
(through the reconciler, which counts the restart and reports health "unhealthy" until a check passes
again). Checks of different containers run concurrently, so one hanging replica delays no other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from orca.agent.reconcile import Reconciler

__all__ = ["HealthMonitor", "FAILURES_BEFORE_RESTART"]

log = logging.getLogger("orca.agent.health")

FAILURES_BEFORE_RESTART = 3

Probe = Callable[[str], Awaitable[bool]]


class HealthMonitor:
    """Probes what `reconciler.health_targets()` lists and reports through `set_health` /
    `restart_unhealthy`. `probe(url) -> passed` is injectable for tests; by default an aiohttp GET.
    `run()` is the loop (cancel it to stop); `check_once()` is one round."""

    def __init__(self, reconciler: Reconciler, publish_address: str = "127.0.0.1", *, interval_s: float = 1.0,
                 timeout_s: float = 1.0, probe: Probe | None = None) -> None:
        self.reconciler = reconciler
        self.host = f"[{publish_address}]" if ":" in publish_address else publish_address
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._probe = probe
        self._session: aiohttp.ClientSession | None = None
        # alloc id -> (container id, consecutive failures)
        self._failures: dict[str, tuple[str, int]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.check_once()
                except Exception:  # a bug in one round must not end health checking
                    log.exception("health check round failed")
                await asyncio.sleep(self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check_once(self) -> None:
        targets = self.reconciler.health_targets()
        live = {alloc_id for alloc_id, *_ in targets}
        for alloc_id in list(self._failures):
            if alloc_id not in live:
                del self._failures[alloc_id]
        results = await asyncio.gather(*(self.probe(f"http://{self.host}:{port}{path}")
                                         for _, _, port, path in targets))
        for (alloc_id, container_id, _, path), passed in zip(targets, results, strict=True):
            prev_container, count = self._failures.get(alloc_id, (container_id, 0))
            if prev_container != container_id:
                count = 0
            if passed:
                self._failures[alloc_id] = (container_id, 0)
                self.reconciler.set_health(alloc_id, container_id, "healthy")
                continue
            count += 1
            self._failures[alloc_id] = (container_id, count)
            if count >= FAILURES_BEFORE_RESTART:
                reason = f"health check {path} failed {count} times"
                if await self.reconciler.restart_unhealthy(alloc_id, container_id, reason):
                    self._failures[alloc_id] = (container_id, 0)

    async def probe(self, url: str) -> bool:
        if self._probe is not None:
            return await self._probe(url)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
