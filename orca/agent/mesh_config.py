"""The service mesh's table as an agent serves it (pure: no I/O, no clock).

`parse_table` checks the leader's MeshTable (orca.protocol) entry by entry (a malformed service is skipped
with a warning, never takes the others down); `local_addresses` and `with_local_endpoints` put the replicas
that run on this Docker engine at their container's address; `allowed_networks` says whose containers may
connect. orca.agent.mesh_nft turns the result into the kernel's rules.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from orca.agent.haproxy_config import NAME_RE, normalize_address
from orca.agent.local_containers import local_containers
from orca.spec import PROTOCOLS, is_dns_label

__all__ = ["MeshService", "parse_table", "vip_range_of", "allowed_networks", "local_addresses",
           "with_local_endpoints", "is_loopback_endpoint"]

MAX_SERVICES = 10_000
MAX_ENDPOINTS = 1_000
_IPV4_RE = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")


@dataclass(frozen=True)
class MeshService:
    """One service as the mesh serves it."""

    name: str
    project: str
    vip: str
    port: int
    protocol: str
    allow_from: tuple[str, ...]
    endpoints: tuple[tuple[str, str], ...]  # (alloc id, "host:port")


def _ipv4(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _IPV4_RE.match(value):
        raise ValueError(f"{what}: expected an IPv4 address")
    addr = ipaddress.IPv4Address(value)
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local:
        raise ValueError(f"{what}: {value} cannot be a mesh address")
    return str(addr)


def parse_table(table: Any) -> tuple[str | None, list[MeshService], list[str]]:
    """(resolver address, services sorted by name, warnings) from a MeshTable; ({} -> None, [], [])."""
    warnings: list[str] = []
    if not isinstance(table, dict) or not table:
        return None, [], warnings
    try:
        resolver = _ipv4(table.get("resolver"), "resolver")
    except ValueError as exc:
        return None, [], [f"ignoring the mesh table: {exc}"]
    raw_services = table.get("services") or {}
    if not isinstance(raw_services, dict):
        return resolver, [], ["ignoring the mesh services: expected a map"]
    out: list[MeshService] = []
    seen_binds: set[tuple[str, int]] = {(resolver, 53)}
    for name, raw in sorted(raw_services.items())[:MAX_SERVICES]:
        try:
            if not is_dns_label(name):
                raise ValueError("name: not a DNS label")
            if not isinstance(raw, dict):
                raise ValueError("expected an object")
            project = raw.get("project")
            if not is_dns_label(project):
                raise ValueError("project: not a DNS label")
            vip = _ipv4(raw.get("vip"), "vip")
            port = raw.get("port")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError("port: expected 1..65535")
            protocol = raw.get("protocol", "http")
            if protocol not in PROTOCOLS:
                raise ValueError(f"protocol: unknown {protocol!r}")
            allow = raw.get("allow_from") or []
            if not isinstance(allow, list) or not all(a == "*" or is_dns_label(a) for a in allow):
                raise ValueError("allow_from: expected project names or '*'")
            endpoints = []
            for item in (raw.get("endpoints") or [])[:MAX_ENDPOINTS]:
                alloc, address = str(item["alloc"]), str(item["address"])
                if not NAME_RE.match(alloc):
                    raise ValueError("endpoint alloc: not a name")
                endpoints.append((alloc, normalize_address(address)))
            if (vip, port) in seen_binds:
                raise ValueError(f"{vip}:{port} is taken by another service")
        except (TypeError, ValueError, KeyError) as exc:
            warnings.append(f"ignoring mesh service {str(name)[:64]!r}: {exc}")
            continue
        seen_binds.add((vip, port))
        out.append(MeshService(name, project, vip, port, protocol, tuple(sorted(set(allow))),
                               tuple(dict(endpoints).items())))
    return resolver, out, warnings


def vip_range_of(table: Any, resolver: str | None, services: list[MeshService]) -> str | None:
    """The cluster's VIP range: the table's `vip_range` (leaders since the kernel data plane send it), else
    the smallest network holding the resolver and every VIP (a leader from before: still inside its
    range). None without a resolver."""
    if resolver is None:
        return None
    raw = table.get("vip_range") if isinstance(table, dict) else None
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(raw, strict=True)
            if ipaddress.IPv4Address(resolver) in net and 8 <= net.prefixlen <= 30:
                return str(net)
    addresses = [int(ipaddress.IPv4Address(a)) for a in (resolver, *(s.vip for s in services))]
    low, high = min(addresses), max(addresses)
    prefix = 32 - (low ^ high).bit_length()
    return str(ipaddress.IPv4Network((low, prefix), strict=False))


def local_addresses(rows: Any, network_prefix: str, node: str | None = None,
                    alloc_label: str = "orca.alloc") -> dict[str, str]:
    """alloc id -> the address of its running container on a mesh network of this cluster, from the
    engine's container list (orca.agent.local_containers, shared with the ingress).

    Only networks named `network_prefix`* count (the cluster's mesh networks on this engine): an address
    there is one the host reaches straight over a bridge. With `node`, only that node's containers (label
    orca.node). Rows that are not running, not an allocation, or on no such network are left out (their
    replicas keep their host port)."""
    return {alloc: c.address for alloc, c in
            local_containers(rows, network_prefix, node, alloc_label=alloc_label).items()}


def is_loopback_endpoint(address: str) -> bool:
    """Whether "host:port" (or "[v6]:port") names a loopback address."""
    try:
        return ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]")).is_loopback
    except ValueError:
        return False


def with_local_endpoints(services: list[MeshService], local: dict[str, str],
                         engine: dict[str, str] | None = None) -> list[MeshService]:
    """`services` with each replica that runs on this node (in `local`, see local_addresses) reached at its
    container's address and the service's own port instead of the node's publish address and host port:
    the bytes then go host -> bridge -> container, without Docker's port mapping. A replica of another node
    keeps "publish address:host port", the address every node reaches, unless that address is a loopback
    one and the replica runs on this same engine (in `engine`: agents sharing one engine, as in tests):
    a container's packet cannot be routed from its bridge to 127.0.0.0/8, its container's address it can."""
    engine = engine or {}
    if not local and not engine:
        return services
    out = []
    for svc in services:
        endpoints = []
        for alloc, address in svc.endpoints:
            if alloc in local:
                address = f"{local[alloc]}:{svc.port}"
            elif alloc in engine and is_loopback_endpoint(address):
                address = f"{engine[alloc]}:{svc.port}"
            endpoints.append((alloc, address))
        out.append(svc if tuple(endpoints) == svc.endpoints else
                   MeshService(svc.name, svc.project, svc.vip, svc.port, svc.protocol, svc.allow_from,
                               tuple(endpoints)))
    return out


def allowed_networks(service: MeshService, networks: dict[str, tuple[str, ...]]) -> list[str]:
    """The source networks (CIDRs) whose containers may reach `service`: its project's networks and those
    of the projects it allows (`*`: every project's). `networks` maps a project to its networks' subnets."""
    if "*" in service.allow_from:
        projects = set(networks)
    else:
        projects = {service.project, *service.allow_from}
    return sorted({cidr for p in projects for cidr in networks.get(p, ())})
