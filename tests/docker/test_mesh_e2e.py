"""The service mesh end to end on the real engine: 3 masters, 2 agents with `[agent.mesh]` and an ingress.

A container reaches another service of its project by `NAME` (HTTP and raw TCP) and any service by
`NAME.PROJECT`, wherever the replicas run; an `internal` service is reachable that way and never through
the ingress; a container of another project is refused unless the service's `allow_from` names it. The
data plane is each agent's nftables table: both agents DNAT to the store's container address (it runs on
their engine), the host reaches the VIP too, a connection opened before a table change still works after,
and an agent that stops removes its table and rule while the other agent's keep serving.
The stack uses a VIP range and a subnet pool of its own, so it never meets another cluster on the engine,
and removes its networks, `lo` addresses and nftables tables at the end.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import IMAGE, converged, wait_for
from test_traffic_e2e import fetch

from orca.agent.mesh import cleanup_cluster, lo_label
from orca.agent.mesh_nft import table_name
from orca.client import Client
from orca.devcluster import LocalCluster, free_ports
from orca.protocol import cluster_id_of

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RES = {"memory": "32Mi", "cpu": 0.2}
# One line in, one line out ("store <hostname> <line>"), then the connection closes.
ECHO = ["sh", "-c", "printf '#!/bin/sh\\nread line\\necho \"store $(hostname) $line\"\\n' > /echo.sh"
        " && chmod +x /echo.sh && exec nc -ll -p 7000 -e /echo.sh"]
HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
SLEEP = ["sleep", "3600"]


def _mesh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    nodes = [f"m{run}-a", f"m{run}-b"]
    vip_range = f"10.213.{random.randrange(1, 255)}.0/24"
    pool = f"10.214.{16 * random.randrange(0, 16)}.0/20"
    engine = docker.from_env()
    cluster = LocalCluster(tmp_path_factory.mktemp("mesh-stack") / "c", mesh_vip_range=vip_range,
                           timing={"agent_heartbeat_s": 0.5, "node_lease_ttl_s": 3.0})
    ports = free_ports(len(nodes))
    bases = random.sample(range(22000, 29800, 200), len(nodes))
    try:
        cluster.start()
        cluster.wait_leader(timeout=30)
        for i, node in enumerate(nodes):
            cluster.start_agent(cluster.add_agent(
                node, labels={"zone": "ab"[i]}, port_base=bases[i],
                extra=f'\n[agent.proxy]\nlisten = "127.0.0.1:{ports[i]}"\n\n[agent.mesh]\nsubnet_pool = "{pool}"\n'))
        client = Client([m.url for m in cluster.masters], cluster.token(), timeout=15)
        wait_for(lambda: len([n for n in client.nodes() if n["status"] == "ready"]) == 2, 30, "agents registered",
                 cluster)
        yield {"cluster": cluster, "client": client, "nodes": nodes, "engine": engine,
               "proxies": [f"http://127.0.0.1:{p}" for p in ports], "vip_range": vip_range}
    finally:
        cluster.__exit__(None, None, None)
        cluster_id = cluster_id_of(cluster.secret_file.read_text().strip().encode())
        for node in nodes:
            for c in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
                c.remove(force=True)
        for net in engine.networks.list(filters={"label": f"orca.cluster={cluster_id}"}):
            net.remove()
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if lo_label(cluster_id) in line:
                subprocess.run(["ip", "addr", "del", line.split()[3], "dev", "lo"], capture_output=True)
        cleanup_cluster(cluster_id)  # the agents remove their own when they stop; this is for a killed one
        engine.close()


mesh_stack = pytest.fixture(scope="module")(_mesh_stack)


def _container(engine: Any, node_ids: list[str], service: str) -> Any:
    for node in node_ids:
        found = engine.containers.list(filters={"label": [f"orca.node={node}", f"orca.service={service}"]})
        if found:
            return found[0]
    return None


def _sh(container: Any, script: str) -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", script])
    return code, out.decode(errors="replace")


def _http(container: Any, host: str, port: int) -> tuple[int, str]:
    """GET / by name from inside a container: (status, body), status 0 when no HTTP answer came.
    busybox-static's wget crashes resolving names its /etc/hosts lacks; nc resolves them (A records)."""
    request = f"printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'"
    code, out = _sh(container, f"{request} | timeout 5 nc -w 3 {host} {port}")
    head, _, body = out.partition("\r\n\r\n")
    parts = head.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return 0, out
    return int(parts[1]), body


def test_the_walkthrough_caller_reaches_web_by_name(mesh_stack: dict[str, Any]) -> None:
    """docs/walkthrough.md's second service: examples/caller.json asks `web` (examples/web.json) by name
    every 5 s and logs the answer. Both are purged afterwards (the next test has its own `web`)."""
    client = mesh_stack["client"]
    try:
        for example in ("web.json", "caller.json"):
            client.deploy(json.loads((EXAMPLES / example).read_text())["services"])
        wait_for(converged(client, "web", 2), 90, "web healthy", mesh_stack["cluster"])
        wait_for(lambda: any("hello from" in line for line in client.logs("caller", tail=20)), 90,
                 "caller's log shows web's answer, asked by name", mesh_stack["cluster"])
    finally:
        for name in ("caller", "web"):
            client.stop(name, purge=True)

    def purged() -> bool:
        names = {row["name"] for row in client.status()}
        return not names & {"caller", "web"}
    wait_for(purged, 60, "the walkthrough's services purged")


def test_services_reach_each_other_by_name_over_http_and_tcp(mesh_stack: dict[str, Any]) -> None:
    client, engine, nodes = mesh_stack["client"], mesh_stack["engine"], mesh_stack["nodes"]
    proj, other = "shop", "elsewhere"
    store = {"name": "store", "project": proj, "image": IMAGE, "command": ECHO, "port": 7000, "protocol": "tcp",
         "health": {"tcp": 7000}, "internal": True, "replicas": 1, "resources": RES,
         "placement": {"labels": {"zone": "a"}}}
    client.deploy([
        store,
        {"name": "api", "project": proj, "image": IMAGE, "command": HTTPD, "port": 8080, "health": "/",
         "domain": f"api-{nodes[0]}.test", "replicas": 2, "resources": RES},
        {"name": "hidden", "project": proj, "image": IMAGE, "command": HTTPD, "port": 8080, "health": "/",
         "domain": f"hidden-{nodes[0]}.test", "internal": True, "replicas": 1, "resources": RES},
        {"name": "web", "project": proj, "image": IMAGE, "command": SLEEP, "replicas": 1, "resources": RES,
         "placement": {"labels": {"zone": "b"}}},
        {"name": "outsider", "project": other, "image": IMAGE, "command": SLEEP, "replicas": 1, "resources": RES},
    ])
    for name, n in (("store", 1), ("api", 2), ("hidden", 1)):
        wait_for(converged(client, name, n), 90, f"{name} healthy", mesh_stack["cluster"])
    wait_for(lambda: client.service("web")["replicas"]["running"] == 1, 60, "web running")
    wait_for(lambda: client.service("outsider")["replicas"]["running"] == 1, 60, "outsider running")
    vips = {name: client.service(name)["vip"] for name in ("store", "api", "hidden", "web")}
    assert len(set(vips.values())) == 4 and all(v.startswith(mesh_stack["vip_range"].rsplit(".", 2)[0])
                                                for v in vips.values()), vips
    web = _container(engine, nodes, "web")
    outsider = _container(engine, nodes, "outsider")
    store_node = client.service("store")["containers"][0]["node"]
    web_node = web.labels["orca.node"]
    assert store_node != web_node, "the store and the web must run on different agents"

    # TCP by name: one line in, the store's answer out.
    def tcp_ok() -> str | None:
        code, out = _sh(web, "echo ping | timeout 5 nc -w 3 store 7000")
        return out if code == 0 and "store " in out and out.strip().endswith("ping") else None
    out = wait_for(tcp_ok, 30, "web reaches store:7000 by name")
    # Both agents DNAT the VIP to the store's container address on its project network and its port: the
    # store's own agent because it runs on its node (no Docker port mapping on the way), the other because
    # the store's publish address is a loopback one (tests share one engine), which a bridge cannot reach.
    # The web's packets cross from its node's bridge to the store's: the DOCKER-USER rule lets them.
    store_c = _container(engine, [store_node], "store")
    store_ip = next(n["IPAddress"] for name, n in store_c.attrs["NetworkSettings"]["Networks"].items()
                    if name.startswith("orca-") and n.get("IPAddress"))
    cluster_id = cluster_id_of(mesh_stack["cluster"].secret_file.read_text().strip().encode())

    def mesh_rules(node: str) -> str:
        return subprocess.run(["nft", "list", "table", "ip", table_name(cluster_id, node)], capture_output=True,
                              text=True, timeout=20).stdout
    other_node = next(n for n in nodes if n != store_node)
    for node in nodes:
        wait_for(lambda node=node: f"{store_ip} . 7000" in mesh_rules(node), 30, f"{node} DNATs to the store")
    rules = subprocess.run(["iptables", "-w", "5", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    assert all(table_name(cluster_id, node) in rules for node in nodes), rules
    for _ in range(8):
        assert tcp_ok(), "web reaches store:7000 by name, every time"
    # The host reaches the VIP too (the output hook); this connection stays open across a table change below.
    held = socket.create_connection((vips["store"], 7000), timeout=5)
    # NAME.PROJECT resolves too, to the same VIP.
    code, out = _sh(web, "nslookup store.shop")
    assert code == 0 and vips["store"] in out, out
    # HTTP by name, balanced over both api replicas (each answers its hostname).
    seen: set[str] = set()
    last: list[str] = []

    def both_replicas() -> bool:
        status, body = _http(web, "api", 8080)
        if status == 200:
            seen.add(body.strip())
        last[:] = [f"{status} {body[:200]}"]
        return len(seen) == 2
    wait_for(both_replicas, 30, "web reaches both api replicas by name", extra=lambda: f"saw {seen}, last {last}")
    # internal: through the mesh yes, through the ingress never (404: no route for its domain).
    status, body = _http(web, "hidden", 8080)
    assert status == 200 and body.strip(), body
    status, _ = fetch(mesh_stack["proxies"][0], f"hidden-{nodes[0]}.test")
    assert status == 404
    status, body = fetch(mesh_stack["proxies"][0], f"api-{nodes[0]}.test")
    assert status == 200 and body.strip() in seen
    # Each agent's ingress reaches the api replicas of its own node at their address on the project
    # network (orca.agent.local_containers, the listing the mesh uses too), skipping Docker's port mapping.
    for api_c in [c for n in nodes for c in engine.containers.list(
            filters={"label": [f"orca.node={n}", "orca.service=api"]})]:
        api_ip = next(n["IPAddress"] for name, n in api_c.attrs["NetworkSettings"]["Networks"].items()
                      if name.startswith("orca-") and n.get("IPAddress"))
        line = f"server {api_c.labels['orca.alloc']} {api_ip}:8080 "
        cfg = mesh_stack["cluster"].root / api_c.labels["orca.node"] / "haproxy" / "haproxy.cfg"
        wait_for(lambda cfg=cfg, line=line: line in cfg.read_text(), 20, f"the ingress has {line}")

    # Another project: its names do not resolve there, and the VIP refuses it.
    code, out = _sh(outsider, "echo ping | timeout 5 nc -w 3 store.shop 7000")
    assert "store " not in out, out
    code, out = _sh(outsider, f"echo ping | timeout 5 nc -w 3 {vips['store']} 7000")
    assert "store " not in out, out
    status, _ = _http(outsider, "api", 8080)
    assert status == 0  # `api` is not a name in this project
    status, _ = _http(outsider, "api.shop", 8080)
    assert status == 0  # resolves, and the VIP closes the connection before a byte

    # allow_from opens it to that project, by NAME.PROJECT.
    client.deploy([{**store, "allow_from": [other]}])

    def outsider_ok() -> str | None:
        code, out = _sh(outsider, "echo ping | timeout 5 nc -w 3 store.shop 7000")
        return out if "store " in out else None
    wait_for(outsider_ok, 30, "allow_from lets the other project in")
    # The table was replaced meanwhile (one transaction); the connection opened before it keeps its mapping.
    try:
        held.sendall(b"held\n")
        answer = held.recv(200).decode(errors="replace")
    finally:
        held.close()
    assert answer.startswith("store ") and answer.strip().endswith("held"), answer

    # An agent that stops removes its own table and DOCKER-USER rule; the other agent's stay and serve.
    stopping = next(a for a in mesh_stack["cluster"].agents if a.node_id == store_node)
    mesh_stack["cluster"].kill(stopping, signal.SIGTERM)
    assert not mesh_rules(store_node) and mesh_rules(other_node)
    rules = subprocess.run(["iptables", "-w", "5", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    assert table_name(cluster_id, store_node) not in rules and table_name(cluster_id, other_node) in rules, rules
    # (The store's node is lost when its lease runs out, and the store with it: `api`, which may move, shows
    # the other table serving: the web's node is the other one.)
    wait_for(lambda: _http(web, "api", 8080)[0] == 200, 60, "the other agent's table still serves api")
