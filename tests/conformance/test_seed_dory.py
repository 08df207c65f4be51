"""Dory (003): the edge API on orca's worker nodes (an edge node is a worker node; its processor is the node's
agent, so `processor_id` is the node id) and `/healthz`. The document's payloads are sent as written: its
heartbeat names the processor "string", which is a valid orca node id.

Departures checked here too: the heartbeat needs the agent token of that very node (401 without, 403 for
another node's), registering and decommissioning need an admin token, and an unknown node is a 404, not
Dory's 500."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import pytest
from seed_helpers import call, is_iso, leader_and_followers, register_node, wait_for

from orca import __version__
from orca.devcluster import LocalCluster
from orca.master.api_edge import edge_node_uuid

pytestmark = pytest.mark.cluster

HEARTBEAT = {  # the document's request body, as written
    "processor_id": "string", "node_id": "string", "role": "string", "epoch": 0, "timestamp": 0.0,
    "status": "string", "last_state_sync": 0.0, "state_size_bytes": 0, "uptime_sec": 0.0}
ORG = "0b1e2c3d-4f50-4a6b-8c7d-9e0f1a2b3c4d"


def heartbeat(url: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    status, headers, answer = call("POST", url + "/api/v1/edge/heartbeat", token, HEARTBEAT if body is None else body)
    if status == 200:
        assert headers["Content-Type"].startswith("application/json")
        assert set(answer) == {"directive", "orchestrator_time"}, answer
        assert answer["directive"] in ("continue", "shutdown")
        assert isinstance(answer["orchestrator_time"], float)
        assert abs(answer["orchestrator_time"] - time.time()) < 60
    return status, answer


def test_heartbeat_of_an_unknown_processor_is_shutdown(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    status, answer = heartbeat(leader.url, cluster.token("agent", "string"))
    assert status == 200 and answer["directive"] == "shutdown"


def test_heartbeat_of_a_registered_processor_is_continue_and_renews_the_lease(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    token = register_node(cluster, leader.url, "string")
    admin = cluster.token()

    def renewed_at() -> str | None:
        nodes = call("GET", leader.url + "/api/v1/cluster/nodes", admin)[2]["nodes"]
        return next(n for n in nodes if n["id"] == "string")["last_heartbeat"]

    before = renewed_at()
    assert heartbeat(leader.url, token) == (200, {"directive": "continue", "orchestrator_time": pytest.approx(
        time.time(), abs=60)})
    # Dory heartbeats alone keep the node's lease (committed with the next batch) and so the node ready
    wait_for(lambda: renewed_at() != before, 10, "lease renewed by the edge heartbeat")
    for _ in range(8):  # longer than the 5 s lease, without a single agent heartbeat
        assert heartbeat(leader.url, token)[1]["directive"] == "continue"
        time.sleep(1)
    nodes = call("GET", leader.url + "/api/v1/cluster/nodes", admin)[2]["nodes"]
    # not "down" (lease lost); "unreachable" is the dispatcher's verdict: nothing answers its pushes here
    assert next(n for n in nodes if n["id"] == "string")["status"] != "down"
    # the node's uuid (Dory's `id`) names it as well as its id
    assert heartbeat(leader.url, token, {**HEARTBEAT, "node_id": edge_node_uuid("string")})[0] == 200


def test_heartbeat_without_processor_id_changes_nothing(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    assert heartbeat(leader.url, cluster.token("agent", "anyone"), {})[1]["directive"] == "continue"


def test_heartbeat_errors(cluster: LocalCluster) -> None:
    leader, followers = leader_and_followers(cluster)
    url = leader.url + "/api/v1/edge/heartbeat"
    token = cluster.token("agent", "string")
    assert call("GET", url, token)[0] == 405                                   # non-POST
    status, _, body = call("POST", url, token, b"{not json")
    assert status == 400 and body["code"] == "VALIDATION_ERROR"                # invalid JSON
    status, _, body = call("POST", url, token, {"processor_id": "string", "pad": "x" * (65 * 1024)})
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"               # over 64 KB
    assert call("POST", url, None, HEARTBEAT)[0] == 401                        # departure: a token is needed
    assert call("POST", url, cluster.token("agent", "other"), HEARTBEAT)[0] == 403  # another node's token
    assert call("POST", url, cluster.token("admin"), HEARTBEAT)[0] == 403      # not an agent
    assert call("POST", url, token, {**HEARTBEAT, "node_id": "elsewhere"})[0] == 400
    status, headers, _ = call("POST", followers[0].url + "/api/v1/edge/heartbeat", token, HEARTBEAT)
    assert status == 307 and headers["Location"].startswith(leader.url)       # the leases live on the leader


def test_register_an_edge_node(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    status, _, node = call("POST", leader.url + "/api/v1/edge/nodes", admin, {"name": "edge-1", "organization_id": ORG})
    assert status == 201, node
    documented = {"id", "organization_id", "name", "status", "failover_enabled", "failover_target_node_id",
                  "last_heartbeat_at"}
    assert documented <= set(node) and set(node) - documented == {"join_token", "join_token_id"}
    assert uuid.UUID(node["id"]) and node["id"] == edge_node_uuid("edge-1")
    assert node["organization_id"] == ORG and node["name"] == "edge-1" and node["status"] == "online"
    assert node["failover_enabled"] is True and node["failover_target_node_id"] is None
    assert node["last_heartbeat_at"] is None
    # the join token is the node's way in: exchanged once for its credential, then it registers and heartbeats
    status, _, joined = call("POST", leader.url + "/api/v1/agent/join", node["join_token"],
                             {"node_id": "edge-1", "nonce": secrets.token_urlsafe(32)})
    assert status == 201, joined
    register = {"node_id": "edge-1", "address": "http://127.0.0.1:9", "labels": {},
                "capacity": {"memory": 2**30, "cpu": 1.0}, "push_token": "p" * 32}
    assert call("POST", leader.url + "/api/v1/agent/register", joined["token"], register)[0] == 200
    assert heartbeat(leader.url, joined["token"], {**HEARTBEAT, "processor_id": "edge-1", "node_id": node["id"]})[1][
        "directive"] == "continue"
    # a registered name is taken
    status, _, body = call("POST", leader.url + "/api/v1/edge/nodes", admin, {"name": "edge-1", "organization_id": ORG})
    assert status == 409 and body["code"] == "CONFLICT"


@pytest.mark.parametrize(("body", "field"), [
    ({"organization_id": ORG}, "name"), ({"name": "", "organization_id": ORG}, "name"),
    ({"name": "edge-2"}, "organization_id"), ({"name": "edge-2", "organization_id": "not-a-uuid"}, "organization_id"),
    ({"name": "Edge 2", "organization_id": ORG}, "name")])
def test_register_refuses_what_the_document_refuses(cluster: LocalCluster, body: dict[str, Any], field: str) -> None:
    leader, _ = leader_and_followers(cluster)
    status, _, answer = call("POST", leader.url + "/api/v1/edge/nodes", cluster.token(), body)
    assert status == 400 and answer["details"]["field"] == field, answer


def test_register_and_decommission_need_an_admin(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    for path, body in (("/api/v1/edge/nodes", {"name": "edge-3", "organization_id": ORG}),
                       ("/api/v1/edge/nodes/decommission", {"node_name": "string"})):
        assert call("POST", leader.url + path, None, body)[0] == 401
        assert call("POST", leader.url + path, cluster.token("deployer"), body)[0] == 403


def test_decommission_stops_the_node_and_its_processor_is_told_to_shut_down(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    url = leader.url + "/api/v1/edge/nodes/decommission"
    status, _, body = call("POST", url, admin, {"node_name": "string"})
    assert status == 200, body
    assert body == {"message": "node string decommissioned", "node_name": "string", "status": "decommissioned",
                    "apps_stopped": 0}
    nodes = call("GET", leader.url + "/api/v1/cluster/nodes", admin)[2]["nodes"]
    assert "string" not in {n["id"] for n in nodes}
    assert heartbeat(leader.url, cluster.token("agent", "string"))[1]["directive"] == "shutdown"
    status, _, body = call("POST", url, admin, {"node_name": "string"})
    assert status == 404 and body["code"] == "NODE_NOT_FOUND"                   # departure: Dory answers 500
    status, _, body = call("POST", url, admin, {})
    assert status == 400 and body["details"]["field"] == "node_name"


def test_healthz_components_on_every_master(cluster: LocalCluster) -> None:
    for master in cluster.masters:
        status, _, body = call("GET", master.url + "/healthz")
        assert status == 200, body
        assert body["status"] in ("healthy", "degraded") and is_iso(body["timestamp"])
        assert body["version"] == __version__
        assert set(body["components"]) == {"raft", "leases", "scheduler", "dispatcher"}
        for name, component in body["components"].items():
            assert set(component) == {"status", "message", "last_check"}, component
            assert component["status"] in ("healthy", "degraded", "unhealthy")
            assert isinstance(component["message"], str) and component["message"].startswith(name)
            assert is_iso(component["last_check"])
        assert body["components"]["raft"]["status"] == "healthy"


def test_healthz_is_503_unhealthy_without_a_leader(cluster: LocalCluster) -> None:
    leader, followers = leader_and_followers(cluster)
    for m in [leader, followers[0]]:
        cluster.kill(m)
    survivor = followers[1]

    def unhealthy() -> Any:
        status, _, body = call("GET", survivor.url + "/healthz")
        return body if status == 503 and body["status"] == "unhealthy" else None
    body = wait_for(unhealthy, 20, "the lone master unhealthy")
    assert body["components"]["raft"]["status"] == "unhealthy"
    # and the edge writes are honest about it: 503, never a redirect to a dead leader
    for path, token, payload in (("/api/v1/edge/heartbeat", cluster.token("agent", "string"), HEARTBEAT),
                                 ("/api/v1/edge/nodes", cluster.token(), {"name": "edge-9", "organization_id": ORG}),
                                 ("/api/v1/edge/nodes/decommission", cluster.token(), {"node_name": "edge-1"})):
        status, headers, answer = call("POST", survivor.url + path, token, payload)
        assert status == 503 and answer["code"] == "CLUSTER_NOT_READY" and "Location" not in headers, answer
    cluster.start()  # back to three masters for the tests after this one


HOSTILE = [b"[]", b"null", b"\"x\"", b"1e400", b"{\"processor_id\": " + b"[" * 200 + b"]" * 200 + b"}",
           json.dumps({"processor_id": 2**64}).encode(), json.dumps({"epoch": 2**70}).encode(),
           json.dumps({"name": "x" * 10_000, "organization_id": ORG}).encode(),
           json.dumps({"node_name": ["a"]}).encode(), json.dumps({"processor_id": "\u0000"}).encode(), b"\xff\xfe"]


@pytest.mark.parametrize("path", ["/api/v1/edge/heartbeat", "/api/v1/edge/nodes", "/api/v1/edge/nodes/decommission"])
def test_hostile_bodies_are_4xx_envelopes(cluster: LocalCluster, path: str) -> None:
    leader = cluster.wait_leader(timeout=60)
    token = cluster.token("agent", "string") if path.endswith("heartbeat") else cluster.token()
    for raw in HOSTILE:
        status, _, body = call("POST", leader.url + path, token, raw)
        assert 400 <= status < 500, (raw[:40], status, body)
        assert set(body) >= {"error", "code", "details", "timestamp"}, body
