"""Ops on workers: registration, batched lease renewals, node status, and the scheduler's plans."""

from __future__ import annotations

from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import Ctx, State, fence, record_event

# --- nodes, leases and placement (leader decisions, fenced by the leader's term) ---------------------

NODE_STATUSES = ("ready", "down", "unreachable")
OBSERVED_FIELDS = ("status", "health", "container_id", "started_at", "restarts", "reason", "host_port")


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
    fence(state, args)
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
    fence(state, args)
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
    fence(state, args)
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



OPS = {
    "register_node": _apply_register_node,
    "node_reports": _apply_node_reports,
    "node_status": _apply_node_status,
    "plan": _apply_plan,
}
