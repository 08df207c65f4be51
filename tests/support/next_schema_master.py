"""`python tests/support/next_schema_master.py server --config FILE`: an `orca server` of the *next* schema
version, for the rolling-upgrade tests. It knows one more op (`annotate`, written as version N+1) and
serves two extra admin routes: `POST /api/v1/x-annotate {"key", "value"}` and `GET /api/v1/x-annotations`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp import web  # noqa: E402

from orca.master import api as api_module  # noqa: E402
from orca.master import http  # noqa: E402
from orca.state import machine, schema  # noqa: E402
from orca.state.core import Ctx, State, record_event  # noqa: E402


def annotate(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    state.setdefault("annotations", {})[str(args["key"])] = str(args["value"])
    record_event(state, ctx, "annotated", f"{args['key']} annotated")
    return {"key": args["key"]}


def install() -> None:
    schema.SCHEMA_VERSION += 1
    schema.OP_VERSIONS["annotate"] = schema.SCHEMA_VERSION
    machine.OPS["annotate"] = annotate
    http.POLICY[("POST", "/api/v1/x-annotate")] = "admin"
    http.POLICY[("GET", "/api/v1/x-annotations")] = "admin"
    original = api_module.MasterApi.build_app

    def build_app(self: api_module.MasterApi) -> web.Application:
        async def write(request: web.Request) -> web.Response:
            body = await http.read_json(request)
            return http.json_response(await self.write(request, "annotate", body))

        async def read(request: web.Request) -> web.Response:
            return await self.read(request, lambda s: {"annotations": dict(s.get("annotations") or {})})

        def routes(app: web.Application) -> None:
            app.router.add_post("/api/v1/x-annotate", write)
            app.router.add_get("/api/v1/x-annotations", read)
        self.extra_routes.append(routes)
        return original(self)

    api_module.MasterApi.build_app = build_app  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from orca.cli import main

    sys.exit(main(sys.argv[1:]))
