"""DockerRuntime against the real engine: what the agent relies on, with no mocks.

Containers run the test image `orca-test/busybox` (busybox-static only), and only 127.0.0.1 is
contacted. Waits are bounded polls, never sleeps that hope.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from orca.agent.runtime import PIDS_LIMIT, ContainerState, DockerRuntime, RuntimeFailure
from tests.docker.conftest import CLUSTER_ID

pytestmark = pytest.mark.docker

TEST_IMAGE = "orca-test/busybox:latest"


def make_alloc(
    service: str = "web",
    *,
    command: list[str] | None = None,
    image: str = TEST_IMAGE,
    port: int | None = None,
    version: int = 1,
    memory: int = 64 << 20,
    cpu: float = 0.5,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:12],
        "service": service,
        "version": version,
        "spec": {
            "image": image,
            "command": command if command is not None else ["sleep", "100"],
            "port": port,
            "env": {},
            "resources": {"memory": memory, "cpu": cpu},
            "health": None,
        },
    }


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def state_of(runtime: DockerRuntime, alloc_id: str) -> ContainerState | None:
    return next((s for s in runtime.list() if s.alloc_id == alloc_id), None)


def containers_for(client: Any, node_id: str, alloc_id: str) -> list[Any]:
    """Ask the engine directly, so a runtime bug cannot hide a duplicate or a leftover."""
    labels = [f"orca.node={node_id}", f"orca.alloc={alloc_id}"]
    return list(client.containers.list(all=True, filters={"label": labels}))


def test_start_list_stop(runtime: DockerRuntime, docker_client: Any, node_id: str) -> None:
    alloc = make_alloc(version=3)

    started = runtime.start(alloc, env={}, host_port=None)

    assert started.status == "running"
    assert started.name == f"orca-web-{alloc['id']}"
    assert (started.alloc_id, started.service, started.version, started.node) == (alloc["id"], "web", 3, node_id)
    assert started.image == TEST_IMAGE
    assert started.started_at and started.exit_code is None and started.host_port is None
    assert runtime.list() == [started]

    runtime.stop(alloc["id"], timeout_s=1)
    assert runtime.list() == []
    assert containers_for(docker_client, node_id, alloc["id"]) == []
    runtime.stop(alloc["id"])  # idempotent: nothing left to stop is not an error


def test_labels_limits_env_and_restart_policy(runtime: DockerRuntime, docker_client: Any, node_id: str) -> None:
    alloc = make_alloc(service="api", version=7, memory=32 << 20, cpu=0.25)
    state = runtime.start(alloc, env={"GREETING": "hello orca"}, host_port=None)

    attrs = docker_client.containers.get(state.container_id).attrs
    assert attrs["Config"]["Labels"] == {
        "orca.service": "api",
        "orca.alloc": alloc["id"],
        "orca.version": "7",
        "orca.node": node_id,
        "orca.cluster": CLUSTER_ID,
    }
    assert "GREETING=hello orca" in attrs["Config"]["Env"]
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    # The defaults every container gets: pids limit, no-new-privileges, swap = memory, nothing privileged.
    host = attrs["HostConfig"]
    assert host["PidsLimit"] == PIDS_LIMIT and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["MemorySwap"] == host["Memory"] and host["Privileged"] is False
    assert not host.get("CapAdd") and not host.get("Devices") and host["NetworkMode"] != "host"
    assert host["PidMode"] in ("", None) and host["ReadonlyRootfs"] is False
    assert attrs["HostConfig"]["Memory"] == 32 << 20
    assert attrs["HostConfig"]["NanoCpus"] == 250_000_000


def test_start_is_idempotent(runtime: DockerRuntime, docker_client: Any, node_id: str) -> None:
    alloc = make_alloc()
    first = runtime.start(alloc, env={}, host_port=None)
    again = runtime.start(alloc, env={}, host_port=None)

    assert again.container_id == first.container_id
    assert len(containers_for(docker_client, node_id, alloc["id"])) == 1
    # A restarted agent (a new runtime object, same node id) adopts the container too.
    reborn = DockerRuntime(node_id, client=docker_client, cluster_id=CLUSTER_ID)
    assert reborn.start(alloc, env={}, host_port=None).container_id == first.container_id
    assert len(containers_for(docker_client, node_id, alloc["id"])) == 1


def test_runtimes_of_different_nodes_do_not_see_each_other(docker_client: Any, make_node_id: Any) -> None:
    node_a, node_b = make_node_id(), make_node_id()
    runtime_a = DockerRuntime(node_a, client=docker_client, cluster_id=CLUSTER_ID)
    runtime_b = DockerRuntime(node_b, client=docker_client, cluster_id=CLUSTER_ID)
    alloc_a, alloc_b = make_alloc("svc"), make_alloc("svc")

    runtime_a.start(alloc_a, env={}, host_port=None)
    state_b = runtime_b.start(alloc_b, env={}, host_port=None)

    assert [s.alloc_id for s in runtime_a.list()] == [alloc_a["id"]]
    assert [s.alloc_id for s in runtime_b.list()] == [alloc_b["id"]]
    # Node A must not be able to touch node B's replica, even by naming its allocation.
    runtime_a.stop(alloc_b["id"])
    with pytest.raises(RuntimeFailure):
        runtime_a.restart(alloc_b["id"])
    assert docker_client.containers.get(state_b.container_id).status == "running"


def test_published_port_answers_on_localhost(runtime: DockerRuntime, docker_client: Any, free_port: int) -> None:
    script = "mkdir -p /www && echo hello-from-orca > /www/index.html && exec httpd -f -p 8080 -h /www"
    alloc = make_alloc(command=["sh", "-c", script], port=8080)

    state = runtime.start(alloc, env={}, host_port=free_port)

    assert state.host_port == free_port
    bindings = docker_client.containers.get(state.container_id).attrs["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free_port)}]}

    def fetch() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/index.html", timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            return None  # httpd not listening yet

    assert wait_for(fetch, what="httpd on the published port") == b"hello-from-orca\n"


def test_taken_host_port_is_a_short_reason_and_leaves_nothing(
    runtime: DockerRuntime, docker_client: Any, node_id: str, free_port: int
) -> None:
    runtime.start(make_alloc(port=8080), env={}, host_port=free_port)
    second = make_alloc(port=8080)

    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(second, env={}, host_port=free_port)

    assert failure.value.reason == f"port {free_port} already allocated"
    assert containers_for(docker_client, node_id, second["id"]) == []


def test_logs(runtime: DockerRuntime) -> None:
    alloc = make_alloc(command=["sh", "-c", "echo one; echo two >&2; echo three"])
    runtime.start(alloc, env={}, host_port=None)
    wait_for(lambda: (s := state_of(runtime, alloc["id"])) and s.status == "exited", what="exit")

    lines = list(runtime.logs(alloc["id"]))
    assert sorted(lines) == [b"one\n", b"three\n", b"two\n"]  # stdout and stderr may interleave
    assert len(list(runtime.logs(alloc["id"], tail=1))) == 1
    # follow on a stopped container ends by itself instead of blocking.
    assert sorted(runtime.logs(alloc["id"], follow=True)) == sorted(lines)

    with pytest.raises(RuntimeFailure, match="no container"):
        runtime.logs("no-such-alloc")


def test_missing_image_is_a_runtime_failure(runtime: DockerRuntime, docker_client: Any, node_id: str) -> None:
    alloc = make_alloc(image="orca-test/does-not-exist:latest")

    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(alloc, env={}, host_port=None)

    assert failure.value.reason == "image not found: orca-test/does-not-exist:latest"
    assert containers_for(docker_client, node_id, alloc["id"]) == []


def test_ensure_image(runtime: DockerRuntime) -> None:
    runtime.ensure_image(TEST_IMAGE)  # present: no pull, no error
    # A registry on a closed localhost port: the pull fails at once, and no traffic leaves the host.
    missing = "127.0.0.1:9/orca-test/missing:latest"
    with pytest.raises(RuntimeFailure) as failure:
        runtime.ensure_image(missing)
    assert failure.value.reason.startswith("image pull failed: 127.0.0.1:9/orca-test/missing:latest")


def test_exited_container_restart_and_recreate(runtime: DockerRuntime, docker_client: Any, node_id: str) -> None:
    # Exits 3 on its first run; a restart of the same container (same filesystem) keeps running.
    script = "if [ -e /tmp/ran ]; then exec sleep 100; fi; touch /tmp/ran; exit 3"
    alloc = make_alloc(command=["sh", "-c", script])
    first = runtime.start(alloc, env={}, host_port=None)

    exited = wait_for(lambda: (s := state_of(runtime, alloc["id"])) and s.status == "exited" and s, what="first exit")
    assert exited.exit_code == 3

    runtime.restart(alloc["id"])
    restarted = state_of(runtime, alloc["id"])
    assert restarted is not None
    assert (restarted.container_id, restarted.status, restarted.exit_code) == (first.container_id, "running", None)
    assert restarted.started_at != first.started_at

    # start() on a dead container replaces it: a new container, and still only one.
    runtime.stop(alloc["id"], timeout_s=0)
    old = runtime.start(alloc, env={}, host_port=None)
    wait_for(lambda: (s := state_of(runtime, alloc["id"])) and s.status == "exited", what="second exit")
    replacement = runtime.start(alloc, env={}, host_port=None)
    assert replacement.container_id != old.container_id
    assert len(containers_for(docker_client, node_id, alloc["id"])) == 1

    with pytest.raises(RuntimeFailure, match="no container"):
        runtime.restart("no-such-alloc")


def test_engine_resources(runtime: DockerRuntime) -> None:
    resources = runtime.engine_resources()
    assert resources["memory"] > 0 and isinstance(resources["memory"], int)
    assert resources["cpu"] >= 1.0 and isinstance(resources["cpu"], float)


def test_tiny_cpu_read_only_and_user(runtime: DockerRuntime, docker_client: Any) -> None:
    alloc = make_alloc(cpu=1e-300, command=["sh", "-c", "id -u; touch /x 2>/dev/null || echo ro; sleep 100"])
    alloc["spec"].update({"read_only": True, "user": "1234:1234"})
    state = runtime.start(alloc, env={}, host_port=None)
    host = docker_client.containers.get(state.container_id).attrs["HostConfig"]
    assert host["NanoCpus"] == 10_000_000  # never 0, which Docker reads as unlimited
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    output = wait_for(lambda: (b"ro" in (logs := b"".join(runtime.logs(alloc["id"])))) and logs, what="output")
    assert output.split()[:2] == [b"1234", b"ro"]
