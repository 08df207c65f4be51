"""`probe_agent`: what a direct probe of a silent node's agent proves (real sockets on 127.0.0.1).

A refused connection or another node at the address is proof the agent is gone; its own answer is proof
of life; a timeout proves nothing (a slow link looks like a dead host), so the lease TTL decides.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from orca.devcluster import free_ports
from orca.master.leases import probe_agent


async def _serve(handler: web.RequestHandler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/health", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)[0]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def agent_at() -> AsyncIterator[str]:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node_id": "n1"})
    async for url in _serve(health):
        yield url


@pytest.fixture
async def slow_agent() -> AsyncIterator[str]:
    async def health(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"status": "ok", "node_id": "n1"})
    async for url in _serve(health):
        yield url


async def test_own_answer_is_alive(agent_at: str) -> None:
    async with aiohttp.ClientSession() as session:
        assert await probe_agent(session, agent_at, "n1", 2.0) == "alive"


async def test_another_node_at_the_address_is_gone(agent_at: str) -> None:
    async with aiohttp.ClientSession() as session:
        assert await probe_agent(session, agent_at, "n2", 2.0) == "gone"


async def test_refused_connection_is_gone() -> None:
    with socket.socket() as s:  # a port that was just free and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        assert await probe_agent(session, f"http://127.0.0.1:{port}", "n1", 2.0) == "gone"


async def test_timeout_proves_nothing(slow_agent: str) -> None:
    async with aiohttp.ClientSession() as session:
        assert await probe_agent(session, slow_agent, "n1", 0.3) == "unknown"


async def test_garbage_answer_proves_nothing() -> None:
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="<html>", status=500)
    async for url in _serve(health):
        async with aiohttp.ClientSession() as session:
            assert await probe_agent(session, url, "n1", 2.0) == "unknown"
