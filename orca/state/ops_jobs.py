"""Ops on jobs (orca.jobs): a new run on demand (`job_run`) or at a scheduled tick decided by the leader
(`job_tick`, fenced by term and accepted only for a tick newer than the last one, so a failover can
neither repeat nor skip it). A new run removes the finished replicas of earlier runs."""

from __future__ import annotations

from typing import Any

from orca.errors import Conflict, Invalid
from orca.jobs import finished, is_job
from orca.state.core import Ctx, State, fence, record_event, service_of

__all__ = ["OPS", "new_run", "record_finished", "finished_slots"]


def new_run(state: State, svc: dict[str, Any], ctx: Ctx, why: str) -> int:
    run = int(svc.get("run", 0)) + 1
    svc["run"] = run
    svc["state"] = "running"
    svc["updated_at"] = ctx.now
    for alloc in state["allocations"].values():
        if alloc["service"] == svc["name"] and alloc["desired"] == "run" and int(alloc.get("run", 0)) < run \
                and finished(alloc):
            alloc["desired"] = "stop"
            alloc["stopped_at"] = ctx.now
    record_event(state, ctx, "job_run", f"{svc['name']} run {run} ({why})", service=svc["name"],
                 details={"run": run})
    return run


def record_finished(state: State, alloc: dict[str, Any]) -> None:
    """Remember that a job slot of the current run and version ended, in the service itself: the slot then
    stays done even after its allocation is gone (a drain, a node removed), so it never runs twice."""
    svc = state["services"].get(alloc["service"])
    if svc is None or int(alloc.get("run", 0)) != int(svc.get("run", 0)) or alloc["version"] != svc["version"]:
        return
    observed = alloc.get("observed") or {}
    svc.setdefault("finished_slots", {})[str(alloc.get("index", 0))] = {
        "run": int(alloc.get("run", 0)), "version": alloc["version"], "status": observed.get("status"),
        "exit_code": observed.get("exit_code")}


def finished_slots(svc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The current run's and version's ended slots: index -> {status, exit_code}."""
    run, version = int(svc.get("run", 0)), svc["version"]
    return {int(i): f for i, f in (svc.get("finished_slots") or {}).items()
            if f["run"] == run and f["version"] == version}


def _job(state: State, name: Any) -> dict[str, Any]:
    svc = service_of(state, name)
    if not is_job(svc["spec"]):
        raise Conflict(f"{svc['name']} is not a job (kind = \"job\")", {"service": svc["name"]})
    return svc


def _apply_job_run(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    svc = _job(state, args["name"])
    return {"name": svc["name"], "run": new_run(state, svc, ctx, "requested")}


def _apply_job_tick(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    fence(state, args)
    svc = _job(state, args["name"])
    tick = args["tick"]
    if not isinstance(tick, int | float) or isinstance(tick, bool) or not 0 <= tick <= 2**40:
        raise Invalid("tick must be a time", {"field": "tick"})
    if not svc["spec"].get("schedule") or svc["state"] != "running":
        raise Conflict(f"{svc['name']} is not a running periodic job", {"service": svc["name"]})
    last = float(svc.get("last_tick") or svc.get("created_at") or 0.0)
    if float(tick) <= last:
        raise Conflict(f"{svc['name']}: tick {tick:g} already handled", {"service": svc["name"], "last": last},
                       code="TICK_DONE")
    svc["last_tick"] = float(tick)
    return {"name": svc["name"], "run": new_run(state, svc, ctx, f"schedule tick {tick:.0f}"), "tick": float(tick)}


OPS = {"job_run": _apply_job_run, "job_tick": _apply_job_tick}
