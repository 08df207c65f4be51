"""Backup and restore endpoints (admin only; the leader serves them, followers redirect).

    GET  /api/v1/snapshot                     the snapshot file (application/octet-stream)
    POST /api/v1/snapshot/restore             {"header", "force"} -> {"restore_id", "chunks", "chunk_bytes"}
    PUT  /api/v1/snapshot/restore/{id}/{n}    one chunk of the body (octet-stream, at most chunk_bytes)
    POST /api/v1/snapshot/restore/{id}/commit -> {"restored": true, "index", "term", "counts"}

A save is consistent: the leader commits a barrier first (so every write acknowledged before the request
is in), then packs the state under the state lock, at one applied index; compression runs outside the
lock, in a worker thread. A restore is the replicated ops of `orca.state.ops_restore`; once committed,
the leader restarts its leader work on the new state (`Leadership.restart`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import web

from orca import __version__, snapshot
from orca.errors import Invalid, PayloadTooLarge
from orca.master.http import json_response, read_json
from orca.state import ops_restore, schema

__all__ = ["SnapshotEndpoints", "ROUTES"]

ROUTES = {  # the same entries are in orca.master.http.POLICY (a test keeps them equal)
    ("GET", "/api/v1/snapshot"): "admin",
    ("POST", "/api/v1/snapshot/restore"): "admin",
    ("PUT", "/api/v1/snapshot/restore/{id}/{n}"): "admin",
    ("POST", "/api/v1/snapshot/restore/{id}/commit"): "admin",
}


class SnapshotEndpoints:
    def __init__(self, api: Any) -> None:
        self.api = api  # MasterApi: raft, leadership, write(), _require_leader()

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/snapshot", self.save)
        r.add_post("/api/v1/snapshot/restore", self.begin)
        r.add_put("/api/v1/snapshot/restore/{id}/{n}", self.chunk)
        r.add_post("/api/v1/snapshot/restore/{id}/commit", self.commit)

    async def save(self, request: web.Request) -> web.Response:
        api = self.api
        api._require_leader()
        await api.raft.barrier()
        raft = api.raft

        def pack(state: dict[str, Any]) -> tuple[bytes, int, dict[str, int]]:
            return snapshot.pack_state(state), raft.applied_index, snapshot.counts(state)
        raw, index, counts = raft.read(pack)
        data = await asyncio.get_running_loop().run_in_executor(None, lambda: snapshot.build(
            raw, index=index, term=raft.term, schema_version=schema.SCHEMA_VERSION, created_at=time.time(),
            orca_version=__version__, leader=raft.settings.node_id, table_counts=counts))
        name = f"orca-snapshot-{index}.snap"
        return web.Response(body=data, content_type="application/octet-stream",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def begin(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"header", "force"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        try:
            header = snapshot.check_header(body.get("header"))
        except snapshot.SnapshotError as exc:
            raise Invalid(str(exc), {"field": "header"}) from None
        if header["schema_version"] > schema.SCHEMA_VERSION:
            raise Invalid(f"a snapshot of schema version {header['schema_version']}; this master knows up to "
                          f"{schema.SCHEMA_VERSION}: upgrade the masters first", {"field": "header"})
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise Invalid("force: expected true or false", {"field": "force"})
        # Each chunk is one request: within this master's body limit (with room for the headers).
        chunk_bytes = max(ops_restore.CHUNK_MIN, min(ops_restore.CHUNK_MAX, self.api.info.max_body_bytes - 4096))
        result = await self.api.write(request, "restore_begin", {"id": uuid.uuid4().hex, "header": header,
                                                                 "force": force, "chunk_bytes": chunk_bytes})
        return json_response(result, status=201)

    async def chunk(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        n = request.match_info["n"]
        if not (n.isascii() and n.isdigit()) or len(n) > 9:  # "³".isdigit() is True, int("³") raises
            raise Invalid("chunk number: expected a non-negative integer", {"field": "n"})
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise PayloadTooLarge("chunk too large", {"max_bytes": exc.max_size}) from None
        result = await self.api.write(request, "restore_chunk", {"id": request.match_info["id"], "n": int(n),
                                                                 "data": data})
        return json_response(result)

    async def commit(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        result = await self.api.write(request, "restore_commit", {"id": request.match_info["id"]})
        if not result.get("replayed"):
            self.api.leadership.restart()
        return json_response(result)
