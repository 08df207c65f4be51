"""The agent API (push fencing, auth, logs), the status API and the link to the masters, in process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orca.agent.agent import Agent
from orca.agent.api import make_agent_api, make_status_api
from orca.agent.main import join_config, run_agent, run_join, serve
from orca.agent.proxy import MAX_REPLICAS_REPORTED
from orca.agent.runtime import FakeRuntime
from orca.config import AgentConfig, ProxyConfig
from orca.devcluster import free_ports
from orca.protocol import HEARTBEAT_MAX_BYTES, validate_heartbeat, validate_register

IMAGE = "orca-test/busybox:latest"
CLUSTER_ID = "0123456789abcdef"


def make_config(tmp_path: Path, masters: tuple[str, ...] = ("http://127.0.0.1:1",), **kw: Any) -> AgentConfig:
    token_file = tmp_path / "join.token"
    token_file.write_text("join-token\n")
    return AgentConfig(path="test", agent_id="worker-1", masters=masters, token_file=token_file,
                       token="join-token", data_dir=tmp_path / "data", memory_bytes=1 << 30, cpu=2.0, **kw)


def alloc(alloc_id: str, service: str = "web", domain: str | None = None) -> dict[str, Any]:
    return {"id": alloc_id, "service": service, "version": 1, "index": 0,
            "spec": {"name": service, "image": IMAGE, "command": None, "port": None, "health": None,
                     "env": {}, "domain": domain, "resources": {"memory": 1 << 26, "cpu": 0.1}}}


def push(term: int, version: int, *allocs: dict[str, Any]) -> dict[str, Any]:
    return {"term": term, "version": version, "allocations": list(allocs), "secrets": {}}


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(make_config(tmp_path), FakeRuntime("worker-1", images=[IMAGE]))


def bearer(agent: Agent) -> dict[str, str]:
    return {"Authorization": f"Bearer {agent.store.push_token}"}


def assert_envelope(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error", "code", "details", "timestamp"}
    assert body["code"] == code and isinstance(body["error"], str) and body["timestamp"].endswith("Z")


# -- push token, auth --------------------------------------------------------------------------------


async def test_push_token_is_private_and_survives_restarts(tmp_path: Path, agent: Agent) -> None:
    path = tmp_path / "data" / "push_token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Agent(make_config(tmp_path), FakeRuntime("worker-1"))
    assert again.store.push_token == agent.store.push_token and len(agent.store.push_token) >= 32


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer "])
async def test_push_needs_the_push_token(aiohttp_client: Any, agent: Agent, header: str | None) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    headers = {"Authorization": header} if header else {}
    resp = await client.put("/v1/allocations", json=push(1, 1), headers=headers)
    assert resp.status == 401
    assert_envelope(await resp.json(), "UNAUTHORIZED")
    resp = await client.get("/v1/logs/a1", headers=headers)
    assert resp.status == 401


@pytest.mark.parametrize("body", [b"{not json", b"[]", json.dumps({"term": 1}).encode(),
                                  json.dumps({"term": -1, "version": 1, "allocations": []}).encode(),
                                  json.dumps({"term": 1, "version": 1, "allocations": [{"id": "x"}]}).encode()])
async def test_bad_push_is_400_with_the_envelope(aiohttp_client: Any, agent: Agent, body: bytes) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    resp = await client.put("/v1/allocations", data=body, headers=bearer(agent))
    assert resp.status == 400
    assert_envelope(await resp.json(), "VALIDATION_ERROR")
    assert agent.store.term == 0 and not (agent.store.dir / "desired.json").exists()


# -- fencing -----------------------------------------------------------------------------------------


async def test_accepted_push_is_stored_and_reconciled(aiohttp_client: Any, agent: Agent) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    resp = await client.put("/v1/allocations", json=push(3, 7, alloc("a1")), headers=bearer(agent))
    assert resp.status == 200 and await resp.json() == {"accepted": True, "version": 7}
    data = agent.store.dir
    assert json.loads((data / "fence.json").read_text()) == {"term": 3, "version": 7}
    assert json.loads((data / "desired.json").read_text())["allocations"][0]["id"] == "a1"
    assert stat.S_IMODE(os.stat(data / "desired.json").st_mode) == 0o600
    await agent.reconciler.reconcile_once()
    await agent.reconciler.wait_idle()
    assert [c.alloc_id for c in agent.runtime.list()] == ["a1"]


async def test_older_version_in_the_same_term_is_ignored(aiohttp_client: Any, agent: Agent) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    assert (await (await client.put("/v1/allocations", json=push(2, 5, alloc("a1")),
                                    headers=bearer(agent))).json())["accepted"] is True
    resp = await client.put("/v1/allocations", json=push(2, 4), headers=bearer(agent))
    assert resp.status == 200 and (await resp.json())["accepted"] is False
    assert [a["id"] for a in agent.store.desired["allocations"]] == ["a1"]
    # Same version again is a harmless re-apply; a newer term may restart its version numbering.
    assert (await (await client.put("/v1/allocations", json=push(2, 5, alloc("a1")),
                                    headers=bearer(agent))).json())["accepted"] is True
    assert (await (await client.put("/v1/allocations", json=push(3, 1),
                                    headers=bearer(agent))).json())["accepted"] is True


async def test_a_push_from_another_cluster_is_409_even_after_a_restart(aiohttp_client: Any, tmp_path: Path,
                                                                      agent: Agent) -> None:
    """A fresh, empty cluster (every master's disk lost, not restored yet) must not empty this node."""
    client = await aiohttp_client(make_agent_api(agent))
    first = {**push(1, 1, alloc("a1")), "lineage": "c-old"}
    assert (await client.put("/v1/allocations", json=first, headers=bearer(agent))).status == 200
    for other in ({**push(9, 1), "lineage": "c-new"}, push(9, 2)):  # another id, or none
        resp = await client.put("/v1/allocations", json=other, headers=bearer(agent))
        assert resp.status == 409
        assert_envelope(await resp.json(), "STALE_LEADER")
    assert [a["id"] for a in agent.store.desired["allocations"]] == ["a1"]
    restarted = Agent(make_config(tmp_path), FakeRuntime("worker-1", images=[IMAGE]))
    assert restarted.store.lineage == "c-old"
    client2 = await aiohttp_client(make_agent_api(restarted))
    resp = await client2.put("/v1/allocations", json={**push(9, 3), "lineage": "c-new"}, headers=bearer(restarted))
    assert resp.status == 409
    # The same cluster after a restore: a higher term (its fence base), the same id: obeyed.
    resp = await client2.put("/v1/allocations", json={**push(1_000_002, 1, alloc("a1")), "lineage": "c-old"},
                             headers=bearer(restarted))
    assert resp.status == 200


async def test_stale_term_is_409_even_after_an_agent_restart(aiohttp_client: Any, tmp_path: Path,
                                                              agent: Agent) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    assert (await client.put("/v1/allocations", json=push(5, 1, alloc("a1")), headers=bearer(agent))).status == 200
    resp = await client.put("/v1/allocations", json=push(4, 99), headers=bearer(agent))
    assert resp.status == 409
    body = await resp.json()
    assert_envelope(body, "STALE_LEADER")
    assert body["details"]["seen_term"] == 5

    restarted = Agent(make_config(tmp_path), FakeRuntime("worker-1", images=[IMAGE]))
    assert restarted.reconciler.has_desired  # the saved set is resumed without any master
    client2 = await aiohttp_client(make_agent_api(restarted))
    resp = await client2.put("/v1/allocations", json=push(4, 100), headers=bearer(agent))
    assert resp.status == 409
    assert_envelope(await resp.json(), "STALE_LEADER")
    assert (await client2.put("/v1/allocations", json=push(5, 2), headers=bearer(agent))).status == 200


# -- logs, health ------------------------------------------------------------------------------------


async def test_logs_and_health(aiohttp_client: Any, agent: Agent) -> None:
    runtime: FakeRuntime = agent.runtime  # type: ignore[assignment]
    runtime.start(alloc("a1"), env={}, host_port=None)
    for i in range(5):
        runtime.add_log("a1", f"line {i}".encode())
    client = await aiohttp_client(make_agent_api(agent))
    resp = await client.get("/v1/logs/a1?tail=2&follow=0", headers=bearer(agent))
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert await resp.text() == "line 3\nline 4\n"
    resp = await client.get("/v1/logs/nope", headers=bearer(agent))
    assert resp.status == 404
    assert_envelope(await resp.json(), "NOT_FOUND")
    resp = await client.get("/v1/logs/a1?tail=x", headers=bearer(agent))
    assert resp.status == 400
    resp = await client.get("/v1/health")
    assert await resp.json() == {"status": "ok", "node_id": "worker-1"}


# -- status API --------------------------------------------------------------------------------------


async def test_status_api_shapes(aiohttp_client: Any, agent: Agent) -> None:
    agent.accept_push(push(1, 1, alloc("a1", "web", domain="web.example.com"), alloc("a2", "web")))
    await agent.reconciler.reconcile_once()
    await agent.reconciler.wait_idle()
    client = await aiohttp_client(make_status_api(agent))

    resp = await client.post("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}

    report = await (await client.post("/status")).json()
    assert set(report) == {"node", "deployments", "services"}
    node = report["node"]
    assert set(node) == {"name", "started_at", "last_sync_time", "git_head", "leader", "sync_error"}
    assert node["name"] == "worker-1" and node["started_at"].endswith("Z")
    assert node["last_sync_time"] is None and node["leader"] is None
    assert isinstance(node["git_head"], str) and len(node["git_head"]) == 40
    # orun keys deployments by the manifest's name: the service, its replicas listed inside
    assert set(report["deployments"]) == {"web"}
    dep = report["deployments"]["web"]
    assert set(dep) == {"name", "image", "container_id", "state", "changed_at", "replicas"}
    assert dep["name"] == "web" and dep["image"] == IMAGE and dep["state"] == "running"
    assert dep["container_id"] and dep["changed_at"].endswith("Z")
    assert [r["name"] for r in dep["replicas"]] == ["orca-web-a1", "orca-web-a2"]
    assert dep["container_id"] == dep["replicas"][0]["container_id"]
    assert report["services"] == {"web": {"name": "web", "deployment": "web",
                                          "domain": "web.example.com", "route_active": False}}


async def test_git_head_follows_the_desired_set(agent: Agent) -> None:
    assert agent.node_report()["node"]["git_head"] is None
    agent.accept_push(push(1, 1, alloc("a1", "web")))
    first = agent.node_report()["node"]["git_head"]
    agent.accept_push(push(1, 2, alloc("a1", "web"), alloc("a2", "web")))
    assert agent.node_report()["node"]["git_head"] not in (None, first)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_status_api_is_post_only(aiohttp_client: Any, agent: Agent, method: str) -> None:
    client = await aiohttp_client(make_status_api(agent))
    for path in ("/healthz", "/status"):
        resp = await client.request(method, path)
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert_envelope(await resp.json(), "METHOD_NOT_ALLOWED")


# -- the link to the masters -------------------------------------------------------------------------


class FakeMasters:
    """A leader that records what agents send, and a follower that redirects to it with 307."""

    def __init__(self) -> None:
        self.registered: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.directive = "continue"
        self.leader_url = ""
        self.cluster_id = CLUSTER_ID

    def leader_app(self) -> web.Application:
        async def register(request: web.Request) -> web.Response:
            self.auth.append(request.headers.get("Authorization"))
            self.registered.append(validate_register(await request.json()))
            return web.json_response({"node_id": "worker-1", "leader": self.leader_url,
                                      "heartbeat_s": 0.05, "lease_ttl_s": 1.0, "cluster_id": self.cluster_id})

        async def heartbeat(request: web.Request) -> web.Response:
            self.auth.append(request.headers.get("Authorization"))
            self.heartbeats.append(validate_heartbeat(await request.json()))
            return web.json_response({"directive": self.directive, "leader": self.leader_url,
                                      "orchestrator_time": 0.0})

        app = web.Application()
        app.router.add_post("/api/v1/agent/register", register)
        app.router.add_post("/api/v1/agent/heartbeat", heartbeat)
        return app

    def follower_app(self) -> web.Application:
        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(self.leader_url + request.path)

        app = web.Application()
        app.router.add_post("/{tail:.*}", redirect)
        return app


async def test_register_and_heartbeat_follow_307_and_keep_the_token(aiohttp_server: Any, tmp_path: Path) -> None:
    masters = FakeMasters()
    leader = await aiohttp_server(masters.leader_app())
    follower = await aiohttp_server(masters.follower_app())
    masters.leader_url = str(leader.make_url("")).rstrip("/")
    dead = "http://127.0.0.1:9"  # nothing listens: the agent must move on to the next master
    agent = Agent(make_config(tmp_path, masters=(dead, str(follower.make_url("")).rstrip("/"))),
                  FakeRuntime("worker-1", images=[IMAGE]))
    try:
        await agent.link.register()
        [reg] = masters.registered
        assert reg["push_token"] == agent.store.push_token and reg["capacity"] == {"memory": 1 << 30, "cpu": 2.0}
        assert agent.link.leader == masters.leader_url and agent.link.heartbeat_s == 0.05
        assert agent.runtime.cluster_id == CLUSTER_ID and agent.store.cluster_id == CLUSTER_ID

        agent.accept_push(push(2, 3, alloc("a1")))
        await agent.reconciler.reconcile_once()
        await agent.reconciler.wait_idle()
        assert await agent.link.heartbeat_once() == "continue"
        [hb] = masters.heartbeats
        assert hb["applied"] == {"term": 2, "version": 3}
        assert [a["alloc"] for a in hb["allocations"]] == ["a1"] and hb["allocations"][0]["status"] == "running"
        assert set(masters.auth) == {"Bearer join-token"}
        assert agent.link.last_sync is not None and agent.link.sync_error is None
    finally:
        await agent.link.close()


async def test_shutdown_directive_stops_containers_and_exits(aiohttp_server: Any, tmp_path: Path) -> None:
    masters = FakeMasters()
    masters.directive = "shutdown"
    leader = await aiohttp_server(masters.leader_app())
    masters.leader_url = str(leader.make_url("")).rstrip("/")
    runtime = FakeRuntime("worker-1", images=[IMAGE])
    runtime.start(alloc("a1"), env={}, host_port=None)
    agent = Agent(make_config(tmp_path, masters=(masters.leader_url,)), runtime)
    agent.accept_push(push(1, 1, alloc("a1")))
    assert await agent.run() == 0
    assert runtime.list() == []
    assert not (agent.store.dir / "desired.json").exists()


async def test_unreachable_masters_are_retried_without_a_hot_loop(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path, masters=("http://127.0.0.1:9", "http://127.0.0.1:11")),
                  FakeRuntime("worker-1"))
    try:
        assert await agent.link.heartbeat_once() is None
        assert "127.0.0.1:11" in agent.link.sync_error
    finally:
        await agent.link.close()


# -- entry points ------------------------------------------------------------------------------------


def test_bad_config_prints_one_line_and_returns_2(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[agent]\nid = 'w'\n")
    assert run_agent(str(bad)) == 2
    err = capsys.readouterr().err
    assert err.startswith("orca: ") and err.count("\n") == 1 and "agent.masters" in err
    assert run_join(["http://127.0.0.1:6880"], str(tmp_path / "missing.token"), id="w-1") == 2
    err = capsys.readouterr().err
    assert err.startswith("orca: orca join: --token-file") and err.count("\n") == 1


def test_join_config_uses_file_rules(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("tok")
    cfg = join_config(["http://127.0.0.1:6880/"], str(token), id="w-2", listen="127.0.0.1:6891",
                      status_listen="127.0.0.1:9101", data_dir=str(tmp_path / "d"), labels=["zone=a"],
                      host_port_range="21000-21099", memory="1Gi", cpu=None)
    assert cfg.agent_id == "w-2" and cfg.masters == ("http://127.0.0.1:6880",) and cfg.token == "tok"
    assert cfg.advertise == "http://127.0.0.1:6891" and cfg.labels == {"zone": "a"}
    assert cfg.host_port_range == (21000, 21099) and cfg.memory_bytes == 1 << 30 and cfg.cpu is None


# -- the ingress proxy and container stats in the agent ------------------------------------------------


def proxied(tmp_path: Path, masters: tuple[str, ...] = ("http://127.0.0.1:1",)) -> AgentConfig:
    [port] = free_ports(1)
    return make_config(tmp_path, masters, proxy=ProxyConfig(listen=f"127.0.0.1:{port}", drain_timeout_s=2.0))


def test_the_proxy_lists_this_nodes_containers_unless_told_not_to(tmp_path: Path) -> None:
    """With an engine runtime the agent gives its proxy the listing of this node's containers (their
    addresses on Docker's bridge or a mesh network of the cluster); `local_by_address = false` or a
    runtime without an engine: none (every replica at its published port)."""
    rows = [{"State": "running", "Labels": {"orca.alloc": "a1", "orca.node": "worker-1"},
             "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.5"}}},
             "Ports": [{"PrivatePort": 8080, "PublicPort": 20001, "Type": "tcp"}]},
            {"State": "running", "Labels": {"orca.alloc": "a2", "orca.node": "worker-2"},
             "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.6"}}}}]
    asked: list[Any] = []

    class Engine(FakeRuntime):
        @property
        def client(self) -> Any:
            api = type("Api", (), {"containers": lambda _self, **kw: asked.append(kw) or rows})()
            return type("Client", (), {"api": api})()

    runtime = Engine("worker-1")
    runtime.cluster_id = "0123456789abcdef"
    config = proxied(tmp_path)
    agent = Agent(config, runtime)
    assert agent.proxy is not None and agent.proxy.list_local is not None
    assert {a: (c.address, c.ports) for a, c in agent.proxy.list_local().items()} == {
        "a1": ("172.17.0.5", ((20001, 8080),))}
    assert asked == [{"filters": {"label": ["orca.cluster=0123456789abcdef"], "status": "running"}}]
    off = dataclasses.replace(config, proxy=ProxyConfig(local_by_address=False))
    assert Agent(off, Engine("worker-1")).proxy.list_local is None  # type: ignore[union-attr]
    assert Agent(config, FakeRuntime("worker-1")).proxy.list_local is None  # type: ignore[union-attr]


def routes(*endpoints: tuple[str, str], domain: str = "web.example.com", service: str = "web") -> dict[str, Any]:
    return {domain: {"service": service, "strategy": None, "canary_weight": None,
                     "endpoints": [{"alloc": a, "address": addr, "canary": False} for a, addr in endpoints]}}


async def test_register_and_heartbeat_carry_proxy_and_stats(aiohttp_server: Any, tmp_path: Path) -> None:
    masters = FakeMasters()
    leader = await aiohttp_server(masters.leader_app())
    masters.leader_url = str(leader.make_url("")).rstrip("/")
    config = proxied(tmp_path, (masters.leader_url,))
    runtime = FakeRuntime("worker-1", images=[IMAGE])
    agent = Agent(config, runtime)
    try:
        await agent.link.register()
        [reg] = masters.registered
        assert reg["publish_address"] == "127.0.0.1" and reg["proxy"] == config.proxy.listen

        agent.accept_push({**push(1, 1, alloc("a1", domain="web.example.com")),
                           "routes": routes(("a1", "127.0.0.1:9"))})
        await agent.reconciler.reconcile_once()
        await agent.reconciler.wait_idle()
        runtime.usage["a1"] = (12.5, 40.0)
        agent.stats.sample_once()
        agent.stats.sample_once()
        assert await agent.link.heartbeat_once() == "continue"
        [hb] = masters.heartbeats
        assert hb["stats"] == {"a1": {"cpu_pct": 12.5, "mem_pct": 40.0}}
        assert hb["proxy"]["web"]["requests"] == 0 and hb["proxy"]["web"]["replicas"] == {}
        assert len(hb["proxy"]["web"]["latency_buckets"]) == 13
    finally:
        await agent.link.close()


async def test_heartbeat_stays_under_64_kib_with_many_replicas(tmp_path: Path) -> None:
    agent = Agent(proxied(tmp_path), FakeRuntime("worker-1", images=[IMAGE]))
    proxy = agent.proxy
    assert proxy is not None
    table: dict[str, Any] = {}
    for s in range(40):
        table.update(routes(*((f"alloc-{s:02d}-{i:03d}-{'x' * 20}", f"127.0.0.1:{20000 + i}") for i in range(100)),
                            domain=f"s{s}.example.com", service=f"service-{s:02d}"))
    proxy.set_routes(table)
    for ep in proxy.endpoints.values():
        ep.requests, ep.errors = 123456, 7
    body = agent.link._heartbeat_body()
    size = len(json.dumps(body, separators=(",", ":")))
    assert size <= HEARTBEAT_MAX_BYTES
    assert validate_heartbeat(json.loads(json.dumps(body)))["proxy"].keys() == {f"service-{s:02d}" for s in range(40)}
    assert 0 < sum(len(v["replicas"]) for v in body["proxy"].values()) <= MAX_REPLICAS_REPORTED


async def test_pushed_routes_reach_the_proxy_and_stops_wait_for_its_drain(tmp_path: Path,
                                                                         aiohttp_server: Any) -> None:
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/", slow)
    upstream = await aiohttp_server(app, host="127.0.0.1")
    runtime = FakeRuntime("worker-1", images=[IMAGE])
    agent = Agent(proxied(tmp_path), runtime)
    proxy = agent.proxy
    assert proxy is not None and agent.reconciler.before_stop == proxy.drain
    await proxy.start()
    try:
        agent.accept_push({**push(1, 1, alloc("a1", domain="web.example.com")),
                           "routes": routes(("a1", f"127.0.0.1:{upstream.port}"))})
        await agent.reconciler.reconcile_once()
        await agent.reconciler.wait_idle()
        assert agent.node_report()["services"]["web"]["route_active"] is True
        assert await proxy.settled()  # HAProxy has reloaded with the route
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(session.get(f"http://127.0.0.1:{proxy.port}/",
                                                      headers={"Host": "web.example.com"}))
            for _ in range(100):
                if proxy.endpoints["a1"].active:
                    break
                await asyncio.sleep(0.02)
            agent.accept_push(push(1, 2))  # a1 leaves the desired set and the routes
            await agent.reconciler.reconcile_once()
            await asyncio.sleep(0.3)
            assert [c.alloc_id for c in runtime.list()] == ["a1"]  # not stopped while a request is in flight
            gate.set()
            resp = await request
            assert resp.status == 200 and await resp.text() == "done"
            resp.release()
        await agent.reconciler.wait_idle()
        assert runtime.list() == []
        assert agent.node_report()["services"] == {}
    finally:
        await proxy.stop()


async def test_serve_starts_and_stops_the_proxy_with_the_agent(tmp_path: Path) -> None:
    api_port, status_port = free_ports(2)
    config = dataclasses.replace(proxied(tmp_path), listen=f"127.0.0.1:{api_port}",
                                 status_listen=f"127.0.0.1:{status_port}")
    task = asyncio.create_task(serve(config, FakeRuntime("worker-1", images=[IMAGE])))
    url = f"http://{config.proxy.listen}/"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url, headers={"Host": "nothing.example.com"}) as resp:
                        assert resp.status == 404
                        assert (await resp.json())["error"]["code"] == "NOT_FOUND"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the proxy never listened")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url)


async def test_cluster_id_is_learnt_once_kept_and_another_cluster_is_refused(aiohttp_server: Any,
                                                                            tmp_path: Path) -> None:
    masters = FakeMasters()
    leader = await aiohttp_server(masters.leader_app())
    masters.leader_url = str(leader.make_url("")).rstrip("/")
    runtime = FakeRuntime("worker-1")
    agent = Agent(make_config(tmp_path, masters=(masters.leader_url,)), runtime)
    assert runtime.cluster_id is None and agent.store.cluster_id is None
    try:
        await agent.link.register()
        assert runtime.cluster_id == CLUSTER_ID
        assert (agent.store.dir / "cluster_id").read_text() == CLUSTER_ID
    finally:
        await agent.link.close()
    # A restarted agent knows its cluster before any master answers: its runtime may adopt containers.
    again = Agent(make_config(tmp_path, masters=(masters.leader_url,)), FakeRuntime("worker-1"))
    assert again.runtime.cluster_id == CLUSTER_ID
    masters.cluster_id = "fedcba9876543210"  # masters of another cluster (another secret)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(again.link.register(), 1.0)
        assert "belongs to cluster 0123456789abcdef" in (again.link.sync_error or "")
        assert again.runtime.cluster_id == CLUSTER_ID
    finally:
        await again.link.close()
