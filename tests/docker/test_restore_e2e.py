"""Disaster recovery on the real engine: save under a write load, lose every master's data directory,
start a fresh cluster with the same secret, restore; every acknowledged write is back, the agents
re-attach and their containers are re-adopted, never restarted (the fresh cluster, before the restore,
is refused by the agents: it is another cluster)."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from e2e_helpers import IMAGE, containers_of, converged, stack_fixture, wait_for

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.docker

stack = pytest.fixture(stack_fixture)


def _identity(nodes: list[str]) -> dict[str, tuple[str, int]]:
    """container id -> (started at, restart count), as the engine says."""
    return {c.id: (c.attrs["State"]["StartedAt"], c.attrs["RestartCount"]) for c in containers_of(nodes, "keep")}


def test_restore_after_losing_every_master_disk(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([{"name": "keep", "image": IMAGE, "command": ["sleep", "100000"], "replicas": 4,
                    "resources": {"memory": "16Mi", "cpu": 0.1}}])
    wait_for(converged(client, "keep", 4), 60, "4 running", cluster)
    before = _identity(nodes)
    assert len(before) == 4

    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with Client(client.apis, client.token) as writer:
            for i in range(100_000):
                if stop.is_set():
                    return
                try:
                    writer.set_secret(f"K{i}", f"v{i}")
                except ApiError:
                    continue
                acked.append(f"K{i}")

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    wait_for(lambda: len(acked) >= 20, 30, "writes under way")
    acked_before = list(acked)
    data = client.snapshot_save()
    stop.set()
    thread.join(30)

    for m in cluster.masters:
        cluster.kill(m)
    for m in cluster.masters:
        shutil.rmtree(cluster.root / m.node_id)
    cluster.start()
    cluster.wait_leader(timeout=60, all_up=True)
    fresh = Client(client.apis, client.token, timeout=15)
    # The agents re-register with the fresh, empty cluster, which pushes them an empty set: refused.
    wait_for(lambda: len(fresh.nodes()) == 2, 30, "agents re-registered with the fresh cluster", cluster)
    time.sleep(2)  # several pushes and reconcile passes
    assert _identity(nodes) == before

    result = fresh.snapshot_restore(data)
    assert result["restored"] and result["counts"]["services"] == 1
    wait_for(lambda: all(n["status"] == "ready" for n in fresh.nodes()) and len(fresh.nodes()) == 2, 30,
             "both nodes ready after the restore", cluster)
    wait_for(converged(fresh, "keep", 4), 60, "4 running after the restore", cluster)
    time.sleep(3)  # pushes of the restored cluster accepted, reconcile passes
    assert _identity(nodes) == before  # the same containers, never restarted
    keys = {s["key"] for s in fresh.list_secrets()}
    assert set(acked_before) <= keys, sorted(set(acked_before) - keys)[:10]
    fresh.scale("keep", 5)  # and the restored cluster drives the agents
    wait_for(converged(fresh, "keep", 5), 60, "scaled to 5", cluster)
    assert set(before) <= set(_identity(nodes))
    fresh.close()
