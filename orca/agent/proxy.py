"""The agent's ingress proxy: HAProxy, configured and supervised by the agent.

The route table comes from the leader with every push (`AllocationsPush.routes`, orca.protocol): it maps
a domain to its service, its balancing strategy, its canary weight and its endpoints (healthy replicas on
any node, as "host:port"). `set_routes` keeps orca's view (Route, Endpoint) and renders the HAProxy
config (orca.agent.haproxy_config, pure); when the text changes the agent rewrites the file and applies it:
  - only servers or weights changed (replicas added, removed, canary weights: a rolling update, a
    scale): through the current worker's runtime API (`add server`, `set weight`, `set server ...
    state maint`, later `del server` once idle), live within milliseconds, nothing restarted; a
    removed server takes no new request and finishes the ones it has;
  - anything else (a service or domain added or removed, a strategy, a replica that moved, a runtime
    command that failed): a hitless reload through the master (master-worker mode, `-W -S`): the new
    worker takes new connections at once, old workers finish their in-flight requests (bounded by
    `hard-stop-after`), live in a few hundred milliseconds.
Either way nothing in flight is dropped; `settled()` waits until the latest table is live.

Replicas of this node are reached at their container's address and port, not through Docker's port
mapping (on 127.0.0.1, its userland relay docker-proxy costs about as much CPU per request as HAProxy):
`list_local` (given by the agent; orca.agent.local_containers, the listing the mesh uses too) runs before
each new table is rendered and every LOCAL_REFRESH_S; a container it has not listed yet keeps its
published address, and a listing that moves one is applied with `set server ... addr` (no reload).

HAProxy runs as the agent's child (`-db`: in the foreground), one per agent, pid file and sockets in
`run_dir` (the agent's data dir); it gets SIGKILL when the agent dies (PR_SET_PDEATHSIG), and a
leftover from a crashed agent found through the pid file is killed on start.

Draining: an endpoint missing from a new table gets no new request (in maintenance, or unknown to a new
worker; the requests it has finish); `drain(alloc)` (the reconciler's `before_stop` hook) also fences it (left
out of every later config) and waits, up to `drain_timeout_s`, until no HAProxy worker, old or current,
has a request in flight to it, so a replica is only stopped once the proxy is finished with it.

Statistics (`stats()`, the heartbeat's `proxy`, orca.protocol ProxyStats) are cumulative since start:
per service (requests, errors = 5xx answered, active, latency histogram on LATENCY_BUCKETS_MS) and per
replica (requests, errors, active), the replicas capped for the heartbeat. Requests, errors and latency
come from HAProxy's request log lines (raw, over a Unix datagram socket in the private run dir:
backend, server, status, total time in ms, sampling rate), which survive reloads, unlike HAProxy's own
counters; above hc.LOG_LINES_PER_S requests/s the successful ones are sampled and weighted;
`active` comes from `show stat` (scur) of every live worker, polled every POLL_S. Under overload the
kernel may drop log datagrams: the counts then undercount, they never block a request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orca import logging_setup
from orca.agent import haproxy_config as hc
from orca.agent.haproxy_config import hostname
from orca.agent.local_containers import LocalContainer, reach_locally
from orca.config import ProxyConfig, parse_host_port
from orca.protocol import LATENCY_BUCKETS_MS

__all__ = ["Proxy", "Route", "Endpoint", "hostname", "MAX_REPLICAS_REPORTED", "POLL_S", "haproxy_binary"]

log = logging.getLogger("orca.agent.proxy")

# The heartbeat must stay under 64 KiB: at most this many replicas (the busiest) are reported.
MAX_REPLICAS_REPORTED = 200
# A replica gone from the routes keeps its counters this long (the leader reads them from heartbeats).
RETIRED_KEEP_S = 300.0
# `active` (HAProxy's scur) is refreshed this often.
POLL_S = 0.2
# A reply from HAProxy's master CLI is read up to this size (show stat of thousands of servers fits).
CLI_MAX_BYTES = 16 * 2**20
CLI_TIMEOUT_S = 5.0
# Starting HAProxy (config check and first worker) and a reload are given this long.
START_TIMEOUT_S = 10.0
# The longest socket path kept in run_dir ("master.sock", the longest name there): HAProxy refuses a
# `stats socket` path over 97 bytes ("admin.sock" is one shorter); longer run dirs use a short one in /tmp.
MAX_SOCKET_PATH = 96
# Servers removed at run time are deleted (once idle) at most this many per poll.
PARKED_DELETES_PER_POLL = 16
# HAProxy's log lines: at most this long (its `len`), read at most LOG_BATCH per event-loop wake-up.
LOG_MAX_BYTES = 1024
# A log line's sampling rate is believed up to this (requests/s of one HAProxy worker).
MAX_LOG_RATE = 1e6
LOG_BATCH = 256
# stop(): the background loops get this long to end; HAProxy this long to exit after SIGKILL.
STOP_TASKS_WAIT_S = 5.0
STOP_KILL_WAIT_S = 5.0
PR_SET_PDEATHSIG = 1
# This node's containers are listed again this often (a restarted one has a new address), and on
# every new table; a listing is waited for at most LOCAL_LIST_WAIT_S (else the last one is used).
LOCAL_REFRESH_S = 5.0
LOCAL_LIST_WAIT_S = 2.0


def haproxy_binary() -> str | None:
    """The haproxy executable (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                            if os.access(p, os.X_OK)), None)


class Endpoint:
    """One replica as the proxy sees it; also its per-replica counters (they outlive its routes)."""

    __slots__ = ("alloc", "service", "address", "canary", "active", "requests", "errors", "fenced", "routed",
                 "retired_at")

    def __init__(self, alloc: str, service: str, address: str, canary: bool) -> None:
        self.alloc = alloc
        self.service = service
        self.address = address
        self.canary = canary
        self.active = 0  # in flight, over every HAProxy worker (polled)
        self.requests = 0.0  # weighted, like ServiceStats
        self.errors = 0.0
        self.fenced = False  # being stopped: never in a config again, whatever a table says
        self.routed = True  # listed in the current table
        self.retired_at = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class Route:
    """One domain: its service, strategy, canary weight and endpoints."""

    __slots__ = ("domain", "service", "strategy", "canary_weight", "endpoints")

    def __init__(self, domain: str, service: str, strategy: str, canary_weight: float | None,
                 endpoints: list[Endpoint]) -> None:
        self.domain = domain
        self.service = service
        self.strategy = strategy
        self.canary_weight = canary_weight
        self.endpoints = endpoints

    def live(self) -> int:
        return sum(1 for e in self.endpoints if not e.fenced)


class ServiceStats:
    """Cumulative counters of one service (ProxyStats without the replicas)."""

    __slots__ = ("requests", "errors", "active", "buckets", "latency_sum_ms")

    def __init__(self) -> None:
        self.requests = 0.0  # weighted (sampled log lines stand for several requests): reported rounded
        self.errors = 0.0
        self.active = 0
        self.buckets = [0.0] * (len(LATENCY_BUCKETS_MS) + 1)  # per bucket, not cumulative; +Inf last
        self.latency_sum_ms = 0.0

    def record(self, status: int, ms: float, weight: float = 1.0) -> None:
        self.requests += weight
        if status >= 500:
            self.errors += weight
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += weight
        self.latency_sum_ms += ms * weight

    def report(self) -> dict[str, Any]:
        cumulative, total = [], 0.0
        for count in self.buckets:
            total += count
            cumulative.append(round(total))
        return {"requests": round(self.requests), "errors": round(self.errors), "active": self.active,
                "latency_buckets": cumulative, "latency_sum_ms": round(self.latency_sum_ms, 3)}


class _LogReader:
    """HAProxy's per-request log lines (hc.LOG_FORMAT) into the proxy's counters: up to LOG_BATCH
    datagrams per wake-up of the event loop (asyncio's datagram transport reads one per wake-up, which
    costs a selector round per request under load)."""

    def __init__(self, proxy: Proxy, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy, self.sock, self.loop = proxy, sock, loop
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        record = self.proxy.record_log_line
        for _ in range(LOG_BATCH):
            try:
                data = self.sock.recv(LOG_MAX_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("HAProxy log socket: %s", exc)
                return
            record(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Proxy:
    """The ingress proxy of one agent.

    Contract: `set_routes(table)` with a validated push's `routes` (any time, from the event loop; a
    running proxy applies it in the background, `settled()` waits for that); `start()` runs HAProxy on
    `config.listen` and `stop()` ends it (in-flight requests get `drain_timeout_s`); `drain(alloc_id)` is
    awaited by the reconciler before it stops a replica; `stats()` feeds the heartbeat,
    `route_active(service)` the NodeReport. `run_dir` holds the config, pid file and sockets (a
    temporary directory when None).
    """

    def __init__(self, config: ProxyConfig, *, run_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.run_dir = run_dir
        self.routes: dict[str, Route] = {}
        self.endpoints: dict[str, Endpoint] = {}  # alloc id -> endpoint, routed or retired
        self.services: dict[str, ServiceStats] = {}
        self.listening = False
        self.port: int | None = None
        self._table: dict[str, Any] = {}
        self._wanted = 0  # generation of the latest table
        self._applied = 0  # generation live in HAProxy
        self._changed = asyncio.Event()
        self._applied_event = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._log_reader: _LogReader | None = None
        self._log_target = "/dev/null"
        self._sock_dir: Path | None = None
        self._tmp_dirs: list[str] = []
        self._config_text = ""
        self._live: hc.Servers = {}  # servers of the current worker, as configured or changed at run time
        self._parked: hc.Parked = {}  # removed at run time, in maintenance until deleted
        self._reload_lock = asyncio.Lock()
        self._stopping = False
        # This node's replicas are reached at their container's address (orca.agent.local_containers):
        # `list_local` (set by the agent; None: every replica at its published port) lists them.
        self.list_local: Callable[[], dict[str, LocalContainer]] | None = None
        self.local: dict[str, LocalContainer] = {}
        self._listed = 0  # generation of the table the last listing was made for
        self._listing: asyncio.Future[dict[str, LocalContainer]] | None = None
        self._list_warned = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- the table ---------------------------------------------------------------------------------

    def set_routes(self, table: dict[str, Any] | None) -> None:
        """Swap in a RouteTable (orca.protocol). Malformed entries are skipped with a warning: one bad
        route must not take the others down."""
        now = self.clock()
        table = dict(table or {})
        specs, warnings = hc.route_specs(table, self.config.strategy)
        for warning in warnings:
            log.warning("%s", warning)
        routes: dict[str, Route] = {}
        seen: set[str] = set()
        for spec in specs:
            endpoints = []
            for server in spec.servers:
                ep = self.endpoints.get(server.alloc)
                if ep is None:
                    ep = self.endpoints[server.alloc] = Endpoint(server.alloc, spec.service, server.address,
                                                                 server.canary)
                ep.address, ep.canary, ep.service, ep.routed = server.address, server.canary, spec.service, True
                seen.add(server.alloc)
                endpoints.append(ep)
            for domain in spec.domains:
                routes[domain] = Route(domain, spec.service, spec.strategy, spec.canary_weight, endpoints)
            self.services.setdefault(spec.service, ServiceStats())
        for alloc, ep in list(self.endpoints.items()):
            if alloc not in seen:
                if ep.routed:
                    ep.routed, ep.retired_at = False, now
                elif ep.active == 0 and now - ep.retired_at > RETIRED_KEEP_S:
                    del self.endpoints[alloc]
        self.routes = routes
        self._table = table
        self._bump()

    def _bump(self) -> None:
        self._wanted += 1
        self._changed.set()

    def render(self) -> str:
        """The HAProxy config for the current table, fenced replicas left out."""
        fenced = {a for a, e in self.endpoints.items() if e.fenced}
        specs, _ = hc.route_specs(self._table, self.config.strategy, fenced)
        return hc.render(reach_locally(specs, self.local), listen=self.config.listen, log_target=self._log_target,
                         idle_timeout_s=self.config.idle_timeout_s, request_timeout_s=self.config.request_timeout_s,
                         connect_timeout_s=self.config.upstream_connect_timeout_s,
                         drain_timeout_s=self.config.drain_timeout_s,
                         stats_socket=str(self.admin_socket) if self._sock_dir is not None else None,
                         lua_file=str(self.run_dir / "hop_by_hop.lua") if self.run_dir is not None else None)

    async def settled(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Wait until the latest table is live in HAProxy (True), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.listening and self._applied < self._wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._applied_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await self._applied_event.wait()
        return self._applied >= self._wanted

    def route_active(self, service: str) -> bool:
        """True while this proxy listens and has a route with at least one endpoint for `service`."""
        return self.listening and any(r.service == service and r.live() for r in self.routes.values())

    async def drain(self, alloc_id: str, timeout: float | None = None) -> bool:
        """Fence a replica (no new request goes to it) and wait until its in-flight requests are done,
        at most `timeout` (default `drain_timeout_s`). False when some were still running (or could not
        be counted). Whatever it returns, the fence is live in HAProxy first (a reload, well under a
        second; START_TIMEOUT_S at most), so a replica stopped after it gets no new request."""
        ep = self.endpoints.get(alloc_id)
        if ep is None:
            return True
        timeout = self.config.drain_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not ep.fenced:
            ep.fenced = True
            self._bump()
        if not self.listening:
            return True
        await self.settled(max(timeout, START_TIMEOUT_S))
        while True:
            # Only a fresh reading counts: while the master re-executes itself for a reload its socket
            # refuses connections, and the last counts may predate a request that just started.
            fresh = await self._poll_active()
            if fresh and ep.active == 0:
                return True
            if time.monotonic() >= deadline:
                if fresh:
                    log.warning("%s still had %d request(s) in flight after the drain timeout", alloc_id, ep.active)
                else:
                    log.warning("%s: its in-flight requests could not be counted before the drain timeout", alloc_id)
                return False
            await asyncio.sleep(min(POLL_S / 2, max(0.0, deadline - time.monotonic())))

    # -- statistics ---------------------------------------------------------------------------------

    def record_log_line(self, data: bytes) -> None:
        """One HAProxy log line (hc.LOG_FORMAT: backend server status ms retries rate); anything else
        (HAProxy's own notices) is ignored. A sampled line (rate > hc.LOG_LINES_PER_S) stands for
        rate / LOG_LINES_PER_S requests."""
        parts = data.decode("ascii", "replace").split()
        if len(parts) != 6 or not parts[0].startswith("svc_"):
            return
        try:
            status, ms = int(parts[2]), max(0, int(parts[3]))
            weight = 1.0
            if status < 500 and parts[5].isdigit():
                weight = max(1.0, min(float(parts[5]), MAX_LOG_RATE) / hc.LOG_LINES_PER_S)
        except ValueError:
            return
        service = parts[0][4:]
        stats = self.services.get(service)
        if stats is None:
            return
        stats.record(status, float(ms), weight)
        # The access log sees what the stats see: every line below the sampling rate, every 5xx.
        logging_setup.proxy_access(service, parts[1], status, ms / 1000.0)
        ep = self.endpoints.get(parts[1])
        if ep is not None and ep.service == service:
            ep.requests += weight
            if status >= 500:
                ep.errors += weight

    def stats(self, max_replicas: int = MAX_REPLICAS_REPORTED) -> dict[str, dict[str, Any]]:
        """{service: ProxyStats}; the `max_replicas` busiest replicas (by open, then total requests)."""
        out = {name: {**s.report(), "replicas": {}} for name, s in self.services.items()}
        ranked = sorted((e for e in self.endpoints.values() if e.requests or e.active),
                        key=lambda e: (-e.active, -e.requests, e.alloc))
        for e in ranked[:max(0, max_replicas)]:
            svc = out.setdefault(e.service, {**ServiceStats().report(), "replicas": {}})
            svc["replicas"][e.alloc] = {"requests": round(e.requests), "errors": round(e.errors), "active": e.active}
        return out

    # -- HAProxy's master CLI -------------------------------------------------------------------------

    @property
    def master_socket(self) -> Path:
        assert self._sock_dir is not None
        return self._sock_dir / "master.sock"

    @property
    def admin_socket(self) -> Path:
        """The current worker's runtime API (`stats socket ... level admin`; a new worker takes it over)."""
        assert self._sock_dir is not None
        return self._sock_dir / "admin.sock"

    async def _cli(self, command: str, *, worker: bool = False) -> str:
        """One command on the master CLI (`@!PID cmd` reaches a worker), or on the current worker's
        runtime API (`worker`); the reply, bounded."""
        path = self.admin_socket if worker else self.master_socket
        async with asyncio.timeout(CLI_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            async with asyncio.timeout(CLI_TIMEOUT_S):
                # The master CLI keeps a connection open unless told to quit; a worker's closes after a line.
                writer.write(command.encode() + (b"\n" if worker else b";quit\n"))
                await writer.drain()
                chunks, size = [], 0
                while size < CLI_MAX_BYTES:
                    data = await reader.read(CLI_MAX_BYTES - size)
                    if not data:
                        break
                    chunks.append(data)
                    size += len(data)
            return b"".join(chunks).decode("utf-8", "replace")
        finally:
            writer.close()

    async def _workers(self) -> list[tuple[int, int]]:
        """(pid, reloads) of every worker, current ones first (`show proc`)."""
        out: list[tuple[int, int]] = []
        for line in (await self._cli("show proc")).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "worker" and parts[0].isdigit() and parts[2].isdigit():
                out.append((int(parts[0]), int(parts[2])))
        return out

    async def _poll_active(self) -> bool:
        """Refresh `active` of services and endpoints from every worker's `show stat` (scur); False
        (counts unchanged) when HAProxy could not be read."""
        try:
            workers = await self._workers()
            if not workers:  # a master between two lives answers nothing useful
                return False
            services: dict[str, int] = {}
            servers: dict[str, int] = {}
            for pid, _ in workers:
                text = await self._cli(f"@!{pid} show stat")
                for line in text.splitlines():
                    if line.startswith("#") or not line.startswith("svc_"):
                        continue
                    f = line.split(",")
                    if len(f) < 5 or not f[4].isdigit():
                        continue
                    if f[1] == "BACKEND":
                        services[f[0][4:]] = services.get(f[0][4:], 0) + int(f[4])
                    elif f[1] != "FRONTEND":
                        servers[f[1]] = servers.get(f[1], 0) + int(f[4])
        except (OSError, TimeoutError) as exc:
            log.debug("cannot read HAProxy's stats: %s", exc)
            return False
        for name, stats in self.services.items():
            stats.active = services.get(name, 0)
        for alloc, ep in self.endpoints.items():
            ep.active = servers.get(alloc, 0)
        return True

    # -- running HAProxy ----------------------------------------------------------------------------

    async def start(self) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("the ingress proxy needs HAProxy: run 'sudo scripts/ensure-haproxy.sh'"
                               " (Debian's haproxy package)")
        host, port = parse_host_port(self.config.listen)
        self.port = port
        self._stopping = False
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="orca-haproxy-"))
            self._tmp_dirs.append(str(self.run_dir))
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Unix socket paths are limited to 107 bytes, and HAProxy takes at most 97 for a `stats socket`
        # (it keeps room for its own suffixes): a deep data dir gets a short private one in /tmp.
        self._sock_dir = self.run_dir
        if len(str(self.run_dir / "master.sock")) > MAX_SOCKET_PATH:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="orca-hap-"))
            self._tmp_dirs.append(str(self._sock_dir))
        self._kill_leftover()
        loop = asyncio.get_running_loop()
        # The log socket is a Unix one in the agent's private directory: no other local user can feed
        # the counters the autoscaler reads.
        log_path = self._sock_dir / "log.sock"
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()
        log_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            log_sock.bind(str(log_path))
            os.chmod(log_path, 0o600)
            with contextlib.suppress(OSError):
                log_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
            self._log_reader = _LogReader(self, log_sock, loop)
        except BaseException:
            log_sock.close()
            raise
        self._log_target = str(log_path)
        cfg = self.run_dir / "haproxy.cfg"
        (self.run_dir / "hop_by_hop.lua").write_text(hc.HOP_LUA)
        applied = self._wanted
        await self._refresh_local()
        self._listed = applied
        self._write_config(self.render())
        with contextlib.suppress(FileNotFoundError):
            self.master_socket.unlink()
        errlog = open(self.run_dir / "haproxy.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = await asyncio.create_subprocess_exec(
                binary, "-W", "-db", "-S", f"{self.master_socket},mode,600", "-f", str(cfg),
                "-p", str(self.run_dir / "haproxy.pid"), stdin=asyncio.subprocess.DEVNULL,
                stdout=errlog, stderr=errlog, preexec_fn=_set_pdeathsig, start_new_session=True)
        finally:
            errlog.close()
        try:
            await self._wait_ready(host, port)
        except BaseException:
            await self.stop()
            raise
        self._applied = applied
        self.listening = True
        self._tasks = [asyncio.create_task(self._apply_loop()), asyncio.create_task(self._poll_loop())]
        if self.list_local is not None:
            self._tasks.append(asyncio.create_task(self._local_loop()))
        log.info("ingress proxy (HAProxy pid %s) on %s:%s", self._proc.pid, host, port)

    async def _wait_ready(self, host: str, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise RuntimeError(f"HAProxy exited with {self._proc.returncode}; see {self.run_dir}/haproxy.log")
            try:
                if await self._workers():
                    async with asyncio.timeout(CLI_TIMEOUT_S):
                        _, writer = await asyncio.open_connection(
                            host if host not in ("0.0.0.0", "::") else "127.0.0.1", port)
                    writer.close()
                    return
            except (OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not start in {START_TIMEOUT_S} s; see {self.run_dir}/haproxy.log")
            await asyncio.sleep(0.05)

    def _kill_leftover(self) -> None:
        """A HAProxy left by a crashed agent with this run dir still holds the port: end it."""
        assert self.run_dir is not None
        pidfile = self.run_dir / "haproxy.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return
        if b"haproxy" in cmdline and str(self.run_dir / "haproxy.cfg").encode() in cmdline:
            log.warning("ending HAProxy %d left over from a previous run", pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    async def _end_tasks(self) -> None:
        """Cancel the background loops and wait for them, bounded. Python 3.11's `asyncio.wait_for` can
        swallow a cancellation that lands while its inner operation completes (gh-86296), which left
        the poll loop running and `stop()` waiting forever; the loops now also end on `_stopping`,
        use `asyncio.timeout`, and a task that still does not end is re-cancelled, never awaited blindly."""
        tasks, self._tasks = self._tasks, []
        deadline = time.monotonic() + STOP_TASKS_WAIT_S
        while tasks and time.monotonic() < deadline:
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            tasks = list(pending)
        if tasks:
            log.error("%d proxy task(s) did not end in %s s", len(tasks), STOP_TASKS_WAIT_S)

    @staticmethod
    async def _reaped(proc: asyncio.subprocess.Process, timeout: float) -> bool:
        """True once the child has exited (reaped by asyncio's child watcher), at most `timeout` s.
        `asyncio.wait` rather than `wait_for`: it never cancels nor swallows anything."""
        waiter = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait([waiter], timeout=timeout)
        if not done:
            waiter.cancel()
        return proc.returncode is not None

    def _write_config(self, text: str, parked: hc.Parked | None = None) -> None:
        """The config file is always what runs (a reload or a restart starts from it). `parked`: the
        servers a runtime change left in maintenance (None: a reload or start, which has none)."""
        assert self.run_dir is not None
        tmp = self.run_dir / "haproxy.cfg.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.run_dir / "haproxy.cfg")
        self._config_text = text
        self._live = hc.split_servers(text)[1]
        self._parked = {} if parked is None else parked

    async def _apply_loop(self) -> None:
        """Reload HAProxy whenever the rendered config changes (coalescing bursts of tables)."""
        while not self._stopping:
            await self._changed.wait()
            self._changed.clear()
            if self._stopping:
                return
            generation = self._wanted
            if generation > self._listed:  # a new table: its new local replicas at their address at once
                self._listed = generation
                await self._refresh_local()
            text = self.render()
            if text != self._config_text:
                try:
                    if not await self._runtime_update(text):
                        await self._reload(text)
                except (OSError, TimeoutError, RuntimeError) as exc:
                    log.error("HAProxy reload failed: %s", exc)
                    await asyncio.sleep(0.5)
                    self._changed.set()
                    continue
            self._applied = max(self._applied, generation)
            self._applied_event.set()

    async def _runtime_update(self, text: str) -> bool:
        """Apply a config that differs from the live one only in servers and weights through the
        current worker's runtime API: live at once, no new worker, nothing in flight touched. False
        (the caller reloads, which also repairs any half-applied change) when it cannot."""
        skeleton, wanted = hc.split_servers(text)
        if skeleton != hc.split_servers(self._config_text)[0]:
            return False
        plan = hc.runtime_commands(self._live, self._parked, wanted)
        if plan is None:
            return False
        commands, parked = plan
        async with self._reload_lock:
            for command in commands:
                try:
                    reply = (await self._cli(command, worker=True)).strip()
                except (OSError, TimeoutError) as exc:
                    log.warning("HAProxy runtime API: %s: %s; reloading instead", command, exc)
                    return False
                if not hc.runtime_reply_ok(command, reply):
                    log.warning("HAProxy runtime API: %s: %s; reloading instead", command, reply[:200])
                    return False
            self._write_config(text, parked=parked)
        return True

    async def _refresh_local(self) -> bool:
        """List this node's containers (in a thread, waited for at most LOCAL_LIST_WAIT_S; a slow engine
        leaves the last listing in use); True when their addresses changed."""
        if self.list_local is None:
            return False
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="orca-proxy")
        if self._listing is None or self._listing.done():
            self._listing = asyncio.get_running_loop().run_in_executor(self._executor, self.list_local)
        try:
            async with asyncio.timeout(LOCAL_LIST_WAIT_S):
                local = await asyncio.shield(self._listing)
        except Exception as exc:  # noqa: BLE001 - an engine hiccup: the published ports still work
            if not self._list_warned:
                self._list_warned = True
                log.warning("ingress: cannot list this node's containers (%s); replicas not listed are "
                            "reached at their published port", str(exc)[:200] or type(exc).__name__)
            return False
        self._list_warned = False
        if local == self.local:
            return False
        self.local = local
        return True

    async def _local_loop(self) -> None:
        """Every LOCAL_REFRESH_S: a container restarted at a new address (or just listed) gets it."""
        while not self._stopping:
            await asyncio.sleep(LOCAL_REFRESH_S)
            if await self._refresh_local():
                self._changed.set()

    async def _delete_parked(self) -> None:
        """Delete the servers parked in maintenance once HAProxy accepts (no connection left on them)."""
        for backend, name in sorted(self._parked)[:PARKED_DELETES_PER_POLL]:
            async with self._reload_lock:
                if (backend, name) not in self._parked:
                    continue
                try:
                    reply = await self._cli(f"del server {backend}/{name}", worker=True)
                except (OSError, TimeoutError):
                    return
                if "Server deleted" in reply or "No such" in reply:
                    self._parked.pop((backend, name), None)

    async def _reload(self, text: str) -> None:
        async with self._reload_lock:
            before = {pid for pid, _ in await self._workers()}
            self._write_config(text)
            with contextlib.suppress(OSError, TimeoutError):
                await self._cli("reload")
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                try:
                    workers = await self._workers()
                except (OSError, TimeoutError):
                    continue
                if any(r == 0 and pid not in before for pid, r in workers):
                    return
            raise RuntimeError("the new HAProxy worker did not come up")

    async def _poll_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(POLL_S)
            await self._poll_active()
            if self._parked:
                await self._delete_parked()
            if self._proc is not None and self._proc.returncode is not None:
                log.error("HAProxy exited with %s", self._proc.returncode)
                self.listening = False
                return

    async def stop(self) -> None:
        """End HAProxy: a soft stop (in-flight requests finish, up to drain_timeout_s), then SIGKILL."""
        self.listening = False
        self._stopping = True
        self._changed.set()
        await self._end_tasks()
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
            if not await self._reaped(proc, self.config.drain_timeout_s):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if not await self._reaped(proc, STOP_KILL_WAIT_S):  # never hang the agent's shutdown on a child
                    log.error("HAProxy %d did not exit after SIGKILL", proc.pid)
        if self._log_reader is not None:
            self._log_reader.close()
            self._log_reader = None
        for d in self._tmp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._tmp_dirs = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
