"""orca.client against tiny fake masters (stdlib http.server in a thread, ephemeral ports).

The fakes are scripted per test: each is a function from the recorded request to (status, headers,
body), so a test states exactly what a follower, a leader or a cluster without quorum would answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orca.client import MAX_REDIRECTS, ApiError, Client, error_from_response


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes | str | dict[str, Any]]


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
