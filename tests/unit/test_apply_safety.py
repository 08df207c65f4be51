"""`apply` never raises, and a rejected entry leaves the state exactly as it was.

PySyncObj re-applies an entry whose apply raised, so inside a batch earlier sub-entries would apply
twice; these tests replay the sequence that used to raise (StopIteration in promote once the canary's
version left the 10-entry history) and generate random, hostile op sequences.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orca import snapshot, spec
from orca.state import machine
from orca.state.core import HISTORY_KEPT
from orca.state.machine import BATCH_OP, apply, encode_entry, new_state
from tests.unit.test_operations import TERM, Sim


def digest(state: dict[str, Any]) -> str:
    """Of everything an op may change. `schema_version` is left out: the entry's version is noted whether
    its op succeeds or not (orca.state.machine), so that masters agree on it."""
    return hashlib.sha256(pickle.dumps({k: v for k, v in state.items() if k != "schema_version"})).hexdigest()


def halt_current_rollout(sim: Sim) -> None:
    rollout = sim.state["services"]["web"]["rollout"]
    sim.op("rollout_status", {"term": TERM, "name": "web", "version": rollout["version"], "state": "halted",
                              "reason": "test"})


def canary_out_of_history() -> Sim:
    """deploy v1; deploy v2 (rolling); deploy a canary v3; halt the rollout over and over: each halt
    auto-reverts as a new version, until the canary's version 3 is older than the kept history."""
    sim = Sim()
    sim.deploy(name="web", image="img:1", replicas=2)
    sim.run(3)
    sim.deploy(name="web", image="img:2", replicas=2)
    sim.deploy(name="web", image="img:3", replicas=2, canary=1)
    svc = sim.state["services"]["web"]
    assert svc["canary"]["version"] == 3 and svc["rollout"]["state"] == "rolling"
    for _ in range(HISTORY_KEPT):
        halt_current_rollout(sim)
    assert all(h["version"] != 3 for h in svc["history"]) and svc["canary"]["version"] == 3
    return sim


def test_promote_of_a_canary_that_left_the_history_is_an_error_value() -> None:
    sim = canary_out_of_history()
    before = digest(sim.state)
    result = apply(sim.state, encode_entry("promote", {"name": "web"}, now=sim.now))
    assert result["error"]["code"] == "CONFLICT" and result["error"]["details"] == {"service": "web", "version": 3}
    assert digest(sim.state) == before
    # Rollback still drops the stuck canary.
    assert sim.op("rollback", {"name": "web"})["dropped_canary"] == 3


def test_promote_inside_a_batch_applies_every_other_sub_entry_exactly_once() -> None:
    sim = canary_out_of_history()
    subs = [encode_entry("scale", {"name": "web", "replicas": 5}, now=sim.now),
            encode_entry("promote", {"name": "web"}, now=sim.now),
            encode_entry("scale", {"name": "web", "replicas": 6}, now=sim.now)]
    seq = sim.state["event_seq"]
    result = apply(sim.state, encode_entry(BATCH_OP, {"entries": subs}, now=sim.now))
    codes = [r.get("error", {}).get("code") for r in result["result"]["results"]]
    assert codes == [None, "CONFLICT", None]
    assert sim.state["services"]["web"]["replicas"] == 6 and sim.state["event_seq"] == seq + 2


def test_an_op_that_raises_anything_becomes_a_deterministic_error_value(monkeypatch: Any) -> None:
    def broken(state: dict[str, Any], args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        raise ZeroDivisionError("boom")
    monkeypatch.setitem(machine.OPS, "noop", broken)
    s = new_state()
    before = copy.deepcopy(s)
    results = [apply(s, encode_entry("noop", {}, now=1.0)) for _ in range(2)]
    assert results[0] == results[1] and results[0]["error"]["code"] == "INTERNAL"
    assert "ZeroDivisionError" in results[0]["error"]["message"] and s == before


def test_malformed_envelopes_are_error_values() -> None:
    import msgpack
    s = new_state()
    before = copy.deepcopy(s)
    for entry in ({"op": "noop", "key": ["unhashable"]}, {"op": "noop", "now": "later"},
                  {"op": "noop", "actor": 5}, {"op": "x" * 10_000}, {"op": BATCH_OP, "args": {"entries": [b"\x00"]}}):
        result = apply(s, msgpack.packb(entry, use_bin_type=True))
        assert "error" in result or all("error" in r for r in result["result"]["results"])
    assert s == before


# -- generated op sequences ---------------------------------------------------------------------------

HOSTILE = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from([2**63, 2**64 - 1, -(2**63)]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                    st.sampled_from(["web", "api", "n1", "ghost", "a0", "halted", "done", "down", "ready"]),
                    st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                          max_size=2))


def _spec(image: str, **kw: Any) -> dict[str, Any]:
    s = spec.validate_service({"name": "web", "image": image, "replicas": 2, "resources": {"memory": "64Mi"}, **kw})
    return {"name": "web", "spec": s, "digest": spec.spec_digest(s)}


OBSERVED = {"status": "running", "health": None, "container_id": "c", "started_at": None, "restarts": 0,
            "reason": None, "host_port": None}
TEMPLATES: dict[str, dict[str, Any]] = {
    "noop": {}, "leader_elected": {"term": TERM, "node": "m1"},
    "deploy": {"services": [_spec("img:9")]}, "scale": {"name": "web", "replicas": 3},
    "stop_service": {"name": "web"}, "start_service": {"name": "web"}, "purge_service": {"name": "api"},
    "stop_project": {"project": "default"}, "stop_all": {},
    "create_token": {"jti": "j1", "name": "t", "role": "viewer", "iat": 1.0, "expires_at": None},
    "revoke_token": {"jti": "j1"},
    "register_node": {"node_id": "n9", "address": "http://x", "labels": {}, "capacity": {"memory": 2**30, "cpu": 1.0},
                      "push_token": "t", "agent_version": "1"},
    "node_reports": {"term": TERM, "nodes": {"n0": {"renewed_at": 5.0, "allocs": {"a0": OBSERVED}}}},
    "node_status": {"term": TERM, "node_id": "n1", "status": "down", "reason": "x"},
    "plan": {"term": TERM, "place": [{"alloc_id": "p1", "service": "web", "version": 1, "node": "n1", "index": 0}],
             "stop": ["a0"]},
    "set_secret": {"key": "K", "ciphertext": "c", "grants": {"all_projects": False, "projects": ["p"]}},
    "delete_secret": {"key": "K"}, "set_secret_grants": {"key": "K", "grants": {"all_projects": True, "projects": []}},
    "promote": {"name": "web"}, "rollback": {"name": "web"},
    "rollout_status": {"term": TERM, "name": "web", "version": 2, "state": "halted", "reason": "r"},
    "drain_node": {"node_id": "n1", "deadline_s": 10, "force": False}, "undrain_node": {"node_id": "n1"},
    "drain_complete": {"term": TERM, "node_id": "n1"}, "remove_node": {"node_id": "n2"},
    "decommission_node": {"node_id": "n1"},
    "register_webhook": {"id": "w1", "repo": "o/r", "branch": "main", "service": "web", "secret_ciphertext": "s"},
    "remove_webhook": {"id": "w1"},
    "webhook_delivery": {"id": "w1", "delivery": "d1", "event": "push", "ref": "refs/heads/main",
                         "body_digest": "b1", "replay_window_s": 60.0},
    "autoscale": {"term": TERM, "name": "web", "replicas": 4, "reason": "r", "figures": {}},
    "set_scaling": {"name": "web", "scaling": None},
    "create_join_token": {"id": "00112233445566ff", "role": "worker", "node": None, "expires_at": None},
    "revoke_join_token": {"id": "00112233445566ff"},
    "join_node": {"id": "00112233445566ff", "node_id": "n7", "jti": "j7", "iat": 1, "nonce_digest": "a" * 64},
    "ca_init": {"fingerprint": "b" * 64, "cert_pem": "-----BEGIN CERTIFICATE-----x", "key_sealed": "k",
                "not_after": 9.0},
    "ca_rotate": {"fingerprint": "c" * 64, "cert_pem": "-----BEGIN CERTIFICATE-----y", "key_sealed": "k",
                  "not_after": 9.0},
    "ca_retire": {},
    "set_lineage": {"lineage": "c1"},
    "restore_begin": {"id": "r1", "force": True, "chunk_bytes": 16384, "header": snapshot.parse(snapshot.encode(
        {"services": {}}, index=1, term=1, schema_version=1, created_at=0.0, orca_version="t"))[0]},
    "restore_chunk": {"id": "r1", "n": 0, "data": b"x"},
    "restore_commit": {"id": "r1"},
    "volume_remove": {"node": "n1", "service": "web", "slot": 0, "gen": 1},
    "job_run": {"name": "web"},
    "job_tick": {"name": "web", "tick": 1.0, "term": 1},
    "masters_seed": {"masters": [{"id": "m1", "raft": "127.0.0.1:7001", "api": "http://127.0.0.1:8001"}]},
    "master_add": {"id": "m4", "raft": "127.0.0.1:7004", "api": "http://127.0.0.1:8004"},
    "master_remove": {"id": "m4"},
}


def test_templates_cover_every_op() -> None:
    assert set(TEMPLATES) == set(machine.OPS)


@st.composite
def hostile_entry(draw: Any) -> tuple[str, dict[str, Any]]:
    op = draw(st.sampled_from(sorted(TEMPLATES)))
    args = copy.deepcopy(TEMPLATES[op])
    for key in draw(st.lists(st.sampled_from(sorted(args) or ["x"]), max_size=2)):
        if draw(st.booleans()):
            args[key] = draw(HOSTILE)
        else:
            args.pop(key, None)
    nested = [v for v in args.values() if isinstance(v, dict) and v]
    if nested and draw(st.booleans()):  # one level down too (node_reports' nodes, capacity, ...)
        inner = draw(st.sampled_from(nested))
        inner[draw(st.sampled_from(sorted(inner)))] = draw(HOSTILE)
    return op, args


def _seeded() -> Sim:
    sim = Sim()
    sim.deploy(name="web", image="img:1", replicas=2)
    sim.deploy(name="api", image="img:1", replicas=1)
    sim.run(2)
    sim.deploy(name="web", image="img:2", replicas=2)
    return sim


SEEDED = _seeded()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_entry(), min_size=1, max_size=25))
def test_random_op_sequences_never_raise_and_rejections_change_nothing(ops: list[tuple[str, dict[str, Any]]]) -> None:
    state = copy.deepcopy(SEEDED.state)
    for i, (op, args) in enumerate(ops):
        try:
            raw = encode_entry(op, args, now=2000.0 + i)
        except (OverflowError, ValueError, TypeError):
            continue  # msgpack refuses it: such an entry can never be proposed
        before = digest(state)
        result = apply(state, raw, i)  # must not raise
        assert ("error" in result) != ("ok" in result)
        if "error" in result:
            assert digest(state) == before, (op, args, result)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_entry(), min_size=1, max_size=15))
def test_a_batch_of_random_entries_equals_applying_them_one_by_one(ops: list[tuple[str, dict[str, Any]]]) -> None:
    raws = []
    for i, (op, args) in enumerate(ops):
        try:
            raws.append(encode_entry(op, args, now=2000.0 + i))
        except (OverflowError, ValueError, TypeError):
            continue
    one_by_one, batched = copy.deepcopy(SEEDED.state), copy.deepcopy(SEEDED.state)
    results = [apply(one_by_one, raw, 7) for raw in raws]
    batch = apply(batched, encode_entry(BATCH_OP, {"entries": raws}, now=1.0), 7)  # must not raise
    # compared as text: a result may echo a NaN from the entry, and NaN never equals itself
    assert repr(batch["result"]["results"]) == repr(results)
    assert digest(batched) == digest(one_by_one)  # every sub-entry applied exactly once
