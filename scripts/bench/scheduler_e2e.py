"""Benchmark the scheduler end to end: 10,000 replicas on 1,000 simulated agents, committed and dispatched.

Prints one JSON line. A local three-master cluster (real `orca server` processes, default timing:
heartbeat 1 s, lease TTL 5 s) and 1,000 simulated agents without Docker, all in this process:

- each node is registered through the API (`POST /api/v1/agent/register`, its own agent token) with an
  `address` of `http://127.0.0.1:PORT/n/<node id>`: one small aiohttp server here answers every node's
  `PUT .../v1/allocations` with 200 `{"accepted": true}` and remembers the latest allocation ids per node;
- every node heartbeats once a second (aiohttp, ~50 at a time) reporting every allocation pushed to it
  as running, so the lease monitor keeps them all ready and the leader commits their reports.

Then one `POST /api/v1/deploy` of 100 services x 100 replicas (16Mi, 0.01 CPU each; every node has room
for 10 times its share) and, from that call:

- `committed_s`: the leader's `/api/v1/status/scheduler` shows 10,000 placements and no backlog (polled
  every 50 ms; placements are counted once their entry is committed);
- `dispatched_s`: the simulated agents together hold all 10,000 replicas (service, slot) in their latest
  pushes;
- `reported_running_s`: `GET /api/v1/status` counts all 10,000 replicas running (heartbeat -> batched
  lease entry), polled every second.

`leader_rss_mb` is the leader's VmRSS once everything is running (issue 5 goal: <= 150 MB at 1,000 nodes
and 10,000 allocations); `steady` is what the masters spend per second afterwards on 1,000 heartbeats/s
and nothing else. `leader_cpu_s` is the leader's CPU time (all threads) per phase.

Baseline, same run, same box: `orca.scheduler.compute_plan` on an equivalent view (the same 1,000 nodes
and 100 x 100 replicas, no allocations yet), best of 3, in this process before the cluster starts.

    .venv/bin/python scripts/bench/scheduler_e2e.py [--nodes 1000] [--services 100] [--replicas 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _common import box_load, cpu_seconds, emit, install_sigterm, rss_mb  # noqa: E402
from aiohttp import web  # noqa: E402

from orca.devcluster import LocalCluster, MasterProc  # noqa: E402
from orca.scheduler import PlacementView, compute_plan  # noqa: E402

MIB = 1024 * 1024
NODE_MEMORY = 4096 * MIB
NODE_CPU = 4.0
REPLICA_MEMORY = "16Mi"
REPLICA_CPU = 0.01
CONCURRENCY = 50
HEARTBEAT_S = 1.0
DEPLOY_BATCH = 500
DEPLOY_TRIES = 30  # a loaded box changes leaders while 1,000 agents register and 10,000 services deploy
PHASE_TIMEOUT_S = 180.0


# --- baseline ----------------------------------------------------------------------------------------


def pure_baseline(nodes: int, services: int, replicas: int, repeat: int = 3) -> dict[str, Any]:
    """compute_plan on the view the leader starts from: the same nodes and services, no allocations."""
    node_table = {
        f"sim-{i:04d}": {
            "id": f"sim-{i:04d}",
            "status": "ready",
            "eligibility": "eligible",
            "labels": {},
            "capacity": {"memory": NODE_MEMORY, "cpu": NODE_CPU},
        }
        for i in range(nodes)
    }
    service_table = {
        f"bench-{s:03d}": {
            "name": f"bench-{s:03d}",
            "state": "running",
            "replicas": replicas,
            "version": 1,
            "spec": {"resources": {"memory": 16 * MIB, "cpu": REPLICA_CPU}, "placement": {"node": None, "labels": {}}},
        }
        for s in range(services)
    }
    view = PlacementView(services=service_table, nodes=node_table, allocations={})
    best = float("inf")
    placed = 0
    for _ in range(repeat):
        new_id = map("a{}".format, itertools.count()).__next__
        t0 = time.perf_counter()
        plan = compute_plan(view, new_id)
        best = min(best, time.perf_counter() - t0)
        placed = len(plan.place)
    return {
        "what": "orca.scheduler.compute_plan, same nodes and services, best of 3",
        "replicas": placed,
        "seconds": round(best, 4),
        "placements_per_s": round(placed / best),
    }


# --- the simulated agents ----------------------------------------------------------------------------


class FakeAgents:
    """One HTTP server for every simulated node; records each node's latest pushed allocations."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.push_tokens: dict[str, str] = {}
        self.latest: dict[str, list[dict[str, Any]]] = {}
        # alloc id -> when it "started": a resync push of the same set leaves it as it was, as on a real
        # agent (a new started_at on every push made every heartbeat a changed report)
        self.started: dict[str, str] = {}
        self.bodies: dict[str, bytes] = {}  # node -> its heartbeat body, rebuilt when a push changes it
        self.total = 0
        self.slots: dict[tuple[str, int], int] = {}
        self.pushes = 0
        self.push_bytes = 0
        self.bad_tokens = 0
        self.all_received = asyncio.Event()
        self.all_received_at: float | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_put("/n/{node}/v1/allocations", self.push)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def address(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/n/{node_id}"

    async def push(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        raw = await request.read()
        self.pushes += 1
        self.push_bytes += len(raw)
        if request.headers.get("Authorization") != f"Bearer {self.push_tokens.get(node)}":
            self.bad_tokens += 1
            return web.json_response({"error": "bad push token", "code": "UNAUTHORIZED"}, status=401)
        body = json.loads(raw)
        now = time.time()
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        allocs = [{"alloc": a["id"], "service": a["service"], "version": a["version"]} for a in body["allocations"]]
        self.total += len(allocs) - len(self.latest.get(node, ()))
        for old in self.latest.get(node, ()):
            key = (old["service"], old["index"])
            self.slots[key] -= 1
            if not self.slots[key]:
                del self.slots[key]
        for a, spec in zip(allocs, body["allocations"], strict=True):
            a["index"] = spec.get("index", 0)
            self.slots[(a["service"], a["index"])] = self.slots.get((a["service"], a["index"]), 0) + 1
        self.latest[node] = allocs
        self.bodies[node] = json.dumps(
            {
                "node_id": node,
                "allocations": [
                    {
                        "alloc": a["alloc"],
                        "service": a["service"],
                        "version": a["version"],
                        "container_id": f"c{a['alloc']}",
                        "status": "running",
                        "health": None,
                        "started_at": self.started.setdefault(a["alloc"], started),
                        "restarts": 0,
                        "reason": None,
                        "host_port": None,
                        "exit_code": None,  # every field, in the order the real agent sends them
                    }
                    for a in allocs
                ],
                "applied": {"term": body["term"], "version": body["version"]},
            }
        ).encode()
        # Every replica slot (service, index) is in some node's latest push. A node that was marked down
        # keeps its last push (the dispatcher does not push to down nodes), so the plain total can
        # count a moved replica twice; the slots cannot.
        if len(self.slots) >= self.target and self.all_received_at is None:
            self.all_received_at = time.monotonic()
            self.all_received.set()
        return web.json_response({"accepted": True, "version": body["version"]})

    def heartbeat_body(self, node: str) -> bytes:
        body = self.bodies.get(node)
        if body is None:
            body = self.bodies[node] = json.dumps({"node_id": node, "allocations": []}).encode()
        return body


class Heartbeats:
    """Every registered node heartbeats the leader once per HEARTBEAT_S, CONCURRENCY at a time."""

    def __init__(
        self, session: aiohttp.ClientSession, leader_url: str, agents: FakeAgents, tokens: dict[str, str]
    ) -> None:
        self.session = session
        self.url = leader_url + "/api/v1/agent/heartbeat"
        self.agents = agents
        self.tokens = tokens
        self.nodes: list[str] = []  # grows while registration goes on
        self.sent = 0
        self.codes: dict[str, int] = {}
        self.round_s: list[float] = []
        self.latencies: list[float] = []
        self.redirects = 0

    async def _one(self, node: str) -> None:
        """One heartbeat; a 307 (the leader moved) is followed and remembered, as the real agent does."""
        headers = {"Authorization": f"Bearer {self.tokens[node]}", "Content-Type": "application/json"}
        t0 = time.monotonic()
        url = self.url
        for _ in range(3):
            try:
                async with self.session.post(
                    url, data=self.agents.heartbeat_body(node), headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    code = str(resp.status)
                    location = resp.headers.get("Location")
            except (aiohttp.ClientError, TimeoutError) as exc:
                code, location = type(exc).__name__, None
            self.codes[code] = self.codes.get(code, 0) + 1
            if code == "307" and location:
                url = self.url = location
                self.redirects += 1
                continue
            break
        self.latencies.append(time.monotonic() - t0)
        self.sent += 1

    async def _round(self) -> None:
        queue = list(self.nodes)

        async def worker() -> None:
            while queue:
                await self._one(queue.pop())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def run(self) -> None:
        while True:
            t0 = time.monotonic()
            await self._round()
            elapsed = time.monotonic() - t0
            self.round_s.append(elapsed)
            await asyncio.sleep(max(0.0, HEARTBEAT_S - elapsed))


# --- the run -----------------------------------------------------------------------------------------


async def _get(session: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status} {body[:200]!r}")
        return json.loads(body)


async def register_all(
    session: aiohttp.ClientSession,
    leader: str,
    agents: FakeAgents,
    tokens: dict[str, str],
    nodes: list[str],
    hb: Heartbeats,
    cluster: LocalCluster | None = None,
) -> dict[str, Any]:
    queue = list(reversed(nodes))
    target = [leader]
    failures: dict[str, int] = {}

    async def worker() -> None:
        while queue:
            node = queue.pop()
            body = {
                "node_id": node,
                "address": agents.address(node),
                "labels": {},
                "capacity": {"memory": NODE_MEMORY, "cpu": NODE_CPU},
                "push_token": agents.push_tokens[node],
                "agent_version": "bench",
            }
            for _ in range(8):
                try:
                    async with session.post(
                        target[0] + "/api/v1/agent/register", json=body,
                        headers={"Authorization": f"Bearer {tokens[node]}"}, allow_redirects=False,
                    ) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status == 200:
                    break
                failures[str(status)] = failures.get(str(status), 0) + 1
                await asyncio.sleep(0.2)
                if cluster is not None and status in (0, 307, 503):  # a new leader (a redirect drops the token)
                    target[0] = (await _leader_of(session, cluster))[0].url
            else:
                raise RuntimeError(f"could not register {node}: {failures}")
            await hb._one(node)  # as the real agent does: its first heartbeat right after registering
            hb.nodes.append(node)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return {"seconds": round(time.monotonic() - t0, 3), "failures": failures}


async def _leader_of(session: aiohttp.ClientSession, cluster: LocalCluster) -> tuple[MasterProc, int]:
    """The master that leads now (asked of every live master until one knows), and its term."""
    for _ in range(100):
        for m in cluster.masters:
            try:
                h = await _get(session, m.url + "/api/v1/health")
            except (aiohttp.ClientError, TimeoutError, RuntimeError):
                continue
            if h.get("leader_id"):
                return cluster.by_id(h["leader_id"]), int(h["term"])
        await asyncio.sleep(0.1)
    raise TimeoutError("no leader known to any master")


def _cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {k: cpu_seconds(p) for k, p in pids.items()}


def _delta(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
    return {
        k: (None if a.get(k) is None or b.get(k) is None else round(b[k] - a[k], 2))  # type: ignore[operator]
        for k in b
    }


async def page_through(session: aiohttp.ClientSession, url: str, token: str, seconds: float,
                       walkers: int = 2) -> dict[str, Any]:
    """`walkers` clients each walk `GET /api/v1/status?limit=100` page by page (following next_cursor,
    starting over at the end) for `seconds`, while the agents keep heartbeating: per-page latency."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def walk() -> None:
        nonlocal errors
        cursor = ""
        while time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                async with session.get(url + "/api/v1/status", params={"limit": "100", "cursor": cursor},
                                       headers={"Authorization": f"Bearer {token}"}) as r:
                    body = json.loads(await r.read())
                    if r.status != 200:
                        errors += 1
                        continue
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)
            cursor = body.get("next_cursor") or ""
    await asyncio.gather(*(walk() for _ in range(walkers)))
    lat = sorted(latencies)
    return {"seconds": seconds, "walkers": walkers, "pages": len(lat), "errors": errors,
            "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
            "max_ms": round(1000 * lat[-1], 1) if lat else None}


async def scenario(
    cluster: LocalCluster,
    leader: MasterProc,
    n_nodes: int,
    services: int,
    replicas: int,
    steady_s: float,
    profile: Path | None = None,
    profile_s: float = 40.0,
    page_s: float = 0.0,
) -> dict[str, Any]:
    total = services * replicas
    nodes = [f"sim-{i:04d}" for i in range(n_nodes)]
    tokens = {n: cluster.token("agent", n) for n in nodes}
    admin = cluster.token("admin", "bench")
    agents = FakeAgents(total)
    for n in nodes:
        agents.push_tokens[n] = secrets.token_urlsafe(16)
    assert leader.proc is not None
    pids = {"leader": leader.proc.pid, "bench": os.getpid()}
    for i, m in enumerate((m for m in cluster.masters if m is not leader), 1):
        assert m.proc is not None
        pids[f"follower{i}"] = m.proc.pid
    out: dict[str, Any] = {}
    spy: subprocess.Popen[bytes] | None = None
    await agents.start()
    timeout = aiohttp.ClientTimeout(total=30)
    hb_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=timeout)
    poll_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4), timeout=timeout)
    hb = Heartbeats(hb_session, leader.url, agents, tokens)
    hb_task = asyncio.create_task(hb.run())
    try:
        out["register"] = await register_all(hb_session, leader.url, agents, tokens, nodes, hb, cluster)
        await asyncio.sleep(2 * HEARTBEAT_S)  # the first pushes (empty sets) and a couple of lease entries

        # Every node ready before the deploy; a node the lease monitor marked down meanwhile (it should
        # not: they all heartbeat) comes back with its next heartbeat, and is counted here.
        ready, not_ready_seen = 0, 0
        for _ in range(60):
            info = await _get(poll_session, leader.url + "/api/v1/cluster/info", admin)
            ready = sum(1 for n in info["nodes"] if n["status"] == "ready")
            not_ready_seen = max(not_ready_seen, n_nodes - ready)
            if ready == n_nodes:
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"only {ready}/{n_nodes} nodes ready before the deploy")
        out["nodes_not_ready_before_deploy"] = not_ready_seen

        deploy = {
            "services": [
                {
                    "name": f"bench-{s:05d}",
                    "image": "orca-test/busybox",
                    "command": ["sleep", "3600"],
                    "replicas": replicas,
                    "resources": {"memory": REPLICA_MEMORY, "cpu": REPLICA_CPU},
                }
                for s in range(services)
            ]
        }
        # The leader may have changed while 1,000 agents registered on a loaded box: deploy to (and measure)
        # the one that leads now. A redirect would drop the bearer token (another origin).
        leader, term_start = await _leader_of(poll_session, cluster)
        assert leader.proc is not None
        pids = {"leader": leader.proc.pid, "bench": os.getpid(),
                **{f"follower{i}": m.proc.pid for i, m in enumerate(
                    (m for m in cluster.masters if m is not leader and m.proc is not None), 1)}}
        if profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(pids["leader"]),
                    "--rate",
                    "50",
                    "--duration",
                    str(int(profile_s)),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "-o",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # py-spy attaches
        cpu0 = _cpu(pids)
        hb_sent0 = hb.sent
        deploy_leader = leader
        t0 = time.monotonic()
        # One call per DEPLOY_BATCH services: a deploy body is bounded (10,000 services do not fit one).
        batch = deploy["services"]
        for i in range(0, len(batch), DEPLOY_BATCH):
            part = batch[i:i + DEPLOY_BATCH]
            for attempt in range(DEPLOY_TRIES):  # a leader change mid-deploy: ask the new one (same idempotency key)
                try:
                    async with poll_session.post(
                        leader.url + "/api/v1/deploy",
                        json={"services": part},
                        headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": f"bench-{i}"},
                        allow_redirects=False,
                    ) as r:
                        reply = json.loads(await r.read() or b"{}")
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    if attempt == DEPLOY_TRIES - 1:
                        raise
                    status, reply = 503, {}
                if status in (307, 503) and attempt < DEPLOY_TRIES - 1:
                    await asyncio.sleep(0.5)
                    leader, _ = await _leader_of(poll_session, cluster)
                    continue
                if status != 200 or len(reply.get("deployed", [])) != len(part):
                    raise RuntimeError(f"deploy: HTTP {status} {str(reply)[:300]}")
                break
        deploy_call_s = time.monotonic() - t0

        committed_at = None
        sched: dict[str, Any] = {}
        # The leader changed (during the deploy calls or after them): its placement counter started over
        # and counts only its own placements, so count on the nodes instead.
        moved = leader is not deploy_leader
        while committed_at is None:
            try:
                sched = await _get(poll_session, leader.url + "/api/v1/status/scheduler")
                if not moved and not sched["detail"]["running_here"]:
                    moved = True
                if moved:
                    leader, _ = await _leader_of(poll_session, cluster)
                    listed = await _get(poll_session, leader.url + "/api/v1/cluster/nodes", admin)
                    if sum(n["allocations"] for n in listed["nodes"]) >= total:
                        committed_at = time.monotonic()
                elif sched["detail"]["placements"] >= total and sched["backlog"] == 0:
                    committed_at = time.monotonic()
            except (aiohttp.ClientError, TimeoutError, RuntimeError):
                moved = True
            if committed_at is None:
                if time.monotonic() - t0 > PHASE_TIMEOUT_S:
                    raise TimeoutError(f"placements not committed within {PHASE_TIMEOUT_S} s: {sched}")
                await asyncio.sleep(0.05)
        cpu1 = _cpu(pids)
        out["committed_via"] = "cluster/nodes (the leader changed)" if moved else "status/scheduler"
        # A phase that does not finish within PHASE_TIMEOUT_S (from the deploy) is reported as null,
        # with how far it got, and the run goes on to its summary.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agents.all_received.wait(), max(1.0, PHASE_TIMEOUT_S - (time.monotonic() - t0)))
        out["dispatched_at_end"] = {"slots": len(agents.slots), "allocations": agents.total}
        cpu2 = _cpu(pids)

        reported_at = None
        running = 0
        while (
            agents.all_received_at is not None and reported_at is None and time.monotonic() - t0 < PHASE_TIMEOUT_S + 30
        ):
            try:
                status = await _get(poll_session, leader.url + "/api/v1/status", admin)
                running = sum(s["running_replicas"] for s in status["services"])
            except (aiohttp.ClientError, TimeoutError, RuntimeError):
                await asyncio.sleep(0.5)
                leader, _ = await _leader_of(poll_session, cluster)
                continue
            if running >= total:
                reported_at = time.monotonic()
            else:
                await asyncio.sleep(1.0)
        cpu3 = _cpu(pids)
        leader, term_end = await _leader_of(poll_session, cluster)
        assert leader.proc is not None
        out["leader_rss_mb"] = rss_mb(leader.proc.pid)
        out["all_master_rss_mb"] = {m.node_id: rss_mb(m.proc.pid) for m in cluster.masters if m.proc is not None}

        # Steady state: nothing but 1,000 heartbeats/s and their batched lease entries. Measured on the
        # master that leads now ("leader"), whichever led the deploy.
        steady_pids = {"leader": leader.proc.pid, "bench": os.getpid(),
                       **{f"follower{i}": m.proc.pid for i, m in enumerate(
                           (m for m in cluster.masters if m is not leader and m.proc is not None), 1)}}
        cpu0s = _cpu(steady_pids)
        sent_before = hb.sent  # also the end of the deploy's count
        await asyncio.sleep(steady_s)
        cpu4 = _cpu(steady_pids)
        sent_steady = hb.sent - sent_before  # read now: the page walk below goes on heartbeating
        out["steady_leader"] = leader.node_id
        if page_s > 0:
            out["status_pages"] = await page_through(poll_session, leader.url, admin, page_s)
        leader, term_end = await _leader_of(poll_session, cluster)
        info = await _get(poll_session, leader.url + "/api/v1/cluster/info", admin)
        node_status: dict[str, int] = {}
        for n in info["nodes"]:
            node_status[n["status"]] = node_status.get(n["status"], 0) + 1
        t_nodes = time.monotonic()
        listed = await _get(poll_session, leader.url + "/api/v1/cluster/nodes", admin)
        nodes_get_s = time.monotonic() - t_nodes
        placed_on_nodes = sum(n["allocations"] for n in listed["nodes"])
        leader, term_end = await _leader_of(poll_session, cluster)
        dispatcher = await _get(poll_session, leader.url + "/api/v1/status/dispatcher")

        committed_s = committed_at - t0
        dispatched_s = None if agents.all_received_at is None else agents.all_received_at - t0
        per_node = [len(v) for v in agents.latest.values()]
        out.update(
            {
                "deploy_call_s": round(deploy_call_s, 3),
                "committed_s": round(committed_s, 3),
                "placements_per_s_committed": round(total / committed_s),
                "dispatched_s": None if dispatched_s is None else round(dispatched_s, 3),
                "placements_per_s_dispatched": None if dispatched_s is None else round(total / dispatched_s),
                "reported_running_s": None if reported_at is None else round(reported_at - t0, 3),
                "reported_running": running,
                "leader_last_plan_s": sched["detail"].get("last_plan_seconds"),
                "term_change": term_end - term_start,
                "leader_end": leader.node_id,
                "allocations_per_node": [min(per_node), max(per_node)],
                "allocations_on_nodes_api": placed_on_nodes,
                "cluster_nodes_get_s": round(nodes_get_s, 3),
                "node_status_after": node_status,
                "dispatcher": {
                    "pushes": dispatcher["detail"]["pushes"],
                    "push_failures": dispatcher["detail"]["push_failures"],
                    "received": agents.pushes,
                    "received_mb": round(agents.push_bytes / MIB, 1),
                },
                "cpu_s": {
                    "to_committed": _delta(cpu0, cpu1),
                    "committed_to_dispatched": _delta(cpu1, cpu2),
                    "dispatched_to_reported": _delta(cpu2, cpu3),
                },
                "steady": {
                    "seconds": steady_s,
                    "heartbeats_per_s": round(sent_steady / steady_s),
                    "cpu_pct": {
                        k: (None if v is None else round(100 * v / steady_s, 1)) for k, v in _delta(cpu0s, cpu4).items()
                    },
                },
                "heartbeats": {
                    "sent_during_deploy": sent_before - hb_sent0,
                    "codes": hb.codes,
                    "redirects": hb.redirects,
                    "round_s_max": round(max(hb.round_s), 3) if hb.round_s else None,
                    "latency_ms_p50": round(1000 * sorted(hb.latencies)[len(hb.latencies) // 2], 1),
                    "latency_ms_max": round(1000 * max(hb.latencies), 1),
                },
            }
        )
        return out
    finally:
        if spy is not None:
            try:
                spy.wait(profile_s + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
        hb_task.cancel()
        await asyncio.gather(hb_task, return_exceptions=True)
        await hb_session.close()
        await poll_session.close()
        await agents.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=100, help="per service (at most 1000)")
    ap.add_argument("--steady", type=float, default=5.0, help="seconds of steady state measured at the end")
    ap.add_argument("--profile", type=Path, help="py-spy the leader from the deploy on, raw stacks to this file")
    ap.add_argument("--profile-seconds", type=float, default=40.0)
    ap.add_argument("--page-seconds", type=float, default=0.0,
                    help="then walk GET /api/v1/status?limit=100 for this long (per-page latency)")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="leave out the pure scheduler baseline (minutes at 30,000 replicas)")
    ap.add_argument("--bench-name", default="scheduler_e2e", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not 1 <= args.nodes <= 5000 or not 1 <= args.services <= 20000 or not 1 <= args.replicas <= 1000:
        ap.error("--nodes 1..5000, --services 1..20000, --replicas 1..1000")
    if args.services * args.replicas > args.nodes * 100:
        ap.error("more than 100 replicas per node would not fit the simulated nodes")
    install_sigterm()
    load0 = os.getloadavg()[0]
    baseline = None if args.skip_baseline else pure_baseline(args.nodes, args.services, args.replicas)
    with tempfile.TemporaryDirectory(prefix="orca-bench-sched-e2e-") as tmp, LocalCluster(Path(tmp) / "c") as cluster:
        cluster.start()
        leader = cluster.wait_leader(30)
        result = asyncio.run(
            scenario(
                cluster,
                leader,
                args.nodes,
                args.services,
                args.replicas,
                args.steady,
                args.profile,
                args.profile_seconds,
                args.page_seconds,
            )
        )
        result["leader_start"] = leader.node_id
    out: dict[str, Any] = {
        "bench": args.bench_name,
        "nodes": args.nodes,
        "services": args.services,
        "replicas": args.services * args.replicas,
        **result,
        "baseline": baseline,
        "box": box_load(load0),
    }
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
