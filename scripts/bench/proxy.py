"""Benchmark the agent's ingress proxy: requests/s and latency through it vs straight to one replica.

Prints one JSON line:
  {"bench": "proxy", "connections": 32, "direct": {"rps", "p50_ms", "p99_ms", ...}, "proxy": {...},
   "ratio_rps", "p99_added_ms", "upstream", "box"}
Each side also carries CPU per request of the load generator (`client_cpu_us_per_req`: the same on both
sides when the comparison is fair), of the replica (`upstream_...`) and, for a container published on
127.0.0.1, of Docker's docker-proxy that both sides cross (`relay_...`), and `box_cpu_busy` (the share
of every core busy during its rounds: near 1, the box is saturated and the ratio is about the proxy's
share of the CPU a request costs in all).

The replica is a busybox httpd container (orca-test/busybox, published on 127.0.0.1: it closes every
connection) started through the docker SDK; `--upstream web` an orca-test/web container (websocketd, Go's
HTTP/1.1 server: keeps connections alive; scripts/ensure-web-image.sh builds it); `--upstream aiohttp` an
aiohttp server in a child process (no Docker needed).
The proxy is `orca.agent.proxy.Proxy` exactly as the agent runs it (HAProxy, its child), in its own
process (this script re-run with `--serve-proxy`); its CPU is that process tree's (HAProxy included). The load
generator is the same for both runs: one aiohttp client, N connections (one worker each, keep-alive
where the server allows it), a warm-up, then `--seconds` of measured load per target, split into
`--rounds` that alternate direct and proxied (so drifting load elsewhere on the machine hits both).
At 32 busy connections latency is mostly queueing (32 / rps), so `paced` repeats both at a fixed rate
(`--paced-share` of the direct rps) to show the latency the proxy itself adds to a request.

"direct" is the container's published port (127.0.0.1:host port: what a user reaching the replica
straight uses, through docker-proxy); the proxy reaches the container at its address on Docker's bridge,
as an agent reaches its own node's replicas (`--published`: at the published port, as before).

    .venv/bin/python scripts/bench/proxy.py [--seconds 10] [--connections 32] [--upstream busybox|web|aiohttp]
        [--published]

Every process and container started here is reaped on exit (SIGTERM included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

import aiohttp  # noqa: E402

from orca.devcluster import free_ports  # noqa: E402

IMAGE = "orca-test/busybox:latest"
WEB_IMAGE = "orca-test/web:latest"
BENCH_NODE = "bench"
HTTPD = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
DOMAIN = "bench.example.com"
WARMUP_S = 1.5

AIOHTTP_UPSTREAM = """
import sys
from aiohttp import web

async def index(request):
    return web.Response(text="ok\\n")

app = web.Application()
app.router.add_get("/", index)
app.router.add_get("/index.html", index)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def _diff(a: float | None, b: float | None) -> float | None:
    return round(a - b, 2) if a is not None and b is not None else None


def _exit_on(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# -- the proxy process ----------------------------------------------------------------------------------


def local_lister(cluster: str) -> Any:
    """What the agent gives its proxy (orca.agent.agent.Agent._list_local): this "node"'s containers of
    the bench's cluster, at their address on Docker's bridge (orca.agent.local_containers)."""
    import docker

    from orca.agent.local_containers import list_rows, local_containers, network_prefix

    client = docker.from_env()
    return lambda: local_containers(list_rows(client, cluster), network_prefix(cluster), BENCH_NODE,
                                    default_bridge=True)


def alloc_labels(cluster: str, alloc: str) -> dict[str, str]:
    """Labels that make a bench container an allocation of `cluster` on BENCH_NODE (as the agent's are)."""
    return {"orca.bench": "proxy", "orca.cluster": cluster, "orca.node": BENCH_NODE, "orca.alloc": alloc}


async def serve_proxy(port: int, upstream: str, cluster: str) -> None:
    from orca.agent.proxy import Proxy
    from orca.config import ProxyConfig

    proxy = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}"))
    if cluster:  # a container on this host: reached at its container's address, as the agent does
        proxy.list_local = local_lister(cluster)
    proxy.set_routes({DOMAIN: {"service": "bench", "strategy": None, "canary_weight": None,
                               "endpoints": [{"alloc": "a1", "address": upstream, "canary": False}]}})
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await proxy.stop()


# -- load ---------------------------------------------------------------------------------------------------


class Load:
    """The load generator: `connections` workers, each one request at a time over one aiohttp client.

    `run(seconds)` is one measured round (after a warm-up); rounds of the same target accumulate, so
    the direct and proxied runs can alternate and a change in the machine's other load hits both alike.
    """

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        self.connections = connections
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = 0.0

    async def run(self, seconds: float, rate: float | None = None) -> None:
        """Closed loop (each worker sends its next request when the last one is answered), or paced at
        `rate` requests/s in all (each worker on its own staggered schedule) to see the latency a request
        pays when nothing is saturated."""
        measuring = False
        connector = aiohttp.TCPConnector(limit=self.connections)
        async with aiohttp.ClientSession(connector=connector, headers={"Host": DOMAIN},
                                         timeout=aiohttp.ClientTimeout(total=10)) as session:
            async def worker(n: int, until: float) -> None:
                clock = time.perf_counter
                period = self.connections / rate if rate else 0.0
                due = clock() + period * n / self.connections
                while True:
                    if period:
                        await asyncio.sleep(max(0.0, due - clock()))
                        due += period
                    t0 = clock()
                    if t0 >= until:
                        return
                    try:
                        async with session.get(self.url) as resp:
                            await resp.read()
                            ok = resp.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    if measuring:
                        if ok:
                            self.latencies.append(clock() - t0)
                        else:
                            self.errors += 1

            warm = time.perf_counter() + WARMUP_S
            await asyncio.gather(*(worker(n, warm) for n in range(self.connections)))
            measuring = True
            started = time.perf_counter()
            await asyncio.gather(*(worker(n, started + seconds) for n in range(self.connections)))
            self.elapsed += time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        ms = [round(v * 1000, 2) if v is not None else None for v in (percentile(lat, 50), percentile(lat, 99))]
        return {"rps": round(len(lat) / self.elapsed, 1) if self.elapsed else 0.0, "p50_ms": ms[0], "p99_ms": ms[1],
                "requests": len(lat), "errors": self.errors}


async def wait_http(url: str, host: str | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, headers={"Host": host} if host else None) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def box_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every core since boot (/proc/stat): a round's busy share of the box."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


def relay_pid(port: int) -> int | None:
    """Docker's userland proxy (docker-proxy) that serves a port published on 127.0.0.1, if any: loopback
    traffic to such a port is relayed by it (the iptables DNAT rules skip 127.0.0.0/8), so both the direct
    and the proxied requests cross it."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"docker-proxy") and b"-host-port" in argv \
                    and argv[argv.index(b"-host-port") + 1:][:1] == [str(port).encode()]:
                return int(entry.name)
    return None


class Usage:
    """CPU spent during a target's measured rounds: the load generator's (this process), the replica's
    and the relay's (docker-proxy, when the upstream has one) process trees, and the box's busy share,
    so the two targets' runs can be compared: the same client cost per request on both sides, where
    the rest goes, and whether the box was saturated."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.client = self.busy = self.total = 0.0
        self.spent = dict.fromkeys(self.pids, 0.0)
        self._start: tuple[float, dict[str, float | None], tuple[float, float]] | None = None

    def __enter__(self) -> Usage:
        self._start = (time.process_time(), {k: cpu_seconds(p) for k, p in self.pids.items()}, box_cpu())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._start is not None
        own, before, (busy, total) = self._start
        self.client += time.process_time() - own
        for name, pid in self.pids.items():
            start, after = before[name], cpu_seconds(pid)
            if start is not None and after is not None:
                self.spent[name] += after - start
        b, t = box_cpu()
        self.busy, self.total = self.busy + b - busy, self.total + t - total

    def summary(self, requests: int, share: float) -> dict[str, Any]:
        """`share`: the part of the CPU time spent on measured requests (the warm-ups are not counted)."""
        per = 1e6 * share / requests if requests else 0.0
        out: dict[str, Any] = {"client_cpu_us_per_req": round(self.client * per, 1)}
        out.update({f"{name}_cpu_us_per_req": round(spent * per, 1) for name, spent in self.spent.items()})
        out["box_cpu_busy"] = round(self.busy / self.total, 2) if self.total else None
        return out


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds of `pid` and its live descendants (the proxy process, HAProxy's master and workers)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, IndexError, ValueError):
            continue
    if pid not in stats:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in tree)


# -- orchestration ------------------------------------------------------------------------------------------


def start_busybox(port: int, cluster: str = "", alloc: str = "a1") -> Any:
    import docker

    client = docker.from_env()
    labels = alloc_labels(cluster, alloc) if cluster else {"orca.bench": "proxy"}
    return client.containers.run(IMAGE, HTTPD, detach=True, remove=False, ports={"8080/tcp": ("127.0.0.1", port)},
                                 labels=labels, name=f"orca-bench-proxy-{os.getpid()}-{port}")


def start_web(port: int, cluster: str = "", alloc: str = "a1") -> Any:
    """An orca-test/web container (keep-alive HTTP; built by scripts/ensure-web-image.sh when missing)."""
    import docker

    client = docker.from_env()
    try:
        client.images.get(WEB_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run([str(Path(__file__).resolve().parents[1] / "ensure-web-image.sh")], check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
    labels = alloc_labels(cluster, alloc) if cluster else {"orca.bench": "proxy"}
    return client.containers.run(WEB_IMAGE, detach=True, remove=False, ports={"8080/tcp": ("127.0.0.1", port)},
                                 labels=labels, name=f"orca-bench-proxy-{os.getpid()}-{port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--upstream", choices=("busybox", "web", "aiohttp"), default="busybox")
    parser.add_argument("--rounds", type=int, default=2, help="alternating direct/proxy rounds sharing --seconds")
    parser.add_argument("--paced-seconds", type=float, default=6.0, help="per target, for the paced (unsaturated) run")
    parser.add_argument("--paced-share", type=float, default=0.3, help="paced rate as a share of the direct rps")
    parser.add_argument("--published", action="store_true",
                        help="the proxy reaches the container at its published port (as before the agent reached "
                             "its own node's replicas at their container's address)")
    parser.add_argument("--serve-proxy", nargs=3, metavar=("PORT", "UPSTREAM", "CLUSTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on)
    if args.serve_proxy:
        asyncio.run(serve_proxy(int(args.serve_proxy[0]), args.serve_proxy[1], args.serve_proxy[2]))
        return 0
    print(json.dumps(measure(args.upstream, args), separators=(", ", ": ")), flush=True)
    return 0


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Direct vs through the proxy for one upstream `kind` (busybox, web or aiohttp): the JSON record.
    `args`: seconds, connections, rounds, paced_seconds, paced_share (as main's options)."""
    up_port, proxy_port = free_ports(2)
    upstream = f"127.0.0.1:{up_port}"
    container = None
    procs: list[subprocess.Popen[bytes]] = []
    load_start = os.getloadavg()[0]
    # The container is an allocation of a cluster of its own on this "node": the proxy reaches it at its
    # container's address, as an agent reaches its own node's replicas (not with --published).
    cluster = "" if getattr(args, "published", False) or kind == "aiohttp" else f"bench{os.getpid()}{up_port}"
    try:
        if kind == "busybox":
            container = start_busybox(up_port, cluster)
        elif kind == "web":
            container = start_web(up_port, cluster)
        else:
            procs.append(subprocess.Popen([sys.executable, "-c", AIOHTTP_UPSTREAM, str(up_port)]))
        proxy_proc = subprocess.Popen([sys.executable, __file__, "--serve-proxy", str(proxy_port), upstream,
                                       cluster])
        procs.append(proxy_proc)
        direct_url = f"http://{upstream}/"
        proxy_url = f"http://127.0.0.1:{proxy_port}/"
        asyncio.run(wait_http(direct_url))
        asyncio.run(wait_http(proxy_url, DOMAIN))
        direct, proxied = Load(direct_url, args.connections), Load(proxy_url, args.connections)
        if container is not None:
            container.reload()
            pids = {"upstream": container.attrs["State"]["Pid"], "relay": relay_pid(up_port)}
        else:
            pids = {"upstream": procs[0].pid}
        direct_use, proxied_use = Usage(pids), Usage(pids)
        proxy_cpu = 0.0
        for _ in range(args.rounds):  # alternate, so drifting load elsewhere on the box hits both alike
            with direct_use:
                asyncio.run(direct.run(args.seconds / args.rounds))
            cpu0 = cpu_seconds(proxy_proc.pid)
            with proxied_use:
                asyncio.run(proxied.run(args.seconds / args.rounds))
            cpu1 = cpu_seconds(proxy_proc.pid)
            if cpu0 is not None and cpu1 is not None:
                proxy_cpu += cpu1 - cpu0
        # Paced at a fraction of what the upstream sustained: the latency the proxy adds to one request
        # when nothing queues (at 32 busy connections latency is mostly queueing: 32 / rps).
        rate = round(args.paced_share * direct.summary()["rps"], 1)
        paced_direct, paced_proxy = Load(direct_url, args.connections), Load(proxy_url, args.connections)
        if rate > 0 and args.paced_seconds > 0:
            for _ in range(args.rounds):
                asyncio.run(paced_direct.run(args.paced_seconds / args.rounds, rate))
                asyncio.run(paced_proxy.run(args.paced_seconds / args.rounds, rate))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if container is not None:
            container.remove(force=True)
    d, p = direct.summary(), proxied.summary()
    pd, pp = paced_direct.summary(), paced_proxy.summary()
    paced = {"rate": rate, "direct": pd, "proxy": pp,
             "p50_added_ms": _diff(pp["p50_ms"], pd["p50_ms"]), "p99_added_ms": _diff(pp["p99_ms"], pd["p99_ms"])}
    # CPU per request: the warm-ups are in the time, not in the count.
    share = 1 / (1 + WARMUP_S * args.rounds / args.seconds)
    if p["requests"]:
        p["proxy_cpu_us_per_req"] = round(1e6 * proxy_cpu * share / p["requests"], 1)
    d.update(direct_use.summary(d["requests"], share))
    p.update(proxied_use.summary(p["requests"], share))
    ratio = round(p["rps"] / d["rps"], 3) if d["rps"] else None
    added = _diff(p["p99_ms"], d["p99_ms"])
    return {"bench": "proxy", "connections": args.connections, "seconds": args.seconds,
            "rounds": args.rounds, "upstream": kind, "proxy_reaches": "published port" if not cluster
            else "container address", "direct": d, "proxy": p,
            "ratio_rps": ratio, "p99_added_ms": added, "paced": paced,
            "box": {"cpus": os.cpu_count(), "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)]}}


if __name__ == "__main__":
    sys.exit(main())
