"""Master endpoints about volumes (the lifecycle is in `orca.volumes`).

  GET    /api/v1/volumes[?node=ID]           every node's orca volumes, asked of the agents now, each row with
                                             its binding state from Raft ("bound" to a slot, or "unbound")
  DELETE /api/v1/volumes/{node}/{service}    ?slot=N&gen=G: remove a stopped service's volumes on a node
                                             (all its bound slots there, or the one slot/gen named); the
                                             node's agent removes them once no container mounts them
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from orca import bounds
from orca.errors import Invalid, NodeNotFound
from orca.master.http import json_response

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["VolumeEndpoints"]

_MAX_ROWS = 4096  # per node, as the agent caps its own answer


class VolumeEndpoints:
    def __init__(self, api: MasterApi) -> None:
        self.api = api

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/volumes", self.list)
        app.router.add_delete("/api/v1/volumes/{node}/{service}", self.remove)

    async def list(self, request: web.Request) -> web.Response:
        only = request.query.get("node")
        def targets(state: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[tuple[str, int, int], str]]:
            nodes = [{"id": n["id"], "address": n["address"], "push_token": n["push_token"], "status": n["status"]}
                     for n in sorted(state["nodes"].values(), key=lambda n: n["id"]) if only in (None, n["id"])]
            bound = {(name, int(slot), int(b["gen"])): b["node"] for name, svc in state["services"].items()
                     for slot, b in (svc.get("volumes") or {}).items()}
            return nodes, bound
        nodes, bound = self.api.raft.read(targets)
        if only is not None and not nodes:
            raise NodeNotFound(f"node {only!r} not found", {"node": only})
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            answers = await asyncio.gather(*(self._ask(session, n) for n in nodes))
        rows, errors = [], []
        for node, (vols, error) in zip(nodes, answers, strict=True):
            if error is not None:
                errors.append({"node": node["id"], "error": error})
            for v in vols:
                key = (v.get("service"), v.get("slot"), v.get("gen"))
                rows.append({**v, "node": node["id"], "bound": bound.get(key) == node["id"]})  # type: ignore[arg-type]
        return json_response({"volumes": rows, "errors": errors})

    async def _ask(self, session: aiohttp.ClientSession,
                   node: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        if node["status"] == "down":
            return [], "node is down"
        try:
            async with session.get(node["address"] + "/v1/volumes",
                                   headers={"Authorization": f"Bearer {node['push_token']}"}) as resp:
                if resp.status != 200:
                    return [], f"HTTP {resp.status}"
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            return [], type(err).__name__
        vols = body.get("volumes") if isinstance(body, dict) else None
        if not isinstance(vols, list):
            return [], "malformed answer"
        out = []
        for v in vols[:_MAX_ROWS]:
            if isinstance(v, dict):
                out.append({k: v.get(k) if isinstance(v.get(k), str | int | None) and not isinstance(v.get(k), bool)
                            and len(str(v.get(k))) <= 512 else None
                            for k in ("name", "service", "slot", "gen", "volume", "created_at")})
        return out, None

    async def remove(self, request: web.Request) -> web.Response:
        args: dict[str, Any] = {"node": request.match_info["node"], "service": request.match_info["service"]}
        for field in ("slot", "gen"):
            raw = request.query.get(field)
            if raw is not None:
                args[field] = bounds.query_int(raw, field, 0, 0, 2**53)
        unknown = set(request.query) - {"slot", "gen"}
        if unknown:
            raise Invalid(f"unknown query parameter {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        return json_response(await self.api.write(request, "volume_remove", args))
