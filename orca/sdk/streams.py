"""The live streams: logs over chunked HTTP, and events, logs and metrics over WebSocket.

A stream is opened on the first master that accepts it (any master serves them, so no redirect is
followed); a refused connection or `503 CLUSTER_NOT_READY` moves on to the next, with the same passes
and backoff as `request`. `stream_events` resumes after the last event received when a connection drops.

The WebSocket protocol is the `websockets` package's blocking client (no event loop, so sync callers and
threads use the streams as they use every other call); this module only chooses its settings and maps
its outcomes onto the SDK's errors.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from orca.sdk.connections import open_connection, ssl_context
from orca.sdk.errors import ApiError, error_from_response, json_message
from orca.sdk.transport import Transport, query, query_value

__all__ = ["StreamsMixin"]


_WS_MAX_MESSAGE = 16 << 20  # a metrics body or a log line is kilobytes; anything this big is not ours
_WS_CLOSE_S = 1.0  # how long closing waits for the server's close frame before dropping the socket


class _Refused(Exception):
    """Internal: the server answered the upgrade request with a plain HTTP response (an error envelope)."""

    def __init__(self, status: int, data: bytes, headers: Mapping[str, str]):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.data = data
        self.headers = headers


def _connect_ws(url: str, headers: Mapping[str, str], *, timeout: float, connect_timeout: float,
                ca_file: str | None) -> ClientConnection:
    """An open WebSocket to `url` (`http[s]://...`), by the `websockets` package's blocking client.

    The TCP connect gets the short `connect_timeout` (a master whose host is gone is skipped quickly, as
    for requests); the TLS and upgrade handshakes then get `timeout`. https verifies the master against
    `ca_file` (the cluster CA) or the system store. No compression is offered and no proxy is used:
    the masters are reached directly, as by every other call. The client sends no pings of its own (the
    masters ping every 20 s and `websockets` answers them); silence is caught by `recv`'s timeout.
    Raises `_Refused` for a non-101 answer, OSError / `InvalidHandshake` / TimeoutError otherwise.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock = socket.create_connection((host, port), timeout=min(timeout, connect_timeout))
    secure = parts.scheme == "https"
    try:
        return ws_connect(f"{'wss' if secure else 'ws'}://{parts.netloc}{target}", sock=sock,
                          ssl=ssl_context(ca_file) if secure else None, server_hostname=host if secure else None,
                          additional_headers={k: v for k, v in headers.items() if k != "User-Agent"},
                          user_agent_header=headers.get("User-Agent"),
                          compression=None, proxy=None, open_timeout=timeout, ping_interval=None,
                          close_timeout=_WS_CLOSE_S, max_size=_WS_MAX_MESSAGE,
                          legacy=True)  # connect now, return the connection (it outlives this call)
    except InvalidStatus as exc:
        sock.close()
        response = exc.response
        raise _Refused(response.status_code, bytes(response.body or b""), response.headers) from None
    except BaseException:
        sock.close()
        raise


def _receive(ws: ClientConnection, idle_s: float | None) -> str | bytes | None:
    """The next message (text as str), or None once the server closed the stream with a close frame.

    A connection lost without a close frame (reset, EOF, a message over the size bound, `idle_s` of
    silence) raises ApiError `STREAM_BROKEN`: the caller tells "done" from "dropped" by that.
    """
    try:
        return ws.recv(timeout=idle_s)
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd_then_sent is not False:
            return None  # the server said goodbye first, whatever its code: the stream is over
        # else dropped, or closed by this side (a message over the size bound), the server only answering
        raise ApiError(0, "STREAM_BROKEN", f"stream ended early: {exc}") from exc
    except TimeoutError as exc:
        raise ApiError(0, "STREAM_BROKEN", f"stream ended early: nothing received for {idle_s:g} s") from exc
    except OSError as exc:
        raise ApiError(0, "STREAM_BROKEN", f"stream ended early: {exc or type(exc).__name__}") from exc


class StreamsMixin(Transport):
    """Log, event and metrics streams of a client."""

    def logs(self, name: str, tail: int = 100, follow: bool = False, *, since: str | None = None,
             timestamps: bool = False) -> Iterator[str]:
        """The service's log lines (without their newline), each prefixed `[svc.index allocid] `.

        `since` keeps the lines Docker stamped from that time on (a relative age like `10m`, an ISO-8601
        time, or Unix seconds; the master filters), `timestamps` puts each line's stamp after the prefix.

        A generator that yields every line as it arrives, so with `follow=True` it runs until the
        caller stops iterating (close the generator, or break out of the loop) or the stream ends. Any
        master serves logs, so no redirect is followed: the first master that accepts the connection
        is used. The socket has no read timeout while following (a quiet service sends nothing for
        minutes); without `follow` a pause of max(timeout, 30 s) ends the stream with an error.
        """
        query = {"tail": int(tail), "follow": query_value(bool(follow))}
        if since:
            query["since"] = str(since)
        if timestamps:
            query["timestamps"] = "true"
        target = f"/api/v1/services/{quote(name, safe='')}/logs?" + urlencode(query)
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
                    error = error_from_response(resp.status, resp.read(), resp.headers)
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
                message = _receive(ws, self.stream_idle_s)
                if message is None:
                    return
                yield message
        finally:
            with contextlib.suppress(OSError):
                ws.close()  # a close frame (1000) if still open, then the socket

    def _open_ws(self, target: str) -> ClientConnection:
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
                    ws = _connect_ws(base + target, headers, timeout=self.timeout,
                                     connect_timeout=self.connect_timeout, ca_file=self.ca_file)
                except _Refused as exc:
                    error = error_from_response(exc.status, exc.data, exc.headers)
                    if exc.status == 503 and error.code == "CLUSTER_NOT_READY":
                        self._forget(base)
                        last_error = error
                        continue
                    raise error from None
                except (OSError, InvalidHandshake) as exc:  # TimeoutError is an OSError
                    self._unreachable(base, exc)
                    last_cause = exc
                    continue
                self._last_good = base
                return ws
        if last_error is not None:
            raise last_error
        raise ApiError(0, "UNREACHABLE", f"no master answered at {', '.join(self.apis)}: {last_cause}")

