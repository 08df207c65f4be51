"""The paths that must stay cheap at 10,000 services (issue 17's scale goal), checked for giving the same
answers as the straightforward code they replace:

- `orca.mesh.VipAllocator`: many VIPs in one deploy op, each the lowest free address, as repeated
  `allocate_vip` calls would give (a deploy of 500 new services used to parse every VIP in use per service,
  in the Raft thread);
- `_apply_deploy` groups the allocations once per op (it scanned every allocation per updated service);
- the scheduler loop leaves out a pass at a layout generation where the last pass was idle, and only then;
- `orca.master.traffic.SampleRing`: an idle service's samples take one record, not one object per sample;
- `RaftNode.read_unlocked` (the scheduling pass) gives the state at one layout generation, never a torn read.

Pure: a real state machine behind a stand-in for the Raft node (no cluster, no network).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import itertools
import sys
import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import mesh, spec
from orca.master.scheduling import SchedulerLoop, decide_cycle
from orca.master.traffic import SampleRing, ServiceSample, TrafficBook
from orca.raft import RaftNode, ReplicatedState
from orca.state.machine import apply, encode_entry, new_state

# --- VIPs -------------------------------------------------------------------------------------------------


def _lowest_free(net: ipaddress.IPv4Network, used: set[str]) -> str | None:
    """The rule, spelled out: the range's hosts but the first (the resolver), minus what is used."""
    for address in list(net.hosts())[1:]:
        if str(address) not in used:
            return str(address)
    return None


@settings(max_examples=150, deadline=None)
@given(prefix=st.integers(24, 29), taken=st.sets(st.integers(0, 255), max_size=80),
       junk=st.sets(st.sampled_from(["junk", "10.1.1.1", "", "10.50.7.01", "300.1.1.1"]), max_size=3),
       takes=st.integers(1, 12))
def test_allocator_takes_the_lowest_free_address_each_time(prefix: int, taken: set[int], junk: set[str],
                                                          takes: int) -> None:
    net = ipaddress.IPv4Network(f"10.50.7.0/{prefix}")
    used = {str(net.network_address + i) for i in taken if i < net.num_addresses} | junk
    allocator = mesh.VipAllocator(str(net), used)
    for _ in range(takes):
        want = _lowest_free(net, used)
        assert allocator.take() == want
        assert mesh.allocate_vip(str(net), used) == want
        if want is None:
            break
        used.add(want)


def test_a_full_range_gives_none_and_stays_full() -> None:
    allocator = mesh.VipAllocator("10.9.9.0/29", {f"10.9.9.{i}" for i in range(2, 6)})
    assert allocator.take() == "10.9.9.6"
    assert allocator.take() is None
    assert allocator.take() is None


# --- deploy at scale ----------------------------------------------------------------------------------------


def _entry(op: str, args: dict[str, Any], now: float = 1000.0) -> bytes:
    return encode_entry(op, args, now=now, key=None, actor="t")


def _items(names: list[str], **extra: Any) -> list[dict[str, Any]]:
    out = []
    for name in names:
        s = spec.validate_service({"name": name, "image": "img:1", **extra})
        out.append({"name": s["name"], "spec": s, "digest": spec.spec_digest(s)})
    return out


def test_one_deploy_of_many_new_services_hands_out_consecutive_vips() -> None:
    state = new_state()
    names = [f"s{i:04d}" for i in range(600)]
    vip_range = "10.9.0.0/22"
    assert "error" not in apply(state, _entry("deploy", {"services": _items(names[:100]), "vip_range": vip_range}), 1)
    del state["services"]["s0050"]  # a purged service's VIP is free again: the next new one takes it
    assert "error" not in apply(state, _entry("deploy", {"services": _items(names[100:]), "vip_range": vip_range}), 2)
    vips = [state["services"][n]["vip"] for n in names if n in state["services"]]
    assert len(set(vips)) == len(vips)
    assert state["services"]["s0100"]["vip"] == str(ipaddress.IPv4Address("10.9.0.2") + 50)
    assert state["services"]["s0101"]["vip"] == str(ipaddress.IPv4Address("10.9.0.2") + 100)
    assert state["services"]["s0599"]["vip"] == str(ipaddress.IPv4Address("10.9.0.2") + 598)


def test_a_redeploy_of_many_services_retags_each_ones_own_allocations() -> None:
    """The per-op grouping sees the same allocations the per-service scan did: a changed spec whose digest
    matches a running allocation re-tags that one (and only that service's), a canary needs running ones."""
    state = new_state()
    apply(state, _entry("deploy", {"services": _items(["a", "b", "c"], replicas=2)}), 1)
    first = {n: state["services"][n]["digest"] for n in "abc"}
    state["allocations"] = {
        f"{n}{i}": {"id": f"{n}{i}", "service": n, "version": 1, "node": "n1", "index": i, "desired": desired,
                    "digest": first[n], "observed": None, "created_at": 1.0}
        for n, desired in (("a", "run"), ("b", "run"), ("c", "stop")) for i in range(2)}
    apply(state, _entry("deploy", {"services": _items(["a", "b", "c"], replicas=2, env={"X": "1"})}), 2)
    apply(state, _entry("deploy", {"services": _items(["a", "c"], replicas=2)}), 3)  # back to version 1's spec
    apply(state, _entry("deploy", {"services": _items(["b", "c"], replicas=2, canary=1, env={"X": "2"})}), 4)
    assert state["services"]["a"]["version"] == 3
    assert {state["allocations"][f"a{i}"]["version"] for i in range(2)} == {3}  # same digest: re-tagged
    assert {state["allocations"][f"b{i}"]["version"] for i in range(2)} == {1}
    assert state["services"]["b"]["canary"] is not None  # b has running replicas: the new version is a canary
    assert state["services"]["c"]["canary"] is None  # c's are all stopping: it simply becomes current


# --- the scheduler's idle passes ------------------------------------------------------------------------------


class _FakeRaft:
    """The parts of orca.raft.RaftNode the scheduler loop uses, over a real ReplicatedState."""

    def __init__(self) -> None:
        self.store = ReplicatedState()
        self.is_leader, self.term = True, 2
        self.reads = 0
        self.ids = itertools.count()
        self.proposed: list[str] = []

    def read(self, fn: Any) -> Any:
        self.reads += 1
        with self.store.lock:
            return fn(self.store.state)

    def read_unlocked(self, fn: Any, attempts: int = 3) -> tuple[int, Any]:
        self.reads += 1
        return RaftNode.read_unlocked(self, fn, attempts)  # type: ignore[arg-type]  # it uses only .store

    def apply(self, op: str, args: dict[str, Any], now: float = 1000.0) -> dict[str, Any]:
        result = self.store.apply(encode_entry(op, args, now=now), _doApply=True)
        assert "error" not in result, result
        return result

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.proposed.append(op)
        return self.apply(op, copy.deepcopy(args))["result"]


def _cluster() -> _FakeRaft:
    raft = _FakeRaft()
    raft.apply("leader_elected", {"term": 2, "node": "m1"})
    for n in ("n1", "n2"):
        raft.apply("register_node", {"node_id": n, "address": f"http://127.0.0.1:1/{n}", "labels": {},
                                     "capacity": {"memory": 2**34, "cpu": 64.0}, "push_token": "p",
                                     "agent_version": "1"})
    return raft


def _cycle(loop: SchedulerLoop) -> None:
    asyncio.run(loop.cycle())


def test_an_idle_pass_is_not_repeated_until_the_layout_generation_moves() -> None:
    raft = _cluster()
    raft.apply("deploy", {"services": _items(["web"], replicas=2)})
    loop = SchedulerLoop(raft)  # type: ignore[arg-type]
    loop.term = 2
    _cycle(loop)  # places both replicas, then an idle pass
    assert raft.proposed == ["plan"] and loop.placements_total == 2
    assert loop.idle_generation == raft.store.layout_generation
    reads = raft.reads
    for _ in range(3):
        _cycle(loop)
    assert raft.reads == reads and loop.skipped == 3  # nothing it reads changed: no pass, no lock
    raft.apply("node_reports", {"term": 2, "nodes": {"n1": {"renewed_at": 1001.0}}})  # a lease renewal only
    _cycle(loop)
    assert raft.reads == reads
    raft.apply("scale", {"name": "web", "replicas": 3})  # anything else moves the generation: a pass again
    _cycle(loop)
    assert raft.reads > reads and loop.placements_total == 3 and raft.proposed == ["plan", "plan"]
    loop.idle_until = 0.0  # the trusted time is over: a pass at the same generation again
    reads = raft.reads
    _cycle(loop)
    assert raft.reads == reads + 1 and raft.proposed == ["plan", "plan"]
    loop.on_enable()  # a new term starts with a pass
    _cycle(loop)
    assert raft.reads == reads + 2


def test_a_pass_the_clock_can_change_is_never_skipped() -> None:
    """A rolling update waits for min_healthy_s with no entry to mark the moment: not idle."""
    raft = _cluster()
    raft.apply("deploy", {"services": _items(["web"], replicas=1)})
    loop = SchedulerLoop(raft)  # type: ignore[arg-type]
    loop.term = 2
    _cycle(loop)
    raft.apply("deploy", {"services": _items(["web"], replicas=1, env={"V": "2"})})  # version 2: rolling
    _cycle(loop)
    assert loop.idle_generation is None
    reads = raft.reads
    _cycle(loop)
    assert raft.reads > reads
    c = raft.read(lambda s: decide_cycle(s, 2000.0))
    assert c.timed and not c.is_idle()


# --- traffic samples ------------------------------------------------------------------------------------------


def _sample(at: float, replicas: int, rps: float) -> ServiceSample:
    if rps == 0:  # quiet: nothing observed
        return ServiceSample(at=at, replicas=replicas, rps=0.0, error_rate=0.0, p95_ms=None, active=0, cpu_pct=None,
                             mem_pct=None)
    return ServiceSample(at=at, replicas=replicas, rps=rps, error_rate=0.0, p95_ms=5.0, active=1, cpu_pct=1.0,
                         mem_pct=2.0, replica_rps={"a": rps})


@settings(max_examples=200, deadline=None)
@given(maxlen=st.integers(1, 12),
       seq=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.0, 0.0, 3.5])), max_size=60),
       n=st.integers(0, 20))
def test_a_sample_ring_reads_like_a_bounded_deque(maxlen: int, seq: list[tuple[int, float]], n: int) -> None:
    """Same samples as deque(maxlen), oldest first, at exact times when the period is exact (a run keeps
    only its first and last time)."""
    ring, plain = SampleRing(maxlen), deque(maxlen=maxlen)
    for i, (replicas, rps) in enumerate(seq):
        s = _sample(100.0 + 2 * i, replicas, rps)
        ring.append(s)
        plain.append(s)
        assert len(ring) == len(plain)
        assert ring.last() == plain[-1]
        assert ring.records() <= len(plain)
    assert ring.tail(n) == (list(plain)[-n:] if n else [])


def test_idle_services_keep_one_record_however_long_they_are_sampled() -> None:
    book = TrafficBook(sample_s=2.0, keep_s=3600.0)
    state = {"services": {f"s{i}": {"state": "running"} for i in range(50)}, "allocations": {}, "nodes": {}}
    for k in range(400):
        book.sample(state, now=1000.0 + 2 * k)
    assert all(len(r) == 399 and r.records() == 1 for r in book.samples.values())
    assert book.history("s7", 3) == [_sample(1000.0 + 2 * k, 0, 0.0) for k in (397, 398, 399)]
    assert book.current("s7") == _sample(1798.0, 0, 0.0)
    small = TrafficBook(sample_s=2.0, keep_s=20.0)  # the window bounds the samples, not the records alone
    for k in range(100):
        small.sample(state, now=1000.0 + 2 * k)
    assert len(small.samples["s1"]) == 10 and small.history("s1", 100)[0].at == 1000.0 + 2 * 90


def test_running_counts_are_made_once_per_layout_generation() -> None:
    book = TrafficBook(sample_s=2.0)
    running = {"status": "running"}
    state = {"services": {"web": {"state": "running"}}, "nodes": {},
             "allocations": {"a": {"id": "a", "service": "web", "desired": "run", "observed": running}}}
    book.sample(state, now=100.0, generation=7)
    book.sample(state, now=102.0, generation=7)
    assert book.current("web").replicas == 1
    state["allocations"]["b"] = {"id": "b", "service": "web", "desired": "run", "observed": running}
    book.sample(state, now=104.0, generation=8)  # an applied entry moves the generation: counted again
    assert book.current("web").replicas == 2
    book.clear()  # a new term: nothing kept from before
    state["allocations"].pop("a")
    book.sample(state, now=106.0, generation=8)
    assert book.current("web").replicas == 1


# --- reads without the state lock -----------------------------------------------------------------------------


def _layout(state: dict[str, Any]) -> tuple[Any, ...]:
    """A read that walks every allocation (it raises if one is added meanwhile, as a torn read may)."""
    return tuple(sorted((a["id"], a["desired"], a["node"]) for a in state["allocations"].values())) + (
        tuple(sorted((n, s["replicas"]) for n, s in state["services"].items())),)


def test_an_unlocked_read_is_the_state_at_one_generation_while_entries_apply() -> None:
    """A writer thread applies plans, scales and lease renewals as fast as it can; every unlocked read
    returns what the same read gives under the lock at the generation it reports."""
    raft = _cluster()
    raft.apply("deploy", {"services": _items([f"s{i}" for i in range(20)], replicas=1)})
    expected: dict[int, tuple[Any, ...]] = {}
    with raft.store.lock:
        expected[raft.store.layout_generation] = _layout(raft.store.state)
    stop = threading.Event()

    def writer() -> None:
        for k in range(1500):
            if stop.is_set():
                return
            with raft.store.lock:  # reentrant: the entry applies inside, and the expected read sees the same moment
                if k % 3 == 0:
                    raft.apply("node_reports", {"term": 2, "nodes": {"n1": {"renewed_at": 1000.0 + k}}})
                elif k % 3 == 1:
                    raft.apply("plan", {"term": 2, "place": [{"alloc_id": f"x{k:05d}", "service": f"s{k % 20}",
                                                              "version": 1, "node": "n2", "index": 1 + k}],
                                        "stop": [], "pending": {}})
                else:
                    raft.apply("scale", {"name": f"s{k % 20}", "replicas": 1 + k % 7})
                expected[raft.store.layout_generation] = _layout(raft.store.state)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads inside the read, again and again
    thread = threading.Thread(target=writer, daemon=True)
    try:
        thread.start()
        reads = []
        while thread.is_alive() and len(reads) < 100_000:  # reads all the while the writer writes
            reads.append(RaftNode.read_unlocked(raft, _layout))  # type: ignore[arg-type]
    finally:
        stop.set()
        thread.join(30)
        sys.setswitchinterval(previous)
    for generation, value in reads:
        assert value == expected[generation]
    assert len({generation for generation, _ in reads}) > 1  # it read while the state moved


def test_an_unlocked_read_falls_back_to_the_lock_when_entries_never_stop() -> None:
    raft = _cluster()
    raft.store.applying = True  # an entry is always being applied
    generation, value = RaftNode.read_unlocked(raft, lambda s: len(s["nodes"]), attempts=2)  # type: ignore[arg-type]
    assert (generation, value) == (raft.store.layout_generation, 2)
    raft.store.applying = False
    with pytest.raises(KeyError):  # a read that fails on a state nobody changed is a real error
        RaftNode.read_unlocked(raft, lambda s: s["no such table"])  # type: ignore[arg-type]


# --- bounded node_reports entries -------------------------------------------------------------------------------


def test_a_burst_of_changed_reports_is_spread_over_bounded_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node's lease renews in the first entry; the reports past the bound follow in the next ones,
    at once (the book stays marked changed), until the state has them all."""
    from orca.master import leases

    monkeypatch.setattr(leases, "MAX_REPORTED_ALLOCS", 5)
    raft = _cluster()
    raft.apply("deploy", {"services": _items(["web"], replicas=8)})
    c = raft.read(lambda s: decide_cycle(s, 2000.0, new_id=lambda: f"a{next(raft.ids):05d}"))
    raft.apply("plan", {"term": 2, "place": c.place, "stop": c.stop, "pending": c.pending})
    monitor = leases.LeaseMonitor(raft, leases.HeartbeatBook(), heartbeat_s=1.0, ttl_s=10.0)  # type: ignore[arg-type]
    monitor.term = 2
    for node in ("n1", "n2"):
        mine = raft.read(lambda s, node=node: sorted(a["id"] for a in s["allocations"].values() if a["node"] == node))
        assert len(mine) == 4
        monitor.book.record({"node_id": node, "allocations": [
            {"alloc": a, "service": "web", "version": 1, "container_id": f"c-{a}", "status": "running", "health": None,
             "started_at": None, "restarts": 0, "reason": None, "host_port": None, "exit_code": None} for a in mine]})
        monitor.book.received_at[node] = 1500.0
    monitor.book.changed = False
    entries: list[dict[str, Any]] = []
    real_propose = raft.propose

    async def propose(op: str, args: dict[str, Any]) -> dict[str, Any]:
        entries.append(copy.deepcopy(args["nodes"]))
        return await real_propose(op, args)

    raft.propose = propose  # type: ignore[method-assign]

    async def run() -> None:
        await monitor._commit_renewals()
        assert set(entries[0]) == {"n1", "n2"}  # both leases renew at once
        assert len(entries[0]["n1"]["allocs"]) == 4 and entries[0]["n2"]["allocs"] is None
        assert monitor.book.dirty == {"n2"} and monitor.book.changed
        await monitor._commit_renewals()
        assert set(entries[1]) == {"n2"} and len(entries[1]["n2"]["allocs"]) == 4

    asyncio.run(run())
    observed = raft.read(lambda s: [(a.get("observed") or {}).get("status") for a in s["allocations"].values()])
    assert observed == ["running"] * 8
