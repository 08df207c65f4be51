"""The request engine under every SDK call: one logical request tried against the masters in turn.

- **Several masters.** A connection failure or a `503 CLUSTER_NOT_READY` (no leader yet, or a write
  that could not commit) moves on to the next URL; after a full pass it sleeps a short, growing backoff.
  `retries` bounds the number of extra passes, so a call never hangs.
- **Leader redirects.** A follower answers writes with `307` and `Location: <leader><path>`; the request
  is re-sent with the same method and body there (up to `MAX_REDIRECTS` hops) and that leader is
  remembered, so the next write goes straight to it.
- **Exactly-once writes.** Every POST/PUT/DELETE carries an `Idempotency-Key`, made once per logical
  call and reused on every retry of that call.

Connections (keep-alive pools per thread, the short connect timeout, endpoint memory, TLS with the
cluster CA) are in `orca.sdk.connections`.
"""

from __future__ import annotations

import http.client
import json as _json
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Self
from urllib.parse import urlencode, urljoin, urlsplit

from orca import __version__
from orca.sdk.connections import CONNECT_TIMEOUT_S, DOWN_S, Endpoints, open_connection, ssl_context
from orca.sdk.errors import ApiError, error_from_response

__all__ = ["API_PREFIX", "CONNECT_TIMEOUT_S", "DOWN_S", "Endpoints", "MAX_REDIRECTS", "Transport",
           "open_connection", "query", "query_value", "ssl_context"]

API_PREFIX = "/api/v1"
MAX_REDIRECTS = 5
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REDIRECTS = frozenset({307, 308})  # the only ones that keep method and body; masters send 307
_MAX_BACKOFF_S = 2.0
# A leader failover takes ~0.3-0.7 s: poll briskly through it (with jitter, so clients do not march in step)
# before backing off; a coarse doubling backoff would round every failover up to its next step.
_FAST_RETRY_S = 0.03
_FAST_RETRY_WINDOW = 40
STREAM_IDLE_S = 60.0  # masters ping every 20 s: a minute of silence on a stream is a dead connection
# A keep-alive connection the server closed while idle fails with one of these before any response;
# trying once more on a fresh connection is not a "retry" of the request (timeouts are not in here,
# because then the server may still be working on it).
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError)


class _Retryable(Exception):
    """Internal: this URL failed in a way another master (or a later try) may not."""

    def __init__(self, error: ApiError | None, cause: BaseException | None = None):
        super().__init__(str(error or cause))
        self.error = error  # None for a connection failure
        self.cause = cause


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def query(params: Mapping[str, Any]) -> str:
    """`?k=v&...` of the params that are not None ("" when none are)."""
    values = {k: query_value(v) for k, v in params.items() if v is not None}
    return "?" + urlencode(values) if values else ""


class Transport:
    """The connection and retry state of a client, and `request`; see the module docstring."""

    def __init__(self, api: str | list[str], token: str | None = None, *, timeout: float = 10.0,
                 retries: int = 45, backoff_s: float = 0.1, connect_timeout: float = CONNECT_TIMEOUT_S,
                 ca_file: str | None = None, on_skip: Callable[[str, BaseException], None] | None = None):
        urls = api.split(",") if isinstance(api, str) else list(api)
        self.endpoints = Endpoints(urls, on_skip=on_skip)
        self.apis = self.endpoints.urls  # the same list: `discover()` extends it
        self.connect_timeout = connect_timeout
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
        self.stream_idle_s: float | None = STREAM_IDLE_S
        # Hints, not truth: plain attribute writes are atomic, and a wrong hint only costs one hop.
        self.leader: str | None = None
        self._last_good: str | None = None
        self._local = threading.local()
        self._pools: list[dict[tuple[str, str], http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> Self:
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
        headers = self.headers()
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
        query = {k: query_value(v) for k, v in (params or {}).items() if v is not None}
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
                self._unreachable(origin(url), exc)
                raise _Retryable(None, exc) from exc
            location = resp_headers.get("Location")
            if status in _REDIRECTS and location:
                url = urljoin(url, location)
                self.leader = origin(url)
                continue
            if 200 <= status < 300:
                self._last_good = origin(url)
                self.endpoints.mark_up(self._last_good)
                if write:
                    self.leader = origin(url)
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
                self._forget(origin(url))
                raise _Retryable(error)
            if status in _REDIRECTS:  # a redirect without a Location: the follower knows no leader
                raise _Retryable(error)
            raise error
        # Leadership moved while we chased it; a later pass will find where it settled.
        raise _Retryable(ApiError(307, "TOO_MANY_REDIRECTS",
                                  f"more than {MAX_REDIRECTS} redirects, last to {url}"))

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        """The headers of every request: who is asking, and the bearer token when there is one."""
        headers = {"Accept": accept, "User-Agent": f"orca-client/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

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

