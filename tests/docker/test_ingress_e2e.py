"""The ingress behaviours that busybox httpd cannot show, on the real engine and the agents' real HAProxy.

3 masters, 2 agents (orca.devcluster), each agent's proxy on 127.0.0.1: the first balances round robin,
the second least connections (`[agent.proxy] strategy`). Replicas run orca-test/web (built locally by
scripts/ensure-web-image.sh: websocketd, i.e. Go's HTTP/1.1 keep-alive server, with a WebSocket echo,
`/headers` listing the request headers as CGI variables and `/sleep?S` answering after S seconds).
Routing by host, round robin, canary weights, 404/503 envelopes, retries on a killed replica and the
autoscaler's metrics are in test_traffic_e2e.py; route changes under load are timed in
tests/unit/test_proxy.py and scripts/bench/ingress.py; the rolling update at 200 requests/s
is the chaos tier's (tests/chaos/test_ingress_rolling_update.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_helpers import ProxyStack, containers_of, converged, proxy_stack_fixture, wait_for
from test_traffic_e2e import Load, fetch, hostnames, routed

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
WEB_IMAGE = "orca-test/web"
RES = {"memory": "32Mi", "cpu": 0.2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[ProxyStack]:
    built = subprocess.run([str(ROOT / "scripts" / "ensure-web-image.sh")], capture_output=True, text=True,
                           timeout=600)
    if built.returncode != 0:
        pytest.fail(f"scripts/ensure-web-image.sh failed:\n{built.stderr[-2000:]}")
    yield from proxy_stack_fixture(tmp_path_factory, docker_client, strategies=("round_robin", "least_conn"))


@pytest.fixture
def purge(stack: ProxyStack) -> Iterator[list[str]]:
    """Names appended here are purged after the test, whatever happened (the stack is shared)."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            stack.client.stop(name, purge=True)
        except Exception:  # noqa: BLE001 - best effort; the stack's teardown removes containers anyway
            pass
    wait_for(lambda: not any(containers_of(stack.nodes, n) for n in names), 30, "purged services removed")


def web(name: str, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": WEB_IMAGE, "port": 8080, "health": "/", "domain": f"{name}.orca.test",
            "replicas": replicas, "resources": RES, **extra}


def deployed(stack: ProxyStack, spec: dict[str, Any], proxies: list[str]) -> set[str]:
    """Deploy, wait for every replica healthy and routed by `proxies`; the replicas' hostnames."""
    cluster, client, _, _ = stack
    client.deploy([spec])
    wait_for(converged(client, spec["name"], spec["replicas"]), 60, f"{spec['name']}: replicas healthy", cluster)
    replicas = hostnames(client, spec["name"])
    for proxy in proxies:
        wait_for(lambda proxy=proxy: routed(proxy, spec["domain"], replicas), 20, f"{proxy} routes", cluster)
    return replicas


async def ws_echo(proxy: str, host: str, messages: list[str]) -> list[str]:
    """Open a WebSocket through `proxy` with `Host: host`, send each message, collect the echoes."""
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.ws_connect(proxy + "/", headers={"Host": host}) as sock:
        out = []
        for message in messages:
            await sock.send_str(message)
            reply = await sock.receive(timeout=10)
            assert reply.type is aiohttp.WSMsgType.TEXT, reply
            out.append(reply.data)
        return out


def cgi_vars(body: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


def test_websocket_and_forwarded_headers(stack: ProxyStack, purge: list[str]) -> None:
    purge.append("wsx")
    replicas = deployed(stack, web("wsx"), stack.proxies)
    host = "wsx.orca.test"
    for proxy in stack.proxies:  # an Upgrade is tunnelled both ways, through either strategy
        messages = [f"hello {i} through {proxy}" for i in range(5)]
        assert asyncio.run(ws_echo(proxy, host, messages)) == messages

    status, body = fetch(stack.proxies[0], host, "/headers", headers={
        "X-Forwarded-For": "203.0.113.9", "Connection": "keep-alive, X-Private", "X-Private": "secret",
        "Proxy-Authorization": "Basic eDp5", "X-Kept": "yes"})
    seen = cgi_vars(body)
    assert status == 200 and seen["name"] in replicas, body
    assert seen["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, 127.0.0.1", body  # appended, not replaced
    assert seen["HTTP_X_FORWARDED_PROTO"] == "http" and seen["HTTP_X_FORWARDED_HOST"] == host, body
    assert seen["HTTP_X_KEPT"] == "yes", body
    # Hop-by-hop: what `Connection` names, and Proxy-Authorization, never reach the replica.
    assert "HTTP_X_PRIVATE" not in seen and "HTTP_PROXY_AUTHORIZATION" not in seen, body
    status, body = fetch(stack.proxies[1], host, "/headers")
    assert status == 200 and cgi_vars(body)["HTTP_X_FORWARDED_FOR"] == "127.0.0.1", body


def servers_of(stack: ProxyStack, node: str) -> dict[str, str]:
    """alloc -> address of the servers in `node`'s HAProxy config."""
    text = (stack.cluster.root / node / "haproxy" / "haproxy.cfg").read_text()
    return {words[1]: words[2] for words in (line.split() for line in text.splitlines())
            if words[:1] == ["server"]}


def test_replicas_of_the_proxys_node_are_reached_at_their_container_address(stack: ProxyStack,
                                                                           purge: list[str]) -> None:
    """Each agent's HAProxy reaches the replicas of its own node at their container's address and port
    (over Docker's bridge, skipping docker-proxy) and the other node's at publish address:host port."""
    purge.append("near")
    deployed(stack, web("near", replicas=2, placement={"node": stack.nodes[0]}), stack.proxies)
    where: dict[str, tuple[str, str, str]] = {}  # alloc -> (node, container address, published "ip:port")
    for c in containers_of(stack.nodes, "near"):
        c.reload()
        binding = c.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
        where[c.labels["orca.alloc"]] = (c.labels["orca.node"], c.attrs["NetworkSettings"]["IPAddress"],
                                         f"{binding['HostIp']}:{binding['HostPort']}")
    assert len(where) == 2 and all(address for _, address, _ in where.values()), where

    def as_expected(node: str) -> bool:
        want = {alloc: f"{address}:8080" if on == node else published
                for alloc, (on, address, published) in where.items()}
        return {a: s for a, s in servers_of(stack, node).items() if a in where} == want
    for node in stack.nodes:
        wait_for(lambda node=node: as_expected(node), 20, f"{node}: local replicas by container address",
                 stack.cluster)
    assert {on for on, _, _ in where.values()} == {stack.nodes[0]}, where  # the second agent's are remote
    for proxy in stack.proxies:
        assert {fetch(proxy, "near.orca.test", "/headers")[0] for _ in range(8)} == {200}


def test_least_conn_sends_new_requests_to_the_idle_replica(stack: ProxyStack, purge: list[str]) -> None:
    purge.append("lcx")
    replicas = deployed(stack, web("lcx"), [stack.proxies[1]])
    host, proxy = "lcx.orca.test", stack.proxies[1]  # the least-connections one
    slow: dict[str, Any] = {}

    def hold() -> None:
        slow["answer"] = fetch(proxy, host, "/sleep?6", timeout=30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    time.sleep(1.0)  # the slow request is in flight on one replica
    quick = [fetch(proxy, host) for _ in range(12)]
    holder.join(40)
    assert not holder.is_alive()
    status, busy = slow["answer"]
    assert status == 200 and busy.strip() in replicas
    bodies = {body.strip() for code, body in quick if code == 200}
    print(f"least_conn: slow request on {busy.strip()}, 12 quick ones on {bodies}")
    assert all(code == 200 for code, _ in quick) and bodies == replicas - {busy.strip()}, (busy, quick)


def test_rolling_update_drains_in_flight_requests(stack: ProxyStack, purge: list[str]) -> None:
    """Replicas pinned to the first agent and traffic through its proxy: the agent drains a replica in its
    proxy before it stops it, so slow requests in flight at the update all get their answer from the old
    version, and a steady load sees no failure; afterwards only the new replicas are routed."""
    cluster, client, nodes, proxies = stack
    purge.append("drx")
    pinned = {"placement": {"node": nodes[0]}, "update": {"min_healthy_s": 0.5}}
    old = deployed(stack, web("drx", 3, env={"VERSION": "1"}, **pinned), [proxies[0]])
    host = "drx.orca.test"
    load = Load(proxies[0], host, concurrency=4, rate=40, duration=40).start()
    slow: list[tuple[int, str]] = []

    def hold() -> None:
        slow.append(fetch(proxies[0], host, "/sleep?4", timeout=30))

    holders = [threading.Thread(target=hold, daemon=True) for _ in range(6)]
    try:
        for t in holders:
            t.start()
        time.sleep(1.0)  # the slow requests are in flight on the old replicas
        client.deploy([web("drx", 3, env={"VERSION": "2"}, **pinned)])

        def updated() -> bool:
            return converged(client, "drx", 3)() and not (hostnames(client, "drx") & old)
        wait_for(updated, 90, "rolled to 3 new replicas", cluster)
        new = hostnames(client, "drx")
        wait_for(lambda: routed(proxies[0], host, new), 20, "routes to the new replicas only", cluster)
    finally:
        load.stop()
        load.join()
        for t in holders:
            t.join(40)
    print(f"rolling update: {load.total} requests, failures {load.failures[:5]}; slow answers {slow}")
    assert len(slow) == 6 and all(code == 200 and body.strip() in old for code, body in slow), slow
    assert load.total > 100 and not load.failures, load.failures[:10]
