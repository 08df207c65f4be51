"""The ingress proxy (orca.agent.proxy: a real HAProxy) with real aiohttp upstreams on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orca.agent import haproxy_config as hc
from orca.agent.local_containers import LocalContainer
from orca.agent.proxy import MAX_LOG_RATE, Proxy, haproxy_binary, hostname
from orca.config import ProxyConfig
from orca.devcluster import free_ports
from orca.protocol import LATENCY_BUCKETS_MS

DOMAIN = "web.example.com"

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="HAProxy not installed (scripts/ensure-docker.sh)")


class Upstream:
    """A replica: answers its name, echoes headers and bodies, streams, sleeps on demand, echoes WebSockets."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.gate = asyncio.Event()  # /hold waits for it
        self.holding = 0

    def app(self) -> web.Application:
        async def index(request: web.Request) -> web.Response:
            self.hits += 1
            return web.Response(text=self.name)

        async def hold(request: web.Request) -> web.Response:
            self.hits += 1
            self.holding += 1
            try:
                await self.gate.wait()
            finally:
                self.holding -= 1
            return web.Response(text=self.name)

        async def sleep(request: web.Request) -> web.Response:
            await asyncio.sleep(float(request.query["s"]))
            return web.Response(text=self.name)

        async def headers(request: web.Request) -> web.Response:
            return web.json_response({"name": self.name, "headers": [[k, v] for k, v in request.headers.items()],
                                      "path": request.path_qs})

        async def upload(request: web.Request) -> web.Response:
            digest, size = hashlib.sha256(), 0
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
            return web.json_response({"size": size, "sha256": digest.hexdigest()})

        async def big(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(request)
            for i in range(int(request.query.get("n", "64"))):
                await resp.write(bytes([i % 256]) * 65536)
            await resp.write_eof()
            return resp

        async def drip(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"first\n")
            await self.gate.wait()
            await resp.write(b"second\n")
            await resp.write_eof()
            return resp

        async def fail(request: web.Request) -> web.Response:
            return web.Response(status=500, text="boom")

        async def nothing(request: web.Request) -> web.Response:
            return web.Response(status=204)

        async def ws(request: web.Request) -> web.WebSocketResponse:
            sock = web.WebSocketResponse(protocols=("echo.v1",))
            await sock.prepare(request)
            async for msg in sock:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    if msg.data == "close":
                        await sock.close(code=4001, message=b"bye")
                    else:
                        await sock.send_str(f"{self.name}:{msg.data}")
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    await sock.send_bytes(msg.data[::-1])
            return sock

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/", index)
        app.router.add_get("/hold", hold)
        app.router.add_get("/sleep", sleep)
        app.router.add_route("*", "/headers", headers)
        app.router.add_post("/upload", upload)
        app.router.add_get("/big", big)
        app.router.add_get("/drip", drip)
        app.router.add_get("/fail", fail)
        app.router.add_get("/nothing", nothing)
        app.router.add_get("/ws", ws)
        return app


Start = Callable[[str], Awaitable[tuple[Upstream, str]]]


@pytest.fixture
async def upstreams(aiohttp_server: Any) -> Start:
    async def start(name: str) -> tuple[Upstream, str]:
        up = Upstream(name)
        server = await aiohttp_server(up.app(), host="127.0.0.1")
        return up, f"127.0.0.1:{server.port}"
    return start


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    [port] = free_ports(1)
    p = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}", request_timeout_s=2.0, upstream_connect_timeout_s=1.0,
                          drain_timeout_s=5.0))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def table(endpoints: list[tuple[str, str] | tuple[str, str, bool]], *, strategy: str | None = None,
          canary_weight: float | None = None, service: str = "web", domain: str = DOMAIN) -> dict[str, Any]:
    eps = [{"alloc": e[0], "address": e[1], "canary": bool(e[2]) if len(e) > 2 else False} for e in endpoints]
    return {domain: {"service": service, "strategy": strategy, "canary_weight": canary_weight, "endpoints": eps}}


async def apply(proxy: Proxy, routes: dict[str, Any]) -> None:
    """Set the routes and wait until HAProxy serves them (a reload, well under a second)."""
    started = time.monotonic()
    proxy.set_routes(routes)
    assert await proxy.settled()
    assert time.monotonic() - started < 5


def url(proxy: Proxy, path: str = "/") -> str:
    return f"http://127.0.0.1:{proxy.port}{path}"


async def get(client: aiohttp.ClientSession, proxy: Proxy, path: str = "/", host: str = DOMAIN,
              **kw: Any) -> tuple[int, str]:
    async with client.get(url(proxy, path), headers={"Host": host, **kw.pop("headers", {})}, **kw) as resp:
        return resp.status, await resp.text()


# -- routing and balancing ---------------------------------------------------------------------------


def test_hostname() -> None:
    assert hostname("Web.Example.COM:8080") == "web.example.com"
    assert hostname("web.example.com.") == "web.example.com"
    assert hostname("[::1]:8080") == "::1"
    assert hostname(None) == "" and hostname("") == ""


async def test_unknown_host_is_404_and_no_replica_is_503(proxy: Proxy, client: aiohttp.ClientSession) -> None:
    await apply(proxy, table([]))
    async with client.get(url(proxy), headers={"Host": "nope.example.com"}) as resp:
        assert resp.status == 404 and resp.content_type == "application/json"
        assert await resp.json() == {"error": {"code": "NOT_FOUND", "message": "no service for host nope.example.com",
                                               "details": {"host": "nope.example.com"}}}
    async with client.get(url(proxy), headers={"Host": 'q"\\x.example.com'}) as resp:  # escaped, still JSON
        assert resp.status == 404 and (await resp.json())["error"]["details"] == {"host": 'q"\\x.example.com'}
    async with client.get(url(proxy), headers={"Host": "WEB.example.com:80"}) as resp:
        assert resp.status == 503 and resp.content_type == "application/json"
        assert await resp.json() == {"error": {"code": "NO_HEALTHY_REPLICA", "message": "no healthy replica for web",
                                               "details": {"service": "web"}}}
    assert not proxy.route_active("web")


async def test_round_robin_is_even(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    ups = [await upstreams(f"r{i}") for i in range(3)]
    await apply(proxy, table([(f"a{i}", addr) for i, (_, addr) in enumerate(ups)]))
    assert proxy.route_active("web")
    seen = collections.Counter([(await get(client, proxy))[1] for _ in range(300)])
    assert seen == {"r0": 100, "r1": 100, "r2": 100}
    # Concurrent requests too: the counts stay within one of each other.
    results = await asyncio.gather(*(get(client, proxy) for _ in range(151)))
    seen = collections.Counter(body for status, body in results if status == 200)
    assert sum(seen.values()) == 151 and max(seen.values()) - min(seen.values()) <= 1


async def test_least_conn_prefers_the_idle_replica(proxy: Proxy, client: aiohttp.ClientSession,
                                                   upstreams: Start) -> None:
    (busy, busy_addr), (idle, idle_addr) = await upstreams("busy"), await upstreams("idle")
    await apply(proxy, table([("a-busy", busy_addr), ("a-idle", idle_addr)], strategy="least_conn"))
    held = [asyncio.create_task(get(client, proxy, "/hold")) for _ in range(2)]
    for _ in range(100):  # the two held requests went one to each replica; free the idle one's
        if busy.holding + idle.holding == 2:
            break
        await asyncio.sleep(0.02)
    assert busy.holding == 1 and idle.holding == 1
    idle.gate.set()
    for _ in range(100):
        if idle.holding == 0:
            break
        await asyncio.sleep(0.02)
    busy.hits = idle.hits = 0
    results = [await get(client, proxy) for _ in range(20)]
    assert all(body == "idle" for _, body in results) and busy.hits == 0
    busy.gate.set()
    assert [s for s, _ in await asyncio.gather(*held)] == [200, 200]
    # With nothing in flight, least_conn rotates like round robin.
    seen = collections.Counter([(await get(client, proxy))[1] for _ in range(20)])
    assert seen == {"busy": 10, "idle": 10}


async def test_route_strategy_defaults_to_the_config(upstreams: Start) -> None:
    [port] = free_ports(1)
    p = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}", strategy="least_conn"))
    _, addr = await upstreams("x")
    p.set_routes(table([("a1", addr)]))
    assert p.routes[DOMAIN].strategy == "least_conn"
    p.set_routes(table([("a1", addr)], strategy="round_robin"))
    assert p.routes[DOMAIN].strategy == "round_robin"


async def test_canary_gets_its_weight(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    ups = [await upstreams(f"s{i}") for i in range(4)] + [await upstreams("canary")]
    eps = [(f"a{i}", addr, name == "canary") for i, (name, addr) in enumerate((u.name, a) for u, a in ups)]
    await apply(proxy, table(eps, canary_weight=0.2))
    results = await asyncio.gather(*(get(client, proxy) for _ in range(1000)))
    seen = collections.Counter(body for _, body in results)
    assert sum(seen.values()) == 1000
    assert 170 <= seen["canary"] <= 230, seen
    for i in range(4):  # the stable ones share the rest evenly
        assert abs(seen[f"s{i}"] - 200) <= 5, seen
    # Without a weight, the canaries get their share of the endpoints: 1 of 5.
    await apply(proxy, table(eps))
    seen = collections.Counter([(await get(client, proxy))[1] for _ in range(500)])
    assert seen["canary"] == 100, seen
    # Weight 0: never; and a canary alone still serves (better than a 503).
    await apply(proxy, table(eps, canary_weight=0.0))
    assert "canary" not in {(await get(client, proxy))[1] for _ in range(50)}
    await apply(proxy, table([eps[-1]], canary_weight=0.0))
    assert await get(client, proxy) == (200, "canary")


# -- what is forwarded ---------------------------------------------------------------------------------


async def test_forwarded_headers_and_hop_by_hop(proxy: Proxy, client: aiohttp.ClientSession,
                                                upstreams: Start) -> None:
    _, addr = await upstreams("h")
    await apply(proxy, table([("a1", addr)]))
    headers = {"Host": "Web.Example.com:8080", "X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https",
               "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "X-Kept": "yes",
               "Proxy-Authorization": "Basic abc"}
    async with client.get(url(proxy, "/headers?q=a%20b&x=1"), headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    got = {k.lower(): v for k, v in body["headers"]}
    assert got["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == "Web.Example.com:8080"
    assert got["host"] == "Web.Example.com:8080"  # passed through: the upstream may route on it too
    assert got["x-kept"] == "yes"
    assert "x-secret-hop" not in got and "proxy-authorization" not in got
    assert "user-agent" in got and "accept-encoding" in got  # the client's own, not the proxy's
    assert body["path"] == "/headers?q=a%20b&x=1"
    async with client.get(url(proxy, "/headers"), headers={"Host": DOMAIN}) as resp:
        got = {k.lower(): v for k, v in (await resp.json())["headers"]}
    assert got["x-forwarded-for"] == "127.0.0.1"


async def test_large_header_block_is_forwarded(proxy: Proxy, client: aiohttp.ClientSession,
                                               upstreams: Start) -> None:
    """hc.BUFSIZE bounds a request's header block: 12 KiB of headers (big cookies, tokens) still fit."""
    _, addr = await upstreams("h")
    await apply(proxy, table([("a1", addr)]))
    big = {f"X-Big-{i}": os.urandom(1500).hex() for i in range(4)}  # 4 x 3000 bytes
    async with client.get(url(proxy, "/headers"), headers={"Host": DOMAIN, **big}) as resp:
        assert resp.status == 200
        got = {k.lower(): v for k, v in (await resp.json())["headers"]}
    assert all(got[k.lower()] == v for k, v in big.items())


async def test_bodies_stream_both_ways(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    up, addr = await upstreams("b")
    await apply(proxy, table([("a1", addr)]))
    payload = os.urandom(3 * 2**20)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    async with client.post(url(proxy, "/upload"), data=chunks(), headers={"Host": DOMAIN}) as resp:
        assert await resp.json() == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    async with client.post(url(proxy, "/upload"), data=io.BytesIO(payload), headers={"Host": DOMAIN}) as resp:
        assert (await resp.json())["size"] == len(payload)
    async with client.get(url(proxy, "/big?n=80"), headers={"Host": DOMAIN}) as resp:
        data = await resp.read()
    assert len(data) == 80 * 65536 and data[-1] == 79
    # The first chunk of a response reaches the client while the upstream is still writing it.
    async with client.get(url(proxy, "/drip"), headers={"Host": DOMAIN}) as resp:
        assert await asyncio.wait_for(resp.content.readline(), 2) == b"first\n"
        up.gate.set()
        assert await resp.content.read() == b"second\n"


async def test_head_204_and_upstream_5xx(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    _, addr = await upstreams("x")
    await apply(proxy, table([("a1", addr)]))
    async with client.head(url(proxy, "/"), headers={"Host": DOMAIN}) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "1"
    async with client.get(url(proxy, "/nothing"), headers={"Host": DOMAIN}) as resp:
        assert resp.status == 204 and await resp.read() == b""
    assert await get(client, proxy, "/fail") == (500, "boom")
    assert await get(client, proxy, "/missing") == (404, "404: Not Found")


async def test_websocket_echo(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    _, addr = await upstreams("w")
    await apply(proxy, table([("a1", addr)]))
    async with client.ws_connect(url(proxy, "/ws"), headers={"Host": DOMAIN}, protocols=("echo.v1",)) as ws:
        assert ws.protocol == "echo.v1"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=2)).data == "w:hello"
        await ws.send_bytes(b"abc")
        assert (await ws.receive(timeout=2)).data == b"cba"
        await until(lambda: proxy.stats()["web"]["active"] == 1)
        await ws.send_str("close")  # the upstream closes: the client sees its code
        msg = await ws.receive(timeout=2)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4001
    for _ in range(50):
        if proxy.stats()["web"]["active"] == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.stats()["web"]["active"] == 0 and proxy.endpoints["a1"].active == 0
    # A client that closes first.
    async with client.ws_connect(url(proxy, "/ws"), headers={"Host": DOMAIN}) as ws:
        await ws.send_str("x")
        assert (await ws.receive(timeout=2)).data == "w:x"
    for _ in range(50):
        if proxy.endpoints["a1"].active == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.endpoints["a1"].active == 0


async def test_replica_changes_use_the_runtime_api_and_keep_open_connections(
        proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    """Replicas added, reweighted and removed are applied to the running worker (no new HAProxy
    process): a WebSocket open through it, even to the removed replica, keeps working; a service
    added is a reload."""
    (_, a_addr), (_, b_addr) = await upstreams("a"), await upstreams("b")
    await apply(proxy, table([("a", a_addr)]))
    workers = await proxy._workers()
    async with client.ws_connect(url(proxy, "/ws"), headers={"Host": DOMAIN}) as ws:
        await apply(proxy, table([("a", a_addr), ("b", b_addr, True)], canary_weight=0.5))
        assert {(await get(client, proxy))[1] for _ in range(4)} == {"a", "b"}
        await apply(proxy, table([("b", b_addr)]))  # "a" leaves: in maintenance, its tunnel stays
        assert [(await get(client, proxy))[1] for _ in range(4)] == ["b"] * 4
        await ws.send_str("still there")
        assert (await ws.receive(timeout=5)).data == "a:still there"
        assert await proxy._workers() == workers  # the same worker did all of it
    await until(lambda: not proxy._parked, timeout=15)  # "a" deleted once idle
    await apply(proxy, table([("a", a_addr), ("b", b_addr)]))  # and added again at run time
    assert {(await get(client, proxy))[1] for _ in range(4)} == {"a", "b"} and await proxy._workers() == workers
    await apply(proxy, {**table([("b", b_addr)]), **table([], service="api", domain="api.example.com")})
    assert await proxy._workers() != workers  # a new backend: a reload
    assert [(await get(client, proxy))[1] for _ in range(3)] == ["b"] * 3


async def test_local_replicas_are_reached_at_their_container_address_and_move_at_run_time(
        upstreams: Start, client: aiohttp.ClientSession) -> None:
    """A replica this node runs (listed by `list_local`) is reached at its container's address and port,
    another at its published address; an address learned later, changed (a restart) or forgotten moves
    the server through the runtime API (the same worker); a container not listed yet keeps its
    published port."""
    (_, pub), (_, inner), (_, moved), (_, other) = (await upstreams("published"), await upstreams("container"),
                                                    await upstreams("restarted"), await upstreams("remote"))
    pub_port, inner_port, moved_port = (int(a.rpartition(":")[2]) for a in (pub, inner, moved))
    listed: dict[str, LocalContainer] = {"l1": LocalContainer("127.0.0.1", ((pub_port, inner_port),))}
    [port] = free_ports(1)
    p = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}", request_timeout_s=2.0, upstream_connect_timeout_s=1.0,
                          drain_timeout_s=5.0))
    p.list_local = lambda: dict(listed)
    p.set_routes(table([("l1", pub)]))
    await p.start()
    try:
        assert {(await get(client, p))[1] for _ in range(3)} == {"container"}
        assert f"server l1 127.0.0.1:{inner_port} " in p._config_text
        workers = await p._workers()
        await apply(p, table([("l1", pub), ("r1", other)]))  # another node's replica: its published address
        assert {(await get(client, p))[1] for _ in range(4)} == {"container", "remote"}
        listed["l1"] = LocalContainer("127.0.0.1", ((pub_port, moved_port),))  # restarted: a new address
        assert await p._refresh_local()
        p._changed.set()
        await until(lambda: f"server l1 127.0.0.1:{moved_port} " in p._config_text, timeout=10)
        assert {(await get(client, p))[1] for _ in range(4)} == {"restarted", "remote"}
        listed.clear()  # not listed (yet, or any more): its published port
        assert await p._refresh_local()
        p._changed.set()
        await until(lambda: f"server l1 {pub} " in p._config_text, timeout=10)
        assert {(await get(client, p))[1] for _ in range(4)} == {"published", "remote"}
        assert await p._workers() == workers  # every move at run time, no reload
    finally:
        await p.stop()


# -- failures, timeouts, draining ----------------------------------------------------------------------


async def test_refused_connections_are_retried_for_any_method(proxy: Proxy, client: aiohttp.ClientSession,
                                                              upstreams: Start) -> None:
    _, addr = await upstreams("live")
    [dead] = free_ports(1)  # nothing listens there
    await apply(proxy, table([("dead", f"127.0.0.1:{dead}"), ("live", addr)]))
    for _ in range(10):
        async with client.post(url(proxy, "/upload"), data=b"x" * 10, headers={"Host": DOMAIN}) as resp:
            assert resp.status == 200 and (await resp.json())["size"] == 10
        assert await get(client, proxy) == (200, "live")
    dead_ep = proxy.endpoints["dead"]
    # Refused once, then marked down (observe layer4): every request was answered by the live one.
    assert dead_ep.requests == 0 and proxy.endpoints["live"].requests == 20
    assert proxy.stats()["web"]["errors"] == 0  # every request was answered by the live one
    await apply(proxy, table([("dead", f"127.0.0.1:{dead}")]))
    status, body = await get(client, proxy)  # refused again, or already marked down
    assert (status, json.loads(body)["error"]["code"]) in ((502, "BAD_GATEWAY"), (503, "NO_HEALTHY_REPLICA"))


async def test_upstream_timeout_is_504(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    _, addr = await upstreams("slow")
    await apply(proxy, table([("a1", addr)]))
    started = time.monotonic()
    status, body = await get(client, proxy, "/sleep?s=3")
    assert status == 504 and "in time" in body
    assert 1.5 < time.monotonic() - started < 2.9  # request_timeout_s = 2


async def test_removed_endpoint_drains_in_flight_requests(proxy: Proxy, client: aiohttp.ClientSession,
                                                          upstreams: Start) -> None:
    (old, old_addr), (_, new_addr) = await upstreams("old"), await upstreams("new")
    await apply(proxy, table([("old", old_addr)]))
    slow = asyncio.create_task(get(client, proxy, "/hold"))
    for _ in range(100):
        if old.holding:
            break
        await asyncio.sleep(0.02)
    assert old.holding == 1
    await apply(proxy, table([("new", new_addr)]))
    drained = asyncio.create_task(proxy.drain("old"))
    results = [await get(client, proxy) for _ in range(10)]
    assert results == [(200, "new")] * 10 and old.hits == 1
    await asyncio.sleep(0.2)
    assert not drained.done()  # still one in flight to the old replica
    old.gate.set()
    assert await slow == (200, "old")
    assert await asyncio.wait_for(drained, 2) is True
    assert await proxy.drain("never-seen") is True


async def test_drain_fences_and_gives_up_after_its_timeout(proxy: Proxy, client: aiohttp.ClientSession,
                                                           upstreams: Start) -> None:
    (a, a_addr), (_, b_addr) = await upstreams("a"), await upstreams("b")
    await apply(proxy, table([("a", a_addr), ("b", b_addr)]))
    held = [asyncio.create_task(get(client, proxy, "/hold")) for _ in range(2)]
    for _ in range(100):
        if a.holding:
            break
        await asyncio.sleep(0.02)
    # The route still lists "a", but a replica being stopped gets no new request.
    assert await proxy.drain("a", timeout=0.2) is False
    assert [(await get(client, proxy))[1] for _ in range(6)] == ["b"] * 6
    await apply(proxy, table([("a", a_addr), ("b", b_addr)]))  # a lagging table does not un-fence it
    assert (await get(client, proxy))[1] == "b"
    a.gate.set()
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_client_that_goes_away_frees_its_slot(proxy: Proxy, upstreams: Start) -> None:
    up, addr = await upstreams("h")
    await apply(proxy, table([("a1", addr)]))
    ep = proxy.endpoints["a1"]

    def idle() -> bool:
        return ep.active == 0 and proxy.stats()["web"]["active"] == 0

    async with aiohttp.ClientSession() as session:  # gone while waiting for the answer
        task = asyncio.create_task(session.get(url(proxy, "/hold"), headers={"Host": DOMAIN}))
        await until(lambda: ep.active == 1)
        task.cancel()
    await until(idle)
    async with aiohttp.ClientSession() as session:  # gone in the middle of a streamed body
        resp = await session.get(url(proxy, "/drip"), headers={"Host": DOMAIN})
        assert await resp.content.readline() == b"first\n"
        resp.close()
    await until(idle)
    assert ep.errors == 0 and proxy.stats()["web"]["errors"] == 0
    up.gate.set()


UPSTREAM_SCRIPT = """
import asyncio, sys
from aiohttp import web

async def index(request):
    await asyncio.sleep(0.01)
    return web.Response(text=sys.argv[2])

async def post(request):
    body = await request.read()
    await asyncio.sleep(0.01)
    return web.Response(text=sys.argv[2] + ":" + str(len(body)))

app = web.Application()
app.router.add_get("/", index)
app.router.add_post("/", post)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def test_killed_upstream_mid_load_loses_only_in_flight_requests(proxy: Proxy,
                                                                      client: aiohttp.ClientSession) -> None:
    ports = free_ports(2)
    procs = [subprocess.Popen([sys.executable, "-c", UPSTREAM_SCRIPT, str(port), f"u{i}"])
             for i, port in enumerate(ports)]
    try:
        for port in ports:
            await _wait_port(port)
        await apply(proxy, table([(f"u{i}", f"127.0.0.1:{p}") for i, p in enumerate(ports)]))
        outcomes: list[tuple[str, int, str]] = []
        stop_at = time.monotonic() + 3.0

        async def worker(n: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                method = "POST" if (n + i) % 3 == 0 else "GET"
                try:
                    async with client.request(method, url(proxy), data=b"p" * 100 if method == "POST" else None,
                                              headers={"Host": DOMAIN}) as resp:
                        outcomes.append((method, resp.status, await resp.text()))
                except aiohttp.ClientError as exc:
                    outcomes.append((method, 0, repr(exc)))

        workers = [asyncio.create_task(worker(n)) for n in range(16)]
        await asyncio.sleep(1.0)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(5)
        killed_at = len(outcomes)
        await asyncio.gather(*workers)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
    failures = [o for o in outcomes if o[1] != 200]
    assert len(outcomes) > 200 and killed_at > 50
    assert all(status == 200 for method, status, _ in outcomes if method == "GET"), failures[:5]
    # Only POSTs that were in flight to the killed replica may fail: at most one per worker.
    assert len(failures) <= 16, failures
    after = [body for _, status, body in outcomes[killed_at + 16:] if status == 200]
    assert after and all(body.startswith("u1") for body in after)


async def test_route_changes_under_load_drop_nothing_and_are_live_within_a_second(
        proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    ups = [await upstreams(f"r{i}") for i in range(3)]
    await apply(proxy, table([("a0", ups[0][1])]))
    outcomes: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                outcomes.append(await get(client, proxy))
            except aiohttp.ClientError as exc:
                outcomes.append((0, repr(exc)))

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    live_after: list[float] = []
    try:
        # A rolling update: add the next replica, then remove the previous one (drained first).
        for i in range(1, 3):
            started = time.monotonic()
            proxy.set_routes(table([(f"a{i - 1}", ups[i - 1][1]), (f"a{i}", ups[i][1])]))
            assert await proxy.settled()
            live_after.append(time.monotonic() - started)
            await until(lambda i=i: any(body == f"r{i}" for _, body in outcomes[-20:]))
            proxy.set_routes(table([(f"a{i}", ups[i][1])]))
            assert await proxy.drain(f"a{i - 1}")
            mark = len(outcomes)
            await until(lambda mark=mark: len(outcomes) > mark + 20)
            assert all(body == f"r{i}" for _, body in outcomes[mark + 8:]), outcomes[mark:][:20]
    finally:
        stop.set()
        await asyncio.gather(*workers)
    failures = [o for o in outcomes if o[0] != 200]
    print(f"{len(outcomes)} requests, route changes live after {[round(t, 3) for t in live_after]} s")
    assert len(outcomes) > 100 and not failures, failures[:5]


# -- statistics -------------------------------------------------------------------------------------------


async def test_stats_counters_and_histogram(proxy: Proxy, client: aiohttp.ClientSession, upstreams: Start) -> None:
    (_, a), (_, b) = await upstreams("a"), await upstreams("b")
    await apply(proxy, {**table([("a", a), ("b", b)]), **table([], service="api", domain="api.example.com")})
    for _ in range(10):
        assert (await get(client, proxy))[0] == 200
    assert (await get(client, proxy, "/fail"))[0] == 500
    assert (await get(client, proxy, "/sleep?s=0.03"))[0] == 200
    assert (await get(client, proxy, host="api.example.com"))[0] == 503
    assert (await get(client, proxy, host="other.example.com"))[0] == 404
    # `active` is polled (POLL_S): a reading taken during the last request may still count it.
    await until(lambda: proxy.stats()["web"]["requests"] == 12 and proxy.stats()["api"]["requests"] == 1
                and proxy.stats()["web"]["active"] == 0 and all(e.active == 0 for e in proxy.endpoints.values()))
    stats = proxy.stats()
    web_stats = stats["web"]
    assert web_stats["requests"] == 12 and web_stats["errors"] == 1 and web_stats["active"] == 0
    buckets = web_stats["latency_buckets"]
    assert len(buckets) == len(LATENCY_BUCKETS_MS) + 1 and buckets[-1] == 12
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[LATENCY_BUCKETS_MS.index(25)] <= 11  # the 30 ms one is above 25 ms
    assert web_stats["latency_sum_ms"] >= 30
    # Round robin: the 11th request (the failing one) went to "a".
    assert web_stats["replicas"] == {"a": {"requests": 6, "errors": 1, "active": 0},
                                     "b": {"requests": 6, "errors": 0, "active": 0}}
    assert stats["api"]["requests"] == 1 and stats["api"]["errors"] == 1 and stats["api"]["replicas"] == {}
    assert proxy.route_active("web") and not proxy.route_active("api") and not proxy.route_active("nope")
    # The busiest replicas only, when capped; counters survive the replica leaving the table.
    assert len(proxy.stats(max_replicas=1)["web"]["replicas"]) == 1
    await apply(proxy, table([("b", b)]))
    assert set(proxy.stats()["web"]["replicas"]) == {"a", "b"}
    await proxy.stop()
    assert not proxy.route_active("web")


async def test_malformed_routes_are_skipped(upstreams: Start) -> None:
    [port] = free_ports(1)
    p = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}"))
    _, addr = await upstreams("x")
    p.set_routes({**table([("a1", addr)]), "bad.example.com": {"service": "bad", "endpoints": [{"alloc": "z"}]},
                  "worse.example.com": {"service": "w", "strategy": "random", "endpoints": []}})
    assert set(p.routes) == {DOMAIN}
    p.set_routes(table([("v6", "::1:20000")]))
    assert p.endpoints["v6"].url == "http://[::1]:20000"


def test_sampled_log_lines_carry_their_weight() -> None:
    """Above hc.LOG_LINES_PER_S requests/s HAProxy logs a sample of the successful answers, each line with
    the rate it was sampled at; every 5xx is logged and counts once. No HAProxy needed: lines are fed."""
    p = Proxy(ProxyConfig(listen="127.0.0.1:1"))
    p.set_routes(table([("a", "127.0.0.1:2")]))
    for line in (b"svc_web a 200 3 0 -",      # not sampled (HAProxy's own answers carry no rate)
                 b"svc_web a 200 3 0 %d" % (hc.LOG_LINES_PER_S - 1),  # under the threshold: logged whole
                 b"svc_web a 200 30 0 %d" % (hc.LOG_LINES_PER_S * 5),  # 1 in 5 logged: stands for 5
                 b"svc_web a 503 3 0 %d" % (hc.LOG_LINES_PER_S * 5),  # errors are never sampled
                 b"svc_web a 200 3 0 99999999999",  # an absurd rate is capped, not trusted
                 b"svc_web a 200 x 0 -", b"svc_other a 200 3 0 -", b"not a log line", b"\xff\xfe"):
        p.record_log_line(line)
    web_stats = p.stats()["web"]
    capped = round(MAX_LOG_RATE / hc.LOG_LINES_PER_S)
    assert web_stats["errors"] == 1 and web_stats["requests"] == 1 + 1 + 5 + 1 + capped
    assert web_stats["latency_buckets"][-1] == web_stats["requests"]
    assert web_stats["latency_buckets"][LATENCY_BUCKETS_MS.index(25)] == 3 + capped  # the 30 ms ones are above
    assert web_stats["replicas"]["a"] == {"requests": 8 + capped, "errors": 1, "active": 0}


async def test_counts_stay_close_when_logging_is_sampled(proxy: Proxy, upstreams: Start) -> None:
    """Under more load than hc.LOG_LINES_PER_S the counts are estimated from the sample: close to the truth."""
    up, addr = await upstreams("s")
    await apply(proxy, table([("a1", addr)]))
    sent = 0
    deadline = time.monotonic() + 4.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                async with session.get(url(proxy), headers={"Host": DOMAIN}) as resp:
                    assert resp.status == 200
                    await resp.read()
                sent += 1
        await asyncio.gather(*(worker() for _ in range(16)))
    await asyncio.sleep(0.5)
    counted = proxy.stats()["web"]["requests"]
    print(f"{sent} requests in 4 s, counted {counted}")
    assert up.hits == sent and abs(counted - sent) <= max(0.25 * sent, 60), (counted, sent)


@pytest.mark.parametrize("socket_path_len", [95, 96, 97, 98, 99, 100, 101, 120])
async def test_a_deep_run_dir_still_starts(tmp_path: Path, socket_path_len: int) -> None:
    """HAProxy refuses a `stats socket` path over 97 bytes: whatever the data dir's depth, the proxy starts
    (a deep run dir gets its sockets in a short private directory)."""
    base = str(tmp_path / "d")
    run_dir = Path(base + "x" * max(1, socket_path_len - len(base) - len("/master.sock")))
    [port] = free_ports(1)
    p = Proxy(ProxyConfig(listen=f"127.0.0.1:{port}"), run_dir=run_dir)
    await p.start()
    try:
        assert len(str(p.master_socket)) <= 96 and len(str(p.admin_socket)) <= 97
    finally:
        await p.stop()
