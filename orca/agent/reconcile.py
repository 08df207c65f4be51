"""The agent's reconcile loop: make the node's containers match the leader's latest push.

Level-triggered: every pass (on a wake-up, else once a second) compares the desired allocations with
`Runtime.list()` and starts what is missing, stops what is not desired and restarts what exited. A pass
only *decides*; each operation runs as its own task, its engine calls in a worker thread (the SDK
blocks), at most `parallel` (ENGINE_PARALLEL) starts/stops/restarts at a time, so 20 replicas start
eight at a time instead of one by one. Pulls are outside that bound (one per image), so a slow pull
never holds up a stop.
An allocation with an operation in flight is left alone; the next pass (within a second, at once if a
push came in meanwhile) looks at it again. A list taken before an operation ended is not trusted for
that allocation, so a stop that just finished does not read as a container to adopt.

Failures never turn into a hot loop: a failed pull/start/stop and every crash push the allocation's
next attempt out by its backoff (1 s doubling to 30 s), reset once a container has run stably.

Until a first desired set is known (no push yet and none saved on disk) the reconciler adopts and
reports what runs but starts and stops nothing: an agent that lost its state must not kill replicas.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orca import trace
from orca.agent.runtime import ContainerState, Runtime, RuntimeFailure
from orca.healthcheck import check_of, has_check
from orca.jobs import decide_exit
from orca.protocol import container_name
from orca.registry import parse_credentials

__all__ = ["Reconciler", "AllocState", "resolve_env", "iso", "INITIAL_BACKOFF_S", "MAX_BACKOFF_S"]

log = logging.getLogger("orca.agent.reconcile")

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A container that has run this long is no longer crash-looping: its backoff starts over.
STABLE_S = 30.0
# Engine operations in flight at once. The engine's throughput still rises past four concurrent
# create+start calls (measured on a 2-core box: 20 containers 7-10 % sooner at 6-8 than at 4), and
# the agent's containers cost the engine more than a bare `docker run` (init, cgroup limits).
ENGINE_PARALLEL = 8
# A start that hits a taken host port tries another one, this many times in all.
PORT_ATTEMPTS = 5
# A host port the engine refused is skipped for this long (someone else holds it).
BAD_PORT_S = 60.0
# An image found (or pulled) is not asked about again for this long: with 20 replicas of one image,
# one inspect instead of 20. A start that fails for want of the image forgets it at once.
IMAGE_OK_S = 60.0

_SECRET_REF = re.compile(r"\$\{secrets\.([A-Za-z0-9_][A-Za-z0-9_.-]*)\}")
_PORT_TAKEN = ("already allocated", "address already in use")
# Docker status -> the protocol's allocation status.
_STATUS = {"running": "running", "exited": "exited", "dead": "exited", "created": "starting",
           "restarting": "starting", "removing": "stopped", "paused": "stopped"}


def iso(ts: float) -> str:
    """Wall-clock seconds as ISO-8601 UTC with milliseconds and a Z, like the masters' timestamps."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resolve_env(env: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """Substitute `${secrets.KEY}` from the push's secrets; a missing key is a start failure."""
    out: dict[str, str] = {}
    for key, value in env.items():
        missing = [m for m in _SECRET_REF.findall(value) if m not in secrets]
        if missing:
            raise RuntimeFailure(f"missing secret {missing[0]}")
        out[key] = _SECRET_REF.sub(lambda m: secrets[m.group(1)], value)
    return out


def registry_auth(spec: dict[str, Any], secrets: dict[str, str]) -> dict[str, str] | None:
    """The pull credentials of a spec's `registry_auth` (orca.registry), or None; a start failure naming
    only the secret key when it is missing or malformed."""
    ref = spec.get("registry_auth")
    if not ref:
        return None
    keys = _SECRET_REF.findall(ref)
    if len(keys) != 1 or keys[0] not in secrets:
        raise RuntimeFailure(f"missing secret {keys[0] if keys else '?'} (registry_auth)")
    try:
        return parse_credentials(secrets[keys[0]], keys[0])
    except ValueError as exc:
        raise RuntimeFailure(str(exc)) from None


@dataclass
class AllocState:
    """What the agent knows of one allocation: desired, running, or both. Heartbeats report it."""

    alloc_id: str
    service: str
    version: int
    spec: dict[str, Any] | None = None  # None: an adopted container not (yet) in any desired set
    status: str = "pending"
    reason: str | None = None
    container_id: str | None = None
    image: str = ""
    started_at: str | None = None
    host_port: int | None = None
    restarts: int = 0
    exit_code: int | None = None  # of the last exit
    final: bool = False  # complete or dead under the restart policy (orca.jobs): never restarted
    exits: int = 0
    health: str | None = None
    changed_at: float = 0.0  # wall clock of the last status change
    next_attempt: float = 0.0  # monotonic: no engine operation before this
    delay: float = INITIAL_BACKOFF_S
    busy: bool = False  # an engine operation is in flight
    done_seq: int = 0  # the reconciler's op sequence number when the last operation ended
    running_since: float | None = None
    counted_exit: tuple[str, str | None] | None = None  # (container id, started_at) already counted

    @property
    def name(self) -> str:
        return container_name(self.service, self.alloc_id)

    @property
    def has_health(self) -> bool:
        return has_check(self.spec)

    def report(self) -> dict[str, Any]:
        """An AllocReport (orca.protocol)."""
        return {"alloc": self.alloc_id, "service": self.service, "version": self.version,
                "container_id": self.container_id, "status": self.status,
                "health": self.health if self.has_health else None, "started_at": self.started_at,
                "restarts": self.restarts, "reason": self.reason, "host_port": self.host_port,
                "exit_code": self.exit_code}


def _take_spec(st: AllocState, alloc: dict[str, Any]) -> None:
    st.spec, st.service, st.version = alloc["spec"], alloc["service"], alloc["version"]
    if st.has_health and st.health is None:
        st.health = "starting"


class Reconciler:
    """Drives `runtime` towards the desired set.

    Contract: `set_desired(push)` takes a validated AllocationsPush (or None: nothing known yet) and
    wakes the loop; `run()` is the loop (cancel it to stop); `reports()` is the heartbeat's view and
    `states` the status API's. For the health monitor: `health_targets()`, `set_health()` and
    `restart_unhealthy()`. `clock` (monotonic) paces backoffs, `wall` stamps times shown to people; both
    are injectable for tests, which call `reconcile_once()` and then `wait_idle()`.

    `before_stop(alloc_id)`, when given, is awaited before a replica that left the desired set is
    stopped (the ingress proxy drains its in-flight requests to it there); it bounds its own wait, and
    an exception from it is logged and does not prevent the stop.
    """

    def __init__(self, runtime: Runtime, *, host_port_range: tuple[int, int] = (20000, 20999),
                 parallel: int = ENGINE_PARALLEL, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 before_stop: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self.runtime = runtime
        self.before_stop = before_stop
        self.port_range = host_port_range
        self.interval_s = interval_s
        self.clock = clock
        self.wall = wall
        self.states: dict[str, AllocState] = {}
        self.engine_error: str | None = None
        self.restarts_total = 0  # container restarts since the agent started (its /metrics counter)
        self.applied: dict[str, int] = {"term": 0, "version": 0}
        self._desired: dict[str, dict[str, Any]] | None = None
        self._secrets: dict[str, str] = {}
        self._sem = asyncio.Semaphore(parallel)
        # Threads of their own for the bounded engine operations: asyncio's default pool has cpu + 4
        # threads (6 on two cores), shared with the lists and health checks that must not wait behind them.
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="orca-engine")
        self._wake = asyncio.Event()
        # Set whenever a replica's status or health changes: the agent then heartbeats early, so the
        # leader learns "running"/"healthy" in ~0.1 s instead of up to a heartbeat period later.
        self.changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._op_seq = 0
        self._generation = 0  # bumped by every set_desired
        # alloc id -> op seq of a stop that removed its container (a list older than that still shows it)
        self._gone: dict[str, int] = {}
        self._images_ok: dict[str, float] = {}
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._ports_in_use: set[int] = set()
        self._reserved: set[int] = set()
        self._bad_ports: dict[int, float] = {}
        self._port_cursor = host_port_range[0]
        # Volume removal orders of the last push not yet done, and those done (orca.volumes).
        self._purges: list[dict[str, Any]] = []
        self._purged: set[tuple[str, int, int]] = set()
        self._listed = False  # a list has succeeded: what ran before this agent started is adopted

    # -- inputs ------------------------------------------------------------------------------------

    def set_desired(self, push: dict[str, Any] | None) -> None:
        if push is None:
            self._desired = None
            return
        secrets_changed = push.get("secrets", {}) != self._secrets
        self._purges = [p for p in push.get("purge_volumes") or []
                        if (p["service"], p["slot"], p["gen"]) not in self._purged]
        self._desired = {a["id"]: a for a in push["allocations"]}
        self._secrets = dict(push.get("secrets") or {})
        self.applied = {"term": push["term"], "version": push["version"]}
        self._generation += 1
        for alloc_id, alloc in self._desired.items():
            st = self.states.get(alloc_id)
            if st is not None:
                _take_spec(st, alloc)
                # A failure caused by a missing secret may be fixed by this push: retry now.
                if secrets_changed and st.status == "failed":
                    st.next_attempt = 0.0
        self._act_on_push()
        self.wake()

    def _act_on_push(self) -> None:
        """Start the push's new allocations and stop the ones it dropped at once, before the pass's engine
        list: an allocation id is new to the cluster, so no container of it can exist, and a dropped one
        is known by its state. Only once a first list has adopted what runs (an agent restarted with
        containers must see them before it acts), and only on the event loop; the pass that follows
        skips what is in flight here and handles everything else as usual."""
        desired = self._desired
        if desired is None or not self._listed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        now = self.clock()
        for alloc_id, alloc in desired.items():
            if alloc_id in self.states:
                continue
            st = self.states[alloc_id] = AllocState(alloc_id, alloc["service"], alloc["version"],
                                                    changed_at=self.wall())
            _take_spec(st, alloc)
            self._launch(st, self._start(st, alloc))
        for alloc_id, st in list(self.states.items()):
            waiting = st.status == "failed" and now < st.next_attempt
            if alloc_id not in desired and not st.busy and st.container_id and not waiting:
                self._launch(st, self._stop(st))

    def wants(self, alloc_id: str) -> bool:
        """Is `alloc_id` in the desired set? Safe from any thread (one dict lookup)."""
        desired = self._desired
        return desired is not None and alloc_id in desired

    @property
    def has_desired(self) -> bool:
        return self._desired is not None

    def wake(self) -> None:
        self._wake.set()

    # -- outputs -----------------------------------------------------------------------------------

    def reports(self) -> list[dict[str, Any]]:
        return [self.states[k].report() for k in sorted(self.states)]

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.reconcile_once()
            except Exception:  # one bad pass must not end the loop; the next one starts afresh
                log.exception("reconcile pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def wait_idle(self) -> None:
        """Wait until no engine operation is in flight (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def reconcile_once(self) -> None:
        trace.mark("reconcile_pass")
        seq_at_list = self._op_seq
        try:
            actual = await asyncio.to_thread(self.runtime.list)
        except RuntimeFailure as exc:
            if self.engine_error != exc.reason:
                log.warning("container engine: %s", exc.reason)
            self.engine_error = exc.reason
            return
        self.engine_error = None
        self._listed = True
        now = self.clock()
        # A container whose stop ended after the list was taken is gone already: not to be adopted.
        by_alloc = {c.alloc_id: c for c in actual if self._gone.get(c.alloc_id, -1) <= seq_at_list}
        self._gone = {a: seq for a, seq in self._gone.items() if seq > seq_at_list}
        self._ports_in_use = {c.host_port for c in actual if c.host_port}

        for alloc_id, c in by_alloc.items():
            st = self.states.get(alloc_id)
            if st is None:
                st = self.states[alloc_id] = AllocState(alloc_id, c.service, c.version, changed_at=self.wall())
                log.info("adopted container %s (%s)", c.name, c.status)
            if not self._stale(st, seq_at_list):
                self._observe(st, c, now)

        desired = self._desired
        if desired is None:
            self._forget(by_alloc)
            return
        for alloc_id in by_alloc:
            st = self.states[alloc_id]
            # Only a failed stop backs off; a crash backoff must not delay stopping an unwanted replica.
            waiting = st.status == "failed" and now < st.next_attempt
            if alloc_id not in desired and not self._stale(st, seq_at_list) and not waiting:
                self._launch(st, self._stop(st))
        for alloc_id, alloc in desired.items():
            st = self.states.get(alloc_id)
            if st is None:
                st = self.states[alloc_id] = AllocState(alloc_id, alloc["service"], alloc["version"],
                                                        changed_at=self.wall())
            if st.spec is not alloc["spec"]:  # new, or adopted before its desired set was known
                _take_spec(st, alloc)
            if self._stale(st, seq_at_list) or now < st.next_attempt:
                continue
            c = by_alloc.get(alloc_id)
            if c is None or c.status == "created":
                self._launch(st, self._start(st, alloc))
            elif c.status in ("exited", "dead") and not st.final:
                self._launch(st, self._restart(st))
        self._forget(by_alloc)
        if self._purges:
            await self._purge_volumes()

    async def _purge_volumes(self) -> None:
        """Carry out the leader's volume removals; the engine refuses to remove a volume a container still
        mounts (one being stopped), so such an order simply stays for the next pass."""
        try:
            done = await asyncio.to_thread(self.runtime.purge_volumes, list(self._purges))
        except RuntimeFailure as exc:
            log.warning("volume removal: %s", exc.reason)
            return
        keys = {(p["service"], p["slot"], p["gen"]) for p in done}
        if len(self._purged) > 100_000:  # bounded; the leader's list per node is far shorter
            self._purged.clear()
        self._purged |= keys
        self._purges = [p for p in self._purges if (p["service"], p["slot"], p["gen"]) not in keys]

    def _stale(self, st: AllocState, seq_at_list: int) -> bool:
        """Busy, or an operation ended after the container list was taken (the list may predate it)."""
        return st.busy or st.done_seq > seq_at_list

    def _forget(self, by_alloc: dict[str, ContainerState]) -> None:
        for alloc_id in list(self.states):
            st = self.states[alloc_id]
            desired = self._desired is not None and alloc_id in self._desired
            if not st.busy and alloc_id not in by_alloc and not desired:
                del self.states[alloc_id]
                self.changed.set()  # it leaves the report

    def _observe(self, st: AllocState, c: ContainerState, now: float) -> None:
        st.container_id, st.image, st.host_port = c.container_id, c.image, c.host_port
        st.started_at = c.started_at
        if c.status == "running":
            st.final = False
            if st.running_since is None:
                st.running_since = now
            # Stable means running for a while and, with a health check, passing it: only then does the
            # backoff start over (else a replica failing its checks would restart at full speed).
            healthy = not st.has_health or st.health == "healthy"
            if now - st.running_since >= STABLE_S and healthy:
                st.delay = INITIAL_BACKOFF_S
                if st.reason and st.status == "running":
                    st.reason = None
            self._set_status(st, "running")
            return
        st.running_since = None
        if c.status in ("exited", "dead"):
            key = (c.container_id, c.started_at)
            if st.counted_exit != key:
                st.counted_exit = key
                st.exits += 1
                st.exit_code = c.exit_code
                code = "" if c.exit_code is None else f" (exit code {c.exit_code})"
                verdict = decide_exit(st.spec, c.exit_code, st.exits)
                if verdict != "restart":
                    st.final = True
                    st.reason = ("completed" if verdict == "complete" else
                                 f"gave up after {st.exits} run{'s' if st.exits != 1 else ''}") + code
                    st.health = None if not st.has_health else st.health
                    log.info("%s %s", st.name, st.reason)
                    self._set_status(st, verdict)
                    return
                st.reason = f"crash loop: exited {st.exits} time{'s' if st.exits != 1 else ''}{code}"
                self._backoff(st, now)
                if st.has_health:
                    st.health = "starting"
                log.warning("%s exited%s; restart in %.0f s", st.name, code, st.next_attempt - now)
            if st.final:
                return
            if st.status != "failed":
                self._set_status(st, "exited")
            return
        self._set_status(st, _STATUS.get(c.status, "starting"))

    def _set_status(self, st: AllocState, status: str) -> None:
        if st.status != status:
            st.status = status
            st.changed_at = self.wall()
            self.changed.set()

    def _backoff(self, st: AllocState, now: float) -> None:
        st.next_attempt = now + st.delay
        st.delay = min(st.delay * 2, MAX_BACKOFF_S)

    def _fail(self, st: AllocState, reason: str) -> None:
        self._backoff(st, self.clock())
        st.reason = reason
        self._set_status(st, "failed")
        log.warning("%s: %s (retry in %.0f s)", st.name, reason, st.next_attempt - self.clock())

    # -- operations (each runs as a task, `busy` set while it does) --------------------------------

    async def _engine(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one blocking engine call in the reconciler's own threads (callers hold `_sem`)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def _launch(self, st: AllocState, op: Awaitable[None]) -> None:
        st.busy = True
        task = asyncio.create_task(self._guarded(st, op, self._generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _op_done(self, st: AllocState) -> None:
        self._op_seq += 1
        st.done_seq = self._op_seq
        st.busy = False

    async def _guarded(self, st: AllocState, op: Awaitable[None], generation: int) -> None:
        try:
            await op
        except RuntimeFailure as exc:
            self._fail(st, exc.reason)
        except Exception as exc:
            log.exception("%s: operation failed", st.name)
            self._fail(st, f"agent error: {type(exc).__name__}")
        finally:
            self._op_done(st)
            # The operation already updated its allocation, and a failure waits out its backoff: only a
            # push that came in meanwhile (and skipped this busy allocation) needs a pass now. Waking on
            # every completion would list the engine once per started replica.
            if generation != self._generation:
                self.wake()

    async def _start(self, st: AllocState, alloc: dict[str, Any]) -> None:
        spec = alloc["spec"]
        env = resolve_env(spec.get("env") or {}, self._secrets)
        # Pulls are outside the bound on parallel operations: a slow pull must not hold up stops.
        # A webhook redeploy asks for a fresh pull once per revision (the tag may have moved).
        auth = registry_auth(spec, self._secrets)
        await self._ensure_image(st, spec["image"], revision=spec.get("revision") if spec.get("pull_policy") == "always"
                                 else None, auth=auth)
        self._set_status(st, "starting")
        trace.mark("start_queued", alloc=st.alloc_id)
        try:
            async with self._sem:
                trace.mark("start_begin", alloc=st.alloc_id)
                state = await self._start_on_free_port(alloc, env) if spec.get("port") else \
                    await self._engine(self.runtime.start, alloc, env=env, host_port=None)
        except RuntimeFailure as exc:
            if "image" in exc.reason.lower():
                self._images_ok.pop(spec["image"], None)
            raise
        trace.mark("started", alloc=st.alloc_id, status=state.status)
        log.info("started %s (%s)%s", st.name, state.container_id[:12],
                 f" on port {state.host_port}" if state.host_port else "")
        st.reason = None
        st.health = "starting" if st.has_health else None
        st.running_since = None
        self._observe(st, state, self.clock())

    async def _ensure_image(self, st: AllocState, image: str, revision: str | None = None,
                            auth: dict[str, str] | None = None) -> None:
        """Pull once per image (and revision) however many replicas want it; the others wait for it.
        `auth` (registry credentials) is handed to the runtime only, never logged."""
        key = image if revision is None else f"{image}@{revision}"
        lock = self._image_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._images_ok.get(key, -1.0) > self.clock():
                return
            self._set_status(st, "pulling")
            if auth is None:
                await asyncio.to_thread(self.runtime.ensure_image, image, revision is not None)
            else:
                await asyncio.to_thread(functools.partial(self.runtime.ensure_image, image, revision is not None,
                                                          auth=auth))
            self._images_ok[key] = self.clock() + (IMAGE_OK_S if revision is None else 10 * 365 * 86400.0)

    async def _start_on_free_port(self, alloc: dict[str, Any], env: dict[str, str]) -> ContainerState:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._pick_port()
            self._reserved.add(port)
            try:
                return await self._engine(self.runtime.start, alloc, env=env, host_port=port)
            except RuntimeFailure as exc:
                if attempt == PORT_ATTEMPTS or not any(m in exc.reason.lower() for m in _PORT_TAKEN):
                    raise
                log.info("host port %d is taken, trying another", port)
                self._bad_ports[port] = self.clock() + BAD_PORT_S
            finally:
                self._reserved.discard(port)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pick_port(self) -> int:
        """A host port from the range that no container of this node uses, round robin so that two
        agents sharing an engine (and a range) rarely race for the same one."""
        lo, hi = self.port_range
        now = self.clock()
        self._bad_ports = {p: t for p, t in self._bad_ports.items() if t > now}
        taken = self._ports_in_use | self._reserved | set(self._bad_ports)
        for s in self.states.values():
            if s.host_port:
                taken.add(s.host_port)
        size = hi - lo + 1
        for i in range(size):
            port = lo + (self._port_cursor - lo + i) % size
            if port not in taken:
                self._port_cursor = lo + (port - lo + 1) % size
                return port
        raise RuntimeFailure(f"no free host port in {lo}-{hi}")

    async def _restart(self, st: AllocState) -> None:
        async with self._sem:
            await self._engine(self.runtime.restart, st.alloc_id)
        st.restarts += 1
        self.restarts_total += 1
        self._set_status(st, "starting")
        log.info("restarted %s (restart %d)", st.name, st.restarts)

    async def _stop(self, st: AllocState) -> None:
        self._set_status(st, "stopped")
        if self.before_stop is not None:
            # Outside the semaphore: a replica draining for seconds must not hold up other operations.
            try:
                await self.before_stop(st.alloc_id)
            except Exception:
                log.exception("%s: before-stop hook failed; stopping anyway", st.name)
        async with self._sem:
            trace.mark("stop_begin", alloc=st.alloc_id)
            await self._engine(self.runtime.stop, st.alloc_id)
        trace.mark("stopped", alloc=st.alloc_id)
        log.info("stopped %s", st.name)
        self.states.pop(st.alloc_id, None)
        self._gone[st.alloc_id] = self._op_seq + 1  # the seq _op_done is about to hand out
        # Gone from the report: heartbeat early, so the leader forgets it (and a drain waiting for the
        # node to run nothing completes) now, not a heartbeat period later.
        self.changed.set()

    async def stop_all(self) -> None:
        """Stop every container of this node (the node was forgotten by the cluster)."""
        await self.wait_idle()
        self._desired = {}
        actual = await asyncio.to_thread(self.runtime.list)
        await asyncio.gather(*(asyncio.to_thread(self.runtime.stop, c.alloc_id) for c in actual),
                             return_exceptions=True)

    # -- health monitor hooks ----------------------------------------------------------------------

    def health_targets(self) -> list[tuple[str, str, int | None, dict[str, Any]]]:
        """(alloc id, container id, host port, check from orca.healthcheck) of every running container to
        probe; the host port is None only for an exec check, which needs none."""
        out = []
        for s in self.states.values():
            check = check_of(s.spec) if s.status == "running" and not s.busy and s.container_id else None
            if check is not None and (s.host_port or check["kind"] == "exec"):
                out.append((s.alloc_id, str(s.container_id), s.host_port, check))
        return out

    def set_health(self, alloc_id: str, container_id: str, health: str) -> None:
        st = self.states.get(alloc_id)
        if st is not None and st.container_id == container_id and st.has_health and st.health != health:
            st.health = health
            st.changed_at = self.wall()
            self.changed.set()

    async def restart_unhealthy(self, alloc_id: str, container_id: str, reason: str) -> bool:
        """Restart a container that failed its health checks, unless it is busy or backing off;
        True when it was restarted."""
        st = self.states.get(alloc_id)
        if st is None or st.busy or st.container_id != container_id or self.clock() < st.next_attempt:
            return False
        st.busy = True
        try:
            await asyncio.to_thread(self.runtime.restart, alloc_id)
        except RuntimeFailure as exc:
            self._fail(st, exc.reason)
            return False
        finally:
            self._op_done(st)
        st.restarts += 1
        self.restarts_total += 1
        st.health = "unhealthy"
        st.reason = reason
        st.running_since = None
        self._backoff(st, self.clock())
        log.warning("%s: %s; restarted (restart %d)", st.name, reason, st.restarts)
        return True
