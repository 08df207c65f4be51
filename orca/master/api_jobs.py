"""Master endpoint for jobs (orca.jobs): `POST /api/v1/services/{name}/run` starts a new run of a job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from orca.master.http import json_response

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["JobEndpoints"]


class JobEndpoints:
    def __init__(self, api: MasterApi) -> None:
        self.api = api

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/services/{name}/run", self.run)

    async def run(self, request: web.Request) -> web.Response:
        return json_response(await self.api.write(request, "job_run", {"name": request.match_info["name"]}))
