"""Ops on services: deploy, scale, stop/start/purge, and the leader's own term record."""

from __future__ import annotations

from typing import Any

from orca import mesh
from orca.errors import Conflict, Invalid, NotFound
from orca.state import ops_volumes
from orca.state.core import HISTORY_KEPT, Ctx, State, fence, record_event, service_of


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


def new_version(svc: dict[str, Any], spec: dict[str, Any], digest: str, ctx: Ctx) -> int:
    """Record a new version in the history; versions only grow (a rollback is a new version too)."""
    version = svc.get("latest_version", svc["version"]) + 1
    svc["latest_version"] = version
    svc["history"].append({"version": version, "digest": digest, "spec": spec, "at": ctx.now})
    del svc["history"][:-HISTORY_KEPT]
    return version


def history_entry(svc: dict[str, Any], version: int) -> dict[str, Any]:
    """The history entry of `version`; Conflict (not StopIteration) once it left the kept history."""
    for entry in svc["history"]:
        if entry["version"] == version:
            return entry
    raise Conflict(f"{svc['name']} version {version} is no longer in the history (only the last "
                   f"{HISTORY_KEPT} versions are kept); deploy its spec again", {"service": svc["name"],
                                                                                  "version": version})


def make_current(state: State, svc: dict[str, Any], version: int, ctx: Ctx, *, reason: str,
                 allocs: list[dict[str, Any]] | None = None) -> None:
    """Roll the service to `version` (in its history): the rollout runs in the leader's loop, from Raft state.

    Allocations already running the same spec (same digest, e.g. after a rollback) are re-tagged to the
    new version instead of being replaced: identical containers are not restarted. `allocs`: the
    service's allocations when the caller has them grouped (a deploy of many services scans once).
    """
    entry = history_entry(svc, version)
    entry["was_current"] = True  # rollback targets only versions that actually ran as the service
    previous = svc["version"]
    svc["version"], svc["digest"] = version, entry["digest"]
    svc["spec"] = {**entry["spec"], "replicas": svc["replicas"]}
    for alloc in state["allocations"].values() if allocs is None else allocs:
        if alloc["service"] == svc["name"] and alloc.get("digest") == entry["digest"]:
            alloc["version"] = version
    if previous != version:
        svc["rollout"] = {"version": version, "from": previous, "state": "rolling", "reason": reason,
                          "started_at": ctx.now, "finished_at": None}


class _VipBook:
    """Hands out mesh VIPs (orca.mesh) within one deploy op: the range comes in the op (the leader's
    `[mesh] vip_range`), so every master assigns the same addresses; a service keeps its VIP for life.
    Services deployed before the mesh existed get theirs at their next deploy."""

    def __init__(self, state: State, vip_range: Any) -> None:
        self.range = vip_range if isinstance(vip_range, str) else mesh.DEFAULT_VIP_RANGE
        try:
            mesh.parse_range(self.range)
        except ValueError:
            self.range = mesh.DEFAULT_VIP_RANGE
        self.state = state
        # Made on the first need (most deploys update, not create), then shared by every service of the op:
        # the addresses in use are read once per op, not once per new service (quadratic at 10,000).
        self.allocator: mesh.VipAllocator | None = None

    def assign(self, svc: dict[str, Any]) -> None:
        if svc.get("vip"):
            return
        if self.allocator is None:
            self.allocator = mesh.VipAllocator(self.range, mesh.vips_in_use(self.state["services"].values()))
        vip = self.allocator.take()
        if vip is not None:  # a full range: the service runs, unreachable through the mesh
            svc["vip"] = vip


def _apply_deploy(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Create or update services. Specs arrive validated and normalized by `orca.spec` on the leader.

    A changed spec (digest) makes a new version. With `canary: N` and replicas already running, the new
    version runs as N canary replicas beside the stable set until promote or rollback; otherwise the
    new version becomes current and the leader rolls it out `update.max_parallel` at a time.
    """
    specs = args["services"]
    if not isinstance(specs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                               for s in specs):
        raise Invalid("deploy needs a list of specs")
    for spec in specs:
        if not isinstance(spec.get("digest"), str) or not isinstance(spec.get("spec"), dict):
            raise Invalid("deploy entries carry {name, spec, digest}")
    deployed, versions = [], {}
    vips = _VipBook(state, args.get("vip_range"))
    by_service: dict[str, list[dict[str, Any]]] | None = None  # allocations per service, made on first need
    for item in specs:
        name, spec, digest = item["name"], item["spec"], item["digest"]
        svc = state["services"].get(name)
        if svc is not None:
            vips.assign(svc)
        if svc is None:
            svc = {"name": name, "project": spec.get("project", "default"), "spec": spec, "version": 1,
                   "latest_version": 1, "digest": digest, "replicas": int(spec.get("replicas", 1)),
                   "state": "running", "created_at": ctx.now, "updated_at": ctx.now, "canary": None,
                   "rollout": None, "pending": None,
                   "history": [{"version": 1, "digest": digest, "spec": spec, "at": ctx.now,
                                "was_current": True}]}
            state["services"][name] = svc
            vips.assign(svc)
            record_event(state, ctx, "service_deployed", f"{name} deployed (version 1)", service=name,
                         details={"version": 1, "replicas": svc["replicas"]})
            deployed.append(name)
            versions[name] = 1
            continue
        if spec.get("schedule") and spec.get("schedule") != svc["spec"].get("schedule"):
            svc["last_tick"] = ctx.now  # a new schedule starts from now: no tick of the past runs at once
        canary_digest = (svc.get("canary") or {}).get("digest")
        changed = digest not in (svc["digest"], canary_digest)
        svc["project"] = spec.get("project", svc["project"])
        svc["replicas"] = int(spec.get("replicas", svc["replicas"]))
        svc["state"] = "running"
        svc["updated_at"] = ctx.now
        if by_service is None:  # one scan per op, not one per updated service (10,000 x 30,000)
            by_service = {}
            for a in state["allocations"].values():
                by_service.setdefault(a["service"], []).append(a)
        mine = by_service.get(name, [])
        has_running = any(a["desired"] == "run" for a in mine)
        message = f"{name} updated, spec unchanged (version {svc['version']})"
        if changed:
            version = new_version(svc, spec, digest, ctx)
            if int(spec.get("canary") or 0) > 0 and has_running:
                svc["canary"] = {"version": version, "digest": digest, "replicas": int(spec["canary"]),
                                 "started_at": ctx.now}
                message = f"{name} version {version} deployed as {spec['canary']} canary replica(s)"
            else:
                svc["canary"] = None
                make_current(state, svc, version, ctx, reason="deploy", allocs=mine)
                message = f"{name} updated to version {version}"
        elif digest == svc["digest"]:
            svc["spec"] = {**spec, "replicas": svc["replicas"]}
        record_event(state, ctx, "service_updated", message, service=name,
                     details={"version": svc["version"], "changed": changed, "replicas": svc["replicas"],
                              "canary": svc.get("canary")})
        deployed.append(name)
        versions[name] = svc["canary"]["version"] if svc.get("canary") else svc["version"]
    return {"deployed": deployed, "versions": versions}


def _apply_promote(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = service_of(state, args["name"])
    canary = svc.get("canary")
    if not canary:
        raise Conflict(f"{svc['name']} has no canary to promote", {"service": svc["name"]})
    history_entry(svc, canary["version"])  # validate before mutating: the canary may have left the history
    svc["canary"] = None
    make_current(state, svc, canary["version"], ctx, reason="promote")
    record_event(state, ctx, "canary_promoted", f"{svc['name']} canary version {canary['version']} promoted",
                 service=svc["name"], details={"version": canary["version"]})
    return {"name": svc["name"], "version": svc["version"]}


def _apply_rollback(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Drop a running canary; without one, roll to the previous version's spec as a new version."""
    svc = service_of(state, args["name"])
    if svc.get("canary"):
        dropped = svc["canary"]["version"]
        svc["canary"] = None
        record_event(state, ctx, "canary_dropped", f"{svc['name']} canary version {dropped} rolled back",
                     service=svc["name"], details={"version": dropped})
        return {"name": svc["name"], "version": svc["version"], "dropped_canary": dropped}
    target = _previous_entry(svc)
    version = new_version(svc, target["spec"], target["digest"], ctx)
    make_current(state, svc, version, ctx, reason=f"rollback to version {target['version']}")
    record_event(state, ctx, "service_rollback",
                 f"{svc['name']} rolled back to the spec of version {target['version']} (now version {version})",
                 service=svc["name"], details={"version": version, "spec_of": target["version"]})
    return {"name": svc["name"], "version": version, "spec_of": target["version"]}


def _previous_entry(svc: dict[str, Any]) -> dict[str, Any]:
    """The newest history entry that ran as the service (not a dropped canary) with a different spec."""
    for entry in reversed(svc["history"]):
        if entry["digest"] != svc["digest"] and entry["version"] < svc["version"] and entry.get("was_current"):
            return entry
    raise Conflict(f"{svc['name']} has no previous version to roll back to", {"service": svc["name"]})


def _apply_rollout_status(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The leader's verdict on a rollout: done, or halted (then auto-reverted when the spec asks for it)."""
    fence(state, args)
    svc = service_of(state, args["name"])
    rollout = svc.get("rollout")
    verdict = args["state"]
    if verdict not in ("done", "halted"):
        raise Invalid("state must be done or halted", {"field": "state"})
    if not rollout or rollout["version"] != args["version"] or rollout["state"] != "rolling":
        raise Conflict("no such rollout in progress", {"service": svc["name"], "version": args["version"]})
    rollout.update({"state": verdict, "reason": args.get("reason") or rollout["reason"], "finished_at": ctx.now})
    if verdict == "done":
        record_event(state, ctx, "rollout_done", f"{svc['name']} version {rollout['version']} rolled out",
                     service=svc["name"], details={"version": rollout["version"]})
        return {"name": svc["name"], "state": "done"}
    record_event(state, ctx, "rollout_halted",
                 f"{svc['name']} version {rollout['version']} halted: {args.get('reason')}", service=svc["name"],
                 details={"version": rollout["version"], "reason": args.get("reason")})
    reverted_to = None
    if (svc["spec"].get("update") or {}).get("auto_revert", True):
        target = next((h for h in svc["history"] if h["version"] == rollout["from"]), None)
        if target is not None and target["digest"] != svc["digest"]:
            version = new_version(svc, target["spec"], target["digest"], ctx)
            make_current(state, svc, version, ctx, reason=f"auto-revert to version {target['version']}")
            svc["rollout"]["reverted_from"] = rollout["version"]
            reverted_to = version
            record_event(state, ctx, "rollout_reverted",
                         f"{svc['name']} reverted to the spec of version {target['version']} (now version {version})",
                         service=svc["name"], details={"version": version, "spec_of": target["version"]})
    return {"name": svc["name"], "state": "halted", "reverted_to": reverted_to}


def _apply_scale(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = service_of(state, args["name"])
    replicas = args["replicas"]
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 1000:
        raise Invalid("replicas must be an integer between 0 and 1000", {"field": "replicas"})
    previous = svc["replicas"]
    svc["replicas"] = replicas
    svc["spec"] = {**svc["spec"], "replicas": replicas}
    svc["updated_at"] = ctx.now
    scaling = svc["spec"].get("scaling")
    manual_now = bool(scaling and scaling.get("mode") == "auto")
    if manual_now:  # an operator's scale wins: autoscaling is off until the policy is set again
        svc["spec"]["scaling"] = {**scaling, "mode": "manual"}
    record_event(state, ctx, "service_scaled", f"{svc['name']} scaled {previous} -> {replicas}"
                 + (" (autoscaling switched to manual)" if manual_now else ""),
                 service=svc["name"], details={"previous": previous, "replicas": replicas})
    result = {"name": svc["name"], "previous_replicas": previous, "replicas": replicas}
    if svc["spec"].get("scaling"):
        result["scaling_mode"] = svc["spec"]["scaling"].get("mode")
    return result


def _apply_autoscale(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The leader's autoscaler decided: the new count, with its reason and the figures behind it."""
    fence(state, args)
    svc = service_of(state, args["name"])
    replicas = args["replicas"]
    scaling = svc["spec"].get("scaling") or {}
    if scaling.get("mode") != "auto":
        raise Conflict(f"{svc['name']} is not autoscaled", {"service": svc["name"]})
    if not isinstance(replicas, int) or not scaling.get("min_replicas", 0) <= replicas <= scaling.get(
            "max_replicas", 1000):
        raise Invalid("replicas outside the scaling policy's bounds", {"field": "replicas"})
    previous = svc["replicas"]
    svc["replicas"] = replicas
    svc["spec"] = {**svc["spec"], "replicas": replicas}
    svc["updated_at"] = ctx.now
    record_event(state, ctx, "autoscaled", f"{svc['name']} autoscaled {previous} -> {replicas}: {args.get('reason')}",
                 service=svc["name"], details={"previous": previous, "replicas": replicas,
                                               "reason": args.get("reason"), "figures": args.get("figures") or {}})
    return {"name": svc["name"], "previous_replicas": previous, "replicas": replicas}


def _apply_set_scaling(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Set (or clear, with None) the autoscaling policy; validated by `orca.spec` on the proposer."""
    svc = service_of(state, args["name"])
    scaling = args["scaling"]
    if scaling is not None and not isinstance(scaling, dict):
        raise Invalid("scaling must be an object or null", {"field": "scaling"})
    svc["spec"] = {**svc["spec"], "scaling": scaling}
    svc["updated_at"] = ctx.now
    record_event(state, ctx, "scaling_set", f"{svc['name']} scaling policy: "
                 + (f"{scaling.get('mode')} {scaling.get('min_replicas')}..{scaling.get('max_replicas')}"
                    if scaling else "none"), service=svc["name"], details={"scaling": scaling})
    return {"name": svc["name"], "scaling": scaling}


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
    for slot, binding in sorted((svc.get("volumes") or {}).items()):
        ops_volumes.tombstone(state, name, slot, binding)  # --purge removes the data too
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
    "promote": _apply_promote,
    "rollback": _apply_rollback,
    "rollout_status": _apply_rollout_status,
    "autoscale": _apply_autoscale,
    "set_scaling": _apply_set_scaling,
}
