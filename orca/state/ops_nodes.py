"""Ops on workers: registration, batched lease renewals, node status, and the scheduler's plans."""

from __future__ import annotations

from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.jobs import FINISHED
from orca.state import ops_jobs, ops_volumes
from orca.state.core import Ctx, State, fence, record_event, shared

# --- nodes, leases and placement (leader decisions, fenced by the leader's term) ---------------------

NODE_STATUSES = ("ready", "down", "unreachable")
OBSERVED_FIELDS = ("status", "health", "container_id", "started_at", "restarts", "reason", "host_port", "exit_code")


def _apply_register_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    node_id = args["node_id"]
    if not isinstance(node_id, str) or not node_id:
        raise Invalid("node_id must be a non-empty string", {"field": "node_id"})
    fields = {k: args[k] for k in ("address", "labels", "capacity", "push_token", "agent_version")}
    fields.update({"publish_address": args.get("publish_address") or "127.0.0.1", "proxy": args.get("proxy")})
    node = state["nodes"].get(node_id)
    state.setdefault("removed_nodes", {}).pop(node_id, None)  # a removed node may join again
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


_OBSERVED_STR_MAX = {"status": 32, "health": 32, "container_id": 128, "started_at": 64, "reason": 2048}
_MAX_COUNT = 2**53


def report_problem(rep: Any) -> str | None:
    """Why one node's entry in `node_reports` is malformed (None when it is fine). Pure; also used by the
    leader's LeaseMonitor to keep one node's garbage out of the batch before it proposes."""
    if not isinstance(rep, dict):
        return "report is not a map"
    renewed_at = rep.get("renewed_at")
    if not isinstance(renewed_at, int | float) or isinstance(renewed_at, bool) \
            or not 0 <= renewed_at <= _MAX_COUNT:
        return "renewed_at is not a time"
    allocs = rep.get("allocs")
    if allocs is None:
        return None
    if not isinstance(allocs, dict):
        return "allocs is not a map"
    for alloc_id, observed in allocs.items():
        if not isinstance(alloc_id, str) or not isinstance(observed, dict):
            return "allocs holds a malformed entry"
        for field, limit in _OBSERVED_STR_MAX.items():
            value = observed.get(field)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                return f"{field} of {alloc_id[:64]} is not a short string"
        for field, lo, hi in (("restarts", 0, _MAX_COUNT), ("host_port", 0, 65535), ("exit_code", -(2**31), 2**31)):
            value = observed.get(field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi):
                return f"{field} of {alloc_id[:64]} is out of range"
    return None


def _apply_node_reports(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """One batched lease renewal: per node, the last heartbeat time and (when changed) its allocations.

    A node's allocation list, when present, is complete: stopped allocations it no longer runs are
    forgotten. A heartbeat from a node marked down brings it back to ready (it then reconciles: the
    dispatcher no longer lists the allocations that were moved away). A malformed node entry is skipped
    (listed in the result's `skipped`), never the whole batch: one node's garbage must not stop the
    other nodes' leases. Every entry is checked before anything is written.
    """
    fence(state, args)
    reports = args["nodes"]
    if not isinstance(reports, dict):
        raise Invalid("nodes must be a map")
    # Each node's entry is checked once (at 1,000 nodes of 30 reports, a second pass cost ~0.1 s of the Raft
    # thread on every master at once).
    problems = {n: report_problem(rep) if isinstance(n, str) else "node id is not a string"
                for n, rep in reports.items()}
    skipped = sorted(str(n)[:128] for n, problem in problems.items() if problem)
    reports = {n: rep for n, rep in reports.items() if problems[n] is None}
    renewed, back, reported = 0, [], 0
    # Group once per entry: scanning every allocation per reporting node made one batched renewal of a
    # 1,000-node cluster take ~10 s in the Raft thread (no heartbeats to followers -> election storms).
    with_allocs = {n for n, rep in reports.items() if isinstance(rep, dict) and rep.get("allocs") is not None}
    by_node: dict[str, list[str]] = {}
    if with_allocs:
        for alloc_id, alloc in state["allocations"].items():
            if alloc["node"] in with_allocs:
                by_node.setdefault(alloc["node"], []).append(alloc_id)
    for node_id, rep in sorted(reports.items()):
        node = state["nodes"].get(node_id)
        if node is None:
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
        reported += 1
        for alloc_id in by_node.get(node_id, ()):
            alloc = state["allocations"][alloc_id]
            observed = allocs.get(alloc_id)
            if observed is None:
                if alloc["desired"] == "stop":
                    del state["allocations"][alloc_id]
                continue
            previous = alloc.get("observed") or {}
            running_since = previous.get("running_since") if previous.get("status") == "running" else None
            if observed.get("status") == "running" and running_since is None:
                running_since = ctx.now  # the proposer's clock: min_healthy_s is measured on one timeline
            alloc["observed"] = {k: observed.get(k) for k in OBSERVED_FIELDS} | {
                "status": shared(observed.get("status")), "health": shared(observed.get("health")),
                "at": ctx.now, "running_since": running_since}
            if "run" in alloc and observed.get("status") in FINISHED:
                ops_jobs.record_finished(state, alloc)
    # `leases_only`: this entry moved nothing but `renewed_at` (no allocation report, no node back), so
    # what the leader derives from allocations, services and node statuses still holds (leases_only()).
    return {"renewed": renewed, "back": back, **({"skipped": skipped} if skipped else {}),
            **({"leases_only": True} if not back and not reported else {})}


def leases_only(value: Any) -> bool:
    """Whether an applied entry's value is a `node_reports` that changed nothing but nodes' `renewed_at`.

    At 1,000 nodes such an entry applies every second; a reader that derives something from the
    allocations, services or node statuses (orca.raft.ReplicatedState.layout_generation) keeps it.
    """
    return isinstance(value, dict) and value.get("ok") is True and isinstance(value.get("result"), dict) \
        and value["result"].get("leases_only") is True


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
    """The leader's decisions for one cycle: allocations to create, to stop and to migrate off draining
    nodes (they keep running until their replacement is ready), pending reasons, and drain accounting."""
    fence(state, args)
    place, stop, pending = args["place"], args["stop"], args.get("pending") or {}
    migrate = args.get("migrate") or []
    migrated = set(args.get("migrated") or [])  # stops that complete a migration (replacement ready)
    if not all(isinstance(a, str) for a in [*migrate, *migrated]):
        raise Invalid("migrate ids must be strings")
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
        entry = next((h for h in svc["history"] if h["version"] == int(p["version"])), None)
        spec = entry["spec"] if entry else svc["spec"]
        state["allocations"][p["alloc_id"]] = {
            "id": p["alloc_id"], "service": shared(p["service"]), "version": int(p["version"]),
            "node": shared(p["node"]),
            "index": int(p["index"]), "desired": "run", "created_at": ctx.now, "observed": None,
            "digest": entry["digest"] if entry else svc["digest"],
            "resources": dict(spec.get("resources") or {}),
            **({"run": int(svc.get("run", 0))} if spec.get("kind") == "job" else {})}
        ops_volumes.bind_slots(state, svc, spec, p["node"], int(p["index"]))
    for alloc_id in migrate:
        alloc = state["allocations"].get(alloc_id)
        if alloc is not None and alloc["desired"] == "run":
            alloc["desired"] = "migrate"
            alloc["migrate_at"] = ctx.now
    stopped = []
    for alloc_id in stop:
        alloc = state["allocations"].get(alloc_id)
        if alloc is not None and alloc["desired"] != "stop":
            drain = (state["nodes"].get(alloc["node"]) or {}).get("drain")
            if drain is not None and alloc["desired"] in ("run", "migrate"):
                drain["migrated" if alloc_id in migrated else "stopped"] += 1
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


def _node(state: State, node_id: Any) -> dict[str, Any]:
    node = state["nodes"].get(node_id) if isinstance(node_id, str) else None
    if node is None:
        raise NotFound(f"node {node_id!r} not found", {"node": node_id}, code="NODE_NOT_FOUND")
    return node


def _apply_drain_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Mark a node draining: nothing new lands there; the leader migrates its replicas start-before-stop
    and stops what is left at the deadline (at once with `force`)."""
    node = _node(state, args["node_id"])
    deadline_s, force = args.get("deadline_s", 300), bool(args.get("force", False))
    if not isinstance(deadline_s, int | float) or isinstance(deadline_s, bool) or not 0 <= deadline_s <= 86400:
        raise Invalid("deadline_s must be a number of seconds from 0 to 86400", {"field": "deadline_s"})
    held = ops_volumes.volume_conflict(state, node["id"])
    if held and not force:
        raise Conflict(held, {"node": node["id"]}, code="NODE_HOLDS_VOLUMES")
    if held:
        ops_volumes.forget_node_bindings(state, node["id"], ctx)
    node["eligibility"] = "draining"
    node["drain"] = {"started_at": ctx.now, "deadline": ctx.now + float(deadline_s), "force": force,
                     "migrated": 0, "stopped": 0, "completed_at": None, "by": ctx.actor}
    record_event(state, ctx, "node_draining", f"node {node['id']} draining (deadline {deadline_s:g} s"
                 + (", force)" if force else ")"), node=node["id"])
    result = {"node_id": node["id"], "eligibility": "draining", "drain": dict(node["drain"])}
    if held:
        result["warning"] = held
    return result


def _apply_undrain_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Eligible again; replicas already moved stay where they are."""
    node = _node(state, args["node_id"])
    node["eligibility"] = "eligible"
    node["drain"] = None
    for alloc in state["allocations"].values():
        if alloc["node"] == node["id"] and alloc["desired"] == "migrate":
            alloc["desired"] = "run"  # migration not finished: the replica simply stays
    record_event(state, ctx, "node_eligible", f"node {node['id']} is eligible again", node=node["id"])
    return {"node_id": node["id"], "eligibility": "eligible"}


def _apply_drain_complete(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    fence(state, args)
    node = _node(state, args["node_id"])
    if node["eligibility"] != "draining" or node.get("drain") is None:
        raise Conflict(f"node {node['id']} is not draining", {"node": node["id"]})
    if any(a["node"] == node["id"] for a in state["allocations"].values()):
        raise Conflict(f"node {node['id']} still runs allocations", {"node": node["id"]})
    node["eligibility"] = "ineligible"
    node["drain"]["completed_at"] = ctx.now
    record_event(state, ctx, "node_drained", f"node {node['id']} drained: {node['drain']['migrated']} migrated, "
                 f"{node['drain']['stopped']} stopped", node=node["id"])
    return {"node_id": node["id"], "eligibility": "ineligible"}


REMOVED_KEPT = 1000


def _apply_remove_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Forget a down or drained node; its allocations are gone (the scheduler places replacements) and its
    next heartbeat is answered with `shutdown`."""
    node = _node(state, args["node_id"])
    if node["status"] == "ready" and node["eligibility"] != "ineligible":
        raise Conflict(f"node {node['id']} is ready and not drained: drain it first, or stop its agent",
                       {"node": node["id"], "status": node["status"], "eligibility": node["eligibility"]})
    _forget_node(state, node, ctx)
    record_event(state, ctx, "node_removed", f"node {node['id']} removed", node=node["id"])
    return {"node_id": node["id"], "removed": True}


def _forget_node(state: State, node: dict[str, Any], ctx: Ctx) -> int:
    """Delete a node and its allocations, remember it in `removed_nodes`; the replicas it ran (desired run
    or migrate) are counted, and the scheduler places replacements elsewhere."""
    mine = [a for a in state["allocations"].values() if a["node"] == node["id"]]
    del state["nodes"][node["id"]]
    for alloc in mine:
        del state["allocations"][alloc["id"]]
    removed = state.setdefault("removed_nodes", {})
    removed[node["id"]] = ctx.now
    while len(removed) > REMOVED_KEPT:
        del removed[next(iter(removed))]
    return sum(1 for a in mine if a["desired"] in ("run", "migrate"))


def _apply_decommission_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Dory's decommission (`POST /api/v1/edge/nodes/decommission`): forget a node whatever its status, its
    replicas with it (they are placed elsewhere). Its agent is told `shutdown` at its next heartbeat and
    then stops its containers."""
    node = _node(state, args["node_id"])
    stopped = _forget_node(state, node, ctx)
    record_event(state, ctx, "node_decommissioned", f"node {node['id']} decommissioned: {stopped} replica(s) "
                 "to be placed elsewhere", node=node["id"])
    return {"node_id": node["id"], "decommissioned": True, "apps_stopped": stopped}


OPS = {
    "register_node": _apply_register_node,
    "node_reports": _apply_node_reports,
    "node_status": _apply_node_status,
    "plan": _apply_plan,
    "drain_node": _apply_drain_node,
    "undrain_node": _apply_undrain_node,
    "drain_complete": _apply_drain_complete,
    "remove_node": _apply_remove_node,
    "decommission_node": _apply_decommission_node,
}
