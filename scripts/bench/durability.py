"""Benchmark durable acknowledgements: Raft writes with `raft.fsync = true` (the default) and `false`, same run.

Prints one JSON line. For each mode, a fresh local three-master cluster (real `orca server` processes,
default tuning, data directories on the disk under `--dir`), one service `bench`, and the write load of
`raft_writes.py` (C keep-alive connections looping `POST /api/v1/services/bench/scale` straight to the
leader) for `--seconds` after a warm-up: `writes_per_s`, `p50_ms`, `p99_ms`. The modes alternate
`--repeat` times (fsync, nofsync, fsync, ...) so that a change in the shared box's load hits both.

Then, per mode, what reaches the disk: `strace -c -f -e trace=fsync,fdatasync,msync,sync_file_range`
attached to the leader and to one follower for `--strace-seconds` of the same load, as calls per
acknowledged write. With `fsync = false` (PySyncObj as shipped) both are 0: acknowledged entries live
in the page cache until the kernel writes them back (`vm.dirty_expire_centisecs`, reported), so a power
loss of every master within that window loses acknowledged writes. Skipped without strace or root.

    .venv/bin/python scripts/bench/durability.py [--clients 16] [--seconds 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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

from _common import box_load, emit, install_sigterm  # noqa: E402
from raft_writes import _load  # noqa: E402

from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

SYSCALLS = "fsync,fdatasync,msync,sync_file_range"


def _strace_counts(pid: int, seconds: float) -> dict[str, int] | None:
    """Calls of the flush syscalls by `pid` (all threads) over `seconds`, or None without strace."""
    if shutil.which("strace") is None or os.geteuid() != 0:
        return None
    with tempfile.NamedTemporaryFile(prefix="orca-strace-", suffix=".txt", delete=False) as f:
        out = Path(f.name)
    proc = subprocess.Popen(["strace", "-c", "-f", "-e", f"trace={SYSCALLS}", "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    counts = {name: 0 for name in SYSCALLS.split(",")}
    for line in out.read_text().splitlines():
        parts = line.split()
        # "% time seconds usecs/call calls [errors] syscall"
        if parts and parts[-1] in counts and re.fullmatch(r"\d+", parts[3] if len(parts) > 3 else ""):
            counts[parts[-1]] = int(parts[3])
    out.unlink(missing_ok=True)
    return counts


def _cluster(root: Path, fsync: bool) -> LocalCluster:
    cluster = LocalCluster(root, raft_options={"fsync": fsync})
    cluster.start()
    cluster.wait_leader(30, all_up=True)
    with Client([m.url for m in cluster.masters], cluster.token("admin", "bench")) as client:
        deployed = client.deploy([{"name": "bench", "image": "orca-test/busybox", "replicas": 1}])
    if deployed.get("deployed") != ["bench"]:
        raise SystemExit(f"deploy failed: {deployed}")
    return cluster


def one_mode(root: Path, fsync: bool, clients: int, seconds: float, warmup: float,
             strace_s: float) -> dict[str, Any]:
    with _cluster(root, fsync) as cluster:
        leader = cluster.wait_leader(20)
        token = cluster.token("admin", "bench")
        follower = next(m for m in cluster.masters if m is not leader)
        result = asyncio.run(_load(leader.url, token, clients, seconds, warmup, {}))
        result.pop("cpu_pct", None)
        if strace_s > 0:
            counts: dict[str, Any] = {}

            async def load_and_trace() -> dict[str, Any]:
                loop = asyncio.get_running_loop()
                traced = {"leader": loop.run_in_executor(None, _strace_counts, leader.proc.pid, strace_s),
                          "follower": loop.run_in_executor(None, _strace_counts, follower.proc.pid, strace_s)}
                load = await _load(leader.url, token, clients, strace_s, 0.0, {})
                for name, fut in traced.items():
                    counts[name] = await fut
                return load

            load = asyncio.run(load_and_trace())
            writes = max(1, load["writes"])
            result["flush_syscalls"] = {
                name: None if c is None else {"calls": sum(c.values()),
                                              "per_write": round(sum(c.values()) / writes, 3), **c}
                for name, c in counts.items()}
            result["flush_syscalls"]["writes_traced"] = load["writes"]
        after = cluster.leader()
        result["leader_stable"] = after is not None and after.node_id == leader.node_id
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2, help="alternations of the two modes")
    ap.add_argument("--strace-seconds", type=float, default=3.0, help="0: skip the syscall count")
    ap.add_argument("--dir", default=None, help="where the data directories go (a disk, not tmpfs)")
    args = ap.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 600 or not 1 <= args.repeat <= 10:
        ap.error("--clients 1..1024, --seconds 0..600, --repeat 1..10")
    install_sigterm()
    load0 = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {"fsync": [], "nofsync": []}
    with tempfile.TemporaryDirectory(prefix="orca-bench-durability-", dir=args.dir) as tmp:
        for i in range(args.repeat):
            for mode in ("fsync", "nofsync"):
                strace_s = args.strace_seconds if i == 0 else 0.0
                runs[mode].append(one_mode(Path(tmp) / f"{mode}-{i}", mode == "fsync", args.clients, args.seconds,
                                           args.warmup, strace_s))
    out: dict[str, Any] = {"bench": "durability", "clients": args.clients, "seconds": args.seconds}
    for mode, results in runs.items():
        out[mode] = {
            "writes_per_s": round(statistics.median(r["writes_per_s"] for r in results), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in results if r["p50_ms"] is not None), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in results if r["p99_ms"] is not None), 2),
            "errors": sum(r["errors"] for r in results),
            "leader_stable": all(r["leader_stable"] for r in results),
            "runs": [{k: r[k] for k in ("writes_per_s", "p50_ms", "p99_ms")} for r in results],
            "flush_syscalls": results[0].get("flush_syscalls"),
        }
    f, n = out["fsync"]["writes_per_s"], out["nofsync"]["writes_per_s"]
    out["fsync_throughput_ratio"] = round(f / n, 3) if n else None
    try:
        out["dirty_expire_s"] = int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text()) / 100
    except (OSError, ValueError):
        pass
    out["filesystem"] = subprocess.run(["df", "-T", args.dir or tempfile.gettempdir()], capture_output=True,
                                       text=True).stdout.splitlines()[-1].split()[1]
    out["box"] = box_load(load0)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
