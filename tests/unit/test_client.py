"""orca.client against tiny fake masters (stdlib http.server in a thread, ephemeral ports; aiohttp for the
WebSocket streams).

The fakes are scripted per test: each is a function from the recorded request to (status, headers,
body), so a test states exactly what a follower, a leader or a cluster without quorum would answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp import web

from orca.client import MAX_REDIRECTS, ApiError, Client, error_from_response, is_converged


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# A body that is an iterator of chunks is streamed (chunked encoding, flushed chunk by chunk).
Reply = tuple[int, dict[str, str], bytes | str | dict[str, Any] | Iterator[bytes | str]]


@dataclass
class FakeMaster:
    url: str
    handler: Callable[[Seen], Reply] = lambda seen: (200, {}, {})
    seen: list[Seen] = field(default_factory=list)
    # Close each connection after answering without saying so, as a server whose idle keep-alive
    # timeout expired does: the client only finds out on its next request.
    drop_connections: bool = False


def _envelope(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "code": code, "details": None, "timestamp": "2024-01-01T00:00:00Z", **extra}


def _serve(master_ref: list[FakeMaster]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like aiohttp: exercises connection reuse
        wbufsize = -1  # headers and body in one segment, else Nagle + delayed ACK cost 40 ms a request

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            master = master_ref[0]
            master.seen.append(seen)
            status, headers, body = master.handler(seen)
            if not isinstance(body, dict | list | bytes | str):
                self._stream(status, headers, body)
                return
            if isinstance(body, dict | list):
                data = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **headers}
            else:
                data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if master.drop_connections:
                self.close_connection = True

        def _stream(self, status: int, headers: dict[str, str], chunks: Iterator[bytes | str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            try:
                for chunk in chunks:
                    data = chunk.encode() if isinstance(chunk, str) else chunk
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
                pass
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def masters() -> Iterator[Callable[[], FakeMaster]]:
    """Factory of running fake masters; every one is shut down after the test."""
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def make() -> FakeMaster:
        ref: list[FakeMaster] = []
        server = _serve(ref)
        ref.append(FakeMaster(url=f"http://127.0.0.1:{server.server_address[1]}"))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return ref[0]

    yield make
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _refused_url() -> str:
    """A URL on which nothing listens: bind an ephemeral port, then release it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _client(api: str | list[str], **kw: Any) -> Client:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff_s", 0.01)
    return Client(api, "tok", **kw)


def test_follows_307_and_resends_body_to_location(masters: Callable[[], FakeMaster]) -> None:
    leader, follower = masters(), masters()
    follower.handler = lambda seen: (307, {"Location": leader.url + seen.path, "X-Current-Leader": leader.url},
                                     _envelope("NOT_LEADER", f"Request must be sent to leader node: {leader.url}",
                                               leader=leader.url))
    leader.handler = lambda seen: (200, {}, {"deployed": ["web"], "errors": []})
    with _client(follower.url) as client:
        result = client.deploy([{"name": "web", "image": "nginx"}])
        assert result == {"deployed": ["web"], "errors": []}
        assert [s.method for s in follower.seen] == ["POST"]
        [at_leader] = leader.seen
        assert at_leader.method == "POST" and at_leader.path == "/api/v1/deploy"
        assert json.loads(at_leader.body) == {"services": [{"name": "web", "image": "nginx"}]}
        assert at_leader.headers["Authorization"] == "Bearer tok"
        # Same logical write, same key, on both hops.
        assert at_leader.headers["Idempotency-Key"] == follower.seen[0].headers["Idempotency-Key"]
        # The leader is remembered: the next write goes straight there.
        assert client.leader == leader.url
        client.scale("web", 3)
        assert len(follower.seen) == 1 and leader.seen[-1].path == "/api/v1/services/web/scale"


def test_307_keeps_the_query_and_delete_method(masters: Callable[[], FakeMaster]) -> None:
    leader, follower = masters(), masters()
    follower.handler = lambda seen: (307, {"Location": leader.url + seen.path}, _envelope("NOT_LEADER", "x"))
    leader.handler = lambda seen: (200, {}, {"name": "web", "purged": True})
    with _client(follower.url) as client:
        client.stop("web", purge=True)
    assert leader.seen[0].method == "DELETE" and leader.seen[0].path == "/api/v1/services/web?purge=true"


def test_redirect_loop_is_bounded(masters: Callable[[], FakeMaster]) -> None:
    a = masters()
    a.handler = lambda seen: (307, {"Location": seen.path}, _envelope("NOT_LEADER", "x"))
    with _client(a.url, retries=0) as client, pytest.raises(ApiError) as info:
        client.stop_all()
    assert info.value.code == "TOO_MANY_REDIRECTS"
    assert len(a.seen) == MAX_REDIRECTS + 1


def test_503_is_retried_with_the_same_idempotency_key(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    answers = iter([(503, {}, _envelope("CLUSTER_NOT_READY", "no leader")),
                    (503, {}, _envelope("CLUSTER_NOT_READY", "no leader")),
                    (200, {}, {"name": "web", "previous_replicas": 1, "replicas": 4})])
    m.handler = lambda seen: next(answers)
    with _client(m.url) as client:
        assert client.scale("web", 4)["replicas"] == 4
    keys = {s.headers["Idempotency-Key"] for s in m.seen}
    assert len(m.seen) == 3 and len(keys) == 1
    assert len(keys.pop()) == 32  # uuid4 hex


def test_caller_idempotency_key_is_used_and_each_call_gets_its_own(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (200, {}, {"deployed": [], "errors": [], "services": []})
    with _client(m.url) as client:
        client.deploy([], idempotency_key="fixed-key")
        client.deploy([])
        client.deploy([])
        client.status()
    keys = [s.headers.get("Idempotency-Key") for s in m.seen]
    assert keys[0] == "fixed-key"
    assert keys[1] != keys[2]
    assert keys[3] is None  # reads carry none


def test_503_exhausts_retries_and_raises_the_server_error(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (503, {}, _envelope("CLUSTER_NOT_READY", "no quorum"))
    with _client(m.url, retries=2) as client, pytest.raises(ApiError) as info:
        client.deploy([])
    assert (info.value.status, info.value.code, info.value.message) == (503, "CLUSTER_NOT_READY", "no quorum")
    assert len(m.seen) == 3


def test_error_envelope_becomes_api_error(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (404, {}, {**_envelope("SERVICE_NOT_FOUND", "Service 'nope' not found"),
                                        "details": {"service": "nope"}})
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.service("nope")
    err = info.value
    assert (err.status, err.code, err.message) == (404, "SERVICE_NOT_FOUND", "Service 'nope' not found")
    assert err.details == {"service": "nope"}
    assert err.body["timestamp"]
    assert str(err) == "SERVICE_NOT_FOUND: Service 'nope' not found"
    assert len(m.seen) == 1  # a 4xx is an answer, never retried


def test_non_json_error_body() -> None:
    err = error_from_response(502, b"<html>Bad Gateway</html>")
    assert (err.status, err.code, err.message) == (502, "HTTP_502", "<html>Bad Gateway</html>")
    assert error_from_response(500, b"").message == "Internal Server Error"


def test_failover_to_second_url_when_first_refuses(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (200, {}, {"services": [{"name": "web"}]})
    with _client([_refused_url(), m.url], retries=0) as client:
        assert client.status() == [{"name": "web"}]
        client.deploy([])
        assert client.leader == m.url


def test_unreachable_after_retries() -> None:
    with _client(f"{_refused_url()},{_refused_url()}", retries=1) as client, pytest.raises(ApiError) as info:
        client.health()
    assert (info.value.status, info.value.code) == (0, "UNREACHABLE")


def test_params_consistent_and_raw(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (200, {}, {"events": [{"type": "deploy"}]}) if "events" in seen.path \
        else (200, {"Content-Type": "text/plain"}, "web.1 | hello\n")
    with _client(m.url) as client:
        assert client.events(service="web", limit=5) == [{"type": "deploy"}]
        assert client.request("GET", "services/web/logs", params={"tail": 10}, raw=True,
                              consistent=True) == "web.1 | hello\n"
    assert m.seen[0].path == "/api/v1/events?service=web&limit=5"
    assert m.seen[1].path == "/api/v1/services/web/logs?tail=10&consistent=true"


def test_connection_is_kept_alive_and_a_stale_one_is_replaced(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (200, {}, {"status": "healthy"})
    with _client(m.url, retries=0) as client:
        client.health()
        (conn,) = client._pool().values()
        client.health()
        assert list(client._pool().values()) == [conn]
        m.drop_connections = True
        client.health()
        time.sleep(0.05)  # let the server's close reach the client's socket
        # retries=0: this succeeds only because a dead kept-alive connection is replaced silently.
        for _ in range(3):
            assert client.health() == {"status": "healthy"}
    assert len(m.seen) == 6


def test_invalid_api_url() -> None:
    with pytest.raises(ValueError):
        Client("127.0.0.1:6880")
    with pytest.raises(ValueError):
        Client([])


def test_503_moves_on_to_the_next_master(masters: Callable[[], FakeMaster]) -> None:
    lonely, ok = masters(), masters()
    lonely.handler = lambda seen: (503, {}, _envelope("CLUSTER_NOT_READY", "no leader"))
    ok.handler = lambda seen: (200, {}, {"name": "web"})
    with _client([lonely.url, ok.url], retries=0) as client:
        assert client.start("web") == {"name": "web"}
    assert lonely.seen[0].headers["Idempotency-Key"] == ok.seen[0].headers["Idempotency-Key"]


def test_one_client_shared_by_threads(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (200, {}, {"path": seen.path})
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                assert client.request("GET", f"/x/{i}/{j}") == {"path": f"/x/{i}/{j}"}
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    with _client(m.url) as client:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not errors and len(m.seen) == 80


# ---------------------------------------------------------------------- nodes and secrets


def test_nodes_and_secrets_calls(masters: Callable[[], FakeMaster]) -> None:
    m = masters()

    def handler(seen: Seen) -> Reply:
        if seen.path == "/api/v1/cluster/nodes":
            return 200, {}, {"nodes": [{"id": "w1"}]}
        if seen.path.startswith("/api/v1/cluster/nodes/"):
            return 200, {}, {"id": "w 1", "allocation_list": []}
        if seen.method == "POST":
            return 201, {}, {"key": "DB_PASS", "created": True}
        if seen.method == "DELETE":
            return 200, {}, {"key": "DB_PASS", "deleted": True}
        return 200, {}, {"secrets": [{"key": "DB_PASS", "created_at": "x", "updated_at": "y"}]}

    m.handler = handler
    with _client(m.url) as client:
        assert client.nodes() == [{"id": "w1"}]
        assert client.node("w 1")["allocation_list"] == []
        assert client.set_secret("DB_PASS", "hunter2") == {"key": "DB_PASS", "created": True}
        assert [s["key"] for s in client.list_secrets()] == ["DB_PASS"]
        assert client.delete_secret("DB_PASS")["deleted"] is True
    assert [(s.method, s.path) for s in m.seen] == [
        ("GET", "/api/v1/cluster/nodes"), ("GET", "/api/v1/cluster/nodes/w%201"), ("POST", "/api/v1/secrets"),
        ("GET", "/api/v1/secrets"), ("DELETE", "/api/v1/secrets/DB_PASS")]
    assert json.loads(m.seen[2].body) == {"key": "DB_PASS", "value": "hunter2"}
    assert m.seen[2].headers["Idempotency-Key"] and m.seen[4].headers["Idempotency-Key"]


# ---------------------------------------------------------------------- logs


def test_logs_streams_lines_as_they_arrive(masters: Callable[[], FakeMaster]) -> None:
    """The fake sends the second line only once the client has the first: a client that buffered the
    response would never get line 1 before the fake's wait times out."""
    m = masters()
    got_first = threading.Event()
    waited: list[bool] = []
    sent_at: list[float] = []

    def chunks() -> Iterator[bytes]:
        sent_at.append(time.monotonic())
        yield b"[web.0 a1] one\n[web.1 b2] two "  # a line split across chunks is joined
        waited.append(got_first.wait(5))
        for i in range(3):
            time.sleep(0.15)
            sent_at.append(time.monotonic())
            yield f"halves\n[web.0 a1] tick {i}\n".encode() if i == 0 else f"[web.0 a1] tick {i}\n".encode()
        yield "[web.1 b2] caf\u00e9\r\n".encode()

    m.handler = lambda seen: (200, {"Content-Type": "text/plain; charset=utf-8"}, chunks())
    lines, arrived = [], []
    with _client(m.url, timeout=0.1) as client:  # a read timeout this short would end a follow stream
        for line in client.logs("web", tail=5, follow=True):
            lines.append(line)
            arrived.append(time.monotonic())
            got_first.set()
    assert m.seen[0].path == "/api/v1/services/web/logs?tail=5&follow=true"
    assert m.seen[0].headers["Authorization"] == "Bearer tok"
    assert waited == [True]
    assert lines == ["[web.0 a1] one", "[web.1 b2] two halves", "[web.0 a1] tick 0", "[web.0 a1] tick 1",
                     "[web.0 a1] tick 2", "[web.1 b2] caf\u00e9"]
    # Incremental: each tick is read right after it was sent, not all at the end.
    assert arrived[0] < sent_at[1]
    assert arrived[2] < sent_at[2] and arrived[3] < sent_at[3]


def test_logs_can_be_abandoned_mid_stream(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    stop = threading.Event()

    def endless() -> Iterator[bytes]:
        while not stop.is_set():
            yield b"[web.0 a1] again\n"
            time.sleep(0.01)

    m.handler = lambda seen: (200, {}, endless())
    with _client(m.url) as client:
        stream = client.logs("web", follow=True)
        assert [next(stream) for _ in range(3)] == ["[web.0 a1] again"] * 3
        stream.close()  # closes the connection; the fake's writes then fail and it stops
    stop.set()


def test_logs_errors_and_failover(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (404, {}, _envelope("SERVICE_NOT_FOUND", "service 'nope' not found"))
    with _client([_refused_url(), m.url], retries=0) as client:
        with pytest.raises(ApiError) as info:
            list(client.logs("nope", tail=0))
        assert (info.value.status, info.value.code) == (404, "SERVICE_NOT_FOUND")
        m.handler = lambda seen: (200, {"Content-Type": "text/plain"}, "[web.0 a] x\n[web.0 a] y")
        assert list(client.logs("web")) == ["[web.0 a] x", "[web.0 a] y"]
    assert m.seen[-1].path == "/api/v1/services/web/logs?tail=100&follow=false"
    with _client(_refused_url(), retries=0) as client, pytest.raises(ApiError) as info:
        next(client.logs("web"))
    assert info.value.code == "UNREACHABLE"


# ---------------------------------------------------------------------- wait_converged


def _detail(running: int, healthy: int, desired: int = 2, version: int = 1, pending: str | None = None,
            containers: list[dict[str, Any]] | None = None, status: str = "running") -> dict[str, Any]:
    if containers is None:
        containers = [{"alloc": f"a{i}", "index": i, "version": version,
                       "status": "running" if i < running else "starting",
                       "health": "healthy" if i < healthy else None} for i in range(desired)]
    return {"name": "web", "version": version, "status": status, "pending_reason": pending,
            "replicas": {"desired": desired, "running": running, "healthy": healthy}, "containers": containers}


def test_is_converged() -> None:
    assert is_converged(_detail(2, 2))
    assert not is_converged(_detail(2, 1))
    assert not is_converged(_detail(1, 1))
    assert is_converged(_detail(0, 0, desired=0, containers=[]))
    assert not is_converged(_detail(0, 0, desired=0, containers=[{"alloc": "a", "version": 1}]))
    assert is_converged(_detail(0, 0, status="stopped", containers=[]))
    # Mid rollout: two replicas running, but one is still the old version.
    rolling = _detail(2, 2, version=2, containers=[
        {"alloc": "a", "version": 1, "status": "running"}, {"alloc": "b", "version": 2, "status": "running"}])
    assert not is_converged(rolling)


def _scripted(m: FakeMaster, details: list[dict[str, Any]]) -> None:
    """Answer GET /services/web with each detail in turn, then keep answering the last."""
    queue = list(details)

    def handler(seen: Seen) -> Reply:
        return 200, {}, queue.pop(0) if len(queue) > 1 else queue[0]

    m.handler = handler


def test_wait_converged_reports_each_change(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    steps = [_detail(0, 0, pending="no eligible node with 512 MiB free"), _detail(0, 0, pending="no eligible "
             "node with 512 MiB free"), _detail(1, 0), _detail(1, 0), _detail(2, 1), _detail(2, 2)]
    _scripted(m, steps)
    seen: list[tuple[int, int]] = []
    with _client(m.url) as client:
        final = client.wait_converged("web", 5, lambda d: seen.append((d["replicas"]["running"],
                                                                        d["replicas"]["healthy"])),
                                      interval_s=0.01)
    assert final["replicas"] == {"desired": 2, "running": 2, "healthy": 2}
    assert seen == [(0, 0), (1, 0), (2, 1), (2, 2)]  # once per change, not per poll
    assert len(m.seen) == 6 and all(s.path == "/api/v1/services/web" for s in m.seen)


def test_wait_converged_polls_every_half_second_and_times_out(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    _scripted(m, [_detail(0, 0, pending="no nodes")])
    calls: list[dict[str, Any]] = []
    started = time.monotonic()
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_converged("web", 1.2, calls.append)
    elapsed = time.monotonic() - started
    err = info.value
    assert (err.status, err.code) == (0, "TIMEOUT")
    assert "web did not converge within 1.2 s (0/2 running, 0/2 healthy)" in err.message
    assert err.details["pending_reason"] == "no nodes"
    assert len(calls) == 1
    assert 1.1 <= elapsed < 3 and 3 <= len(m.seen) <= 5  # t = 0, 0.5, 1.0, 1.2


def test_wait_converged_gives_up_when_every_replica_failed(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    failed = [{"alloc": f"a{i}", "version": 2, "status": "failed", "reason": "pull failed: no such image"}
              for i in range(2)]
    old = {"alloc": "old", "version": 1, "status": "running", "health": "healthy"}
    _scripted(m, [_detail(1, 1, version=2, containers=[old, *failed])])
    with _client(m.url) as client:
        with pytest.raises(ApiError) as info:
            client.wait_converged("web", 5, interval_s=0.01, fail_after_s=0.1)
        assert info.value.code == "FAILED"
        assert info.value.message == "every replica of web v2 failed: pull failed: no such image"
        with pytest.raises(ApiError) as info:  # disabled: waits for the deadline instead
            client.wait_converged("web", 0.2, interval_s=0.01, fail_after_s=None)
        assert info.value.code == "TIMEOUT"


def test_wait_converged_failure_must_last(masters: Callable[[], FakeMaster]) -> None:
    """A replica that failed once and is retried does not end the wait."""
    m = masters()
    failed = _detail(0, 0, desired=1, containers=[{"alloc": "a", "version": 1, "status": "failed",
                                                     "reason": "pull failed"}])
    _scripted(m, [failed, _detail(0, 0, desired=1), failed, _detail(1, 1, desired=1)])
    with _client(m.url) as client:
        assert client.wait_converged("web", 5, interval_s=0.01, fail_after_s=0.0001)["replicas"]["running"] == 1


def test_wait_converged_rereads_from_the_leader_once(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    answers = iter([(404, {}, _envelope("SERVICE_NOT_FOUND", "not yet")), (200, {}, _detail(2, 2))])
    m.handler = lambda seen: next(answers)
    with _client(m.url) as client:
        assert client.wait_converged("web", 5, interval_s=0.01)["replicas"]["healthy"] == 2
    assert [s.path for s in m.seen] == ["/api/v1/services/web", "/api/v1/services/web?consistent=true"]
    m.handler = lambda seen: (404, {}, _envelope("SERVICE_NOT_FOUND", "no such service"))
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_converged("web", 5, interval_s=0.01)
    assert info.value.code == "SERVICE_NOT_FOUND"


# ---------------------------------------------------------------------- rollouts: halted, reverted, canary


def _rolled(detail: dict[str, Any], version: int, state: str, reason: str | None = None,
            reverted_from: int | None = None, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rollout = {"version": version, "from": version - 1, "state": state, "reason": reason,
               "started_at": "2024-01-01T00:00:00.000Z", "finished_at": None}
    if reverted_from is not None:
        rollout["reverted_from"] = reverted_from
    return {**detail, "rollout": rollout, "canary": None, "events": events or []}


HALT_EVENTS = [
    {"type": "rollout_halted", "message": "web version 3 halted", "details": {
        "version": 3, "reason": "replica a9 on worker-1: crash loop (exit 1)"}},
    {"type": "rollout_reverted", "message": "web reverted", "details": {"version": 4, "spec_of": 2}}]


def test_wait_converged_stops_when_the_rollout_halts(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    old = {"alloc": "o", "version": 2, "status": "running", "health": "healthy"}
    new = {"alloc": "n", "version": 3, "status": "running", "health": "unhealthy"}
    rolling = _rolled(_detail(2, 1, version=3, containers=[old, new]), 3, "rolling", "deploy")
    halted = _rolled(_detail(2, 1, version=3, containers=[old, new]), 3, "halted",
                     "replica n on worker-1: not healthy within 60 s")
    _scripted(m, [rolling, rolling, halted])
    states: list[Any] = []
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_converged("web", 5, lambda d: states.append(d["rollout"]["state"]), expect_version=3,
                              interval_s=0.01)
    err = info.value
    assert (err.status, err.code) == (0, "ROLLOUT_HALTED")
    assert err.message == "web: rollout of v3 halted: replica n on worker-1: not healthy within 60 s"
    assert err.details["rollout"]["state"] == "halted"
    assert states == ["rolling", "halted"]  # the rollout state changing is progress too


def test_wait_converged_reverted_fails_even_once_the_revert_is_done(masters: Callable[[], FakeMaster]) -> None:
    """Deployed v3; it halted and the cluster rolled v4 (v2's spec), which converged: still a failure."""
    m = masters()
    done = _rolled(_detail(2, 2, version=4), 4, "done", "auto-revert to version 2", reverted_from=3,
                   events=HALT_EVENTS)
    _scripted(m, [done])
    with _client(m.url) as client:
        with pytest.raises(ApiError) as info:
            client.wait_converged("web", 5, expect_version=3, interval_s=0.01)
        assert info.value.code == "ROLLOUT_REVERTED"
        assert info.value.message == ("web: rollout of v3 halted: replica a9 on worker-1: crash loop (exit 1); "
                                      "auto-reverted to v4 (spec of v2)")
        # Without the deploy's version the first detail is the baseline: that revert was before the wait.
        assert client.wait_converged("web", 5, interval_s=0.01)["version"] == 4
        # A later deploy (v5) that converged: the old revert is history.
        later = _rolled(_detail(2, 2, version=5), 5, "done", "deploy")
        _scripted(m, [later])
        assert client.wait_converged("web", 5, expect_version=5, interval_s=0.01)["version"] == 5


def test_wait_converged_reverted_while_rolling(masters: Callable[[], FakeMaster]) -> None:
    """No expect_version: the version seen first is the one waited for; its revert ends the wait at once,
    and the halt reason comes from the rollout's own reason when the events scrolled away."""
    m = masters()
    rolling = _rolled(_detail(1, 1, version=3), 3, "rolling", "deploy")
    reverting = _rolled(_detail(2, 1, version=4), 4, "rolling", "auto-revert to version 2", reverted_from=3)
    _scripted(m, [rolling, reverting])
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_converged("web", 5, interval_s=0.01)
    assert info.value.code == "ROLLOUT_REVERTED"
    assert info.value.message == ("web: rollout of v3 halted: not healthy in time; auto-reverted to v4 "
                                  "(spec of v2)")


def test_wait_converged_newer_version_reverted_and_revert_halted(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    # The service moved past the deployed version (v3) with a revert: the deploy did not stick.
    both = _rolled(_detail(1, 0, version=5), 5, "halted", "replica b on worker-2: pull failed", reverted_from=4)
    _scripted(m, [both])
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_converged("web", 5, expect_version=3, interval_s=0.01)
    assert info.value.code == "ROLLOUT_REVERTED"
    assert info.value.message == ("web: rollout of v4 halted: not healthy in time; auto-reverted to v5, which "
                                  "halted too: replica b on worker-2: pull failed")


def test_wait_converged_ignores_what_a_lagging_follower_shows(masters: Callable[[], FakeMaster]) -> None:
    """A follower still on v2 (converged, or with an old halted rollout) is re-read from the leader and
    never ends the wait; only v3 does."""
    m = masters()
    stale_ok = _detail(2, 2, version=2)
    stale_halted = _rolled(_detail(2, 2, version=2), 2, "halted", "old trouble")
    fresh = _rolled(_detail(2, 2, version=3), 3, "done", "deploy")
    answers = iter([stale_ok, stale_ok, stale_halted, fresh])
    m.handler = lambda seen: (200, {}, next(answers))
    with _client(m.url) as client:
        assert client.wait_converged("web", 5, expect_version=3, interval_s=0.01)["version"] == 3
    assert [s.path for s in m.seen] == ["/api/v1/services/web", "/api/v1/services/web?consistent=true",
                                        "/api/v1/services/web", "/api/v1/services/web?consistent=true"]


def test_is_converged_with_a_canary() -> None:
    stable = [{"alloc": f"s{i}", "version": 2, "status": "running", "health": "healthy"} for i in range(2)]
    canary = {"alloc": "c", "version": 3, "status": "running", "health": None}
    detail = {**_detail(3, 3, version=2, containers=[*stable, canary]),
              "canary": {"version": 3, "digest": "d", "replicas": 1, "started_at": None}}
    assert is_converged(detail)
    assert not is_converged({**detail, "containers": [*stable, {**canary, "status": "starting"}]})
    assert not is_converged({**detail, "containers": stable})
    assert not is_converged({**detail, "containers": [*stable, canary, {**canary, "alloc": "x", "version": 1}]})


def test_wait_converged_on_a_canary(masters: Callable[[], FakeMaster]) -> None:
    """deploy answers the canary's version: that is known (not stale) though the service stays at v2."""
    m = masters()
    stable = [{"alloc": f"s{i}", "version": 2, "status": "running", "health": "healthy"} for i in range(2)]
    starting = {"alloc": "c", "version": 3, "status": "starting", "health": None}
    meta = {"canary": {"version": 3, "digest": "d", "replicas": 1, "started_at": None}}
    _scripted(m, [{**_detail(2, 2, version=2, containers=[*stable, starting]), **meta},
                  {**_detail(3, 3, version=2, containers=[*stable, {**starting, "status": "running"}]), **meta}])
    with _client(m.url) as client:
        final = client.wait_converged("web", 5, expect_version=3, interval_s=0.01)
    assert final["canary"]["version"] == 3 and "consistent=true" not in "".join(s.path for s in m.seen)


def test_wait_converged_failed_canary(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    stable = [{"alloc": f"s{i}", "version": 2, "status": "running", "health": "healthy"} for i in range(2)]
    bad = {"alloc": "c", "version": 3, "status": "failed", "reason": "pull failed: manifest unknown"}
    _scripted(m, [{**_detail(2, 2, version=2, containers=[*stable, bad]),
                   "canary": {"version": 3, "digest": "d", "replicas": 1, "started_at": None}}])
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_converged("web", 5, expect_version=3, interval_s=0.01, fail_after_s=0.05)
    assert info.value.code == "FAILED"
    assert info.value.message == "every replica of web v3 failed: pull failed: manifest unknown"


# ---------------------------------------------------------------------- drain, promote, rollback, history


def test_node_and_version_write_calls(masters: Callable[[], FakeMaster]) -> None:
    m = masters()

    def handler(seen: Seen) -> Reply:
        if seen.path.endswith("/drain"):
            return 200, {}, {"node_id": "w 1", "eligibility": "draining", "drain": {"force": True}}
        if seen.path.endswith("/undrain"):
            return 200, {}, {"node_id": "w 1", "eligibility": "eligible"}
        if seen.method == "DELETE":
            return 409, {}, _envelope("CONFLICT", "node w1 is ready and not drained: drain it first")
        if seen.path.endswith("/promote"):
            return 200, {}, {"name": "web", "version": 3}
        if seen.path.endswith("/rollback"):
            return 409, {}, _envelope("CONFLICT", "web has no previous version to roll back to")
        return 200, {}, {"name": "web", "version": 3, "versions": [{"version": 3, "current": True}]}

    m.handler = handler
    with _client(m.url) as client:
        assert client.drain("w 1", 90, force=True)["eligibility"] == "draining"
        assert client.drain("w 1")["drain"] == {"force": True}
        assert client.undrain("w 1") == {"node_id": "w 1", "eligibility": "eligible"}
        with pytest.raises(ApiError) as info:
            client.remove_node("w 1")
        assert (info.value.status, info.value.code) == (409, "CONFLICT")
        assert client.promote("web") == {"name": "web", "version": 3}
        with pytest.raises(ApiError) as info:
            client.rollback("web")
        assert info.value.code == "CONFLICT" and "no previous version" in info.value.message
        assert client.history("web")["versions"][0]["current"] is True
    assert [(s.method, s.path) for s in m.seen] == [
        ("POST", "/api/v1/cluster/nodes/w%201/drain"), ("POST", "/api/v1/cluster/nodes/w%201/drain"),
        ("POST", "/api/v1/cluster/nodes/w%201/undrain"), ("DELETE", "/api/v1/cluster/nodes/w%201"),
        ("POST", "/api/v1/services/web/promote"), ("POST", "/api/v1/services/web/rollback"),
        ("GET", "/api/v1/services/web/history")]
    assert json.loads(m.seen[0].body) == {"deadline_s": 90, "force": True}
    assert json.loads(m.seen[1].body) == {"deadline_s": 300, "force": False}
    assert all(s.headers.get("Idempotency-Key") for s in m.seen[:6]) and "Idempotency-Key" not in m.seen[6].headers


def _node(remaining: int, migrated: int, complete: bool = False, eligibility: str = "draining",
          drain: bool = True) -> dict[str, Any]:
    return {"id": "w1", "status": "ready", "eligibility": eligibility, "drain": {
        "deadline": "2030-01-01T00:00:00.000Z", "started_at": "2024-01-01T00:00:00.000Z", "force": False,
        "remaining": remaining, "migrated": migrated, "failed": 0, "complete": complete,
        "completed_at": None} if drain else None}


def test_wait_drained_reports_each_change(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    steps = [_node(3, 0), _node(3, 0), _node(2, 1), _node(2, 1), _node(0, 3),
             _node(0, 3, complete=True, eligibility="ineligible")]
    m.handler = lambda seen: (200, {}, steps.pop(0) if len(steps) > 1 else steps[0])
    seen: list[tuple[Any, ...]] = []
    with _client(m.url) as client:
        final = client.wait_drained("w1", 5, lambda n: seen.append((n["drain"]["remaining"],
                                                                     n["drain"]["migrated"])), interval_s=0.01)
    assert final["eligibility"] == "ineligible" and final["drain"]["complete"] is True
    assert seen == [(3, 0), (2, 1), (0, 3), (0, 3)]  # the last: complete (and ineligible) changed
    assert len(m.seen) == 6 and all(s.path == "/api/v1/cluster/nodes/w1" for s in m.seen)


def test_wait_drained_polls_every_half_second_and_times_out(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    m.handler = lambda seen: (200, {}, _node(2, 1))
    started = time.monotonic()
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_drained("w1", 1.2)
    assert (info.value.status, info.value.code) == (0, "TIMEOUT")
    assert info.value.message == "node w1 did not finish draining within 1.2 s (2 remaining, 1 migrated, 0 failed)"
    assert info.value.details["drain"]["remaining"] == 2
    assert 1.1 <= time.monotonic() - started < 3 and 3 <= len(m.seen) <= 5


def test_wait_drained_not_draining(masters: Callable[[], FakeMaster]) -> None:
    """No drain on a follower: ask the leader once; it has none either (undrained): NOT_DRAINING."""
    m = masters()
    answers = iter([_node(0, 0, drain=False), _node(1, 0), _node(0, 0, eligibility="eligible", drain=False),
                    _node(0, 0, eligibility="eligible", drain=False)])
    m.handler = lambda seen: (200, {}, next(answers))
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_drained("w1", 5, interval_s=0.01)
    assert info.value.code == "NOT_DRAINING"
    assert info.value.message == "node w1 is not draining (eligibility eligible)"
    assert [s.path.endswith("consistent=true") for s in m.seen] == [False, True, False, True]
    m.handler = lambda seen: (404, {}, _envelope("NODE_NOT_FOUND", "node 'w1' not found"))
    with _client(m.url) as client, pytest.raises(ApiError) as info:
        client.wait_drained("w1", 5, interval_s=0.01)
    assert info.value.code == "NODE_NOT_FOUND"


# ---------------------------------------------------------------------- traffic, scaling, webhooks


POLICY = {"mode": "auto", "min_replicas": 2, "max_replicas": 8, "target_rps_per_replica": 50.0,
          "max_p95_latency_ms": 250.0, "max_cpu_percent": 80.0, "max_memory_percent": 85.0,
          "scale_out_threshold_pct": 80.0, "scale_in_threshold_pct": 30.0, "window_seconds": 60.0,
          "cooldown_seconds": 120.0}


def test_metrics_and_scaling_calls(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    sample = {"at": 1.0, "replicas": 2, "rps": 12.5, "error_rate": 0.01, "p95_ms": 40.0, "active": 3,
              "cpu_pct": 20.0, "mem_pct": 30.0, "replicas_rps": {"a1": 6.0, "a2": 6.5}}

    def handler(seen: Seen) -> Reply:
        if "/metrics" in seen.path:
            return 200, {}, {"service": "my web", "current": sample, "history": [sample], "autoscaler": None,
                             "source": "m1"}
        if seen.method == "GET":
            return 200, {}, {"name": "web", "replicas": 3, "scaling": POLICY}
        return 200, {}, {"name": "web", "scaling": json.loads(seen.body)["scaling"]}

    m.handler = handler
    with _client(m.url) as client:
        assert client.metrics("my web", history=30)["current"] == sample
        assert client.metrics("web")["history"] == [sample]
        assert client.get_scaling("web") == {"name": "web", "replicas": 3, "scaling": POLICY}
        assert client.set_scaling("web", {"mode": "auto", "max_replicas": 8})["scaling"] == {
            "mode": "auto", "max_replicas": 8}
        assert client.set_scaling("web", None) == {"name": "web", "scaling": None}
    assert [(s.method, s.path) for s in m.seen] == [
        ("GET", "/api/v1/services/my%20web/metrics?history=30"), ("GET", "/api/v1/services/web/metrics"),
        ("GET", "/api/v1/services/web/scaling"), ("PUT", "/api/v1/services/web/scaling"),
        ("PUT", "/api/v1/services/web/scaling")]
    # Always wrapped: the server takes {"scaling": policy} and {"scaling": null} alike.
    assert json.loads(m.seen[3].body) == {"scaling": {"mode": "auto", "max_replicas": 8}}
    assert json.loads(m.seen[4].body) == {"scaling": None}
    assert m.seen[3].headers["Idempotency-Key"] != m.seen[4].headers["Idempotency-Key"]


def test_webhook_calls(masters: Callable[[], FakeMaster]) -> None:
    m = masters()
    hook = {"id": "abc123", "repo": "acme/shop", "service": "web", "branch": "main", "created_at": "x",
            "created_by": "ops", "invocations": []}

    def handler(seen: Seen) -> Reply:
        if seen.method == "POST":
            body = json.loads(seen.body)
            return 201, {}, {"id": "abc123", **body, "secret": body.get("secret", "generated" * 3)}
        if seen.method == "DELETE":
            return 404, {}, _envelope("NOT_FOUND", "webhook 'x y' not found")
        return 200, {}, {"webhooks": [hook]}

    m.handler = handler
    with _client(m.url) as client:
        assert client.add_webhook("acme/shop", "web")["secret"] == "generated" * 3
        assert client.add_webhook("acme/shop", "web", "prod", "s" * 20)["secret"] == "s" * 20
        assert client.webhooks() == [hook]
        with pytest.raises(ApiError) as info:
            client.remove_webhook("x y")
        assert (info.value.status, info.value.code) == (404, "NOT_FOUND")
    assert [(s.method, s.path) for s in m.seen] == [
        ("POST", "/api/v1/webhooks"), ("POST", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks"),
        ("DELETE", "/api/v1/webhooks/x%20y")]
    # No secret given: none sent, so the server makes one.
    assert json.loads(m.seen[0].body) == {"repo": "acme/shop", "service": "web", "branch": "main"}
    assert json.loads(m.seen[1].body) == {"repo": "acme/shop", "service": "web", "branch": "prod", "secret": "s" * 20}
    assert m.seen[0].headers["Idempotency-Key"] and m.seen[3].headers["Idempotency-Key"]


# ---------------------------------------------------------------------- WebSocket streams

WsHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def ws_masters() -> Iterator[Callable[[dict[str, WsHandler]], str]]:
    """Factory of aiohttp masters (one event loop in a thread) serving the given GET routes -> base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    def make(routes: dict[str, WsHandler]) -> str:
        async def start() -> int:
            app = web.Application()
            for path, handler in routes.items():
                app.router.add_get(path, handler)
            runner = web.AppRunner(app, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            return int(runner.addresses[0][1])

        return f"http://127.0.0.1:{asyncio.run_coroutine_threadsafe(start(), loop).result(5)}"

    yield make
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def _ws(request: web.Request, heartbeat: float | None = None) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=heartbeat)
    await ws.prepare(request)
    return ws


def _drop(request: web.Request) -> None:
    """Lose the connection without a close frame, as a killed master does."""
    assert request.transport is not None
    request.transport.abort()


def test_stream_events_filters_auth_sizes_and_end_on_close(ws_masters: Callable[..., str]) -> None:
    seen: list[tuple[dict[str, str], str | None]] = []
    big = {"seq": 3, "type": "note", "message": "x" * 70_000}  # a 64-bit length
    medium = {"seq": 2, "type": "note", "message": "caf\u00e9 " * 60}  # a 16-bit length

    async def events(request: web.Request) -> web.WebSocketResponse:
        seen.append((dict(request.query), request.headers.get("Authorization")))
        ws = await _ws(request)
        for event in ({"seq": 1, "type": "deploy"}, medium, big):
            await ws.send_str(json.dumps(event))
        await ws.close()
        return ws

    url = ws_masters({"/api/v1/events/stream": events})
    with _client(url) as client:
        got = list(client.stream_events(service="web", type="note", since=0))
        assert got == [{"seq": 1, "type": "deploy"}, medium, big]
        assert list(client.stream_events()) == got
    assert seen == [({"service": "web", "type": "note", "since": "0"}, "Bearer tok"), ({}, "Bearer tok")]


def test_stream_events_reconnects_on_another_master_resuming_after_the_last_seq(
        ws_masters: Callable[..., str]) -> None:
    """The master streaming to us dies mid-stream (the connection drops, then it answers 503 as a node
    without a leader would): the stream goes on from the next master, from the event after the last."""
    calls: list[tuple[str, dict[str, str]]] = []

    async def dying(request: web.Request) -> web.StreamResponse:
        calls.append(("a", dict(request.query)))
        if len(calls) > 1:
            return web.json_response(_envelope("CLUSTER_NOT_READY", "no leader"), status=503)
        ws = await _ws(request)
        await ws.send_str(json.dumps({"seq": 7, "type": "deploy"}))
        await asyncio.sleep(0.05)
        _drop(request)
        return ws

    async def healthy(request: web.Request) -> web.WebSocketResponse:
        calls.append(("b", dict(request.query)))
        ws = await _ws(request)
        await ws.send_str(json.dumps({"seq": 8, "type": "scale"}))
        await ws.close()
        return ws

    a = ws_masters({"/api/v1/events/stream": dying})
    b = ws_masters({"/api/v1/events/stream": healthy})
    with _client([a, b], retries=0) as client:
        assert [e["seq"] for e in client.stream_events(service="web")] == [7, 8]
    assert calls == [("a", {"service": "web"}), ("a", {"service": "web", "since": "7"}),
                     ("b", {"service": "web", "since": "7"})]


def test_stream_events_gives_up_after_a_reconnect_that_brings_nothing(ws_masters: Callable[..., str]) -> None:
    sinces: list[str | None] = []

    async def flaky(request: web.Request) -> web.WebSocketResponse:
        sinces.append(request.query.get("since"))
        ws = await _ws(request)
        if len(sinces) <= 2:  # each of the first two connections brings one event, then drops
            await ws.send_str(json.dumps({"seq": 10 + len(sinces)}))
            await asyncio.sleep(0.05)
        _drop(request)
        return ws

    url = ws_masters({"/api/v1/events/stream": flaky})
    got: list[int] = []
    with _client(url, retries=0) as client, pytest.raises(ApiError) as info:
        for event in client.stream_events():
            got.append(event["seq"])
    assert (info.value.status, info.value.code) == (0, "STREAM_BROKEN")
    assert got == [11, 12] and sinces == [None, "11", "12"]


def test_stream_logs_and_metrics(ws_masters: Callable[..., str]) -> None:
    paths: list[str] = []

    async def logs(request: web.Request) -> web.StreamResponse:
        paths.append(request.path_qs)
        if request.match_info["name"] == "nope":
            return web.json_response(_envelope("SERVICE_NOT_FOUND", "service 'nope' not found"), status=404)
        ws = await _ws(request)
        for line in ("[web.0 a1] one", "[web.1 b2] caf\u00e9"):
            await ws.send_str(line)
        await ws.send_bytes(b"[web.0 a1] raw")
        await ws.close()
        return ws

    async def metrics(request: web.Request) -> web.WebSocketResponse:
        ws = await _ws(request)
        for i in range(3):
            await ws.send_str(json.dumps({"service": "web", "current": {"at": i, "rps": 1.5 * i}, "sent_at": i}))
        await ws.close()
        return ws

    url = ws_masters({"/api/v1/services/{name}/logs/stream": logs,
                      "/api/v1/services/{name}/metrics/stream": metrics})
    with _client([_refused_url(), url], retries=0) as client:  # the first master is down: the next serves
        assert list(client.stream_logs("web", tail=5)) == ["[web.0 a1] one", "[web.1 b2] caf\u00e9",
                                                           "[web.0 a1] raw"]
        assert [m["current"]["rps"] for m in client.stream_metrics("web")] == [0.0, 1.5, 3.0]
        with pytest.raises(ApiError) as info:
            next(client.stream_logs("nope"))
        assert (info.value.status, info.value.code) == (404, "SERVICE_NOT_FOUND")
    assert paths == ["/api/v1/services/web/logs/stream?tail=5", "/api/v1/services/nope/logs/stream?tail=100"]
    with _client(_refused_url(), retries=0) as client, pytest.raises(ApiError) as info:
        next(client.stream_metrics("web"))
    assert info.value.code == "UNREACHABLE"


def test_stream_logs_dropped_is_an_error(ws_masters: Callable[..., str]) -> None:
    async def logs(request: web.Request) -> web.WebSocketResponse:
        ws = await _ws(request)
        await ws.send_str("[web.0 a1] one")
        await asyncio.sleep(0.05)
        _drop(request)
        return ws

    url = ws_masters({"/api/v1/services/{name}/logs/stream": logs})
    got: list[str] = []
    with _client(url, retries=0) as client, pytest.raises(ApiError) as info:
        for line in client.stream_logs("web"):
            got.append(line)
    assert info.value.code == "STREAM_BROKEN" and got == ["[web.0 a1] one"]


def test_stream_answers_pings_and_times_out_when_silent(ws_masters: Callable[..., str]) -> None:
    """A master that pings every 0.1 s closes a connection that does not pong: a message sent after
    0.5 s of pings arrives only if the client answered them. A stream silent past `stream_idle_s`
    (not even a ping) is a dead one."""
    async def pinging(request: web.Request) -> web.WebSocketResponse:
        ws = await _ws(request, heartbeat=0.1)
        await asyncio.sleep(0.5)
        await ws.send_str(json.dumps({"service": "web", "current": None}))
        await ws.close()
        return ws

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = await _ws(request)
        await asyncio.sleep(3)
        return ws

    url = ws_masters({"/api/v1/services/web/metrics/stream": pinging, "/api/v1/services/quiet/metrics/stream": silent})
    with _client(url, retries=0) as client:
        assert list(client.stream_metrics("web")) == [{"service": "web", "current": None}]
        client.stream_idle_s = 0.3
        started = time.monotonic()
        with pytest.raises(ApiError) as info:
            next(client.stream_metrics("quiet"))
        assert info.value.code == "STREAM_BROKEN" and time.monotonic() - started < 2


def test_closing_a_stream_closes_the_connection(ws_masters: Callable[..., str]) -> None:
    gone = threading.Event()
    close_codes: list[Any] = []

    async def endless(request: web.Request) -> web.WebSocketResponse:
        ws = await _ws(request)
        reader = asyncio.ensure_future(ws.receive())
        try:
            seq = 0
            while not reader.done():
                seq += 1
                await ws.send_str(json.dumps({"seq": seq}))
                await asyncio.sleep(0.01)
            close_codes.append(reader.result().data)
        finally:
            gone.set()
        return ws

    url = ws_masters({"/api/v1/events/stream": endless})
    with _client(url) as client:
        stream = client.stream_events()
        assert [next(stream)["seq"] for _ in range(3)] == [1, 2, 3]
        stream.close()
    assert gone.wait(2)
    assert close_codes == [1000]  # a proper close frame, not just a dropped socket


def test_client_module_needs_no_event_loop() -> None:
    code = "import sys, orca.client; sys.exit(1 if {'aiohttp', 'asyncio'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
