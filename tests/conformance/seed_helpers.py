"""Helpers of the conformance tier (tests/conformance/conftest.py has the cluster fixture)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from orca.devcluster import LocalCluster, http_exchange


def call(method: str, url: str, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One exchange, redirects not followed (a test sends writes to the leader itself)."""
    return http_exchange(method, url, token=token, body=body, headers=headers, timeout=15)


def leader_and_followers(cluster: LocalCluster) -> tuple[Any, list[Any]]:
    leader = cluster.wait_leader(timeout=30)
    return leader, [m for m in cluster.masters if m is not leader]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `predicate()` is truthy (bounded by `timeout`); fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_iso(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value.endswith("Z")


def docker_or_skip() -> None:
    """The orun document needs a real agent, hence a Docker engine with the test image (the docker tier's rule:
    in CI a missing engine fails, it never skips)."""
    if os.environ.get("ORCA_SKIP_DOCKER") == "1":
        pytest.skip("ORCA_SKIP_DOCKER=1")
    try:
        import docker
        client = docker.from_env()
        client.info()
        client.images.get("orca-test/busybox:latest")
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        if os.environ.get("CI") == "true" or os.environ.get("ORCA_REQUIRE_DOCKER") == "1":
            pytest.fail(f"no Docker engine with orca-test/busybox ({exc})", pytrace=False)
        pytest.skip(f"no Docker engine with orca-test/busybox ({exc}); run scripts/ensure-docker.sh")


def register_node(cluster: LocalCluster, url: str, node_id: str) -> str:
    """Register `node_id` as its agent would (agent token bound to it; no agent process, no containers:
    its address answers nothing). Returns the agent token."""
    token = cluster.token("agent", node_id)
    status, _, body = call("POST", url + "/api/v1/agent/register", token, {
        "node_id": node_id, "address": "http://127.0.0.1:9", "labels": {},
        "capacity": {"memory": 2**30, "cpu": 1.0}, "push_token": "p" * 32, "agent_version": "test"})
    assert status == 200, body
    return token
