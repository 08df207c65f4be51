"""TCP and exec health checks gate rolling updates on a real stack: a version whose replicas run but never
pass their check is never counted ready, so the old replicas keep running until the rollout halts and
auto-reverts; a version that passes late (after its start period) rolls out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import IMAGE, stack_fixture, wait_for

from orca.client import Client
from orca.devcluster import LocalCluster

RES = {"memory": "16Mi", "cpu": 0.05}
UPDATE = {"max_parallel": 1, "min_healthy_s": 1, "healthy_deadline_s": 15}


@pytest.fixture
def stack(tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest,
          ) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    yield from stack_fixture(tmp_path, docker_client, request)


def tcp_service(version: str, listen: bool) -> dict[str, Any]:
    # httpd opens the port after 2 s; the broken version runs but never listens
    cmd = "sleep 2; mkdir -p /www && exec httpd -f -p 8080 -h /www" if listen else "exec sleep 1000"
    return {"name": "tcpsvc", "image": IMAGE, "command": ["sh", "-c", cmd], "port": 8080, "replicas": 2,
            "env": {"VERSION": version}, "resources": RES, "update": UPDATE,
            "health": {"tcp": 8080, "interval_s": 1, "timeout_s": 1, "retries": 3, "start_period_s": 5}}


def exec_service(version: str, ready: bool) -> dict[str, Any]:
    cmd = "sleep 2; touch /tmp/ready; exec sleep 1000" if ready else "exec sleep 1000"
    return {"name": "execsvc", "image": IMAGE, "command": ["sh", "-c", cmd], "replicas": 2,
            "env": {"VERSION": version}, "resources": RES, "update": UPDATE,
            "health": {"exec": ["test", "-f", "/tmp/ready"], "interval_s": 1, "timeout_s": 2, "retries": 100,
                       "start_period_s": 5}}


def state(client: Client, name: str) -> dict[int, list[str | None]]:
    out: dict[int, list[str | None]] = {}
    for c in client.service(name)["containers"]:
        if c["status"] == "running":
            out.setdefault(c["version"], []).append(c["health"])
    return out


def all_healthy(client: Client, name: str, version: int, count: int) -> bool:
    s = state(client, name)
    return list(s) == [version] and s[version] == ["healthy"] * count


def test_tcp_and_exec_checks_gate_a_rollout(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, _ = stack
    client.deploy([tcp_service("1", listen=True), exec_service("1", ready=True)])
    for name in ("tcpsvc", "execsvc"):
        wait_for(lambda n=name: all_healthy(client, n, 1, 2), 60, f"{name} v1 healthy", cluster)  # type: ignore[misc]

    # broken versions: their replicas run but never pass, the old ones are never all retired
    client.deploy([tcp_service("2", listen=False), exec_service("2", ready=False)])
    for name in ("tcpsvc", "execsvc"):
        wait_for(lambda n=name: 2 in state(client, n), 30, f"{name} v2 started", cluster)  # type: ignore[misc]
        s = state(client, name)
        assert "healthy" not in s[2], s
        assert s.get(1) and all(h == "healthy" for h in s[1]), s  # v1 still serves
    for name in ("tcpsvc", "execsvc"):
        wait_for(lambda n=name: (client.service(n).get("rollout") or {}).get("reverted_from") == 2,  # type: ignore[misc]
                 90, f"{name} halted and reverted", cluster)
        wait_for(lambda n=name: all_healthy(client, n, 3, 2), 90, f"{name} back on v1's spec", cluster)  # type: ignore[misc]

    # a good version that becomes ready late rolls out
    client.deploy([tcp_service("4", listen=True), exec_service("4", ready=True)])
    for name in ("tcpsvc", "execsvc"):
        wait_for(lambda n=name: all_healthy(client, n, 4, 2), 90, f"{name} v4 rolled out", cluster)  # type: ignore[misc]
        assert client.service(name)["rollout"]["state"] == "done"


def test_depends_on_starts_the_app_only_once_the_database_is_healthy(
        stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, _ = stack
    # db becomes healthy (exec check) 6 s after it starts; app must not start before that
    db = {"name": "db", "image": IMAGE, "command": ["sh", "-c", "sleep 6; touch /tmp/ready; exec sleep 1000"],
          "resources": RES, "health": {"exec": ["test", "-f", "/tmp/ready"], "retries": 100}}
    app = {"name": "app", "image": IMAGE, "command": ["sleep", "1000"], "resources": RES, "depends_on": ["db"]}
    client.deploy([app, db])
    wait_for(lambda: state(client, "db").get(1) == ["starting"], 30, "db started", cluster)
    assert client.service("app")["pending_reason"] == "waiting for db to be healthy (depends_on)"
    deadline = time.monotonic() + 60
    while not all_healthy(client, "db", 1, 1):
        assert time.monotonic() < deadline, "db never became healthy"
        assert not client.service("app")["containers"], "app started before db was healthy"
        time.sleep(0.3)
    wait_for(lambda: state(client, "app") == {1: [None]}, 30, "app started after db", cluster)
