"""Read-side shapes built from the applied state (pure: state in, JSON-ready dicts out).

These run under the state lock, so they copy what they return and never hand out references into the
state. What the cluster only knows from old reports is shown as such ("unknown since T"), never as a
green "running".
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["service_summary", "service_detail", "status_list", "events_query", "token_list", "iso"]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _allocs_of(state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [a for a in state["allocations"].values() if a.get("service") == name and a.get("desired") == "run"]


def _counts(state: dict[str, Any], svc: dict[str, Any]) -> tuple[int, int]:
    running = healthy = 0
    for alloc in _allocs_of(state, svc["name"]):
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


def service_summary(state: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    running, healthy = _counts(state, svc)
    spec = svc["spec"]
    return {"name": svc["name"], "project": svc["project"], "status": _status(svc, running),
            "replicas": svc["replicas"], "running_replicas": running, "healthy_replicas": healthy,
            "image": spec.get("image"), "domain": spec.get("domain"), "version": svc["version"],
            "pending_reason": _pending_reason(state, svc, running),
            "updated_at": iso(svc.get("updated_at"))}


def status_list(state: dict[str, Any], project: str | None) -> list[dict[str, Any]]:
    return [service_summary(state, svc) for name, svc in sorted(state["services"].items())
            if project is None or svc["project"] == project]


def service_detail(state: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    summary = service_summary(state, svc)
    containers = []
    for alloc in sorted(_allocs_of(state, svc["name"]), key=lambda a: (a.get("index", 0), a["id"])):
        observed = alloc.get("observed") or {}
        containers.append({"id": observed.get("container_id"), "alloc": alloc["id"], "node": alloc.get("node"),
                           "version": alloc.get("version"), "status": observed.get("status", "pending"),
                           "health": observed.get("health"), "started_at": observed.get("started_at")})
    events = [dict(e, time=iso(e["time"])) for e in state["events"] if e.get("service") == svc["name"]][-20:]
    return {"name": svc["name"], "project": svc["project"], "version": svc["version"],
            "spec": svc["spec"], "status": summary["status"],
            "replicas": {"desired": svc["replicas"], "running": summary["running_replicas"],
                         "healthy": summary["healthy_replicas"]},
            "pending_reason": summary["pending_reason"], "containers": containers,
            "canary": svc.get("canary"), "events": events,
            "created_at": iso(svc.get("created_at")), "updated_at": iso(svc.get("updated_at"))}


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
