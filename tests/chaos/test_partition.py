"""Nemesis: the leader partitioned away from both followers (network namespaces, iptables DROP).

While cut off, the old leader acknowledges nothing and answers 503 once its fallback time has passed;
the two followers elect a leader and accept writes quickly; after healing every master converges to
the same applied state, every acknowledged write is there once, and none of the writes sent to the
cut-off leader is.

Three kinds of client are measured, because they see different things: a probe that writes straight
to the majority's masters (no redirect: when does the majority take writes), and SDK clients that
follow 307s, knowing only the majority or all three masters (what an application sees).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from history import History, Op, applied_counts, check, diverged
from workload import EventCounter, Writers, health, http_json, read_back, wait_caught_up

if TYPE_CHECKING:
    from conftest import NetnsCluster

pytestmark = [pytest.mark.chaos]

PARTITION_S = 6.0
LEADER_FALLBACK_S = 1.0      # raft.tuning defaults (config.example.toml)
WRITE_TIMEOUT_S = 3.0
MAJORITY_LIMIT_S = 2.0       # the goal; measured 0.75-1.02 s on the shared 2-core box


@dataclass
class MinorityProbe:
    """Sends a write straight to the cut-off leader (no redirect, no other master) every `period_s`, each
    in its own thread so that a hanging request does not delay the next, and records
    (sent, answered, status, code) for each; a client-side timeout is status 0."""

    url: str
    token: str
    period_s: float = 0.2
    replies: list[tuple[float, float, int, str]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads.append(threading.Thread(target=self._run, name="minority-probe", daemon=True))
        self._threads[0].start()

    def stop(self) -> None:
        self._halt.set()
        deadline = time.monotonic() + WRITE_TIMEOUT_S + 5
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        for i in range(int(PARTITION_S / self.period_s) + 10):  # bounded: the partition lasts PARTITION_S
            if self._halt.is_set():
                return
            name = f"minority-{i}"
            self.names.append(name)
            t = threading.Thread(target=self._one, args=(name,), daemon=True)
            self._threads.append(t)
            t.start()
            self._halt.wait(self.period_s)

    def _one(self, name: str) -> None:
        spec = {"name": name, "image": "orca-test/busybox", "replicas": 0}
        sent = time.monotonic()
        try:
            status, _, body = http_json("POST", self.url + "/api/v1/deploy", token=self.token,
                                        body={"services": [spec]}, timeout=WRITE_TIMEOUT_S + 3,
                                        headers={"Idempotency-Key": uuid.uuid4().hex})
            code = body.get("code", "") if isinstance(body, dict) else ""
        except OSError as exc:
            status, code = 0, type(exc).__name__
        self.replies.append((sent, time.monotonic(), status, code))


def _max_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] without one of `times` in it."""
    points = [start, *sorted(t for t in times if start < t < end), end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


@dataclass
class DirectProbe:
    """Writes to each of `urls` in turn without following redirects (a 307 or 503 is not an
    acknowledgement), recording every write in `history` under process "direct", scope "d"."""

    urls: list[str]
    token: str
    history: History
    period_s: float = 0.05
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="direct-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        i = 0
        while not self._halt.is_set() and i < 2000:
            url = self.urls[i % len(self.urls)]
            name = f"d-{i}"
            op = self.history.invoke("direct", "write", name, scope="d")
            spec = {"name": name, "project": "d", "image": "orca-test/busybox", "replicas": 0}
            try:
                status, _, body = http_json("POST", url + "/api/v1/deploy", token=self.token, timeout=1.0,
                                            body={"services": [spec]}, headers={"Idempotency-Key": f"chaos-{name}"})
            except OSError as exc:
                self.history.unknown(op, type(exc).__name__)
            else:
                if 200 <= status < 300:
                    self.history.ok(op, served_by=url)
                elif status == 307:  # a follower that refuses to write applies nothing
                    self.history.fail(op, "307 NOT_LEADER")
                else:
                    self.history.unknown(op, f"{status} {(body or {}).get('code')}")
            i += 1
            self._halt.wait(self.period_s)


def test_partitioned_leader_acknowledges_nothing_and_the_majority_moves_on(netns_cluster: NetnsCluster) -> None:
    nc = netns_cluster
    old = nc.wait_leader()
    followers = [m for m in nc.masters if m is not old]
    urls = [m.url for m in nc.masters]
    token = nc.token()
    history = History()
    # SDK clients that know every master (and so first try the cut-off one)...
    writers = Writers(urls, [nc.token("admin", f"chaos-{i}") for i in range(2)], history, prefix="p", rate=10.0)
    # ...an SDK client that knows only the majority (a follower may still redirect it to the old leader)...
    majority = Writers([f.url for f in followers], [nc.token("admin", "majority")], history, prefix="q",
                       rate=20.0, read_every=0)
    # ...and a probe that never follows a redirect.
    direct = DirectProbe([f.url for f in followers], nc.token("admin", "direct"), history)
    counter = EventCounter(urls, nc.token("viewer", "events"), prefix=("p", "q", "d"))
    minority = MinorityProbe(old.url, token)
    counter.start()
    writers.start()
    try:
        time.sleep(1.0)
        term_before = int(health(old.url)["term"])
        # Times are measured from the moment the first rule goes in (conservative for the majority's
        # figures); "after the partition" for acknowledgements means after the last one is in.
        partition_begin = time.monotonic()
        nc.partition(old)
        partitioned_at = time.monotonic()
        minority.start()
        majority.start()
        direct.start()
        elected_s = None
        while time.monotonic() - partition_begin < PARTITION_S:
            if elected_s is None and any((health(f.url, timeout=0.5) or {}).get("is_leader") for f in followers):
                elected_s = time.monotonic() - partition_begin
            time.sleep(0.02)
        new = nc.wait_leader(timeout=5, among=followers)
        # A consistent read is refused by the cut-off master too (it no longer claims to lead).
        status, _, body = http_json("GET", old.url + "/api/v1/status?consistent=true", token=token, timeout=5)
        minority_read = (status, (body or {}).get("code"))
        cut_off_view = health(old.url) or {}
        minority.stop()
        direct.stop()
        healed_at = time.monotonic()
        nc.heal(old)
        leader_after_heal = nc.wait_leader(timeout=20)
        agreed_s = time.monotonic() - healed_at
        try:
            caught_up_s: float | None = wait_caught_up(old.url, [f.url for f in followers], timeout_s=10)
            stuck = None
        except TimeoutError as exc:
            caught_up_s, stuck = None, str(exc)
        term_after = max(int((health(m.url) or {}).get("term", 0)) for m in nc.masters)
        time.sleep(1.0)
        done_at = time.monotonic()
    finally:
        minority.stop()
        direct.stop()
        majority.stop()
        writers.stop()
        counter.stop()

    def first_ack(match: Callable[[Op], bool]) -> float | None:
        """Seconds from the partition to the first write acknowledged by a master of the majority."""
        times = [o.complete for o in history.writes("ok") if match(o) and o.complete is not None
                 and o.complete > partition_begin and o.meta.get("served_by") != old.url]
        return round(min(times) - partition_begin, 3) if times else None

    replies = sorted(minority.replies)
    acked = [r for r in replies if 200 <= r[2] < 300]
    prompt = [r for r in replies if r[2] == 503 and r[1] - r[0] < 0.5]
    stepped_down_s = prompt[0][0] - partition_begin if prompt else None
    slowest = max((r[1] - r[0] for r in replies), default=0.0)
    direct_s = first_ack(lambda o: o.process == "direct")
    majority_sdk_s = first_ack(lambda o: o.scope == "q0")
    all_sdk_s = first_ack(lambda o: o.scope in ("p0", "p1"))
    ack_times = [o.complete for o in history.writes("ok") if o.complete is not None]
    heal_stall = _max_gap(ack_times, healed_at, done_at)

    def r3(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    print(f"\npartition of leader {old.node_id} (term {term_before}) for {PARTITION_S:g} s (rules in after "
          f"{partitioned_at - partition_begin:.3f} s):\n"
          f"  majority: {new.node_id} elected after {r3(elected_s)} s; first write acknowledged after {direct_s} s "
          f"when sent straight to the majority (limit {MAJORITY_LIMIT_S:g} s); SDK clients: {majority_sdk_s} s "
          f"knowing only the majority, {all_sdk_s} s knowing all three masters\n"
          f"  cut-off master: {len(replies)} writes, statuses {sorted({r[2] for r in replies})}, answers at "
          f"once from {r3(stepped_down_s)} s on, slowest answer {slowest:.3f} s; ended as {cut_off_view.get('state')} "
          f"in term {cut_off_view.get('term')}; consistent read {minority_read}\n"
          f"  heal: leader {leader_after_heal.node_id} agreed after {agreed_s:.3f} s, term {term_after}, longest "
          f"stretch without an acknowledged write {heal_stall:.3f} s; old leader caught up after "
          f"{r3(caught_up_s)} s" + (f" -- STUCK: {stuck}" if stuck else ""))

    assert not acked, f"the cut-off leader acknowledged writes: {acked}"
    via_sdk = [o.key for o in history.writes("ok") if o.meta.get("served_by") == old.url and o.invoke > partitioned_at]
    assert not via_sdk, f"the cut-off leader acknowledged SDK writes sent after the partition: {via_sdk}"
    assert replies and all(r[2] == 503 and r[3] == "CLUSTER_NOT_READY" for r in replies), replies
    assert slowest <= WRITE_TIMEOUT_S + 1.0, slowest
    # Once its fallback time has passed it knows it does not lead, and refuses at once.
    assert stepped_down_s is not None and stepped_down_s <= LEADER_FALLBACK_S + 1.0, stepped_down_s
    assert all(r[1] - r[0] < 0.5 for r in replies if r[0] - partitioned_at > LEADER_FALLBACK_S + 1.0), replies
    assert minority_read == (503, "CLUSTER_NOT_READY")
    assert direct_s is not None and direct_s <= MAJORITY_LIMIT_S, direct_s
    assert all_sdk_s is not None and all_sdk_s <= 10, all_sdk_s

    # What was acknowledged is judged on the majority, which holds the committed log whatever the old
    # leader's fate; then every master must have converged to it.
    majority_urls = {m.node_id: m.url for m in followers}
    rb = read_back(majority_urls if stuck else {m.node_id: m.url for m in nc.masters}, token, "", timeout_s=30)
    assert rb.converged, (diverged(rb.views), rb.applied)
    assert diverged({"consistent": {s["name"]: int(s["version"]) for s in rb.consistent}, **rb.views}) == []
    consistent_names = {s["name"] for s in rb.consistent}
    assert not consistent_names & set(minority.names), sorted(consistent_names & set(minority.names))
    ours = [s for s in rb.consistent if s["name"].startswith(("p", "q", "d-"))]
    verdict = check(history, applied_counts(ours, counter.counts))
    print(f"  verdict: {verdict}; applied index: {rb.applied}")
    assert verdict.ok, str(verdict)
    assert verdict.acked > 0
    # PySyncObj 0.3.17 livelocked here (the healed old leader never caught up: several in-flight append
    # batches, each rejection resetting the leader's next index forward again); orca.raft._SyncObj fixes
    # it, and this asserts the fix holds.
    assert not stuck, f"healed old leader never caught up: {stuck}"
