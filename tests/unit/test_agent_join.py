"""The agent's side of node identity, in process against a fake leader: a join token in the config is
exchanged once for the node's credential, which is stored 0600, used for register and heartbeat, and
reused after a restart without asking again; a refused exchange is not retried on every master."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from orca import auth, jointoken
from orca.agent.agent import Agent
from orca.agent.credential import NODE_TOKEN_FILE, NONCE_FILE
from orca.agent.runtime import FakeRuntime
from orca.config import AgentConfig

KEY = b"k" * 32
JOIN = jointoken.make(jointoken.join_key(KEY), "ab" * 8)


class FakeLeader:
    """Answers the join exchange (or refuses it), registrations and heartbeats; records the bearers."""

    def __init__(self, refuse: int | None = None, node: str = "worker-1") -> None:
        self.refuse = refuse
        self.node = node
        self.joins: list[dict[str, Any]] = []
        self.bearers: dict[str, list[str]] = {"join": [], "register": [], "heartbeat": []}
        self.url = ""

    def app(self) -> web.Application:
        async def join(request: web.Request) -> web.Response:
            self.bearers["join"].append(request.headers.get("Authorization", ""))
            self.joins.append(await request.json())
            if self.refuse:
                return web.json_response({"error": "join token has already been used", "code": "UNAUTHORIZED"},
                                         status=self.refuse)
            token, claims = auth.mint_token(KEY, role="agent", name=self.node, node=self.node, now=1.0)
            return web.json_response({"node_id": self.node, "token": token, "jti": claims.jti}, status=201)

        async def register(request: web.Request) -> web.Response:
            self.bearers["register"].append(request.headers.get("Authorization", ""))
            return web.json_response({"node_id": "worker-1", "leader": self.url, "heartbeat_s": 0.05,
                                      "cluster_id": "0123456789abcdef"})

        async def heartbeat(request: web.Request) -> web.Response:
            self.bearers["heartbeat"].append(request.headers.get("Authorization", ""))
            return web.json_response({"directive": "continue", "leader": self.url})

        app = web.Application()
        app.router.add_post("/api/v1/agent/join", join)
        app.router.add_post("/api/v1/agent/register", register)
        app.router.add_post("/api/v1/agent/heartbeat", heartbeat)
        return app


def config(tmp_path: Path, masters: tuple[str, ...], token: str = JOIN) -> AgentConfig:
    return AgentConfig(path="test", agent_id="worker-1", masters=masters, token_file=tmp_path / "t",
                       token=token, data_dir=tmp_path / "data", memory_bytes=1 << 30, cpu=2.0)


async def test_join_once_then_reuse_the_stored_credential(aiohttp_server: Any, tmp_path: Path) -> None:
    leader = FakeLeader()
    server = await aiohttp_server(leader.app())
    leader.url = str(server.make_url("")).rstrip("/")
    agent = Agent(config(tmp_path, (leader.url,)), FakeRuntime("worker-1"))
    try:
        await agent.link.register()
        assert await agent.link.heartbeat_once() == "continue"
    finally:
        await agent.link.close()
    [sent] = leader.joins
    assert sent["node_id"] == "worker-1" and len(sent["nonce"]) >= 32
    assert leader.bearers["join"] == [f"Bearer {JOIN}"]
    stored = (tmp_path / "data" / NODE_TOKEN_FILE)
    assert stored.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "data" / NONCE_FILE).exists()
    credential = stored.read_text()
    assert auth.verify_token(KEY, credential).node == "worker-1"
    assert leader.bearers["register"] == [f"Bearer {credential}"] == leader.bearers["heartbeat"]

    # A restart: the stored credential is used, the (now used) join token is never sent again.
    again = Agent(config(tmp_path, (leader.url,)), FakeRuntime("worker-1"))
    try:
        await again.link.register()
    finally:
        await again.link.close()
    assert len(leader.joins) == 1 and leader.bearers["register"][-1] == f"Bearer {credential}"


async def test_a_node_token_in_the_config_wins_over_a_stored_one(aiohttp_server: Any, tmp_path: Path) -> None:
    leader = FakeLeader()
    server = await aiohttp_server(leader.app())
    leader.url = str(server.make_url("")).rstrip("/")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / NODE_TOKEN_FILE).write_text("stale")
    token, _ = auth.mint_token(KEY, role="agent", name="worker-1", node="worker-1", now=2.0)
    agent = Agent(config(tmp_path, (leader.url,), token=token), FakeRuntime("worker-1"))
    try:
        await agent.link.register()
    finally:
        await agent.link.close()
    assert leader.joins == [] and leader.bearers["register"] == [f"Bearer {token}"]


async def test_a_refused_exchange_stops_at_the_first_master(aiohttp_server: Any, tmp_path: Path) -> None:
    first, second = FakeLeader(refuse=401), FakeLeader()
    s1, s2 = await aiohttp_server(first.app()), await aiohttp_server(second.app())
    urls = (str(s1.make_url("")).rstrip("/"), str(s2.make_url("")).rstrip("/"))
    agent = Agent(config(tmp_path, urls), FakeRuntime("worker-1"))
    try:
        assert await agent.link.join() is False
        assert "already been used" in (agent.link.sync_error or "")
        nonce = first.joins[0]["nonce"]
        # A credential for another node is not taken either.
        agent.link.masters = [urls[1]]
        second.node = "worker-2"
        assert await agent.link.join() is False
        assert second.joins[0]["nonce"] == nonce  # the same nonce until a credential is stored
    finally:
        await agent.link.close()
    assert len(first.joins) == 1 and not (tmp_path / "data" / NODE_TOKEN_FILE).exists()
    assert agent.link.credential.token is None
