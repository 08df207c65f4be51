"""Read-side shapes built from the applied state (pure: state in, JSON-ready dicts out).

These run under the state lock, so they copy what they return and never hand out references into the
state. What the cluster only knows from old reports is shown as such ("unknown since T"), never as a
green "running".
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from orca.jobs import is_job

__all__ = ["history_view", "service_summary", "service_detail", "status_list", "events_query", "token_list", "iso",
           "node_view"]


_ISO_MAX = "9999-12-31T23:59:59.999Z"


def iso(ts: float | None) -> str | None:
    """ISO-8601 UTC; a time beyond year 9999 (a huge ttl recorded before it was bounded) reads as the end."""
    if ts is None:
        return None
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return _ISO_MAX if ts > 0 else "1970-01-01T00:00:00.000Z"


def _allocs_of(state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    # "migrate": still running on a draining node until its replacement is ready, so it still serves
    return [a for a in state["allocations"].values()
            if a.get("service") == name and a.get("desired") in ("run", "migrate")]


# A node's reports count as current while its last committed renewal is younger than this (set from the
# lease TTL at start-up). Older, and what it said is shown as "unknown since T" even before the leader
# has declared it down (e.g. during a new leader's grace period after a full restart).
STALE_AFTER_S: float | None = None


def configure(stale_after_s: float | None) -> None:
    global STALE_AFTER_S
    STALE_AFTER_S = stale_after_s


def _fresh(node: dict[str, Any]) -> bool:
    if node.get("status") != "ready":
        return False
    if STALE_AFTER_S is None or node.get("renewed_at") is None:
        return True
    return time.time() - float(node["renewed_at"]) <= STALE_AFTER_S


def _node_ready(state: dict[str, Any], node_id: str) -> bool:
    node = state["nodes"].get(node_id)
    return node is not None and _fresh(node)


def live_allocs_by_service(state: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """`_allocs_of` for every service in one scan (a list of 1,000 services was 1,000 scans)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in state["allocations"].values():
        if a.get("desired") in ("run", "migrate"):
            out.setdefault(a.get("service"), []).append(a)
    return out


def _counts(state: dict[str, Any], svc: dict[str, Any],
            allocs: list[dict[str, Any]] | None = None) -> tuple[int, int]:
    """Running and healthy replicas of the current version, on nodes whose reports are current."""
    running = healthy = 0
    for alloc in _allocs_of(state, svc["name"]) if allocs is None else allocs:
        if not _node_ready(state, alloc["node"]):
            continue  # what a down node last said is stale: not counted as running
        observed = alloc.get("observed") or {}
        if observed.get("status") == "running":
            running += 1
            if observed.get("health") in (None, "healthy"):  # None: no health check, running counts
                healthy += 1
    return running, healthy


def _pending_reason(state: dict[str, Any], svc: dict[str, Any], running: int) -> str | None:
    if svc["state"] != "running" or running >= svc["replicas"]:
        return None
    pending = (svc.get("pending") or {}).get("reason")
    if pending:
        return str(pending)
    if not state["nodes"]:
        return "no nodes"
    return "starting"


def _status(svc: dict[str, Any], running: int) -> str:
    if svc["state"] == "stopped":
        return "stopped"
    if svc["replicas"] == 0:
        return "running"
    if running == 0:
        return "pending"
    if running < svc["replicas"]:
        return "degraded"
    return "running"


def _job_status(state: dict[str, Any], svc: dict[str, Any], running: int) -> tuple[str, dict[str, Any]]:
    """A job's status from its current run: complete (every slot exited 0), failed (a slot gave up),
    running, pending, or waiting (a periodic job before its first tick)."""
    run = int(svc.get("run", 0))
    mine = [a for a in _allocs_of(state, svc["name"]) if int(a.get("run", 0)) == run
            and a["version"] == svc["version"]]
    ended = {int(i): f for i, f in (svc.get("finished_slots") or {}).items()
             if f.get("run") == run and f.get("version") == svc["version"]}
    for a in mine:  # an ended replica not yet recorded (the report is on its way) counts too
        observed = a.get("observed") or {}
        if observed.get("status") in ("complete", "dead"):
            ended.setdefault(int(a.get("index", 0)), {"status": observed["status"],
                                                      "exit_code": observed.get("exit_code")})
    finals = [f["status"] for _, f in sorted(ended.items())]
    codes = [f.get("exit_code") for _, f in sorted(ended.items())]
    info = {"run": run, "complete": finals.count("complete"), "failed": finals.count("dead"),
            "exit_codes": codes, "schedule": svc["spec"].get("schedule"), "last_tick": iso(svc.get("last_tick"))}
    if svc["state"] == "stopped":
        return "stopped", info
    if svc["spec"].get("schedule") and run == 0:
        return "waiting", info
    if info["failed"]:
        return "failed", info
    if svc["replicas"] and info["complete"] >= svc["replicas"]:
        return "complete", info
    return ("running" if running else "pending"), info


def service_summary(state: dict[str, Any], svc: dict[str, Any],
                    allocs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    running, healthy = _counts(state, svc, allocs)
    spec = svc["spec"]
    if is_job(spec):
        status, job = _job_status(state, svc, running)
        return {"name": svc["name"], "project": svc["project"], "status": status, "kind": "job", "job": job,
                "replicas": svc["replicas"], "running_replicas": running, "healthy_replicas": healthy,
                "image": spec.get("image"), "domain": spec.get("domain"), "version": svc["version"],
                "pending_reason": None if status in ("complete", "failed", "waiting") else
                _pending_reason(state, svc, running), "updated_at": iso(svc.get("updated_at"))}
    return {"name": svc["name"], "project": svc["project"], "status": _status(svc, running),
            "replicas": svc["replicas"], "running_replicas": running, "healthy_replicas": healthy,
            "image": spec.get("image"), "domain": spec.get("domain"), "version": svc["version"],
            "pending_reason": _pending_reason(state, svc, running),
            "rollout": (svc.get("rollout") or {}).get("state"),
            "canary_version": (svc.get("canary") or {}).get("version"),
            "updated_at": iso(svc.get("updated_at"))}


def status_list(state: dict[str, Any], project: str | None) -> list[dict[str, Any]]:
    by_service = live_allocs_by_service(state)
    return [service_summary(state, svc, by_service.get(name, [])) for name, svc in sorted(state["services"].items())
            if project is None or svc["project"] == project]


def service_detail(state: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    summary = service_summary(state, svc)
    containers = []
    for alloc in sorted(_allocs_of(state, svc["name"]), key=lambda a: (a.get("index", 0), a["id"])):
        observed = alloc.get("observed") or {}
        status, health = observed.get("status", "pending"), observed.get("health")
        node = state["nodes"].get(alloc["node"]) or {}
        if not _fresh(node) and observed:
            status = health = f"unknown since {iso(node.get('renewed_at'))}"
        containers.append({"id": observed.get("container_id"), "alloc": alloc["id"], "node": alloc.get("node"),
                           "index": alloc.get("index"), "version": alloc.get("version"), "status": status,
                           "health": health, "started_at": observed.get("started_at"),
                           "restarts": observed.get("restarts", 0), "reason": observed.get("reason"),
                           "host_port": observed.get("host_port"), "exit_code": observed.get("exit_code"),
                           **({"run": alloc["run"]} if "run" in alloc else {})})
    events = [dict(e, time=iso(e["time"])) for e in state["events"] if e.get("service") == svc["name"]][-20:]
    return {"name": svc["name"], "project": svc["project"], "version": svc["version"],
            **({"kind": "job", "job": summary["job"]} if "job" in summary else {}),
            "spec": svc["spec"], "status": summary["status"],
            "replicas": {"desired": svc["replicas"], "running": summary["running_replicas"],
                         "healthy": summary["healthy_replicas"]},
            "pending_reason": summary["pending_reason"], "containers": containers,
            "canary": svc.get("canary"), "rollout": _rollout_view(svc), "events": events,
            "vip": svc.get("vip"),  # the service mesh's address of the service (orca.mesh), None before one
            "created_at": iso(svc.get("created_at")), "updated_at": iso(svc.get("updated_at"))}


def _rollout_view(svc: dict[str, Any]) -> dict[str, Any] | None:
    rollout = svc.get("rollout")
    if not rollout:
        return None
    return {**rollout, "started_at": iso(rollout.get("started_at")), "finished_at": iso(rollout.get("finished_at"))}


def history_view(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Newest first; `changed` names the spec fields that differ from the version before (what a
    reader of the history wants to know; the values stay out, since env may hold sensitive text)."""
    canary = (svc.get("canary") or {}).get("version")
    out, previous = [], None
    for h in svc["history"]:
        spec = h["spec"]
        changed = [] if previous is None else sorted(
            k for k in set(spec) | set(previous) if k != "replicas" and spec.get(k) != previous.get(k))
        out.append({"version": h["version"], "digest": h["digest"], "image": spec.get("image"), "at": iso(h["at"]),
                    "current": h["version"] == svc["version"], "canary": h["version"] == canary,
                    "changed": changed})
        previous = spec
    return out[::-1]


def events_query(state: dict[str, Any], *, service: str | None, type_: str | None,
                 since_seq: int | None, since_time: float | None, limit: int) -> list[dict[str, Any]]:
    out = []
    for event in state["events"]:
        if service is not None and event.get("service") != service:
            continue
        if type_ is not None and event["type"] != type_:
            continue
        if since_seq is not None and event["seq"] <= since_seq:
            continue
        if since_time is not None and event["time"] < since_time:
            continue
        out.append(dict(event, time=iso(event["time"])))
    return out[-limit:]


def token_list(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(t, created_at=iso(t.get("created_at")), revoked_at=iso(t.get("revoked_at")),
                 expires_at=iso(t.get("expires_at")))
            for t in sorted(state["tokens"].values(), key=lambda t: (t.get("created_at") or 0, t["jti"]))]


def _drain_view(state: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    drain = node.get("drain")
    if drain is None:
        return None  # (the scan below runs only for draining nodes)
    remaining = sum(1 for a in state["allocations"].values() if a["node"] == node["id"])
    return {"deadline": iso(drain["deadline"]), "started_at": iso(drain["started_at"]), "force": drain["force"],
            "remaining": remaining, "migrated": drain["migrated"], "failed": drain["stopped"],
            "complete": drain["completed_at"] is not None, "completed_at": iso(drain["completed_at"])}


def allocations_by_node(state: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in state["allocations"].values():
        if a["desired"] in ("run", "migrate"):
            out.setdefault(a["node"], []).append(a)
    return out


def node_view(state: dict[str, Any], node: dict[str, Any], with_allocations: bool = False,
              mine: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The API's node shape; the push token never leaves the state. Pass `mine` (from
    `allocations_by_node`) when listing many nodes: one scan of the allocations instead of one per node."""
    if mine is None:
        mine = [a for a in state["allocations"].values()
                if a["node"] == node["id"] and a["desired"] in ("run", "migrate")]
    allocated = {"memory": sum(int((a.get("resources") or {}).get("memory", 0)) for a in mine),
                 "cpu": round(sum(float((a.get("resources") or {}).get("cpu", 0)) for a in mine), 3)}
    out = {"id": node["id"], "address": node.get("address"), "status": node["status"],
           "status_reason": node.get("status_reason"), "status_since": iso(node.get("status_since")),
           "eligibility": node.get("eligibility"), "labels": dict(node.get("labels") or {}),
           "capacity": dict(node.get("capacity") or {}), "allocated": allocated, "allocations": len(mine),
           "last_heartbeat": iso(node.get("renewed_at")), "drain": _drain_view(state, node),
           "agent_version": node.get("agent_version")}
    if with_allocations:
        out["allocation_list"] = [
            {"id": a["id"], "service": a["service"], "version": a["version"], "index": a.get("index"),
             "status": (a.get("observed") or {}).get("status", "pending"),
             "health": (a.get("observed") or {}).get("health")}
            for a in sorted(mine, key=lambda a: (a["service"], a.get("index", 0)))]
    return out
