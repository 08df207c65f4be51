"""Nemesis: a deposed leader trying to drive containers. The agent refuses by term (409 STALE_LEADER).

One agent on the real Docker engine runs one replica. A push with term 0, then one with the term of a
leader that has since been killed and replaced, each asking the agent to run nothing, are refused;
the container is untouched. The push bearer is the agent's own `push_token` (in its data_dir), so the
refusal is the fence, not authentication.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from workload import http_json

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = [pytest.mark.chaos, pytest.mark.docker]

IMAGE = "orca-test/busybox:latest"


@pytest.fixture
def engine() -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    if os.environ.get("ORCA_SKIP_DOCKER") == "1":
        pytest.skip("ORCA_SKIP_DOCKER=1")
    try:
        client = docker.from_env()
        client.info()
        client.images.get(IMAGE)
    except Exception as exc:  # no engine, or no test image: the same answer
        if os.environ.get("CI") == "true" or os.environ.get("ORCA_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker unusable: {exc}", pytrace=False)
        pytest.skip(f"Docker unusable ({exc}); run scripts/ensure-docker.sh")
    yield client
    client.close()


def _containers(engine: Any, node_id: str) -> dict[str, str]:
    return {c.id: c.status for c in engine.containers.list(all=True, filters={"label": f"orca.node={node_id}"})}


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_agent_refuses_pushes_from_a_deposed_leader(cluster: LocalCluster, engine: Any) -> None:
    node_id = f"chaos-{uuid.uuid4().hex[:8]}"
    agent = cluster.add_agent(node_id)
    data_dir = cluster.root / node_id
    try:
        cluster.start_agent(agent)
        with Client([m.url for m in cluster.masters], cluster.token(), retries=8) as client:
            _wait(lambda: any(n["id"] == node_id and n["status"] == "ready" for n in client.nodes()), 30,
                  "the agent to register")
            client.deploy([{"name": "fenced", "image": IMAGE, "command": ["sleep", "1000"], "replicas": 1,
                            "resources": {"memory": "16Mi", "cpu": 0.1}}])
            client.wait_converged("fenced", 60)
        before = _containers(engine, node_id)
        assert list(before.values()) == ["running"], before
        push_token = (data_dir / "push_token").read_text().strip()

        def fence_term() -> int:
            return int(json.loads((data_dir / "fence.json").read_text())["term"])

        deposed_term = fence_term()
        leader = cluster.wait_leader()
        cluster.kill(leader)
        cluster.wait_leader(timeout=10, exclude=leader.node_id)
        # The new leader's dispatcher pushes the same set with its own, higher term.
        _wait(lambda: fence_term() > deposed_term, 30, "a push from the new leader")

        wipe = {"version": 10**9, "allocations": [], "secrets": {}}
        for term in (0, deposed_term):
            status, _, body = http_json("PUT", agent.url + "/v1/allocations", token=push_token,
                                        body={"term": term, **wipe})
            assert (status, body.get("code")) == (409, "STALE_LEADER"), (term, status, body)
        status, _, body = http_json("PUT", agent.url + "/v1/allocations", token="not-the-push-token",
                                    body={"term": fence_term() + 1, **wipe})
        assert status == 401, body
        time.sleep(2.0)  # reconcile passes: a stale push that slipped through would stop the container
        assert _containers(engine, node_id) == before
        print(f"\nagent {node_id}: fence term {deposed_term} -> {fence_term()}; pushes with term 0 and "
              f"{deposed_term} refused with 409 STALE_LEADER; container {next(iter(before))[:12]} untouched")
    finally:
        cluster.kill(agent)
        for c in engine.containers.list(all=True, filters={"label": f"orca.node={node_id}"}):
            c.remove(force=True)
