"""The OpenAPI 3.1 document of the master's API, served at `GET /api/v1/openapi.json` (public).

The document cannot drift from the server because only the prose and the schemas are written by hand:
- the route list (paths, methods, path parameters) is read from the aiohttp router of the running app;
- the role each route needs (`x-orca-role`, `security`, the 401/403/429 answers) is read from the policy
  table `orca.master.http.POLICY`, the very table the auth middleware enforces;
- `ROUTES` below holds, per route, what the router cannot know: a summary, the query parameters, the
  body's schema (by name, from `orca.master.openapi_schemas.COMPONENTS`) and the success answer.
`tests/unit/test_openapi.py` validates the document and checks that it lists exactly the router's routes,
each with its policy role and an entry in `ROUTES`; the API fuzz tier (`tests/fuzz`) generates its
requests from it.

Adding a route: register it on the router, give it a role in `POLICY`, and add one `ROUTES` entry here
(plus a schema in `openapi_schemas.COMPONENTS` if it takes a JSON body). Nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from orca import __version__
from orca.master import openapi_orchestry
from orca.master.http import HMAC, POLICY, PUBLIC
from orca.master.openapi_schemas import COMPONENTS, ref

__all__ = ["Op", "Param", "ROUTES", "build_document", "router_routes", "undocumented_routes"]

Schema = dict[str, Any]


@dataclass(frozen=True)
class Param:
    """One query parameter (all are optional)."""

    name: str
    schema: Schema
    description: str = ""


@dataclass(frozen=True)
class Op:
    """What the router and the policy table cannot say about one route."""

    summary: str
    query: tuple[Param, ...] = ()
    body: str | None = None          # name of a `COMPONENTS` schema for the request body
    body_type: str = "application/json"
    body_required: bool = True
    ok: int = 200
    ok_type: str = "application/json"
    ok_schema: Schema = field(default_factory=lambda: ref("Object"))
    leader: bool = False             # a write: served by the leader (a follower answers 307, or 503)
    websocket: bool = False
    idempotent_key: bool = False     # honours the Idempotency-Key header
    tag: str = "services"
    extra_errors: tuple[int, ...] = ()
    blocking: bool = False           # takes ?index=&wait= (a blocking query, orca.master.blocking)


_CONSISTENT = Param("consistent", {"type": "boolean"},
                    "true: served by the leader after a barrier (linearizable); else from this master's state")
_PURGE = Param("purge", {"type": "boolean"}, "true: forget the service entirely instead of stopping it")
_TAIL = Param("tail", {"type": "integer", "minimum": 0, "maximum": 10000}, "lines per replica (default 100)")
_FOLLOW = Param("follow", {"type": "boolean"}, "true: keep the response open and stream new lines")
_SINCE = Param("since", {"type": "string", "maxLength": 64},
               "an event sequence number (cursor) or an ISO-8601 time")
_LOG_SINCE = Param("since", {"type": "string", "maxLength": 64},
                   "only lines stamped at or after this time: a relative age (10m, 1h), an ISO-8601 time or "
                   "Unix seconds")
_TIMESTAMPS = Param("timestamps", {"type": "boolean"}, "true: each line starts with the time Docker stamped it")
_SERVICE = Param("service", {"type": "string"}, "only events of this service")
_TYPE = Param("type", {"type": "string"}, "only events of this type")
_INDEX = Param("index", {"type": "integer", "minimum": 0, "maximum": 2**53},
               "blocking query: answer once this master's state is past this index (the X-Orca-Applied-Index "
               "of the answer you have) and the answer changed, or when `wait` is over")
_WAIT = Param("wait", {"type": "string", "pattern": r"^[0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m)?$", "maxLength": 13},
              "blocking query: the longest wait, like 30s, 1.5m or 500ms (default 30s, at most 5m; only with index)")
_ACCESS_TOKEN = Param("access_token", {"type": "string", "maxLength": 8192},
                      "the bearer token, for browsers that cannot set headers on a WebSocket")


def _write(summary: str, body: str | None = None, *, tag: str = "services", ok: int = 200,
           body_required: bool = True, extra_errors: tuple[int, ...] = (), query: tuple[Param, ...] = (),
           body_type: str = "application/json") -> Op:
    return Op(summary, body=body, body_required=body_required, ok=ok, leader=True, idempotent_key=True, tag=tag,
              extra_errors=extra_errors, query=query, body_type=body_type)


def _read(summary: str, *, tag: str = "services", query: tuple[Param, ...] = (), consistent: bool = True,
          ok_type: str = "application/json", ok: int = 200, blocking: bool = False) -> Op:
    query = (*query, _CONSISTENT) if consistent else query
    return Op(summary, query=(*query, _INDEX, _WAIT) if blocking else query, tag=tag, ok_type=ok_type, ok=ok,
              blocking=blocking)


def _stream(summary: str, query: tuple[Param, ...] = ()) -> Op:
    return Op(summary, query=(*query, _ACCESS_TOKEN), websocket=True, tag="streams", ok=101)


# Keyed like POLICY: (method, path as the router spells it).
ROUTES: dict[tuple[str, str], Op] = {
    # probes and public status
    ("GET", "/livez"): _read("Liveness: the process answers", tag="health", consistent=False),
    ("GET", "/readyz"): _read("Readiness: Raft has a leader and this master caught up (else 503)",
                              tag="health", consistent=False),
    ("GET", "/healthz"): _read("Component health summary (503 when Raft is down)", tag="health", consistent=False),
    ("GET", "/metrics"): _read("Prometheus metrics", tag="health", consistent=False,
                               ok_type="text/plain; version=0.0.4"),
    ("GET", "/api/v1/health"): _read("This master's view of the cluster", tag="health", consistent=False),
    ("GET", "/api/v1/status/{component}"): _read("One component's health (raft, scheduler, dispatcher)",
                                                  tag="health", consistent=False),
    ("GET", "/api/v1/openapi.json"): _read("This document", tag="health", consistent=False),
    ("GET", "/api/v1/cluster/leader"): _read("The current leader (503 while none is known)", tag="cluster",
                                             consistent=False),
    ("GET", "/api/v1/cluster/health"): _read("Cluster health (503 while not ready)", tag="cluster",
                                             consistent=False),
    # cluster
    ("GET", "/api/v1/cluster/info"): _read("Masters, nodes and counts", tag="cluster"),
    ("GET", "/api/v1/cluster/status"): _read("This master's Raft status and the masters", tag="cluster",
                                             consistent=False),
    ("GET", "/api/v1/cluster/digest"): _read(
        "A SHA-256 digest of this master's replicated state and its applied index: equal on every master at the "
        "same index (replica consistency check, like etcd's HashKV)", tag="cluster", consistent=False),
    ("GET", "/api/v1/cluster/nodes"): _read("Worker nodes with their allocations", tag="nodes", blocking=True),
    ("GET", "/api/v1/cluster/nodes/{id}"): _read("One worker node", tag="nodes", blocking=True),
    ("POST", "/api/v1/cluster/nodes/{id}/drain"): _write("Drain a node (move its replicas away)", "DrainRequest",
                                                         tag="nodes", body_required=False),
    ("POST", "/api/v1/cluster/nodes/{id}/undrain"): _write("Make a drained node eligible again", tag="nodes"),
    ("DELETE", "/api/v1/cluster/nodes/{id}"): _write("Remove a node from the cluster", tag="nodes"),
    # services
    ("GET", "/api/v1/status"): _read("Every service's status, by name (paged with limit and cursor)", query=(
        Param("project", {"type": "string"}, "only this project"),
        Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
              "at most this many services (default: all); the answer's next_cursor is set when more follow"),
        Param("cursor", {"type": "string", "maxLength": 256},
              "the next_cursor of the previous page: the services after that name")), blocking=True),
    ("GET", "/api/v1/services/{name}"): _read("One service with its replicas", blocking=True),
    ("GET", "/api/v1/services/{name}/history"): _read("The service's last versions"),
    ("GET", "/api/v1/events"): _read("Events, newest last", tag="events", query=(
        Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (default 100)"),
        _SINCE, _SERVICE, _TYPE), blocking=True),
    ("POST", "/api/v1/deploy"): _write("Deploy services (partial: each invalid service is listed in errors)",
                                       "DeployRequest"),
    ("POST", "/api/v1/services/{name}/scale"): _write("Set the desired replica count", "ScaleRequest"),
    ("DELETE", "/api/v1/services/{name}"): _write("Stop a service (or forget it with purge=true)",
                                                  query=(_PURGE,)),
    ("POST", "/api/v1/services/{name}/start"): _write("Start a stopped service"),
    ("POST", "/api/v1/services/{name}/promote"): _write("Promote the canary version to every replica",
                                                        extra_errors=(409,)),
    ("POST", "/api/v1/services/{name}/rollback"): _write("Roll back to the previous version", extra_errors=(409,)),
    ("DELETE", "/api/v1/projects/{name}"): _write("Stop every service of a project"),
    ("POST", "/api/v1/stop"): _write("Stop every service"),
    ("GET", "/api/v1/services/{name}/logs"): _read("Every replica's log, prefixed by replica", consistent=False,
                                                   query=(_TAIL, _FOLLOW, _LOG_SINCE, _TIMESTAMPS),
                                                   ok_type="text/plain; charset=utf-8"),
    # traffic
    ("GET", "/api/v1/top"): _read(
        "Everything `orca top` shows in one answer: every service's summary, scaling policy, current traffic "
        "sample and last autoscaler decision (metrics null with metrics_error when the leader cannot be asked)",
        tag="traffic", consistent=False, query=(Param("project", {"type": "string", "maxLength": 253},
                                                      "only this project"),)),
    ("GET", "/api/v1/services/{name}/metrics"): _read("Traffic metrics (aggregated by the leader)",
                                                      tag="traffic", consistent=False, query=(
        Param("history", {"type": "integer", "minimum": 0, "maximum": 1800}, "samples of history (default 0)"),)),
    ("GET", "/api/v1/services/{name}/scaling"): _read("The autoscaling policy", tag="traffic"),
    ("PUT", "/api/v1/services/{name}/scaling"): _write("Set or remove the autoscaling policy", "ScalingPutRequest",
                                                       tag="traffic"),
    # streams (WebSocket)
    ("GET", "/api/v1/services/{name}/logs/stream"): _stream("Live log lines (WebSocket)", (_TAIL,)),
    ("GET", "/api/v1/services/{name}/metrics/stream"): _stream("Live metrics (WebSocket)"),
    ("GET", "/api/v1/events/stream"): _stream("Live events (WebSocket)", (_SINCE, _SERVICE, _TYPE)),
    # tokens and secrets
    ("GET", "/api/v1/tokens"): _read("API tokens (never the tokens themselves)", tag="tokens"),
    ("POST", "/api/v1/tokens"): _write("Mint a token (shown once)", "TokenCreateRequest", tag="tokens", ok=201),
    ("DELETE", "/api/v1/tokens/{jti}"): _write("Revoke a token", tag="tokens"),
    ("GET", "/api/v1/secrets"): _read("Secret keys (never values)", tag="secrets"),
    ("POST", "/api/v1/secrets"): _write("Set a secret (201 when created, 200 when replaced)", "SecretSetRequest",
                                        tag="secrets", ok=201),
    ("DELETE", "/api/v1/secrets/{key}"): _write("Delete a secret", tag="secrets"),
    # agents
    ("POST", "/api/v1/agent/register"): _write("An agent registers its node", "RegisterRequest", tag="agents"),
    ("POST", "/api/v1/agent/heartbeat"): Op("An agent's heartbeat (recorded by the leader, committed in batches)",
                                            body="Heartbeat", leader=True, tag="agents"),
    # webhooks
    ("GET", "/api/v1/webhooks"): _read("Webhooks and their last deliveries", tag="webhooks"),
    ("POST", "/api/v1/webhooks"): _write("Register a GitHub webhook (its secret is shown once)",
                                         "WebhookCreateRequest", tag="webhooks", ok=201),
    ("DELETE", "/api/v1/webhooks/{id}"): _write("Remove a webhook", tag="webhooks"),
    ("POST", "/api/v1/webhooks/github"): Op("A GitHub delivery, authenticated by X-Hub-Signature-256 (HMAC of "
                                            "the raw body with a webhook's secret)", body="GithubPush",
                                            tag="webhooks", extra_errors=(429,)),
    # secret grants
    ("PUT", "/api/v1/secrets/{key}/grants"): _write("Set the projects whose specs may reference the secret",
                                                    "SecretGrants", tag="secrets"),
    # workloads: named volumes and job runs
    ("GET", "/api/v1/volumes"): _read("Named volumes per node, as each agent reports them", tag="volumes",
                                      query=(Param("node", {"type": "string", "maxLength": 63},
                                                   "only this node"),), consistent=False),
    ("DELETE", "/api/v1/volumes/{node}/{service}"): _write(
        "Order a node to remove a stopped service's volumes (refused while the service runs)", tag="volumes",
        query=(Param("slot", {"type": "integer", "minimum": 0, "maximum": 2**53}, "only this replica slot"),
               Param("gen", {"type": "integer", "minimum": 0, "maximum": 2**53}, "only this generation")),
        extra_errors=(409,)),
    ("POST", "/api/v1/services/{name}/run"): _write("Start a new run of a job (kind = \"job\")",
                                                    body_required=False, extra_errors=(409,)),
    # the documented APIs: Porter's subsystems and Dory's edge API (orca.master.api_porter, api_edge)
    ("GET", "/api/v2/status/{subsystem}"): _read("Porter: one subsystem (infra, apps or datastores) as a group of "
                                                 "orca's components", tag="health", consistent=False),
    ("POST", "/api/v1/edge/heartbeat"): _write("Dory: an edge processor's heartbeat (renews its node's lease)",
                                               "EdgeHeartbeat", tag="agents", extra_errors=(405, 413)),
    ("POST", "/api/v1/edge/nodes"): _write("Dory: register an edge node (answers a one-time join token)",
                                           "EdgeNodeCreate", tag="agents", ok=201, extra_errors=(409,)),
    ("POST", "/api/v1/edge/nodes/decommission"): _write("Dory: decommission an edge node (its replicas move)",
                                                        "EdgeNodeDecommission", tag="agents"),
    # masters: the replicated member list (orca.master.api_members)
    ("GET", "/api/v1/cluster/members"): _read("The masters: id, Raft and API address, role, last contact, lag",
                                              tag="cluster", consistent=False),
    ("POST", "/api/v1/cluster/members"): _write("Add a master (one change at a time; refused if quorum is at risk)",
                                                "MemberAdd", tag="cluster", extra_errors=(409,)),
    ("DELETE", "/api/v1/cluster/members/{id}"): _write("Remove a master (refused if quorum is at risk)",
                                                       tag="cluster", extra_errors=(409,)),
    # node identity: join tokens
    ("GET", "/api/v1/cluster/join-tokens"): _read("Join tokens (never the tokens themselves)", tag="agents"),
    ("POST", "/api/v1/cluster/join-tokens"): _write("Mint a join token (shown once)", "JoinTokenCreateRequest",
                                                    tag="agents", ok=201, body_required=False),
    ("DELETE", "/api/v1/cluster/join-tokens/{id}"): _write("Revoke a join token", tag="agents"),
    ("POST", "/api/v1/agent/join"): _write("An agent exchanges a join token for its node credential (once)",
                                           "JoinRequest", tag="agents", ok=201),
    # TLS: the cluster CA and node certificates
    ("GET", "/api/v1/cluster/ca"): _read("The cluster CA: fingerprint, trusted CAs, PEM bundle (public: clients "
                                         "pin it by fingerprint)", tag="tls", consistent=False),
    ("POST", "/api/v1/cluster/ca/rotate"): _write("Start a CA rotation (the new CA is trusted after overlap_s)",
                                                  "CaRotateRequest", tag="tls", ok=201, body_required=False,
                                                  extra_errors=(409,)),
    ("POST", "/api/v1/cluster/ca/finish"): _write("Finish a CA rotation (drop the old CA)", "CaFinishRequest",
                                                  tag="tls", body_required=False, extra_errors=(409,)),
    ("POST", "/api/v1/agent/certificate"): _write("A certificate for the token's node, with the CA bundle",
                                                  "CertificateRequest", tag="tls", ok=201),
    # backup and restore
    ("GET", "/api/v1/snapshot"): _read("A snapshot of the replicated state (secrets stay sealed)", tag="backup",
                                       consistent=False, ok_type="application/octet-stream"),
    ("POST", "/api/v1/snapshot/restore"): _write("Begin a restore from a snapshot's header", "RestoreBeginRequest",
                                                 tag="backup"),
    ("PUT", "/api/v1/snapshot/restore/{id}/{n}"): _write("Upload chunk n of the snapshot", "Binary", tag="backup",
                                                         body_type="application/octet-stream"),
    ("POST", "/api/v1/snapshot/restore/{id}/commit"): _write("Check the uploaded snapshot and replace the state "
                                                             "with it", tag="backup", extra_errors=(409,)),
    # web console (static files)
    ("GET", "/ui/"): _read("The web console", tag="console", consistent=False, ok_type="text/html"),
    ("GET", "/ui/{path}"): _read("A file of the web console", tag="console", consistent=False,
                                 ok_type="application/octet-stream"),
}

_STATUS_TEXT = {307: "Not the leader: retry at the Location header (the leader's URL)",
                400: "Invalid input (the details name the field)", 401: "Missing, invalid, expired or revoked token",
                403: "The token's role may not do this", 404: "No such object", 409: "Conflict with the current state",
                413: "Body larger than the limit", 429: "Rate limited (Retry-After says when to retry)",
                503: "No leader, no quorum, or a write that timed out (an unknown outcome: retry with the same "
                     "Idempotency-Key); Retry-After says when to ask again"}
_PATH_PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def router_routes(app: web.Application) -> dict[tuple[str, str], web.AbstractRoute]:
    """The routes the app serves, keyed like POLICY (HEAD is implied by GET)."""
    out = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        out[(route.method, route.resource.canonical)] = route
    return out


def undocumented_routes(app: web.Application) -> list[tuple[str, str]]:
    """Served routes without a `ROUTES` entry (a test keeps this empty)."""
    return sorted(key for key in router_routes(app) if key not in ROUTES)


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                 "description": "seconds to wait before asking again"}}
_APPLIED_INDEX = {"X-Orca-Applied-Index": {"schema": {"type": "integer", "minimum": 0},
                                           "description": "the index of the state this answer was read from: "
                                                          "pass it as `index` to wait for the next change"}}


def _error(status: int) -> dict[str, Any]:
    out = {"description": _STATUS_TEXT.get(status, "Error"), "content": {"application/json": {"schema": ref("Error")}}}
    if status in (429, 503):
        out["headers"] = _RETRY_AFTER
    return out


def _operation(method: str, path: str, op: Op | None, role: str | None) -> dict[str, Any]:
    if op is None:  # served but not described yet: still listed, so the document never omits a route
        op = Op("(not documented yet)", tag="undocumented")
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM_RE.findall(path)]
    params += [{"name": p.name, "in": "query", "required": False, "schema": p.schema,
                **({"description": p.description} if p.description else {})} for p in op.query]
    if op.idempotent_key:
        params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                       "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                       "description": "a retry with the same key (per token) returns the first result"})
    if role == HMAC:
        params += [{"name": h, "in": "header", "required": False, "schema": {"type": "string", "maxLength": 200}}
                   for h in ("X-GitHub-Event", "X-GitHub-Delivery")]
    if op.websocket:
        ok = {"description": "Switching protocols to a WebSocket; one JSON (or text) message per item"}
    else:
        ok = {"description": "OK", "content": {op.ok_type: {"schema": op.ok_schema if op.ok_type ==
                                                             "application/json" else {"type": "string"}}}}
    if op.blocking:
        ok["headers"] = _APPLIED_INDEX
    responses: dict[str, Any] = {str(op.ok): ok}
    errors: set[int] = set(op.extra_errors)
    if op.body is not None or op.query or path.count("{"):
        errors.add(400)
    if op.body is not None:
        errors.add(413)
    if path.count("{"):
        errors.add(404)
    if role == HMAC:
        errors |= {401, 429}
    elif role not in (PUBLIC, None):
        errors |= {401, 403}
        if role != "agent":
            errors.add(429)
    if op.leader:
        errors |= {307, 503}
    if op.blocking:
        errors.add(503)
    for status in sorted(errors):
        responses[str(status)] = _error(status)
    responses["default"] = {"description": "Any other error, with the same envelope",
                            "content": {"application/json": {"schema": ref("Error")}}}
    out: dict[str, Any] = {"operationId": _operation_id(method, path), "summary": op.summary, "tags": [op.tag],
                           "x-orca-role": role, "responses": responses}
    if params:
        out["parameters"] = params
    if role == PUBLIC:
        out["security"] = []
    elif role == HMAC:
        out["security"] = [{"githubSignature": []}]
    elif role == "join":
        out["security"] = [{"bearer": []}]
        out["description"] = "Needs a join token (`orca token create --join`), not an API token."
    elif role is not None:
        out["security"] = [{"bearer": []}, {"accessToken": []}] if op.websocket else [{"bearer": []}]
        out["description"] = f"Needs a token of role `{role}`" + (
            "" if role == "agent" else " (admin > deployer > viewer)") + "."
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {op.body_type: {"schema": ref(op.body)}}}
    return out


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _PATH_PARAM_RE.sub(r"by_\1", path)).strip("_")
    return f"{method.lower()}_{words}"


def build_document(app: web.Application, policy: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `app` serves, with the roles of `policy` (default POLICY)."""
    policy = POLICY if policy is None else policy
    paths: dict[str, dict[str, Any]] = {}
    for (method, path) in sorted(router_routes(app)):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, ROUTES.get((method, path)),
                                                                policy.get((method, path)))
    return {
        "openapi": "3.1.0",
        "info": {"title": "orca master API", "version": __version__,
                 "description": "Every master serves this API. Reads are answered from the master's applied "
                                "state; writes by the leader (a follower answers 307 with the leader's URL). "
                                "Every error, 4xx or 5xx, carries the JSON envelope `Error`. An unknown path "
                                "is 404 and a known path with another method 405 (with Allow)."},
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "An orca token; its role (x-orca-role of each operation) decides."},
                "accessToken": {"type": "apiKey", "in": "query", "name": "access_token",
                                "description": "The same token, for WebSocket streams opened by browsers."},
                "githubSignature": {"type": "apiKey", "in": "header", "name": "X-Hub-Signature-256",
                                    "description": "sha256=HMAC of the raw body with a webhook's secret."},
            },
        },
    }


# Orchestry's application API: its entries and body schemas live beside its routes, as plain data.
ROUTES.update(openapi_orchestry.routes(Op, Param))
COMPONENTS.update(openapi_orchestry.SCHEMAS)
