"""Connections to the masters and the order in which the client tries them.

Why a separate connect timeout: `http.client` uses one timeout for connecting and for reading. A master
whose host is gone (packets dropped, not refused) would hold every call for the whole read timeout (10 s)
before the client moves on; a connect either completes within a round trip or the master is not there,
so connecting gets its own short bound (1 s by default) while reads keep the long one (a deploy or a
consistent read may legitimately take seconds).

Why endpoint memory: a master that refused a connection is tried last for `DOWN_S` seconds, so a
process that makes many calls (a deploy's wait loop, `orca top`) pays for a dead master once, not on
every call. It is still tried when every other master fails: it may be back.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

__all__ = ["CONNECT_TIMEOUT_S", "DOWN_S", "Endpoints", "open_connection", "ssl_context"]

CONNECT_TIMEOUT_S = 1.0
DOWN_S = 30.0


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS context for https masters: the system's trust store, or exactly `ca_file` when given."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


class _HTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose connect has its own (short) timeout; reads keep `timeout`."""

    def __init__(self, host: str, *, timeout: float, connect_timeout: float) -> None:
        super().__init__(host, timeout=timeout)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), min(self.connect_timeout, self.timeout))
        self.sock.settimeout(self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, timeout: float, connect_timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, timeout=timeout, context=context)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), min(self.connect_timeout, self.timeout))
        sock.settimeout(self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def open_connection(base: str, *, timeout: float, connect_timeout: float = CONNECT_TIMEOUT_S,
                    ca_file: str | None = None) -> http.client.HTTPConnection:
    """A (not yet connected) connection to the master at `base` (`http[s]://host:port`)."""
    parts = urlsplit(base)
    if parts.scheme == "https":
        return _HTTPSConnection(parts.netloc, timeout=timeout, connect_timeout=connect_timeout,
                                context=ssl_context(ca_file))
    return _HTTPConnection(parts.netloc, timeout=timeout, connect_timeout=connect_timeout)


class Endpoints:
    """The masters a client knows, and which of them refused a connection recently.

    `order(first)` gives the URLs to try: the preferred ones (`first`: the known leader, the master that
    answered last), then the rest in configured order, masters marked down within `DOWN_S` at the end.
    `on_skip(url, error)` is called whenever a master is marked down, so a CLI can say which it skipped.
    """

    def __init__(self, urls: Iterable[str], on_skip: Callable[[str, BaseException], None] | None = None,
                 down_s: float = DOWN_S) -> None:
        self.urls: list[str] = []
        self.add(urls)
        self.on_skip = on_skip
        self.down_s = down_s
        self._down: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, urls: Iterable[str]) -> list[str]:
        """Append the URLs not known yet (normalized, no trailing slash); return the ones added."""
        added = []
        for url in urls:
            url = url.strip().rstrip("/")
            if url and url not in self.urls:
                self.urls.append(url)
                added.append(url)
        return added

    def mark_down(self, url: str, error: BaseException) -> None:
        with self._lock:
            self._down[url] = time.monotonic()
        if self.on_skip is not None:
            self.on_skip(url, error)

    def mark_up(self, url: str) -> None:
        if url in self._down:
            with self._lock:
                self._down.pop(url, None)

    def is_down(self, url: str) -> bool:
        at = self._down.get(url)
        return at is not None and time.monotonic() - at < self.down_s

    def order(self, first: Iterable[str | None] = ()) -> list[str]:
        seen: list[str] = []
        for url in [*first, *self.urls]:
            if url and url not in seen:
                seen.append(url)
        return [u for u in seen if not self.is_down(u)] + [u for u in seen if self.is_down(u)]
