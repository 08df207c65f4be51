"""orun (000): the agent's status API (`POST /healthz`, `POST /status` on `status_listen`) returns orun's
NodeReport: `node` {name, started_at, last_sync_time, git_head, sync_error}, `deployments` keyed by the
deployment's (service's) name {name, image, container_id, state, changed_at}, `services` keyed by the
service's name {name, deployment, domain, route_active}. A real master cluster and a real agent on Docker;
the document's `hello-world` service runs as two replicas of the test image on that node."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from seed_helpers import call, docker_or_skip, is_iso, wait_for

from orca.devcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

HTTPD = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Any]]:
    docker_or_skip()
    import docker
    node = f"orun-{uuid.uuid4().hex[:8]}"
    c = LocalCluster(Path(tmp_path_factory.mktemp("orun")) / "cluster")
    engine = docker.from_env()
    try:
        c.start()
        leader = c.wait_leader(timeout=60, all_up=True)
        agent = c.add_agent(node)
        c.start_agent(agent)
        admin = c.token()
        wait_for(lambda: any(n["id"] == node and n["status"] == "ready"
                             for n in call("GET", leader.url + "/api/v1/cluster/nodes", admin)[2]["nodes"]),
                 30, "agent registered")
        yield c, agent
    finally:
        c.__exit__(None, None, None)
        for container in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
            container.remove(force=True)
        engine.close()


def status_api(agent: Any, path: str) -> tuple[int, Any]:
    status, _, body = call("POST", f"http://127.0.0.1:{agent.status_port}{path}")
    return status, body


def test_healthz_is_ok(stack: tuple[LocalCluster, Any]) -> None:
    _, agent = stack
    assert status_api(agent, "/healthz") == (200, {"status": "ok"})


def test_node_report_before_and_after_a_deployment(stack: tuple[LocalCluster, Any]) -> None:
    cluster, agent = stack
    leader = cluster.wait_leader(timeout=30)
    status, report = status_api(agent, "/status")
    assert status == 200 and set(report) == {"node", "deployments", "services"}
    assert report["deployments"] == {} and report["services"] == {}
    empty_head = report["node"]["git_head"]  # None until the first push (of an empty set, at registration)

    service = {"name": "hello-world", "image": "orca-test/busybox", "command": HTTPD, "replicas": 2, "port": 8080,
               "domain": "hello-world.example.com", "resources": {"memory": "32Mi", "cpu": 0.1}}
    assert call("POST", leader.url + "/api/v1/deploy", cluster.token(), {"services": [service]})[0] == 200

    def running() -> Any:
        _, body = status_api(agent, "/status")
        dep = body["deployments"].get("hello-world")
        return body if dep and dep["state"] == "running" and len(dep["replicas"]) == 2 else None
    report = wait_for(running, 90, "hello-world running on the node")

    node = report["node"]
    assert set(node) >= {"name", "started_at", "last_sync_time", "git_head", "sync_error"}
    assert node["name"] == agent.node_id and is_iso(node["started_at"]) and is_iso(node["last_sync_time"])
    assert re.fullmatch(r"[0-9a-f]{40}", node["git_head"]) and node["git_head"] != empty_head
    assert node["sync_error"] is None
    assert set(report["deployments"]) == {"hello-world"}  # keyed by the deployment's name
    dep = report["deployments"]["hello-world"]
    assert {k: dep[k] for k in ("name", "image", "state")} == {"name": "hello-world", "image": "orca-test/busybox",
                                                               "state": "running"}
    assert isinstance(dep["container_id"], str) and dep["container_id"] and is_iso(dep["changed_at"])
    assert report["services"] == {"hello-world": {"name": "hello-world", "deployment": "hello-world",
                                                  "domain": "hello-world.example.com", "route_active": False}}

    # Orca's status (004) counts both replicas running
    def both_running() -> bool:
        body = call("GET", leader.url + "/api/v1/status", cluster.token())[2]
        svc = body["services"][0]
        return svc["status"] == "running" and svc["running_replicas"] == 2
    wait_for(both_running, 30, "running_replicas: 2")

    # a new desired set moves the head
    assert call("POST", leader.url + "/api/v1/services/hello-world/scale", cluster.token(), {"replicas": 1})[0] == 200
    wait_for(lambda: status_api(agent, "/status")[1]["node"]["git_head"] != node["git_head"], 30, "git_head moved")


def test_status_api_is_post_only(stack: tuple[LocalCluster, Any]) -> None:
    _, agent = stack
    for path in ("/healthz", "/status"):
        status, _, body = call("GET", f"http://127.0.0.1:{agent.status_port}{path}")
        assert status == 405 and body["code"] == "METHOD_NOT_ALLOWED"
