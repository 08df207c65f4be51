"""Attack tier: hostile traffic on the Raft ports of a running three-master cluster while clients write.

For `ATTACK_S` (60 s; ORCA_ATTACK_S shortens it for a local run) attacker threads in this process hit
every master's Raft port from 127.0.0.1, which is also the peers' address here (the worst case: an
attacker on a peer's host; from any other address the port closes at accept, also exercised):
oversized length prefixes followed by a byte stream, undecryptable garbage frames, 300 idle
connections kept open (re-opened as the masters close them), truncated frames, and connections from
127.0.0.2, a non-peer address. Meanwhile two clients write (each write retried with its Idempotency-Key
only on an error, which the test counts).

Asserted: no leader change (every master reports the same leader and term before, during and after),
no failed write attempt (no client error at all, every write acknowledged, the history checks out),
and each master's RSS grows by at most 20 MiB.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from history import History, applied_counts, check
from workload import Writers, health, read_back

from orca.devcluster import LocalCluster

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.attack]

ATTACK_S = float(os.environ.get("ORCA_ATTACK_S", "60"))
IDLE_CONNECTIONS = 300
RSS_GROWTH_MAX = 20 * 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _connect(port: int, source: str = "127.0.0.1", timeout: float = 2.0) -> socket.socket | None:
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        return None


class Attack:
    """Attacker threads; `counts` says what each one managed to send (so the test shows it attacked)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=fn, name=fn.__name__, daemon=True)
                        for fn in (self.oversized, self.garbage, self.truncated, self.idle, self.stranger)]

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def _stream(self, s: socket.socket, first: bytes, total: int, what: str) -> None:
        """Send `first`, then random bytes up to `total`, until the master closes the connection."""
        try:
            s.sendall(first)
            self._count(what)
            sent = 0
            chunk = os.urandom(64 * 1024)
            while sent < total and not self.stop.is_set():
                s.sendall(chunk)
                sent += len(chunk)
                self._count(f"{what} bytes", len(chunk))
        except OSError:
            pass
        finally:
            s.close()

    def oversized(self) -> None:
        """Per master, one connection that announces a huge (or negative) frame and then streams bytes
        for as long as the master reads them (upstream buffered it all, in the tick thread)."""
        prefixes = [0x7FFFFFFF, 64 * 1024 * 1024, -1]

        def one(port: int) -> None:
            while not self.stop.is_set():
                if (s := _connect(port)) is not None:
                    self._stream(s, struct.pack("i", random.choice(prefixes)), 1 << 40, "oversized")
                self.stop.wait(0.05)

        workers = [threading.Thread(target=one, args=(p,), daemon=True) for p in self.ports]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def garbage(self) -> None:
        while not self.stop.is_set():
            for port in self.ports:
                if (s := _connect(port)) is not None:
                    n = random.randint(16, 4000)
                    self._stream(s, struct.pack("i", n) + os.urandom(n), 256 * 1024, "garbage")
                if (s := _connect(port)) is not None:
                    self._stream(s, os.urandom(random.randint(1, 512)), 0, "garbage raw")
            self.stop.wait(0.05)

    def truncated(self) -> None:
        held: list[socket.socket] = []
        while not self.stop.is_set():
            for port in self.ports:
                if (s := _connect(port)) is not None:
                    try:
                        s.sendall(struct.pack("i", 2000) + os.urandom(random.randint(0, 1999)))
                        self._count("truncated")
                        held.append(s)
                    except OSError:
                        s.close()
            while len(held) > 30:
                held.pop(0).close()
            self.stop.wait(0.2)
        for s in held:
            s.close()

    def idle(self) -> None:
        """Keep IDLE_CONNECTIONS connections open (spread over the masters), re-opening closed ones."""
        held: list[tuple[socket.socket, int]] = []
        while not self.stop.is_set():
            alive = []
            for s, port in held:
                try:
                    s.setblocking(False)
                    closed = s.recv(1) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    s.close()
                    self._count("idle closed by master")
                else:
                    alive.append((s, port))
            held = alive
            i = 0
            while len(held) < IDLE_CONNECTIONS and not self.stop.is_set() and i < IDLE_CONNECTIONS:
                port = self.ports[i % len(self.ports)]
                i += 1
                if (s := _connect(port, timeout=0.5)) is not None:
                    held.append((s, port))
                    self._count("idle opened")
            self.stop.wait(0.5)
        for s, _ in held:
            s.close()

    def stranger(self) -> None:
        while not self.stop.is_set():
            for port in self.ports:
                if (s := _connect(port, source="127.0.0.2")) is not None:
                    self._stream(s, struct.pack("i", 0x7FFFFFFF), 256 * 1024, "non-peer")
            self.stop.wait(0.1)


def test_raft_port_attack_changes_no_leader_fails_no_write_and_bounds_memory(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader(timeout=30, all_up=True)
    urls = [m.url for m in cluster.masters]
    history = History()
    writers = Writers(urls, [cluster.token("admin", f"attack-{i}") for i in range(2)], history, prefix="atk",
                      rate=10.0)
    writers.start()
    time.sleep(3.0)  # warm-up: connections, caches, allocator arenas settle before the baseline
    before = {m.node_id: health(m.url) for m in cluster.masters}
    term = before[leader.node_id]["term"]
    assert {h["leader_id"] for h in before.values()} == {leader.node_id}
    rss0 = {m.node_id: _rss(m.proc.pid) for m in cluster.masters}
    attack = Attack([m.raft_port for m in cluster.masters])
    seen: set[tuple[str | None, int | None]] = set()
    attack.start()
    try:
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline:
            for m in cluster.masters:
                h = health(m.url)
                seen.add((h.get("leader_id"), h.get("term")) if h else ("unreachable", None))
            time.sleep(0.5)
    finally:
        attack.join()
        writers.stop()
    after = {m.node_id: health(m.url) for m in cluster.masters}
    rss1 = {m.node_id: _rss(m.proc.pid) for m in cluster.masters}
    growth = {k: (rss1[k] - rss0[k]) / 2**20 for k in rss0}
    print(f"\nattack {ATTACK_S:g} s: {attack.counts}\nRSS growth MiB: { {k: round(v, 1) for k, v in growth.items()} }"
          f"\nwriter errors: {writers.errors}; leader/term seen: {seen}")

    assert seen == {(leader.node_id, term)}, f"leader or term changed under attack: {seen}"
    assert all(h["leader_id"] == leader.node_id and h["term"] == term for h in after.values()), after
    assert writers.errors == {}, f"writes failed under attack: {writers.errors}"
    rb = read_back({m.node_id: m.url for m in cluster.masters}, cluster.token(), "atk")
    verdict = check(history, applied_counts(rb.consistent))
    assert verdict.ok and verdict.acked >= ATTACK_S * 2, str(verdict)
    assert all(h.outcome == "ok" for h in history.writes()), "a write was not acknowledged"
    assert max(growth.values()) * 2**20 <= RSS_GROWTH_MAX, growth
    assert attack.counts.get("oversized", 0) >= 3 and attack.counts.get("garbage", 0) > 10
    assert attack.counts.get("idle opened", 0) >= IDLE_CONNECTIONS and attack.counts.get("truncated", 0) > 10
