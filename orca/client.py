"""The public Python SDK of orca: `Client(api, token).deploy([...])`.

It speaks only HTTP (stdlib `http.client`, no event loop; the live streams over a minimal stdlib
WebSocket client), so sync scripts, the CLI, the tests, the benchmarks and the drill can all use it.
What it does for the caller, and why:

- **Several masters.** `api` may list every master. A connection failure or a `503 CLUSTER_NOT_READY`
  (no leader yet, or a write that could not commit) moves on to the next URL; after a full pass it
  sleeps a short, growing backoff. `retries` bounds the number of extra passes, so a call never hangs.
- **Leader redirects.** A follower answers writes with `307` and `Location: <leader><path>`; the client
  re-sends the same method and body there (up to `MAX_REDIRECTS` hops) and remembers that leader, so
  the next write goes straight to it.
- **Exactly-once writes.** Every POST/PUT/DELETE carries an `Idempotency-Key`, made once per logical
  call and reused on every retry of that call: a write retried across a leader failover is applied once
  and the retry gets the first result back.

Errors: every failure is an `ApiError` carrying the server's envelope; a connection that
never succeeded becomes `ApiError(status=0, code="UNREACHABLE")`.

Thread-safety: keep-alive connections are kept per thread, so one Client may be shared, though one
Client per thread is the simplest pattern.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json as _json
import os
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from orca import __version__
from orca.client_orchestry import OrchestryMixin
from orca.sdk.transport import CONNECT_TIMEOUT_S, Endpoints, open_connection, ssl_context

__all__ = ["ApiError", "Client", "MAX_REDIRECTS", "API_PREFIX", "is_converged", "rollout_failure"]

API_PREFIX = "/api/v1"
MAX_REDIRECTS = 5
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REDIRECTS = frozenset({307, 308})  # the only ones that keep method and body; masters send 307
_MAX_BACKOFF_S = 2.0
# A leader failover takes ~0.3-0.7 s: poll briskly through it (with jitter, so clients do not march in step)
# before backing off; a coarse doubling backoff would round every failover up to its next step.
_FAST_RETRY_S = 0.03
_FAST_RETRY_WINDOW = 40
# A keep-alive connection the server closed while idle fails with one of these before any response;
# trying once more on a fresh connection is not a "retry" of the request (timeouts are not in here,
# because then the server may still be working on it).
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError)


class ApiError(Exception):
    """A request that failed: the server's error envelope, or status 0 when no master answered.

    `code` is the machine-readable contract (`SERVICE_NOT_FOUND`, `CLUSTER_NOT_READY`, ...); `message`
    is the human text; `details` the envelope's details; `body` the decoded (or raw) response body.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None, body: Any = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.body = body

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class _Retryable(Exception):
    """Internal: this URL failed in a way another master (or a later try) may not."""

    def __init__(self, error: ApiError | None, cause: BaseException | None = None):
        super().__init__(str(error or cause))
        self.error = error  # None for a connection failure
        self.cause = cause


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def error_from_response(status: int, data: bytes) -> ApiError:
    """Turn an error response into an ApiError; a body that is not the envelope becomes `HTTP_<status>`."""
    text = data.decode("utf-8", "replace")
    try:
        body = _json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "error" in body):
        err = body.get("error")
        code = body.get("code")
        if isinstance(err, dict):  # the state machine's value shape, should it ever leak through
            code = code or err.get("code")
            err = err.get("message")
        message = str(err) if err is not None else http.client.responses.get(status, "error")
        return ApiError(status, str(code or f"HTTP_{status}"), message, body.get("details"), body)
    message = text.strip()[:500] or http.client.responses.get(status, "error")
    return ApiError(status, f"HTTP_{status}", message, None, text)


def _ready(container: dict[str, Any]) -> bool:
    return container.get("status") == "running" and container.get("health") in (None, "healthy")


def is_converged(detail: dict[str, Any]) -> bool:
    """Whether a service detail (`GET /services/{name}`) shows the service where its spec wants it.

    Every desired replica running and healthy, and every container of the current version: during a
    rolling update the old version's replicas count as running too, so counts alone would say "done"
    before the new version has started. With a canary, the stable set at the current version and the
    canary's replicas at its version, every one running and healthy. A service scaled to 0 (or stopped)
    is done once its containers are gone.
    """
    if detail.get("kind") == "job":  # a job is where its spec wants it once its run ended (or waits for a tick)
        return detail.get("status") in ("complete", "failed", "waiting", "stopped")
    replicas = detail.get("replicas") or {}
    desired = int(replicas.get("desired") or 0)
    containers = detail.get("containers") or []
    version = detail.get("version")
    canary = detail.get("canary")
    if detail.get("status") == "stopped" or (desired == 0 and not canary):
        return not containers
    if isinstance(canary, dict) and canary.get("version") is not None:
        wanted = int(canary.get("replicas") or 0)
        stable = [c for c in containers if c.get("version") == version]
        canaries = [c for c in containers if c.get("version") == canary["version"]]
        return (len(stable) == desired and len(canaries) == wanted and len(containers) == desired + wanted
                and all(_ready(c) for c in containers))
    return (int(replicas.get("running") or 0) == desired and int(replicas.get("healthy") or 0) == desired
            and len(containers) == desired and all(c.get("version") == version for c in containers))


def _progress_key(detail: dict[str, Any]) -> Any:
    """What a progress report shows; a new report is due when this changes."""
    replicas = detail.get("replicas") or {}
    rollout = detail.get("rollout") or {}
    canary = detail.get("canary") or {}
    return (detail.get("version"), detail.get("status"), detail.get("pending_reason"),
            tuple(sorted(replicas.items())),
            (rollout.get("version"), rollout.get("state"), rollout.get("reverted_from")),
            (canary.get("version"), canary.get("replicas")),
            tuple((c.get("alloc"), c.get("version"), c.get("status"), c.get("health"), c.get("reason"))
                  for c in detail.get("containers") or []))


def _drain_key(node: dict[str, Any]) -> Any:
    drain = node.get("drain") or {}
    return (node.get("status"), node.get("eligibility"), drain.get("remaining"), drain.get("migrated"),
            drain.get("failed"), drain.get("complete"))


def _has_version(detail: dict[str, Any], version: int) -> bool:
    """Whether this detail already knows `version`: as current (or past it), or as the running canary."""
    current = detail.get("version")
    canary = detail.get("canary") or {}
    return (isinstance(current, int) and current >= version) or canary.get("version") == version


def _event_details(detail: dict[str, Any], type_: str, version: Any) -> dict[str, Any]:
    """The details of the newest event of `type_` about `version` in the detail's recent events."""
    for event in reversed(detail.get("events") or []):
        details = event.get("details") if isinstance(event, dict) else None
        if event.get("type") == type_ and isinstance(details, dict) and details.get("version") == version:
            return details
    return {}


def rollout_failure(name: str, detail: dict[str, Any], expect_version: int | None) -> ApiError | None:
    """`ROLLOUT_HALTED` / `ROLLOUT_REVERTED` when the detail shows the rollout of `expect_version` (or of
    a later version) halted or auto-reverted; None while it rolls or when it went through.

    A halted rollout of version V with `auto_revert` is replaced at once by a new rollout (of the
    revert version R, the old spec) carrying `reverted_from: V`, and that one may end "done": so a
    revert shows as `reverted_from`, whatever the state of the rollout that carries it.
    """
    rollout = detail.get("rollout")
    if not isinstance(rollout, dict):
        return None
    current = detail.get("version")
    expect = current if expect_version is None else expect_version
    if not isinstance(expect, int):
        return None
    reverted_from = rollout.get("reverted_from")
    if reverted_from is not None and (reverted_from == expect or (isinstance(current, int) and current > expect)):
        halt = _event_details(detail, "rollout_halted", reverted_from)
        revert = _event_details(detail, "rollout_reverted", rollout.get("version"))
        spec_of = revert.get("spec_of")
        if spec_of is None:  # the events scrolled away: the rollout's reason says "auto-revert to version N"
            found = re.search(r"version (\d+)", str(rollout.get("reason") or ""))
            spec_of = int(found.group(1)) if found else None
        message = (f"{name}: rollout of v{reverted_from} halted: {halt.get('reason') or 'not healthy in time'}"
                   f"; auto-reverted to v{rollout.get('version')}"
                   + (f" (spec of v{spec_of})" if spec_of is not None else ""))
        if rollout.get("state") == "halted":
            message += f", which halted too: {rollout.get('reason') or 'no reason given'}"
        return ApiError(0, "ROLLOUT_REVERTED", message, detail, detail)
    version = rollout.get("version")
    if rollout.get("state") == "halted" and isinstance(version, int) and version >= expect:
        return ApiError(0, "ROLLOUT_HALTED", f"{name}: rollout of v{version} halted: "
                        f"{rollout.get('reason') or 'no reason given'}", detail, detail)
    return None


def _field(response: Any, key: str) -> Any:
    """`response[key]`, or an ApiError naming the mismatch (a KeyError would be a traceback in the CLI)."""
    if isinstance(response, dict) and key in response:
        return response[key]
    raise ApiError(200, "INVALID_RESPONSE", f"response has no {key!r}", None, response)



def _query(params: Mapping[str, Any]) -> str:
    """`?k=v&...` of the params that are not None ("" when none are)."""
    query = {k: _query_value(v) for k, v in params.items() if v is not None}
    return "?" + urlencode(query) if query else ""


def _json_message(message: str | bytes) -> dict[str, Any]:
    try:
        value = _json.loads(message)
    except ValueError as exc:
        raise ApiError(0, "INVALID_RESPONSE", f"stream message is not JSON: {message[:200]!r}", None,
                       message) from exc
    if not isinstance(value, dict):
        raise ApiError(0, "INVALID_RESPONSE", "stream message is not a JSON object", None, value)
    return value


# ---------------------------------------------------------------------- WebSocket (RFC 6455, client side)

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_MAX_MESSAGE = 16 << 20  # a metrics body or a log line is kilobytes; anything this big is not ours
_WS_IDLE_S = 60.0  # masters ping every 20 s: a minute of silence is a dead connection
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class _Handshake(Exception):
    """Internal: the server answered the upgrade request with a plain HTTP response."""

    def __init__(self, status: int, data: bytes):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.data = data


class _WebSocket:
    """A minimal blocking WebSocket client: enough for the masters' streams, nothing more.

    Text and binary messages (fragmented or not) in; pings answered with pongs; a close frame
    answered and reported as the end of the stream. No extensions (no compression is offered, so the
    server sends none) and no subprotocols. Client frames are masked, as the RFC requires.
    """

    def __init__(self, sock: socket.socket, reader: Any):
        self.sock = sock
        self.reader = reader
        self.closed = False

    @classmethod
    def connect(cls, url: str, headers: Mapping[str, str], timeout: float, idle_s: float | None, *,
                connect_timeout: float = CONNECT_TIMEOUT_S, ca_file: str | None = None) -> _WebSocket:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        sock = socket.create_connection((host, port), timeout=min(timeout, connect_timeout))
        sock.settimeout(timeout)
        try:
            if parts.scheme == "https":
                sock = ssl_context(ca_file).wrap_socket(sock, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode()
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                     *(f"{k}: {v}" for k, v in headers.items())]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            reader = sock.makefile("rb")
            status_line = reader.readline(65537).decode("latin-1")
            fields = status_line.split(None, 2)
            if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
                raise http.client.BadStatusLine(status_line.strip() or "connection closed")
            status = int(fields[1])
            resp_headers = http.client.parse_headers(reader)
            if status != 101:
                raise _Handshake(status, _read_body(reader, resp_headers))
            expected = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
            if (resp_headers.get("Upgrade", "").lower() != "websocket"
                    or resp_headers.get("Sec-WebSocket-Accept", "").strip() != expected):
                raise http.client.HTTPException("the server did not accept the WebSocket upgrade")
            sock.settimeout(idle_s)
            return cls(sock, reader)
        except BaseException:
            sock.close()
            raise

    def recv(self) -> str | bytes | None:
        """The next message (text as str), or None once the server closed the stream.

        A connection lost without a close frame (reset, EOF, `idle_s` of silence) raises OSError or
        `http.client.HTTPException`: the caller tells "done" from "dropped" by that.
        """
        if self.closed:
            return None
        kind: int | None = None
        message = bytearray()
        while True:
            head = self._read(2)
            fin, opcode = head[0] & 0x80, head[0] & 0x0F
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            if length + len(message) > _WS_MAX_MESSAGE:
                raise http.client.HTTPException(f"WebSocket message over {_WS_MAX_MESSAGE} bytes")
            mask = self._read(4) if head[1] & 0x80 else None
            payload = self._read(length)
            if mask is not None:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == _OP_PING:
                self._send(_OP_PONG, payload)
                continue
            if opcode == _OP_PONG:
                continue
            if opcode == _OP_CLOSE:
                self.closed = True
                with contextlib.suppress(OSError):
                    self._send(_OP_CLOSE, payload[:2])
                return None
            if opcode in (_OP_TEXT, _OP_BINARY):
                kind, message = opcode, bytearray(payload)
            elif opcode == _OP_CONT and kind is not None:
                message += payload
            else:
                raise http.client.HTTPException(f"unexpected WebSocket frame (opcode {opcode})")
            if fin:
                return message.decode("utf-8", "replace") if kind == _OP_TEXT else bytes(message)

    def close(self) -> None:
        """Say goodbye (close code 1000) if still open, then drop the socket; never raises."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.settimeout(1.0)
                self._send(_OP_CLOSE, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _read(self, n: int) -> bytes:
        data = self.reader.read(n) if n else b""
        if len(data) < n:
            raise ConnectionResetError("connection closed without a WebSocket close frame")
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _read_body(reader: Any, headers: http.client.HTTPMessage, limit: int = 1 << 20) -> bytes:
    """The body of a refused upgrade (an error envelope): by Content-Length, or chunked."""
    try:
        if headers.get("Content-Length", "").strip().isdigit():
            return bytes(reader.read(min(int(headers["Content-Length"]), limit)))
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while len(out) < limit:
                size = int(reader.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                out += reader.read(size)
                reader.readline(1024)
            return bytes(out)
    except (OSError, ValueError):
        pass
    return b""


class Client(OrchestryMixin):
    """A client for one orca cluster; see the module docstring for the retry and redirect contract.

    `api` is one master URL, a comma-separated string of them, or a list. `timeout` bounds each socket
    read; `connect_timeout` each connect (short: a master that does not accept within it is skipped for
    the next one, and tried last for a while, see `orca.sdk.transport`); `retries` the extra passes over
    the masters: the first 40 after ~30-60 ms each (about 2 s, enough to ride through a leader failover),
    the rest after `backoff_s` doubling, capped at 2 s. `on_skip(url, error)` is told of every master
    skipped because it could not be reached. `ca_file` is the CA for https masters (system store if None).
    `discover()` learns the other masters from any one of them.
    """

    def __init__(self, api: str | list[str], token: str | None = None, *, timeout: float = 10.0,
                 retries: int = 45, backoff_s: float = 0.1, connect_timeout: float = CONNECT_TIMEOUT_S,
                 ca_file: str | None = None, on_skip: Callable[[str, BaseException], None] | None = None):
        urls = api.split(",") if isinstance(api, str) else list(api)
        self.endpoints = Endpoints(urls, on_skip=on_skip)
        self.apis = self.endpoints.urls  # the same list: `discover()` extends it
        self.connect_timeout = connect_timeout
        self.ca_file = ca_file or None
        if not self.apis:
            raise ValueError("at least one master API URL is required")
        for url in self.apis:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise ValueError(f"not an http(s) URL: {url!r}")
        self.token = token or None
        # The CA for https masters (the cluster CA: `orca cluster ca show --pem`); the system store if None.
        self.ca_file = ca_file or None
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        # A stream silent this long is dead (masters ping every 20 s); None waits forever.
        self.stream_idle_s: float | None = _WS_IDLE_S
        # Hints, not truth: plain attribute writes are atomic, and a wrong hint only costs one hop.
        self.leader: str | None = None
        self._last_good: str | None = None
        self._local = threading.local()
        self._pools: list[dict[tuple[str, str], http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every kept-alive connection (of every thread that used this client)."""
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            for conn in list(pool.values()):
                conn.close()
            pool.clear()

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                idempotency_key: str | None = None, consistent: bool = False,
                raw: bool | str = False, data: bytes | None = None) -> Any:
        """Send one logical request and return the decoded JSON (or the text, with `raw=True`; the
        bytes, with `raw="bytes"`).

        `path` is absolute (`/api/v1/...`) or relative to `/api/v1`. `params` with value None are
        dropped. `consistent=True` asks for a read from the leader's state. `data` is a binary body
        (`application/octet-stream`), instead of `json`.
        """
        method = method.upper()
        write = method in _WRITE_METHODS
        headers = {"Accept": "application/json", "User-Agent": f"orca-client/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body: bytes | None = None
        if json is not None:
            body = _json.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            body = bytes(data)
            headers["Content-Type"] = "application/octet-stream"
        if write:
            # Made once here, outside the retry loop: that is what makes a retried write apply once.
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        if consistent:
            query["consistent"] = "true"
        target = path if path.startswith("/") else f"{API_PREFIX}/{path}"
        if query:
            target += ("&" if "?" in target else "?") + urlencode(query)

        last_error: ApiError | None = None
        last_cause: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._pause(attempt))
            for base in self._candidates(write):
                try:
                    return self._send(method, base + target, body, headers, write, raw)
                except _Retryable as exc:
                    if exc.error is not None:
                        last_error = exc.error
                    else:
                        last_cause = exc.cause
        if last_error is not None:
            raise last_error
        raise ApiError(0, "UNREACHABLE", f"no master answered at {', '.join(self.apis)}: {last_cause}")

    def _pause(self, attempt: int) -> float:
        if attempt <= _FAST_RETRY_WINDOW:
            return _FAST_RETRY_S * (1.0 + random.random())
        return min(self.backoff_s * 2 ** (attempt - _FAST_RETRY_WINDOW - 1), _MAX_BACKOFF_S)

    def _candidates(self, write: bool) -> list[str]:
        """Masters in the order to try: writes go to the known leader first, reads stick to the last
        master that answered (keep-alive), then every configured URL in order."""
        return self.endpoints.order([self.leader, self._last_good] if write else [self._last_good, self.leader])

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str], write: bool,
              raw: bool | str) -> Any:
        """One try against one master, following its redirects; raises _Retryable or ApiError."""
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                status, resp_headers, data = self._roundtrip(method, url, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                self._unreachable(_origin(url), exc)
                raise _Retryable(None, exc) from exc
            location = resp_headers.get("Location")
            if status in _REDIRECTS and location:
                url = urljoin(url, location)
                self.leader = _origin(url)
                continue
            if 200 <= status < 300:
                self._last_good = _origin(url)
                self.endpoints.mark_up(self._last_good)
                if write:
                    self.leader = _origin(url)
                if raw == "bytes":
                    return data
                text = data.decode("utf-8", "replace")
                if raw:
                    return text
                try:
                    return _json.loads(text) if text.strip() else {}
                except ValueError as exc:
                    raise ApiError(status, "INVALID_RESPONSE", f"response is not JSON: {text[:200]!r}",
                                   None, text) from exc
            error = error_from_response(status, data)
            if status == 503 and error.code == "CLUSTER_NOT_READY":
                self._forget(_origin(url))
                raise _Retryable(error)
            if status in _REDIRECTS:  # a redirect without a Location: the follower knows no leader
                raise _Retryable(error)
            raise error
        # Leadership moved while we chased it; a later pass will find where it settled.
        raise _Retryable(ApiError(307, "TOO_MANY_REDIRECTS",
                                  f"more than {MAX_REDIRECTS} redirects, last to {url}"))

    def _unreachable(self, origin: str, error: BaseException) -> None:
        self._forget(origin)
        self.endpoints.mark_down(origin, error)

    def _forget(self, origin: str) -> None:
        if self.leader == origin:
            self.leader = None
        if self._last_good == origin:
            self._last_good = None

    def _pool(self) -> dict[tuple[str, str], http.client.HTTPConnection]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
            with self._lock:
                self._pools.append(pool)
        return pool

    def _roundtrip(self, method: str, url: str, body: bytes | None,
                   headers: dict[str, str]) -> tuple[int, http.client.HTTPMessage, bytes]:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool = self._pool()
        for _ in range(2):
            conn = pool.get(key)
            reused = conn is not None
            if conn is None:
                conn = pool[key] = open_connection(f"{parts.scheme}://{parts.netloc}", timeout=self.timeout,
                                                   connect_timeout=self.connect_timeout, ca_file=self.ca_file)
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except _STALE_CONNECTION:
                pool.pop(key, None)
                conn.close()
                if reused:
                    continue
                raise
            except BaseException:
                pool.pop(key, None)
                conn.close()
                raise
            if resp.will_close:
                pool.pop(key, None)
                conn.close()
            return resp.status, resp.headers, data
        raise http.client.RemoteDisconnected("connection closed twice")  # pragma: no cover

    # ------------------------------------------------------------------ API

    def health(self) -> dict[str, Any]:
        """This master's view: role, leader, term, readiness (no token needed)."""
        return self.request("GET", "/api/v1/health")

    def deploy(self, services: list[dict[str, Any]], idempotency_key: str | None = None) -> dict[str, Any]:
        """Create or update services -> `{"deployed": [names], "errors": [{"service", "error"}]}`."""
        return self.request("POST", "/api/v1/deploy", json={"services": list(services)},
                            idempotency_key=idempotency_key)

    def status(self, project: str | None = None, *, consistent: bool = False) -> list[dict[str, Any]]:
        """One summary row per service, optionally of one project."""
        response = self.request("GET", "/api/v1/status", params={"project": project}, consistent=consistent)
        return _field(response, "services")

    def service(self, name: str, *, consistent: bool = False) -> dict[str, Any]:
        """Spec, version, replica counts, containers and recent events of one service."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}", consistent=consistent)

    def scale(self, name: str, replicas: int, idempotency_key: str | None = None) -> dict[str, Any]:
        """-> `{name, previous_replicas, replicas}`."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/scale",
                            json={"replicas": int(replicas)}, idempotency_key=idempotency_key)

    def stop(self, name: str, purge: bool = False, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop a service; its config is kept unless `purge`."""
        return self.request("DELETE", f"/api/v1/services/{quote(name, safe='')}",
                            params={"purge": True} if purge else None, idempotency_key=idempotency_key)

    def start(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Resume a stopped service."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/start",
                            idempotency_key=idempotency_key)

    def stop_project(self, project: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop every service of one project."""
        return self.request("DELETE", f"/api/v1/projects/{quote(project, safe='')}",
                            idempotency_key=idempotency_key)

    def stop_all(self, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop every service of the cluster (admin)."""
        return self.request("POST", "/api/v1/stop", idempotency_key=idempotency_key)

    def events(self, service: str | None = None, type: str | None = None, since: float | str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
        """The event history, oldest first as the server orders it, filtered server-side."""
        params = {"service": service, "type": type, "since": since, "limit": limit}
        return _field(self.request("GET", "/api/v1/events", params=params), "events")

    def cluster_info(self) -> dict[str, Any]:
        """Masters, leader, term, commit index and nodes."""
        return self.request("GET", "/api/v1/cluster/info")

    def discover(self) -> list[str]:
        """Ask any master for the members (`/cluster/info`), add their API URLs to the ones this client
        tries, and return every member's URL (the configured ones that are not members stay, last)."""
        masters = _field(self.cluster_info(), "masters")
        members = [str(m["api_url"]).rstrip("/") for m in masters
                   if isinstance(m, dict) and isinstance(m.get("api_url"), str)
                   and urlsplit(m["api_url"]).scheme in ("http", "https") and urlsplit(m["api_url"]).netloc]
        self.endpoints.add(members)
        return members

    def cluster_leader(self) -> dict[str, Any]:
        """The current leader; `CLUSTER_NOT_READY` (after retries) when there is none."""
        return self.request("GET", "/api/v1/cluster/leader")

    def cluster_status(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/cluster/status")

    def members(self) -> dict[str, Any]:
        """The masters as the leader sees them: id, Raft and API address, role, last contact, lag."""
        return self.request("GET", "/api/v1/cluster/members")

    def add_master(self, node_id: str, raft: str, api: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Add a running master (started with the current members as its peers); returns once committed."""
        return self.request("POST", "/api/v1/cluster/members", json={"id": node_id, "raft": raft, "api": api},
                            idempotency_key=idempotency_key)

    def remove_master(self, node_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/cluster/members/{quote(node_id, safe='')}",
                            idempotency_key=idempotency_key)

    def promote(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Make the canary the current version, rolled out to every replica -> `{"name", "version"}`;
        `CONFLICT` (409) when there is no canary."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/promote",
                            idempotency_key=idempotency_key)

    def rollback(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Drop the canary, or without one roll to the previous version's spec (as a new version)
        -> `{"name", "version", "dropped_canary"?, "spec_of"?}`; `CONFLICT` (409) with nothing to go back to."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/rollback",
                            idempotency_key=idempotency_key)

    def history(self, name: str) -> dict[str, Any]:
        """-> `{"name", "version", "versions": [{"version", "digest", "image", "at", "current", "canary"}]}`,
        newest first."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}/history")

    def create_token(self, role: str, name: str | None = None, ttl_s: float | None = None,
                     idempotency_key: str | None = None, *, node: str | None = None,
                     projects: Sequence[str] | None = None) -> dict[str, Any]:
        """Ask the leader for a recorded token -> `{"token", "jti", "name", "role", "node", ...}` (shown
        once). An agent token is bound to `node` (required for role "agent"; its name defaults to it).
        `projects` (deployer only) scopes the token: it writes only services of those projects and may
        reference secrets granted to them (see `orca secrets`)."""
        body: dict[str, Any] = {"role": role, "ttl_s": ttl_s}
        if name is not None:
            body["name"] = name
        if node is not None:
            body["node"] = node
        if projects is not None:
            body["projects"] = list(projects)
        return self.request("POST", "/api/v1/tokens", json=body, idempotency_key=idempotency_key)

    def create_join_token(self, role: str = "worker", *, ttl_s: float | None = 86400.0, node: str | None = None,
                          rotate: bool = False, idempotency_key: str | None = None) -> dict[str, Any]:
        """A one-time join token an agent exchanges for its node credential -> `{"token", "id", "expires_at",
        "node", "rotated": [ids revoked by rotate], ...}` (the token is shown once). `node` restricts it to
        one node id; `rotate` first revokes every unused join token; `ttl_s=None`: no expiry."""
        body: dict[str, Any] = {"role": role, "ttl_s": ttl_s, "rotate": rotate}
        if node is not None:
            body["node"] = node
        return self.request("POST", "/api/v1/cluster/join-tokens", json=body, idempotency_key=idempotency_key)

    def list_join_tokens(self) -> list[dict[str, Any]]:
        """Join tokens with their state (used_by, revoked, expires_at); never the tokens themselves."""
        return _field(self.request("GET", "/api/v1/cluster/join-tokens"), "join_tokens")

    def revoke_join_token(self, token_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/cluster/join-tokens/{quote(token_id, safe='')}",
                            idempotency_key=idempotency_key)

    def list_tokens(self) -> list[dict[str, Any]]:
        """Recorded tokens (never the token strings themselves)."""
        return _field(self.request("GET", "/api/v1/tokens"), "tokens")

    def revoke_token(self, jti: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/tokens/{quote(jti, safe='')}",
                            idempotency_key=idempotency_key)

    # ------------------------------------------------------------------ traffic and scaling

    def metrics(self, name: str, history: int = 0) -> dict[str, Any]:
        """The service's traffic and resource figures, aggregated by the leader (any master answers)
        -> `{"service", "current": sample | None, "history": [sample, ...], "autoscaler": {...} | None,
        "source"}`; a sample is `{"at", "replicas", "rps", "error_rate", "p95_ms", "active", "cpu_pct",
        "mem_pct", "replicas_rps"}` (`error_rate` a fraction; the others None when unknown). `history`
        (0..1800) asks for that many past samples too."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}/metrics",
                            params={"history": int(history) if history else None})

    def get_scaling(self, name: str) -> dict[str, Any]:
        """-> `{"name", "replicas", "scaling": policy | None}`; the policy has every field (`mode`,
        `min_replicas`, `max_replicas`, `target_rps_per_replica`, `max_p95_latency_ms`, `max_cpu_percent`,
        `max_memory_percent`, `scale_out_threshold_pct`, `scale_in_threshold_pct`, `window_seconds`,
        `cooldown_seconds`)."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}/scaling")

    def set_scaling(self, name: str, policy: Mapping[str, Any] | None,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Replace the autoscaling policy (fields left out take the defaults; the server validates), or
        remove it with None -> `{"name", "scaling"}` (the normalized policy)."""
        return self.request("PUT", f"/api/v1/services/{quote(name, safe='')}/scaling",
                            json={"scaling": None if policy is None else dict(policy)},
                            idempotency_key=idempotency_key)

    # ------------------------------------------------------------------ webhooks

    def webhooks(self) -> list[dict[str, Any]]:
        """Registered GitHub webhooks `{"id", "repo", "service", "branch", "created_at", "created_by",
        "invocations": [{"delivery", "event", "ref", "at", "action", "reason", "version"}]}`, the
        invocations newest first; never a secret."""
        return _field(self.request("GET", "/api/v1/webhooks"), "webhooks")

    def add_webhook(self, repo: str, service: str, branch: str = "main", secret: str | None = None,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Register a webhook: a push to `repo` (`owner/name`) on `branch` redeploys `service`
        -> `{"id", "repo", "service", "branch", "secret"}`. Without `secret` (16-256 characters) the
        server makes one; either way this answer is the only place it is ever shown."""
        body: dict[str, Any] = {"repo": repo, "service": service, "branch": branch}
        if secret is not None:
            body["secret"] = secret
        return self.request("POST", "/api/v1/webhooks", json=body, idempotency_key=idempotency_key)

    def remove_webhook(self, webhook_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """-> `{"id", "removed": true}`; `NOT_FOUND` (404) for an unknown id."""
        return self.request("DELETE", f"/api/v1/webhooks/{quote(webhook_id, safe='')}",
                            idempotency_key=idempotency_key)

    # ------------------------------------------------------------------ nodes

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: status, eligibility, labels, capacity, allocated, allocation count, drain."""
        return _field(self.request("GET", "/api/v1/cluster/nodes"), "nodes")

    def node(self, node_id: str, *, consistent: bool = False) -> dict[str, Any]:
        """One node, with its `allocation_list`; `NODE_NOT_FOUND` when unknown."""
        return self.request("GET", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}", consistent=consistent)

    def drain(self, node_id: str, deadline_s: float = 300, force: bool = False,
              idempotency_key: str | None = None) -> dict[str, Any]:
        """Start draining a node (admin) -> `{"node_id", "eligibility": "draining", "drain": {...}}`.

        Nothing new is placed there; its replicas move off start-before-stop, whatever is left at
        `deadline_s` is stopped (`force`: at once), then the node is `ineligible`. See `wait_drained`.
        """
        return self.request("POST", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}/drain",
                            json={"deadline_s": deadline_s, "force": bool(force)}, idempotency_key=idempotency_key)

    def undrain(self, node_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Make a node eligible again (admin); nothing already moved comes back."""
        return self.request("POST", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}/undrain",
                            idempotency_key=idempotency_key)

    def remove_node(self, node_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Forget a down or drained node (admin) -> `{"node_id", "removed": true}`; `CONFLICT` (409) when
        the node is ready and not drained."""
        return self.request("DELETE", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}",
                            idempotency_key=idempotency_key)

    # ------------------------------------------------------------------ backup and restore

    def snapshot_save(self) -> bytes:
        """A consistent snapshot of the whole replicated state, from the leader (admin): the bytes of an
        `orca.snapshot` file (its header says index, term, schema version and checksum)."""
        from orca.sdk import snapshots

        return snapshots.save(self)

    def snapshot_restore(self, data: bytes, force: bool = False,
                         on_progress: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
        """Load a snapshot file into this (empty, unless `force`) cluster (admin) -> `{"restored", "index",
        "term", "counts"}`. `on_progress(chunks_sent, chunks)` after each chunk."""
        from orca.sdk import snapshots

        return snapshots.restore(self, data, force=force, on_progress=on_progress)

    # ------------------------------------------------------------------ secrets

    def set_secret(self, key: str, value: str, idempotency_key: str | None = None, *,
                   projects: Sequence[str] | None = None, all_projects: bool = False) -> dict[str, Any]:
        """Create or replace a secret (admin) -> `{"key", "created", "grants"}`; the value is never returned.

        `projects` grants it to those projects, `all_projects=True` to every project; with neither a new
        secret is admin-only (only an admin's deploy may reference it) and an existing one keeps its grants.
        """
        body: dict[str, Any] = {"key": key, "value": value}
        if projects is not None or all_projects:
            body["grants"] = {"all_projects": all_projects, "projects": list(projects or [])}
        return self.request("POST", "/api/v1/secrets", json=body, idempotency_key=idempotency_key)

    def grant_secret(self, key: str, projects: Sequence[str] = (), all_projects: bool = False,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Replace a secret's grants, value untouched (admin) -> `{"key", "grants"}`; no projects and
        `all_projects=False` make it admin-only."""
        return self.request("PUT", f"/api/v1/secrets/{quote(key, safe='')}/grants",
                            json={"all_projects": all_projects, "projects": list(projects)},
                            idempotency_key=idempotency_key)

    def list_secrets(self) -> list[dict[str, Any]]:
        """Secret keys with `created_at`/`updated_at` and `grants` `{all_projects, projects}` (never values)."""
        return _field(self.request("GET", "/api/v1/secrets"), "secrets")

    def delete_secret(self, key: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/secrets/{quote(key, safe='')}", idempotency_key=idempotency_key)

    # ------------------------------------------------------------------ logs

    def run_job(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Start a new run of a job (`kind = "job"`) -> `{"name", "run"}`."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/run", idempotency_key=idempotency_key)

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> Iterator[str]:
        """The service's log lines (without their newline), each prefixed `[svc.index allocid] `.

        A generator that yields every line as it arrives, so with `follow=True` it runs until the
        caller stops iterating (close the generator, or break out of the loop) or the stream ends. Any
        master serves logs, so no redirect is followed: the first master that accepts the connection
        is used. The socket has no read timeout while following (a quiet service sends nothing for
        minutes); without `follow` a pause of max(timeout, 30 s) ends the stream with an error.
        """
        target = f"/api/v1/services/{quote(name, safe='')}/logs?" + urlencode(
            {"tail": int(tail), "follow": _query_value(bool(follow))})
        headers = {"Accept": "text/plain", "User-Agent": f"orca-client/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Connect before the first `next()` returns anything: errors surface on the first iteration.
        conn, resp = self._open_stream(target, headers, None if follow else max(self.timeout, 30.0))
        try:
            while True:
                try:
                    raw = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise ApiError(0, "STREAM_BROKEN", f"log stream ended early: {exc}") from exc
                if not raw:
                    return
                yield raw.decode("utf-8", "replace").rstrip("\r\n")
        finally:
            conn.close()

    def _open_stream(self, target: str, headers: dict[str, str], read_timeout: float | None,
                     ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """A fresh (not pooled) connection with a 2xx response to GET `target`, from the first master
        that answers; a refused connection or `503 CLUSTER_NOT_READY` moves on, like `request`."""
        last_error: ApiError | None = None
        last_cause: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._pause(attempt))
            for base in self._candidates(False):
                conn = open_connection(base, timeout=self.timeout, connect_timeout=self.connect_timeout,
                                       ca_file=self.ca_file)
                try:
                    conn.request("GET", target, headers=headers)
                    if conn.sock is not None:
                        conn.sock.settimeout(read_timeout)
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._unreachable(base, exc)
                    last_cause = exc
                    continue
                if 200 <= resp.status < 300:
                    self._last_good = base
                    return conn, resp
                try:
                    error = error_from_response(resp.status, resp.read())
                except (OSError, http.client.HTTPException):
                    error = ApiError(resp.status, f"HTTP_{resp.status}", resp.reason or "error")
                finally:
                    conn.close()
                if resp.status == 503 and error.code == "CLUSTER_NOT_READY":
                    self._forget(base)
                    last_error = error
                    continue
                raise error
        if last_error is not None:
            raise last_error
        raise ApiError(0, "UNREACHABLE", f"no master answered at {', '.join(self.apis)}: {last_cause}")

    # ------------------------------------------------------------------ live streams (WebSocket)

    def stream_events(self, service: str | None = None, type: str | None = None,
                      since: int | str | None = None) -> Iterator[dict[str, Any]]:
        """New events as they are committed (one dict each, with its `seq`), from `/events/stream`.

        `since` (an event seq) replays the events after it first; without it the stream starts at the
        present. Runs until the caller stops iterating or the server closes the stream. A connection
        dropped without a close (a master killed, a network blip) is reopened once, on any master,
        resuming after the last event received (`since=<its seq>`), so nothing is missed or repeated;
        a drop right after such a reconnect, before any event came, raises `STREAM_BROKEN`. (Dropped
        before the first event with no `since` given, events committed meanwhile may be missed.)
        """
        last: int | str | None = since
        may_reconnect = True
        while True:
            target = "/api/v1/events/stream" + _query({"service": service, "type": type, "since": last})
            try:
                with contextlib.closing(self._ws_messages(target)) as messages:
                    for text in messages:
                        event = _json_message(text)
                        if isinstance(event.get("seq"), int):
                            last = event["seq"]
                        may_reconnect = True
                        yield event
                return
            except ApiError as err:
                if err.code != "STREAM_BROKEN" or not may_reconnect:
                    raise
                may_reconnect = False

    def stream_logs(self, name: str, tail: int = 100) -> Iterator[str]:
        """The service's log lines as they come (the last `tail` per replica first), each prefixed
        `[svc.index allocid] `, from `/logs/stream`. Ends when the server closes the stream; a dropped
        connection raises `STREAM_BROKEN`. See `logs` for the same over plain HTTP."""
        target = f"/api/v1/services/{quote(name, safe='')}/logs/stream" + _query({"tail": int(tail)})
        for message in self._ws_messages(target):
            yield message if isinstance(message, str) else message.decode("utf-8", "replace")

    def stream_metrics(self, name: str) -> Iterator[dict[str, Any]]:
        """The service's metrics body (as `metrics(name)`, plus `sent_at`) each time a new sample is
        taken, from `/metrics/stream`; a body with `error` when the leader could not be asked. Ends when
        the server closes the stream; a dropped connection raises `STREAM_BROKEN`."""
        target = f"/api/v1/services/{quote(name, safe='')}/metrics/stream"
        for message in self._ws_messages(target):
            yield _json_message(message)

    def _ws_messages(self, target: str) -> Iterator[str | bytes]:
        """Every message of one WebSocket stream; returns on the server's close, raises `STREAM_BROKEN`
        when the connection is lost without one. The socket is closed when the generator is."""
        ws = self._open_ws(target)
        try:
            while True:
                try:
                    message = ws.recv()
                except (OSError, http.client.HTTPException) as exc:
                    raise ApiError(0, "STREAM_BROKEN", f"stream ended early: {exc or type(exc).__name__}") from exc
                if message is None:
                    return
                yield message
        finally:
            ws.close()

    def _open_ws(self, target: str) -> _WebSocket:
        """An open WebSocket to `target` on the first master that upgrades; a refused connection or
        `503 CLUSTER_NOT_READY` moves on to the next, passes repeat as for `request`."""
        headers = {"User-Agent": f"orca-client/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        last_error: ApiError | None = None
        last_cause: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._pause(attempt))
            for base in self._candidates(False):
                try:
                    ws = _WebSocket.connect(base + target, headers, self.timeout, self.stream_idle_s,
                                            connect_timeout=self.connect_timeout, ca_file=self.ca_file)
                except _Handshake as exc:
                    error = error_from_response(exc.status, exc.data)
                    if exc.status == 503 and error.code == "CLUSTER_NOT_READY":
                        self._forget(base)
                        last_error = error
                        continue
                    raise error from None
                except (OSError, http.client.HTTPException) as exc:
                    self._unreachable(base, exc)
                    last_cause = exc
                    continue
                self._last_good = base
                return ws
        if last_error is not None:
            raise last_error
        raise ApiError(0, "UNREACHABLE", f"no master answered at {', '.join(self.apis)}: {last_cause}")

    # ------------------------------------------------------------------ waiting

    def wait_converged(self, name: str, timeout_s: float, on_progress: Callable[[dict[str, Any]], Any] | None = None,
                       *, expect_version: int | None = None, interval_s: float = 0.5,
                       fail_after_s: float | None = 15.0) -> dict[str, Any]:
        """Poll `service(name)` until `is_converged`, and return that last detail.

        `expect_version` is the version the deploy answered (its `versions[name]`): a detail that does not
        know it yet (a follower behind the leader) is re-read from the leader and never counts as
        converged. `on_progress(detail)` is called with the first detail and then whenever what it shows
        changes (counts, pending reason, rollout state, a container's status, health or reason).

        Raises `ApiError` with status 0 and code:
        - `ROLLOUT_HALTED` when the rollout of `expect_version` (default: the version first seen) or a
          later one halted (not healthy within `healthy_deadline_s`) and was not reverted;
        - `ROLLOUT_REVERTED` when it halted and was auto-reverted: the service now runs a new version
          with the old spec, so this is a failure even once that revert is done;
        - `FAILED` once every replica of the newest version has reported `failed` for `fail_after_s`
          without a break (None never gives up early);
        - `TIMEOUT` after `timeout_s`.
        The details (and body) are the last detail. Either way the cluster keeps going: giving up here only
        ends the wait.
        """
        deadline = time.monotonic() + timeout_s
        last_key: Any = object()
        failed_since: float | None = None
        consistent = False
        expect = expect_version
        while True:
            try:
                detail = self.service(name, consistent=consistent)
            except ApiError as err:
                # Just deployed through the leader, asked a follower that has not applied it yet.
                if err.code != "SERVICE_NOT_FOUND" or consistent:
                    raise
                consistent = True
                continue
            stale = expect is not None and not _has_version(detail, expect)
            if stale and not consistent:
                consistent = True
                continue
            consistent = False
            if expect is None and isinstance(detail.get("version"), int):
                expect = detail["version"]
            key = _progress_key(detail)
            if key != last_key:
                last_key = key
                if on_progress is not None:
                    on_progress(detail)
            if not stale:
                failure = rollout_failure(name, detail, expect)
                if failure is not None:
                    raise failure
                if is_converged(detail):
                    return detail
            now = time.monotonic()
            canary = detail.get("canary") or {}
            newest = canary.get("version") if canary.get("version") is not None else detail.get("version")
            current = [c for c in detail.get("containers") or [] if c.get("version") == newest]
            if current and all(c.get("status") == "failed" for c in current):
                failed_since = now if failed_since is None else failed_since
                if fail_after_s is not None and now - failed_since >= fail_after_s:
                    reasons = sorted({str(c.get("reason") or "no reason given") for c in current})
                    raise ApiError(0, "FAILED", f"every replica of {name} v{newest} failed: "
                                   f"{'; '.join(reasons)}", detail, detail)
            else:
                failed_since = None
            if now >= deadline:
                replicas = detail.get("replicas") or {}
                raise ApiError(0, "TIMEOUT", f"{name} did not converge within {timeout_s:g} s "
                               f"({replicas.get('running', 0)}/{replicas.get('desired', 0)} running, "
                               f"{replicas.get('healthy', 0)}/{replicas.get('desired', 0)} healthy)",
                               detail, detail)
            time.sleep(max(0.0, min(interval_s, deadline - now)))

    def wait_drained(self, node_id: str, timeout_s: float, on_progress: Callable[[dict[str, Any]], Any] | None = None,
                     *, interval_s: float = 0.5) -> dict[str, Any]:
        """Poll `node(node_id)` until its drain is complete (no orca container left there), and return
        that node.

        `on_progress(node)` is called with the first node and then whenever its status, eligibility or
        drain counts change. Raises `ApiError` (status 0, details and body the last node) with code
        `TIMEOUT` after `timeout_s`, or `NOT_DRAINING` when the leader says the node has no drain (it was
        undrained meanwhile, or never drained); `NODE_NOT_FOUND` when it was removed.
        """
        deadline = time.monotonic() + timeout_s
        last_key: Any = object()
        consistent = False
        while True:
            node = self.node(node_id, consistent=consistent)
            drain = node.get("drain")
            if not isinstance(drain, dict):
                if not consistent:  # a follower that has not applied the drain yet: ask the leader
                    consistent = True
                    continue
                raise ApiError(0, "NOT_DRAINING", f"node {node_id} is not draining "
                               f"(eligibility {node.get('eligibility')})", node, node)
            consistent = False
            key = _drain_key(node)
            if key != last_key:
                last_key = key
                if on_progress is not None:
                    on_progress(node)
            if drain.get("complete"):
                return node
            now = time.monotonic()
            if now >= deadline:
                raise ApiError(0, "TIMEOUT", f"node {node_id} did not finish draining within {timeout_s:g} s "
                               f"({drain.get('remaining', '?')} remaining, {drain.get('migrated', 0)} migrated, "
                               f"{drain.get('failed', 0)} failed)", node, node)
            time.sleep(max(0.0, min(interval_s, deadline - now)))
