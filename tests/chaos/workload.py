"""Load that records itself into a `History`, and the read-back that builds the final state to check.

Shared by the chaos tests and `scripts/failover_drill.py` (the long run of the same workload).

- `Writers`: one thread per client, each with its own token (the rate limiter keys on the token) and its
  own `orca.client.Client`. A logical write deploys one new service `<prefix><client>-<i>` (replicas 0:
  nothing is ever started on a real cluster) in the project `<prefix><client>`. It is retried with the
  same Idempotency-Key until it is acknowledged, refused (4xx) or `write_deadline_s` passes (unknown).
  The writer's own retry loop, with a short fixed pause, replaces the SDK's growing backoff so that the
  failover figure measures the cluster, not the client's sleep. Each attempt carries its number in the
  spec (env `ORCA_CHAOS_ATTEMPT`): if the server ever applied a retry instead of replaying the first
  result, the digest changes and the service's version goes to 2, which the checker sees.
  Every `read_every` writes a client also reads its project with `?consistent=true` and records two
  reads: the set of names (linearizable: must hold every write it had acknowledged) and the
  `X-Orca-Applied-Index` header (must never go backwards).
- `EventCounter`: polls `GET /api/v1/events?since=<seq>` and counts `service_deployed` +
  `service_updated` per service, so that a same-attempt double apply (version stays 1) is caught too.
  The event log is a ring of 1,000: `gaps` counts events evicted before they were seen.
- `read_back`: waits until every master has applied the same index and serves the same services, and
  returns each master's view.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from history import History

from orca.client import ApiError, Client

__all__ = ["Writers", "EventCounter", "read_back", "http_json", "ReadBack", "TEST_IMAGE", "first_ack_after",
           "health", "wait_caught_up"]

TEST_IMAGE = "orca-test/busybox"


def http_json(method: str, url: str, *, token: str | None = None, body: Any = None,
              headers: Mapping[str, str] | None = None,
              timeout: float = 5.0, cafile: str | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP exchange, redirects NOT followed (a 307 is an answer here, not an acknowledgement).
    An https URL is verified against `cafile`; without one (liveness only) a token is refused."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        if cafile is None and token:
            raise ValueError("a token goes only to a master verified against the cluster CA (cafile)")
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    hdrs = {"Accept": "application/json", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=data,
                     headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        resp_headers = dict(resp.headers)
    finally:
        conn.close()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors="replace")
    return resp.status, resp_headers, parsed


def _retryable(err: ApiError) -> bool:
    """Worth another attempt with the same key: no master answered, no leader, a 5xx, a redirect loop
    while leadership moves, or the rate limit."""
    return err.status == 0 or err.status >= 500 or err.status in (307, 429)


@dataclass
class Writers:
    """Writer threads recording into `history` (contract in the module docstring).

    `on_error(process, code)` is called for every failed attempt (from the writer's thread). `tokens`
    gives one token per client; their number is the number of clients.
    """

    urls: list[str]
    tokens: list[str]
    history: History
    prefix: str
    rate: float = 20.0                  # logical writes per second per client (a ceiling)
    read_every: int = 5
    write_deadline_s: float = 20.0
    timeout_s: float = 5.0
    retry_pause_s: float = 0.02
    max_writes: int | None = None       # per client
    on_error: Callable[[str, str], None] | None = None
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: list[Client] = field(default_factory=list)

    def add_url(self, url: str) -> None:
        """A master added at runtime: the writers' clients may try it from now on (a removed master's
        URL stays listed; the clients skip it when it refuses the connection)."""
        with self._lock:
            if url not in self.urls:
                self.urls.append(url)
            for client in self._clients:
                if url not in client.apis:
                    client.apis.append(url)

    def start(self) -> None:
        for c, token in enumerate(self.tokens):
            t = threading.Thread(target=self._run, args=(c, token), name=f"writer-{c}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, join_s: float = 30.0) -> None:
        """Stop invoking new ops; an op in flight finishes (ok, fail or unknown) first."""
        self._stop.set()
        deadline = time.monotonic() + join_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def _error(self, process: str, code: str) -> None:
        with self._lock:
            self.errors[code] = self.errors.get(code, 0) + 1
        if self.on_error is not None:
            self.on_error(process, code)

    def _run(self, c: int, token: str) -> None:
        project = f"{self.prefix}{c}"
        process = project  # unique per client across several Writers of one history
        period = 1.0 / self.rate if self.rate > 0 else 0.0
        with Client(self.urls, token, timeout=self.timeout_s, retries=0) as client:
            with self._lock:
                self._clients.append(client)
            i, next_at = 0, time.monotonic()
            while not self._stop.is_set() and (self.max_writes is None or i < self.max_writes):
                self._write(client, process, project, f"{project}-{i}")
                i += 1
                if self.read_every and i % self.read_every == 0:
                    self._read(client, token, process, project)
                next_at = max(next_at + period, time.monotonic() - period)
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _write(self, client: Client, process: str, project: str, name: str) -> None:
        op = self.history.invoke(process, "write", name, scope=project)
        key = f"chaos-{name}"
        deadline = op.invoke + self.write_deadline_s
        attempt, maybe_applied, last = 0, False, "no attempt"
        while True:
            attempt += 1
            spec = {"name": name, "project": project, "image": TEST_IMAGE, "replicas": 0,
                    "env": {"ORCA_CHAOS_ATTEMPT": str(attempt)}}
            try:
                result = client.deploy([spec], idempotency_key=key)
            except ApiError as err:
                last = f"{err.status} {err.code}"
                self._error(process, err.code)
                if not _retryable(err):
                    # A refusal is definite for this attempt only: an earlier one may have gone through.
                    if maybe_applied:
                        self.history.unknown(op, last, attempts=attempt)
                    else:
                        self.history.fail(op, last, attempts=attempt)
                    return
                maybe_applied = maybe_applied or err.status != 429
                if time.monotonic() >= deadline:
                    self.history.unknown(op, f"gave up after {attempt} attempts: {last}", attempts=attempt)
                    return
                time.sleep(1.0 if err.status == 429 else self.retry_pause_s)
                continue
            self.history.ok(op, result.get("versions", {}).get(name), served_by=client.leader, attempts=attempt,
                            replayed=bool(result.get("replayed")))
            return

    def _read(self, client: Client, token: str, process: str, project: str) -> None:
        names_op = self.history.invoke(process, "read", project, linearizable=True)
        index_op = self.history.invoke(process, "read", "applied_index", at=names_op.invoke)
        target = f"/api/v1/status?project={project}&consistent=true"
        for base in [client.leader, *self.urls]:
            if not base:
                continue
            url = base + target
            try:
                for _hop in range(3):
                    status, headers, body = http_json("GET", url, token=token, timeout=self.timeout_s)
                    if status == 307 and headers.get("Location"):
                        url = urljoin(url, headers["Location"])
                        continue
                    break
            except (OSError, http.client.HTTPException):
                continue
            if status == 200:
                names = frozenset(s["name"] for s in body["services"])
                self.history.ok(names_op, names)
                self.history.ok(index_op, int(headers.get("X-Orca-Applied-Index", -1)), at=names_op.complete)
                return
        self.history.fail(names_op, "no master served a consistent read")
        self.history.fail(index_op, "no master served a consistent read", at=names_op.complete)


class EventCounter(threading.Thread):
    """Counts deploy events per service of `prefix` (see the module docstring). `counts` and `gaps` are
    read after `stop()`."""

    TYPES = ("service_deployed", "service_updated")

    def __init__(self, urls: list[str], token: str, prefix: str | tuple[str, ...], period_s: float = 0.3) -> None:
        super().__init__(name="event-counter", daemon=True)
        self.client = Client(urls, token, timeout=3.0, retries=0)
        self.prefix = prefix
        self.period_s = period_s
        self.counts: dict[str, int] = {}
        self.gaps = 0
        self.polls = 0
        self.cursor: int | None = None
        self._halt = threading.Event()

    def add_url(self, url: str) -> None:
        """See `Writers.add_url`."""
        if url not in self.client.apis:
            self.client.apis.append(url)

    def start(self) -> None:
        self.poll()  # the cursor: the newest event now, so that every later deploy is counted
        super().start()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self.poll()
                self._halt.wait(self.period_s)
        finally:
            self.client.close()

    def stop(self, final_poll: bool = True) -> None:
        self._halt.set()
        self.join(10)
        if final_poll:
            # Through the leader (?consistent=true): a follower's local state may still lack the last
            # acknowledged writes (it applies them when the next append tells it the commit index).
            with Client(self.client.apis, self.client.token, timeout=5.0, retries=3) as client:
                self.poll(client, consistent=True)

    def poll(self, client: Client | None = None, consistent: bool = False) -> None:
        client = client or self.client
        try:
            if self.cursor is None:  # start from the newest event: older ones are not ours
                last = client.events(limit=1)
                self.cursor = int(last[-1]["seq"]) if last else 0
                return
            if consistent:
                events = client.request("GET", "/api/v1/events", params={"since": self.cursor, "limit": 1000},
                                        consistent=True)["events"]
            else:
                events = client.events(since=self.cursor, limit=1000)
        except ApiError:
            return  # a master down or electing: the next poll catches up (or counts the gap)
        self.polls += 1
        if not events:
            return
        first = int(events[0]["seq"])
        if first > self.cursor + 1:
            self.gaps += first - self.cursor - 1
        for e in events:
            service = e.get("service") or ""
            if e["type"] in self.TYPES and service.startswith(self.prefix):
                self.counts[service] = self.counts.get(service, 0) + 1
        self.cursor = max(self.cursor, int(events[-1]["seq"]))


@dataclass
class ReadBack:
    """Every master's view after convergence: `{master: {service: version}}` of the services of
    `prefix`, each master's applied index, the consistent read of the leader, and whether they agreed."""

    views: dict[str, dict[str, int]]
    applied: dict[str, int]
    consistent: list[dict[str, Any]]
    converged: bool
    waited_s: float


def read_back(masters: Mapping[str, str], token: str, prefix: str, timeout_s: float = 30.0) -> ReadBack:
    """Local reads from every master until they agree (same applied index, same services), then one
    consistent read through the leader."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    views: dict[str, dict[str, int]] = {}
    applied: dict[str, int] = {}
    converged = False
    while True:
        views, applied = {}, {}
        for node, url in masters.items():
            try:
                status, headers, body = http_json("GET", url + "/api/v1/status", token=token, timeout=10.0)
            except (OSError, http.client.HTTPException):
                continue
            if status == 200:
                applied[node] = int(headers.get("X-Orca-Applied-Index", -1))
                views[node] = {s["name"]: int(s["version"]) for s in body["services"]
                               if s["name"].startswith(prefix)}
        if len(views) == len(masters) and len(set(applied.values())) == 1 \
                and all(v == views[next(iter(views))] for v in views.values()):
            converged = True
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.3)
    waited = time.monotonic() - t0
    with Client(list(masters.values()), token, timeout=10.0, retries=8) as client:
        consistent = [s for s in client.status(consistent=True) if s["name"].startswith(prefix)]
    return ReadBack(views, applied, consistent, converged, waited)


def first_ack_after(history: History, t: float, not_from: str | None = None) -> float | None:
    """Completion time of the first write acknowledged after `t` by a master other than `not_from`
    (a reply the old leader sent just before its death may be read after it: it does not count)."""
    times = [o.complete for o in history.writes("ok")
             if o.complete is not None and o.complete > t and o.meta.get("served_by") != not_from]
    return min(times) if times else None


def health(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    try:
        status, _, body = http_json("GET", url + "/api/v1/health", timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None
    return body if status == 200 and isinstance(body, dict) else None


def wait_caught_up(url: str, others: list[str], timeout_s: float = 20.0) -> float:
    """Wait until the master at `url` answers, knows the leader, and has applied what the leader had
    committed when we first asked; returns the seconds waited (TimeoutError past `timeout_s`)."""
    t0 = time.monotonic()
    target: int | None = None
    while time.monotonic() - t0 < timeout_s:
        mine = health(url)
        if target is None:
            for h in [*map(health, others), mine]:
                if h is not None and h.get("is_leader"):
                    target = int(h["commit_index"])
        if mine is not None and mine.get("cluster_ready") and target is not None \
                and int(mine.get("applied_index", -1)) >= target:
            return time.monotonic() - t0
        time.sleep(0.05)
    views = {u: health(u) for u in [url, *others]}
    raise TimeoutError(f"{url} did not catch up within {timeout_s} s (target index {target}); health: {views}")
