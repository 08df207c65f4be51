"""Fixtures for the docker tier: a real engine, the test image, and one fresh node id per test.

The engine comes from `scripts/ensure-docker.sh` (scripts/test.sh runs it first). Without an engine
these tests skip with a message saying so, except under CI=true or ORCA_REQUIRE_DOCKER=1, where that
is a failure: a CI run must not go green by skipping the whole tier. ORCA_SKIP_DOCKER=1 (set by
scripts/test.sh when it could not set Docker up, or by hand) skips the tier without asking the engine.
Each test gets its own `orca.node` id, and every container labelled with it is removed afterwards,
even when the test fails: tests can run in any order, next to other agents on the same engine.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from orca.agent.runtime import DockerRuntime

TEST_IMAGE = "orca-test/busybox:latest"
CLUSTER_ID = "7e57c1a5be000001"  # the cluster of the runtime fixture (agents learn theirs at registration)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("ORCA_REQUIRE_DOCKER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client for the local engine; skips the tier when `docker info` fails."""
    if os.environ.get("ORCA_SKIP_DOCKER") == "1":
        pytest.skip("ORCA_SKIP_DOCKER=1: docker tier skipped")
    try:
        client = docker.from_env()
        client.info()
    except Exception as exc:  # any failure means the same thing here: no usable engine
        _unavailable(f"no Docker engine answers `docker info` ({exc}); run scripts/ensure-docker.sh")
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        _unavailable(f"test image {TEST_IMAGE} is missing; run scripts/ensure-docker.sh")
    yield client
    client.close()


def remove_node_containers(client: Any, node_id: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"orca.node={node_id}"}):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def make_node_id(docker_client: Any) -> Iterator[Any]:
    """Factory of unique node ids; every container of every id it made is removed after the test."""
    made: list[str] = []

    def make() -> str:
        node_id = f"test-{uuid.uuid4().hex[:12]}"
        made.append(node_id)
        return node_id

    yield make
    for node_id in made:
        remove_node_containers(docker_client, node_id)


@pytest.fixture
def node_id(make_node_id: Any) -> str:
    return str(make_node_id())


@pytest.fixture
def runtime(docker_client: Any, node_id: str) -> DockerRuntime:
    return DockerRuntime(node_id, publish_address="127.0.0.1", client=docker_client, cluster_id=CLUSTER_ID)


@pytest.fixture
def free_port() -> int:
    """A host port free right now on 127.0.0.1 (the kernel picks it, so parallel tests don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
