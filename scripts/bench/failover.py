"""Benchmark failover: kill -9 of the leader -> the first acknowledged API write via any master.

Prints one JSON line. A local three-master cluster (real `orca server` processes, default tuning) and
one service `bench`; a writer thread loops `Client([every master URL], token).scale("bench", k)` (the
SDK: it follows 307s, moves on from dead or not-ready masters with its own backoff, and retries with
the same Idempotency-Key). Each round: find the leader, let writes flow for `--settle` seconds, SIGKILL
the leader, and measure the time from the kill to the first acknowledged write whose call started after
the kill. Then restart the killed master, wait until it is healthy and the cluster agrees on a leader,
and go on.

After the leader rounds, `--follower-restarts` times: kill -9 a follower, restart it, let it settle. No
election is needed for either, so any term increase while a killed master rejoins is a spurious election
(it deposed a working leader, even if the same master wins again).

Besides the SDK figure (`failover_s`), each round records from a health monitor (every master's
`/api/v1/health` every `--poll` s) when a surviving master first reported itself leader (`elected_s`,
resolution = the poll period), so the election and the client's part of the failover can be told
apart. `failover_term_increase` is the leader's term change per forced failover (1 is a clean election;
2+ means lost or split votes); `rejoin_term_increase` and `follower_restart_term_increase` should be all 0.
`leader_changes` counts the distinct (term, leader) pairs the monitor saw.

Baseline in the same run (unless --no-raw): three raw PySyncObj processes with orca's SyncObjConf, each
running a writer that commits whenever it leads; kill -9 the leader -> first commit (sent after the kill)
on the new leader. No HTTP and no leader discovery: that is the floor the API can approach. A second raw
run changes only connectionTimeout and connectionRetryTime (see `main`), to show what they cost.

    .venv/bin/python scripts/bench/failover.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RawCluster, box_load, emit, install_sigterm  # noqa: E402

from orca.client import ApiError, Client  # noqa: E402
from orca.devcluster import LocalCluster, MasterProc  # noqa: E402

BASELINE_NOTE = "measured before tuning: PySyncObj defaults 2.0 s median; etcd 3.4 on this box 2.0 s"


def stats(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"median": None, "max": None, "min": None}
    return {
        "median": round(statistics.median(samples), 3),
        "max": round(max(samples), 3),
        "min": round(min(samples), 3),
    }


class Writer(threading.Thread):
    """Continuous scale writes through the SDK; records (started, acknowledged) monotonic times."""

    def __init__(self, urls: list[str], token: str, deadline: float, backoff_s: float | None = None) -> None:
        super().__init__(daemon=True)
        extra = {} if backoff_s is None else {"backoff_s": backoff_s}
        self.client = Client(urls, token, timeout=5.0, **extra)
        self.deadline = deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acks: list[tuple[float, float]] = []
        self.errors: dict[str, int] = {}
        self.calls = 0

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                i += 1
                t0 = time.monotonic()
                try:
                    self.client.scale("bench", i % 10 + 1)
                except ApiError as err:
                    with self.lock:
                        self.errors[err.code] = self.errors.get(err.code, 0) + 1
                    continue
                t1 = time.monotonic()
                with self.lock:
                    self.calls += 1
                    self.acks.append((t0, t1))
                    if len(self.acks) > 100_000:
                        del self.acks[:50_000]
        finally:
            self.client.close()

    def first_ack_after(self, t: float) -> float | None:
        with self.lock:
            for started, acked in self.acks:
                if started > t:
                    return acked
        return None

    def acks_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for started, _ in self.acks if started > t)


class Monitor(threading.Thread):
    """Polls every live master's /api/v1/health; records (time, node, term, leader_id, is_leader)."""

    def __init__(self, cluster: LocalCluster, period: float, deadline: float) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.period = period
        self.deadline = deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples: list[tuple[float, str, int, str | None, bool]] = []

    def _health(self, m: MasterProc) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(m.url + "/api/v1/health", timeout=0.5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            t = time.monotonic()
            for m in list(self.cluster.masters):
                if not m.alive:
                    continue
                h = self._health(m)
                if h is not None:
                    with self.lock:
                        self.samples.append(
                            (
                                time.monotonic(),
                                m.node_id,
                                int(h.get("term", 0)),
                                h.get("leader_id"),
                                bool(h.get("is_leader")),
                            )
                        )
            self.stop.wait(max(0.0, self.period - (time.monotonic() - t)))

    def first_leader_after(self, t: float, exclude: str) -> float | None:
        with self.lock:
            for ts, node, _term, _leader, is_leader in self.samples:
                if ts > t and is_leader and node != exclude:
                    return ts
        return None

    def leaderships(self) -> list[tuple[int, str]]:
        """Distinct (term, leader) pairs in the order the monitor first saw them."""
        seen: list[tuple[int, str]] = []
        with self.lock:
            for _ts, node, term, _leader, is_leader in self.samples:
                if is_leader and (term, node) not in seen:
                    seen.append((term, node))
        return seen

    def terms(self) -> tuple[int, int] | None:
        with self.lock:
            if not self.samples:
                return None
            return min(s[2] for s in self.samples), max(s[2] for s in self.samples)


def wait_healthy(cluster: LocalCluster, m: MasterProc, timeout: float) -> None:
    """The restarted master answers health, knows the leader and has applied what the leader committed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = cluster.health(m, timeout=0.5)
        if h and h.get("leader_id") and h.get("cluster_ready"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{m.node_id} not healthy within {timeout} s after its restart; log {m.log}")


def _get(m: MasterProc, path: str, token: str) -> Any:
    req = urllib.request.Request(m.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def check_converged(cluster: LocalCluster, token: str, timeout: float = 15.0) -> dict[str, Any]:
    """With writes stopped: every master applies the same index, then serves the same events and service.

    The event ring (last 1000 events, each with the sequence number the state machine gave it) changes
    with every applied entry, so a master that skipped, repeated or replaced an entry shows up here.
    """
    deadline = time.monotonic() + timeout
    applied: dict[str, Any] = {}
    while time.monotonic() < deadline:
        views = {m.node_id: cluster.health(m) for m in cluster.masters}
        applied = {k: (v or {}).get("applied_index") for k, v in views.items()}
        commits = {(v or {}).get("commit_index") for v in views.values()}
        if None not in applied.values() and len(set(applied.values())) == 1 and len(commits) == 1:
            break
        time.sleep(0.2)
    else:
        return {"converged": False, "reason": "applied indexes differ", "applied_index": applied}
    events = {m.node_id: _get(m, "/api/v1/events?limit=1000", token)["events"] for m in cluster.masters}
    services = {m.node_id: _get(m, "/api/v1/services/bench", token) for m in cluster.masters}
    same_events = len({json.dumps(e, sort_keys=True) for e in events.values()}) == 1
    same_service = len({json.dumps(v, sort_keys=True) for v in services.values()}) == 1
    out: dict[str, Any] = {"converged": same_events and same_service, "applied_index": next(iter(applied.values()))}
    if not out["converged"]:
        out["last_event_seq"] = {k: (v[-1]["seq"] if v else None) for k, v in events.items()}
        out["replicas"] = {k: v.get("replicas") for k, v in services.items()}
    return out


def truncation_warnings(cluster: LocalCluster) -> dict[str, int]:
    """PySyncObj's CRITICAL "truncating already-applied log entries" lines, per master log."""
    out = {}
    for m in cluster.masters:
        try:
            out[m.node_id] = m.log.read_text(errors="replace").count("truncating already-applied log entries")
        except OSError:
            out[m.node_id] = -1
    return out


def _term(cluster: LocalCluster, m: MasterProc) -> int | None:
    h = cluster.health(m, timeout=1.0)
    return None if h is None else int(h.get("term", 0))


def orca_failover(
    root: Path, rounds: int, settle: float, poll: float, backoff_s: float | None = None, follower_restarts: int = 0
) -> dict[str, Any]:
    """Leader kills (and restarts), then follower kills (and restarts), all under the writer's load.

    Terms are read from the leader at three points of every round: before the kill, once the new leader is
    known, and after the killed master is back and the cluster has settled. An increase in that last phase
    means the established leader was deposed without anyone being killed: a spurious election.
    """
    budget = time.monotonic() + 60 + (rounds + follower_restarts) * 40  # every loop below is bounded by this too
    with LocalCluster(root) as cluster:
        cluster.start()
        cluster.wait_leader(30)
        token = cluster.token("admin", "bench")
        urls = [m.url for m in cluster.masters]
        with Client(urls, token) as client:
            client.deploy([{"name": "bench", "image": "orca-test/busybox", "replicas": 1}])
        monitor = Monitor(cluster, poll, budget)
        writer = Writer(urls, token, budget, backoff_s)
        monitor.start()
        writer.start()
        samples: list[float | None] = []
        elected: list[float | None] = []
        killed: list[str] = []
        failover_terms: list[int | None] = []  # term increase from the kill to the new leader
        steady_terms: list[int | None] = []  # term increase while the restarted master rejoins (should be 0)
        follower_terms: list[int | None] = []  # term increase across a follower's kill + restart (should be 0)
        try:
            leader = cluster.wait_leader(20)
            for _ in range(rounds):
                t_settle = time.monotonic()
                time.sleep(settle)
                if writer.acks_since(t_settle) == 0:
                    raise RuntimeError(f"no write acknowledged in {settle} s of steady state; logs in {root}")
                term_before = _term(cluster, leader)
                t_kill = time.monotonic()
                cluster.kill(leader)  # SIGKILL, then reap
                killed.append(leader.node_id)
                ack = None
                wait_until = min(budget, t_kill + 20)
                while ack is None and time.monotonic() < wait_until:
                    time.sleep(0.01)
                    ack = writer.first_ack_after(t_kill)
                samples.append(None if ack is None else ack - t_kill)
                t_lead = monitor.first_leader_after(t_kill, exclude=leader.node_id)
                elected.append(None if t_lead is None else t_lead - t_kill)
                new_leader = cluster.wait_leader(20, exclude=leader.node_id)
                term_after = _term(cluster, new_leader)
                failover_terms.append(None if None in (term_before, term_after) else term_after - term_before)
                cluster.start([leader])
                wait_healthy(cluster, leader, 30)
                time.sleep(settle)  # a restart that disrupts the leader does so within ~1 s
                leader = cluster.wait_leader(20)
                term_settled = _term(cluster, leader)
                steady_terms.append(None if None in (term_after, term_settled) else term_settled - term_after)
            for _ in range(follower_restarts):
                leader = cluster.wait_leader(20)
                follower = next(m for m in cluster.masters if m is not leader)
                term_before = _term(cluster, leader)
                cluster.kill(follower)
                time.sleep(settle)
                cluster.start([follower])
                wait_healthy(cluster, follower, 30)
                time.sleep(settle)
                term_settled = _term(cluster, cluster.wait_leader(20))
                follower_terms.append(None if None in (term_before, term_settled) else term_settled - term_before)
        finally:
            writer.stop.set()
            monitor.stop.set()
            writer.join(15)
            monitor.join(5)
        convergence = check_converged(cluster, token)
        truncations = truncation_warnings(cluster)
        leaderships = monitor.leaderships()
        terms = monitor.terms()
        ok = [s for s in samples if s is not None]
        disrupted = sum(1 for d in steady_terms + follower_terms if d)
        out = {
            "rounds": rounds,
            "failover_s": stats(ok),
            "samples": [None if s is None else round(s, 3) for s in samples],
            "missed": sum(1 for s in samples if s is None),
            "elected_s": stats([e for e in elected if e is not None]),
            "elected_samples": [None if e is None else round(e, 3) for e in elected],
            # Leader depositions nobody forced: a term increase while no leader was being killed (the
            # monitor's leader_id view misses the ones the same master wins again).
            "spurious_elections": disrupted,
            "leader_changes": len(leaderships) - 1,
            "term_delta": None if terms is None else terms[1] - terms[0],
            "failover_term_increase": failover_terms,
            "rejoin_term_increase": steady_terms,
            "leaderships": [f"{t}:{n}" for t, n in leaderships],
            "killed": killed,
            "writes": writer.calls,
            "write_errors": writer.errors,
            "replicas_converged": convergence,
            "pysyncobj_truncated_applied_entries_warnings": truncations,
        }
        if follower_restarts:
            out["follower_restart_term_increase"] = follower_terms
        return out


def _raw_wait_all(raw: RawCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = raw.status()
        if len(views) == len(raw.nodes) and all(v["ready"] and v["leader"] for v in views.values()):
            return
        time.sleep(0.05)
    raise TimeoutError(f"raw PySyncObj cluster not back within {timeout} s")


def raw_failover(
    root: Path, rounds: int, settle: float, extra_args: list[str] | None = None, follower_restarts: int = 0
) -> dict[str, Any]:
    """The same rounds on raw PySyncObj: kill -9 the leader -> first commit sent after the kill."""
    samples: list[float | None] = []
    failover_terms: list[int] = []
    steady_terms: list[int] = []
    follower_terms: list[int] = []
    with RawCluster(root, extra_args=extra_args) as raw:
        raw.start()
        raw.wait_leader(30)
        for n in raw.nodes:
            n.call({"cmd": "writer"})
        leader = raw.wait_leader(20)
        for _ in range(rounds):
            time.sleep(settle)
            term_before = int(leader.call({"cmd": "status"})["term"])
            t_kill = time.monotonic()
            leader.kill()
            ack = None
            wait_until = t_kill + 20
            while ack is None and time.monotonic() < wait_until:
                time.sleep(0.02)
                for n in raw.nodes:
                    if n.alive:
                        t = n.call({"cmd": "first_ack_after", "t": t_kill})["t"]
                        if t is not None and (ack is None or t < ack):
                            ack = t
            samples.append(None if ack is None else ack - t_kill)
            term_after = int(raw.wait_leader(20).call({"cmd": "status"})["term"])
            failover_terms.append(term_after - term_before)
            leader.start()
            _raw_wait_all(raw, 30)
            leader.call({"cmd": "writer"})
            time.sleep(settle)
            leader = raw.wait_leader(20)
            steady_terms.append(int(leader.call({"cmd": "status"})["term"]) - term_after)
        for _ in range(follower_restarts):
            leader = raw.wait_leader(20)
            follower = next(n for n in raw.nodes if n is not leader)
            term_before = int(leader.call({"cmd": "status"})["term"])
            follower.kill()
            time.sleep(settle)
            follower.start()
            _raw_wait_all(raw, 30)
            follower.call({"cmd": "writer"})
            time.sleep(settle)
            follower_terms.append(int(raw.wait_leader(20).call({"cmd": "status"})["term"]) - term_before)
    ok = [s for s in samples if s is not None]
    out: dict[str, Any] = {
        "failover_s": stats(ok),
        "samples": [None if s is None else round(s, 3) for s in samples],
        "spurious_elections": sum(1 for d in steady_terms + follower_terms if d),
        "failover_term_increase": failover_terms,
        "rejoin_term_increase": steady_terms,
    }
    if follower_restarts:
        out["follower_restart_term_increase"] = follower_terms
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--settle", type=float, default=1.5, help="steady-state seconds before each kill")
    ap.add_argument("--poll", type=float, default=0.05, help="health monitor period, seconds")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw PySyncObj baselines")
    ap.add_argument(
        "--client-backoff",
        type=float,
        default=None,
        help="the SDK's first pause between passes over the masters (default: the SDK's own)",
    )
    ap.add_argument(
        "--follower-restarts",
        type=int,
        default=5,
        help="after the leader kills: kill -9 and restart a follower this many times (a healthy Raft keeps its term)",
    )
    args = ap.parse_args()
    if not 1 <= args.rounds <= 100 or not 0 <= args.follower_restarts <= 100:
        ap.error("--rounds must be 1..100 and --follower-restarts 0..100")
    install_sigterm()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orca-bench-failover-") as tmp:
        root = Path(tmp)
        res = orca_failover(
            root / "orca", args.rounds, args.settle, args.poll, args.client_backoff, args.follower_restarts
        )
        out: dict[str, Any] = {"bench": "failover", **res, "baseline": {"note": BASELINE_NOTE}}
        if not args.no_raw:
            out["baseline"]["raw_pysyncobj"] = raw_failover(
                root / "raw", args.rounds, args.settle, follower_restarts=args.follower_restarts
            )
            # Diagnosis, same run: orca's SyncObjConf with two connection settings changed.
            # - connectionTimeout 1.0 -> 1e6: PySyncObj drops a connection on which nothing was read for
            #   connectionTimeout at the next send, and that message is lost. Followers never talk to each
            #   other between elections, so the first RequestVote after the leader dies is lost and the
            #   election takes two rounds (failover_term_increase 2+ instead of 1).
            # - connectionRetryTime 0.5 -> 0.1: a restarted master must hear from the leader before its own
            #   election timeout (0.2-0.5 s) fires, or it campaigns with a higher term and deposes the leader
            #   (PySyncObj has no PreVote); the leader re-dials a restarted peer only every connectionRetryTime.
            out["baseline"]["raw_pysyncobj_conn_timeout_1e6_retry_0.1"] = raw_failover(
                root / "raw-fixed",
                args.rounds,
                args.settle,
                ["--connection-timeout", "1000000", "--connection-retry", "0.1"],
                follower_restarts=args.follower_restarts,
            )
    out["box"] = box_load(load0)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
