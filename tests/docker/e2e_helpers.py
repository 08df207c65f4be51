"""Shared pieces of the end-to-end docker tests: a 3-master + 2-agent stack on one engine, and polling."""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import docker
import pytest

from orca.client import Client
from orca.devcluster import LocalCluster, free_ports

IMAGE = "orca-test/busybox"
HTTPD = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]


def stack_fixture(tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest,
          ) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    run = uuid.uuid4().hex[:6]
    nodes = [f"w{run}-a", f"w{run}-b"]
    engine = docker.from_env()
    timing = {"agent_heartbeat_s": 0.5, "node_lease_ttl_s": 3.0, **getattr(request, "param", {})}
    cluster = LocalCluster(tmp_path / "c", timing=timing)
    try:
        cluster.start()
        cluster.wait_leader(timeout=30)
        client = Client([m.url for m in cluster.masters], cluster.token(), timeout=15)
        # The first agent joins with a one-time join token (it keeps the credential it obtains in its
        # data dir: the restart tests prove it is reused), the second with a token bound to its node.
        join_token = client.create_join_token(node=nodes[0])["token"]
        for i, node in enumerate(nodes):
            cluster.start_agent(cluster.add_agent(node, labels={"zone": "ab"[i]}, token=join_token if i == 0 else None))
        wait_for(lambda: len([n for n in client.nodes() if n["status"] == "ready"]) == 2, 30, "agents registered",
                 cluster)
        yield cluster, client, nodes
    finally:
        cluster.__exit__(None, None, None)
        for node in nodes:
            for c in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
                c.remove(force=True)
        engine.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, cluster: LocalCluster | None = None,
             extra: Callable[[], str] | None = None) -> Any:
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
    more = f" {extra()}" if extra is not None else ""
    pytest.fail(f"timed out waiting for {what} (last: {last!r}){more}\n{logs}")


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


# --- a stack whose agents run the ingress proxy -------------------------------------------------------

class ProxyStack(NamedTuple):
    cluster: LocalCluster
    client: Client
    nodes: list[str]
    proxies: list[str]  # "http://127.0.0.1:PORT" of each agent's ingress proxy, in the order of `nodes`


def proxy_stack_fixture(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
                        strategies: tuple[str, str] = ("round_robin", "round_robin")) -> Iterator[ProxyStack]:
    """`stack_fixture` with an `[agent.proxy]` on a free 127.0.0.1 port on each agent; made to be shared
    by a module (`pytest.fixture(scope="module")`): its tests use services of their own names. Host
    ports come from a random 200-port range per agent, away from the default ones of `stack_fixture`.
    `strategies`: each agent's proxy balancing (`[agent.proxy] strategy`)."""
    run = uuid.uuid4().hex[:6]
    nodes = [f"p{run}-a", f"p{run}-b"]
    engine = docker.from_env()
    cluster = LocalCluster(tmp_path_factory.mktemp("proxy-stack") / "c",
                           timing={"agent_heartbeat_s": 0.5, "node_lease_ttl_s": 3.0})
    ports = free_ports(len(nodes))
    bases = random.sample(range(22000, 29800, 200), len(nodes))
    try:
        cluster.start()
        cluster.wait_leader(timeout=30)
        for i, node in enumerate(nodes):
            cluster.start_agent(cluster.add_agent(node, labels={"zone": "ab"[i]}, port_base=bases[i],
                                                  extra=f'\n[agent.proxy]\nlisten = "127.0.0.1:{ports[i]}"\n'
                                                        f'strategy = "{strategies[i]}"\n'))
        client = Client([m.url for m in cluster.masters], cluster.token(), timeout=15)
        wait_for(lambda: len([n for n in client.nodes() if n["status"] == "ready"]) == 2, 30, "agents registered",
                 cluster)
        wait_for(lambda: all(_listening(port) for port in ports), 10, "proxies listening", cluster)
        yield ProxyStack(cluster, client, nodes, [f"http://127.0.0.1:{port}" for port in ports])
    finally:
        cluster.__exit__(None, None, None)
        for node in nodes:
            for c in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
                c.remove(force=True)
        engine.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
