"""Benchmark Raft writes through orca's API against raw PySyncObj in the same configuration.

Prints one JSON line. orca: a local three-master cluster (real `orca server` processes, default
tuning), one service `bench`; C keep-alive connections (one aiohttp TCPConnector, limit=C) each loop
`POST /api/v1/services/bench/scale {"replicas": k}` straight to the leader with an admin token and an
Idempotency-Key (as the SDK always sends one) for `--seconds`, after a short warm-up. Only 2xx count as
writes; everything else (and every exception) is an error. Latency is per request, client side.

Baseline, same run, same box: three raw PySyncObj processes (`raw_pysyncobj_node.py`) with orca's
SyncObjConf (password, journal + dump, appendEntriesUseBatch=False, 0.2/0.5/0.05 s, fallback 1.0 s);
the leader process runs C threads calling its one `@replicated` method (an entry the size of orca's)
with sync=True, timeout=5 for the same time. It has no HTTP, auth or asyncio hop: the ratio is what
the API layer and the bridge cost.

`cpu_pct` is the CPU time (all threads, % of one core) each process used during the measured window:
on a 2-core box the load generator competes with the servers, so read the figures together.

    .venv/bin/python scripts/bench/raft_writes.py [--clients 32] [--seconds 10] [--sweep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _common import RawCluster, box_load, cpu_seconds, emit, install_sigterm, summarize  # noqa: E402

from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

SWEEP_CLIENTS = (1, 8, 32, 128)


async def _load(
    url: str, token: str, clients: int, seconds: float, warmup: float, pids: dict[str, int]
) -> dict[str, Any]:
    target = f"{url}/api/v1/services/bench/scale"
    base_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    codes: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    t_measure = loop.time() + warmup
    t_end = t_measure + seconds
    cpu0: dict[str, float | None] = {}

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        i = 0
        while True:
            t0 = loop.time()
            if t0 >= t_end:
                return
            i += 1
            body = b'{"replicas": %d}' % (i % 10 + 1)
            status = 0
            try:
                async with session.post(
                    target, data=body, headers={**base_headers, "Idempotency-Key": uuid.uuid4().hex}
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
            if t0 < t_measure:
                continue
            if 200 <= status < 300:
                counts["ok"] += 1
                latencies.append(loop.time() - t0)
            else:
                counts["errors"] += 1
                if status:
                    codes[str(status)] = codes.get(str(status), 0) + 1

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, t_measure - loop.time()))
        for name, pid in pids.items():
            cpu0[name] = cpu_seconds(pid)

    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.create_task(sample_cpu())
        await asyncio.gather(*(worker(session, w) for w in range(clients)))
        await sampler
    cpu_pct = {}
    for name, pid in pids.items():
        c1 = cpu_seconds(pid)
        c0 = cpu0.get(name)
        if c0 is not None and c1 is not None:
            cpu_pct[name] = round(100 * (c1 - c0) / (seconds + (loop.time() - t_end)), 1)
    out = summarize(latencies, counts["ok"], counts["errors"], seconds)
    if codes:
        out["error_codes"] = codes
    out["cpu_pct"] = cpu_pct
    return out


def orca_run(cluster: LocalCluster, token: str, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    leader = cluster.wait_leader(20)
    assert leader.proc is not None
    pids = {"client": os.getpid(), "leader": leader.proc.pid}
    for i, m in enumerate(x for x in cluster.masters if x is not leader and x.proc is not None):
        pids[f"follower{i + 1}"] = m.proc.pid  # type: ignore[union-attr]
    result = asyncio.run(_load(leader.url, token, clients, seconds, warmup, pids))
    # The leader must not have changed under the load: a deposed leader would answer 307s (errors).
    after = cluster.leader()
    result["leader_stable"] = after is not None and after.node_id == leader.node_id
    return result


def raw_run(root: Path, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    with RawCluster(root) as raw:
        raw.start()
        leader = raw.wait_leader(30)
        pids = {
            f"follower{i}": n.proc.pid
            for i, n in enumerate((n for n in raw.nodes if n is not leader), 1)
            if n.proc is not None
        }
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        result = leader.call(
            {"cmd": "load", "clients": clients, "seconds": seconds, "warmup": warmup}, timeout=warmup + seconds + 30
        )
        elapsed = time.monotonic() - t0
        cpu_pct = {"leader": result.pop("leader_cpu_pct", None)}
        for k, p in pids.items():
            c1, c0 = cpu_seconds(p), cpu0.get(k)
            if c0 is not None and c1 is not None:
                cpu_pct[k] = round(100 * (c1 - c0) / elapsed, 1)  # includes the warm-up
        result["cpu_pct"] = cpu_pct
        leader.call({"cmd": "quit"}, timeout=5)
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--sweep", action="store_true", help="also measure orca at 1, 8, 32, 128 clients")
    ap.add_argument("--sweep-seconds", type=float, default=4.0)
    args = ap.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 600:
        ap.error("--clients must be 1..1024 and --seconds 0..600")
    install_sigterm()

    out: dict[str, Any] = {"bench": "raft_writes", "clients": args.clients, "seconds": args.seconds}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orca-bench-writes-") as tmp:
        root = Path(tmp)
        with LocalCluster(root / "orca") as cluster:
            cluster.start()
            leader = cluster.wait_leader(30)
            token = cluster.token("admin", "bench")
            with Client([m.url for m in cluster.masters], token) as client:
                deployed = client.deploy([{"name": "bench", "image": "orca-test/busybox", "replicas": 1}])
            if deployed.get("deployed") != ["bench"]:
                raise SystemExit(f"deploy failed: {deployed}")
            out["orca"] = orca_run(cluster, token, args.clients, args.seconds, args.warmup)
            if args.sweep:
                out["sweep"] = {str(c): orca_run(cluster, token, c, args.sweep_seconds, 0.5) for c in SWEEP_CLIENTS}
            out["orca"]["leader"] = leader.node_id
        out["raw_pysyncobj"] = raw_run(root / "raw", args.clients, args.seconds, args.warmup)
    orca_w, raw_w = out["orca"]["writes_per_s"], out["raw_pysyncobj"]["writes_per_s"]
    out["ratio"] = round(orca_w / raw_w, 3) if raw_w else None
    out["box"] = box_load(load0)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
