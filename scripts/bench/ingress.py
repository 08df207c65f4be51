"""Benchmark the ingress on HAProxy (issue 12): throughput and latency vs straight to the replica for two
upstreams, and how fast a route change is live.

Prints one JSON line:
  {"bench": "ingress", "busybox": {proxy.py's record}, "web": {proxy.py's record},
   "route_change": {"changes", "settled_ms": {p50, max}, "first_seen_ms": {p50, max}, "gone_ms": {...},
                    "load_rps", "requests", "failed"}, "box"}

Throughput: scripts/bench/proxy.py's measurement (32 connections, rounds alternating direct and
proxied, then paced at a share of the direct rate) once with busybox httpd (orca-test/busybox: a new
connection per request) and once with orca-test/web (websocketd, Go's HTTP/1.1 server: keep-alive;
scripts/ensure-web-image.sh builds it).

Route change: `orca.agent.proxy.Proxy` in this process (HAProxy its child, as in the agent) routes one
domain to web container A while a paced load (`--route-rate` requests/s over 8 keep-alive connections)
runs through it; `--changes` times the table alternately adds web container B and removes it again.
Per change: `settled_ms` = set_routes -> HAProxy's new worker serves the new table (`Proxy.settled`),
`first_seen_ms` = set_routes -> the first answer from B (an addition), `gone_ms` = set_routes -> the
last answer from B that started after the push (a removal; 0 when none did). `failed` counts every
request of the load that did not get a 200.

"direct" is what a user reaching the replica straight would use: its published port (127.0.0.1:host
port, through Docker's docker-proxy). The proxy reaches the containers as an agent reaches its own
node's replicas: at their container's address on Docker's bridge (they are labelled as allocations of
a bench cluster on this node); `--published` makes it use the published port instead (as before).

    .venv/bin/python scripts/bench/ingress.py [--seconds 10] [--connections 32] [--changes 20] [--published]

Every process and container started here is removed on exit (SIGTERM included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import proxy as proxy_bench  # noqa: E402

from orca.devcluster import free_ports  # noqa: E402

DOMAIN = "routes.example.com"


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(values) * 1000, 1), "max": round(max(values) * 1000, 1)}


async def route_changes(changes: int, rate: float, a_addr: str, b_addr: str, names: tuple[str, str],
                        cluster: str = "") -> dict[str, Any]:
    from orca.agent.proxy import Proxy
    from orca.config import ProxyConfig

    [port] = free_ports(1)
    proxy = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}"))
    if cluster:  # as the agent: each table change lists this node's containers first
        proxy.list_local = proxy_bench.local_lister(cluster)

    def table(with_b: bool) -> dict[str, Any]:
        eps = [{"alloc": "a", "address": a_addr, "canary": False}]
        if with_b:
            eps.append({"alloc": "b", "address": b_addr, "canary": False})
        return {DOMAIN: {"service": "routes", "strategy": None, "canary_weight": None, "endpoints": eps}}

    proxy.set_routes(table(False))
    await proxy.start()
    url = f"http://127.0.0.1:{port}/"
    answers: list[tuple[float, float, str]] = []  # (sent, answered, replica)
    failed = 0
    stop = asyncio.Event()

    async def worker(session: aiohttp.ClientSession, n: int, connections: int) -> None:
        nonlocal failed
        period = connections / rate
        due = time.perf_counter() + period * n / connections
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            due += period
            sent = time.perf_counter()
            try:
                async with session.get(url, headers={"Host": DOMAIN}) as resp:
                    body = (await resp.text()).strip()
                    if resp.status == 200:
                        answers.append((sent, time.perf_counter(), body))
                    else:
                        failed += 1
            except (aiohttp.ClientError, TimeoutError):
                failed += 1

    settled: list[float] = []
    first_seen: list[float] = []
    gone: list[float] = []
    started = time.perf_counter()
    try:
        connections = 8
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                         timeout=aiohttp.ClientTimeout(total=10)) as session:
            workers = [asyncio.create_task(worker(session, n, connections)) for n in range(connections)]
            await asyncio.sleep(1.0)
            for i in range(changes):
                add = i % 2 == 0
                pushed = time.perf_counter()
                proxy.set_routes(table(add))
                if not await proxy.settled(10):
                    raise RuntimeError("a route change was not live within 10 s")
                settled.append(time.perf_counter() - pushed)
                await asyncio.sleep(1.0)  # let the load show where requests go now
                if add:
                    seen = [answered for sent, answered, name in answers if name == names[1] and sent >= pushed]
                    if seen:
                        first_seen.append(min(seen) - pushed)
                else:
                    late = [answered for sent, answered, name in answers if name == names[1] and sent >= pushed]
                    gone.append(max(late) - pushed if late else 0.0)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        await proxy.stop()
    elapsed = time.perf_counter() - started
    return {"changes": changes, "settled_ms": _ms(settled), "first_seen_ms": _ms(first_seen),
            "gone_ms": _ms(gone), "load_rps": round(len(answers) / elapsed, 1), "requests": len(answers) + failed,
            "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paced-seconds", type=float, default=6.0)
    parser.add_argument("--paced-share", type=float, default=0.3)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--route-rate", type=float, default=200.0)
    parser.add_argument("--published", action="store_true",
                        help="the proxy reaches the containers at their published port, not their container address")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, proxy_bench._exit_on)
    load_start = os.getloadavg()[0]
    out: dict[str, Any] = {"bench": "ingress", "connections": args.connections, "seconds": args.seconds,
                           "proxy_reaches": "published port" if args.published else "container address"}
    for kind in ("busybox", "web"):
        record = proxy_bench.measure(kind, args)
        record.pop("bench", None)
        out[kind] = record
    a_port, b_port = free_ports(2)
    cluster = "" if args.published else f"bench{os.getpid()}{a_port}"
    containers = []
    try:
        containers = [proxy_bench.start_web(a_port, cluster, "a"), proxy_bench.start_web(b_port, cluster, "b")]
        names = (containers[0].id[:12], containers[1].id[:12])
        for p in (a_port, b_port):
            asyncio.run(proxy_bench.wait_http(f"http://127.0.0.1:{p}/"))
        out["route_change"] = asyncio.run(route_changes(args.changes, args.route_rate, f"127.0.0.1:{a_port}",
                                                        f"127.0.0.1:{b_port}", names, cluster))
    finally:
        for c in containers:
            c.remove(force=True)
    out["box"] = {"cpus": os.cpu_count(), "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(out, separators=(", ", ": ")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
