"""Orchestry's system and cluster endpoints: `GET /health`, `GET /api/v1/metrics` (JSON),
`GET`/`PUT /api/v1/config`, and cluster mode's `/cluster/status`, `/cluster/leader`, `/cluster/health`
(without the `/api/v1` prefix; orca's own `/api/v1/cluster/*` keep their shapes for orca's clients).

Orchestry's components are named after its parts; orca's equivalents answer under those names:
`database` is the Raft log (orca's only store), `docker` the agents' container engines (as the nodes
report them), `nginx` orca's own proxy (one route per service with a port). The Raft leader is the
"lease" holder: acquired when the leader committed its election, renewed by every heartbeat, and
valid until the election timeout after the last one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from orca import __version__, spec
from orca.errors import Invalid, OrcaError
from orca.master import views
from orca.master.compat_orchestry_model import app_status
from orca.master.http import json_response, read_json

if TYPE_CHECKING:
    from orca.master.api import MasterApi
    from orca.master.api_traffic import TrafficEndpoints

__all__ = ["OrchestrySystem", "NoLeader", "ConfigReadOnly"]

GIB = float(2**30)


class NoLeader(OrcaError):
    status = 503
    code = "NO_LEADER"


class ConfigReadOnly(OrcaError):
    status = 409
    code = "CONFIG_READ_ONLY"


def _host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


# Orchestry's configuration keys that exist in orca, and where orca sets them.
_CONFIG_SOURCES = {
    "controller": "[api].listen in each master's config file",
    "database": "[raft] in each master's config file",
    "scaling": "the app's scaling policy (PUT /api/v1/apps/{app}/scaling)",
    "health": "the agent (checks every second, 1 s timeout, 3 failures)",
}


class OrchestrySystem:
    def __init__(self, api: MasterApi, traffic: TrafficEndpoints, *, api_listen: tuple[str, int],
                 raft_listen: tuple[str, int], election_timeout_s: float) -> None:
        self.api = api
        self.traffic = traffic
        self.api_listen = api_listen
        self.raft_listen = raft_listen
        self.election_timeout_s = election_timeout_s

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/api/v1/metrics", self.metrics)
        r.add_get("/api/v1/config", self.get_config)
        r.add_put("/api/v1/config", self.put_config)
        r.add_get("/cluster/status", self.cluster_status)
        r.add_get("/cluster/leader", self.cluster_leader)
        r.add_get("/cluster/health", self.cluster_health)

    # --- system -----------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = self.api._health_body()

        def counts(state: dict[str, Any]) -> dict[str, Any]:
            apps = [app_status(row["status"], row["replicas"]) for row in views.status_list(state, None)]
            running = sum(1 for a in state["allocations"].values() if a.get("desired") in ("run", "migrate")
                          and (a.get("observed") or {}).get("status") == "running")
            ready = sum(1 for n in state["nodes"].values() if n.get("status") == "ready")
            routes = sum(1 for s in state["services"].values() if s["state"] == "running" and s["spec"].get("port"))
            return {"apps": apps, "running": running, "ready": ready, "nodes": len(state["nodes"]), "routes": routes}
        c = self.api.raft.read(counts)
        raft_ok = body["cluster_ready"]
        overall = "healthy" if raft_ok and c["ready"] > 0 else ("degraded" if raft_ok else "unhealthy")
        return json_response({
            "status": overall, "timestamp": body["timestamp"], "version": __version__,
            "uptime_seconds": int(time.time() - self.api.started),
            "components": {
                "database": {"status": "healthy" if raft_ok else "unhealthy",
                             "response_time_ms": round((time.perf_counter() - started) * 1000, 3),
                             "kind": "raft", "state": body["state"], "leader_id": body["leader_id"]},
                "docker": {"status": "healthy" if c["ready"] else "unhealthy", "containers_running": c["running"],
                           "nodes_ready": c["ready"], "nodes": c["nodes"]},
                "nginx": {"status": "healthy" if c["ready"] else "unhealthy", "configs_active": c["routes"],
                          "kind": "orca proxy"}},
            "applications": {"total": len(c["apps"]), "running": c["apps"].count("running"),
                             "stopped": c["apps"].count("stopped"), "error": c["apps"].count("error")},
        }, status=200 if overall != "unhealthy" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.api.raft.is_leader:  # the traffic figures live on the leader
            return json_response(await self.traffic._from_leader(request, request.rel_url.path_qs))
        book = self.traffic.traffic

        def gather(state: dict[str, Any]) -> dict[str, Any]:
            cap_mem = sum(int((n.get("capacity") or {}).get("memory", 0)) for n in state["nodes"].values()
                          if n.get("status") == "ready")
            cap_cpu = sum(float((n.get("capacity") or {}).get("cpu", 0)) for n in state["nodes"].values()
                          if n.get("status") == "ready")
            live = [a for a in state["allocations"].values() if a.get("desired") in ("run", "migrate")]
            mem = sum(int((a.get("resources") or {}).get("memory", 0)) for a in live)
            cpu = sum(float((a.get("resources") or {}).get("cpu", 0)) for a in live)
            running = [a for a in live if (a.get("observed") or {}).get("status") == "running"]
            apps = []
            for name in sorted(state["services"]):
                mine = [a for a in running if a.get("service") == name]
                apps.append({"name": name, "replicas": len(mine),
                             "memory_mb": round(sum(int((a.get("resources") or {}).get("memory", 0))
                                                    for a in mine) / 2**20, 1)})
            return {"cap_mem": cap_mem, "cap_cpu": cap_cpu, "mem": mem, "cpu": cpu, "running": len(running),
                    "total": len(live), "apps": apps}
        g = self.api.raft.read(gather)
        total_rps = 0.0
        errors = 0.0
        for app in g["apps"]:
            current = book.current(app["name"])
            sample = current.as_dict() if current else {}
            app["cpu_percent"] = sample.get("cpu_pct")
            app["rps"] = sample.get("rps", 0.0)
            total_rps += float(sample.get("rps") or 0.0)
            errors += float(sample.get("rps") or 0.0) * float(sample.get("error_rate") or 0.0)
        requests_total = sum(book.requests_total.values())
        latency_sum = sum(book.latency_sum_ms.values())
        return json_response({
            "timestamp": views.iso(time.time()),
            "system": {"cpu_percent": round(100.0 * g["cpu"] / g["cap_cpu"], 2) if g["cap_cpu"] else None,
                       "memory_used_gb": round(g["mem"] / GIB, 3), "memory_total_gb": round(g["cap_mem"] / GIB, 3),
                       "disk_used_gb": None, "disk_total_gb": None,
                       "containers_running": g["running"], "containers_total": g["total"]},
            "applications": g["apps"],
            "network": {"requests_per_second": round(total_rps, 3), "total_requests": requests_total,
                        "error_rate_percent": round(100.0 * errors / total_rps, 3) if total_rps else 0.0,
                        "avg_response_time_ms": round(latency_sum / requests_total, 3) if requests_total else None},
        })

    async def get_config(self, request: web.Request) -> web.Response:
        defaults = spec.SCALING_DEFAULTS
        return json_response({
            "version": __version__,
            "controller": {"host": self.api_listen[0], "port": self.api_listen[1], "workers": 1},
            "database": {"host": self.raft_listen[0], "port": self.raft_listen[1], "name": "raft",
                         "pool_size": None},
            "scaling": {"default_check_interval": self.traffic.traffic.sample_s,
                        "default_cooldown": int(defaults["cooldown_seconds"]), "max_concurrent_scales": None},
            "health": {"default_check_interval": 1, "default_timeout": 1, "default_failure_threshold": 3},
        })

    async def put_config(self, request: web.Request) -> web.Response:
        self.api._require_leader()  # a write in Orchestry's model: the leader answers (307 / 503 elsewhere)
        body = await read_json(request)
        unknown = sorted(str(k)[:64] for k in body if k not in _CONFIG_SOURCES)
        if unknown:
            raise Invalid(f"unknown configuration section {unknown[0]!r}", {"field": unknown[0]})
        raise ConfigReadOnly(
            "Configuration is read-only over the API",
            {"reason": "each master reads its configuration from its config file at start (a restart applies "
                       "it), and Raft needs every master to agree on it; set these instead",
             "sources": {k: _CONFIG_SOURCES[k] for k in body}})

    # --- cluster ----------------------------------------------------------------------------------
    def _lease(self, leader: str | None) -> dict[str, Any] | None:
        if leader is None:
            return None
        now = time.time()
        age = self.api.raft.leader_contact_age
        renewed = now - (age or 0.0)
        since = self.api.raft.read(lambda s: s["leader"].get("since") if s["leader"].get("node") == leader else None)
        url = self.api.info.api_urls.get(leader)
        return {"leader_id": leader, "term": self.api.raft.term, "acquired_at": since,
                "expires_at": round(renewed + self.election_timeout_s, 3), "renewed_at": round(renewed, 3),
                "hostname": _host(url), "api_url": url}

    async def cluster_status(self, request: web.Request) -> web.Response:
        health = self.api._health_body()
        now = time.time()
        nodes = []
        for m in self.api._masters():
            if m["is_self"]:
                beat: float | None = now
            elif m["state"] == "leader" and self.api.raft.leader_contact_age is not None:
                beat = now - self.api.raft.leader_contact_age
            else:
                beat = now if m["healthy"] else None
            nodes.append({"node_id": m["id"], "hostname": _host(m["api_url"]), "state": m["state"],
                          "is_healthy": m["healthy"], "last_heartbeat": None if beat is None else round(beat, 3),
                          "api_url": m["api_url"]})
        me = self.api.info.api_urls.get(self.api.info.node_id)
        return json_response({"node_id": self.api.info.node_id, "hostname": _host(me), "state": health["state"],
                              "term": health["term"], "is_leader": health["is_leader"],
                              "leader_id": health["leader_id"], "cluster_size": health["cluster_size"],
                              "nodes": nodes, "lease": self._lease(health["leader_id"])})

    async def cluster_leader(self, request: web.Request) -> web.Response:
        leader = self.api.raft.leader_id
        if leader is None:
            raise NoLeader("No leader elected", "the cluster is electing, has no quorum, or this master is cut off")  # type: ignore[arg-type]
        lease = self._lease(leader) or {}
        return json_response({"leader_id": leader, "hostname": lease.get("hostname"), "api_url": lease.get("api_url"),
                              "term": lease.get("term"), "lease_expires_at": lease.get("expires_at")},
                             headers={"X-Current-Leader": lease.get("api_url") or ""})

    async def cluster_health(self, request: web.Request) -> web.Response:
        health = self.api._health_body()
        status = "healthy" if health["status"] == "healthy" else "degraded"
        return json_response({"status": status, "clustering": "enabled", "node_id": self.api.info.node_id,
                              "state": health["state"], "is_leader": health["is_leader"],
                              "leader_id": health["leader_id"], "cluster_size": health["cluster_size"],
                              "cluster_ready": health["cluster_ready"], "timestamp": round(time.time(), 3),
                              "version": __version__},
                             status=200 if health["cluster_ready"] else 503)
