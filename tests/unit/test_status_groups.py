"""orca.master.status_groups: Porter's ComponentHealth and Dory's health components from orca's components."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orca.master.status_groups import GROUPS, dory_component, dory_overall, porter_group

FIELDS = {"status", "live_pullers", "backlog", "in_flight", "oldest_unacked_seconds", "detail"}


def comp(status: str = "up", live: int = 1, backlog: int = 0, in_flight: int = 0, oldest: float = 0.0,
         **detail: Any) -> dict[str, Any]:
    return {"status": status, "live_pullers": live, "backlog": backlog, "in_flight": in_flight,
            "oldest_unacked_seconds": oldest, "detail": detail}


def leader_components() -> dict[str, dict[str, Any]]:
    return {"raft": comp(live=2, leader_id="m1"), "leases": comp(live=3, running_here=True),
            "scheduler": comp(running_here=True), "dispatcher": comp(live=3, running_here=True, failing_nodes={})}


def test_leader_is_up_with_porter_types() -> None:
    for group in GROUPS:
        body = porter_group(group, leader_components(), "m1")
        assert set(body) == FIELDS and body["status"] == "up" and body["detail"] == ""
        assert all(type(body[k]) is int for k in FIELDS - {"status", "detail"})
    assert porter_group("datastores", leader_components(), "m1")["live_pullers"] == 3  # two peers and itself
    assert porter_group("apps", leader_components(), "m1")["live_pullers"] == 4


def test_a_follower_reports_the_leader_loops_down() -> None:
    comps = leader_components()
    for name in ("leases", "scheduler", "dispatcher"):
        comps[name] = comp(live=0, running_here=False)  # v1 says "up" on a follower that knows a leader
    apps = porter_group("apps", comps, "m1")
    assert apps["status"] == "down" and apps["live_pullers"] == 0
    assert "runs on the leader m1" in apps["detail"]
    assert porter_group("datastores", comps, "m1")["status"] == "up"


def test_no_worker_node_means_infra_down() -> None:
    comps = leader_components()
    comps["leases"] = comp(live=0, running_here=True)
    body = porter_group("infra", comps, "m1")
    assert body["status"] == "down" and "no worker node" in body["detail"]


def test_thresholds_degrade_with_the_documents_words_and_whole_seconds() -> None:
    comps = leader_components()
    comps["scheduler"] = comp(backlog=142, running_here=True)
    comps["dispatcher"] = comp(live=3, in_flight=8, oldest=95.2, running_here=True, failing_nodes={})
    body = porter_group("apps", comps, "m1")
    assert body == {"status": "degraded", "live_pullers": 4, "backlog": 142, "in_flight": 8,
                    "oldest_unacked_seconds": 96, "detail": "backlog above warning threshold"}


def test_raft_without_leader_is_down_everywhere() -> None:
    comps = leader_components()
    comps["raft"] = comp(status="down", live=0, leader_id=None)
    for name in ("leases", "scheduler", "dispatcher"):
        comps[name] = comp(status="down", live=0, running_here=False)
    for group in GROUPS:
        assert porter_group(group, comps, None)["status"] == "down"
    dory = {n: dory_component(n, c, None, "t") for n, c in comps.items()}
    assert dory_overall(dory) == "unhealthy"
    assert dory["raft"] == {"status": "unhealthy", "message": "raft: no leader is known", "last_check": "t"}


def test_dory_components_on_a_follower_stay_healthy() -> None:
    comps = leader_components()
    comps["scheduler"] = comp(live=0, running_here=False)
    dory = {n: dory_component(n, c, "m2", "2024-01-01T00:00:00.000Z") for n, c in comps.items()}
    assert dory_overall(dory) == "healthy"
    assert dory["scheduler"]["message"] == "scheduler: runs on the leader m2; this master is a follower"
    comps["dispatcher"] = comp(status="degraded", live=3, running_here=True, failing_nodes={"w1": "refused"})
    dory = {n: dory_component(n, c, "m1", "t") for n, c in comps.items()}
    assert dory_overall(dory) == "degraded" and "pushes failing to w1" in dory["dispatcher"]["message"]


STATUS = st.sampled_from(["up", "degraded", "down"])
NUM = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.none())


@given(st.dictionaries(st.sampled_from(["raft", "leases", "scheduler", "dispatcher"]),
                       st.fixed_dictionaries({"status": STATUS, "live_pullers": st.integers(0, 10),
                                              "backlog": st.integers(0, 10**6), "in_flight": st.integers(0, 99),
                                              "oldest_unacked_seconds": NUM,
                                              "detail": st.fixed_dictionaries({"running_here": st.booleans()})}),
                       min_size=4), st.one_of(st.none(), st.just("m1")))
def test_every_group_always_has_the_documented_shape(comps: dict[str, Any], leader: str | None) -> None:
    for group in GROUPS:
        body = porter_group(group, comps, leader)
        assert set(body) == FIELDS and body["status"] in ("up", "degraded", "down")
        assert isinstance(body["detail"], str) and (body["detail"] == "") == (body["status"] == "up")
        assert all(type(body[k]) is int and body[k] >= 0 for k in FIELDS - {"status", "detail"})
