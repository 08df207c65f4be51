"""Orca (004): every route of the REST API reference, its payloads as written, every documented field of each
answer. (Running replicas, `running_replicas: 2`, need a Docker engine: tests/conformance/test_seed_orun.py.)"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest
from seed_helpers import call, is_int, leader_and_followers, register_node

from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster

DEPLOY = {"services": [{  # the document's deploy payload, as written
    "name": "my-app", "project": "frontend", "image": "nginx:alpine", "replicas": 2, "port": 80,
    "domain": "app.example.com", "health": "/healthz", "env": {"KEY": "${secrets.KEY}"},
    "resources": {"memory": "512Mi", "cpu": 1.0}, "internal": True, "placement": {"node": "worker-1"}}]}
STATUS_FIELDS = {"name": str, "project": str, "status": str, "replicas": int, "running_replicas": int, "image": str,
                 "domain": str}
AUTHENTICATED = [("POST", "/api/v1/deploy"), ("GET", "/api/v1/status?project=frontend"),
                 ("POST", "/api/v1/services/my-app/scale"), ("DELETE", "/api/v1/services/my-app"),
                 ("DELETE", "/api/v1/projects/frontend"), ("POST", "/api/v1/stop"),
                 ("GET", "/api/v1/services/my-app/logs"), ("POST", "/api/v1/services/my-app/promote"),
                 ("POST", "/api/v1/services/my-app/rollback"), ("GET", "/api/v1/cluster/info"),
                 ("POST", "/api/v1/cluster/nodes/worker-1/drain"), ("POST", "/api/v1/cluster/nodes/worker-1/undrain"),
                 ("GET", "/api/v1/webhooks")]


def error_body(body: object) -> str:
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


def test_health_and_metrics_need_no_token(cluster: LocalCluster) -> None:
    for master in cluster.masters:
        status, _, body = call("GET", master.url + "/api/v1/health")
        assert status == 200 and body["status"] in ("healthy", "degraded")
        status, headers, _ = call("GET", master.url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED)
def test_every_other_route_is_401_without_a_token_and_403_below_its_role(cluster: LocalCluster, method: str,
                                                                         path: str) -> None:
    leader, _ = leader_and_followers(cluster)
    status, _, body = call(method, leader.url + path, None, {})
    assert status == 401, body
    error_body(body)
    if method != "GET":
        status, _, body = call(method, leader.url + path, cluster.token("viewer"), {})
        assert status == 403, body
        error_body(body)


def test_deploy_status_scale_logs_as_documented(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    register_node(cluster, leader.url, "worker-1")
    assert call("POST", leader.url + "/api/v1/secrets", admin, {"key": "KEY", "value": "v"})[0] in (200, 201)
    status, _, body = call("POST", leader.url + "/api/v1/deploy", admin, DEPLOY)
    assert status == 200, body
    assert body["deployed"] == ["my-app"] and body["errors"] == []

    for path in ("/api/v1/status", "/api/v1/status?project=frontend"):
        status, _, body = call("GET", leader.url + path, admin)
        assert status == 200 and [s["name"] for s in body["services"]] == ["my-app"]
        svc = body["services"][0]
        for field, kind in STATUS_FIELDS.items():
            assert isinstance(svc[field], kind) and (kind is not int or is_int(svc[field])), (field, svc)
        assert (svc["name"], svc["project"], svc["replicas"], svc["image"], svc["domain"]) == (
            "my-app", "frontend", 2, "nginx:alpine", "app.example.com")
        assert svc["status"] in ("running", "pending", "degraded", "stopped")
    assert call("GET", leader.url + "/api/v1/status?project=backend", admin)[2] == {"services": []}

    status, _, body = call("POST", leader.url + "/api/v1/services/my-app/scale", admin, {"replicas": 5})
    assert status == 200, body
    assert call("GET", leader.url + "/api/v1/status", admin)[2]["services"][0]["replicas"] == 5

    status, headers, text = call("GET", leader.url + "/api/v1/services/my-app/logs?tail=100", admin)
    # plaintext; empty here (no replica runs: nothing answers on worker-1's address)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert text is None or isinstance(text, str)


def test_errors_are_json_with_the_documented_statuses(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    status, _, body = call("GET", leader.url + "/api/v1/services/nope/logs?tail=100", admin)
    assert status == 404 and error_body(body) == "service not found: nope"
    status, _, body = call("POST", leader.url + "/api/v1/services/nope/scale", admin, {"replicas": 5})
    assert status == 404 and error_body(body) == "service not found: nope"
    for path in ("/api/v1/services/my-app/promote", "/api/v1/services/my-app/rollback"):
        status, _, body = call("POST", leader.url + path, admin, {})
        assert status in (200, 409), body  # no canary, no previous version: a JSON refusal
        if status != 200:
            error_body(body)


def test_cluster_info_drain_undrain(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    status, _, info = call("GET", leader.url + "/api/v1/cluster/info", admin)
    assert status == 200 and info["leader"] == leader.node_id
    assert {m["id"] for m in info["masters"]} == {m.node_id for m in cluster.masters}
    assert "worker-1" in {n["id"] for n in info["nodes"]}
    status, _, body = call("POST", leader.url + "/api/v1/cluster/nodes/worker-1/drain", admin, {})
    assert status == 200 and body["eligibility"] == "draining", body
    status, _, body = call("POST", leader.url + "/api/v1/cluster/nodes/worker-1/undrain", admin, {})
    assert status == 200 and body["eligibility"] == "eligible", body
    status, _, body = call("POST", leader.url + "/api/v1/cluster/nodes/nope/drain", admin, {})
    assert status == 404
    error_body(body)


def test_github_and_gitea_webhooks_verified_by_hmac_sha256(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    status, _, hook = call("POST", leader.url + "/api/v1/webhooks", admin,
                           {"repo": "acme/my-app", "service": "my-app", "branch": "main"})
    assert status == 201, hook
    assert [h["repo"] for h in call("GET", leader.url + "/api/v1/webhooks", admin)[2]["webhooks"]] == ["acme/my-app"]
    raw = json.dumps({"zen": "hi", "repository": {"full_name": "acme/my-app"}}).encode()
    digest = hmac.new(hook["secret"].encode(), raw, hashlib.sha256).hexdigest()
    github = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()),
              "X-Hub-Signature-256": f"sha256={digest}"}
    gitea = {"X-Gitea-Event": "ping", "X-Gitea-Delivery": str(uuid.uuid4()), "X-Gitea-Signature": digest}
    for headers in (github, gitea):
        status, _, body = call("POST", leader.url + "/api/v1/webhooks/github", None, raw, headers)
        assert status == 200, body
    bad = {**github, "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": "sha256=" + "0" * 64}
    status, _, body = call("POST", leader.url + "/api/v1/webhooks/github", None, raw, bad)
    assert status == 401
    error_body(body)


def test_stop_service_project_and_all(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    assert call("DELETE", leader.url + "/api/v1/services/my-app", admin)[0] == 200
    assert call("GET", leader.url + "/api/v1/status", admin)[2]["services"][0]["status"] == "stopped"
    assert call("DELETE", leader.url + "/api/v1/projects/frontend", admin)[0] == 200
    assert call("POST", leader.url + "/api/v1/stop", admin, {})[0] == 200
    status, _, body = call("POST", leader.url + "/api/v1/stop", cluster.token("deployer"), {})
    assert status == 403  # "Insufficient role permissions"
    error_body(body)


def test_since_takes_relative_ages_and_iso_times(cluster: LocalCluster) -> None:
    leader, _ = leader_and_followers(cluster)
    admin = cluster.token()
    everything = call("GET", leader.url + "/api/v1/events?limit=1000", admin)[2]["events"]
    assert everything
    for since in ("1h", "1d", "2023-01-01T00:00:00Z"):
        status, _, body = call("GET", leader.url + f"/api/v1/events?since={since}&limit=1000", admin)
        assert status == 200 and body["events"] == everything, since
    assert call("GET", leader.url + "/api/v1/events?since=2099-01-01T00:00:00Z", admin)[2]["events"] == []
    status, _, body = call("GET", leader.url + "/api/v1/events?since=yesterday", admin)
    assert status == 400 and body["details"] == {"field": "since"}
