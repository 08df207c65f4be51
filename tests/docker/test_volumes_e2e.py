"""Named volumes end to end with a real database: redis (orca-test/redis, built from Debian packages by
scripts/ensure-redis-image.sh) on a 3-master + 2-agent stack. One key written once must survive a rolling
update, an agent restart, a leader kill (with another rolling update under the new leader) and a stop and
start; the replica waits for its node when that node is down instead of moving to an empty volume; a drain
of that node needs force; `orca stop --purge` removes the volume from the engine."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import stack_fixture, wait_for

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster

REDIS = "orca-test/redis:latest"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_image() -> str:
    done = subprocess.run([str(ROOT / "scripts" / "ensure-redis-image.sh")], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"could not build {REDIS}: {done.stderr[-2000:]}")
    return REDIS


@pytest.fixture
def stack(tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest,
          ) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    nodes: list[str] = []
    try:
        for item in stack_fixture(tmp_path, docker_client, request):
            nodes = item[2]
            yield item
    finally:
        engine = docker.from_env()
        for node in nodes:
            for vol in engine.volumes.list(filters={"label": f"orca.node={node}"}):
                vol.remove(force=True)
        engine.close()


def resp(port: int, *args: str) -> str:
    """One redis command over RESP; the reply's first line (`+OK`, `$2` then the value, ...)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(payload.encode())
        data = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (data.count(b"\r\n") < 1 or data.startswith(b"$")
                                                and not data.startswith(b"$-1") and data.count(b"\r\n") < 2):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    lines = data.decode().split("\r\n")
    return lines[1] if lines[0].startswith("$") and not lines[0].startswith("$-1") else lines[0]


def kv_spec(version: str) -> dict[str, Any]:
    return {"name": "kv", "image": REDIS, "port": 6379, "replicas": 1, "env": {"VERSION": version},
            "resources": {"memory": "64Mi", "cpu": 0.1},
            "command": ["/usr/bin/redis-server", "--dir", "/data", "--appendonly", "yes", "--appendfsync", "always",
                        "--protected-mode", "no"],
            "volumes": [{"name": "data", "path": "/data"}],
            "update": {"max_parallel": 1, "min_healthy_s": 1, "healthy_deadline_s": 60}}


def running(client: Client, version: int | None = None) -> dict[str, Any] | None:
    """The one running kv container (at `version`) that answers PING, or None."""
    for c in client.service("kv")["containers"]:
        if c["status"] == "running" and c["host_port"] and (version is None or c["version"] == version):
            try:
                if resp(c["host_port"], "PING") == "+PONG":
                    return c
            except OSError:
                return None
    return None


def volumes_of(node: str) -> list[str]:
    engine = docker.from_env()
    try:
        return [v.name for v in engine.volumes.list(filters={"label": [f"orca.node={node}", "orca.service=kv"]})]
    finally:
        engine.close()


def test_redis_keeps_its_data_across_updates_restarts_failover_and_waits_for_its_node(
        redis_image: str, stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([kv_spec("1")])
    first = wait_for(lambda: running(client), 90, "redis up", cluster)
    home = first["node"]
    assert resp(first["host_port"], "SET", "greeting", "hello") == "+OK"
    assert len(volumes_of(home)) == 1

    # rolling update: the old replica stops before the new one mounts the volume, on the same node
    client.deploy([kv_spec("2")])
    c = wait_for(lambda: running(client, version=2), 90, "version 2 up", cluster)
    assert c["node"] == home and c["alloc"] != first["alloc"]
    assert resp(c["host_port"], "GET", "greeting") == "hello"

    # agent restart (SIGKILL): the container and its data are adopted as they are
    agent = next(a for a in cluster.agents if a.node_id == home)
    cluster.kill(agent)
    cluster.start_agent(agent)
    wait_for(lambda: client.node(home)["status"] == "ready" and running(client, version=2), 60, "agent back", cluster)
    assert resp(running(client)["host_port"], "GET", "greeting") == "hello"  # type: ignore[index]

    # leader kill, then another rolling update driven by the new leader
    old = cluster.wait_leader()
    cluster.kill(old)
    cluster.wait_leader(timeout=20, exclude=old.node_id)
    wait_for(lambda: client.deploy([kv_spec("3")]), 30, "deploy to the new leader", cluster)
    c = wait_for(lambda: running(client, version=3), 90, "version 3 up", cluster)
    assert c["node"] == home
    assert resp(c["host_port"], "GET", "greeting") == "hello"

    # stop and start again (a redeploy of a stopped service)
    client.stop("kv")
    wait_for(lambda: not client.service("kv")["containers"], 60, "stopped", cluster)
    client.start("kv")
    c = wait_for(lambda: running(client), 90, "started again", cluster)
    assert c["node"] == home and resp(c["host_port"], "GET", "greeting") == "hello"

    # a drain of the volume's node needs force, with the reason
    with pytest.raises(ApiError) as exc:
        client.drain(home, deadline_s=30)
    assert exc.value.code == "NODE_HOLDS_VOLUMES" and "EMPTY" in exc.value.message

    # the node goes down: the replica waits for it instead of starting elsewhere on an empty volume
    agent = next(a for a in cluster.agents if a.node_id == home)
    cluster.kill(agent)
    engine = docker.from_env()
    for cont in engine.containers.list(filters={"label": [f"orca.node={home}", "orca.service=kv"]}):
        cont.stop(timeout=5)  # the whole node is gone, not just its agent
    engine.close()
    reason = f"waiting for node {home} that holds volume data"
    wait_for(lambda: client.service("kv")["pending_reason"] == reason, 60, "pending on its node", cluster)
    time.sleep(3)
    other = next(n for n in nodes if n != home)
    assert not [x for x in client.service("kv")["containers"] if x["node"] == other]
    assert not volumes_of(other)
    cluster.start_agent(agent)
    c = wait_for(lambda: running(client), 90, "back on its node", cluster)
    assert c["node"] == home and resp(c["host_port"], "GET", "greeting") == "hello"

    # orca volumes ls: asked of the agents, bound to the slot in Raft
    listing = client.request("GET", "/api/v1/volumes", params={"node": home})
    [row] = [v for v in listing["volumes"] if v["service"] == "kv"]
    assert (row["node"], row["slot"], row["volume"], row["bound"]) == (home, 0, "data", True)
    with pytest.raises(ApiError) as exc:  # in use by a running service
        client.request("DELETE", f"/api/v1/volumes/{home}/kv")
    assert exc.value.code == "CONFLICT"

    # --purge removes the service and, once its container is gone, its volume
    volume = volumes_of(home)
    assert len(volume) == 1
    client.stop("kv", purge=True)
    wait_for(lambda: not volumes_of(home), 60, "volume removed", cluster)


def test_orca_volumes_rm_removes_a_stopped_services_volume(
        redis_image: str, stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, _ = stack
    client.deploy([kv_spec("1")])
    home = wait_for(lambda: running(client), 90, "redis up", cluster)["node"]
    assert len(volumes_of(home)) == 1
    client.stop("kv")
    wait_for(lambda: not client.service("kv")["containers"], 60, "stopped", cluster)
    result = client.request("DELETE", f"/api/v1/volumes/{home}/kv")
    assert result["removed"] and result["removed"][0]["slot"] == 0
    wait_for(lambda: not volumes_of(home), 60, "volume removed by its agent", cluster)
    client.start("kv")  # a new, empty volume (a new generation)
    c = wait_for(lambda: running(client), 90, "started on a fresh volume", cluster)
    assert resp(c["host_port"], "GET", "greeting") == "$-1"
