"""The leader <-> agent messages: the only module both the master and the agent import.

Agent -> any master (bearer: the node's agent token, role "agent", bound to one node by its `node` claim:
`node_id` must equal it, else 403; a follower answers 307 to the leader):
  POST /api/v1/agent/register   RegisterRequest  -> RegisterReply
  POST /api/v1/agent/heartbeat  Heartbeat        -> HeartbeatReply   (POST only -> 405; > 64 KiB -> 413)
  POST /api/v1/agent/join       {"node_id", "nonce"} -> 201 {"node_id", "token", "jti"}  (bearer: a one-time
                                join token; orca.master.api_join)

Leader -> agent (bearer: the node's `push_token`, which the agent chose at registration):
  PUT  /v1/allocations          AllocationsPush  -> {"accepted": bool, "version": int}
                                 409 STALE_LEADER when `term` is lower than the highest term the agent
                                 has seen (persisted by the agent, so it survives agent restarts).
                                 Within one term a lower `version` than the last applied is ignored.
  GET  /v1/logs/{alloc_id}?tail=N&follow=0|1   text/plain, the container's stdout+stderr
  GET  /v1/health               {"status": "ok", "node_id": str}

Every push carries the node's FULL desired set (level-triggered): the agent starts what is missing,
stops what is not listed, and the same push applied twice does nothing new.

Shapes (JSON):
  RegisterRequest = {"node_id", "address" (agent API URL), "labels": {str: str},
                     "capacity": {"memory": bytes, "cpu": float}, "push_token": str, "agent_version": str,
                     "publish_address": str (optional; where container host ports answer, default 127.0.0.1),
                     "proxy": str|None (optional; the agent's ingress listen "host:port", None when off)}
  RegisterReply   = {"node_id", "leader": URL, "heartbeat_s": float, "lease_ttl_s": float,
                     "cluster_id": str (cluster_id_of: the agent labels its containers with it, keeps it
                     in its data dir, and refuses masters of another cluster)}
  Heartbeat       = {"node_id", "seq": int, "allocations": [AllocReport], "applied": {"term", "version"},
                     "stats": {alloc_id: {"cpu_pct": float, "mem_pct": float}}          (optional)
                     "proxy": {service: ProxyStats} (optional; cumulative since the agent started)}
  ProxyStats      = {"requests": int, "errors": int (5xx + upstream failures), "active": int (open now),
                     "latency_buckets": [int...] (cumulative counts per LATENCY_BUCKETS_MS bound, +Inf last),
                     "latency_sum_ms": float, "replicas": {alloc_id: {"requests", "errors", "active"}}}
  AllocReport     = {"alloc", "service", "version", "container_id": str|None, "status": ALLOC_STATUSES,
                     "health": HEALTH_STATES|None (None: no health check), "started_at": ISO|None,
                     "restarts": int, "reason": str|None, "host_port": int|None,
                     "exit_code": int|None (optional; the last exit of a stopped container)}
  HeartbeatReply  = {"directive": "continue"|"shutdown", "leader": URL, "orchestrator_time": float,
                     "ca_fingerprint": str, "ca_trusted": [str]}  (the last two on TLS clusters: the CA
                     that signs now and every trusted one; the agent fetches CAs it lacks and renews a
                     certificate the signing CA did not issue)
  AllocationsPush = {"term": int, "version": int, "allocations": [AllocSpec], "secrets": {KEY: value},
                     "routes": RouteTable (optional; every agent gets the whole table: it proxies to any node),
                     "mesh": MeshTable (optional),
                     "purge_volumes": [{"service", "slot": int, "gen": int}] (optional; volumes to remove,
                     orca.volumes)}
  RouteTable      = {domain: {"service": str, "strategy": "round_robin"|"least_conn"|None (None: the proxy's default),
                              "canary_weight": float|None (share of requests for canary endpoints),
                              "endpoints": [{"alloc": str, "address": "host:port", "canary": bool}]}}
                    only healthy endpoints of services with a domain that are not `internal`.
  MeshTable       = {"resolver": IPv4 (the mesh DNS address), "vip_range": CIDR (optional, the range of the VIPs),
                     "services": {name: {"project", "vip": IPv4, "port": int, "protocol": "http"|"tcp",
                     "allow_from": [project|"*"],
                     "endpoints": [{"alloc", "address": "host:port"}]}}}  (AllocationsPush.mesh, optional;
                     every agent gets the whole table; orca.master.mesh_table, orca.agent.mesh)
  AllocSpec       = {"id", "service", "version", "index", "spec": normalized service spec (orca.spec),
                     "volume_gen": int (optional; present when the spec has named volumes bound to this node)}
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from orca.bounds import MAX_INT, BoundsError

__all__ = [
    "HEARTBEAT_MAX_BYTES", "LATENCY_BUCKETS_MS", "ALLOC_STATUSES", "HEALTH_STATES", "DIRECTIVES",
    "container_name", "LABELS", "cluster_id_of", "CLUSTER_ID_RE",
    "validate_heartbeat", "validate_register", "validate_push", "ProtocolError",
    "validate_container_stats", "validate_proxy_stats",
]

HEARTBEAT_MAX_BYTES = 64 * 1024
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)  # +Inf is implied last
# complete / dead: the container ended for good under its restart policy (orca.jobs); never restarted.
ALLOC_STATUSES = ("pending", "pulling", "starting", "running", "exited", "failed", "stopped", "complete", "dead")
HEALTH_STATES = ("healthy", "unhealthy", "starting")
DIRECTIVES = ("continue", "shutdown")

LABELS = {"service": "orca.service", "alloc": "orca.alloc", "version": "orca.version", "node": "orca.node",
          "cluster": "orca.cluster"}
CLUSTER_ID_RE = re.compile(r"[0-9a-f]{16}")


def cluster_id_of(cluster_secret: bytes) -> str:
    """The cluster's public id: a one-way fingerprint of the cluster secret (16 hex digits).

    Every master derives the same id without a Raft entry, nothing about the secret can be learnt from
    it, and a second cluster on the same Docker engine (another secret) gets another id, so the agents
    of the two never touch each other's containers even when their node ids are the same.
    """
    return hashlib.sha256(b"orca cluster id\0" + cluster_secret).hexdigest()[:16]


def container_name(service: str, alloc_id: str) -> str:
    return f"orca-{service}-{alloc_id}"


class ProtocolError(BoundsError):
    """A message that does not have the documented shape; the receiver answers 400 naming the field."""


# Bounds of every field (the README's Security section lists them). Counts are far above what a real
# agent sends (a heartbeat is at most 64 KiB anyway) and small enough that a hostile one costs nothing.
MAX_STR = 512
MAX_OPT_STR = 2048
MAX_ID = 128                   # alloc ids, service names, label keys as map keys
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_MEMORY = 2**50             # 1 PiB of node memory
MAX_CPU = 4096.0               # cores
MAX_ALLOCS = 4096              # allocation reports in one heartbeat
MAX_STATS = 4096               # containers in one heartbeat's stats
MAX_PROXY_SERVICES = 1024
MAX_PROXY_REPLICAS = 1024      # per service (the agent sends at most orca.agent.proxy.MAX_REPLICAS_REPORTED)
MAX_PCT = 100_000.0            # cpu % is per core: 4096 cores stay below this
MAX_PORT = 65535
MAX_PURGES = 1024              # volume removal orders in one push (orca.volumes.TOMBSTONES_KEPT per node)


def _str(msg: dict[str, Any], key: str, prefix: str = "") -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_STR:
        raise ProtocolError(prefix + key, "expected a non-empty string")
    return value


def _int(msg: dict[str, Any], key: str, prefix: str = "", optional: bool = False,
         hi: int = MAX_INT) -> int | None:
    value = msg.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise ProtocolError(prefix + key, f"expected an integer from 0 to {hi}")
    return value


def _num(value: Any, field: str, hi: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not (isinstance(value, float) or -MAX_INT <= value <= MAX_INT):
        raise ProtocolError(field, f"expected a number from 0 to {hi:g}")
    number = float(value)
    if not 0.0 <= number <= hi:  # also refuses NaN
        raise ProtocolError(field, f"expected a number from 0 to {hi:g}")
    return number


def _opt_str(msg: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_OPT_STR:
        raise ProtocolError(prefix + key, "expected a string or null")
    return value


def _map(value: Any, field: str, max_items: int, what: str) -> dict[str, Any]:
    """A JSON object of at most `max_items` entries whose keys are 1..MAX_ID characters."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > max_items:
        raise ProtocolError(field, f"expected a map of at most {max_items} entries ({what})")
    for key in value:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_ID:
            raise ProtocolError(field, f"keys must be strings of 1 to {MAX_ID} characters")
    return value


def validate_register(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise ProtocolError("body", "expected an object")
    labels = _map(msg.get("labels"), "labels", MAX_LABELS, "label: value")
    if not all(isinstance(v, str) and len(v) <= MAX_LABEL_VALUE for v in labels.values()):
        raise ProtocolError("labels", f"expected a string map (values of at most {MAX_LABEL_VALUE} characters)")
    cap = msg.get("capacity")
    if not isinstance(cap, dict):
        raise ProtocolError("capacity", "expected {memory: bytes > 0, cpu: > 0}")
    memory = _int(cap, "memory", "capacity.", hi=MAX_MEMORY)
    cpu = _num(cap.get("cpu"), "capacity.cpu", MAX_CPU)
    if not memory or cpu <= 0:
        raise ProtocolError("capacity", "expected {memory: bytes > 0, cpu: > 0}")
    address = _str(msg, "address")
    if not address.startswith(("http://", "https://")):
        raise ProtocolError("address", "expected an http(s) URL")
    return {"node_id": _str(msg, "node_id"), "address": address.rstrip("/"), "labels": dict(labels),
            "capacity": {"memory": memory, "cpu": cpu},
            "push_token": _str(msg, "push_token"), "agent_version": _opt_str(msg, "agent_version") or "?",
            "publish_address": _opt_str(msg, "publish_address") or "127.0.0.1", "proxy": _opt_str(msg, "proxy")}


def validate_alloc_report(rep: Any, i: int) -> dict[str, Any]:
    p = f"allocations[{i}]."
    if not isinstance(rep, dict):
        raise ProtocolError(p[:-1], "expected an object")
    status = rep.get("status")
    if status not in ALLOC_STATUSES:
        raise ProtocolError(p + "status", f"expected one of {', '.join(ALLOC_STATUSES)}")
    health = rep.get("health")
    if health is not None and health not in HEALTH_STATES:
        raise ProtocolError(p + "health", f"expected null or one of {', '.join(HEALTH_STATES)}")
    return {"alloc": _str(rep, "alloc", p), "service": _str(rep, "service", p),
            "version": _int(rep, "version", p), "container_id": _opt_str(rep, "container_id", p),
            "status": status, "health": health, "started_at": _opt_str(rep, "started_at", p),
            "restarts": _int(rep, "restarts", p, optional=True) or 0, "reason": _opt_str(rep, "reason", p),
            "host_port": _int(rep, "host_port", p, optional=True, hi=MAX_PORT),
            "exit_code": _exit_code(rep.get("exit_code"), p)}


def _exit_code(value: Any, p: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
        raise ProtocolError(p + "exit_code", "expected null or a 32-bit integer")
    return value


def validate_container_stats(stats: Any) -> dict[str, dict[str, float | None]]:
    """Heartbeat `stats`: {alloc_id: {"cpu_pct": number|None, "mem_pct": number|None}}, a normalized copy."""
    out: dict[str, dict[str, float | None]] = {}
    for alloc_id, st in _map(stats, "stats", MAX_STATS, "alloc id: {cpu_pct, mem_pct}").items():
        if not isinstance(st, dict):
            raise ProtocolError(f"stats.{alloc_id}", "expected {cpu_pct, mem_pct}")
        out[alloc_id] = {k: None if st.get(k) is None else _num(st.get(k), f"stats.{alloc_id}.{k}", MAX_PCT)
                         for k in ("cpu_pct", "mem_pct")}
    return out


def _counters(value: Any, field: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ProtocolError(field, "expected {requests, errors, active}")
    return {k: _int(value, k, field + ".", optional=True) or 0 for k in ("requests", "errors", "active")}


def validate_proxy_stats(proxy: Any) -> dict[str, dict[str, Any]]:
    """Heartbeat `proxy`: {service: ProxyStats}, every number bounded; a normalized copy."""
    out: dict[str, dict[str, Any]] = {}
    nb = len(LATENCY_BUCKETS_MS) + 1
    for name, ps in _map(proxy, "proxy", MAX_PROXY_SERVICES, "service: ProxyStats").items():
        p = f"proxy.{name}"
        entry: dict[str, Any] = _counters(ps, p)
        buckets = ps.get("latency_buckets") or []
        if not isinstance(buckets, list) or len(buckets) > nb:
            raise ProtocolError(p + ".latency_buckets", f"expected a list of at most {nb} counts")
        entry["latency_buckets"] = [_int({"n": b}, "n", p + f".latency_buckets[{i}]") for i, b in enumerate(buckets)]
        entry["latency_sum_ms"] = _num(ps.get("latency_sum_ms") or 0, p + ".latency_sum_ms", float(MAX_INT))
        replicas = _map(ps.get("replicas"), p + ".replicas", MAX_PROXY_REPLICAS, "alloc id: counters")
        entry["replicas"] = {alloc: _counters(c, f"{p}.replicas.{alloc}") for alloc, c in replicas.items()}
        out[name] = entry
    return out


def validate_heartbeat(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise ProtocolError("body", "expected an object")
    allocs = msg.get("allocations", [])
    if not isinstance(allocs, list) or len(allocs) > MAX_ALLOCS:
        raise ProtocolError("allocations", f"expected a list of at most {MAX_ALLOCS} reports")
    applied = msg.get("applied") or {}
    if not isinstance(applied, dict):
        raise ProtocolError("applied", "expected an object")
    return {"node_id": _str(msg, "node_id"), "seq": _int(msg, "seq", optional=True) or 0,
            "stats": validate_container_stats(msg.get("stats")), "proxy": validate_proxy_stats(msg.get("proxy")),
            "allocations": [validate_alloc_report(r, i) for i, r in enumerate(allocs)],
            "applied": {"term": _int(applied, "term", "applied.", optional=True) or 0,
                        "version": _int(applied, "version", "applied.", optional=True) or 0}}


def validate_push(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise ProtocolError("body", "expected an object")
    allocs = msg.get("allocations")
    if not isinstance(allocs, list):
        raise ProtocolError("allocations", "expected a list")
    out = []
    for i, a in enumerate(allocs):
        p = f"allocations[{i}]."
        if not isinstance(a, dict) or not isinstance(a.get("spec"), dict):
            raise ProtocolError(p + "spec", "expected an object")
        item = {"id": _str(a, "id", p), "service": _str(a, "service", p), "version": _int(a, "version", p),
                "index": _int(a, "index", p, optional=True) or 0, "spec": a["spec"]}
        gen = _int(a, "volume_gen", p, optional=True)
        if gen is not None:
            item["volume_gen"] = gen
        out.append(item)
    secrets = msg.get("secrets") or {}
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise ProtocolError("secrets", "expected a string map")
    routes = msg.get("routes") or {}
    if not isinstance(routes, dict):
        raise ProtocolError("routes", "expected a map of domain to route")
    mesh = msg.get("mesh") or {}
    if not isinstance(mesh, dict):  # its entries are checked one by one by the agent's mesh (a bad one is skipped)
        raise ProtocolError("mesh", "expected an object {resolver, services}")
    purges = msg.get("purge_volumes") or []
    if not isinstance(purges, list) or len(purges) > MAX_PURGES:
        raise ProtocolError("purge_volumes", f"expected a list of at most {MAX_PURGES} entries")
    purge_out = []
    for i, item in enumerate(purges):
        p = f"purge_volumes[{i}]."
        if not isinstance(item, dict):
            raise ProtocolError(p[:-1], "expected an object {service, slot, gen}")
        purge_out.append({"service": _str(item, "service", p), "slot": _int(item, "slot", p),
                          "gen": _int(item, "gen", p)})
    lineage = msg.get("lineage")
    if lineage is not None and (not isinstance(lineage, str) or not 1 <= len(lineage) <= 64):
        raise ProtocolError("lineage", "expected a string of 1 to 64 characters")
    return {"term": _int(msg, "term"), "version": _int(msg, "version"), "allocations": out, "secrets": secrets,
            "routes": routes, "mesh": mesh, "lineage": lineage, "purge_volumes": purge_out}
