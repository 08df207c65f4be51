"""Named volumes and bind mounts (orca.volumes): spec rules, the Raft bookkeeping (binding, tombstones, drain
guard, volume_remove), sticky placement through the leader's real decision function, the stop-before-start
handover of a slot's volume, the dispatcher's push, the agent's purge, and the bind allow-list."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import protocol, spec, volumes
from orca.agent.reconcile import Reconciler
from orca.agent.runtime import FakeRuntime
from orca.errors import InvalidSpec
from orca.master.dispatcher import desired_sets
from orca.master.scheduling import decide_cycle
from orca.state.machine import apply, encode_entry, new_state

DB = {"name": "db", "image": "img:1", "replicas": 2, "volumes": [{"name": "data", "path": "/var/lib/db"}]}


_IDS = itertools.count()


def entry(op: str, args: dict, now: float = 1000.0) -> bytes:
    return encode_entry(op, args, now=now, actor="tester")


def ok(result: dict) -> Any:
    assert "error" not in result, result
    return result["result"]


def err(result: dict) -> str:
    assert "error" in result, result
    return result["error"]["code"]


def deploy(s: dict, raw: dict) -> None:
    normalized = spec.validate_service(raw)
    ok(apply(s, entry("deploy", {"services": [{"name": raw["name"], "spec": normalized,
                                               "digest": spec.spec_digest(normalized)}]})))


def register(s: dict, node_id: str) -> None:
    ok(apply(s, entry("register_node", {"node_id": node_id, "address": f"http://127.0.0.1:1/{node_id}",
                                         "labels": {}, "capacity": {"memory": 2**32, "cpu": 8.0},
                                         "push_token": "pt", "agent_version": "0.1"})))


def cluster() -> dict:
    s = new_state()
    ok(apply(s, entry("leader_elected", {"term": 2, "node": "m1"})))
    for n in ("n1", "n2", "n3"):
        register(s, n)
    return s


def cycle(s: dict, now: float = 2000.0) -> Any:
    """One leader cycle: decide on the state, commit the plan (as SchedulerLoop does)."""
    c = decide_cycle(s, now, new_id=lambda: f"a{next(_IDS):05d}")
    ok(apply(s, entry("plan", {"term": 2, "place": c.place, "stop": c.stop, "pending": c.pending,
                               "migrate": c.migrate, "migrated": c.migrated})))
    return c


def forget_stopped(s: dict) -> None:
    """What a node's report does once the agent stopped a container: the allocation leaves the state."""
    for alloc_id in [a for a, x in s["allocations"].items() if x["desired"] == "stop"]:
        del s["allocations"][alloc_id]


# -- spec ------------------------------------------------------------------------------------------


def test_spec_normalizes_named_volumes_and_binds() -> None:
    out = spec.validate_service({**DB, "volumes": [{"name": "data", "path": "/var//lib/db/"},
                                                   {"host": "/srv/conf", "path": "/etc/app"},
                                                   {"host": "/srv/out", "path": "/out", "read_only": False}]})
    assert out["volumes"] == [{"name": "data", "path": "/var/lib/db"},
                              {"host": "/srv/conf", "path": "/etc/app", "read_only": True},
                              {"host": "/srv/out", "path": "/out", "read_only": False}]
    assert spec.validate_service(out) == out
    assert spec.validate_service({"name": "w", "image": "i"})["volumes"] == []


@pytest.mark.parametrize(("volumes_", "field"), [
    ("data", "volumes"),
    ([{"name": "data"}], "volumes[0].path"),
    ([{"path": "/x"}], "volumes[0].name"),
    ([{"name": "Data", "path": "/x"}], "volumes[0].name"),
    ([{"name": "d", "path": "x"}], "volumes[0].path"),
    ([{"name": "d", "path": "/a/../b"}], "volumes[0].path"),
    ([{"name": "d", "path": "/a:b"}], "volumes[0].path"),
    ([{"name": "d", "path": "/"}], "volumes[0].path"),
    ([{"name": "d", "path": "/x"}, {"name": "e", "path": "/x"}], "volumes[1].path"),
    ([{"name": "d", "path": "/x"}, {"name": "d", "path": "/y"}], "volumes[1].name"),
    ([{"name": "d", "path": "/x", "read_only": True}], "volumes[0].read_only"),
    ([{"host": "/srv", "path": "/x", "read_only": "yes"}], "volumes[0].read_only"),
    ([{"host": "srv", "path": "/x"}], "volumes[0].host"),
    ([{"name": f"v{i}", "path": f"/p{i}"} for i in range(17)], "volumes"),
])
def test_spec_rejects_bad_volumes(volumes_: Any, field: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        spec.validate_service({**DB, "volumes": volumes_})
    assert exc.value.details["field"] == field


def test_canary_with_named_volumes_is_refused_and_digest_of_old_specs_unchanged() -> None:
    with pytest.raises(InvalidSpec) as exc:
        spec.validate_service({**DB, "canary": 1})
    assert exc.value.details["field"] == "canary"
    plain = spec.validate_service({"name": "w", "image": "i"})
    legacy = {k: v for k, v in plain.items() if k != "volumes"}
    assert spec.spec_digest(plain) == spec.spec_digest(legacy)  # no restart on upgrade
    assert spec.spec_digest(spec.validate_service(DB)) != spec.spec_digest(spec.validate_service({**DB, "volumes": []}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({"name": st.text(max_size=40), "path": st.text(max_size=40)}), max_size=4))
def test_spec_volumes_never_raise_anything_but_invalid_spec_and_are_idempotent(vols: list) -> None:
    try:
        out = spec.validate_service({**DB, "volumes": vols})
    except InvalidSpec:
        return
    assert spec.validate_service(out) == out


# -- sticky placement through the leader's cycle ------------------------------------------------------


def test_slots_bind_to_their_first_node_and_wait_for_it_when_it_is_down() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    bindings = s["services"]["db"]["volumes"]
    assert set(bindings) == {"0", "1"}
    home = {slot: b["node"] for slot, b in bindings.items()}
    assert len({b["gen"] for b in bindings.values()}) == 2
    slot0_node = home["0"]
    s["nodes"][slot0_node]["status"] = "down"
    c = cycle(s, now=3000.0)
    assert not c.place  # never moved to an empty volume elsewhere
    assert s["services"]["db"]["pending"] == {"count": 1,
                                              "reason": f"waiting for node {slot0_node} that holds volume data"}
    forget_stopped(s)
    s["nodes"][slot0_node]["status"] = "ready"
    c = cycle(s, now=4000.0)
    assert [(p["index"], p["node"]) for p in c.place] == [(0, slot0_node)]
    assert s["services"]["db"]["volumes"]["0"] == bindings["0"]  # same generation: same data


def test_scale_down_and_up_keeps_the_binding() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    before = copy.deepcopy(s["services"]["db"]["volumes"])
    ok(apply(s, entry("scale", {"name": "db", "replicas": 1})))
    cycle(s)
    forget_stopped(s)
    ok(apply(s, entry("scale", {"name": "db", "replicas": 2})))
    c = cycle(s)
    assert [(p["index"], p["node"]) for p in c.place] == [(1, before["1"]["node"])]
    assert s["services"]["db"]["volumes"] == before


def test_rolling_update_stops_the_old_replica_of_a_slot_before_starting_the_new_one() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    old = {a["index"]: a for a in s["allocations"].values()}
    deploy(s, {**DB, "image": "img:2"})
    c = cycle(s)
    assert not c.place  # both slots' volumes are still mounted by version 1
    assert set(c.stop) >= {old[0]["id"]} or set(c.stop) >= {old[1]["id"]}
    c = cycle(s)
    assert not c.place  # the stopped replicas are still on their nodes
    forget_stopped(s)
    c = cycle(s)
    assert {(p["index"], p["node"], p["version"]) for p in c.place} <= {
        (i, old[i]["node"], 2) for i in (0, 1)}
    assert c.place


def test_services_without_volumes_are_untouched_by_the_volume_rules() -> None:
    s = cluster()
    deploy(s, {"name": "web", "image": "i", "replicas": 3})
    cycle(s)
    assert "volumes" not in s["services"]["web"]
    deploy(s, {"name": "web", "image": "j", "replicas": 3})
    assert cycle(s).place  # start-before-stop as before


# -- drain, purge, volume_remove ------------------------------------------------------------------------


def test_drain_of_a_node_holding_volumes_needs_force_and_force_drops_the_binding() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    node = s["services"]["db"]["volumes"]["0"]["node"]
    before = copy.deepcopy(s)
    result = apply(s, entry("drain_node", {"node_id": node, "deadline_s": 60}))
    assert result["error"]["code"] == "NODE_HOLDS_VOLUMES"
    assert "force" in result["error"]["message"] and "EMPTY" in result["error"]["message"]
    assert s == before
    out = ok(apply(s, entry("drain_node", {"node_id": node, "deadline_s": 60, "force": True})))
    assert "EMPTY" in out["warning"]
    assert all(b["node"] != node for b in s["services"]["db"]["volumes"].values())
    assert any(e["type"] == "volumes_abandoned" for e in s["events"])


def test_drain_of_a_stopped_service_volume_node_is_allowed() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    node = s["services"]["db"]["volumes"]["0"]["node"]
    ok(apply(s, entry("stop_service", {"name": "db"})))
    ok(apply(s, entry("drain_node", {"node_id": node, "deadline_s": 60})))
    assert s["services"]["db"]["volumes"]["0"]["node"] == node  # kept for when it starts again


def test_purge_tombstones_every_binding_and_a_redeploy_gets_new_generations() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    bindings = copy.deepcopy(s["services"]["db"]["volumes"])
    ok(apply(s, entry("purge_service", {"name": "db"})))
    orders = [(n, o["slot"], o["gen"]) for n, lst in s["volume_purges"].items() for o in lst]
    assert sorted(orders) == sorted((b["node"], int(slot), b["gen"]) for slot, b in bindings.items())
    deploy(s, DB)
    cycle(s)
    new_gens = {b["gen"] for b in s["services"]["db"]["volumes"].values()}
    assert not new_gens & {b["gen"] for b in bindings.values()}


def test_volume_remove_refuses_a_running_service_and_tombstones_a_stopped_one() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    node = s["services"]["db"]["volumes"]["0"]["node"]
    assert err(apply(s, entry("volume_remove", {"node": node, "service": "db"}))) == "CONFLICT"
    assert err(apply(s, entry("volume_remove", {"node": "ghost", "service": "db"}))) == "NODE_NOT_FOUND"
    assert err(apply(s, entry("volume_remove", {"node": node, "service": "db", "slot": -1}))) == "VALIDATION_ERROR"
    ok(apply(s, entry("stop_service", {"name": "db"})))
    result = ok(apply(s, entry("volume_remove", {"node": node, "service": "db", "slot": 0})))
    assert result["removed"][0]["slot"] == 0
    assert "0" not in s["services"]["db"]["volumes"]
    assert s["volume_purges"][node][-1]["slot"] == 0
    # unbound (left by a forced drain): needs slot and gen
    assert err(apply(s, entry("volume_remove", {"node": "n3", "service": "zz"}))) == "NOT_FOUND"
    ok(apply(s, entry("volume_remove", {"node": "n3", "service": "zz", "slot": 4, "gen": 9})))
    assert s["volume_purges"]["n3"][-1] == {"service": "zz", "slot": 4, "gen": 9}


def test_tombstones_are_bounded_per_node() -> None:
    s = cluster()
    for i in range(volumes.TOMBSTONES_KEPT + 10):
        ok(apply(s, entry("volume_remove", {"node": "n1", "service": "x", "slot": 0, "gen": i})))
    assert len(s["volume_purges"]["n1"]) == volumes.TOMBSTONES_KEPT
    assert s["volume_purges"]["n1"][0]["gen"] == 10


# -- dispatcher, protocol, agent ---------------------------------------------------------------------------


def test_push_carries_the_generation_and_the_node_removal_orders() -> None:
    s = cluster()
    deploy(s, DB)
    cycle(s)
    ok(apply(s, entry("volume_remove", {"node": "n3", "service": "old", "slot": 0, "gen": 7})))
    sets = desired_sets(s)
    for node_id, target in sets.items():
        for item in target["allocations"]:
            assert item["volume_gen"] == s["services"]["db"]["volumes"][str(item["index"])]["gen"]
        body = {"term": 2, "version": 1, "allocations": target["allocations"],
                "purge_volumes": target.get("purge_volumes", [])}
        pushed = protocol.validate_push(body)
        assert pushed["purge_volumes"] == ([{"service": "old", "slot": 0, "gen": 7}] if node_id == "n3" else [])
    with pytest.raises(protocol.ProtocolError):
        protocol.validate_push({"term": 1, "version": 1, "allocations": [], "purge_volumes": [{"service": "x"}]})
    with pytest.raises(protocol.ProtocolError):
        protocol.validate_push({"term": 1, "version": 1, "allocations": [], "purge_volumes": [{}] * 5000})


def test_agent_mounts_its_generation_and_purges_on_order() -> None:
    async def scenario() -> None:
        rt = FakeRuntime(images=["img:1"])
        rt.cluster_id = "c" * 16
        r = Reconciler(rt)
        db = spec.validate_service(DB)
        alloc = {"id": "a1", "service": "db", "version": 1, "index": 0, "spec": db, "volume_gen": 3}
        unbound = {"id": "a2", "service": "db", "version": 1, "index": 1, "spec": db}
        r.set_desired({"term": 1, "version": 1, "allocations": [alloc, unbound]})
        await r.reconcile_once()
        await r.wait_idle()
        assert [(v["slot"], v["gen"]) for v in rt.volumes()] == [(0, 3)]
        assert "not bound" in (r.states["a2"].reason or "")
        r.set_desired({"term": 1, "version": 2, "allocations": [],
                       "purge_volumes": [{"service": "db", "slot": 0, "gen": 3}]})
        await r.reconcile_once()
        await r.wait_idle()
        await r.reconcile_once()
        assert rt.volumes() == []
        calls = [c for c in rt.calls if c[0] == "purge_volumes"]
        r.set_desired({"term": 1, "version": 3, "allocations": [],
                       "purge_volumes": [{"service": "db", "slot": 0, "gen": 3}]})
        await r.reconcile_once()
        assert [c for c in rt.calls if c[0] == "purge_volumes"] == calls  # done orders are not repeated
    asyncio.run(scenario())


@pytest.mark.parametrize(("host", "read_only", "expected"), [
    ("/srv/conf", True, None),
    ("/srv/conf/app.toml", True, None),
    ("/srv/conf", False, "only be read-only"),
    ("/srv/confidential", True, "not allowed"),
    ("/srv/data/x", False, None),
    ("/etc", True, "not allowed"),
])
def test_bind_allow_list(host: str, read_only: bool, expected: str | None) -> None:
    refusal = volumes.bind_refusal(host, read_only, ["/srv/conf"], ["/srv/data"])
    assert refusal is None if expected is None else expected in (refusal or "")


def test_docker_volume_names_are_unique_per_cluster_node_slot_generation() -> None:
    names = {volumes.docker_volume_name(c, n, "db", slot, gen, "data")
             for c in ("aaaaaaaa1", "bbbbbbbb1") for n in ("n1", "n2") for slot in (0, 1) for gen in (1, 2)}
    assert len(names) == 16
