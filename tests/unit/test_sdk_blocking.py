"""The SDK's side of blocking queries and of `Retry-After`, against the real master routes (served from a
thread, over a stand-in Raft node that applies real entries, see test_blocking_queries) and against tiny
scripted HTTP masters for the 429/503 answers.

No timed assertions: "no polling" is asserted by the exact list of requests the master saw."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from orca import auth
from orca.client import ApiError, Client
from orca.master.api import MasterApi, MasterInfo
from orca.master.api_traffic import TrafficEndpoints
from orca.master.api_workers import WorkerEndpoints
from orca.master.leases import HeartbeatBook
from orca.master.secrets import SecretBox
from orca.master.traffic import TrafficBook
from orca.sdk import retry, transport
from tests.unit.test_blocking_queries import KEY, FakeRaft, deploy_args

pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


@pytest.fixture
def master() -> Iterator[SimpleNamespace]:
    """A MasterApi on a loop in a thread; `seen` lists the path and query of every request it answered."""
    raft = FakeRaft()
    info = MasterInfo(node_id="m1", api_urls={"m1": "http://127.0.0.1:1"}, raft_addrs={}, signing_key=KEY,
                      max_body_bytes=1 << 20, rate_limit_per_minute=100000, rate_limit_burst=100000)
    api = MasterApi(raft=raft, leadership=None, info=info)  # type: ignore[arg-type]
    api.extra_routes.append(WorkerEndpoints(api, HeartbeatBook(), SecretBox(b"s" * 32), 1.0, 5.0).add_routes)
    api.extra_routes.append(TrafficEndpoints(api, TrafficBook(), {}).add_routes)
    seen: list[str] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append(request.path_qs)

    async def start() -> tuple[web.AppRunner, int]:
        app = api.build_app()
        app.on_response_prepare.append(record)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, int(runner.addresses[0][1])

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    token, _ = auth.mint_token(KEY, role="viewer", name="watcher", now=time.time())
    client = Client(f"http://127.0.0.1:{port}", token, timeout=10.0, retries=0)
    try:
        yield SimpleNamespace(raft=raft, api=api, client=client, seen=seen)
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def until_waiting(m: SimpleNamespace) -> None:
    for _ in range(1000):  # bounded: 10 s
        if m.api._watch is not None and m.api._watch.waiting >= 1:
            return
        time.sleep(0.01)
    raise AssertionError("no request started waiting")


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_wait_converged_makes_one_blocking_request_instead_of_polling(master: SimpleNamespace) -> None:
    master.raft._apply("deploy", deploy_args("web"))  # 1 replica wanted, none running: not converged
    progress: list[int] = []
    thread, out = in_thread(lambda: master.client.wait_converged(
        "web", 60, lambda d: progress.append(d["replicas"]["desired"])))
    until_waiting(master)
    time.sleep(1.2)  # a poller would have asked twice more by now; the blocking request just waits
    master.raft._apply("scale", {"name": "web", "replicas": 0})  # scaled to 0: converged
    thread.join(30)
    assert "error" not in out and out["value"]["replicas"]["desired"] == 0
    assert progress == [1, 0]
    reads = [p for p in master.seen if p.startswith("/api/v1/services/web")]
    assert reads[0] == "/api/v1/services/web"
    assert reads[1].startswith("/api/v1/services/web?index=2&wait=") and len(reads) == 2, reads


def test_wait_service_waits_for_a_condition_by_blocking_reads(master: SimpleNamespace) -> None:
    master.raft._apply("deploy", deploy_args("web"))
    thread, out = in_thread(lambda: master.client.wait_service("web", lambda d: d["replicas"]["desired"] == 3, 60))
    until_waiting(master)
    master.raft._apply("scale", {"name": "web", "replicas": 2})  # a change, not the one awaited
    master.raft._apply("scale", {"name": "web", "replicas": 3})
    thread.join(30)
    assert out["value"]["replicas"]["desired"] == 3
    reads = [p for p in master.seen if p.startswith("/api/v1/services/web")]
    assert reads[0] == "/api/v1/services/web" and all("index=" in p for p in reads[1:]) and len(reads) <= 3
    with pytest.raises(ApiError) as info:
        master.client.wait_service("web", lambda d: False, 0.3)
    assert info.value.code == "TIMEOUT" and info.value.details["name"] == "web"


def test_wait_drained_blocks_too(master: SimpleNamespace) -> None:
    with pytest.raises(ApiError) as info:
        master.client.wait_drained("n1", 5)
    assert info.value.code == "NODE_NOT_FOUND"


def test_watch_yields_each_change_and_events_block(master: SimpleNamespace) -> None:
    watch = master.client.watch_status()
    assert next(watch) == []
    thread, out = in_thread(lambda: next(watch))
    until_waiting(master)
    master.raft._apply("deploy", deploy_args("web"))
    thread.join(30)
    assert [s["name"] for s in out["value"]] == ["web"]
    watch.close()
    index = master.raft.applied_index
    thread, out = in_thread(lambda: master.client.events(index=index, wait_s=60))
    until_waiting(master)
    master.raft._apply("deploy", deploy_args("api"))
    thread.join(30)
    assert [e["service"] for e in out["value"] if e["type"] == "service_deployed"] == ["web", "api"]
    assert master.client.nodes(index=master.raft.applied_index, wait_s=0.1) == []


def test_top_is_one_request(master: SimpleNamespace) -> None:
    master.raft._apply("deploy", deploy_args("web", "api"))
    master.seen.clear()
    body = master.client.top()
    assert [s["name"] for s in body["services"]] == ["api", "web"] and master.seen == ["/api/v1/top"]


def test_blocking_get_bounds_the_wait_and_the_read_timeout(master: SimpleNamespace) -> None:
    body, index = master.client.blocking_get("/api/v1/status", index=master.raft.applied_index, wait_s=-5)
    assert body == {"services": []} and index == master.raft.applied_index
    assert master.seen[-1].endswith("wait=0ms")
    master.client.blocking_get("/api/v1/status", index=0, wait_s=10_000)
    assert master.seen[-1].endswith("wait=300000ms")


# ---------------------------------------------------------------------- Retry-After


Script = Callable[[str, dict[str, str]], tuple[int, dict[str, str], Any]]


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], tuple[str, list[dict[str, str]]]]]:
    servers: list[ThreadingHTTPServer] = []

    def make(script: Script) -> tuple[str, list[dict[str, str]]]:
        seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers)
                seen.append({"method": self.command, "path": self.path, **headers})
                status, extra, body = script(self.command, headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def _limited(times: int, retry_after: str) -> Script:
    calls = {"n": 0}

    def script(method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        calls["n"] += 1
        if calls["n"] <= times:
            return 429, {"Retry-After": retry_after}, {"error": "slow down", "code": "RATE_LIMIT_EXCEEDED"}
        return 200, {}, {"ok": True}
    return script


def test_a_429_is_waited_out_and_the_write_keeps_its_key(scripted: Any) -> None:
    url, seen = scripted(_limited(2, "0"))
    with Client(url, "tok", retries=0) as client:
        assert client.request("POST", "/api/v1/stop", json={}) == {"ok": True}
    assert len(seen) == 3 and len({s["Idempotency-Key"] for s in seen}) == 1


def test_429_retries_are_bounded_in_count_and_in_time(scripted: Any) -> None:
    url, seen = scripted(_limited(100, "0"))
    with Client(url, "tok", retries=0, rate_limit_retries=2) as client, pytest.raises(ApiError) as info:
        client.status()
    assert (info.value.status, info.value.code, info.value.retry_after) == (429, "RATE_LIMIT_EXCEEDED", 0.0)
    assert len(seen) == 3
    url, seen = scripted(_limited(100, "20"))
    with Client(url, "tok", retries=0, rate_limit_wait_s=5) as client, pytest.raises(ApiError) as info:
        client.status()  # 20 s is over this call's budget: raised at once, not slept
    assert info.value.retry_after == 20.0 and len(seen) == 1


def test_a_503_retry_after_is_the_pause_once_the_failover_window_is_over() -> None:
    client = Client("http://127.0.0.1:1", backoff_s=0.01)
    assert client._pause(1, 1.0) < 0.1  # a failover ends within the fast window: not slowed down
    assert client._pause(transport._FAST_RETRY_WINDOW + 1, 1.0) == 1.0
    assert client._pause(transport._FAST_RETRY_WINDOW + 1, None) == 0.01


def test_a_503_with_retry_after_moves_on_to_the_next_master(scripted: Any) -> None:
    down, seen_down = scripted(lambda m, h: (503, {"Retry-After": "1"}, {"error": "no leader",
                                                                           "code": "CLUSTER_NOT_READY"}))
    up, _ = scripted(lambda m, h: (200, {}, {"services": []}))
    with Client([down, up], "tok", retries=0) as client:
        assert client.status() == []
    assert len(seen_down) == 1


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("0", 0.0), ("7", 7.0), ("120", 30.0), ("-1", None), ("1.5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None), ("9" * 100, None),
])
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert retry.retry_after_s(value) == expected


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert retry.retry_after_s("Tue, 14 Nov 2023 22:13:25 GMT", now=now) == 5.0


@given(st.text(max_size=80))
def test_retry_after_never_raises_and_stays_bounded(value: str) -> None:
    got = retry.retry_after_s(value)
    assert got is None or 0.0 <= got <= retry.MAX_RETRY_AFTER_S
