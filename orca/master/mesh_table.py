"""The service mesh's table, built by the leader from the applied state and pushed to every agent.

Every agent gets the whole table (its HAProxy forwards to replicas on any node): for each running
service with a `port` and a VIP, its project, VIP, port, protocol, `allow_from`, and its healthy
replicas as "host:port" (the node's publish address and the replica's host port), the same replicas
the ingress route table lists (orca.master.traffic). `internal` services are in it: the mesh is the one
way to reach them.
"""

from __future__ import annotations

from typing import Any

from orca.mesh import resolver_address

__all__ = ["mesh_table"]


def mesh_table(state: dict[str, Any], vip_range: str) -> dict[str, Any]:
    """MeshTable (orca.protocol) of `state`; `vip_range` is the leader's `[mesh] vip_range`."""
    nodes = state["nodes"]
    by_service: dict[str, list[dict[str, Any]]] = {}
    for alloc in sorted(state["allocations"].values(), key=lambda a: a["id"]):
        observed = alloc.get("observed") or {}
        node = nodes.get(alloc["node"]) or {}
        if (alloc["desired"] not in ("run", "migrate") or node.get("status") != "ready"
                or observed.get("status") != "running" or observed.get("health") not in (None, "healthy")
                or not observed.get("host_port")):
            continue
        by_service.setdefault(alloc["service"], []).append(
            {"alloc": alloc["id"], "address": f"{node.get('publish_address', '127.0.0.1')}:{observed['host_port']}"})
    services: dict[str, Any] = {}
    for name, svc in sorted(state["services"].items()):
        spec = svc["spec"]
        if not svc.get("vip") or not spec.get("port") or svc["state"] != "running":
            continue
        services[name] = {"project": svc.get("project") or spec.get("project") or "default", "vip": svc["vip"],
                          "port": spec["port"], "protocol": spec.get("protocol", "http"),
                          "allow_from": list(spec.get("allow_from") or ()),
                          "endpoints": by_service.get(name, [])}
    return {"resolver": resolver_address(vip_range), "vip_range": vip_range, "services": services}
