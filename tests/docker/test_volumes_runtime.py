"""DockerRuntime's volumes against the real engine: owner labels, bind mounts only from allowed host paths
(read-only unless the allow-list says writable), listing and purging only this node's volumes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from orca.agent.runtime import DockerRuntime, RuntimeFailure
from tests.docker.conftest import CLUSTER_ID

pytestmark = pytest.mark.docker

TEST_IMAGE = "orca-test/busybox:latest"


def alloc(command: list[str], volumes: list[dict[str, Any]], *, index: int = 0, gen: int | None = 1,
          service: str = "vol") -> dict[str, Any]:
    out: dict[str, Any] = {"id": uuid.uuid4().hex[:12], "service": service, "version": 1, "index": index,
                           "spec": {"image": TEST_IMAGE, "command": command, "port": None, "env": {},
                                    "resources": {"memory": 32 << 20, "cpu": 0.1}, "health": None,
                                    "volumes": volumes}}
    if gen is not None:
        out["volume_gen"] = gen
    return out


def exit_code(runtime: DockerRuntime, alloc_id: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in runtime.list():
            if c.alloc_id == alloc_id and c.exit_code is not None:
                return c.exit_code
        time.sleep(0.1)
    raise AssertionError("container did not exit")


@pytest.fixture
def cleanup(docker_client: Any, node_id: str) -> Any:
    yield
    for vol in docker_client.volumes.list(filters={"label": f"orca.node={node_id}"}):
        try:
            vol.remove(force=True)
        except docker.errors.APIError:
            pass


def test_named_volume_is_labelled_kept_across_containers_and_purged(runtime: DockerRuntime, docker_client: Any,
                                                                    node_id: str, cleanup: Any) -> None:
    write = alloc(["sh", "-c", "echo kept > /data/f"], [{"name": "data", "path": "/data"}])
    runtime.start(write, env={}, host_port=None)
    assert exit_code(runtime, write["id"]) == 0
    runtime.stop(write["id"])
    read = alloc(["sh", "-c", "grep -q kept /data/f"], [{"name": "data", "path": "/data"}])
    runtime.start(read, env={}, host_port=None)
    assert exit_code(runtime, read["id"]) == 0
    [row] = runtime.volumes()
    assert (row["service"], row["slot"], row["gen"], row["volume"]) == ("vol", 0, 1, "data")
    labels = docker_client.volumes.get(row["name"]).attrs["Labels"]
    assert labels["orca.cluster"] == CLUSTER_ID and labels["orca.node"] == node_id
    # mounted (the exited container still references it): the order stays pending
    assert runtime.purge_volumes([{"service": "vol", "slot": 0, "gen": 1}]) == []
    runtime.stop(read["id"])
    assert runtime.purge_volumes([{"service": "vol", "slot": 0, "gen": 1}]) == [{"service": "vol", "slot": 0, "gen": 1}]
    assert runtime.volumes() == []


def test_another_node_sees_and_touches_none_of_them(runtime: DockerRuntime, docker_client: Any, node_id: str,
                                                    make_node_id: Any, cleanup: Any) -> None:
    a = alloc(["true"], [{"name": "data", "path": "/data"}])
    runtime.start(a, env={}, host_port=None)
    exit_code(runtime, a["id"])
    other = DockerRuntime(make_node_id(), client=docker_client, cluster_id=CLUSTER_ID)
    assert other.volumes() == []
    assert other.purge_volumes([{"service": "vol", "slot": 0, "gen": 1}])  # nothing of its own to remove
    assert len(runtime.volumes()) == 1
    runtime.stop(a["id"])


def test_named_volume_without_a_binding_is_refused(runtime: DockerRuntime, cleanup: Any) -> None:
    with pytest.raises(RuntimeFailure, match="not bound"):
        runtime.start(alloc(["true"], [{"name": "data", "path": "/data"}], gen=None), env={}, host_port=None)


def test_bind_mounts_only_from_allowed_paths_and_read_only_unless_allowed_writable(
        runtime: DockerRuntime, tmp_path: Path, cleanup: Any) -> None:
    conf, out, secret = tmp_path / "conf", tmp_path / "out", tmp_path / "secret"
    for d in (conf, out, secret):
        d.mkdir()
    (conf / "app.toml").write_text("x = 1\n")
    runtime.bind_paths, runtime.bind_paths_rw = (str(conf),), (str(out),)

    with pytest.raises(RuntimeFailure, match="not allowed"):
        runtime.start(alloc(["true"], [{"host": str(secret), "path": "/s", "read_only": True}]), env={}, host_port=None)
    with pytest.raises(RuntimeFailure, match="read-only"):
        runtime.start(alloc(["true"], [{"host": str(conf), "path": "/c", "read_only": False}]), env={}, host_port=None)
    (conf / "link").symlink_to(secret)  # a symlink inside an allowed path must not lead outside it
    with pytest.raises(RuntimeFailure, match="not allowed"):
        runtime.start(alloc(["true"], [{"host": str(conf / "link"), "path": "/s", "read_only": True}]), env={},
                      host_port=None)

    ro = alloc(["sh", "-c", "grep -q 'x = 1' /c/app.toml && ! touch /c/new"],
               [{"host": str(conf), "path": "/c", "read_only": True}])
    runtime.start(ro, env={}, host_port=None)
    assert exit_code(runtime, ro["id"]) == 0
    assert not (conf / "new").exists()
    rw = alloc(["sh", "-c", "echo written > /o/result"], [{"host": str(out), "path": "/o", "read_only": False}])
    runtime.start(rw, env={}, host_port=None)
    assert exit_code(runtime, rw["id"]) == 0
    assert (out / "result").read_text() == "written\n"
    runtime.stop(ro["id"])
    runtime.stop(rw["id"])
