"""Agents follow the cluster's member list (orca.agent.masters): the list's validation, its persistence, and
an agent whose configured master is replaced moving to the masters the leader named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from orca.agent.agent import Agent
from orca.agent.masters import MAX_MASTERS, MasterList, valid_master_list
from orca.agent.runtime import FakeRuntime
from orca.protocol import validate_heartbeat
from tests.unit.test_agent_api import CLUSTER_ID, IMAGE, make_config


def test_valid_lists() -> None:
    assert valid_master_list(["http://10.0.0.1:7000/", "http://m2:7000", "http://10.0.0.1:7000"], False) == \
        ["http://10.0.0.1:7000", "http://m2:7000"]
    assert valid_master_list(["https://[::1]:7000"], True) == ["https://[::1]:7000"]


def test_refused_lists() -> None:
    for bad in (None, [], "http://m1:7000", [1], ["ftp://m1"], ["http://"], ["http://u:p@m1:7000"],
                ["http://m1:7000/x"], ["http://m1:7000?a=1"], ["http://m1:7000#f"], ["http://m1:99999"],
                ["http://m1:7000", "bogus"], ["http://m1:7000\n"], ["http://mü:7000"], ["http://" + "a" * 600],
                [f"http://m{i}:7000" for i in range(MAX_MASTERS + 1)]):
        assert valid_master_list(bad, False) is None, bad
    # A cluster configured with https never takes plain http (no downgrade of the credential's link).
    assert valid_master_list(["http://m1:7000"], True) is None


@given(st.lists(st.text(max_size=40) | st.integers() | st.none(), max_size=20))
def test_anything_is_a_list_or_none(value: list[Any]) -> None:
    out = valid_master_list(value, False)
    assert out is None or (0 < len(out) <= MAX_MASTERS and all(u.startswith(("http://", "https://")) for u in out))


def test_learnt_list_is_kept_across_restarts(tmp_path: Path) -> None:
    ml = MasterList(["http://m1:7000"], tmp_path)
    assert ml.urls == ["http://m1:7000"]
    assert ml.learn(["http://m2:7000", "http://m3:7000"]) is True
    assert ml.learn(["http://m2:7000", "http://m3:7000"]) is False
    assert ml.urls == ["http://m2:7000", "http://m3:7000", "http://m1:7000"]  # configured: tried last
    again = MasterList(["http://m1:7000"], tmp_path)
    assert again.urls == ["http://m2:7000", "http://m3:7000", "http://m1:7000"]
    (tmp_path / "masters.json").write_text(json.dumps({"masters": ["javascript:alert(1)"]}))
    assert MasterList(["http://m1:7000"], tmp_path).urls == ["http://m1:7000"]
    (tmp_path / "masters.json").write_bytes(b"\xff" * 10)
    assert MasterList(["http://m1:7000"], tmp_path).urls == ["http://m1:7000"]


class _Master:
    """A leader that names the masters of the cluster in its answers."""

    def __init__(self) -> None:
        self.heartbeats = 0
        self.masters: list[str] = []
        self.url = ""

    def app(self) -> web.Application:
        async def register(request: web.Request) -> web.Response:
            return web.json_response({"node_id": "worker-1", "leader": self.url, "masters": self.masters,
                                      "heartbeat_s": 0.05, "lease_ttl_s": 1.0, "cluster_id": CLUSTER_ID})

        async def heartbeat(request: web.Request) -> web.Response:
            validate_heartbeat(await request.json())
            self.heartbeats += 1
            return web.json_response({"directive": "continue", "leader": self.url, "masters": self.masters,
                                      "orchestrator_time": 0.0})

        app = web.Application()
        app.router.add_post("/api/v1/agent/register", register)
        app.router.add_post("/api/v1/agent/heartbeat", heartbeat)
        return app


async def test_an_agent_follows_the_masters_the_leader_names(aiohttp_server: Any, tmp_path: Path) -> None:
    old, new = _Master(), _Master()
    old_server = await aiohttp_server(old.app())
    new_server = await aiohttp_server(new.app())
    old.url = str(old_server.make_url("")).rstrip("/")
    new.url = str(new_server.make_url("")).rstrip("/")
    # The cluster's list: the old master was removed, the new one added (add-master / remove-master).
    old.masters = new.masters = [new.url]
    agent = Agent(make_config(tmp_path, masters=(old.url,)), FakeRuntime("worker-1", images=[IMAGE]))
    try:
        await agent.link.register()
        assert agent.link.masters == [new.url, old.url]
        await old_server.close()  # the configured master is gone for good
        agent.link.leader = None
        assert await agent.link.heartbeat_once() == "continue"
        assert new.heartbeats == 1
    finally:
        await agent.link.close()
    # A restart with the same (stale) config still finds the cluster.
    again = Agent(make_config(tmp_path, masters=(old.url,)), FakeRuntime("worker-1", images=[IMAGE]))
    try:
        assert again.link.masters[0] == new.url
    finally:
        await again.link.close()
