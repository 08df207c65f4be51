"""Master endpoints for secrets (admin only): set with project grants, change grants, list, delete.

Values are sealed here, on the proposer (`SecretBox`), so the Raft log holds ciphertext only; no answer,
event or log line ever carries a value. Who may *reference* a secret in a spec is decided by
`orca.secret_scopes` when the spec is written.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca import secret_scopes
from orca.errors import Invalid
from orca.master import views
from orca.master.http import json_response, read_json
from orca.master.secrets import SecretBox

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["SecretEndpoints", "SECRET_KEY_RE", "SECRET_VALUE_MAX"]

SECRET_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SECRET_VALUE_MAX = 64 * 1024


class SecretEndpoints:
    def __init__(self, api: MasterApi, box: SecretBox) -> None:
        self.api = api
        self.box = box

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/secrets", self.list)
        r.add_post("/api/v1/secrets", self.set)
        r.add_put("/api/v1/secrets/{key}/grants", self.set_grants)
        r.add_delete("/api/v1/secrets/{key}", self.delete)

    async def list(self, request: web.Request) -> web.Response:
        def body(state: dict[str, Any]) -> dict[str, Any]:
            return {"secrets": [
                {"key": k, "created_at": views.iso(v["created_at"]), "updated_at": views.iso(v["updated_at"]),
                 "grants": secret_scopes.grants_of(v)}
                for k, v in sorted(state["secrets"].items())]}
        return await self.api.read(request, body)

    async def set(self, request: web.Request) -> web.Response:
        """`{"key", "value", "grants"?}`: without grants a new secret is admin-only and an existing one
        keeps its grants (a value rotation)."""
        self.api._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"key", "value", "grants"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        key, value = body.get("key"), body.get("value")
        if not isinstance(key, str) or not SECRET_KEY_RE.match(key):
            raise Invalid("key: expected letters, digits and '_' (not starting with a digit), at most 128",
                          {"field": "key"})
        if not isinstance(value, str) or len(value) > SECRET_VALUE_MAX:
            raise Invalid("value: expected a string of at most 64 KiB", {"field": "value"})
        args: dict[str, Any] = {"key": key, "ciphertext": self.box.seal(value)}
        if body.get("grants") is not None:
            args["grants"] = secret_scopes.parse_grants(body["grants"])
        result = await self.api.write(request, "set_secret", args)
        grants = result.get("grants") or secret_scopes.NO_GRANTS
        return json_response({"key": key, "created": result["created"], "grants": grants},
                             status=201 if result["created"] else 200)

    async def set_grants(self, request: web.Request) -> web.Response:
        """`{"all_projects": bool, "projects": [...]}` replaces the grants; `{}` makes the secret admin-only."""
        self.api._require_leader()
        grants = secret_scopes.parse_grants(await read_json(request))
        result = await self.api.write(request, "set_secret_grants", {"key": request.match_info["key"],
                                                                     "grants": grants})
        return json_response({"key": result["key"], "grants": result["grants"]})

    async def delete(self, request: web.Request) -> web.Response:
        result = await self.api.write(request, "delete_secret", {"key": request.match_info["key"]})
        return json_response({"key": result["key"], "deleted": True})
