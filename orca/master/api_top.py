"""`GET /api/v1/top`: everything `orca top` shows, in one answer.

Why: `orca top` used to ask for the status list, then each service's metrics and scaling policy: 1 + 2N
requests a refresh, which ran into the rate limit on a cluster with a few dozen services (and then showed
dashes). Here one request returns every service's summary (as `/status`), its scaling policy, its current
traffic sample and the autoscaler's last decision.

The samples live in the leader's memory (`orca.master.traffic`). A follower asks the leader for the whole
answer; when the leader cannot be asked (none known, unreachable, or it refused), the follower answers
from its own state with `metrics: null` everywhere and `metrics_error` saying why, so `top` still shows
replicas and policies during an election.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca import bounds
from orca.errors import OrcaError
from orca.master import views
from orca.master.http import json_response

if TYPE_CHECKING:
    from orca.master.api_traffic import TrafficEndpoints

__all__ = ["serve", "MAX_PROJECT_LEN"]

MAX_PROJECT_LEN = 253


def rows(state: dict[str, Any], project: str | None) -> list[dict[str, Any]]:
    """`/status` rows with each service's scaling policy (pure: a function of the state)."""
    out = []
    for row in views.status_list(state, project):
        svc = state["services"].get(row["name"]) or {}
        out.append({**row, "scaling": (svc.get("spec") or {}).get("scaling")})
    return out


async def serve(endpoints: TrafficEndpoints, request: web.Request) -> web.Response:
    api = endpoints.api
    api._require_serving()
    raw = request.query.get("project")
    project = bounds.bounded_str(raw, "project", MAX_PROJECT_LEN, 1) if raw else None
    metrics_error: str | None = None
    if not api.raft.is_leader:
        try:
            return json_response(await endpoints._from_leader(request, request.raw_path))
        except OrcaError as err:  # no leader, unreachable, or it said no: answer what this master knows
            metrics_error = err.message
    services = api.raft.read(lambda s: rows(s, project))
    for row in services:
        if metrics_error is None:
            current = endpoints.traffic.current(row["name"])
            row["metrics"] = current.as_dict() if current else None
            row["autoscaler"] = endpoints.decisions.get(row["name"])
        else:
            row["metrics"] = row["autoscaler"] = None
    body = {"at": time.time(), "source": api.info.node_id, "services": services,
            "metrics_source": None if metrics_error else api.info.node_id, "metrics_error": metrics_error}
    return json_response(body, headers=api._read_headers())
