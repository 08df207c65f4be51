"""Porter (001): `GET /api/v2/status/{infra,apps,datastores}`, public, always 200 with a ComponentHealth body:
`status` (up|degraded|down), `live_pullers`, `backlog`, `in_flight`, `oldest_unacked_seconds` (integers) and
`detail` (a string). orca's groups: infra = node leases, apps = scheduler + dispatcher, datastores = Raft."""

from __future__ import annotations

from typing import Any

import pytest
from seed_helpers import call, is_int, leader_and_followers, register_node, wait_for

from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster

SUBSYSTEMS = ("infra", "apps", "datastores")
INTEGERS = ("live_pullers", "backlog", "in_flight", "oldest_unacked_seconds")
HEALTHY_EXAMPLE = {"status": "up", "live_pullers": 3, "backlog": 0, "in_flight": 0, "oldest_unacked_seconds": 0,
                   "detail": ""}


def component_health(url: str, subsystem: str) -> dict[str, Any]:
    status, headers, body = call("GET", f"{url}/api/v2/status/{subsystem}")  # no credentials
    assert status == 200 and headers["Content-Type"].startswith("application/json"), (status, body)
    assert set(body) == set(HEALTHY_EXAMPLE), body
    assert body["status"] in ("up", "degraded", "down")
    assert all(is_int(body[k]) and body[k] >= 0 for k in INTEGERS), body
    assert isinstance(body["detail"], str)
    assert (body["detail"] == "") == (body["status"] == "up"), body
    return body


def test_every_subsystem_answers_on_every_master_without_credentials(cluster: LocalCluster) -> None:
    for master in cluster.masters:
        for subsystem in SUBSYSTEMS:
            component_health(master.url, subsystem)


def test_the_leaders_datastores_match_the_healthy_example(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    # three masters applying the log: two connected peers and the leader itself
    wait_for(lambda: component_health(leader.url, "datastores") == HEALTHY_EXAMPLE, 20, "datastores as the example")


def test_a_follower_reports_the_leaders_loops_down(cluster: LocalCluster) -> None:
    leader, followers = leader_and_followers(cluster)
    for follower in followers:
        apps = component_health(follower.url, "apps")
        assert apps["status"] == "down" and apps["live_pullers"] == 0
        assert f"runs on the leader {leader.node_id}" in apps["detail"]
        assert component_health(follower.url, "infra")["status"] == "down"
        assert component_health(follower.url, "datastores")["status"] == "up"
    assert component_health(leader.url, "apps")["status"] == "up"


def test_infra_is_down_without_worker_nodes_and_up_with_one_heartbeating(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    infra = component_health(leader.url, "infra")
    assert infra["status"] == "down" and infra["live_pullers"] == 0 and "no worker node" in infra["detail"]
    token = register_node(cluster, leader.url, "porter-w1")
    beat = {"processor_id": "porter-w1", "status": "healthy"}
    assert call("POST", leader.url + "/api/v1/edge/heartbeat", token, beat)[2]["directive"] == "continue"
    infra = component_health(leader.url, "infra")
    assert infra["status"] == "up" and infra["live_pullers"] == 1


def test_an_unknown_subsystem_is_a_404_envelope(cluster: LocalCluster) -> None:
    status, _, body = call("GET", cluster.masters[0].url + "/api/v2/status/billing")
    assert status == 404 and body["code"] == "NOT_FOUND" and "infra" in body["error"]
