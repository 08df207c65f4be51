"""Traffic end to end on the real engine: 3 masters, 2 agents each running the ingress proxy on 127.0.0.1.

Busybox httpd replicas serve their own hostname (the container's short id) at `/` and the CGI
environment at `/cgi-bin/env`, so a response says which replica answered and which headers reached it.
Load comes from a few aiohttp clients on a thread of their own, paced or bounded in count, and always
bounded in time (the box is shared). One stack serves the whole module; each test uses services of
its own names and purges them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import aiohttp
import pytest
from e2e_helpers import IMAGE, ProxyStack, containers_of, converged, proxy_stack_fixture, wait_for

from orca.client import Client

pytestmark = pytest.mark.docker

proxy_stack = pytest.fixture(scope="module")(proxy_stack_fixture)

# Serves its hostname at / and `env` (the CGI variables, request headers among them) at /cgi-bin/env.
SERVE = ["sh", "-c", "mkdir -p /www/cgi-bin && hostname > /www/index.html"
         " && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > /www/cgi-bin/env"
         " && chmod +x /www/cgi-bin/env && exec httpd -f -p 8080 -h /www"]
RES = {"memory": "32Mi", "cpu": 0.2}


def web(name: str, domain: str, replicas: int = 4, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": SERVE, "port": 8080, "health": "/", "domain": domain,
            "replicas": replicas, "resources": RES, **extra}


def fetch(proxy: str, host: str, path: str = "/", headers: dict[str, str] | None = None,
          timeout: float = 5.0) -> tuple[int, str]:
    """One GET through a proxy with the given `Host`: (status, body text)."""
    url = urlsplit(proxy)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def envelope(answer: tuple[int, str]) -> tuple[int, str, dict[str, Any]]:
    """(status, error code, details) of an answer carrying orca's JSON error envelope."""
    status, body = answer
    error = json.loads(body)["error"]
    return status, error["code"], error["details"]


def hostnames(client: Client, name: str, version: int | None = None) -> set[str]:
    """The hostnames (short container ids) of a service's running replicas, of one version if given."""
    return {c["id"][:12] for c in client.service(name)["containers"]
            if c["status"] == "running" and c["id"] and (version is None or c["version"] == version)}


def routed(proxy: str, host: str, expected: set[str], tries: int = 12) -> bool:
    """True once `tries` requests through `proxy` reach exactly the replicas `expected` (routes pushed)."""
    seen = set()
    for _ in range(tries):
        status, body = fetch(proxy, host)
        if status != 200:
            return False
        seen.add(body.strip())
    return seen == expected


class Load:
    """GETs through one proxy from `concurrency` aiohttp clients on a thread of their own: paced at
    `rate` requests/s overall, or as fast as they come up to `count` requests; stops after `duration` s
    or `stop()`. `bodies` counts the 200 answers by body; `failures` lists everything else."""

    def __init__(self, proxy: str, host: str, *, concurrency: int = 4, rate: float | None = None,
                 count: int | None = None, duration: float = 10.0, path: str = "/") -> None:
        assert rate is not None or count is not None, "unbounded load"
        self.url, self.host, self.path = proxy, host, path
        self.concurrency, self.rate, self.count, self.duration = concurrency, rate, count, duration
        self.bodies: Counter[str] = Counter()
        self.failures: list[str] = []
        self.done = 0  # answered or failed; read by other threads (an int write is atomic)
        self.started = self.ended = 0.0
        self._issued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name="load")

    def start(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> Load:
        self._thread.join(self.duration + 20)
        assert not self._thread.is_alive(), "the load generator did not stop"
        return self

    def run(self) -> Load:
        return self.start().join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def total(self) -> int:
        return sum(self.bodies.values()) + len(self.failures)

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                await asyncio.gather(*(self._worker(session, i) for i in range(self.concurrency)))
        finally:
            self.ended = time.monotonic()

    async def _worker(self, session: aiohttp.ClientSession, i: int) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.duration
        interval = self.concurrency / self.rate if self.rate else 0.0
        next_at = loop.time() + i * interval / self.concurrency
        url = self.url + self.path
        while not self._stop.is_set() and loop.time() < end:
            if self.count is not None:
                if self._issued >= self.count:
                    return
                self._issued += 1
            if interval:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                next_at += interval
            try:
                async with session.get(url, headers={"Host": self.host}) as resp:
                    body = await resp.text()
                    if resp.status == 200:
                        self.bodies[body.strip()] += 1
                    else:
                        self.failures.append(f"{resp.status}: {body.strip()[:100]}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.done += 1


@pytest.fixture
def purge(proxy_stack: ProxyStack) -> Iterator[list[str]]:
    """Names appended here are purged after the test, whatever happened (the stack is shared)."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            proxy_stack.client.stop(name, purge=True)
        except Exception:  # noqa: BLE001 - best effort; the stack's teardown removes containers anyway
            pass
    wait_for(lambda: not any(containers_of(proxy_stack.nodes, n) for n in names), 30, "purged services removed")


def test_traffic_reaches_every_replica_through_either_proxy(proxy_stack: ProxyStack, purge: list[str]) -> None:
    cluster, client, nodes, proxies = proxy_stack
    purge += ["web", "dark", "hidden"]
    host = "web.orca.test"
    client.deploy([web("web", host),
                   web("dark", "dark.orca.test", replicas=0),  # a route with no healthy replica
                   web("hidden", "hidden.orca.test", replicas=1, internal=True)])  # never routed
    wait_for(lambda: converged(client, "web", 4)() and converged(client, "hidden", 1)(), 60, "replicas healthy",
             cluster)
    replicas = hostnames(client, "web")
    assert len(replicas) == 4
    assert {c["node"] for c in client.service("web")["containers"]} == set(nodes)
    for proxy in proxies:
        wait_for(lambda proxy=proxy: routed(proxy, host, replicas), 20, f"{proxy} routes to the 4 replicas", cluster)

    # Round robin: a burst through each proxy spreads evenly (each proxy balances on its own).
    per_proxy = 200
    for proxy in proxies:
        load = Load(proxy, host, concurrency=4, count=per_proxy, duration=30).run()
        print(f"distribution through {proxy}: {dict(load.bodies)} failures={load.failures[:5]} "
              f"({per_proxy / (load.ended - load.started):.0f} req/s)")
        assert not load.failures, load.failures[:10]
        assert set(load.bodies) == replicas, load.bodies
        for n in load.bodies.values():
            assert abs(n - per_proxy / 4) <= per_proxy / 4 * 0.2, load.bodies

    # The forwarding headers reach the replica (busybox httpd passes them to CGI as HTTP_*).
    status, body = fetch(proxies[0], host, "/cgi-bin/env")
    assert status == 200, body
    env = dict(line.partition("=")[::2] for line in body.splitlines() if "=" in line)
    assert env.get("HTTP_X_FORWARDED_FOR") == "127.0.0.1", body
    assert env.get("HTTP_X_FORWARDED_PROTO") == "http" and env.get("HTTP_X_FORWARDED_HOST") == host, body
    assert env.get("HTTP_HOST") == host, body
    status, body = fetch(proxies[1], host, "/cgi-bin/env", headers={"X-Forwarded-For": "10.1.2.3"})
    assert status == 200 and "HTTP_X_FORWARDED_FOR=10.1.2.3, 127.0.0.1\n" in body, body

    # 503 for a route without a healthy replica (once the route is pushed: before, it is 404).
    for proxy in proxies:
        wait_for(lambda proxy=proxy: fetch(proxy, "dark.orca.test")[0] == 503, 20, "503 for dark", cluster)
        assert envelope(fetch(proxy, "dark.orca.test")) == (503, "NO_HEALTHY_REPLICA", {"service": "dark"})
        # Unknown host, and an internal service's domain: 404 with a short text.
        assert envelope(fetch(proxy, "nowhere.orca.test")) == (404, "NOT_FOUND", {"host": "nowhere.orca.test"})
        assert envelope(fetch(proxy, "hidden.orca.test:8080")) == (404, "NOT_FOUND", {"host": "hidden.orca.test"})
        assert fetch(proxy, "WEB.orca.test.:80")[0] == 200  # case, trailing dot and port do not matter
    reports = [s for s in client.status() if s["name"] == "web"]
    assert reports and reports[0]["healthy_replicas"] == 4


def test_a_replica_killed_mid_load_loses_no_request(proxy_stack: ProxyStack, purge: list[str]) -> None:
    cluster, client, nodes, proxies = proxy_stack
    purge.append("kill")
    host = "kill.orca.test"
    client.deploy([web("kill", host)])
    wait_for(converged(client, "kill", 4), 60, "4 healthy replicas", cluster)
    replicas = hostnames(client, "kill")
    wait_for(lambda: routed(proxies[0], host, replicas), 20, "routes to the 4 replicas", cluster)

    load = Load(proxies[0], host, concurrency=6, rate=60, duration=10).start()
    try:
        wait_for(lambda: load.done >= 120, 10, "load running")
        victim = next(c for c in containers_of(nodes, "kill") if c.id[:12] in replicas)
        served_before = load.bodies[victim.id[:12]]
        victim.kill()
        killed_at = time.monotonic()
    finally:
        load.join()
    after = load.done
    print(f"kill mid-load: {load.total} requests in {load.ended - load.started:.1f}s, "
          f"{len(load.failures)} failed {load.failures[:5]}; per replica {dict(load.bodies)}; the killed one "
          f"served {served_before} before and {load.bodies[victim.id[:12]] - served_before} after "
          f"(killed {killed_at - load.started:.1f}s in)")
    assert after >= 400, after  # the load really ran on both sides of the kill
    assert len(load.failures) <= 2, load.failures  # GETs are retried once on another replica
    wait_for(converged(client, "kill", 4), 60, "back to 4 healthy replicas", cluster)
    replicas = hostnames(client, "kill")
    wait_for(lambda: routed(proxies[0], host, replicas), 20, "routes to the 4 replicas again", cluster)


def canary_share(stack: ProxyStack, name: str, weight: float | None, total: int = 400) -> tuple[float, Counter[str]]:
    """Deploy `name` (4 replicas), then a changed spec as 1 canary (with `canary_weight` = weight unless
    None); `total` requests through the first proxy -> (the canary's share, answers per replica)."""
    cluster, client, nodes, proxies = stack
    host = f"{name}.orca.test"
    client.deploy([web(name, host, env={"VERSION": "1"})])
    wait_for(converged(client, name, 4), 60, "4 healthy replicas", cluster)
    extra: dict[str, Any] = {"canary": 1} if weight is None else {"canary": 1, "canary_weight": weight}
    client.deploy([web(name, host, env={"VERSION": "2"}, **extra)])

    def five_healthy() -> bool:
        d = client.service(name)
        return (d.get("canary") or {}).get("version") is not None and len(d["containers"]) == 5 and all(
            c["status"] == "running" and c["health"] == "healthy" for c in d["containers"])
    wait_for(five_healthy, 60, "4 stable + 1 canary, healthy", cluster)
    detail = client.service(name)
    canary = hostnames(client, name, detail["canary"]["version"])
    everyone = hostnames(client, name)
    assert len(canary) == 1 and len(everyone) == 5
    wait_for(lambda: routed(proxies[0], host, everyone, tries=16), 20, "routes to stable and canary", cluster)
    load = Load(proxies[0], host, concurrency=4, count=total, duration=30).run()
    share = sum(n for h, n in load.bodies.items() if h in canary) / total
    print(f"{name}: canary share {share:.3f} of {total} (canary_weight {weight}; the service's spec says "
          f"{detail['spec'].get('canary_weight')}, its canary {detail['canary']}); per replica {dict(load.bodies)}")
    assert not load.failures, load.failures[:10]
    assert set(load.bodies) == everyone, load.bodies
    return share, load.bodies


def test_canary_without_weight_gets_its_share_of_replicas(proxy_stack: ProxyStack, purge: list[str]) -> None:
    purge.append("cand")
    share, _ = canary_share(proxy_stack, "cand", None)
    # Smooth weighted round robin: exactly 1 in 5 (a route table push restarts the cycle: a request or so).
    assert abs(share - 1 / 5) <= 0.03


# The brief's tolerance (0.25 +- 0.08) would pass with the bug: the replica share 0.20 is inside it. The
# balancing is exact (every 4th request at 0.25), so the tolerance here tells 0.25 from 0.20.
def test_canary_gets_its_weight(proxy_stack: ProxyStack, purge: list[str]) -> None:
    purge.append("cana")
    share, bodies = canary_share(proxy_stack, "cana", 0.25)
    assert abs(share - 0.25) <= 0.03, bodies


def test_autoscaler_scales_out_under_load_and_back_in(proxy_stack: ProxyStack, purge: list[str]) -> None:
    cluster, client, nodes, proxies = proxy_stack
    purge.append("auto")
    host = "auto.orca.test"
    window = 10
    policy = {"mode": "auto", "min_replicas": 1, "max_replicas": 3, "target_rps_per_replica": 5,
              "window_seconds": window, "cooldown_seconds": 4, "scale_in_threshold_pct": 30,
              "scale_out_threshold_pct": 80}
    client.deploy([web("auto", host, replicas=1, scaling=policy)])
    wait_for(converged(client, "auto", 1), 60, "1 healthy replica", cluster)
    wait_for(lambda: fetch(proxies[0], host)[0] == 200, 20, "routed", cluster)
    assert client.get_scaling("auto")["scaling"]["mode"] == "auto"

    def autoscaled() -> list[dict[str, Any]]:
        return client.events(service="auto", type="autoscaled", limit=50)

    load = Load(proxies[0], host, concurrency=4, rate=25, duration=25).start()
    load_wall = time.time()
    out_events: list[dict[str, Any]] = []
    rps_seen = 0.0
    try:
        while time.monotonic() - load.started < 30 and load.running:
            if not out_events:
                out_events = autoscaled()
                if out_events:
                    seen_after = time.monotonic() - load.started
            current = (client.metrics("auto")["current"] or {})
            rps_seen = max(rps_seen, float(current.get("rps") or 0.0))
            time.sleep(0.5)
    finally:
        load.stop()
        load.join()
    stopped_at = time.monotonic()
    print(f"load: {load.total} requests in {load.ended - load.started:.1f}s "
          f"({load.total / (load.ended - load.started):.1f} req/s), {len(load.failures)} failed; "
          f"max rps in the leader's metrics {rps_seen}")
    assert out_events, f"no scale-out in 25 s of load; metrics: {client.metrics('auto', history=20)}"
    first = out_events[0]
    committed_after = dt.datetime.fromisoformat(first["time"]).timestamp() - load_wall
    print(f"scale-out: {first['message']}\n  committed {committed_after:.1f}s after the load began "
          f"(seen by polling after {seen_after:.1f}s)")
    assert first["details"]["replicas"] > first["details"]["previous"] == 1
    assert first["details"]["reason"] and "scale out" in first["details"]["reason"]
    assert committed_after <= window + 8, committed_after
    assert rps_seen > 0
    assert len(load.failures) <= 2, load.failures[:10]
    peak = max(e["details"]["replicas"] for e in autoscaled())
    assert 1 < peak <= 3

    # Load gone: three low windows and the cooldown, then one step in; never below min_replicas.
    seen: list[int] = []

    def scaled_in() -> dict[str, Any] | None:
        seen.append(client.get_scaling("auto")["replicas"])
        return next((e for e in autoscaled() if e["details"]["replicas"] < e["details"]["previous"]), None)
    event = wait_for(scaled_in, 75, "a scale-in after the load stopped", cluster)
    took = time.monotonic() - stopped_at
    print(f"scale-in: {event['message']}\n  {took:.1f}s after the load stopped; replicas seen {sorted(set(seen))}")
    assert event["details"]["replicas"] >= 1 and min(seen) >= 1
    assert "scale in" in event["details"]["reason"]


def test_light_load_has_true_latency_figures_and_does_not_scale_out(proxy_stack: ProxyStack,
                                                                     purge: list[str]) -> None:
    cluster, client, nodes, proxies = proxy_stack
    purge.append("calm")
    host = "calm.orca.test"
    policy = {"mode": "auto", "min_replicas": 1, "max_replicas": 3, "target_rps_per_replica": 5,
              "window_seconds": 10, "cooldown_seconds": 4}
    client.deploy([web("calm", host, replicas=1, scaling=policy)])
    wait_for(converged(client, "calm", 1), 60, "1 healthy replica", cluster)
    wait_for(lambda: fetch(proxies[0], host)[0] == 200, 20, "routed", cluster)
    load = Load(proxies[0], host, concurrency=2, rate=2, duration=14).start()  # 40% of the target: in band
    p95s: list[float] = []
    events: list[dict[str, Any]] = []
    try:
        while load.running and not events and not any(p > 250 for p in p95s):
            p95 = (client.metrics("calm")["current"] or {}).get("p95_ms")
            if p95 is not None:
                p95s.append(p95)
            events = client.events(service="calm", type="autoscaled")
            time.sleep(0.5)
    finally:
        load.stop()
        load.join()
    leader = cluster.wait_leader()
    with urlopen(leader.url + "/metrics", timeout=5) as resp:
        exposition = resp.read().decode()
    count_key = 'orca_service_request_duration_seconds_count{service="calm"}'
    total_key = 'orca_service_requests_total{service="calm"}'
    figures = {line.split(" ")[0]: float(line.split(" ")[1]) for line in exposition.splitlines()
               if 'service="calm"' in line and not line.startswith("#")}
    print(f"light load: p95 samples {p95s}; autoscaled: {[e['message'] for e in events]}; leader histogram "
          f"count {figures.get(count_key)} vs requests {figures.get(total_key)}")
    assert p95s and max(p95s) <= 250, p95s  # a busybox httpd answers in a few ms
    assert not events, [e["message"] for e in events]
    assert figures[count_key] == figures[total_key]


def test_event_stream_from_a_follower_within_a_second(proxy_stack: ProxyStack, purge: list[str]) -> None:
    cluster, client, nodes, proxies = proxy_stack
    purge.append("streamed")
    client.deploy([{"name": "streamed", "image": IMAGE, "command": ["sleep", "1000"], "replicas": 0,
                    "resources": {"memory": "16Mi", "cpu": 0.05}}])
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    watcher = Client([follower.url], cluster.token(role="viewer", name="watcher"), timeout=5)
    watcher.stream_idle_s = 30
    received: list[tuple[float, dict[str, Any]]] = []
    want = [10**9]  # set once the stream is known to be open: that many events, then the watcher ends

    errors: list[BaseException] = []

    def watch() -> None:
        try:
            for event in watcher.stream_events(service="streamed"):
                if event.get("type") == "service_scaled":
                    received.append((time.monotonic(), event))
                    if len(received) >= want[0]:
                        return
        except Exception as exc:  # noqa: BLE001 - reported by the test, not as a thread's crash
            errors.append(exc)
    thread = threading.Thread(target=watch, daemon=True, name="watch")
    thread.start()
    # The stream starts at the present: scale until one event comes through, then measure.
    wait_for(lambda: not errors and client.scale("streamed", 1) and wait_received(received, 1, 1.5), 20,
             f"the stream is open {errors}")
    want[0] = len(received) + 3
    latencies = []
    for replicas in (0, 1, 0):
        n = len(received)
        asked = time.monotonic()
        client.scale("streamed", replicas)
        committed = time.monotonic()
        assert wait_received(received, n + 1, 5), f"no event {errors}"
        at, event = received[n]
        assert event["details"]["replicas"] == replicas
        latencies.append((at - asked, at - committed))
    thread.join(5)
    watcher.close()
    print("event stream from follower " + follower.node_id + ": " + ", ".join(
        f"{a * 1000:.0f} ms from the call ({c * 1000:.0f} ms after it returned)" for a, c in latencies))
    assert all(c <= 1.0 for _, c in latencies), latencies


def wait_received(received: list[Any], n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(received) >= n:
            return True
        time.sleep(0.01)
    return len(received) >= n
