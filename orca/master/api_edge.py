"""Dory's edge API on orca's worker nodes: a Dory edge node is an orca worker node, and its edge processor
is that node's agent (one per node, so `processor_id` is the node id).

  POST /api/v1/edge/heartbeat              (agent token of that node) -> 200 {"directive", "orchestrator_time"}
  POST /api/v1/edge/nodes                  (admin) {"name", "organization_id"} -> 201 the edge node, with the
                                           one-time join token its agent registers with
  POST /api/v1/edge/nodes/decommission     (admin) {"node_name"} -> 200; the node and its replicas are forgotten

Departures from the document, each for orca's trust boundaries: Dory's heartbeat is unauthenticated, orca's
needs the agent token bound to the node (`require_own_node`: a token speaks for its node only, else 403),
since a heartbeat keeps a node's lease, and so its replicas, alive. Registering mints a join credential and
decommissioning moves replicas, so both need an admin token. A heartbeat goes to the leader (a follower
answers 307, as for every agent write): the leases live there.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca import auth, jointoken
from orca.errors import Conflict, Invalid
from orca.master.api_join import DEFAULT_TTL_S
from orca.master.api_workers import require_own_node
from orca.master.http import json_response, read_json
from orca.master.leases import HeartbeatBook

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["EdgeEndpoints", "EDGE_MAX_BYTES", "validate_heartbeat", "edge_node_uuid"]

EDGE_MAX_BYTES = 64 * 1024  # Dory's request body limit
_MAX_STR = 256
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAX_NUMBER = 2.0**53
# Dory's heartbeat fields and their JSON types; `epoch`, `last_state_sync` and `state_size_bytes` may be null.
_HEARTBEAT_FIELDS: dict[str, tuple[str, bool]] = {
    "processor_id": ("str", False), "node_id": ("str", False), "role": ("str", False), "epoch": ("int", True),
    "timestamp": ("num", False), "status": ("str", False), "last_state_sync": ("num", True),
    "state_size_bytes": ("int", True), "uptime_sec": ("num", False),
}
_NODE_NAMESPACE = uuid.UUID("6f72636a-0000-4000-8000-65646765ff01")  # fixed: a node's uuid never changes


def edge_node_uuid(node_id: str) -> str:
    """Dory's `id` of an edge node: orca names nodes by their id, so the uuid is derived from it (uuid5)."""
    return str(uuid.uuid5(_NODE_NAMESPACE, node_id))


def validate_heartbeat(body: dict[str, Any]) -> dict[str, Any]:
    """Dory's heartbeat body, every field optional and typed as documented; unknown fields are refused."""
    unknown = sorted(set(body) - set(_HEARTBEAT_FIELDS))
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r}", {"field": unknown[0]})
    out: dict[str, Any] = {}
    for name, (kind, nullable) in _HEARTBEAT_FIELDS.items():
        if name not in body or (body[name] is None and nullable):
            continue
        value = body[name]
        if kind == "str":
            ok = isinstance(value, str) and len(value) <= _MAX_STR
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_NUMBER
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _MAX_NUMBER
        if not ok:
            what = {"str": f"a string of at most {_MAX_STR} characters", "int": "a non-negative integer",
                    "num": "a non-negative number"}[kind]
            raise Invalid(f"{name}: expected {what}" + (" or null" if nullable else ""), {"field": name})
        out[name] = value
    return out


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{name} is required", {"field": name})
    return value


def _node_id(value: str, field: str) -> str:
    if not auth.NODE_ID_RE.fullmatch(value):
        raise Invalid(f"{field}: an orca node id ([a-z0-9-]{{1,63}})", {"field": field})
    return value


class EdgeEndpoints:
    """Contract: `api.write` commits as the caller; `book` is the leader's HeartbeatBook (leases)."""

    def __init__(self, api: MasterApi, book: HeartbeatBook) -> None:
        self.api = api
        self.book = book
        self.join_key = jointoken.join_key(api.info.signing_key)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/edge/heartbeat", self.heartbeat)
        r.add_post("/api/v1/edge/nodes", self.register)
        r.add_post("/api/v1/edge/nodes/decommission", self.decommission)

    async def heartbeat(self, request: web.Request) -> web.Response:
        """Renew the lease of the processor's node and answer a directive: `continue`, or `shutdown` when the
        node is unknown or was removed or decommissioned. Without `processor_id` nothing is renewed."""
        self.api._require_leader()
        hb = validate_heartbeat(await read_json(request, EDGE_MAX_BYTES))
        directive = "continue"
        processor = hb.get("processor_id")
        if processor:
            require_own_node(request, processor)  # also refuses anything that is not a node id (403)
            node = hb.get("node_id")
            if node and node not in (processor, edge_node_uuid(processor)):
                raise Invalid("node_id: the processor is its node's agent: expected the node's id or uuid",
                              {"field": "node_id"})
            if self.api.raft.read(lambda s: processor in s["nodes"]):
                self.book.renew(processor)
            else:
                directive = "shutdown"
        return json_response({"directive": directive, "orchestrator_time": time.time()})

    async def register(self, request: web.Request) -> web.Response:
        """Register an edge node: a one-time join token bound to the node id `name` (24 h), which its agent
        exchanges for its credential (`orca join --token`)."""
        self.api._require_leader()
        body = await read_json(request)
        unknown = sorted(set(body) - {"name", "organization_id"})
        if unknown:
            raise Invalid(f"unknown field {unknown[0]!r}", {"field": unknown[0]})
        name = _node_id(_required_str(body, "name"), "name")
        org = body.get("organization_id")
        if not isinstance(org, str) or not _UUID_RE.fullmatch(org):
            raise Invalid("organization_id: expected a UUID", {"field": "organization_id"})
        if self.api.raft.read(lambda s: name in s["nodes"]):
            raise Conflict(f"node {name!r} is already registered", {"node": name})
        record = await self.api.write(request, "create_join_token", {
            "id": jointoken.new_id(), "role": "worker", "node": name, "rotate": False,
            "expires_at": int(time.time() + DEFAULT_TTL_S + 0.999)})
        fingerprint = self.api.tls.signer() if self.api.tls is not None else None
        return json_response({
            "id": edge_node_uuid(name), "organization_id": org.lower(), "name": name, "status": "online",
            "failover_enabled": True, "failover_target_node_id": None, "last_heartbeat_at": None,
            "join_token": jointoken.make(self.join_key, record["id"], fingerprint),
            "join_token_id": record["id"]}, status=201)

    async def decommission(self, request: web.Request) -> web.Response:
        """Forget the node and its replicas (placed elsewhere); its agent stops its containers at `shutdown`."""
        self.api._require_leader()
        body = await read_json(request)
        unknown = sorted(set(body) - {"node_name"})
        if unknown:
            raise Invalid(f"unknown field {unknown[0]!r}", {"field": unknown[0]})
        name = _node_id(_required_str(body, "node_name"), "node_name")
        result = await self.api.write(request, "decommission_node", {"node_id": name})
        return json_response({"message": f"node {name} decommissioned", "node_name": name,
                              "status": "decommissioned", "apps_stopped": result["apps_stopped"]})
