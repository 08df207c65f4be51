"""The service mesh's table and HAProxy configuration (pure: no I/O, no clock).

`parse_table` checks the leader's MeshTable (orca.protocol) entry by entry (a malformed service is skipped
with a warning, never takes the others down); `render` turns it into the mesh HAProxy's config: per
service one frontend on VIP:port (`mode http` or `mode tcp` by the service's `protocol`) whose only
clients are the containers of the service's project and of the projects in its `allow_from` (by source
network: `tcp-request connection reject` for anything else, before a byte is read), and one backend
with the service's healthy replicas on any node, TCP-checked every second.

A change of replicas only (the usual one: a replica added, moved or gone) reaches the running HAProxy
through its runtime API; anything else (a service, a network) reloads it hitlessly (orca.agent.proxy).

HTTP services are balanced per request (a keep-alive client is spread over the replicas) and a refused
connection is retried once on another replica; TCP services per connection (`balance roundrobin` for
both, `leastconn` would favour the node's own HAProxy view over the cluster's).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from orca.agent.haproxy_config import NAME_RE, SERVER_CHECK, SERVER_LINE, normalize_address
from orca.spec import PROTOCOLS, is_dns_label

__all__ = ["MeshService", "parse_table", "render", "frontend_name", "allowed_networks", "READY_FRONTEND",
           "local_addresses", "with_local_endpoints"]

READY_FRONTEND = "mesh_ready"
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


def frontend_name(service: str) -> str:
    return f"mesh_{service}"


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


def local_addresses(rows: Any, network_prefix: str, alloc_label: str = "orca.alloc") -> dict[str, str]:
    """alloc id -> the address of its running container on this node's project network, from the engine's
    container list (`GET /containers/json` rows, which carry each network's address without an inspect).

    Only networks named `network_prefix`* count (this node's mesh networks): an address there is one the
    host reaches straight over the bridge. Rows that are not running, not an allocation, or on no such
    network are left out (their replicas keep their host port)."""
    out: dict[str, str] = {}
    if not isinstance(rows, list):
        return out
    for row in rows[:MAX_ENDPOINTS * 10]:
        if not isinstance(row, dict) or row.get("State") != "running":
            continue
        labels, settings = row.get("Labels"), row.get("NetworkSettings")
        alloc = labels.get(alloc_label) if isinstance(labels, dict) else None
        if not isinstance(alloc, str) or not NAME_RE.match(alloc) or not isinstance(settings, dict):
            continue
        networks = settings.get("Networks")
        if not isinstance(networks, dict):
            continue
        for name, net in sorted(networks.items()):
            address = (net or {}).get("IPAddress") if isinstance(net, dict) else None
            if str(name).startswith(network_prefix) and isinstance(address, str):
                try:
                    out[alloc] = _ipv4(address, "container address")
                except ValueError:
                    continue
                break
    return out


def with_local_endpoints(services: list[MeshService], local: dict[str, str]) -> list[MeshService]:
    """`services` with each replica that runs on this node (in `local`, see local_addresses) reached at its
    container's address and the service's own port instead of the node's publish address and host port:
    the bytes then go host -> bridge -> container, without Docker's port mapping (its userland proxy on a
    loopback publish address: one more copy and two more sockets per connection). Replicas on other nodes
    keep "publish address:host port", the only address of theirs this node can reach."""
    if not local:
        return services
    out = []
    for svc in services:
        endpoints = tuple((alloc, f"{local[alloc]}:{svc.port}" if alloc in local else address)
                          for alloc, address in svc.endpoints)
        out.append(svc if endpoints == svc.endpoints else
                   MeshService(svc.name, svc.project, svc.vip, svc.port, svc.protocol, svc.allow_from, endpoints))
    return out


def allowed_networks(service: MeshService, networks: dict[str, tuple[str, ...]]) -> list[str]:
    """The source networks (CIDRs) whose containers may reach `service`: its project's networks and those
    of the projects it allows (`*`: every project's). `networks` maps a project to its networks' subnets."""
    if "*" in service.allow_from:
        projects = set(networks)
    else:
        projects = {service.project, *service.allow_from}
    return sorted({cidr for p in projects for cidr in networks.get(p, ())})


def render(services: list[MeshService], networks: dict[str, tuple[str, ...]], *, ready_listen: str,
           connect_timeout_s: float = 2.0, idle_timeout_s: float = 60.0, request_timeout_s: float = 30.0,
           stats_socket: str | None = None, nbthread: int = 1) -> str:
    """The whole mesh haproxy.cfg. Same input, same text (the agent reloads only on a change).

    `ready_listen` is a loopback "host:port" answering 200: the agent's liveness probe of this HAProxy,
    and the one listener it always has (HAProxy refuses to start without any)."""
    def ms(s: float) -> str:
        return f"{max(1, int(s * 1000))}ms"

    lines = [
        "# Generated by the orca agent (service mesh); rewritten on every table change. Do not edit.",
        "global",
        f"    nbthread {max(1, nbthread)}",
        "    hard-stop-after 15s",
        "    tune.bufsize 32768",
    ]
    if stats_socket:
        lines.append(f"    stats socket {stats_socket} mode 600 level admin")
    lines += [
        "",
        "defaults",
        "    mode tcp",
        f"    timeout connect {ms(connect_timeout_s)}",
        f"    timeout client {ms(max(idle_timeout_s, request_timeout_s))}",
        f"    timeout server {ms(max(idle_timeout_s, request_timeout_s))}",
        f"    timeout http-keep-alive {ms(idle_timeout_s)}",
        "    timeout http-request 30s",
        "    timeout tunnel 1h",
        "    timeout client-fin 5s",
        "    retries 1",
        "    option redispatch 1",
        "",
        f"frontend {READY_FRONTEND}",
        "    mode http",
        f"    bind {ready_listen}",
        "    http-request return status 200 content-type text/plain string ok",
        "",
    ]
    for svc in services:
        name = frontend_name(svc.name)
        sources = allowed_networks(svc, networks)
        lines += [f"frontend {name}",
                  f"    mode {svc.protocol}",
                  f"    bind {svc.vip}:{svc.port}"]
        if sources:
            for i in range(0, len(sources), 32):  # at most 64 words a line
                lines.append(f"    acl allowed src {' '.join(sources[i:i + 32])}")
            lines.append("    tcp-request connection reject unless allowed")
        else:
            lines.append("    tcp-request connection reject")
        if svc.protocol == "http":
            lines += ["    option http-keep-alive", "    option forwardfor"]
        else:
            # The kernel moves the bytes (socket -> pipe -> socket), never copied into HAProxy: measured 850
            # against 1,150-1,200 µs of HAProxy CPU per MB with splice-auto (which copies until a buffer fills)
            # and no worse per connection (scripts/bench/mesh.py's TCP echoes, 32 connections).
            lines += ["    option splice-request", "    option splice-response"]
        lines += [f"    default_backend {name}", "",
                  f"backend {name}",
                  f"    mode {svc.protocol}",
                  "    balance roundrobin"]
        if svc.protocol == "http":
            lines.append("    retry-on conn-failure empty-response")
        for alloc, address in svc.endpoints:
            # The ingress's server line, word for word: a change of replicas only is then applied through
            # HAProxy's runtime API (orca.agent.proxy), without a new worker.
            lines.append(f"{SERVER_LINE}{alloc} {address} weight 1 {SERVER_CHECK}")
        lines.append("")
    return "\n".join(lines) + "\n"
