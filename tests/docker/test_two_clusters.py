"""Two clusters on one Docker engine whose agents share a node id leave each other's containers alone.

Real agents (push store, reconciler, DockerRuntime) of two clusters, both named like the same node, run
side by side on the engine; each one's desired set changes, and the other cluster's containers are never
listed, adopted, restarted or stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from orca.agent.agent import Agent
from orca.agent.runtime import DockerRuntime, RuntimeFailure
from tests.docker.test_runtime import TEST_IMAGE, make_alloc, wait_for
from tests.unit.test_agent_api import make_config

pytestmark = pytest.mark.docker

CLUSTERS = ("c1a551e500000001", "c1a551e500000002")


def push(version: int, *allocs: dict[str, Any]) -> dict[str, Any]:
    return {"term": 1, "version": version, "allocations": list(allocs), "secrets": {}}


async def settle(agent: Agent) -> None:
    await agent.reconciler.reconcile_once()
    await agent.reconciler.wait_idle()


def running(client: Any, node_id: str, cluster: str) -> set[str]:
    labels = [f"orca.node={node_id}", f"orca.cluster={cluster}"]
    return {c.labels["orca.alloc"] for c in client.containers.list(filters={"label": labels})}


async def test_two_clusters_with_the_same_node_id_leave_each_other_alone(docker_client: Any, node_id: str,
                                                                        tmp_path: Path) -> None:
    agents = {}
    for cluster in CLUSTERS:
        (tmp_path / cluster).mkdir()
        config = dataclasses.replace(make_config(tmp_path / cluster), agent_id=node_id)
        agent = Agent(config, DockerRuntime(node_id, client=docker_client))
        agent.store.set_cluster_id(cluster)  # what the first registration does
        agent.runtime.cluster_id = cluster
        agents[cluster] = agent
    a, b = (agents[c] for c in CLUSTERS)
    mine = {c: [make_alloc("web", image=TEST_IMAGE), make_alloc("api", image=TEST_IMAGE)] for c in CLUSTERS}
    for cluster, agent in agents.items():
        agent.accept_push(push(1, *mine[cluster]))
    for agent in agents.values():
        await settle(agent)
    for cluster in CLUSTERS:
        want = {x["id"] for x in mine[cluster]}
        wait_for(lambda c=cluster, w=want: running(docker_client, node_id, c) == w, 30, f"{cluster} running")

    # Each agent sees only its own cluster's containers, though the node id is the same.
    assert {s.alloc_id for s in a.runtime.list()} == {x["id"] for x in mine[CLUSTERS[0]]}
    assert {s.alloc_id for s in b.runtime.list()} == {x["id"] for x in mine[CLUSTERS[1]]}

    def started(cluster: str) -> dict[str, str]:
        return {c.id: c.attrs["State"]["StartedAt"] for c in docker_client.containers.list(
            all=True, filters={"label": [f"orca.node={node_id}", f"orca.cluster={cluster}"]})}

    # B, naming A's allocation ids, can neither stop nor restart them.
    before_a = started(CLUSTERS[0])
    for x in mine[CLUSTERS[0]]:
        b.runtime.stop(x["id"])
        with pytest.raises(RuntimeFailure):
            b.runtime.restart(x["id"])
    assert started(CLUSTERS[0]) == before_a and len(before_a) == 2

    # Cluster A empties its node and reconciles again and again: B's replicas keep running, untouched.
    before_b = started(CLUSTERS[1])
    a.accept_push(push(2))
    for _ in range(3):
        await settle(a)
    wait_for(lambda: running(docker_client, node_id, CLUSTERS[0]) == set(), 30, "cluster A stopped")
    await settle(b)
    assert started(CLUSTERS[1]) == before_b and len(before_b) == 2
    b.accept_push(push(2))
    await settle(b)
    wait_for(lambda: running(docker_client, node_id, CLUSTERS[1]) == set(), 30, "cluster B stopped")


def test_a_container_from_before_cluster_labels_is_adopted_only_when_desired(
        docker_client: Any, runtime: DockerRuntime, node_id: str) -> None:
    """The upgrade path: containers labelled `orca.node` only (an older agent) keep running; the agent
    adopts those its desired set names (allocation ids are random, another cluster's never match)."""
    wanted, other = make_alloc("web"), make_alloc("web")
    for alloc in (wanted, other):
        docker_client.containers.run(TEST_IMAGE, ["sleep", "100"], detach=True, name=f"orca-web-{alloc['id']}",
                                     labels={"orca.service": "web", "orca.alloc": alloc["id"], "orca.version": "1",
                                             "orca.node": node_id})
    assert runtime.list() == []  # no adoption without being asked
    runtime.adopt_legacy = lambda alloc_id: alloc_id == wanted["id"]
    assert [s.alloc_id for s in runtime.list()] == [wanted["id"]]
    assert runtime.start(wanted, env={}, host_port=None).alloc_id == wanted["id"]  # adopted, not duplicated
    runtime.adopt_legacy = lambda alloc_id: False  # no longer desired: still ours to stop
    runtime.stop(wanted["id"], timeout_s=1)
    runtime.stop(other["id"], timeout_s=1)  # never adopted: left alone
    left = {c.labels["orca.alloc"] for c in docker_client.containers.list(
        all=True, filters={"label": f"orca.node={node_id}"})}
    assert left == {other["id"]}
