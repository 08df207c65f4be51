"""End to end on the real engine: three masters, two agents sharing one Docker engine.

Spread, scale, health restarts, agent restart re-adoption, node loss rescheduling, logs, secrets and
stop/purge cleaning up. Every container a test makes carries `orca.node` of one of its agents and is
removed at the end, whatever happened.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from e2e_helpers import HTTPD, IMAGE, containers_of, converged, stack_fixture, wait_for

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.docker

stack = pytest.fixture(stack_fixture)

def test_spread_serve_scale_and_stop(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([{"name": "web", "image": IMAGE, "command": HTTPD, "port": 8080, "health": "/", "replicas": 4,
                    "resources": {"memory": "32Mi", "cpu": 0.1}}])
    wait_for(converged(client, "web", 4), 60, "4 healthy replicas", cluster)
    detail = client.service("web")
    assert Counter(c["node"] for c in detail["containers"]) == {nodes[0]: 2, nodes[1]: 2}
    for c in detail["containers"]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{c['host_port']}/", timeout=5).read()
        assert body == b"ok\n"
    assert len(containers_of(nodes, "web")) == 4
    status = {s["name"]: s for s in client.status()}["web"]
    assert (status["running_replicas"], status["healthy_replicas"], status["status"]) == (4, 4, "running")

    client.scale("web", 1)
    wait_for(lambda: len(containers_of(nodes, "web")) == 1 and converged(client, "web", 1)(), 30, "scale to 1")
    client.scale("web", 3)
    wait_for(converged(client, "web", 3), 60, "scale to 3", cluster)

    client.stop("web")
    wait_for(lambda: not containers_of(nodes, "web"), 30, "containers removed after stop")
    assert {s["name"]: s for s in client.status()}["web"]["status"] == "stopped"
    client.start("web")
    wait_for(converged(client, "web", 3), 60, "restart after start", cluster)
    client.stop("web", purge=True)
    wait_for(lambda: not containers_of(nodes, "web"), 30, "containers removed after purge")
    assert "web" not in {s["name"] for s in client.status()}


def test_failing_health_check_restarts_the_container(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([{"name": "sick", "image": IMAGE, "command": HTTPD, "port": 8080, "health": "/missing",
                    "replicas": 1, "resources": {"memory": "32Mi", "cpu": 0.1}}])
    wait_for(lambda: any(c["restarts"] >= 1 for c in client.service("sick")["containers"]), 60,
             "a restart after 3 failed health checks", cluster)
    assert client.service("sick")["replicas"]["healthy"] == 0


# A lease long enough that the restart (process start + registration on a loaded box) never looks like a
# node loss: this test is about re-adoption, node loss has its own test.
@pytest.mark.parametrize("stack", [{"node_lease_ttl_s": 15.0}], indirect=True)
def test_agent_restart_readopts_without_duplicates(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([{"name": "keep", "image": IMAGE, "command": ["sleep", "1000"], "replicas": 4,
                    "resources": {"memory": "16Mi", "cpu": 0.1}}])
    wait_for(converged(client, "keep", 4), 60, "4 running", cluster)
    before = sorted(c.id for c in containers_of(nodes, "keep"))
    agent = cluster.agents[0]
    # It joined with a (now used) join token: the restart must reuse the credential it keeps.
    credential = cluster.root / agent.node_id / "node.token"
    assert credential.stat().st_mode & 0o777 == 0o600
    cluster.kill(agent)
    cluster.start_agent(agent)
    time.sleep(4)  # several heartbeats and reconcile passes
    wait_for(converged(client, "keep", 4), 30, "still 4 running", cluster)
    assert all(n["status"] == "ready" for n in client.nodes())
    assert [t["used_by"] for t in client.list_join_tokens()] == [agent.node_id]
    assert sorted(c.id for c in containers_of(nodes, "keep")) == before


def test_node_loss_reschedules_and_the_node_reconciles_when_back(
        stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.deploy([{"name": "mover", "image": IMAGE, "command": ["sleep", "1000"], "replicas": 4,
                    "resources": {"memory": "16Mi", "cpu": 0.1}}])
    wait_for(converged(client, "mover", 4), 60, "4 running", cluster)
    lost = cluster.agents[0]
    cluster.kill(lost)  # the agent dies; its containers linger, unknown to the cluster
    started = time.monotonic()
    wait_for(lambda: all(c["node"] == nodes[1] for c in client.service("mover")["containers"])
             and converged(client, "mover", 4)(), 30, "replicas rescheduled on the surviving node", cluster)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 8.0, elapsed  # lease TTL + placement + start
    assert {n["id"]: n["status"] for n in client.nodes()}[nodes[0]] == "down"
    cluster.start_agent(lost)  # back: it must stop what was moved away
    wait_for(lambda: not containers_of([nodes[0]], "mover"), 30, "the returning node stops moved replicas", cluster)
    assert len(containers_of(nodes, "mover")) == 4


def test_logs_and_secrets(stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = stack
    client.set_secret("GREETING", "s3cr3t-value")
    client.deploy([{"name": "talk", "image": IMAGE, "replicas": 2, "env": {"MSG": "${secrets.GREETING}"},
                    "command": ["sh", "-c", "echo hello $MSG; exec sleep 1000"],
                    "resources": {"memory": "16Mi", "cpu": 0.1}}])
    wait_for(converged(client, "talk", 2), 60, "2 running", cluster)
    lines = wait_for(lambda: [ln for ln in client.logs("talk", tail=10) if "hello" in ln], 20, "log lines")
    assert len(lines) == 2 and all("hello s3cr3t-value" in ln and ln.startswith("[talk.") for ln in lines)
    assert "s3cr3t-value" not in str(client.service("talk")) and "s3cr3t-value" not in str(client.list_secrets())
    assert client.service("talk")["spec"]["env"] == {"MSG": "${secrets.GREETING}"}
