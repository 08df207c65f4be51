"""The replicated state machine: one pure `apply(state, entry, index)` over plain data.

Contract (hashicorp/raft's FSM, Nomad's fsm.go):
- An entry is a msgpack map `{"op": str, "now": float, "args": {...}, "key": str|None, "actor": str|None}`.
  The proposer (the leader) stamps `now` and makes every id; apply never reads a clock, never draws a
  random number, never does I/O. Every master applies the same entries in the same order and ends with
  the same state.
- Every op is one `_apply_<op>(state, args, ctx)` of the same shape, registered in `OPS`. Ops are only ever
  added: an old journal must replay to the same state forever. An unknown op is an error value, loudly.
- Ops validate everything before they mutate anything, so a rejected entry leaves the state untouched
  (no partial write). Errors are returned as values (`{"error": {...}}`), never raised out of apply.
- A write with an idempotency key stores its result; the same key applied again returns the stored
  result and changes nothing (a client retrying across a failover gets the first answer).
- The state is plain dicts/lists/str/int/float/bool/None only, so PySyncObj's default snapshot (pickle)
  and msgpack both round-trip it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from orca.errors import Conflict, Invalid, NotFound, OrcaError, ServiceNotFound

__all__ = ["new_state", "apply", "encode_entry", "decode_entry", "OPS", "EVENTS_KEPT", "IDEMPOTENCY_KEPT",
           "HISTORY_KEPT", "Entry"]

EVENTS_KEPT = 1000
IDEMPOTENCY_KEPT = 4096
HISTORY_KEPT = 10

Entry = dict[str, Any]
State = dict[str, Any]


def new_state() -> State:
    """The empty cluster: every table present so readers never need `.get` with defaults."""
    return {
        "services": {},
        "nodes": {},
        "allocations": {},
        "tokens": {},
        "webhooks": {},
        "secrets": {},
        "events": [],
        "event_seq": 0,
        "idempotency": {},
        "leader": {"term": 0, "node": None, "since": None},
    }


def encode_entry(op: str, args: dict[str, Any], *, now: float, key: str | None = None,
                 actor: str | None = None) -> bytes:
    """Serialize a proposal. msgpack, not pickle: entries outlive code versions and stay readable."""
    return msgpack.packb({"op": op, "now": float(now), "args": args, "key": key, "actor": actor},
                         use_bin_type=True)


def decode_entry(raw: bytes) -> Entry:
    entry = msgpack.unpackb(raw, raw=False)
    if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
        raise Invalid("malformed entry")
    if not isinstance(entry.get("args", {}), dict):
        raise Invalid("malformed entry args")
    return entry


@dataclass(frozen=True)
class Ctx:
    """What an op may know besides its args: the proposer's clock, the actor, the log index."""

    now: float
    actor: str | None
    index: int


def apply(state: State, raw: bytes, index: int = 0) -> dict[str, Any]:
    """Apply one committed entry; return `{"ok": True, "result": ...}` or `{"error": {...}}`."""
    try:
        entry = decode_entry(raw)
    except Exception:  # noqa: BLE001 - a corrupt entry must not stop the state machine
        return Invalid("malformed entry").as_value()
    key = entry.get("key")
    op = entry["op"]
    if key is not None:
        seen = state["idempotency"].get(key)
        if seen is not None:
            if seen["op"] != op:
                return Conflict("Idempotency-Key was already used for a different request",
                                {"key": key, "op": seen["op"]}).as_value()
            return {**seen["result"], "replayed": True}
    handler = OPS.get(op)
    if handler is None:
        result = Invalid(f"unknown op {op!r}", {"op": op}).as_value()
    else:
        ctx = Ctx(now=float(entry.get("now") or 0.0), actor=entry.get("actor"), index=index)
        try:
            result = {"ok": True, "result": handler(state, entry.get("args") or {}, ctx)}
        except OrcaError as err:
            result = err.as_value()
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            # Ops validate before mutating, so a bad argument that slips through leaves no partial write.
            result = Invalid(f"bad arguments for {op}: {type(err).__name__}", {"op": op}).as_value()
    if key is not None:
        _remember_key(state, key, op, result)
    return result


def _remember_key(state: State, key: str, op: str, result: dict[str, Any]) -> None:
    keys = state["idempotency"]
    keys[key] = {"op": op, "result": result}
    while len(keys) > IDEMPOTENCY_KEPT:
        del keys[next(iter(keys))]  # insertion order: the oldest key goes first, on every master alike


def record_event(state: State, ctx: Ctx, type_: str, message: str, *, service: str | None = None,
                 node: str | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    state["event_seq"] += 1
    event = {"seq": state["event_seq"], "time": ctx.now, "type": type_, "service": service, "node": node,
             "actor": ctx.actor, "message": message, "details": details or {}}
    events = state["events"]
    events.append(event)
    if len(events) > EVENTS_KEPT:
        del events[: len(events) - EVENTS_KEPT]
    return event


def _service(state: State, name: Any) -> dict[str, Any]:
    svc = state["services"].get(name) if isinstance(name, str) else None
    if svc is None:
        raise ServiceNotFound(f"service {name!r} not found", {"service": name})
    return svc


# --- ops -------------------------------------------------------------------------------------------

def _apply_noop(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """A barrier: committing it proves leadership and makes later local reads linearizable."""
    return {"index": ctx.index}


def _apply_leader_elected(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The new leader's first entry: records the term that fences everything it does afterwards."""
    term, node = int(args["term"]), str(args["node"])
    if term < state["leader"]["term"]:
        raise Conflict("stale leader term", {"term": term, "current": state["leader"]["term"]})
    state["leader"] = {"term": term, "node": node, "since": ctx.now}
    record_event(state, ctx, "leader_elected", f"{node} leads term {term}", details={"term": term})
    return {"term": term}


def _apply_deploy(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Create or update services. Specs arrive validated and normalized by `orca.spec` on the leader."""
    specs = args["services"]
    if not isinstance(specs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                               for s in specs):
        raise Invalid("deploy needs a list of specs")
    for spec in specs:
        if not isinstance(spec.get("digest"), str) or not isinstance(spec.get("spec"), dict):
            raise Invalid("deploy entries carry {name, spec, digest}")
    deployed, versions = [], {}
    for item in specs:
        name, spec, digest = item["name"], item["spec"], item["digest"]
        svc = state["services"].get(name)
        if svc is None:
            svc = {"name": name, "project": spec.get("project", "default"), "spec": spec, "version": 1,
                   "digest": digest, "replicas": int(spec.get("replicas", 1)), "state": "running",
                   "created_at": ctx.now, "updated_at": ctx.now, "canary": None,
                   "history": [{"version": 1, "digest": digest, "spec": spec, "at": ctx.now}]}
            state["services"][name] = svc
            record_event(state, ctx, "service_deployed", f"{name} deployed (version 1)", service=name,
                         details={"version": 1, "replicas": svc["replicas"]})
        else:
            changed = svc["digest"] != digest
            svc["spec"] = spec
            svc["project"] = spec.get("project", svc["project"])
            svc["replicas"] = int(spec.get("replicas", svc["replicas"]))
            svc["state"] = "running"
            svc["updated_at"] = ctx.now
            if changed:
                svc["version"] += 1
                svc["digest"] = digest
                svc["history"].append({"version": svc["version"], "digest": digest, "spec": spec,
                                       "at": ctx.now})
                del svc["history"][:-HISTORY_KEPT]
            record_event(state, ctx, "service_updated",
                         f"{name} updated (version {svc['version']}{'' if changed else ', spec unchanged'})",
                         service=name, details={"version": svc["version"], "changed": changed,
                                                "replicas": svc["replicas"]})
        deployed.append(name)
        versions[name] = svc["version"]
    return {"deployed": deployed, "versions": versions}


def _apply_scale(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = _service(state, args["name"])
    replicas = args["replicas"]
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 1000:
        raise Invalid("replicas must be an integer between 0 and 1000", {"field": "replicas"})
    previous = svc["replicas"]
    svc["replicas"] = replicas
    svc["spec"] = {**svc["spec"], "replicas": replicas}
    svc["updated_at"] = ctx.now
    record_event(state, ctx, "service_scaled", f"{svc['name']} scaled {previous} -> {replicas}",
                 service=svc["name"], details={"previous": previous, "replicas": replicas})
    return {"name": svc["name"], "previous_replicas": previous, "replicas": replicas}


def _set_running(state: State, ctx: Ctx, names: list[str], running: bool) -> list[str]:
    changed = []
    for name in names:
        svc = state["services"][name]
        target = "running" if running else "stopped"
        if svc["state"] != target:
            svc["state"] = target
            svc["updated_at"] = ctx.now
            changed.append(name)
            record_event(state, ctx, "service_started" if running else "service_stopped",
                         f"{name} {'started' if running else 'stopped'}", service=name)
    return changed


def _apply_stop_service(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = _service(state, args["name"])
    _set_running(state, ctx, [svc["name"]], running=False)
    return {"name": svc["name"], "status": "stopped"}


def _apply_start_service(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = _service(state, args["name"])
    _set_running(state, ctx, [svc["name"]], running=True)
    return {"name": svc["name"], "status": "running"}


def _apply_purge_service(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = _service(state, args["name"])
    name = svc["name"]
    del state["services"][name]
    # Allocations of a purged service are asked to stop; the dispatcher removes them from nodes.
    for alloc in state["allocations"].values():
        if alloc.get("service") == name:
            alloc["desired"] = "stop"
    record_event(state, ctx, "service_purged", f"{name} purged", service=name)
    return {"name": name, "purged": True}


def _apply_stop_project(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    project = args["project"]
    if not isinstance(project, str):
        raise Invalid("project must be a string", {"field": "project"})
    names = sorted(n for n, s in state["services"].items() if s["project"] == project)
    if not names:
        raise NotFound(f"project {project!r} has no services", {"project": project})
    changed = _set_running(state, ctx, names, running=False)
    return {"project": project, "services": names, "stopped": changed}


def _apply_stop_all(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    names = sorted(state["services"])
    changed = _set_running(state, ctx, names, running=False)
    return {"services": names, "stopped": changed}


_ROLES = ("viewer", "deployer", "admin", "agent")


def _apply_create_token(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    jti, name, role = args["jti"], args["name"], args["role"]
    if not (isinstance(jti, str) and jti and isinstance(name, str) and name and role in _ROLES):
        raise Invalid("token needs jti, name and a known role")
    if jti in state["tokens"]:
        raise Conflict(f"token {jti} already exists", {"jti": jti})
    expires_at, iat = args.get("expires_at"), args.get("iat")
    if not isinstance(iat, int) or not (expires_at is None or isinstance(expires_at, int)):
        raise Invalid("token iat and expires_at must be integers")
    record = {"jti": jti, "name": name, "role": role, "iat": iat, "created_at": ctx.now, "created_by": ctx.actor,
              "expires_at": expires_at, "revoked": False, "revoked_at": None}
    state["tokens"][jti] = record
    record_event(state, ctx, "token_created", f"token {name!r} ({role}) created", details={"jti": jti})
    return dict(record)


def _apply_revoke_token(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Revoke a recorded token, or record a tombstone for one minted offline (so it can be revoked too)."""
    jti = args["jti"]
    if not isinstance(jti, str) or not jti:
        raise Invalid("jti must be a non-empty string", {"field": "jti"})
    record = state["tokens"].get(jti)
    if record is None:
        record = {"jti": jti, "name": None, "role": None, "iat": None, "created_at": None, "created_by": None,
                  "expires_at": None, "revoked": False, "revoked_at": None}
        state["tokens"][jti] = record
    if not record["revoked"]:
        record["revoked"] = True
        record["revoked_at"] = ctx.now
        record_event(state, ctx, "token_revoked", f"token {jti} revoked", details={"jti": jti})
    return dict(record)


# --- nodes, leases and placement (leader decisions, fenced by the leader's term) ---------------------

NODE_STATUSES = ("ready", "down", "unreachable")
OBSERVED_FIELDS = ("status", "health", "container_id", "started_at", "restarts", "reason", "host_port")


def _fence(state: State, args: dict[str, Any]) -> None:
    """Refuse a leader decision made in a term older than the newest committed leader's."""
    term = args["term"]
    if not isinstance(term, int) or term < state["leader"]["term"]:
        raise Conflict("decision from a stale leader term", {"term": term, "current": state["leader"]["term"]},
                       code="STALE_LEADER")


def _apply_register_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    node_id = args["node_id"]
    if not isinstance(node_id, str) or not node_id:
        raise Invalid("node_id must be a non-empty string", {"field": "node_id"})
    fields = {k: args[k] for k in ("address", "labels", "capacity", "push_token", "agent_version")}
    node = state["nodes"].get(node_id)
    if node is None:
        node = {"id": node_id, "eligibility": "eligible", "registered_at": ctx.now, "status_reason": None,
                "drain": None}
        state["nodes"][node_id] = node
        record_event(state, ctx, "node_registered", f"node {node_id} joined at {fields['address']}", node=node_id)
    elif node["status"] != "ready":
        record_event(state, ctx, "node_ready", f"node {node_id} registered again", node=node_id)
    node.update(fields)
    node.update({"status": "ready", "status_reason": None, "renewed_at": ctx.now, "status_since": ctx.now})
    return {"node_id": node_id}


def _apply_node_reports(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """One batched lease renewal: per node, the last heartbeat time and (when changed) its allocations.

    A node's allocation list, when present, is complete: stopped allocations it no longer runs are
    forgotten. A heartbeat from a node marked down brings it back to ready (it then reconciles: the
    dispatcher no longer lists the allocations that were moved away).
    """
    _fence(state, args)
    reports = args["nodes"]
    if not isinstance(reports, dict):
        raise Invalid("nodes must be a map")
    renewed, back = 0, []
    for node_id, rep in sorted(reports.items()):
        node = state["nodes"].get(node_id)
        if node is None or not isinstance(rep, dict):
            continue
        node["renewed_at"] = float(rep["renewed_at"])
        renewed += 1
        if node["status"] == "down":
            node.update({"status": "ready", "status_reason": None, "status_since": ctx.now})
            back.append(node_id)
            record_event(state, ctx, "node_ready", f"node {node_id} is back", node=node_id)
        allocs = rep.get("allocs")
        if allocs is None:
            continue
        for alloc_id, alloc in list(state["allocations"].items()):
            if alloc["node"] != node_id:
                continue
            observed = allocs.get(alloc_id)
            if observed is None:
                if alloc["desired"] == "stop":
                    del state["allocations"][alloc_id]
                continue
            alloc["observed"] = {k: observed.get(k) for k in OBSERVED_FIELDS} | {"at": ctx.now}
    return {"renewed": renewed, "back": back}


def _apply_node_status(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The leader decided a node is down (lease expired) or unreachable (dispatches fail), or ready again."""
    _fence(state, args)
    node_id, status = args["node_id"], args["status"]
    node = state["nodes"].get(node_id) if isinstance(node_id, str) else None
    if node is None:
        raise NotFound(f"node {node_id!r} not found", {"node": node_id}, code="NODE_NOT_FOUND")
    if status not in NODE_STATUSES:
        raise Invalid(f"status must be one of {', '.join(NODE_STATUSES)}", {"field": "status"})
    if node["status"] != status:
        node.update({"status": status, "status_reason": args.get("reason"), "status_since": ctx.now})
        reason = args.get("reason")
        record_event(state, ctx, f"node_{status}", f"node {node_id} is {status}" + (f": {reason}" if reason else ""),
                     node=node_id)
    return {"node_id": node_id, "status": status}


def _apply_plan(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The scheduler's decisions for one cycle: allocations to create and to stop, and pending reasons."""
    _fence(state, args)
    place, stop, pending = args["place"], args["stop"], args.get("pending") or {}
    for p in place:
        if p["service"] not in state["services"] or p["node"] not in state["nodes"]:
            raise Invalid("placement refers to an unknown service or node", {"placement": p})
        if p["alloc_id"] in state["allocations"]:
            raise Conflict("allocation id already exists", {"alloc": p["alloc_id"]})
    for alloc_id in stop:
        if not isinstance(alloc_id, str):
            raise Invalid("stop ids must be strings")
    for p in place:
        svc = state["services"][p["service"]]
        state["allocations"][p["alloc_id"]] = {
            "id": p["alloc_id"], "service": p["service"], "version": int(p["version"]), "node": p["node"],
            "index": int(p["index"]), "desired": "run", "created_at": ctx.now, "observed": None,
            "resources": dict(svc["spec"].get("resources") or {})}
    stopped = []
    for alloc_id in stop:
        alloc = state["allocations"].get(alloc_id)
        if alloc is not None and alloc["desired"] != "stop":
            alloc["desired"] = "stop"
            alloc["stopped_at"] = ctx.now
            stopped.append(alloc_id)
    for name, svc in state["services"].items():
        svc["pending"] = pending.get(name)
    by_service: dict[str, list[str]] = {}
    for p in place:
        by_service.setdefault(p["service"], []).append(p["node"])
    for name, nodes in sorted(by_service.items()):
        record_event(state, ctx, "replicas_placed", f"{len(nodes)} replica(s) of {name} placed on "
                     + ", ".join(sorted(set(nodes))), service=name)
    return {"placed": len(place), "stopped": len(stopped)}


def _apply_set_secret(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Store a secret, already encrypted by the proposer (the journal never holds the plain value)."""
    key, ciphertext = args["key"], args["ciphertext"]
    if not isinstance(key, str) or not key or not isinstance(ciphertext, str):
        raise Invalid("secret needs a key and a ciphertext")
    existed = key in state["secrets"]
    state["secrets"][key] = {"key": key, "ciphertext": ciphertext, "updated_at": ctx.now,
                             "created_at": state["secrets"][key]["created_at"] if existed else ctx.now}
    record_event(state, ctx, "secret_set", f"secret {key} {'updated' if existed else 'created'}")
    return {"key": key, "created": not existed}


def _apply_delete_secret(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    key = args["key"]
    if key not in state["secrets"]:
        raise NotFound(f"secret {key!r} not found", {"key": key})
    del state["secrets"][key]
    record_event(state, ctx, "secret_deleted", f"secret {key} deleted")
    return {"key": key, "deleted": True}


OPS: dict[str, Callable[[State, dict[str, Any], Ctx], dict[str, Any]]] = {
    "noop": _apply_noop,
    "leader_elected": _apply_leader_elected,
    "deploy": _apply_deploy,
    "scale": _apply_scale,
    "stop_service": _apply_stop_service,
    "start_service": _apply_start_service,
    "purge_service": _apply_purge_service,
    "stop_project": _apply_stop_project,
    "stop_all": _apply_stop_all,
    "create_token": _apply_create_token,
    "revoke_token": _apply_revoke_token,
    "register_node": _apply_register_node,
    "node_reports": _apply_node_reports,
    "node_status": _apply_node_status,
    "plan": _apply_plan,
    "set_secret": _apply_set_secret,
    "delete_secret": _apply_delete_secret,
}


def snapshot(state: State) -> State:
    """A deep copy readers can hold without the lock (tests use it for round-trips)."""
    return copy.deepcopy(state)
