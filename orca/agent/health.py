"""Health checks of the node's running replicas: HTTP, TCP and exec (the rules: orca.healthcheck).

One round a second (`interval_s` of the monitor). A replica's check runs every `interval_s` of its own
spec, counted in rounds (so tests step rounds, not clocks):
- http: `GET http://{publish_address}:{host_port}{path}`; 2xx and 3xx pass.
- tcp: a TCP connection to `{publish_address}:{host_port}` is accepted and not closed at once (Docker's
  proxy accepts on a published port even when nothing listens in the container, then closes).
- exec: the command runs inside the container (the runtime's `exec_check`); exit 0 passes. One exec per
  replica at a time: a hanging command is not started again until it returned.
Each check fails after its `timeout_s`. Health is "starting" until the first pass, then "healthy".
`retries` failures in a row (not counting those within `start_period_s` of the container's start, before
its first pass) restart the container in place through the reconciler, which counts the restart, backs
off between restarts and reports "unhealthy" until a check passes again (liveness). Readiness follows
from "healthy" on the leader (rollouts, drains, ingress). Checks of different replicas run concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from orca.agent.reconcile import Reconciler
from orca.agent.runtime import RuntimeFailure

__all__ = ["HealthMonitor", "FAILURES_BEFORE_RESTART"]

log = logging.getLogger("orca.agent.health")

FAILURES_BEFORE_RESTART = 3  # orca.healthcheck.DEFAULTS["retries"]
# How long a TCP check watches a new connection for an immediate close (see `_tcp`).
TCP_SETTLE_S = 0.3

# probe(what) -> passed; `what` is "http://host:port/path", "tcp://host:port" or "exec:<alloc id>".
Probe = Callable[[str], Awaitable[bool]]


class _Track:
    """Per replica: which container it was, rounds seen, consecutive failures, whether it ever passed."""

    __slots__ = ("container_id", "rounds", "failures", "passed", "in_flight")

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.rounds = 0
        self.failures = 0
        self.passed = False
        self.in_flight = False


class HealthMonitor:
    """Probes what `reconciler.health_targets()` lists and reports through `set_health` /
    `restart_unhealthy`. `probe` is injectable for tests (see `Probe`); by default real checks.
    `run()` is the loop (cancel it to stop); `check_once()` is one round."""

    def __init__(self, reconciler: Reconciler, publish_address: str = "127.0.0.1", *, interval_s: float = 1.0,
                 timeout_s: float = 1.0, probe: Probe | None = None) -> None:
        self.reconciler = reconciler
        self.host = f"[{publish_address}]" if ":" in publish_address else publish_address
        self.interval_s = interval_s
        self.timeout_s = timeout_s  # of the plain string form's HTTP check
        self._probe = probe
        self._session: aiohttp.ClientSession | None = None
        self._tracks: dict[str, _Track] = {}
        self._execs: dict[str, asyncio.Future[int]] = {}  # alloc id -> its exec check still running, if any
        # (check type, "pass" | "fail") -> checks run since start; the agent's /metrics reads it
        self.results: dict[tuple[str, str], int] = {}
        self.restarts_total = 0  # containers restarted because their check failed `retries` times

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
        for alloc_id in list(self._tracks):
            if alloc_id not in live:
                del self._tracks[alloc_id]
        for alloc_id in [a for a, task in self._execs.items() if task.done()]:
            del self._execs[alloc_id]
        due = []
        for alloc_id, container_id, port, check in targets:
            track = self._tracks.get(alloc_id)
            if track is None or track.container_id != container_id:
                track = self._tracks[alloc_id] = _Track(container_id)
            every = max(1, math.ceil(float(check["interval_s"]) / self.interval_s - 1e-9))
            track.rounds += 1
            if track.in_flight or (track.rounds - 1) % every:
                continue
            due.append((alloc_id, container_id, port, check, track))
        for t in due:
            t[4].in_flight = True
        try:
            results = await asyncio.gather(*(self._check(alloc_id, port, check)
                                             for alloc_id, _, port, check, _ in due))
        finally:
            for t in due:
                t[4].in_flight = False
        for (alloc_id, container_id, _, check, track), passed in zip(due, results, strict=True):
            key = (str(check.get("kind", "http")), "pass" if passed else "fail")
            self.results[key] = self.results.get(key, 0) + 1
            if passed:
                track.failures, track.passed = 0, True
                self.reconciler.set_health(alloc_id, container_id, "healthy")
                continue
            if not track.passed and (track.rounds - 1) * self.interval_s < float(check["start_period_s"]):
                continue  # still starting up: failures do not count yet
            track.failures += 1
            if track.failures >= int(check["retries"]):
                reason = f"health check {_describe(check)} failed {track.failures} times"
                if await self.reconciler.restart_unhealthy(alloc_id, container_id, reason):
                    track.failures = 0
                    self.restarts_total += 1

    async def _check(self, alloc_id: str, port: int | None, check: dict[str, Any]) -> bool:
        kind = check["kind"]
        if kind == "http":
            what = f"http://{self.host}:{port}{check['target']}"
        elif kind == "tcp":
            what = f"tcp://{self.host}:{port}"
        else:
            what = f"exec:{alloc_id}"
        if self._probe is not None:
            return await self._probe(what)
        timeout = float(check["timeout_s"]) if check.get("timeout_s") else self.timeout_s
        if kind == "http":
            return await self.probe(what, timeout)
        if kind == "tcp":
            return await _tcp(self.host.strip("[]"), int(port or 0), timeout)
        return await self._exec(alloc_id, list(check["target"]), timeout)

    async def probe(self, url: str, timeout_s: float | None = None) -> bool:
        """One HTTP check (2xx/3xx pass)."""
        if self._probe is not None:
            return await self._probe(url)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(url, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)) as resp:
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _exec(self, alloc_id: str, cmd: list[str], timeout_s: float) -> bool:
        """Run the command in the container; the thread may outlive the timeout (the engine call has none),
        which is why a replica gets no second exec while one is in flight."""
        previous = self._execs.get(alloc_id)
        if previous is not None and not previous.done():
            return False  # the last one still hangs: that is a failure too
        task = self._execs[alloc_id] = asyncio.ensure_future(
            asyncio.to_thread(self.reconciler.runtime.exec_check, alloc_id, cmd))
        try:
            code = await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            return False
        except RuntimeFailure:
            return False
        return code == 0


async def _tcp(host: str, port: int, timeout_s: float) -> bool:
    """Connected, and the connection is not closed at once. The second part matters: a published port is
    served by Docker's userland proxy, which accepts every connection and closes it right away when
    nothing listens in the container. A server that waits for the client (or greets it) passes."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError):
        return False
    try:
        data = await asyncio.wait_for(reader.read(1), min(TCP_SETTLE_S, timeout_s / 2))
        passed = data != b""  # EOF: the proxy found no listener behind it
    except TimeoutError:
        passed = True  # open and quiet: a listener waiting for its client
    except OSError:
        passed = False
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (TimeoutError, OSError):
        pass
    return passed


def _describe(check: dict[str, Any]) -> str:
    if check["kind"] == "http":
        return str(check["target"])
    if check["kind"] == "tcp":
        return f"tcp:{check['target']}"
    return "exec " + " ".join(check["target"])[:80]
