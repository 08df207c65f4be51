"""Traffic endpoints: per-service metrics, the scaling policy, and live WebSocket streams.

Metrics live in the leader's memory (`TrafficBook`): a follower asked for them fetches them from the
leader and answers itself, so any master serves them. Streams are served by any master: events from its
own applied state, logs straight from the agents, metrics polled from the leader. A stream needs a
viewer token, in the `Authorization` header or, for browsers (which cannot set headers on a WebSocket),
in `?access_token=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from orca import bounds, spec
from orca.errors import NotReady, OrcaError, ServiceNotFound
from orca.master import views
from orca.master.api_workers import log_lines, log_params
from orca.master.http import json_response, read_json
from orca.master.tls_manager import peer_ssl
from orca.master.traffic import TrafficBook

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["TrafficEndpoints"]


class TrafficEndpoints:
    def __init__(self, api: MasterApi, traffic: TrafficBook, decisions: dict[str, dict[str, Any]]) -> None:
        self.api = api
        self.traffic = traffic
        self.decisions = decisions

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/services/{name}/metrics", self.metrics)
        r.add_get("/api/v1/services/{name}/scaling", self.get_scaling)
        r.add_put("/api/v1/services/{name}/scaling", self.put_scaling)
        r.add_get("/api/v1/services/{name}/logs/stream", self.logs_stream)
        r.add_get("/api/v1/services/{name}/metrics/stream", self.metrics_stream)
        r.add_get("/api/v1/events/stream", self.events_stream)

    # --- metrics ----------------------------------------------------------------------------------
    def _service_exists(self, name: str) -> None:
        if not self.api.raft.read(lambda s: name in s["services"]):
            raise ServiceNotFound(f"service not found: {name}", {"service": name})

    def metrics_body(self, name: str, history: int) -> dict[str, Any]:
        current = self.traffic.current(name)
        return {"service": name, "current": current.as_dict() if current else None,
                "history": [s.as_dict() for s in self.traffic.history(name, history)],
                "autoscaler": self.decisions.get(name), "source": self.api.info.node_id}

    async def metrics(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._service_exists(name)
        history = bounds.query_int(request.query.get("history"), "history", 0, 0, 1800)
        if self.api.raft.is_leader:
            return json_response(self.metrics_body(name, history))
        return json_response(await self._from_leader(request, request.raw_path))

    async def _from_leader(self, request: web.Request, path_qs: str) -> dict[str, Any]:
        leader = self.api.leader_url()
        if leader is None:
            raise NotReady("no leader is known; metrics are aggregated by the leader")
        auth = request.headers.get("Authorization") or (  # a browser's stream carries it in ?access_token=
            f"Bearer {request.query['access_token']}" if "access_token" in request.query else "")
        headers = {"Authorization": auth}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                    session.get(leader + path_qs, headers=headers, ssl=peer_ssl()) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise OrcaError(body.get("error", "leader error"), body.get("details"),
                                    code=body.get("code", "INTERNAL"))
                return dict(body)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise NotReady(f"could not reach the leader {leader} for metrics") from None

    # --- scaling ----------------------------------------------------------------------------------
    async def get_scaling(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def body(state: dict[str, Any]) -> dict[str, Any]:
            svc = state["services"].get(name)
            if svc is None:
                raise ServiceNotFound(f"service not found: {name}", {"service": name})
            return {"name": name, "replicas": svc["replicas"], "scaling": svc["spec"].get("scaling")}
        return await self.api.read(request, body)

    async def put_scaling(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        # The policy itself, or {"scaling": policy}; {"scaling": null} removes it.
        raw = body["scaling"] if set(body) == {"scaling"} else body
        scaling = None if raw is None else spec.validate_scaling(raw)
        return json_response(await self.api.write(request, "set_scaling", {"name": request.match_info["name"],
                                                                          "scaling": scaling}))

    # --- streams ----------------------------------------------------------------------------------
    async def _open(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        return ws

    async def events_stream(self, request: web.Request) -> web.WebSocketResponse:
        """Every new event as one JSON message; `?since=SEQ` replays from a cursor first."""
        service, type_ = request.query.get("service") or None, request.query.get("type") or None
        since = bounds.query_int(request.query.get("since"), "since", -1, 0, bounds.MAX_INT)
        last = since if since >= 0 else self.api.raft.read(lambda s: s["event_seq"])
        ws = await self._open(request)
        reader = asyncio.create_task(_drain_incoming(ws))
        try:
            while not ws.closed and not reader.done():
                events = self.api.raft.read(functools.partial(
                    views.events_query, service=service, type_=type_, since_seq=last, since_time=None, limit=500))
                for event in events:
                    # `app_name`: Orchestry's name for the service (its event stream clients read it)
                    await ws.send_str(json.dumps({**event, "app_name": event.get("service")}, default=str))
                    last = max(last, int(event["seq"]))
                await asyncio.sleep(0.2)
        finally:
            reader.cancel()
            await ws.close()
        return ws

    async def logs_stream(self, request: web.Request) -> web.WebSocketResponse:
        name = request.match_info["name"]
        self._service_exists(name)
        tail, _ = log_params(request)
        ws = await self._open(request)
        reader = asyncio.create_task(_drain_incoming(ws))
        lines = log_lines(self.api.raft, name, tail, follow=True)
        try:
            async for line in lines:
                if ws.closed or reader.done():
                    break
                await ws.send_str(line.decode(errors="replace").rstrip("\n"))
        except (ConnectionResetError, OrcaError):
            pass
        finally:
            reader.cancel()
            await lines.aclose()
            await ws.close()
        return ws

    async def metrics_stream(self, request: web.Request) -> web.WebSocketResponse:
        """The service's current metrics every sample interval (one JSON message each)."""
        name = request.match_info["name"]
        self._service_exists(name)
        ws = await self._open(request)
        reader = asyncio.create_task(_drain_incoming(ws))
        last_at = None
        try:
            while not ws.closed and not reader.done():
                try:
                    body = self.metrics_body(name, 0) if self.api.raft.is_leader else \
                        await self._from_leader(request, f"/api/v1/services/{name}/metrics")
                except OrcaError as err:
                    body = {"service": name, "error": err.message}
                current = body.get("current") or {}
                if current.get("at") != last_at or "error" in body:
                    last_at = current.get("at")
                    await ws.send_str(json.dumps({**body, "sent_at": time.time()}))
                await asyncio.sleep(0.5)
        finally:
            reader.cancel()
            await ws.close()
        return ws


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) client messages so close frames and pings are handled; ends when the client goes."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass
