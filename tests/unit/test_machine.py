"""The state machine: every op, errors as values with no partial write, idempotency, determinism, and the
snapshot round-trip (pickle is what PySyncObj's default dump uses; msgpack is what entries use)."""

from __future__ import annotations

import copy
import pickle

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import spec
from orca.state import machine
from orca.state.machine import apply, encode_entry, new_state


def entry(op: str, args: dict, *, now: float = 1000.0, key: str | None = None, actor: str = "tester") -> bytes:
    return encode_entry(op, args, now=now, key=key, actor=actor)


def deploy_args(*names: str, image: str = "img:1", replicas: int = 2, project: str = "default") -> dict:
    items = []
    for n in names:
        s = spec.validate_service({"name": n, "image": image, "replicas": replicas, "project": project})
        items.append({"name": n, "spec": s, "digest": spec.spec_digest(s)})
    return {"services": items}


def ok(result: dict) -> dict:
    assert "error" not in result, result
    return result["result"]


def err(result: dict) -> str:
    assert "error" in result, result
    return result["error"]["code"]


@pytest.fixture
def state() -> dict:
    s = new_state()
    ok(apply(s, entry("deploy", deploy_args("web", "api")), 1))
    return s


def test_every_op_is_tested() -> None:
    tested = {"noop", "leader_elected", "deploy", "scale", "stop_service", "start_service", "purge_service",
              "stop_project", "stop_all", "create_token", "revoke_token", "register_node", "node_reports",
              "node_status", "plan", "set_secret", "delete_secret", "promote", "rollback", "rollout_status",
              "drain_node", "undrain_node", "drain_complete", "remove_node", "decommission_node",
              "register_webhook", "remove_webhook",
              "webhook_delivery", "autoscale", "set_scaling", "set_secret_grants",
              "create_join_token", "revoke_join_token", "join_node",  # the join ops: tests/unit/test_join.py
              "ca_init", "ca_rotate", "ca_retire",  # the CA ops: tests/unit/test_tls.py
              "restore_begin", "restore_chunk", "restore_commit", "set_lineage",  # in tests/unit/test_snapshot.py
              "volume_remove", "job_run", "job_tick",
              "masters_seed", "master_add", "master_remove"}  # the member list: tests/unit/test_membership.py
    assert set(machine.OPS) == tested


# set_secret_grants (and set_secret's grants) are exercised in tests/unit/test_secret_scopes.py.
# promote, rollback, rollout_status, the drain ops and decommission_node are exercised in
# tests/unit/test_operations.py.


def test_noop_returns_its_index() -> None:
    assert ok(apply(new_state(), entry("noop", {}), 42)) == {"index": 42}


def test_leader_elected_records_term_and_rejects_older() -> None:
    s = new_state()
    ok(apply(s, entry("leader_elected", {"term": 3, "node": "master-2"}, now=5.0)))
    assert s["leader"] == {"term": 3, "node": "master-2", "since": 5.0}
    before = copy.deepcopy(s)
    assert err(apply(s, entry("leader_elected", {"term": 2, "node": "master-1"}))) == "CONFLICT"
    assert s == before


def test_deploy_creates_services_with_version_history_and_event(state: dict) -> None:
    web = state["services"]["web"]
    assert web["version"] == 1 and web["replicas"] == 2 and web["state"] == "running"
    assert [h["version"] for h in web["history"]] == [1]
    assert state["events"][-1]["type"] == "service_deployed" and state["events"][-1]["actor"] == "tester"


def test_deploy_same_spec_keeps_version_new_image_bumps_it(state: dict) -> None:
    ok(apply(state, entry("deploy", deploy_args("web"))))
    assert state["services"]["web"]["version"] == 1
    result = ok(apply(state, entry("deploy", deploy_args("web", image="img:2"))))
    assert result == {"deployed": ["web"], "versions": {"web": 2}}
    assert [h["version"] for h in state["services"]["web"]["history"]] == [1, 2]


def test_history_keeps_the_last_ten_versions(state: dict) -> None:
    for i in range(2, 15):
        ok(apply(state, entry("deploy", deploy_args("web", image=f"img:{i}"))))
    history = state["services"]["web"]["history"]
    assert len(history) == machine.HISTORY_KEPT and history[-1]["version"] == 14 and history[0]["version"] == 5


def test_deploy_rejects_malformed_args_without_partial_write(state: dict) -> None:
    before = copy.deepcopy(state)
    bad = deploy_args("new1")
    bad["services"].append({"name": "new2", "spec": {}})  # no digest
    assert err(apply(state, entry("deploy", bad))) == "VALIDATION_ERROR"
    assert err(apply(state, entry("deploy", {"services": "nope"}))) == "VALIDATION_ERROR"
    assert state == before


def test_deploy_restarts_a_stopped_service(state: dict) -> None:
    ok(apply(state, entry("stop_service", {"name": "web"})))
    ok(apply(state, entry("deploy", deploy_args("web"))))
    assert state["services"]["web"]["state"] == "running"


def test_scale(state: dict) -> None:
    assert ok(apply(state, entry("scale", {"name": "web", "replicas": 5}))) == {
        "name": "web", "previous_replicas": 2, "replicas": 5}
    assert state["services"]["web"]["replicas"] == 5 and state["services"]["web"]["spec"]["replicas"] == 5


@pytest.mark.parametrize("replicas", [-1, 1001, "3", True, None, 2.5])
def test_scale_rejects_bad_counts(state: dict, replicas: object) -> None:
    before = copy.deepcopy(state)
    assert err(apply(state, entry("scale", {"name": "web", "replicas": replicas}))) == "VALIDATION_ERROR"
    assert state == before


def test_unknown_service_is_not_found(state: dict) -> None:
    before = copy.deepcopy(state)
    for op in ("scale", "stop_service", "start_service", "purge_service"):
        args = {"name": "ghost", "replicas": 1} if op == "scale" else {"name": "ghost"}
        assert err(apply(state, entry(op, args))) == "SERVICE_NOT_FOUND"
    assert state == before


def test_stop_and_start(state: dict) -> None:
    assert ok(apply(state, entry("stop_service", {"name": "web"})))["status"] == "stopped"
    assert state["services"]["web"]["state"] == "stopped"
    events = len(state["events"])
    ok(apply(state, entry("stop_service", {"name": "web"})))  # already stopped: no new event
    assert len(state["events"]) == events
    ok(apply(state, entry("start_service", {"name": "web"})))
    assert state["services"]["web"]["state"] == "running"


def test_purge_removes_service_and_stops_its_allocations(state: dict) -> None:
    state["allocations"]["a1"] = {"id": "a1", "service": "web", "desired": "run"}
    ok(apply(state, entry("purge_service", {"name": "web"})))
    assert "web" not in state["services"] and state["allocations"]["a1"]["desired"] == "stop"


def test_stop_project_only_touches_that_project() -> None:
    s = new_state()
    ok(apply(s, entry("deploy", deploy_args("a1", "a2", project="alpha"))))
    ok(apply(s, entry("deploy", deploy_args("b1", project="beta"))))
    result = ok(apply(s, entry("stop_project", {"project": "alpha"})))
    assert result["services"] == ["a1", "a2"]
    assert [s["services"][n]["state"] for n in ("a1", "a2", "b1")] == ["stopped", "stopped", "running"]
    assert err(apply(s, entry("stop_project", {"project": "nope"}))) == "NOT_FOUND"


def test_stop_all(state: dict) -> None:
    assert ok(apply(state, entry("stop_all", {})))["stopped"] == ["api", "web"]
    assert all(svc["state"] == "stopped" for svc in state["services"].values())


def test_tokens_create_revoke_and_tombstone() -> None:
    s = new_state()
    rec = ok(apply(s, entry("create_token", {"jti": "j1", "name": "ci", "role": "deployer", "iat": 10,
                                             "expires_at": None})))
    assert rec["role"] == "deployer" and not rec["revoked"] and rec["created_by"] == "tester"
    assert err(apply(s, entry("create_token", {"jti": "j1", "name": "x", "role": "viewer", "iat": 1,
                                               "expires_at": None}))) == "CONFLICT"
    assert err(apply(s, entry("create_token", {"jti": "j2", "name": "x", "role": "root", "iat": 1,
                                               "expires_at": None}))) == "VALIDATION_ERROR"
    assert ok(apply(s, entry("revoke_token", {"jti": "j1"}, now=7.0)))["revoked_at"] == 7.0
    # A token minted offline was never recorded; revoking it records a tombstone.
    assert ok(apply(s, entry("revoke_token", {"jti": "offline"})))["revoked"] is True
    assert s["tokens"]["offline"]["revoked"] is True


def test_unknown_op_halts_and_garbage_is_an_error_value() -> None:
    s = new_state()
    unknown = apply(s, entry("format_disk", {}))  # more in tests/unit/test_schema_versions.py
    assert err(unknown) == "CLUSTER_NOT_READY" and unknown["halt"]["op"] == "format_disk"
    assert err(apply(s, b"\xc1\xff not msgpack")) == "VALIDATION_ERROR"
    assert err(apply(s, msgpack.packb([1, 2, 3]))) == "VALIDATION_ERROR"
    assert s == new_state()


def test_idempotency_key_returns_first_result_and_applies_once(state: dict) -> None:
    first = apply(state, entry("scale", {"name": "web", "replicas": 4}, key="k1"))
    events = len(state["events"])
    ok(apply(state, entry("scale", {"name": "web", "replicas": 9})))
    again = apply(state, entry("scale", {"name": "web", "replicas": 4}, key="k1"))
    assert again == {**first, "replayed": True}
    assert state["services"]["web"]["replicas"] == 9 and len(state["events"]) == events + 1
    assert err(apply(state, entry("stop_all", {}, key="k1"))) == "CONFLICT"


def test_a_refused_write_leaves_no_key_behind(state: dict) -> None:
    before = copy.deepcopy(state)
    first = apply(state, entry("scale", {"name": "ghost", "replicas": 1}, key="k2"))
    assert err(first) == "SERVICE_NOT_FOUND" and state == before  # a refusal changes nothing, not even keys
    ok(apply(state, entry("deploy", deploy_args("ghost"))))
    assert "replayed" not in ok(apply(state, entry("scale", {"name": "ghost", "replicas": 1}, key="k2")))


def test_idempotency_and_events_are_bounded() -> None:
    s = new_state()
    ok(apply(s, entry("deploy", deploy_args("web"))))
    for i in range(machine.IDEMPOTENCY_KEPT + 10):
        apply(s, entry("scale", {"name": "web", "replicas": i % 7}, key=f"k{i}"))
    assert len(s["idempotency"]) == machine.IDEMPOTENCY_KEPT and "k0" not in s["idempotency"]
    assert len(s["events"]) == machine.EVENTS_KEPT
    assert s["events"][-1]["seq"] == s["event_seq"]


OPS_STRATEGY = st.lists(st.one_of(
    st.builds(lambda n, i: ("deploy", deploy_args(n, image=f"img:{i}")), st.sampled_from(["a", "b", "c"]),
              st.integers(0, 3)),
    st.builds(lambda n, r: ("scale", {"name": n, "replicas": r}), st.sampled_from(["a", "b", "x"]),
              st.integers(-2, 1002)),
    st.builds(lambda n: ("stop_service", {"name": n}), st.sampled_from(["a", "b"])),
    st.builds(lambda n: ("start_service", {"name": n}), st.sampled_from(["a", "c"])),
    st.builds(lambda n: ("purge_service", {"name": n}), st.sampled_from(["a", "b", "c"])),
    st.just(("stop_all", {})),
    st.builds(lambda j: ("revoke_token", {"jti": j}), st.sampled_from(["t1", "t2"])),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(OPS_STRATEGY, st.lists(st.one_of(st.none(), st.sampled_from(["k1", "k2"])), min_size=40, max_size=40))
def test_same_entries_same_state_and_snapshot_round_trips(ops: list, keys: list) -> None:
    entries = [entry(op, args, now=float(i), key=keys[i]) for i, (op, args) in enumerate(ops)]
    a, b = new_state(), new_state()
    results_a = [apply(a, e, i) for i, e in enumerate(entries)]
    results_b = [apply(b, e, i) for i, e in enumerate(entries)]
    assert a == b and results_a == results_b
    # PySyncObj's default dump pickles the state; it must come back equal, and stay msgpack-able.
    assert pickle.loads(pickle.dumps(a)) == a
    assert msgpack.unpackb(msgpack.packb(a, use_bin_type=True), raw=False, strict_map_key=False) == a
    # Restore replaces: applying more entries to a restored copy matches applying them to the original.
    restored = pickle.loads(pickle.dumps(a))
    tail = entry("stop_all", {}, now=99.0)
    apply(a, tail, 99)
    apply(restored, tail, 99)
    assert restored == a


def register(s: dict, node_id: str = "n1", now: float = 10.0) -> None:
    ok(apply(s, entry("register_node", {"node_id": node_id, "address": f"http://127.0.0.1:1/{node_id}",
                                         "labels": {"zone": "a"}, "capacity": {"memory": 2**30, "cpu": 2.0},
                                         "push_token": "pt", "agent_version": "0.1"}, now=now)))


def elected(s: dict, term: int = 2) -> None:
    ok(apply(s, entry("leader_elected", {"term": term, "node": "master-1"})))


def test_register_node_creates_ready_eligible_node_and_keeps_eligibility(state: dict) -> None:
    register(state)
    node = state["nodes"]["n1"]
    assert (node["status"], node["eligibility"], node["renewed_at"]) == ("ready", "eligible", 10.0)
    node["eligibility"] = "draining"
    node["status"] = "down"
    register(state, now=20.0)
    assert (node["status"], node["eligibility"]) == ("ready", "draining")
    assert err(apply(state, entry("register_node", {"node_id": "", "address": "x", "labels": {}, "capacity": {},
                                                    "push_token": "p", "agent_version": "1"}))) == "VALIDATION_ERROR"


def test_plan_places_stops_and_records_pending_fenced_by_term(state: dict) -> None:
    register(state)
    elected(state, 3)
    place = [{"alloc_id": "a1", "service": "web", "version": 1, "node": "n1", "index": 0}]
    before = copy.deepcopy(state)
    assert err(apply(state, entry("plan", {"term": 2, "place": place, "stop": []}))) == "STALE_LEADER"
    bad = place + [{"alloc_id": "a2", "service": "web", "version": 1, "node": "ghost", "index": 1}]
    assert err(apply(state, entry("plan", {"term": 3, "place": bad, "stop": []}))) == "VALIDATION_ERROR"
    assert state == before
    result = ok(apply(state, entry("plan", {"term": 3, "place": place, "stop": [],
                                            "pending": {"web": {"count": 1, "reason": "no room"}}})))
    assert result == {"placed": 1, "stopped": 0}
    alloc = state["allocations"]["a1"]
    assert (alloc["node"], alloc["desired"], alloc["resources"]["memory"]) == ("n1", "run", 268435456)
    assert state["services"]["web"]["pending"] == {"count": 1, "reason": "no room"}
    assert err(apply(state, entry("plan", {"term": 3, "place": place, "stop": []}))) == "CONFLICT"
    assert ok(apply(state, entry("plan", {"term": 3, "place": [], "stop": ["a1", "nope"]}))) == {
        "placed": 0, "stopped": 1}
    assert state["allocations"]["a1"]["desired"] == "stop"


def test_node_reports_renew_observe_revive_and_forget_stopped(state: dict) -> None:
    register(state)
    elected(state, 3)
    place = [{"alloc_id": "a1", "service": "web", "version": 1, "node": "n1", "index": 0},
             {"alloc_id": "a2", "service": "web", "version": 1, "node": "n1", "index": 1}]
    ok(apply(state, entry("plan", {"term": 3, "place": place, "stop": []})))
    observed = {"status": "running", "health": None, "container_id": "c1", "started_at": "t", "restarts": 0,
                "reason": None, "host_port": 20001}
    state["nodes"]["n1"]["status"] = "down"
    result = ok(apply(state, entry("node_reports", {"term": 3, "nodes": {
        "n1": {"renewed_at": 50.0, "allocs": {"a1": observed}}, "ghost": {"renewed_at": 1.0, "allocs": None}}},
        now=51.0)))
    assert result == {"renewed": 1, "back": ["n1"]}
    assert state["nodes"]["n1"]["renewed_at"] == 50.0 and state["nodes"]["n1"]["status"] == "ready"
    assert state["allocations"]["a1"]["observed"]["container_id"] == "c1"
    assert state["allocations"]["a2"]["observed"] is None  # not reported yet: still desired, kept
    ok(apply(state, entry("plan", {"term": 3, "place": [], "stop": ["a1", "a2"]})))
    ok(apply(state, entry("node_reports", {"term": 3, "nodes": {"n1": {"renewed_at": 52.0, "allocs": {}}}})))
    assert state["allocations"] == {}  # stopped and gone from the node: forgotten
    assert err(apply(state, entry("node_reports", {"term": 1, "nodes": {}}))) == "STALE_LEADER"


def test_node_status_transitions_with_events(state: dict) -> None:
    register(state)
    elected(state, 4)
    ok(apply(state, entry("node_status", {"term": 4, "node_id": "n1", "status": "down", "reason": "silent"})))
    assert state["nodes"]["n1"]["status"] == "down" and state["events"][-1]["type"] == "node_down"
    assert err(apply(state, entry("node_status", {"term": 4, "node_id": "n1", "status": "gone"}))) == \
        "VALIDATION_ERROR"
    assert err(apply(state, entry("node_status", {"term": 4, "node_id": "x", "status": "down"}))) == \
        "NODE_NOT_FOUND"
    assert err(apply(state, entry("node_status", {"term": 3, "node_id": "n1", "status": "ready"}))) == \
        "STALE_LEADER"


def test_secrets_hold_only_ciphertext_and_delete(state: dict) -> None:
    assert ok(apply(state, entry("set_secret", {"key": "DB", "ciphertext": "gAAA..."}))) == {
        "key": "DB", "created": True}
    assert ok(apply(state, entry("set_secret", {"key": "DB", "ciphertext": "gBBB..."})))["created"] is False
    assert state["secrets"]["DB"]["ciphertext"] == "gBBB..."
    assert "gBBB" not in str(state["events"])
    ok(apply(state, entry("delete_secret", {"key": "DB"})))
    assert err(apply(state, entry("delete_secret", {"key": "DB"}))) == "NOT_FOUND"


def test_batch_applies_each_entry_in_order_with_its_own_key_and_result(state: dict) -> None:
    subs = [entry("scale", {"name": "web", "replicas": 3}, key="b1"), entry("scale", {"name": "ghost", "replicas": 1}),
            entry("stop_service", {"name": "api"}, key="b1")]
    result = apply(state, encode_entry(machine.BATCH_OP, {"entries": subs}, now=5.0))
    results = ok(result)["results"]
    assert results[0]["result"]["replicas"] == 3 and results[1]["error"]["code"] == "SERVICE_NOT_FOUND"
    assert results[2]["error"]["code"] == "CONFLICT"  # same key, different op: refused, nothing applied
    assert state["services"]["api"]["state"] == "running"
    nested = apply(state, encode_entry(machine.BATCH_OP, {"entries": [
        encode_entry(machine.BATCH_OP, {"entries": []}, now=1.0)]}, now=1.0))
    assert ok(nested)["results"][0]["error"]["code"] == "VALIDATION_ERROR"
    assert err(apply(state, encode_entry(machine.BATCH_OP, {"entries": "x"}, now=1.0))) == "VALIDATION_ERROR"


def test_webhook_register_deliver_replay_branch_and_remove(state: dict) -> None:
    hook = {"id": "h1", "repo": "acme/web", "service": "web", "branch": "main", "secret_ciphertext": "gAAA"}
    ok(apply(state, entry("register_webhook", hook)))
    assert err(apply(state, entry("register_webhook", hook))) == "CONFLICT"
    deliver = {"id": "h1", "delivery": "d1", "event": "push", "ref": "refs/heads/main"}
    result = ok(apply(state, entry("webhook_delivery", deliver, now=50.0)))
    assert result["action"] == "redeployed" and result["version"] == 2
    svc = state["services"]["web"]
    assert svc["version"] == 2 and svc["spec"]["pull_policy"] == "always" and svc["rollout"]["state"] == "rolling"
    assert ok(apply(state, entry("webhook_delivery", deliver)))["action"] == "ignored"  # replayed delivery
    assert state["services"]["web"]["version"] == 2
    other = ok(apply(state, entry("webhook_delivery", {**deliver, "delivery": "d2", "ref": "refs/heads/dev"})))
    assert other["action"] == "ignored" and "refs/heads/main" in other["reason"]
    assert ok(apply(state, entry("webhook_delivery", {**deliver, "delivery": "d3", "event": "ping"})))["action"] == \
        "pong"
    assert [i["delivery"] for i in state["webhooks"]["h1"]["invocations"]] == ["d1", "d1", "d2", "d3"]
    ok(apply(state, entry("remove_webhook", {"id": "h1"})))
    assert err(apply(state, entry("webhook_delivery", {**deliver, "delivery": "d4"}))) == "NOT_FOUND"


def test_scaling_policy_autoscale_and_manual_override(state: dict) -> None:
    policy = {"mode": "auto", "min_replicas": 1, "max_replicas": 5}
    ok(apply(state, entry("set_scaling", {"name": "web", "scaling": policy})))
    elected(state, 2)
    assert err(apply(state, entry("autoscale", {"term": 2, "name": "web", "replicas": 9, "reason": "x"}))) == \
        "VALIDATION_ERROR"  # outside the policy's bounds
    result = ok(apply(state, entry("autoscale", {"term": 2, "name": "web", "replicas": 4, "reason": "rps high",
                                                 "figures": {"rps": 90.0}})))
    assert result["replicas"] == 4 and state["events"][-1]["type"] == "autoscaled"
    assert "rps high" in state["events"][-1]["message"]
    assert err(apply(state, entry("autoscale", {"term": 1, "name": "web", "replicas": 3}))) == "STALE_LEADER"
    assert ok(apply(state, entry("scale", {"name": "web", "replicas": 2})))["scaling_mode"] == "manual"
    assert state["services"]["web"]["spec"]["scaling"]["mode"] == "manual"
    assert err(apply(state, entry("autoscale", {"term": 2, "name": "web", "replicas": 3}))) == "CONFLICT"
    ok(apply(state, entry("set_scaling", {"name": "web", "scaling": None})))
    assert state["services"]["web"]["spec"]["scaling"] is None
