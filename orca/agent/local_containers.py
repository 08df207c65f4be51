"""Where this host reaches the cluster's running containers: their addresses on their bridges.

A replica's endpoint in the leader's tables is "publish address:host port", the address every node
reaches. On the replica's own host that path goes through Docker's port mapping (on a 127.0.0.1
publish address, Docker's userland relay `docker-proxy`: tens of µs of CPU per request); the host
also reaches the container straight over its bridge, at its container's address and the service's own
port. The mesh's kernel data plane (orca.agent.mesh) and the ingress (orca.agent.proxy) both use this:
one engine call (`list_rows`, `GET /containers/json`, whose rows carry each network's address and the
port mappings without an inspect), parsed here (`local_containers`, pure).

Which addresses count: those on the cluster's mesh networks of this engine (named `network_prefix`*),
and, when asked (`default_bridge`: the ingress, whose containers may be on Docker's default bridge when
`[agent.mesh]` is off), on Docker's default `bridge` network. Both are bridges of this host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from orca.agent.haproxy_config import NAME_RE, RouteSpec, ServerSpec

__all__ = ["LocalContainer", "list_rows", "network_prefix", "local_containers", "reach_locally", "MAX_ROWS",
           "DEFAULT_BRIDGE"]

MAX_ROWS = 10_000  # rows read from one listing (an engine runs far fewer of one cluster's containers)
DEFAULT_BRIDGE = "bridge"  # Docker's default network: where containers go without [agent.mesh]
_IPV4_RE = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")


@dataclass(frozen=True)
class LocalContainer:
    """A running replica on this engine: its address on a bridge of this host, and its published ports
    as (host port, container port) pairs (TCP)."""

    address: str
    ports: tuple[tuple[int, int], ...] = ()

    def container_port(self, host_port: int) -> int | None:
        """The container port published at `host_port` by this container (None: not this container's)."""
        return next((c for h, c in self.ports if h == host_port), None)


def network_prefix(cluster_id: str) -> str:
    """The name prefix of the cluster's mesh networks (orca.agent.mesh.network_name)."""
    return f"orca-{cluster_id[:12]}-"


def list_rows(client: Any, cluster_id: str) -> list[dict[str, Any]]:
    """The engine's running containers of this cluster (any node's: agents may share an engine), as
    `GET /containers/json` rows. One engine call; the caller runs it off the event loop."""
    rows = client.api.containers(filters={"label": [f"orca.cluster={cluster_id}"], "status": "running"})
    return rows if isinstance(rows, list) else []


def _address(value: Any) -> str | None:
    if not isinstance(value, str) or not _IPV4_RE.match(value):
        return None
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return None
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local:
        return None
    return str(addr)


def _ports(raw: Any) -> tuple[tuple[int, int], ...]:
    out: set[tuple[int, int]] = set()
    if not isinstance(raw, list):
        return ()
    for item in raw[:64]:
        if not isinstance(item, dict) or item.get("Type", "tcp") != "tcp":
            continue
        public, private = item.get("PublicPort"), item.get("PrivatePort")
        if (isinstance(public, int) and isinstance(private, int) and not isinstance(public, bool)
                and not isinstance(private, bool) and 0 < public < 65536 and 0 < private < 65536):
            out.add((public, private))
    return tuple(sorted(out))


def local_containers(rows: Any, network_prefix: str, node: str | None = None, *, default_bridge: bool = False,
                     alloc_label: str = "orca.alloc") -> dict[str, LocalContainer]:
    """alloc id -> its running container's address (and published ports) from the engine's rows.

    Only networks named `network_prefix`* count, and Docker's default bridge with `default_bridge` (a
    mesh network first when a container is on both). With `node`, only that node's containers (label
    orca.node). Rows that are not running, not an allocation, or on no such network are left out (their
    replicas keep their published port). Never raises on malformed rows."""
    out: dict[str, LocalContainer] = {}
    if not isinstance(rows, list):
        return out
    for row in rows[:MAX_ROWS]:
        if not isinstance(row, dict) or row.get("State") != "running":
            continue
        labels, settings = row.get("Labels"), row.get("NetworkSettings")
        alloc = labels.get(alloc_label) if isinstance(labels, dict) else None
        if not isinstance(alloc, str) or not NAME_RE.match(alloc) or not isinstance(settings, dict):
            continue
        if node is not None and labels.get("orca.node") != node:
            continue
        networks = settings.get("Networks")
        if not isinstance(networks, dict):
            continue
        found: str | None = None
        fallback: str | None = None
        for name, net in sorted(networks.items(), key=lambda kv: str(kv[0])):
            address = _address(net.get("IPAddress")) if isinstance(net, dict) else None
            if address is None:
                continue
            if str(name).startswith(network_prefix):
                found = address
                break
            if default_bridge and name == DEFAULT_BRIDGE:
                fallback = address
        address = found or fallback
        if address is not None:
            out[alloc] = LocalContainer(address, _ports(row.get("Ports")))
    return out


def reach_locally(routes: list[RouteSpec], local: dict[str, LocalContainer]) -> list[RouteSpec]:
    """`routes` with each server that is a container of this node (in `local`) at its container's
    address and port instead of "publish address:host port": the bytes then go host -> bridge ->
    container, without Docker's port mapping. The container must publish the endpoint's host port (the
    same container the leader means; a recreated one with another port keeps the published address until
    the next listing). Every other server is left as it is."""
    if not local:
        return routes
    out = []
    for route in routes:
        servers = []
        for server in route.servers:
            container = local.get(server.alloc)
            port = server.address.rpartition(":")[2]
            inner = container.container_port(int(port)) if container is not None and port.isdigit() else None
            if container is not None and inner is not None:
                server = ServerSpec(server.alloc, f"{container.address}:{inner}", server.canary)
            servers.append(server)
        out.append(route if tuple(servers) == route.servers else
                   RouteSpec(route.service, route.domains, route.strategy, route.canary_weight, tuple(servers)))
    return out
