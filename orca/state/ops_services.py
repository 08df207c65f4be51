"""Ops on services: deploy, scale, stop/start/purge, and the leader's own term record."""

from __future__ import annotations

from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import HISTORY_KEPT, Ctx, State, record_event, service_of


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
    svc = service_of(state, args["name"])
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
    svc = service_of(state, args["name"])
    _set_running(state, ctx, [svc["name"]], running=False)
    return {"name": svc["name"], "status": "stopped"}


def _apply_start_service(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = service_of(state, args["name"])
    _set_running(state, ctx, [svc["name"]], running=True)
    return {"name": svc["name"], "status": "running"}


def _apply_purge_service(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = service_of(state, args["name"])
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



OPS = {
    "noop": _apply_noop,
    "leader_elected": _apply_leader_elected,
    "deploy": _apply_deploy,
    "scale": _apply_scale,
    "stop_service": _apply_stop_service,
    "start_service": _apply_start_service,
    "purge_service": _apply_purge_service,
    "stop_project": _apply_stop_project,
    "stop_all": _apply_stop_all,
}
