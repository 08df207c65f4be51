"""Porter's public status endpoints, `GET /api/v2/status/{infra,apps,datastores}`: ComponentHealth of
three named groups of this master's components (orca.master.status_groups says which).

Public like Porter's (an uptime monitor holds no credential) and like orca's own `/api/v1/status/*`: the
figures are counts and one sentence, never names of services, secrets or tokens. Always 200 with the
body, as the document says, whatever the status; an unknown subsystem is a 404 envelope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from orca.errors import NotFound
from orca.master import status_groups
from orca.master.http import json_response

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["PorterStatus"]


class PorterStatus:
    def __init__(self, api: MasterApi) -> None:
        self.api = api

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v2/status/{subsystem}", self.status)

    async def status(self, request: web.Request) -> web.Response:
        group = request.match_info["subsystem"]
        if group not in status_groups.GROUPS:
            raise NotFound(f"unknown subsystem {group!r}; known: {', '.join(status_groups.GROUPS)}",
                           {"subsystem": group})
        body = status_groups.porter_group(group, self.api._components(), self.api.raft.leader_id)
        return json_response(body)
