"""OpenAPI entries of Orchestry's routes (`compat_orchestry*`), as plain data.

The OpenAPI module (`orca.master.openapi`: route list from the router, roles from `POLICY`, one `ROUTES`
entry per route for what neither can say) takes these with two lines, once both are on the same branch:

    ROUTES.update(openapi_orchestry.routes(Op, Param))          # in orca.master.openapi
    COMPONENTS.update(openapi_orchestry.SCHEMAS)                # in orca.master.openapi_schemas

The entries are data (the field names of its `Op`, query parameters as `(name, schema, description)`)
so this module imports nothing of it and stands on its own; `tests/unit/test_compat_orchestry_model.py`
checks that every Orchestry route the master serves has an entry and every body schema names its bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orca import spec
from orca.master import compat_orchestry, compat_orchestry_logs

__all__ = ["ENTRIES", "SCHEMAS", "routes"]

Schema = dict[str, Any]
Query = tuple[str, Schema, str]

_BOOL = {"type": "boolean"}
_REPLICAS = {"type": "integer", "minimum": 0, "maximum": spec.MAX_REPLICAS}
_TIMEOUT = {"type": "number", "minimum": 1, "maximum": compat_orchestry.WAIT_MAX_S,
            "description": f"seconds to wait (default {compat_orchestry.WAIT_DEFAULT_S})"}
_SINCE: Query = ("since", {"type": "string", "maxLength": 64}, "a relative age (30m, 1h, 1d, 2w) or an ISO-8601 time")
_ACCESS_TOKEN: Query = ("access_token", {"type": "string", "maxLength": 8192},
                        "the bearer token, for browsers that cannot set headers on a WebSocket")
_CONSISTENT: Query = ("consistent", _BOOL, "true: served by the leader after a barrier")
_TAIL: Query = ("tail", {"type": "integer", "minimum": 0, "maximum": compat_orchestry_logs.MAX_TAIL},
                "lines from the end (default 100)")
_CONTAINER: Query = ("container", {"type": "string", "maxLength": 128}, "only this container (`<app>-<n>`)")
_LABELS = {"type": "object", "maxProperties": 64,
           "additionalProperties": {"type": "string", "maxLength": 255}}

SCHEMAS: dict[str, Schema] = {
    "OrchestryApp": {
        "type": "object", "additionalProperties": False, "required": ["metadata", "spec"],
        "description": "An Orchestry App document; it becomes an orca service (README: Orchestry's API).",
        "properties": {
            "apiVersion": {"const": "v1"}, "kind": {"const": "App"},
            "metadata": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "maxLength": 63},
                "labels": _LABELS}},
            "spec": {"type": "object", "additionalProperties": False, "required": ["image"], "properties": {
                "type": {"const": "http"}, "image": {"type": "string", "minLength": 1, "maxLength": 1024},
                "ports": {"type": "array", "maxItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["containerPort"], "properties": {
                        "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "protocol": {"enum": ["HTTP", "http"]}}}}}},
            "scaling": {"type": "object", "additionalProperties": False, "properties": {
                "mode": {"enum": list(spec.SCALING_MODES)},
                "minReplicas": _REPLICAS, "maxReplicas": _REPLICAS, "targetRPSPerReplica": {"type": "number"},
                "maxP95LatencyMs": {"type": "number"}, "maxCPUPercent": {"type": "number"},
                "maxMemoryPercent": {"type": "number"}, "scaleOutThresholdPct": {"type": "number"},
                "scaleInThresholdPct": {"type": "number"}, "windowSeconds": {"type": "number"},
                "cooldownSeconds": {"type": "number"}}},
        }},
    "OrchestryStart": {"type": "object", "additionalProperties": False, "properties": {
        "replicas": _REPLICAS, "wait": _BOOL, "timeout": _TIMEOUT}},
    "OrchestryStop": {"type": "object", "additionalProperties": False, "properties": {
        "force": _BOOL, "timeout": _TIMEOUT}},
    "OrchestryScale": {"type": "object", "additionalProperties": False, "required": ["replicas"], "properties": {
        "replicas": _REPLICAS, "wait": _BOOL, "timeout": _TIMEOUT}},
    "OrchestryScalingUpdate": {
        "type": "object", "description": "Fields of orca's scaling policy (snake_case), merged over the current one",
        "properties": {"mode": {"enum": list(spec.SCALING_MODES)}, "policy": {"type": "object"},
                       **{k: {"type": "number"} for k in spec.SCALING_DEFAULTS if k != "mode"}},
        "additionalProperties": False},
    "OrchestryConfigUpdate": {
        "type": "object", "description": "Always refused (409 CONFIG_READ_ONLY, naming where each section is set)",
        "properties": {k: {"type": "object"} for k in ("controller", "database", "scaling", "health")},
        "additionalProperties": False},
}


def _e(summary: str, *, query: tuple[Query, ...] = (), body: str | None = None, write: bool = False,
       ok: int = 200, body_required: bool = True, websocket: bool = False, tag: str = "orchestry",
       extra_errors: tuple[int, ...] = ()) -> dict[str, Any]:
    entry: dict[str, Any] = {"summary": summary, "query": query, "body": body, "ok": ok, "tag": tag,
                             "leader": write, "idempotent_key": write, "body_required": body_required,
                             "websocket": websocket, "extra_errors": extra_errors}
    if websocket:
        entry.update(query=(*query, _ACCESS_TOKEN), ok=101, tag="streams")
    return entry


_APP = "/api/v1/apps/{app}"
ENTRIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/apps/register"): _e("Register an App (runs nothing until started)", body="OrchestryApp",
                                          write=True, ok=201, extra_errors=(409,)),
    ("GET", "/api/v1/apps"): _e("Apps with their status and counts", query=(
        ("status", {"enum": ["running", "stopped", "error", "pending"]}, "only apps with this status"),
        ("format", {"enum": ["json", "summary"]}, "summary: name and status only"))),
    ("GET", _APP): _e("One app: status, replicas, metrics, containers", query=(_CONSISTENT,)),
    ("DELETE", _APP): _e("Remove an app and its containers", write=True, query=(
        ("force", _BOOL, "accepted (no confirmation step over the API)"),
        ("keep_data", _BOOL, "accepted (orca services have no volumes)"))),
    ("POST", _APP + "/start"): _e("Start an app (wait: until its replicas run)", body="OrchestryStart", write=True,
                                  body_required=False, extra_errors=(503,)),
    ("POST", _APP + "/stop"): _e("Stop an app", body="OrchestryStop", write=True, body_required=False),
    ("POST", _APP + "/scale"): _e("Scale an app (wait: until the replicas run)", body="OrchestryScale", write=True,
                                  extra_errors=(409, 503)),
    ("GET", _APP + "/spec"): _e("The App document of the running spec"),
    ("GET", _APP + "/metrics"): _e("Current metrics and history", query=(
        ("history", {"type": "integer", "minimum": 0, "maximum": 1800}, "data points (default 10)"),
        ("interval", {"type": "string", "maxLength": 16}, "spacing of the history (5m, 1h, 1d)"))),
    ("GET", _APP + "/events"): _e("The app's events, newest first", query=(
        ("type", {"enum": ["scaling", "health", "config", "error", "lifecycle"]}, "only this category"),
        _SINCE, ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (default 100)"))),
    ("GET", _APP + "/logs"): _e("Log lines as JSON (timestamp, container, level, message)", query=(
        _CONTAINER, _TAIL, _SINCE, ("follow", _BOOL, "true with a WebSocket upgrade: stream"))),
    ("GET", _APP + "/scaling"): _e("The scaling policy and the last scaling event", query=(_CONSISTENT,)),
    ("PUT", _APP + "/scaling"): _e("Update the scaling policy", body="OrchestryScalingUpdate", write=True),
    ("GET", _APP + "/health"): _e("Health of each container and the check's configuration"),
    ("POST", _APP + "/health/check"): _e("The latest health results of each container", write=True),
    ("GET", _APP + "/logs/stream"): _e("Live log lines as JSON (WebSocket)", query=(_CONTAINER, _TAIL, _SINCE),
                                       websocket=True),
    ("GET", _APP + "/metrics/stream"): _e("Live metrics (WebSocket)", websocket=True),
    ("GET", "/health"): _e("System health (Orchestry's components: database = Raft, docker = the agents, "
                           "nginx = orca's proxy)", tag="health"),
    ("GET", "/api/v1/metrics"): _e("System metrics as JSON (aggregated by the leader)"),
    ("GET", "/api/v1/config"): _e("The effective configuration, in Orchestry's sections"),
    ("PUT", "/api/v1/config"): _e("Refused: configuration is each master's config file", body="OrchestryConfigUpdate",
                                  write=True, extra_errors=(409,)),
    ("GET", "/cluster/status"): _e("This master, the masters and the leader's lease", tag="cluster"),
    ("GET", "/cluster/leader"): _e("The leader (503 NO_LEADER while none is known)", tag="cluster",
                                   extra_errors=(503,)),
    ("GET", "/cluster/health"): _e("Cluster health: healthy, or degraded with 503 while not ready", tag="cluster",
                                   extra_errors=(503,)),
}


def routes(op: Callable[..., Any], param: Callable[..., Any]) -> dict[tuple[str, str], Any]:
    """The entries as the OpenAPI module's `Op` objects (its `Op` and `Param` classes passed in)."""
    out = {}
    for key, entry in ENTRIES.items():
        fields = dict(entry)
        summary = fields.pop("summary")
        fields["query"] = tuple(param(*q) for q in fields["query"])
        out[key] = op(summary, **fields)
    return out
