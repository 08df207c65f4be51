"""Benchmark the service mesh's data plane: service to service through it vs straight to the replica.

Prints one JSON line:
  {"bench": "mesh", "connections": 32,
   "http": {"direct": {"rps", "p50_ms", "p99_ms", ...}, "mesh": {...}, "ratio_rps", "ratio_total", "round_ratios"},
   "tcp_bytes": {"direct": {"mb_s"}, "mesh": {...}, "ratio", "ratio_total", "round_ratios"},
   "tcp_connections": {"direct": {"conn_s", "p99_ms"}, "mesh": {...}, "ratio", ...}, "box"}
`ratio`/`ratio_rps` is the median of the rounds' mesh / direct (see round_ratios); `ratio_total` the ratio
of the totals over all rounds, which one round caught in a burst of the box's other load can swing.

The mesh is the agent's own: the nftables table rendered by orca.agent.mesh_nft for one HTTP and one TCP
service (the DNAT of VIP:port to the replica, the access sets, the masquerade), loaded with `nft -f` as an
agent loads it, with the VIPs on `lo` (10.212.255.2-4, label lo:ombench). The client is on the host, so
its connections take the output hook (a container's take prerouting: the same DNAT, after the access
check). Needs root (CAP_NET_ADMIN); the table and the addresses are removed on exit.
Upstreams: a keep-alive aiohttp server (`--upstream aiohttp`, the default, no Docker), busybox httpd
(`--upstream busybox`) or the keep-alive orca-test/web (`--upstream web`) in a container for HTTP; an
asyncio echo server in a child process for TCP. A container is reached at its address on the bridge both
straight and through the mesh (as the agent reaches a replica on its engine), and also through the mesh at
its published port ("mesh_published": Docker's port mapping on the way).
The load (the same generator for both targets, alternating rounds so drifting load elsewhere on the box
hits both): HTTP requests over N keep-alive connections (scripts/bench/proxy.py's generator); TCP bytes/s
over N connections echoing 64 KiB chunks; TCP connections/s as N workers each opening a connection,
sending a line, reading the answer and closing.

    .venv/bin/python scripts/bench/mesh.py [--seconds 12] [--rounds 6] [--connections 32] [--upstream web]

Every process and container started here is reaped on exit (SIGTERM included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

from proxy import AIOHTTP_UPSTREAM, Load, percentile, start_busybox, start_web, wait_http  # noqa: E402

from orca.devcluster import free_ports  # noqa: E402

CHUNK = 64 * 1024
WARMUP_S = 1.0

ECHO_UPSTREAM = """
import asyncio, sys

async def handle(reader, writer):
    try:
        first = await reader.read(65536)
        if first == b"hello\\n":          # a connections/s client: one answer, then close
            writer.write(b"hi\\n")
        else:                            # a bytes/s client: echo everything
            writer.write(first)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def _exit_on(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# -- the mesh: the agent's nftables table -------------------------------------------------------------------

VIP_HTTP, VIP_TCP, VIP_PUB = "10.212.255.2", "10.212.255.3", "10.212.255.4"
LO_LABEL = "lo:ombench"
HTTP_PORT, TCP_PORT = 8080, 7000


class KernelMesh:
    """The agent's table for the bench's services, loaded on enter and removed (with the VIPs) on exit."""

    def __init__(self, http_upstream: str, tcp_upstream: str, published: str | None) -> None:
        from orca.agent import mesh_config as mc
        from orca.agent import mesh_nft

        self.table = mesh_nft.table_name(f"bench{os.getpid()}", "bench")
        services = [mc.MeshService("web", "bench", VIP_HTTP, HTTP_PORT, "http", (), (("a1", http_upstream),)),
                    mc.MeshService("store", "bench", VIP_TCP, TCP_PORT, "tcp", (), (("a2", tcp_upstream),))]
        if published:  # the same replica at its published port, through Docker's port mapping
            services.append(mc.MeshService("webpub", "bench", VIP_PUB, HTTP_PORT, "http", (), (("a3", published),)))
        self.vips = [s.vip for s in services]
        self.script = mesh_nft.render(self.table, services, {"bench": ("10.212.255.0/24",)})
        self.delete = mesh_nft.delete_script(self.table)

    def __enter__(self) -> KernelMesh:
        if os.geteuid() != 0:
            raise SystemExit("the mesh bench loads an nftables table and VIPs on lo: run it as root")
        for vip in self.vips:
            subprocess.run(["ip", "addr", "replace", f"{vip}/32", "dev", "lo", "label", LO_LABEL], check=True)
        subprocess.run(["nft", "-f", "-"], input=self.script, text=True, check=True, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["nft", "-f", "-"], input=self.delete, text=True, check=False, timeout=30)
        for vip in self.vips:
            subprocess.run(["ip", "addr", "del", f"{vip}/32", "dev", "lo"], capture_output=True, check=False)


# -- TCP load --------------------------------------------------------------------------------------------------


class TcpBytes:
    """N connections, each writing a 64 KiB chunk and reading it back, in a loop: echoed bytes/s."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port, self.connections = host, port, connections
        self.bytes = 0
        self.errors = 0
        self.elapsed = 0.0

    async def run(self, seconds: float) -> None:
        payload = os.urandom(CHUNK)
        measuring = False

        async def worker(until: float) -> None:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
            except (OSError, TimeoutError):
                self.errors += 1
                return
            try:
                while time.perf_counter() < until:
                    writer.write(payload)
                    await writer.drain()
                    await asyncio.wait_for(reader.readexactly(CHUNK), 10)
                    if measuring:
                        self.bytes += CHUNK
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                self.errors += 1
            finally:
                writer.close()

        warm = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(worker(warm) for _ in range(self.connections)))
        measuring = True
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds) for _ in range(self.connections)))
        self.elapsed += time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        rate = self.bytes / self.elapsed if self.elapsed else 0.0
        return {"mb_s": round(rate / 1e6, 1), "bytes": self.bytes, "errors": self.errors}


class TcpConnections:
    """N workers, each connecting, sending a line, reading the answer and closing, in a loop."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port, self.connections = host, port, connections
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = 0.0

    async def run(self, seconds: float) -> None:
        measuring = False

        async def worker(until: float) -> None:
            clock = time.perf_counter
            while (t0 := clock()) < until:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
                    try:
                        writer.write(b"hello\n")
                        ok = await asyncio.wait_for(reader.read(16), 5) == b"hi\n"
                    finally:
                        writer.close()
                except (OSError, TimeoutError):
                    ok = False
                if measuring:
                    if ok:
                        self.latencies.append(clock() - t0)
                    else:
                        self.errors += 1

        warm = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(worker(warm) for _ in range(self.connections)))
        measuring = True
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds) for _ in range(self.connections)))
        self.elapsed += time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        p99 = percentile(lat, 99)
        return {"conn_s": round(len(lat) / self.elapsed, 1) if self.elapsed else 0.0,
                "p99_ms": round(p99 * 1000, 2) if p99 is not None else None, "connections": len(lat),
                "errors": self.errors}


async def wait_tcp(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            writer.write(b"hello\n")
            answer = await asyncio.wait_for(reader.read(16), 2)
            writer.close()
            if answer == b"hi\n":
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not answer within {timeout:.0f} s")


def container_address(container: Any) -> str:
    """The container's address on its (first) network, as the host reaches it over the bridge."""
    container.reload()
    networks = container.attrs["NetworkSettings"]["Networks"]
    return next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


MEASURES = ("http", "tcp_bytes", "tcp_connections")


def _progress(measure: Any) -> tuple[float, float]:
    """(work done, seconds measured) so far: requests, bytes or connections."""
    done = measure.bytes if isinstance(measure, TcpBytes) else len(measure.latencies)
    return float(done), measure.elapsed


def _rate(before: tuple[float, float], after: tuple[float, float]) -> float:
    seconds = after[1] - before[1]
    return (after[0] - before[0]) / seconds if seconds > 0 else 0.0


def round_ratios(direct: list[float], mesh: list[float]) -> dict[str, Any]:
    """Each round's mesh / direct and their median: the two targets of a round ran back to back, so the
    box's other load (which swings by more than the mesh's cost here) weighs on both alike; the median
    ignores a round where it jumped in between."""
    ratios = [m / d for d, m in zip(direct, mesh, strict=True) if d > 0]
    return {"round_ratios": [round(r, 3) for r in ratios],
            "ratio_median": round(statistics.median(ratios), 3) if ratios else None}


# -- orchestration ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="per target and measure, split over --rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--upstream", choices=("busybox", "web", "aiohttp"), default="aiohttp")
    parser.add_argument("--rounds", type=int, default=6, help="alternating direct/mesh rounds")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on)

    http_up, tcp_up, http_pub = free_ports(3)
    container = None
    procs: list[subprocess.Popen[bytes]] = []
    load_start = os.getloadavg()[0]
    try:
        http_target, published = f"127.0.0.1:{http_up}", None
        if args.upstream == "aiohttp":
            procs.append(subprocess.Popen([sys.executable, "-c", AIOHTTP_UPSTREAM, str(http_up)]))
        else:
            # A replica in a container on this node: "direct" is its container address (what a container
            # calling it without the mesh would use), and so is the mesh's (the agent's same-engine path);
            # "mesh_published" is the mesh to its published port (through Docker's port mapping).
            container = (start_busybox if args.upstream == "busybox" else start_web)(http_up)
            http_target = f"{container_address(container)}:8080"
            published = f"127.0.0.1:{http_up}"
        procs.append(subprocess.Popen([sys.executable, "-c", ECHO_UPSTREAM, str(tcp_up)]))
        with KernelMesh(http_target, f"127.0.0.1:{tcp_up}", published):
            direct_url, mesh_url = f"http://{http_target}/index.html", f"http://{VIP_HTTP}:{HTTP_PORT}/index.html"
            asyncio.run(wait_http(direct_url))
            asyncio.run(wait_http(mesh_url))
            if published:
                asyncio.run(wait_http(f"http://{VIP_PUB}:{HTTP_PORT}/index.html"))
            asyncio.run(wait_tcp("127.0.0.1", tcp_up))
            asyncio.run(wait_tcp(VIP_TCP, TCP_PORT))
            http = {"direct": Load(direct_url, args.connections), "mesh": Load(mesh_url, args.connections)}
            if published:
                http["mesh_published"] = Load(f"http://{VIP_PUB}:{HTTP_PORT}/index.html", args.connections)
            tbytes = {"direct": TcpBytes("127.0.0.1", tcp_up, args.connections),
                      "mesh": TcpBytes(VIP_TCP, TCP_PORT, args.connections)}
            tconns = {"direct": TcpConnections("127.0.0.1", tcp_up, args.connections),
                      "mesh": TcpConnections(VIP_TCP, TCP_PORT, args.connections)}
            share = args.seconds / args.rounds
            per_round: dict[str, dict[str, list[float]]] = {k: {t: [] for t in http} for k in MEASURES}
            for n in range(args.rounds):
                for key, measures in zip(MEASURES, (http, tbytes, tconns), strict=True):
                    # Direct first in even rounds, the mesh first in odd ones: neither always runs just after
                    # the other's load, nor always on the warmer box.
                    targets = list(measures)
                    for target in targets if n % 2 == 0 else targets[::-1]:
                        before = _progress(measures[target])
                        asyncio.run(measures[target].run(share))  # type: ignore[attr-defined]
                        per_round[key][target].append(_rate(before, _progress(measures[target])))
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
    h = {k: v.summary() for k, v in http.items()}
    b = {k: v.summary() for k, v in tbytes.items()}
    c = {k: v.summary() for k, v in tconns.items()}
    rr = {k: round_ratios(per_round[k]["direct"], per_round[k]["mesh"]) for k in MEASURES}
    print(json.dumps({
        "bench": "mesh", "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
        "upstream": args.upstream, "data_plane": "nftables",
        "http": {**h, "ratio_rps": rr["http"]["ratio_median"],
                 "ratio_total": _ratio(h["mesh"]["rps"], h["direct"]["rps"]),
                 "round_ratios": rr["http"]["round_ratios"],
                 **({"ratio_published_rps": round_ratios(per_round["http"]["direct"],
                                                         per_round["http"]["mesh_published"])["ratio_median"]}
                    if "mesh_published" in http else {})},
        "tcp_bytes": {**b, "ratio": rr["tcp_bytes"]["ratio_median"],
                      "ratio_total": _ratio(b["mesh"]["mb_s"], b["direct"]["mb_s"]),
                      "round_ratios": rr["tcp_bytes"]["round_ratios"]},
        "tcp_connections": {**c, "ratio": rr["tcp_connections"]["ratio_median"],
                            "ratio_total": _ratio(c["mesh"]["conn_s"], c["direct"]["conn_s"]),
                            "round_ratios": rr["tcp_connections"]["round_ratios"]},
        "box": {"cpus": os.cpu_count(), "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)]}},
        separators=(", ", ": ")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
