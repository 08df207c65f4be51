"""Benchmark API write throughput with TLS against plain HTTP, in the same run (issue 11: goal >= 0.85x).

Prints one JSON line. Two local three-master clusters (real `orca server` processes, default tuning)
run side by side: one plain HTTP, one with `[tls] enabled = true` (the cluster CA its first leader
made; the client verifies the leader's certificate against it). Rounds alternate plain, TLS, plain,
TLS, ... so drift on the shared box hits both alike. In a round, C keep-alive connections (one
aiohttp TCPConnector, limit=C; TLS handshakes happen once per connection, as with the SDK's pooled
connections) each loop `POST /api/v1/services/bench/scale` to the leader with an admin token and an
Idempotency-Key for `--seconds`, after a short warm-up. Only 2xx count; latency is per request, client
side. `ratio` is the median TLS writes/s over the median plain writes/s.

    .venv/bin/python scripts/bench/tls_api.py [--clients 32] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _common import box_load, cpu_seconds, emit, install_sigterm, summarize  # noqa: E402

from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

GOAL = 0.85


async def _load(url: str, token: str, clients: int, seconds: float, warmup: float,
                ctx: ssl.SSLContext | None, leader_pid: int) -> dict[str, Any]:
    target = f"{url}/api/v1/services/bench/scale"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    t_measure = loop.time() + warmup
    t_end = t_measure + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        i = 0
        while (t0 := loop.time()) < t_end:
            i += 1
            status = 0
            try:
                async with session.post(target, data=b'{"replicas": %d}' % (i % 10 + 1),
                                        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                                        ssl=ctx if ctx is not None else True) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                pass
            if t0 < t_measure:
                continue
            if 200 <= status < 300:
                counts["ok"] += 1
                latencies.append(loop.time() - t0)
            else:
                counts["errors"] += 1

    cpu: dict[str, float | None] = {}

    async def sample() -> None:
        await asyncio.sleep(max(0.0, t_measure - loop.time()))
        cpu["leader0"], cpu["client0"] = cpu_seconds(leader_pid), cpu_seconds(os.getpid())
        await asyncio.sleep(max(0.0, t_end - loop.time()))
        cpu["leader1"], cpu["client1"] = cpu_seconds(leader_pid), cpu_seconds(os.getpid())

    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(worker(session) for _ in range(clients)))
        await sampler
    out = summarize(latencies, counts["ok"], counts["errors"], seconds)
    # CPU per acknowledged write, in ms: where TLS costs (the leader's side, or the load generator's).
    for who in ("leader", "client"):
        c0, c1 = cpu.get(f"{who}0"), cpu.get(f"{who}1")
        out[f"{who}_cpu_ms_per_write"] = (round(1000 * (c1 - c0) / counts["ok"], 3)
                                          if c0 is not None and c1 is not None and counts["ok"] else None)
    return out


def _prepare(cluster: LocalCluster) -> tuple[str, str, ssl.SSLContext | None, int]:
    cluster.start()
    leader = cluster.wait_leader(60, all_up=True)
    token = cluster.token("admin", "bench")
    ca = cluster.ca_file if cluster.tls else None
    with Client([m.url for m in cluster.masters], token, ca_file=ca) as client:
        deployed = client.deploy([{"name": "bench", "image": "orca-test/busybox", "replicas": 1}])
    if deployed.get("deployed") != ["bench"]:
        raise SystemExit(f"deploy failed: {deployed}")
    assert leader.proc is not None
    return leader.url, token, ssl.create_default_context(cafile=ca) if ca else None, leader.proc.pid


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"writes_per_s": round(statistics.median(r["writes_per_s"] for r in runs), 1),
            "p50_ms": statistics.median(r["p50_ms"] or 0 for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] or 0 for r in runs),
            "errors": sum(r["errors"] for r in runs), "rounds": [r["writes_per_s"] for r in runs],
            "leader_cpu_ms_per_write": statistics.median(r["leader_cpu_ms_per_write"] or 0 for r in runs),
            "client_cpu_ms_per_write": statistics.median(r["client_cpu_ms_per_write"] or 0 for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 600 or not 1 <= args.rounds <= 20:
        ap.error("--clients 1..1024, --seconds 0..600, --rounds 1..20")
    install_sigterm()
    out: dict[str, Any] = {"bench": "tls_api", "clients": args.clients, "seconds": args.seconds,
                           "rounds": args.rounds}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orca-bench-tls-") as tmp, \
            LocalCluster(Path(tmp) / "plain") as plain, LocalCluster(Path(tmp) / "tls", tls=True) as secure:
        targets = {"plain": _prepare(plain), "tls": _prepare(secure)}
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "tls": []}
        for _ in range(args.rounds):
            for name in ("plain", "tls"):
                url, token, ctx, pid = targets[name]
                runs[name].append(asyncio.run(_load(url, token, args.clients, args.seconds, args.warmup, ctx, pid)))
        out["plain"], out["tls"] = _median(runs["plain"]), _median(runs["tls"])
        plain.stop()
        secure.stop()
    base = out["plain"]["writes_per_s"]
    out["ratio"] = round(out["tls"]["writes_per_s"] / base, 3) if base else None
    out["goal"] = GOAL
    out["goal_met"] = out["ratio"] is not None and out["ratio"] >= GOAL
    out["box_load"] = box_load(load0)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
