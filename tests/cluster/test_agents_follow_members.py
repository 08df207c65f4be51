"""An agent follows the cluster's member list, with real masters: configured with one master only, it
learns the others from the leader's answers, keeps heartbeating after that master is removed from the
cluster and killed, and learns a master added at runtime (an in-process agent on a fake container
runtime: the masters are what is under test)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orca.agent.agent import Agent
from orca.agent.runtime import FakeRuntime
from orca.client import Client
from orca.config import AgentConfig
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster


async def _heartbeat_until(agent: Agent, ok, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        directive = await agent.link.heartbeat_once()
        if directive == "register":
            await agent.link.register()
        if directive == "continue" and ok():
            return
        assert time.monotonic() < deadline, (agent.link.masters, agent.link.sync_error)
        await asyncio.sleep(0.2)


async def test_an_agent_follows_add_and_remove_master(cluster: LocalCluster, tmp_path: Path) -> None:
    first = cluster.masters[0]
    token_file = tmp_path / "agent.token"
    token_file.write_text(cluster.token("agent", "worker-1") + "\n")
    config = AgentConfig(path="test", agent_id="worker-1", masters=(first.url,), token_file=token_file,
                         token=token_file.read_text().strip(), data_dir=tmp_path / "agent", memory_bytes=1 << 30,
                         cpu=2.0, heartbeat_s=0.2)
    agent = Agent(config, FakeRuntime("worker-1"))
    admin = Client([m.url for m in cluster.masters], cluster.token(), timeout=15.0, retries=10)
    try:
        await agent.link.register()
        await _heartbeat_until(agent, lambda: set(agent.link.masters) == {m.url for m in cluster.masters})

        # Grow: master-4 joins; the agent hears of it from the next heartbeats.
        new = cluster.launch_new_master("master-4")
        admin.add_master("master-4", f"127.0.0.1:{new.raft_port}", new.url)
        cluster.masters.append(new)
        await _heartbeat_until(agent, lambda: new.url in agent.link.masters)

        # Shrink: the one master of the agent's config leaves the cluster and dies.
        # (If it leads, the first answer is a 503 while leadership moves; the client retries.)
        admin.remove_master(first.node_id)
        cluster.kill(first)
        cluster.masters.remove(first)
        await _heartbeat_until(agent, lambda: agent.link.masters[:3] == sorted(
            (m.url for m in cluster.masters), key=lambda u: next(m.node_id for m in cluster.masters if m.url == u)))
        assert agent.link.masters[-1] == first.url  # the configured one stays, tried last
        before = agent.link.last_sync
        await _heartbeat_until(agent, lambda: agent.link.last_sync != before)
    finally:
        admin.close()
        await agent.link.close()
