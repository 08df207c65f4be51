"""One raw PySyncObj member, configured like an orca master, for the Raft benchmarks' baselines.

The SyncObj has ONE `@replicated` method that unpacks a msgpack entry (the same shape and size as an
orca `scale` entry) and stores it in a dict. The SyncObjConf is orca's (`orca/raft.py`): password,
bindAddress, journal + full dump under `--dir`, appendEntriesUseBatch=False, election 0.2/0.5 s,
heartbeat 0.05 s, leaderFallbackTimeout 1.0 s, the same connection and compaction settings.

Driven by one JSON command per stdin line, one JSON reply per stdout line (EOF on stdin = exit, so the
process never outlives the benchmark that started it):
  {"cmd": "status"}                                    -> is_leader, leader, ready, term, commit index
  {"cmd": "load", "clients": C, "seconds": S, "warmup": W}
        C threads call the replicated method with sync=True, timeout=5 for W+S seconds (only the last S
        counted) -> writes_per_s, p50_ms, p99_ms, errors
  {"cmd": "writer"}                                    -> start one thread that commits whenever this node
                                                          leads, recording (sent, acked) monotonic times
  {"cmd": "first_ack_after", "t": T}                   -> the first ack of a write sent after T (or null)
  {"cmd": "quit"}
The password comes from the environment (RAW_SYNCOBJ_PASSWORD), not argv, so `ps` does not show it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import SyncObjException


class Store(SyncObjConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}

    @replicated
    def apply(self, entry: bytes) -> int:
        e = msgpack.unpackb(entry, raw=False)
        self.data[e["args"]["name"]] = e
        return len(self.data)


def make_entry(i: int, tid: int) -> bytes:
    """As big as orca's scale entry: op, now, args, idempotency key, actor."""
    return msgpack.packb(
        {
            "op": "scale",
            "now": time.time(),
            "args": {"name": f"bench-{tid}", "replicas": i % 10 + 1},
            "key": f"bench:{os.urandom(16).hex()}",
            "actor": "bench",
        },
        use_bin_type=True,
    )


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    rank = max(1, min(len(values), int(-(-q * len(values) // 100))))
    return round(values[rank - 1] * 1000, 2)


class Node:
    def __init__(
        self,
        addr: str,
        peers: list[str],
        data_dir: Path,
        password: str,
        connection_timeout: float = 1.0,
        connection_retry: float = 0.5,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = SyncObjConf(
            password=password,
            bindAddress=addr,
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=str(data_dir / "raft.dump"),
            appendEntriesUseBatch=False,
            raftMinTimeout=0.2,
            raftMaxTimeout=0.5,
            appendEntriesPeriod=0.05,
            leaderFallbackTimeout=1.0,
            connectionRetryTime=connection_retry,  # orca: 0.5
            connectionTimeout=connection_timeout,  # orca: max(1.0, 2 * raftMaxTimeout)
            logCompactionMinEntries=5000,
            logCompactionMinTime=300.0,
            commandsWaitLeader=False,
            dynamicMembershipChange=False,
        )
        self.addr = addr
        self.store = Store()
        self.sync = SyncObj(addr, sorted(peers), conf=conf, consumers=[self.store])
        self.acks: collections.deque[tuple[float, float]] = collections.deque(maxlen=200_000)
        self.stop = threading.Event()
        self.writer_thread: threading.Thread | None = None

    def status(self) -> dict[str, Any]:
        leader = self.sync._getLeader()
        return {
            "addr": self.addr,
            "is_leader": bool(self.sync._isLeader()),
            "leader": None if leader is None else getattr(leader, "id", str(leader)),
            "ready": bool(self.sync.isReady()),
            "term": int(self.sync.raftCurrentTerm),
            "commit": int(self.sync.raftCommitIndex),
        }

    def load(self, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
        t_start = time.monotonic()
        t_measure = t_start + warmup
        t_end = t_measure + seconds
        lat: list[list[float]] = [[] for _ in range(clients)]
        errors = [0] * clients

        def worker(tid: int) -> None:
            i = 0
            while True:
                t0 = time.monotonic()
                if t0 >= t_end:
                    return
                i += 1
                try:
                    self.store.apply(make_entry(i, tid), sync=True, timeout=5)
                    ok = True
                except SyncObjException:
                    ok = False
                if t0 >= t_measure:
                    if ok:
                        lat[tid].append(time.monotonic() - t0)
                    else:
                        errors[tid] += 1

        cpu0 = time.process_time()
        threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(warmup + seconds + 10)
        cpu = time.process_time() - cpu0
        all_lat = [x for per in lat for x in per]
        return {
            "writes_per_s": round(len(all_lat) / seconds, 1),
            "p50_ms": pct(all_lat, 50),
            "p99_ms": pct(all_lat, 99),
            "errors": sum(errors),
            "writes": len(all_lat),
            "leader_cpu_pct": round(100 * cpu / (warmup + seconds), 1),
        }

    def start_writer(self) -> None:
        if self.writer_thread is not None:
            return

        def writer() -> None:
            i = 0
            while not self.stop.is_set():
                if not self.sync._isLeader():
                    time.sleep(0.001)
                    continue
                i += 1
                t0 = time.monotonic()
                try:
                    self.store.apply(make_entry(i, 0), sync=True, timeout=1.0)
                    self.acks.append((t0, time.monotonic()))
                except SyncObjException:
                    pass

        self.writer_thread = threading.Thread(target=writer, daemon=True)
        self.writer_thread.start()

    def first_ack_after(self, t: float) -> float | None:
        for sent, acked in list(self.acks):
            if sent > t:
                return acked
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--self", dest="addr", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument(
        "--connection-timeout",
        type=float,
        default=1.0,
        help="SyncObjConf.connectionTimeout (orca's is 1.0); for the failover diagnosis only",
    )
    ap.add_argument(
        "--connection-retry",
        type=float,
        default=0.5,
        help="SyncObjConf.connectionRetryTime (orca's is 0.5); for the failover diagnosis only",
    )
    args = ap.parse_args()
    password = os.environ.get("RAW_SYNCOBJ_PASSWORD") or "raw-bench-password"
    node = Node(
        args.addr,
        [p for p in args.peers.split(",") if p],
        Path(args.dir),
        password,
        args.connection_timeout,
        args.connection_retry,
    )
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            cmd = json.loads(line)
            name = cmd.get("cmd")
            if name == "status":
                reply = node.status()
            elif name == "load":
                reply = node.load(int(cmd["clients"]), float(cmd["seconds"]), float(cmd.get("warmup", 0.5)))
            elif name == "writer":
                node.start_writer()
                reply = {"writer": True}
            elif name == "first_ack_after":
                reply = {"t": node.first_ack_after(float(cmd["t"]))}
            elif name == "quit":
                print(json.dumps({"bye": True}), flush=True)
                break
            else:
                reply = {"error": f"unknown command {name!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        node.stop.set()
        node.sync.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
