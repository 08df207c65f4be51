"""The HTTP surface's cross-cutting rules, each in one place: the error envelope, the fail-closed route
policy, authentication, body limits, and request metrics.

One middleware (`make_middlewares`) does, in this order: metrics -> errors -> auth. Errors wraps auth so
that a 401/403 gets the envelope too; metrics sees the final status code of every response, errors
included.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from orca import auth, bounds
from orca.errors import (
    Forbidden,
    MethodNotAllowed,
    NotFound,
    NotLeader,
    OrcaError,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from orca.master.ratelimit import Decision, RateLimiter
from orca.metrics import MasterMetrics

__all__ = ["POLICY", "PUBLIC", "HMAC", "JOIN", "error_response", "json_response", "read_json", "read_body",
           "parse_json_object", "make_middlewares", "TokenChecker", "add_rate_limit_headers", "ApiRunner"]

log = logging.getLogger("orca.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = "public"
_METRIC_CHILDREN_MAX = 4096
_READ_CHUNK = 64 * 1024
HMAC = "hmac"     # the handler verifies a signature itself (GitHub webhooks)
JOIN = "join"     # the handler verifies a join token itself (an agent's one-time exchange)
NOT_READY_RETRY_AFTER_S = 1  # Retry-After of a 503 CLUSTER_NOT_READY (no leader yet, or a write that timed out)

# Every route the master serves, with the role it needs. A route missing here is denied (fail closed);
# a test checks that every registered route has an entry.
POLICY: dict[tuple[str, str], str] = {
    ("GET", "/livez"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/api/v1/status/{component}"): PUBLIC,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/v2/status/{subsystem}"): PUBLIC,            # Porter's subsystems (orca.master.api_porter)
    ("POST", "/api/v1/edge/heartbeat"): "agent",              # Dory's edge API (orca.master.api_edge)
    ("POST", "/api/v1/edge/nodes"): "admin",
    ("POST", "/api/v1/edge/nodes/decommission"): "admin",
    ("GET", "/api/v1/cluster/leader"): PUBLIC,
    ("GET", "/api/v1/cluster/health"): PUBLIC,
    ("GET", "/api/v1/cluster/info"): "viewer",
    ("GET", "/api/v1/cluster/status"): "viewer",
    ("GET", "/api/v1/cluster/digest"): "admin",
    ("GET", "/api/v1/cluster/members"): "viewer",
    ("POST", "/api/v1/cluster/members"): "admin",
    ("DELETE", "/api/v1/cluster/members/{id}"): "admin",
    ("GET", "/api/v1/status"): "viewer",
    ("GET", "/api/v1/services/{name}"): "viewer",
    ("GET", "/api/v1/events"): "viewer",
    ("POST", "/api/v1/deploy"): "deployer",
    ("POST", "/api/v1/services/{name}/scale"): "deployer",
    ("DELETE", "/api/v1/services/{name}"): "deployer",
    ("POST", "/api/v1/services/{name}/start"): "deployer",
    ("DELETE", "/api/v1/projects/{name}"): "deployer",
    ("POST", "/api/v1/stop"): "admin",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{jti}"): "admin",
    ("POST", "/api/v1/agent/register"): "agent",
    ("POST", "/api/v1/agent/heartbeat"): "agent",
    ("POST", "/api/v1/agent/join"): JOIN,
    ("POST", "/api/v1/agent/certificate"): "agent",
    ("GET", "/api/v1/cluster/ca"): PUBLIC,
    ("POST", "/api/v1/cluster/ca/rotate"): "admin",
    ("POST", "/api/v1/cluster/ca/finish"): "admin",
    ("GET", "/api/v1/cluster/join-tokens"): "admin",
    ("POST", "/api/v1/cluster/join-tokens"): "admin",
    ("DELETE", "/api/v1/cluster/join-tokens/{id}"): "admin",
    ("GET", "/api/v1/cluster/nodes"): "viewer",
    ("GET", "/api/v1/cluster/nodes/{id}"): "viewer",
    ("GET", "/api/v1/secrets"): "admin",
    ("POST", "/api/v1/secrets"): "admin",
    ("DELETE", "/api/v1/secrets/{key}"): "admin",
    ("PUT", "/api/v1/secrets/{key}/grants"): "admin",
    ("GET", "/api/v1/services/{name}/logs"): "viewer",
    ("POST", "/api/v1/services/{name}/promote"): "deployer",
    ("POST", "/api/v1/services/{name}/rollback"): "deployer",
    ("GET", "/api/v1/services/{name}/history"): "viewer",
    ("POST", "/api/v1/cluster/nodes/{id}/drain"): "admin",
    ("POST", "/api/v1/cluster/nodes/{id}/undrain"): "admin",
    ("DELETE", "/api/v1/cluster/nodes/{id}"): "admin",
    ("GET", "/api/v1/webhooks"): "viewer",
    ("POST", "/api/v1/webhooks"): "deployer",
    ("DELETE", "/api/v1/webhooks/{id}"): "deployer",
    ("POST", "/api/v1/webhooks/github"): HMAC,
    ("GET", "/api/v1/services/{name}/metrics"): "viewer",
    ("GET", "/api/v1/services/{name}/scaling"): "viewer",
    ("PUT", "/api/v1/services/{name}/scaling"): "deployer",
    ("GET", "/api/v1/services/{name}/logs/stream"): "viewer",
    ("GET", "/api/v1/services/{name}/metrics/stream"): "viewer",
    ("GET", "/api/v1/events/stream"): "viewer",
    ("GET", "/api/v1/top"): "viewer",
    # Orchestry's API (orca.master.compat_orchestry*): an app is a service, with the same roles
    ("POST", "/api/v1/apps/register"): "deployer",
    ("GET", "/api/v1/apps"): "viewer",
    ("GET", "/api/v1/apps/{app}"): "viewer",
    ("DELETE", "/api/v1/apps/{app}"): "deployer",
    ("POST", "/api/v1/apps/{app}/start"): "deployer",
    ("POST", "/api/v1/apps/{app}/stop"): "deployer",
    ("POST", "/api/v1/apps/{app}/scale"): "deployer",
    ("GET", "/api/v1/apps/{app}/spec"): "viewer",
    ("GET", "/api/v1/apps/{app}/metrics"): "viewer",
    ("GET", "/api/v1/apps/{app}/events"): "viewer",
    ("GET", "/api/v1/apps/{app}/logs"): "viewer",
    ("GET", "/api/v1/apps/{app}/scaling"): "viewer",
    ("PUT", "/api/v1/apps/{app}/scaling"): "deployer",
    ("GET", "/api/v1/apps/{app}/health"): "viewer",
    ("POST", "/api/v1/apps/{app}/health/check"): "deployer",
    ("GET", "/api/v1/apps/{app}/logs/stream"): "viewer",
    ("GET", "/api/v1/apps/{app}/metrics/stream"): "viewer",
    ("GET", "/health"): PUBLIC,
    ("GET", "/api/v1/metrics"): "viewer",
    ("GET", "/api/v1/config"): "viewer",
    ("PUT", "/api/v1/config"): "admin",
    ("GET", "/cluster/status"): "viewer",
    ("GET", "/cluster/leader"): PUBLIC,
    ("GET", "/cluster/health"): PUBLIC,
    ("GET", "/api/v1/snapshot"): "admin",
    ("POST", "/api/v1/snapshot/restore"): "admin",
    ("PUT", "/api/v1/snapshot/restore/{id}/{n}"): "admin",
    ("POST", "/api/v1/snapshot/restore/{id}/commit"): "admin",
    ("GET", "/api/v1/volumes"): "viewer",
    ("POST", "/api/v1/services/{name}/run"): "deployer",
    ("DELETE", "/api/v1/volumes/{node}/{service}"): "admin",
    ("GET", "/ui/"): PUBLIC,        # the web console's static files (orca.master.console); no secrets in them
    ("GET", "/ui/{path}"): PUBLIC,
}


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer. The Content-Type header is given whole, the value aiohttp makes from
    `content_type="application/json", charset="utf-8"`, without parsing and rebuilding it per answer."""
    if headers:
        headers = {**headers, "Content-Type": _JSON_CONTENT_TYPE}
    else:
        headers = {"Content-Type": _JSON_CONTENT_TYPE}
    return web.Response(body=dumps(body), status=status, headers=headers)


_ORJSON_OPTS = 0
try:
    import orjson as _orjson

    # the standard library's output for what orjson would write differently: non-str keys become strings,
    # datetimes and dataclasses go to `default=str` as before
    _ORJSON_OPTS = _orjson.OPT_NON_STR_KEYS | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
except ImportError:
    _orjson = None  # type: ignore[assignment]


def dumps(body: Any) -> bytes:
    """Compact JSON as bytes: orjson (a tenth of the cost), else, or for what orjson refuses (an integer
    beyond 64 bits, a subclass it cannot take), the standard library with `default=str` as always."""
    if _orjson is not None:
        try:
            return _orjson.dumps(body, default=str, option=_ORJSON_OPTS)
        except (TypeError, _orjson.JSONEncodeError):
            pass
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def error_response(err: OrcaError, request: web.Request | None = None) -> web.Response:
    """The one mapping from an OrcaError to the envelope every client relies on."""
    body: dict[str, Any] = {"error": err.message, "code": err.code, "details": err.details,
                            "timestamp": _now_iso()}
    headers: dict[str, str] = {}
    if isinstance(err, NotLeader):
        # raw_path: still percent-encoded, so a decoded control character never reaches a header
        location = err.leader_url.rstrip("/") + (request.raw_path if request is not None else "/")
        body["leader"] = err.leader_url
        headers["Location"] = location
        headers["X-Current-Leader"] = err.leader_url
    if isinstance(err, RateLimited):
        headers["Retry-After"] = str(max(1, int(err.retry_after_s + 0.999)))
    elif err.status == 503 and err.code == "CLUSTER_NOT_READY":
        # An election takes well under a second; 1 is the smallest whole number of seconds HTTP allows.
        headers["Retry-After"] = str(NOT_READY_RETRY_AFTER_S)
    if isinstance(err, MethodNotAllowed) and err.details and "allow" in err.details:
        headers["Allow"] = ", ".join(err.details["allow"])
    return json_response(body, status=err.status, headers=headers)


async def read_body(request: web.Request, max_bytes: int | None = None) -> bytes:
    """The request body, at most `max_bytes` (default: the app's `client_max_size`), chunked or not.

    The limit is counted on the bytes as they arrive, so a chunked body (no Content-Length) over the
    limit is a 413 as well, after reading at most `max_bytes + 64 KiB`.
    """
    limit = request.client_max_size if max_bytes is None else max_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge("request body too large", {"max_bytes": limit})
    content = request.content
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.read(_READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("request body too large", {"max_bytes": limit})
        chunks.append(chunk)
        if content.at_eof():  # the whole body is in: no further read (and wake-up) to learn so
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(raw: bytes, field: str = "body") -> dict[str, Any]:
    """Bytes to a JSON object within orca.bounds' limits (depth, integer range, finite floats).

    Empty bytes are `{}`; anything that is not an object is a 400 VALIDATION_ERROR that changes nothing.
    """
    if not raw.strip():
        return {}
    body = bounds.loads(raw, field=field)
    if not isinstance(body, dict):
        raise bounds.BoundsError(field, "expected a JSON object")
    return body


async def read_json(request: web.Request, max_bytes: int | None = None) -> dict[str, Any]:
    """The one JSON reader of every route (masters and the agent API): size, depth and number bounds.

    `max_bytes` defaults to the app's `client_max_size`; see orca.bounds for the other limits.
    """
    return parse_json_object(await read_body(request, max_bytes))


class TokenChecker:
    """Verifies bearer tokens: signature (pyjwt, cached), then expiry and revocation on every request.

    The signature check was an eighth of the leader's CPU under write load (measured); a verified token
    is cached by its exact string, so a cached entry can only ever be the same, already verified token.
    Expiry and revocation are not cached: they are checked every time.
    """

    CACHE_SIZE = 4096

    def __init__(self, key: bytes, is_revoked: Callable[[str], bool]) -> None:
        self.key = key
        self.is_revoked = is_revoked
        self._verified: OrderedDict[str, auth.Claims] = OrderedDict()

    def check(self, header: str | None) -> auth.Claims:
        if not header or not header.startswith("Bearer "):
            raise Unauthorized("missing bearer token")
        token = header[len("Bearer "):].strip()
        claims = self._verified.get(token)
        if claims is None:
            claims = auth.verify_token(self.key, token)
            self._verified[token] = claims
            if len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)
        elif claims.exp is not None and claims.exp <= time.time():
            del self._verified[token]
            raise Unauthorized("token has expired")
        if self.is_revoked(claims.jti):
            raise Unauthorized("token has been revoked")
        return claims


def _route_key(request: web.Request) -> tuple[str, str] | None:
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


def _http_exception_to_error(exc: web.HTTPException) -> OrcaError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method {exc.method} not allowed", {"allow": sorted(exc.allowed_methods)})
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body too large")
    err = OrcaError(exc.reason or "error")
    err.status = exc.status
    err.code = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 403: "FORBIDDEN"}.get(exc.status, "INTERNAL")
    return err


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: every rate-limited response (errors included) carries the figures.

    They describe one bucket, as Orchestry documents them: `Limit` is its size (the burst), `Remaining` the
    requests left in it, `Reset` the time (epoch seconds) it is full again. The sustained rate (per minute)
    is in `X-RateLimit-Rate`.
    """
    decision: Decision | None = request.get("ratelimit")
    if decision is not None:
        response.headers["X-RateLimit-Limit"] = str(decision.capacity or decision.limit)
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
        response.headers["X-RateLimit-Reset"] = str(int(time.time() + decision.reset_s + 0.999))
        response.headers["X-RateLimit-Rate"] = f"{decision.limit}/min"


def make_middlewares(checker: TokenChecker, metrics: MasterMetrics, max_body_bytes: int,
                     limiter: RateLimiter | None = None) -> list[Any]:
    """One middleware doing, outermost first, what were three: metrics -> errors -> auth.

    One coroutine and one route lookup per request instead of three and two (py-spy under a write load:
    the layers' own cost was a few percent of the leader's GIL time; the checks themselves remain); the
    order of the checks and every answer are those of the three layers.
    """
    # (route, method, status) -> the two labelled children: `labels()` validates and locks on every call
    # (3% of the leader's loop time under load). Bounded: methods come from clients.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def authorize(request: web.Request, key: tuple[str, str]) -> None:
        """The access policy, the body limit, the token and the rate limit of a routed request."""
        need = POLICY.get(key)
        if need is None:
            raise Forbidden("route is not in the access policy", {"route": key[1]})
        length = request.content_length
        if length is not None and length > max_body_bytes:
            raise PayloadTooLarge("request body too large", {"max_bytes": max_body_bytes})
        if need not in (PUBLIC, HMAC, JOIN):
            header = request.headers.get("Authorization")
            if header is None and key[1].endswith("/stream") and "access_token" in request.query:
                header = f"Bearer {request.query['access_token']}"  # browsers cannot set WebSocket headers
            claims = checker.check(header)
            if not auth.role_satisfies(claims.role, need):
                raise Forbidden(f"role {claims.role!r} may not do this; needs {need!r}",
                                {"role": claims.role, "required": need})
            request["claims"] = claims
            if limiter is not None and claims.role != "agent":  # agents are exempt
                decision = limiter.check(request.remote or "-", claims.jti)
                request["ratelimit"] = decision
                if not decision.allowed:
                    raise RateLimited(f"rate limit of {decision.limit} requests per minute exceeded",
                                      decision.retry_after_s, {"limit": decision.limit})

    @web.middleware
    async def api_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        key = _route_key(request)
        route = key[1] if key else "unmatched"
        status = 500
        try:
            # errors: every OrcaError and HTTP error becomes the envelope, auth's 401/403 among them
            try:
                if key is not None:  # unknown path or method: let the router's 404/405 through (no auth)
                    authorize(request, key)
                response = await handler(request)
            except OrcaError as err:
                response = error_response(err, request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = error_response(_http_exception_to_error(exc), request)
            except Exception:  # noqa: BLE001 - no traceback ever reaches a client
                log.exception("unhandled error on %s %s", request.method, request.path)
                response = error_response(OrcaError("internal error"), request)
            status = response.status
            return response
        finally:
            labelled = children.get((route, request.method, status))
            if labelled is None:
                labelled = (metrics.api_requests.labels(route, request.method, str(status)),
                            metrics.api_latency.labels(route, request.method))
                if len(children) < _METRIC_CHILDREN_MAX:
                    children[(route, request.method, status)] = labelled
            labelled[0].inc()
            # a blocking query's time is its wait, not the master's work (no query string: none to parse)
            if not request.query_string or not request.query.get("index"):
                labelled[1].observe(time.perf_counter() - start)

    return [api_mw]


class _EnvelopeRequestHandler(RequestHandler):
    """aiohttp answers a request its HTTP parser refuses (a request line or a header over 8 KiB, a bad
    method or version) by itself, in plain text, before any middleware runs: give that answer the
    envelope too, so that every 4xx of the API has it."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            plain = super().handle_error(request, status, exc, message)  # logs; raises if output was sent
            if status >= 500:
                response = error_response(OrcaError("internal error"))
                response.force_close()
                return response
            return plain
        log.info("refused a malformed HTTP request from %s: HTTP %s", request.remote, status)
        err = OrcaError("malformed HTTP request (request line or a header too long, or not HTTP/1.x)",
                        code={413: "PAYLOAD_TOO_LARGE"}.get(status, "VALIDATION_ERROR"))
        err.status = status
        response = error_response(err)
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer even HTTP parser errors with the envelope."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _EnvelopeServer(server.request_handler, request_factory=server.request_factory,
                               handler_cancellation=server.handler_cancellation, loop=server._loop,
                               **server._kwargs)
