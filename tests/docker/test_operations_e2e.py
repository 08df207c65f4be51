"""Operations on the real engine: rolling updates, auto-revert, canary, rollback, drain — sampled.

A sampler thread counts this service's running containers on the engine (the truth, not the API) every
100 ms while an operation runs; the promise checked is "never below N - max_parallel".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from e2e_helpers import HTTPD, IMAGE, containers_of, converged, stack_fixture, wait_for

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.docker

stack = pytest.fixture(stack_fixture)
RES = {"memory": "16Mi", "cpu": 0.05}


@contextmanager
def sampling(nodes: list[str], service: str) -> Iterator[list[int]]:
    samples: list[int] = []
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            samples.append(len(containers_of(nodes, service)))
            time.sleep(0.1)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)


def web(version: str, **extra: object) -> dict:
    return {"name": "web", "image": IMAGE, "command": HTTPD, "port": 8080, "health": "/", "replicas": 4,
            "env": {"VERSION": version}, "resources": RES,
            "update": {"max_parallel": 1, "min_healthy_s": 1, "healthy_deadline_s": 20}, **extra}


def versions(client: Client, name: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for c in client.service(name)["containers"]:
        if c["status"] == "running":
            out[c["version"]] = out.get(c["version"], 0) + 1
    return out


def test_rolling_update_then_broken_version_auto_reverts(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([web("1")])
    wait_for(converged(client, "web", 4), 60, "v1 up", cluster)
    with sampling(nodes, "web") as samples:
        client.deploy([web("2")])
        wait_for(lambda: versions(client, "web") == {2: 4} and converged(client, "web", 4)(), 120, "rolled to v2",
                 cluster)
    assert samples and min(samples) >= 4 - 1, samples
    assert client.service("web")["rollout"]["state"] == "done"
    broken = web("3", command=["sh", "-c", "echo broken; exit 3"])
    with sampling(nodes, "web") as samples:
        client.deploy([broken])
        wait_for(lambda: (client.service("web").get("rollout") or {}).get("reverted_from") == 3, 90,
                 "halt and auto-revert", cluster)
        wait_for(lambda: versions(client, "web") == {4: 4} and converged(client, "web", 4)(), 90,
                 "back on the spec of v2 as v4", cluster)
    assert min(samples) >= 4 - 1, samples
    detail = client.service("web")
    assert detail["version"] == 4 and detail["spec"]["env"] == {"VERSION": "2"}
    types = [e["type"] for e in client.events(service="web", limit=200)]
    assert "rollout_halted" in types and "rollout_reverted" in types


def test_canary_promote_and_rollback(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([web("1")])
    wait_for(converged(client, "web", 4), 60, "v1 up", cluster)
    client.deploy([web("2", canary=1)])
    wait_for(lambda: versions(client, "web") == {1: 4, 2: 1}, 60, "4 stable + 1 canary", cluster)
    client.rollback("web")
    wait_for(lambda: versions(client, "web") == {1: 4}, 60, "canary dropped", cluster)
    client.deploy([web("3", canary=2)])
    wait_for(lambda: versions(client, "web") == {1: 4, 3: 2}, 60, "4 stable + 2 canaries", cluster)
    with sampling(nodes, "web") as samples:
        client.promote("web")
        wait_for(lambda: versions(client, "web") == {3: 4} and converged(client, "web", 4)(), 120, "promoted",
                 cluster)
    assert min(samples) >= 3, samples
    with sampling(nodes, "web") as samples:
        client.rollback("web")  # no canary: back to the previous spec (v1's), as version 4
        wait_for(lambda: versions(client, "web") == {4: 4} and converged(client, "web", 4)(), 120, "rolled back",
                 cluster)
    assert min(samples) >= 3, samples
    assert client.service("web")["spec"]["env"] == {"VERSION": "1"}
    assert [v["version"] for v in client.history("web")["versions"]][:3] == [4, 3, 2]


def test_drain_moves_replicas_start_before_stop_through_a_leader_kill(
        stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([{**web("1"), "replicas": 4, "update": {"max_parallel": 1, "min_healthy_s": 1}}])
    client.deploy([{"name": "pinned", "image": IMAGE, "command": ["sleep", "1000"], "resources": RES,
                    "placement": {"node": nodes[0]}}])
    wait_for(lambda: converged(client, "web", 4)() and converged(client, "pinned", 1)(), 60, "up", cluster)
    assert len(containers_of([nodes[0]], "web")) == 2
    with sampling(nodes, "web") as samples:
        client.drain(nodes[0], deadline_s=120)
        wait_for(lambda: client.node(nodes[0])["drain"]["migrated"] >= 1, 60, "first migration", cluster)
        old = cluster.wait_leader()
        cluster.kill(old)  # the drain's progress lives in Raft: the next leader carries on
        cluster.wait_leader(timeout=15, exclude=old.node_id)
        wait_for(lambda: client.node(nodes[0])["eligibility"] == "ineligible", 120, "drain complete", cluster)
    assert min(samples) >= 4, samples  # start-before-stop: the running count never dropped
    assert not containers_of([nodes[0]], "web") and not containers_of([nodes[0]], "pinned")
    node = client.node(nodes[0])
    assert node["drain"]["complete"] and node["drain"]["migrated"] == 2
    assert converged(client, "web", 4)()
    pinned = {s["name"]: s for s in client.status()}["pinned"]
    assert pinned["running_replicas"] == 0 and "pinned" in (pinned["pending_reason"] or "")
    client.undrain(nodes[0])
    wait_for(lambda: converged(client, "pinned", 1)(), 60, "pinned replica back after undrain", cluster)
    assert len(containers_of([nodes[1]], "web")) == 4  # nothing moved back
