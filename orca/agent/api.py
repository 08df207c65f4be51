"""The agent's two HTTP surfaces (aiohttp).

Agent API on `listen`, for the leader (bearer: the node's push token, except `/v1/health`):
  PUT /v1/allocations          the node's full desired set, fenced by term (orca.protocol)
  GET /v1/logs/{alloc_id}      ?tail=N&follow=0|1&timestamps=0|1, text/plain stream of the container's output
  GET /v1/health               {"status": "ok", "node_id"}
  GET /v1/volumes              {"node_id", "volumes": [{name, service, slot, gen, volume, created_at}]}
  GET /metrics                 Prometheus text (orca.agent.metrics); public unless agent.metrics_require_token

Status API on `status_listen` (loopback only, no auth): POST /healthz, POST /status.

Errors use the same JSON envelope as the masters: {"error", "code", "details", "timestamp"}.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

from aiohttp import web

from orca import bounds, tls
from orca.agent.agent import Agent
from orca.agent.metrics import TokenVerdicts
from orca.agent.runtime import RuntimeFailure
from orca.errors import Forbidden, Invalid, MethodNotAllowed, NotFound, NotReady, OrcaError, Unauthorized
from orca.master.http import read_json
from orca.metrics import CONTENT_TYPE
from orca.protocol import ProtocolError, validate_push

__all__ = ["make_agent_api", "make_status_api", "error_response", "MAX_PUSH_BYTES"]

log = logging.getLogger("orca.agent.api")

# A push carries the node's full set; thousands of allocations must still fit.
MAX_PUSH_BYTES = 16 * 2**20
# How often a silent `follow` stream checks that its client is still there.
_DISCONNECT_POLL_S = 1.0
_LOG_QUEUE = 256
_MAX_TAIL = 100_000  # lines of a container's log one request may ask for
_MAX_VOLUMES_LISTED = 4096  # volumes one listing returns

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AGENT_KEY = web.AppKey("agent", Agent)
VERDICTS_KEY = web.AppKey("verdicts", TokenVerdicts)
_MAX_BEARER = 4096  # far above any token orca mints (~250 bytes); longer: refused without asking a master


def error_response(err: OrcaError) -> web.Response:
    body = {"error": err.message, "code": err.code, "details": err.details,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    headers = {}
    if isinstance(err, MethodNotAllowed) and err.details and "allow" in err.details:
        headers["Allow"] = ", ".join(err.details["allow"])
    return web.json_response(body, status=err.status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OrcaError as err:
        return error_response(err)
    except web.HTTPMethodNotAllowed as exc:
        return error_response(MethodNotAllowed(f"method {request.method} not allowed",
                                               {"allow": sorted(exc.allowed_methods)}))
    except web.HTTPNotFound:
        return error_response(NotFound(f"no such endpoint: {request.path}"))


def _agent(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]


def _authorize(request: web.Request) -> None:
    """The push token, and over TLS a client certificate of a master of this cluster (the TLS layer
    already checked any certificate against the cluster CA; none, or a node's, is not enough)."""
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is not None:
        ident = tls.identity_of(sslobj.getpeercert(binary_form=True))
        if ident is None or ident.role != "master":
            raise Forbidden("only a master of this cluster may call the agent API")
    if not _agent(request).store.check_token(request.headers.get("Authorization")):
        raise Unauthorized("missing or wrong bearer token")


# -- agent API ---------------------------------------------------------------------------------------


async def put_allocations(request: web.Request) -> web.Response:
    agent = _agent(request)
    outcome = "unauthorized"
    try:
        _authorize(request)
        outcome = "invalid"
        try:
            push = validate_push(await read_json(request, MAX_PUSH_BYTES))
        except ProtocolError as exc:
            raise Invalid(str(exc), {"field": exc.field}) from None
        outcome = "refused"
        result = agent.accept_push(push)
        outcome = "accepted" if result["accepted"] else "ignored"
        return web.json_response(result)
    finally:
        agent.metrics.push(outcome)


async def get_metrics(request: web.Request) -> web.Response:
    """The agent's series (orca.agent.metrics): public unless `agent.metrics_require_token`, then a bearer
    token of role viewer or above, as on the masters (a master says whether the token is good)."""
    agent = _agent(request)
    if getattr(agent.config, "metrics_require_token", False):
        await _require_viewer(request, agent)
    return web.Response(body=agent.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _require_viewer(request: web.Request, agent: Agent) -> None:
    header = request.headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token: send a token of role viewer or above (orca token create "
                           "--role viewer)")
    if len(token) > _MAX_BEARER:
        raise Unauthorized("invalid bearer token")
    verdicts = request.app[VERDICTS_KEY]
    status = verdicts.get(token)
    if status is None:
        async with verdicts.lock:  # one verification at a time; a waiter may find the answer cached
            status = verdicts.get(token)
            if status is None:
                status = await agent.link.bearer_status(token)
                if status is not None:
                    verdicts.put(token, status)
    if status is None:
        raise NotReady("no master could check the bearer token; try again")
    if status == 401:
        raise Unauthorized("invalid bearer token")
    if status == 403:
        raise Forbidden("this token may not read metrics; needs role viewer or above", {"required": "viewer"})


def _query_int(request: web.Request, name: str, default: int) -> int:
    return bounds.query_int(request.query.get(name), name, default, 0, _MAX_TAIL)


async def get_logs(request: web.Request) -> web.StreamResponse:
    _authorize(request)
    alloc_id = request.match_info["alloc_id"]
    tail = _query_int(request, "tail", 100)
    follow = request.query.get("follow", "0").lower() in ("1", "true", "yes")
    timestamps = request.query.get("timestamps", "0").lower() in ("1", "true", "yes")
    runtime = _agent(request).runtime
    try:
        # The lookup happens here, so a missing container is a 404 and not an empty stream.
        lines = await asyncio.to_thread(runtime.logs, alloc_id, tail, follow, timestamps)
    except RuntimeFailure as exc:
        raise NotFound(exc.reason, {"alloc": alloc_id}) from None

    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(_LOG_QUEUE)
    stop = threading.Event()
    # Its own thread, not the default executor: a `follow` stream blocks until the container writes,
    # and must not take a worker the reconciler needs.
    threading.Thread(target=_pump, args=(lines, queue, loop, stop), name=f"logs-{alloc_id}", daemon=True).start()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), _DISCONNECT_POLL_S)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            if chunk is None:
                break
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("log reader of %s went away", alloc_id)
    finally:
        stop.set()
    return resp


def _pump(lines: Iterator[bytes], queue: asyncio.Queue[bytes | None], loop: asyncio.AbstractEventLoop,
          stop: threading.Event) -> None:
    """Feed the blocking log iterator into the handler's queue until it ends or the reader is gone."""
    try:
        for chunk in lines:
            fut = asyncio.run_coroutine_threadsafe(queue.put(chunk), loop)
            while True:
                try:
                    fut.result(timeout=_DISCONNECT_POLL_S)
                    break
                except concurrent.futures.TimeoutError:
                    if stop.is_set():
                        fut.cancel()
                        return
            if stop.is_set():
                return
    except Exception as exc:  # the engine went away mid-stream: end the stream, the reader sees EOF
        log.debug("log stream ended: %s", exc)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(_put_eof, queue)
        close = getattr(lines, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def _put_eof(queue: asyncio.Queue[bytes | None]) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(None)


async def get_volumes(request: web.Request) -> web.Response:
    """This node's orca volumes (orca.volumes), for `orca volumes ls` through a master."""
    _authorize(request)
    try:
        found = await asyncio.to_thread(_agent(request).runtime.volumes)
    except RuntimeFailure as exc:
        raise OrcaError(exc.reason) from None
    return web.json_response({"node_id": _agent(request).node_id, "volumes": found[:_MAX_VOLUMES_LISTED]})


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node_id": _agent(request).node_id})


def make_agent_api(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_PUSH_BYTES)
    app[AGENT_KEY] = agent
    app.router.add_put("/v1/allocations", put_allocations)
    app.router.add_get("/v1/logs/{alloc_id}", get_logs)
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/volumes", get_volumes)
    app.router.add_get("/metrics", get_metrics)
    app[VERDICTS_KEY] = TokenVerdicts()
    return app


# -- status API --------------------------------------------------------------------------------------


def _post_only(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise MethodNotAllowed(f"method {request.method} not allowed", {"allow": ["POST"]})
        return await handler(request)
    return wrapped


async def post_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def post_status(request: web.Request) -> web.Response:
    return web.json_response(_agent(request).node_report())


def make_status_api(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[AGENT_KEY] = agent
    app.router.add_route("*", "/healthz", _post_only(post_healthz))
    app.router.add_route("*", "/status", _post_only(post_status))
    return app
