"""Leader loops isolate a bad report per node, the pure parts: the `node_reports` op skips a malformed
node, and the traffic book keeps sampling the others. The lease loop itself, on a real Raft group, is
tests/cluster/test_lease_isolation.py."""

from __future__ import annotations

import pytest

from orca.master.traffic import TrafficBook
from orca.state.machine import new_state
from orca.state.ops_nodes import report_problem


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
    assert result["result"] == {"renewed": 1, "back": [], "skipped": ["evil"], "leases_only": True}
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
