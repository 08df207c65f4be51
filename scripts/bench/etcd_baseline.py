"""etcd baseline for the Raft benchmarks: a 3-member etcd cluster from Debian (etcd-server 3.4) on free
127.0.0.1 ports, measured with the same client shape as `raft_writes.py` and `failover.py`.

(a) writes: C keep-alive connections (one aiohttp TCPConnector, limit=C) each loop
    `POST /v3/kv/put {"key": b64, "value": b64}` (the v3 HTTP/JSON gateway) straight to the leader for
    `--seconds` after a short warm-up; only 200 without an error body counts. Latency is per request.
(b) failover: kill -9 of the leader, then the time to the first acknowledged put through any surviving
    member (one poller per survivor, each retrying with a short per-request timeout); the killed member
    is restarted on its data dir and the cluster settles before the next round. median/max of the rounds.

etcd runs with its defaults (heartbeat 100 ms, election timeout 1000 ms) and its default fsync; data dirs
live in a temp dir that is removed at the end, and every etcd process is killed. Prints one JSON line;
when no `etcd` binary is found it prints {"bench": "etcd_baseline", "skipped": "..."} and exits 0.

    .venv/bin/python scripts/bench/etcd_baseline.py [--clients 32] [--seconds 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _common import box_load, cpu_seconds, emit, free_ports, install_sigterm, summarize  # noqa: E402


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Member:
    def __init__(self, name: str, client_port: int, peer_port: int, root: Path) -> None:
        self.name = name
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.data_dir = root / f"{name}.etcd"
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.member_id: str | None = None

    def start(self, initial_cluster: str, binary: str) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--name", self.name,
                    "--data-dir", str(self.data_dir),
                    "--listen-client-urls", self.client_url,
                    "--advertise-client-urls", self.client_url,
                    "--listen-peer-urls", self.peer_url,
                    "--initial-advertise-peer-urls", self.peer_url,
                    "--initial-cluster", initial_cluster,
                    "--initial-cluster-state", "new",
                    "--initial-cluster-token", "orca-bench",
                    "--log-level", "warn",
                    "--logger", "zap",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        data = await r.json(content_type=None)
        if r.status != 200 or "error" in data:
            raise RuntimeError(f"{r.status} {data}")
        return data


async def status(session: aiohttp.ClientSession, m: Member) -> dict[str, Any] | None:
    try:
        return await post(session, m.client_url + "/v3/maintenance/status", {}, 1.0)
    except Exception:  # noqa: BLE001 - down or not ready
        return None


async def find_leader(session: aiohttp.ClientSession, members: list[Member], timeout: float = 30.0) -> Member:
    """The member every live member agrees leads (by member id from /v3/maintenance/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = {}
        for m in members:
            if m.alive:
                st = await status(session, m)
                if st is not None:
                    m.member_id = st["header"]["member_id"]
                    views[m.name] = st
        leaders = {v.get("leader") for v in views.values()}
        live = sum(1 for m in members if m.alive)
        if len(views) == live and len(leaders) == 1 and None not in leaders and "0" not in leaders:
            lid = leaders.pop()
            for m in members:
                if m.member_id == lid and m.alive:
                    return m
        await asyncio.sleep(0.05)
    raise TimeoutError(f"etcd: no agreed leader within {timeout} s")


async def write_load(url: str, clients: int, seconds: float, warmup: float, pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    measuring = False
    stop_at = time.monotonic() + warmup + seconds
    value = b64("x" * 96)

    async def worker(i: int, session: aiohttp.ClientSession) -> None:
        n = 0
        key = b64(f"bench/{i}")
        while time.monotonic() < stop_at:
            n += 1
            t0 = time.monotonic()
            try:
                async with session.post(url + "/v3/kv/put", json={"key": key, "value": value}) as r:
                    body = await r.read()
                    good = r.status == 200 and b'"error"' not in body
            except Exception:  # noqa: BLE001 - every exception is an error
                good = False
            t1 = time.monotonic()
            if measuring:
                if good:
                    counts["ok"] += 1
                    latencies.append(t1 - t0)
                else:
                    counts["errors"] += 1

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [asyncio.create_task(worker(i, session)) for i in range(clients)]
        await asyncio.sleep(warmup)
        measuring = True
        cpu0, own0, t0 = cpu_seconds(pid), cpu_seconds(os.getpid()), time.monotonic()
        await asyncio.sleep(seconds)
        measuring = False
        cpu1, own1, t1 = cpu_seconds(pid), cpu_seconds(os.getpid()), time.monotonic()
        await asyncio.gather(*tasks)
    out = summarize(latencies, counts["ok"], counts["errors"], t1 - t0)
    if None not in (cpu0, cpu1, own0, own1):
        out["cpu_pct"] = {
            "leader": round(100 * (cpu1 - cpu0) / (t1 - t0)),  # type: ignore[operator]
            "client": round(100 * (own1 - own0) / (t1 - t0)),  # type: ignore[operator]
        }
    return out


async def first_ack(session: aiohttp.ClientSession, survivors: list[Member], t_kill: float,
                    limit: float) -> float | None:
    done = asyncio.Event()
    result: list[float] = []

    async def poll(m: Member) -> None:
        i = 0
        while not done.is_set() and time.monotonic() - t_kill < limit:
            i += 1
            try:
                await post(session, m.client_url + "/v3/kv/put", {"key": b64("failover"), "value": b64(str(i))}, 0.5)
            except Exception:  # noqa: BLE001 - not yet
                await asyncio.sleep(0.01)
                continue
            if not done.is_set():
                result.append(time.monotonic() - t_kill)
                done.set()

    await asyncio.gather(*(poll(m) for m in survivors))
    return result[0] if result else None


async def failover(members: list[Member], initial: str, binary: str, rounds: int, settle: float) -> dict[str, Any]:
    samples: list[float | None] = []
    leaders: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            leader = await find_leader(session, members)
            await asyncio.sleep(settle)
            leader = await find_leader(session, members)
            leaders.append(leader.name)
            survivors = [m for m in members if m is not leader]
            t_kill = time.monotonic()
            leader.kill()
            samples.append(await first_ack(session, survivors, t_kill, 10.0))
            leader.start(initial, binary)  # restarts on its data dir (initial-cluster flags are then ignored)
            await find_leader(session, members)
    ok = [s for s in samples if s is not None]
    return {
        "rounds": rounds,
        "failover_s": {
            "median": round(statistics.median(ok), 3) if ok else None,
            "max": round(max(ok), 3) if ok else None,
            "min": round(min(ok), 3) if ok else None,
        },
        "samples": [None if s is None else round(s, 3) for s in samples],
        "missed": sum(1 for s in samples if s is None),
        "killed": leaders,
    }


async def run(args: argparse.Namespace, binary: str, root: Path) -> dict[str, Any]:
    ports = free_ports(6)
    members = [Member(f"e{i + 1}", ports[2 * i], ports[2 * i + 1], root) for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    try:
        for m in members:
            m.start(initial, binary)
        async with aiohttp.ClientSession() as session:
            leader = await find_leader(session, members)
        assert leader.proc is not None
        out: dict[str, Any] = {}
        out["writes"] = await write_load(leader.client_url, args.clients, args.seconds, args.warmup, leader.proc.pid)
        out["writes"]["leader"] = leader.name
        out["failover"] = await failover(members, initial, binary, args.rounds, args.settle)
        return out
    finally:
        for m in members:
            m.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5, help="leader kills for the failover figure")
    ap.add_argument("--settle", type=float, default=1.5, help="steady-state seconds before each kill")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd", help="etcd binary")
    args = ap.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 600 or not 0 <= args.rounds <= 50:
        ap.error("--clients 1..1024, --seconds 0..600, --rounds 0..50")
    install_sigterm()
    base: dict[str, Any] = {"bench": "etcd_baseline", "clients": args.clients, "seconds": args.seconds}
    if not os.access(args.etcd, os.X_OK):
        emit({**base, "skipped": f"no etcd binary at {args.etcd} (Debian: apt-get install etcd-server etcd-client)"})
        return 0
    version = subprocess.run([args.etcd, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orca-bench-etcd-") as tmp:
        out = asyncio.run(run(args, args.etcd, Path(tmp)))
    emit({**base, "etcd_version": version.replace("etcd Version: ", ""), **out,
          "config": "etcd defaults: heartbeat 100 ms, election 1000 ms, fsync on", "box": box_load(load0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
