"""Leader loops isolate a bad report per node: garbage from one node (here injected straight into the
leader's memory, past the HTTP validation) never stops the leases, metrics or autoscaling of the others.

The lease test runs the real LeaseMonitor against a real one-member Raft group (PySyncObj on 127.0.0.1),
so the entries go through the real encoding and the real state machine.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from orca import spec
from orca.devcluster import free_ports
from orca.master.leases import HeartbeatBook, LeaseMonitor
from orca.master.traffic import TrafficBook
from orca.raft import RaftNode, RaftSettings
from orca.state.machine import new_state
from orca.state.ops_nodes import report_problem

GOOD_NODES = ("n1", "n2")
DROP = object()  # a key the report lacks


def report(alloc: str, **kw: Any) -> dict[str, Any]:
    return {"alloc": alloc, "service": "web", "version": 1, "container_id": "c", "status": "running",
            "health": None, "started_at": None, "restarts": 0, "reason": None, "host_port": None, **kw}


async def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def raft(tmp_path: Path) -> Any:
    port = free_ports(1)[0]
    node = RaftNode(RaftSettings(node_id="m1", listen=f"127.0.0.1:{port}", peers={}, data_dir=tmp_path / "raft",
                                 password="p" * 16), asyncio.get_running_loop())
    try:
        await wait_for(lambda: node.is_leader and node.ready)
        yield node
    finally:
        node.destroy()


@pytest.mark.parametrize("garbage", [
    {"restarts": 2**64}, {"restarts": "three"}, {"host_port": 2**64}, {"status": ["running"]},
    {"alloc": DROP}, {"reason": "x" * 100_000}, {"status": DROP, "restarts": 2**70},
])
async def test_one_nodes_garbage_never_stops_the_other_leases(raft: RaftNode, garbage: dict[str, Any]) -> None:
    term = raft.term
    await raft.propose("leader_elected", {"term": term, "node": "m1"})
    for node_id in (*GOOD_NODES, "evil"):
        await raft.propose("register_node", {"node_id": node_id, "address": "http://127.0.0.1:1", "labels": {},
                                             "capacity": {"memory": 2**30, "cpu": 1.0}, "push_token": "t",
                                             "agent_version": "1"})
    s = spec.validate_service({"name": "web", "image": "img", "replicas": 3, "resources": {"memory": "64Mi"}})
    await raft.propose("deploy", {"services": [{"name": "web", "spec": s, "digest": spec.spec_digest(s)}]})
    await raft.propose("plan", {"term": term, "stop": [], "place": [
        {"alloc_id": f"a-{n}", "service": "web", "version": 1, "node": n, "index": i}
        for i, n in enumerate((*GOOD_NODES, "evil"))]})

    book = HeartbeatBook()
    monitor = LeaseMonitor(raft, book, heartbeat_s=0.1, ttl_s=60.0)
    monitor.enable(term)
    try:
        for round_ in range(3):
            for node_id in GOOD_NODES:
                book.record({"node_id": node_id, "allocations": [report(f"a-{node_id}", restarts=round_)]})
            # Past every validator: straight into the leader's memory.
            book.reports["evil"] = [{k: v for k, v in {**report("a-evil"), **garbage}.items() if v is not DROP}]
            book.received_at["evil"] = time.time()
            book.dirty.add("evil")
            monitor.wake()
            expected = {n: book.received_at[n] for n in GOOD_NODES}

            def renewed(expected: dict[str, float] = expected, round_: int = round_) -> bool:
                return raft.read(lambda st: all(
                    st["nodes"][n]["renewed_at"] == expected[n]
                    and (st["allocations"][f"a-{n}"].get("observed") or {}).get("restarts") == round_
                    for n in GOOD_NODES))
            await wait_for(renewed)
        assert "evil" in monitor.quarantined
        evil = raft.read(lambda st: st["allocations"]["a-evil"].get("observed"))
        assert evil is None  # its garbage never reached the state
    finally:
        monitor.disable()


def test_node_reports_apply_skips_a_malformed_node_and_applies_the_others() -> None:
    from orca.state.machine import apply, encode_entry
    state = new_state()
    apply(state, encode_entry("leader_elected", {"term": 1, "node": "m1"}, now=1.0))
    for n in ("n1", "evil"):
        apply(state, encode_entry("register_node", {"node_id": n, "address": "http://x", "labels": {},
                                                    "capacity": {"memory": 1, "cpu": 1.0}, "push_token": "t",
                                                    "agent_version": "1"}, now=1.0))
    result = apply(state, encode_entry("node_reports", {"term": 1, "nodes": {
        "n1": {"renewed_at": 5.0, "allocs": None}, "evil": {"renewed_at": "soon", "allocs": None}}}, now=6.0))
    assert result["result"] == {"renewed": 1, "back": [], "skipped": ["evil"]}
    assert state["nodes"]["n1"]["renewed_at"] == 5.0 and state["nodes"]["evil"]["renewed_at"] == 1.0
    assert report_problem({"renewed_at": 1.0, "allocs": {"a": {"restarts": 2**64}}}) is not None


def test_one_nodes_bad_counters_never_stop_the_others_samples() -> None:
    state = new_state()
    state["services"]["web"] = {"state": "running", "spec": {}}
    book = TrafficBook(sample_s=1.0)
    good = {"web": {"requests": 10, "errors": 0, "active": 1, "latency_buckets": [10] * 13, "latency_sum_ms": 5.0,
                    "replicas": {}}}
    book.record("n1", {"proxy": good, "stats": {}})
    book.record("evil", {"proxy": {"web": {"requests": "many"}}, "stats": {"a": {"cpu_pct": 2**64}}})
    assert "evil" in book.rejected and "evil" not in book.proxy
    book.proxy["evil"] = {"web": {"requests": "many"}}  # past the validation: sample must cope too
    book.stats["evil"] = {"a": {"cpu_pct": "hot"}}
    state["allocations"]["a"] = {"id": "a", "service": "web", "desired": "run", "observed": None}
    book.sample(state, now=100.0)
    book.record("n1", {"proxy": {"web": {**good["web"], "requests": 30}}, "stats": {}})
    book.proxy["evil"] = {"web": {"requests": "many"}}
    book.sample(state, now=102.0)
    current = book.current("web")
    assert current is not None and current.rps == pytest.approx(10.0)
    assert "evil" in book.rejected
