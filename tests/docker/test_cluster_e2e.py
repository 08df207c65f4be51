"""End to end on the real engine: three masters, two agents sharing one Docker engine.

Spread, scale, health restarts, agent restart re-adoption, node loss rescheduling, logs, secrets and
stop/purge cleaning up. Every container a test makes carries `orca.node` of one of its agents and is
removed at the end, whatever happened.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.docker

IMAGE = "orca-test/busybox"
HTTPD = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]


@pytest.fixture
def stack(tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest,
          ) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    run = uuid.uuid4().hex[:6]
    nodes = [f"w{run}-a", f"w{run}-b"]
    engine = docker.from_env()
    timing = {"agent_heartbeat_s": 0.5, "node_lease_ttl_s": 3.0, **getattr(request, "param", {})}
    cluster = LocalCluster(tmp_path / "c", timing=timing)
    try:
        cluster.start()
        cluster.wait_leader(timeout=30)
        for i, node in enumerate(nodes):
            cluster.start_agent(cluster.add_agent(node, labels={"zone": "ab"[i]}))
        client = Client([m.url for m in cluster.masters], cluster.token(), timeout=15)
        wait_for(lambda: len([n for n in client.nodes() if n["status"] == "ready"]) == 2, 30, "agents registered",
                 cluster)
        yield cluster, client, nodes
    finally:
        cluster.__exit__(None, None, None)
        for node in nodes:
            for c in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
                c.remove(force=True)
        engine.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, cluster: LocalCluster | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as err:  # noqa: BLE001 - keep polling through transient errors
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    logs = ""
    if cluster is not None:
        logs = "\n".join(f"--- {p.log.name}\n" + p.log.read_text()[-3000:] for p in [*cluster.agents])
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{logs}")


def converged(client: Client, name: str, replicas: int) -> Callable[[], bool]:
    def check() -> bool:
        d = client.service(name)
        return d["replicas"]["running"] == replicas and d["replicas"]["healthy"] == replicas \
            and len(d["containers"]) == replicas
    return check


def containers_of(node_ids: list[str], service: str) -> list[Any]:
    engine = docker.from_env()
    try:
        out = []
        for node in node_ids:
            out += engine.containers.list(filters={"label": [f"orca.node={node}", f"orca.service={service}"]})
        return out
    finally:
        engine.close()


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
    cluster.kill(agent)
    cluster.start_agent(agent)
    time.sleep(4)  # several heartbeats and reconcile passes
    wait_for(converged(client, "keep", 4), 30, "still 4 running", cluster)
    assert all(n["status"] == "ready" for n in client.nodes())
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
