"""The agent's ingress proxy: HTTP by `Host` to the healthy replicas of the service with that domain.

The route table comes from the leader with every push (`AllocationsPush.routes`, orca.protocol): it maps
a domain to its service, its balancing strategy, its canary weight and its endpoints (healthy replicas on
any node, as "host:port"). `set_routes` swaps it in whole; requests already on their way keep the
endpoint they picked.

One request:
  1. `Host` (port stripped, lowercased, trailing dot dropped) -> route; none -> 404 "no service for host X".
  2. Pick an endpoint: canary or stable first, by a smooth weighted round robin over the two groups
     (`canary_weight`, else the canaries' share of the endpoints), so 1000 requests at weight 0.2 send
     exactly 200 to the canaries; then within the group round robin or least connections (ties rotate).
     No endpoint -> 503 "no healthy replica for SERVICE".
  3. Forward with aiohttp's client: hop-by-hop headers dropped, `Host` kept, X-Forwarded-For appended,
     X-Forwarded-Proto and X-Forwarded-Host set; bodies stream both ways (a small response with a known
     length is read whole, which is cheaper and still bounded by BUFFER_MAX_BYTES).
  4. A failure before any response byte is retried once on another endpoint: any method when the
     connection could not even be made (nothing was sent), else only GET/HEAD/OPTIONS without a body;
     otherwise 502 (504 when the upstream stayed silent for `request_timeout_s`). An endpoint that refused
     a connection is passed over for EJECT_S unless nothing else is left.
  5. A WebSocket upgrade is handshaken with the upstream first (so its refusal is the client's answer),
     then accepted, and messages (pings and pongs included) are pumped both ways until either side closes.

Draining: an endpoint missing from a new table gets no new request; `drain(alloc)` (the reconciler's
`before_stop` hook) also fences it and waits, up to `drain_timeout_s`, until its in-flight requests
are done, so a replica is only stopped once the proxy is finished with it.

Statistics (`stats()`, the heartbeat's `proxy`, orca.protocol ProxyStats) are cumulative since start:
per service (requests, errors = 5xx answered + upstream failures, active, latency histogram on
LATENCY_BUCKETS_MS) and per replica (requests, errors, active), the replicas capped for the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from orca.config import ProxyConfig, parse_host_port
from orca.protocol import LATENCY_BUCKETS_MS

__all__ = ["Proxy", "Route", "Endpoint", "hostname", "BUFFER_MAX_BYTES", "EJECT_S", "MAX_REPLICAS_REPORTED"]

log = logging.getLogger("orca.agent.proxy")

# A response with a Content-Length up to this is read whole and sent in one write; larger or chunked
# ones are streamed chunk by chunk.
BUFFER_MAX_BYTES = 256 * 1024
# An endpoint that refused a connection is skipped this long (the route table lags a crash by a few
# health checks and a push); skipped only while another endpoint is left.
EJECT_S = 2.0
# Pooled upstream connections are dropped after this much idleness: below the shortest keep-alive
# common servers use (Node's 5 s), so a request is rarely sent on a connection the upstream is closing.
UPSTREAM_KEEPALIVE_S = 4.0
# The heartbeat must stay under 64 KiB: at most this many replicas (the busiest) are reported.
MAX_REPLICAS_REPORTED = 200
# A replica gone from the routes keeps its counters this long (the leader reads them from heartbeats).
RETIRED_KEEP_S = 300.0

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS"))
# RFC 9110 §7.6.1 hop-by-hop headers (plus the de facto Proxy-Connection); never forwarded either way.
HOP_BY_HOP = ("Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
              "TE", "Trailer", "Transfer-Encoding", "Upgrade")
# Set by the proxy itself on the two legs of a WebSocket (each has its own key and negotiation).
WS_HANDSHAKE = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
                "Sec-WebSocket-Protocol", "Sec-WebSocket-Accept")
TEXT = "text/plain; charset=utf-8"


def hostname(host: str | None) -> str:
    """The routing key of a `Host` header: port stripped, lowercased, no trailing dot, IPv6 unbracketed."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class Endpoint:
    """One replica as the proxy sees it; also its per-replica counters (they outlive its routes)."""

    __slots__ = ("alloc", "service", "address", "url", "canary", "active", "requests", "errors",
                 "fenced", "routed", "down_until", "retired_at", "_idle")

    def __init__(self, alloc: str, service: str, address: str, canary: bool) -> None:
        self.alloc = alloc
        self.service = service
        self.address = address
        self.url = f"http://{address}"
        self.canary = canary
        self.active = 0
        self.requests = 0
        self.errors = 0
        self.fenced = False  # being stopped: never picked again, whatever a table says
        self.routed = True  # listed in the current table
        self.down_until = 0.0  # monotonic; refused a connection, skipped until then
        self.retired_at = 0.0
        self._idle: asyncio.Event | None = None  # only while someone waits for the drain

    def acquire(self) -> None:
        self.active += 1
        self.requests += 1

    def release(self, error: bool) -> None:
        self.active -= 1
        if error:
            self.errors += 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        if self.active == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


class Route:
    """One domain: its service, strategy, canary weight and endpoints, with the balancing state."""

    __slots__ = ("domain", "service", "strategy", "canary_weight", "endpoints", "_rr", "_credit")

    def __init__(self, domain: str, service: str, strategy: str, canary_weight: float | None,
                 endpoints: list[Endpoint]) -> None:
        self.domain = domain
        self.service = service
        self.strategy = strategy
        self.canary_weight = canary_weight
        self.endpoints = endpoints
        self._rr = [0, 0]  # round-robin cursors: stable, canary
        self._credit = [0.0, 0.0]  # smooth weighted round robin between the groups: stable, canary

    def live(self) -> int:
        return sum(1 for e in self.endpoints if not e.fenced)

    def pick(self, now: float, exclude: Endpoint | None = None) -> Endpoint | None:
        """The next endpoint for a request, or None when there is none to try."""
        usable = [e for e in self.endpoints if not e.fenced and e is not exclude]
        if not usable:
            return None
        up = [e for e in usable if e.down_until <= now] or usable
        canary = [e for e in up if e.canary]
        if canary and len(canary) < len(up):
            weight = self.canary_weight
            if weight is None:
                weight = sum(1 for e in self.endpoints if e.canary and not e.fenced) / max(1, self.live())
            weight = min(max(float(weight), 0.0), 1.0)
            credit = self._credit
            credit[0] += 1.0 - weight
            credit[1] += weight
            group = 1 if credit[1] > credit[0] else 0
            credit[group] -= 1.0
            candidates = canary if group else [e for e in up if not e.canary]
        else:
            group = 1 if canary else 0
            candidates = up
        n = len(candidates)
        start = self._rr[group] % n
        self._rr[group] = start + 1
        if self.strategy != "least_conn" or n == 1:
            return candidates[start]
        best = candidates[start]
        for k in range(1, n):
            e = candidates[(start + k) % n]
            if e.active < best.active:
                best = e
        return best


class ServiceStats:
    """Cumulative counters of one service (ProxyStats without the replicas)."""

    __slots__ = ("requests", "errors", "active", "buckets", "latency_sum_ms")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.active = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # per bucket, not cumulative; +Inf last
        self.latency_sum_ms = 0.0

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        ms = seconds * 1000.0
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.latency_sum_ms += ms

    def report(self) -> dict[str, Any]:
        cumulative, total = [], 0
        for count in self.buckets:
            total += count
            cumulative.append(total)
        return {"requests": self.requests, "errors": self.errors, "active": self.active,
                "latency_buckets": cumulative, "latency_sum_ms": round(self.latency_sum_ms, 3)}


class _Failed(Exception):
    """The upstream leg failed before a response; `status` is what the client gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")


class Proxy:
    """The ingress proxy of one agent.

    Contract: `set_routes(table)` with a validated push's `routes` (any time, from the event loop);
    `start()` binds `config.listen` and `stop()` closes it (in-flight requests get `drain_timeout_s`);
    `drain(alloc_id)` is awaited by the reconciler before it stops a replica; `stats()` feeds the
    heartbeat, `route_active(service)` the NodeReport. `clock` (monotonic) is injectable for tests.
    """

    def __init__(self, config: ProxyConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.routes: dict[str, Route] = {}
        self.endpoints: dict[str, Endpoint] = {}  # alloc id -> endpoint, routed or retired
        self.services: dict[str, ServiceStats] = {}
        self.listening = False
        self.port: int | None = None  # the bound port (useful with port 0 in tests)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=config.upstream_connect_timeout_s,
                                              sock_connect=config.upstream_connect_timeout_s,
                                              sock_read=config.request_timeout_s)

    # -- the table ---------------------------------------------------------------------------------

    def set_routes(self, table: dict[str, Any] | None) -> None:
        """Swap in a RouteTable (orca.protocol). Malformed entries are skipped with a warning: one bad
        route must not take the others down."""
        now = self.clock()
        routes: dict[str, Route] = {}
        seen: set[str] = set()
        for domain, raw in (table or {}).items():
            try:
                route = self._build(str(domain), raw, seen)
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("ignoring route %r: %s", domain, exc)
                continue
            old = self.routes.get(route.domain)
            if old is not None and (old.service, old.strategy, old.canary_weight) == (
                    route.service, route.strategy, route.canary_weight) and old.endpoints == route.endpoints:
                route = old  # unchanged: keep its round-robin and canary credit (pushes repeat every 5 s)
            routes[route.domain] = route
        for alloc, ep in list(self.endpoints.items()):
            if alloc not in seen:
                if ep.routed:
                    ep.routed, ep.retired_at = False, now
                elif ep.active == 0 and now - ep.retired_at > RETIRED_KEEP_S:
                    del self.endpoints[alloc]
        self.routes = routes

    def _build(self, domain: str, raw: dict[str, Any], seen: set[str]) -> Route:
        service = raw["service"]
        if not isinstance(service, str) or not service:
            raise ValueError("service: expected a name")
        strategy = raw.get("strategy") or self.config.strategy
        if strategy not in ("round_robin", "least_conn"):
            raise ValueError(f"strategy: unknown {strategy!r}")
        weight = raw.get("canary_weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)):
            raise ValueError("canary_weight: expected a number or null")
        endpoints: list[Endpoint] = []
        for item in raw.get("endpoints") or []:
            alloc, address = str(item["alloc"]), str(item["address"])
            host, _, port = address.rpartition(":")
            if ":" in host and not host.startswith("["):  # "::1:20000" from an IPv6 publish address
                address = f"[{host}]:{port}"
            parse_host_port(address)
            ep = self.endpoints.get(alloc)
            if ep is None:
                ep = self.endpoints[alloc] = Endpoint(alloc, service, address, bool(item.get("canary")))
            elif ep.address != address:  # recreated on another port: new requests go to the new one
                ep.address, ep.url = address, f"http://{address}"
            ep.canary, ep.service, ep.routed = bool(item.get("canary")), service, True
            if alloc not in seen:
                seen.add(alloc)
                endpoints.append(ep)
        self.services.setdefault(service, ServiceStats())
        return Route(hostname(domain), service, strategy, weight, endpoints)

    def route_active(self, service: str) -> bool:
        """True while this proxy listens and has a route with at least one endpoint for `service`."""
        return self.listening and any(r.service == service and r.live() for r in self.routes.values())

    async def drain(self, alloc_id: str, timeout: float | None = None) -> bool:
        """Fence a replica (no new request goes to it) and wait until its in-flight requests are done,
        at most `timeout` (default `drain_timeout_s`). False when some were still running."""
        ep = self.endpoints.get(alloc_id)
        if ep is None:
            return True
        ep.fenced = True
        if ep.active == 0:
            return True
        log.info("draining %d in-flight request(s) to %s", ep.active, alloc_id)
        done = await ep.wait_idle(self.config.drain_timeout_s if timeout is None else timeout)
        if not done:
            log.warning("%s still had %d request(s) in flight after the drain timeout", alloc_id, ep.active)
        return done

    # -- statistics ---------------------------------------------------------------------------------

    def stats(self, max_replicas: int = MAX_REPLICAS_REPORTED) -> dict[str, dict[str, Any]]:
        """{service: ProxyStats}; the `max_replicas` busiest replicas (by open, then total requests)."""
        out = {name: {**s.report(), "replicas": {}} for name, s in self.services.items()}
        ranked = sorted((e for e in self.endpoints.values() if e.requests or e.active),
                        key=lambda e: (-e.active, -e.requests, e.alloc))
        for e in ranked[:max(0, max_replicas)]:
            svc = out.setdefault(e.service, {**ServiceStats().report(), "replicas": {}})
            svc["replicas"][e.alloc] = {"requests": e.requests, "errors": e.errors, "active": e.active}
        return out

    # -- serving ------------------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = parse_host_port(self.config.listen)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=UPSTREAM_KEEPALIVE_S,
                                         happy_eyeballs_delay=None)  # one address per endpoint: no racing
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies must never ride on another's request
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"))
        server = web.Server(self._handle, keepalive_timeout=self.config.idle_timeout_s, access_log=None,
                            handler_cancellation=True)
        self._runner = web.ServerRunner(server, handle_signals=False,
                                        shutdown_timeout=self.config.drain_timeout_s)
        try:
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port, reuse_address=True, backlog=1024)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else port
        self.listening = True
        log.info("ingress proxy on %s:%s", host, self.port)

    async def stop(self) -> None:
        self.listening = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        host = hostname(request.headers.get("Host"))
        route = self.routes.get(host)
        if route is None:
            return _text(404, f"no service for host {host}\n")
        stats = self.services[route.service]
        started = asyncio.get_running_loop().time()
        stats.active += 1
        status = 500
        try:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                resp = await self._websocket(request, route)
            else:
                resp = await self._forward(request, route)
            status = resp.status
            return resp
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code): not the service's error
            raise
        finally:
            stats.active -= 1
            stats.record(status, asyncio.get_running_loop().time() - started)

    def _upstream_headers(self, request: web.BaseRequest, extra_drop: tuple[str, ...] = ()) -> CIMultiDict[str]:
        headers = CIMultiDict(request.headers)
        # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        named = [t.strip() for v in headers.getall("Connection", ()) for t in v.split(",") if t.strip()]
        for name in (*HOP_BY_HOP, *named, *extra_drop, "Expect"):
            headers.popall(name, None)
        prior = headers.popall("X-Forwarded-For", ())
        remote = request.remote or ""
        headers["X-Forwarded-For"] = ", ".join((*prior, remote)) if prior else remote
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.headers.get("Host", "")
        return headers

    async def _forward(self, request: web.BaseRequest, route: Route) -> web.StreamResponse:
        session = self._session
        assert session is not None, "the proxy is not started"
        has_body = request.body_exists
        if has_body and request.headers.get("Expect", "").lower() == "100-continue":
            # The client waits for this before sending its body; the upstream leg does without.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own expect handler: the response proper starts now
        headers = self._upstream_headers(request)
        retry_any = request.method in IDEMPOTENT and not has_body
        data = request.content if has_body else None
        tried: Endpoint | None = None
        for attempt in (1, 2):
            ep = route.pick(self.clock(), exclude=tried)
            if ep is None:
                if tried is None:
                    return _text(503, f"no healthy replica for {route.service}\n")
                return _text(502, f"bad gateway: {route.service} did not answer\n")
            ep.acquire()
            try:
                upstream = await session.request(request.method, URL(ep.url + request.raw_path, encoded=True),
                                                 headers=headers, data=data, allow_redirects=False)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Nothing reached the upstream: any request may go elsewhere.
                ep.release(True)
                ep.down_until = self.clock() + EJECT_S
                log.debug("%s: cannot connect: %s", ep.alloc, exc)
                tried = ep
                continue
            except (aiohttp.SocketTimeoutError, TimeoutError):
                ep.release(True)
                return _text(504, f"gateway timeout: {route.service} did not answer in time\n")
            except (aiohttp.ClientError, OSError) as exc:
                ep.release(True)
                log.debug("%s: failed before a response: %s", ep.alloc, exc)
                if retry_any and attempt == 1:
                    tried = ep
                    continue
                return _text(502, f"bad gateway: {route.service} failed\n")
            except BaseException:  # cancelled: the client went away
                ep.release(False)
                raise
            try:
                return await self._relay(request, upstream, ep)
            finally:
                upstream.release()
        return _text(502, f"bad gateway: {route.service} did not answer\n")

    async def _relay(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse,
                     ep: Endpoint) -> web.StreamResponse:
        """Send the upstream's answer to the client; `ep` is released here, whatever happens."""
        failed = upstream.status >= 500
        try:
            headers = CIMultiDict(upstream.headers)
            for name in HOP_BY_HOP:
                headers.popall(name, None)
            length = upstream.content_length
            if request.method == "HEAD" or upstream.status in (204, 304) or (
                    length is not None and length <= BUFFER_MAX_BYTES):
                body = await upstream.read()
                return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
            try:
                await resp.prepare(request)
                while True:
                    try:
                        chunk = await upstream.content.readany()
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        # Headers are out: the only honest signal left is to cut the client's connection.
                        failed = True
                        log.debug("%s: upstream failed mid-body: %s", ep.alloc, exc)
                        if request.transport is not None:
                            request.transport.abort()
                        return resp
                    if not chunk:
                        break
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionError:  # the client went away: not the upstream's failure
                log.debug("client of %s went away mid-response", ep.alloc)
            return resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            failed = True
            log.debug("%s: upstream failed reading the body: %s", ep.alloc, exc)
            return _text(502, "bad gateway: upstream failed\n")
        except asyncio.CancelledError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            ep.release(failed)

    # -- WebSockets ---------------------------------------------------------------------------------

    async def _websocket(self, request: web.BaseRequest, route: Route) -> web.StreamResponse:
        session = self._session
        assert session is not None, "the proxy is not started"
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        headers = self._upstream_headers(request, WS_HANDSHAKE)
        tried: Endpoint | None = None
        upstream: aiohttp.ClientWebSocketResponse | None = None
        ep: Endpoint | None = None
        for _attempt in (1, 2):
            ep = route.pick(self.clock(), exclude=tried)
            if ep is None:
                if tried is None:
                    return _text(503, f"no healthy replica for {route.service}\n")
                break
            ep.acquire()
            try:
                upstream = await session.ws_connect(URL(ep.url + request.raw_path, encoded=True),
                                                    headers=headers, protocols=protocols, autoping=False,
                                                    max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
                break
            except aiohttp.WSServerHandshakeError as exc:
                ep.release(exc.status >= 500)
                return _text(exc.status if exc.status >= 400 else 502, f"websocket refused by {route.service}\n")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                ep.release(True)
                if isinstance(exc, aiohttp.ClientConnectorError):
                    ep.down_until = self.clock() + EJECT_S
                log.debug("%s: websocket connect failed: %s", ep.alloc, exc)
                tried, ep = ep, None
            except BaseException:
                ep.release(False)
                raise
        if upstream is None or ep is None:
            return _text(502, f"bad gateway: {route.service} did not answer\n")
        failed = False
        try:
            client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                           autoping=False, max_msg_size=0, compress=False)
            await client.prepare(request)
            pumps = [asyncio.create_task(_pump(client, upstream)), asyncio.create_task(_pump(upstream, client))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Whichever side closed first, close the other with its code; the other pump then ends.
                for side, other in ((client, upstream), (upstream, client)):
                    if side.closed and not other.closed:
                        with contextlib.suppress(Exception):
                            await other.close(code=side.close_code or 1000)
                for ws in (client, upstream):
                    if not ws.closed:
                        with contextlib.suppress(Exception):
                            await ws.close(code=1001)
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            return client
        except asyncio.CancelledError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                await upstream.close()
            ep.release(failed)


async def _pump(src: Any, dst: Any) -> None:
    """Copy WebSocket messages from `src` to `dst` until `src` closes."""
    async for msg in src:
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            await dst.ping(msg.data)
        elif msg.type is WSMsgType.PONG:
            await dst.pong(msg.data)
        elif msg.type is WSMsgType.ERROR:
            break
