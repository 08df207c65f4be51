"""The live streams: logs over chunked HTTP, and events, logs and metrics over WebSocket.

A stream is opened on the first master that accepts it (any master serves them, so no redirect is
followed); a refused connection or `503 CLUSTER_NOT_READY` moves on to the next, with the same passes
and backoff as `request`. `stream_events` resumes after the last event received when a connection drops.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from orca.sdk.connections import CONNECT_TIMEOUT_S, open_connection, ssl_context
from orca.sdk.errors import ApiError, error_from_response, json_message
from orca.sdk.transport import Transport, query, query_value

__all__ = ["StreamsMixin"]


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


class StreamsMixin(Transport):
    """Log, event and metrics streams of a client."""

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> Iterator[str]:
        """The service's log lines (without their newline), each prefixed `[svc.index allocid] `.

        A generator that yields every line as it arrives, so with `follow=True` it runs until the
        caller stops iterating (close the generator, or break out of the loop) or the stream ends. Any
        master serves logs, so no redirect is followed: the first master that accepts the connection
        is used. The socket has no read timeout while following (a quiet service sends nothing for
        minutes); without `follow` a pause of max(timeout, 30 s) ends the stream with an error.
        """
        target = f"/api/v1/services/{quote(name, safe='')}/logs?" + urlencode(
            {"tail": int(tail), "follow": query_value(bool(follow))})
        headers = self.headers("text/plain")
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
            target = "/api/v1/events/stream" + query({"service": service, "type": type, "since": last})
            try:
                with contextlib.closing(self._ws_messages(target)) as messages:
                    for text in messages:
                        event = json_message(text)
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
        target = f"/api/v1/services/{quote(name, safe='')}/logs/stream" + query({"tail": int(tail)})
        for message in self._ws_messages(target):
            yield message if isinstance(message, str) else message.decode("utf-8", "replace")

    def stream_metrics(self, name: str) -> Iterator[dict[str, Any]]:
        """The service's metrics body (as `metrics(name)`, plus `sent_at`) each time a new sample is
        taken, from `/metrics/stream`; a body with `error` when the leader could not be asked. Ends when
        the server closes the stream; a dropped connection raises `STREAM_BROKEN`."""
        target = f"/api/v1/services/{quote(name, safe='')}/metrics/stream"
        for message in self._ws_messages(target):
            yield json_message(message)

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
        headers = self.headers()
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

