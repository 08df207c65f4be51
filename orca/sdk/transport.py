"""The request engine under every SDK call: one logical request tried against the masters in turn.

- **Several masters.** A connection failure or a `503 CLUSTER_NOT_READY` (no leader yet, or a write
  that could not commit) moves on to the next URL; after a full pass it sleeps a short, growing backoff.
  `retries` bounds the number of extra passes, so a call never hangs.
- **Leader redirects.** A follower answers writes with `307` and `Location: <leader><path>`; the request
  is re-sent with the same method and body there (up to `MAX_REDIRECTS` hops) and that leader is
  remembered, so the next write goes straight to it.
- **Exactly-once writes.** Every POST/PUT/DELETE carries an `Idempotency-Key`, made once per logical
  call and reused on every retry of that call.
- **Retry-After.** A `429` is waited out as its `Retry-After` says, a bounded number of times and seconds
  per call, then raised; a 503's `Retry-After` stretches the pause between passes once the first ~2 s
  (the failover window) are over.
- **Blocking queries.** `blocking_get` and `watch` send `?index=&wait=` and read `X-Orca-Applied-Index`,
  with a read timeout that covers the wait (see orca.master.blocking for the server's side).

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
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self
from urllib.parse import urlencode, urljoin, urlsplit

from orca import __version__
from orca.sdk.connections import CONNECT_TIMEOUT_S, DOWN_S, Endpoints, open_connection, ssl_context
from orca.sdk.errors import ApiError, error_from_response

__all__ = ["API_PREFIX", "BLOCK_WAIT_S", "CONNECT_TIMEOUT_S", "DOWN_S", "Endpoints", "MAX_BLOCK_WAIT_S",
           "MAX_REDIRECTS", "Transport", "applied_index", "open_connection", "query", "query_value", "ssl_context"]

API_PREFIX = "/api/v1"
MAX_REDIRECTS = 5
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REDIRECTS = frozenset({307, 308})  # the only ones that keep method and body; masters send 307
_MAX_BACKOFF_S = 2.0
# A leader failover takes ~0.3-0.7 s: poll briskly through it (with jitter, so clients do not march in step)
# before backing off; a coarse doubling backoff would round every failover up to its next step.
_FAST_RETRY_S = 0.03
_FAST_RETRY_WINDOW = 40
BLOCK_WAIT_S = 30.0  # a blocking query's wait when the caller names none (the server's default too)
MAX_BLOCK_WAIT_S = 300.0  # the server refuses longer waits
POLL_S = 0.5  # how often `watch` asks a master that does not answer blocking queries
_NOTHING = object()
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


def applied_index(headers: Mapping[str, str]) -> int | None:
    """The `X-Orca-Applied-Index` of an answer, None when absent or not a plausible index."""
    raw = (headers.get("X-Orca-Applied-Index") or "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 16:
        return int(raw)
    return None


def query(params: Mapping[str, Any]) -> str:
    """`?k=v&...` of the params that are not None ("" when none are)."""
    values = {k: query_value(v) for k, v in params.items() if v is not None}
    return "?" + urlencode(values) if values else ""


class Transport:
    """The connection and retry state of a client, and `request`; see the module docstring."""

    def __init__(self, api: str | list[str], token: str | None = None, *, timeout: float = 10.0,
                 retries: int = 45, backoff_s: float = 0.1, connect_timeout: float = CONNECT_TIMEOUT_S,
                 ca_file: str | None = None, on_skip: Callable[[str, BaseException], None] | None = None,
                 rate_limit_retries: int = 3, rate_limit_wait_s: float = 30.0):
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
        # 429s waited out per call (by their Retry-After), and the most seconds spent on them in one call.
        self.rate_limit_retries = max(0, int(rate_limit_retries))
        self.rate_limit_wait_s = float(rate_limit_wait_s)
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
                raw: bool | str = False, data: bytes | None = None, read_timeout: float | None = None) -> Any:
        """Send one logical request and return the decoded JSON (or the text, with `raw=True`; the
        bytes, with `raw="bytes"`).

        `path` is absolute (`/api/v1/...`) or relative to `/api/v1`. `params` with value None are
        dropped. `consistent=True` asks for a read from the leader's state. `data` is a binary body
        (`application/octet-stream`), instead of `json`. `read_timeout` replaces `timeout` for this
        request's reads (a blocking query waits on purpose).
        """
        return self.exchange(method, path, json=json, params=params, idempotency_key=idempotency_key,
                             consistent=consistent, raw=raw, data=data, read_timeout=read_timeout)[0]

    def exchange(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                 idempotency_key: str | None = None, consistent: bool = False, raw: bool | str = False,
                 data: bytes | None = None, read_timeout: float | None = None) -> tuple[Any, Mapping[str, str]]:
        """`request`, returning the response headers too (`X-Orca-Applied-Index`, for a blocking query).

        A `429` is waited out as its `Retry-After` says (at most `rate_limit_retries` times and
        `rate_limit_wait_s` seconds in all for this call; then the 429 is raised); the write is re-sent
        with the same Idempotency-Key, so it still applies once.
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
        timeout = self.timeout if read_timeout is None else read_timeout

        waited = 0.0
        for limited in range(self.rate_limit_retries + 1):
            try:
                return self._passes(method, target, body, headers, write, raw, timeout)
            except ApiError as err:
                delay = err.retry_after if err.status == 429 else None
                if (delay is None or limited == self.rate_limit_retries
                        or waited + delay > self.rate_limit_wait_s):
                    raise
                time.sleep(delay)
                waited += delay
        raise AssertionError("unreachable")  # pragma: no cover

    def blocking_get(self, path: str, params: Mapping[str, Any] | None = None, *, index: int | None = None,
                     wait_s: float | None = None, consistent: bool = False) -> tuple[Any, int | None]:
        """GET a route that takes blocking queries -> (body, the `X-Orca-Applied-Index` of the answer).

        With `index` (the index of an answer you have), the master answers once its state moved past it
        and the answer changed, or after `wait_s` (default 30 s, at most 300 s); without, at once. The
        index is None when the master did not say (an older master: then it did not wait either).
        """
        query = dict(params or {})
        read_timeout = None
        if index is not None:
            wait = min(max(BLOCK_WAIT_S if wait_s is None else float(wait_s), 0.0), MAX_BLOCK_WAIT_S)
            query["index"] = int(index)
            query["wait"] = f"{int(wait * 1000)}ms"
            read_timeout = self.timeout + wait
        body, headers = self.exchange("GET", path, params=query, consistent=consistent, read_timeout=read_timeout)
        return body, applied_index(headers)

    def watch(self, path: str, params: Mapping[str, Any] | None = None, *,
              wait_s: float = BLOCK_WAIT_S) -> Iterator[Any]:
        """The body of GET `path` now, then each time it changes: blocking queries with the index of the
        last answer, so a quiet cluster costs one request per `wait_s` and a change arrives at once.
        Answers at the wait with nothing new are not yielded. Runs until the caller stops iterating.

        Against a master that does not block (it sent no index, or answered early with nothing new) it
        falls back to asking every `POLL_S`.
        """
        wait_s = min(max(float(wait_s), 1.0), MAX_BLOCK_WAIT_S)
        index: int | None = None
        last: Any = _NOTHING
        while True:
            asked = time.monotonic()
            body, got = self.blocking_get(path, params, index=index, wait_s=wait_s)
            if body != last:
                last = body
                yield body
            if got is None or (index is not None and got <= index and time.monotonic() - asked < wait_s / 2):
                time.sleep(POLL_S)
            index = got

    def _passes(self, method: str, target: str, body: bytes | None, headers: dict[str, str], write: bool,
                raw: bool | str, timeout: float) -> tuple[Any, Mapping[str, str]]:
        """Up to `retries` + 1 passes over the masters; see the module docstring."""
        last_error: ApiError | None = None
        last_cause: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._pause(attempt, last_error.retry_after if last_error is not None else None))
            for base in self._candidates(write):
                try:
                    return self._send(method, base + target, body, headers, write, raw, timeout)
                except _Retryable as exc:
                    if exc.error is not None:
                        last_error = exc.error
                    else:
                        last_cause = exc.cause
        if last_error is not None:
            raise last_error
        raise ApiError(0, "UNREACHABLE", f"no master answered at {', '.join(self.apis)}: {last_cause}")

    def _pause(self, attempt: int, retry_after: float | None = None) -> float:
        """The sleep before pass `attempt`: brisk through the first ~2 s (a leader failover ends within
        it, so the `Retry-After: 1` of a 503 is not waited there), then the doubling backoff, or the
        server's `Retry-After` when that is longer."""
        if attempt <= _FAST_RETRY_WINDOW:
            return _FAST_RETRY_S * (1.0 + random.random())
        backoff = min(self.backoff_s * 2 ** (attempt - _FAST_RETRY_WINDOW - 1), _MAX_BACKOFF_S)
        return max(backoff, retry_after or 0.0)

    def _candidates(self, write: bool) -> list[str]:
        """Masters in the order to try: writes go to the known leader first, reads stick to the last
        master that answered (keep-alive), then every configured URL in order."""
        return self.endpoints.order([self.leader, self._last_good] if write else [self._last_good, self.leader])

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str], write: bool,
              raw: bool | str, timeout: float) -> tuple[Any, Mapping[str, str]]:
        """One try against one master, following its redirects; raises _Retryable or ApiError."""
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                status, resp_headers, data = self._roundtrip(method, url, body, headers, timeout)
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
                    return data, resp_headers
                text = data.decode("utf-8", "replace")
                if raw:
                    return text, resp_headers
                try:
                    return (_json.loads(text) if text.strip() else {}), resp_headers
                except ValueError as exc:
                    raise ApiError(status, "INVALID_RESPONSE", f"response is not JSON: {text[:200]!r}",
                                   None, text) from exc
            error = error_from_response(status, data, resp_headers)
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

    def _roundtrip(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                   timeout: float | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
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
                if timeout is not None and timeout != self.timeout and conn.sock is not None:
                    conn.sock.settimeout(timeout)  # this request only: put back below if the connection stays
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
            elif conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            return resp.status, resp.headers, data
        raise http.client.RemoteDisconnected("connection closed twice")  # pragma: no cover

