"""The SDK's WebSocket streams (`orca.sdk.streams`, on the `websockets` package's blocking client) against
aiohttp masters, plain and TLS: the token goes in a header, wss is verified against the cluster CA, a
refused upgrade is the server's error envelope, a close frame ends a stream whatever its code, a
dropped connection or an oversized message is `STREAM_BROKEN`, and events resume after the last seq."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from orca import tls
from orca.client import ApiError, Client
from orca.sdk import streams

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Factory of aiohttp masters (one loop in a thread): `serve(routes, ssl_context=None)` -> base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    def make(routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None) -> str:
        async def start() -> int:
            app = web.Application()
            for path, handler in routes.items():
                app.router.add_get(path, handler)
            runner = web.AppRunner(app, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
            runners.append(runner)
            return int(runner.addresses[0][1])

        port = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield make
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def _envelope(code: str, message: str) -> dict[str, Any]:
    return {"error": message, "code": code, "details": None, "timestamp": "2024-01-01T00:00:00Z"}


def _events(seen: list[dict[str, Any]], events: list[dict[str, Any]], close_code: int = 1000) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append({"query": dict(request.query), "auth": request.headers.getall("Authorization", []),
                     "ua": request.headers.getall("User-Agent", [])})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for event in events:
            await ws.send_str(json.dumps(event))
        await ws.close(code=close_code)
        return ws
    return handler


def _client(api: str | list[str], **kw: Any) -> Client:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff_s", 0.01)
    return Client(api, "tok", **kw)


def test_token_goes_in_one_header_and_resume_asks_after_the_given_seq(serve: Serve) -> None:
    seen: list[dict[str, Any]] = []
    url = serve({"/api/v1/events/stream": _events(seen, [{"seq": 5}, {"seq": 6}])})
    with _client(url) as client:
        assert [e["seq"] for e in client.stream_events(since=4)] == [5, 6]
    (first,) = seen
    assert first["query"] == {"since": "4"}
    assert first["auth"] == ["Bearer tok"]  # the token by header, never in the URL
    assert len(first["ua"]) == 1 and first["ua"][0].startswith("orca-client/")


def test_resume_after_a_drop_repeats_and_misses_nothing(serve: Serve) -> None:
    """The stream drops after seq 2 (no close frame): the reconnect asks `since=2` and the caller sees
    each event once, in order."""
    log = [{"seq": n} for n in range(1, 6)]
    sinces: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        since = request.query.get("since")
        sinces.append(since)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        after = int(since) if since is not None else 0
        for event in log:
            if event["seq"] > after:
                await ws.send_str(json.dumps(event))
            if since is None and event["seq"] == 2:
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.abort()  # a master killed mid-stream
                return ws
        await ws.close()
        return ws

    url = serve({"/api/v1/events/stream": handler})
    with _client(url, retries=0) as client:
        assert [e["seq"] for e in client.stream_events()] == [1, 2, 3, 4, 5]
    assert sinces == [None, "2"]


def test_refused_upgrade_is_the_servers_envelope(serve: Serve) -> None:
    tried: list[str] = []

    async def unauthorized(request: web.Request) -> web.StreamResponse:
        tried.append("a")
        return web.json_response(_envelope("UNAUTHORIZED", "missing bearer token"), status=401)

    async def other(request: web.Request) -> web.StreamResponse:
        tried.append("b")
        return web.json_response({}, status=200)

    a = serve({"/api/v1/events/stream": unauthorized})
    b = serve({"/api/v1/events/stream": other})
    with _client([a, b], retries=0) as client, pytest.raises(ApiError) as info:
        next(client.stream_events())
    assert (info.value.status, info.value.code, info.value.message) == (401, "UNAUTHORIZED", "missing bearer token")
    assert tried == ["a"]  # a 4xx is the answer, not a reason to ask another master


def test_a_master_without_a_leader_is_skipped(serve: Serve) -> None:
    async def not_ready(request: web.Request) -> web.StreamResponse:
        return web.json_response(_envelope("CLUSTER_NOT_READY", "no leader"), status=503)

    seen: list[dict[str, Any]] = []
    a = serve({"/api/v1/events/stream": not_ready})
    b = serve({"/api/v1/events/stream": _events(seen, [{"seq": 1}])})
    with _client([a, b], retries=0) as client:
        assert list(client.stream_events()) == [{"seq": 1}]
    assert len(seen) == 1


def test_a_close_frame_ends_the_stream_whatever_its_code(serve: Serve) -> None:
    seen: list[dict[str, Any]] = []
    url = serve({"/api/v1/events/stream": _events(seen, [{"seq": 1}], close_code=1011)})
    with _client(url) as client:
        assert list(client.stream_events()) == [{"seq": 1}]


def test_a_message_over_the_bound_breaks_the_stream(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "_WS_MAX_MESSAGE", 1000)
    url = serve({"/api/v1/services/{name}/logs/stream": _logs(["short", "x" * 5000])})
    with _client(url, retries=0) as client:
        got: list[str] = []
        with pytest.raises(ApiError) as info:
            for line in client.stream_logs("web"):
                got.append(line)
    assert info.value.code == "STREAM_BROKEN" and got == ["short"]


def _logs(lines: list[str]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for line in lines:
            await ws.send_str(line)
        async for _ in ws:  # as the masters do: read the client's messages, so its close is answered at once
            pass
        return ws
    return handler


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    now = time.time()
    ca_key, ca_cert = tls.new_ca(now)
    key = tls.new_key()
    cert = tls.issue(ca_key, ca_cert, tls.public_key(key), tls.Identity("master", "m1"), ["127.0.0.1"], now)
    other_ca = tls.new_ca(now)[1]
    files = {"ca": ca_cert, "cert": cert, "key": key, "other_ca": other_ca}
    out = {}
    for name, pem in files.items():
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(pem)
    return out


def test_wss_is_verified_against_the_cluster_ca(serve: Serve, tls_files: dict[str, Path]) -> None:
    ctx = tls.server_context(tls_files["cert"].read_bytes(), tls_files["key"].read_bytes(),
                             tls_files["ca"].read_bytes(), files=(str(tls_files["cert"]), str(tls_files["key"])))
    seen: list[dict[str, Any]] = []
    url = serve({"/api/v1/events/stream": _events(seen, [{"seq": 1}])}, ssl_context=ctx)
    assert url.startswith("https://")
    with _client(url, ca_file=str(tls_files["ca"])) as client:
        assert list(client.stream_events()) == [{"seq": 1}]
    assert seen[0]["auth"] == ["Bearer tok"]
    with _client(url, ca_file=str(tls_files["other_ca"]), retries=0) as client, pytest.raises(ApiError) as info:
        next(client.stream_events())
    assert info.value.code == "UNREACHABLE" and "CERTIFICATE_VERIFY_FAILED" in info.value.message
    assert len(seen) == 1  # the token never went to a master the CA did not vouch for
