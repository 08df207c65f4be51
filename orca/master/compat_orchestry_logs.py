"""Orchestry's logs and live streams of one app: `GET /api/v1/apps/{app}/logs` (JSON lines with
`total_lines` and `has_more`) and the WebSockets `/api/v1/apps/{app}/logs/stream` and `/metrics/stream`.

Lines come straight from the agents (as for `orca logs`), asked with Docker's timestamps so that each
line has its time and `since` can filter on it. `total_lines` counts the lines the agents returned for
this request: each replica is asked for `tail + 1` lines, so `has_more` is true exactly when a replica
had more than was shown (or lines were cut to `tail` overall). The full length of a container's log is
not known to orca, and is not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from orca import bounds
from orca.errors import Invalid, OrcaError
from orca.master import compat_orchestry_model as model
from orca.master import views
from orca.master.api_workers import fan_in
from orca.master.compat_orchestry import _metric_fields, _service, orchestry_errors
from orca.master.http import json_response
from orca.master.tls_manager import peer_ssl

if TYPE_CHECKING:
    from orca.master.api import MasterApi
    from orca.master.compat_orchestry import OrchestryApps

__all__ = ["OrchestryLogs", "app_log_lines"]

MAX_TAIL = 10000
_QUEUE = 1000


async def app_log_lines(raft: Any, name: str, tail: int, follow: bool,
                        container: str | None = None) -> AsyncIterator[tuple[str, str]]:
    """(container name, line) of every current replica of `name`, fetched from the agents concurrently."""
    def targets(state: dict[str, Any]) -> list[dict[str, Any]]:
        _service(state, name)
        out = []
        allocs = sorted((a for a in state["allocations"].values()
                         if a.get("service") == name and a.get("desired") in ("run", "migrate")),
                        key=lambda a: (a.get("index", 0), a["id"]))
        for i, alloc in enumerate(allocs):
            node = state["nodes"].get(alloc["node"])
            index = alloc.get("index")
            label = f"{name}-{(index if isinstance(index, int) else i) + 1}"
            if node is not None and (container is None or container == label):
                out.append({"alloc": alloc["id"], "label": label, "address": node["address"],
                            "push_token": node["push_token"]})
        return out
    allocs = raft.read(targets)
    queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=_QUEUE)
    timeout = aiohttp.ClientTimeout(total=None if follow else 15, sock_connect=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def pump(t: dict[str, Any]) -> None:
            url = f"{t['address']}/v1/logs/{t['alloc']}?tail={tail}&follow={int(follow)}&timestamps=1"
            try:
                async with session.get(url, headers={"Authorization": f"Bearer {t['push_token']}"},
                                       ssl=peer_ssl()) as r:
                    if r.status != 200:
                        await queue.put((t["label"], f"(logs unavailable: HTTP {r.status})"))
                        return
                    async for line in r.content:
                        await queue.put((t["label"], line.decode(errors="replace").rstrip("\n")))
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                await queue.put((t["label"], f"(logs unavailable: {type(err).__name__})"))
            finally:
                await queue.put(None)
        async for item in fan_in(queue, [pump(t) for t in allocs]):
            yield item


def _after(entry: dict[str, Any], since: float | None) -> bool:
    """Lines without a time are kept: orca cannot tell when they were written."""
    if since is None or entry["timestamp"] is None:
        return True
    return model.parse_since(entry["timestamp"], 0.0) >= since


class OrchestryLogs:
    def __init__(self, api: MasterApi, apps: OrchestryApps) -> None:
        self.api = api
        self.apps = apps

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/apps/{app}/logs", self.logs)
        r.add_get("/api/v1/apps/{app}/logs/stream", self.logs_stream)
        r.add_get("/api/v1/apps/{app}/metrics/stream", self.metrics_stream)

    def _params(self, request: web.Request) -> tuple[int, str | None, float | None]:
        q = request.query
        tail = bounds.query_int(q.get("tail"), "tail", 100, 0, MAX_TAIL)
        container = q.get("container") or None
        if container is not None and len(container) > 128:
            raise Invalid("container: at most 128 characters", {"field": "container"})
        since = model.parse_since(q["since"], time.time()) if q.get("since") else None
        return tail, container, since

    @orchestry_errors
    async def logs(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["app"]
        follow = request.query.get("follow", "").lower() in ("1", "true", "yes")
        if follow and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.logs_stream(request)
        tail, container, since = self._params(request)
        self.api.raft.read(lambda s: _service(s, name))
        entries: list[dict[str, Any]] = []
        lines = app_log_lines(self.api.raft, name, tail + 1, False, container)
        try:
            async for label, line in lines:
                if len(entries) < (tail + 1) * 64:  # bounded whatever the agents send
                    entries.append(model.log_entry(line, label))
        finally:
            await lines.aclose()
        fetched = len(entries)
        entries = [e for e in entries if _after(e, since)]
        entries.sort(key=lambda e: e["timestamp"] or "", reverse=True)  # newest first, as documented
        counts: dict[str, int] = {}
        for e in entries:
            counts[e["container"]] = counts.get(e["container"], 0) + 1
        shown = entries[:tail]
        more = len(entries) > tail or any(n > tail for n in counts.values())
        return json_response({"app_name": name, "logs": shown, "total_lines": fetched, "has_more": more})

    async def _open(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        return ws

    @orchestry_errors
    async def logs_stream(self, request: web.Request) -> web.WebSocketResponse:
        """Each new line as one JSON message `{timestamp, container, level, message}`."""
        name = request.match_info["app"]
        tail, container, since = self._params(request)
        self.api.raft.read(lambda s: _service(s, name))
        ws = await self._open(request)
        reader = asyncio.create_task(_drain(ws))
        lines = app_log_lines(self.api.raft, name, tail, True, container)
        try:
            async for label, line in lines:
                if ws.closed or reader.done():
                    break
                entry = model.log_entry(line, label)
                if _after(entry, since):
                    await ws.send_str(json.dumps(entry))
        except (ConnectionResetError, OrcaError):
            pass
        finally:
            reader.cancel()
            await lines.aclose()
            await ws.close()
        return ws

    @orchestry_errors
    async def metrics_stream(self, request: web.Request) -> web.WebSocketResponse:
        """The app's current metrics as one JSON message per new sample (Orchestry's field names)."""
        name = request.match_info["app"]
        self.api.raft.read(lambda s: _service(s, name))
        ws = await self._open(request)
        reader = asyncio.create_task(_drain(ws))
        last_at: Any = object()
        try:
            while not ws.closed and not reader.done():
                body = await self.apps._metrics(request, name, 0)
                current = body.get("current") or {}
                if current.get("at") != last_at:
                    last_at = current.get("at")
                    await ws.send_str(json.dumps({"app_name": name,
                                                  "timestamp": views.iso(current.get("at") or time.time()),
                                                  **_metric_fields(current)}))
                await asyncio.sleep(0.5)
        finally:
            reader.cancel()
            await ws.close()
        return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass
