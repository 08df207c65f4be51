"""The service mesh's addressing, shared by the leader and the agents (pure: no I/O, no clock).

Every service gets a stable virtual IP (VIP) from the cluster's VIP range when it is first deployed: the
leader puts its configured range (`[mesh] vip_range`) into the deploy op and `apply` takes the lowest
free address of it, so every master computes the same VIP from the same log. A service keeps its VIP for
life (a purge frees it). The range's first host address is not handed out: it is the mesh's DNS
resolver, which every agent answers on (orca.agent.mesh_dns).

On an agent with the mesh on, each VIP is a local address and HAProxy listens on VIP:port for every
service (orca.agent.mesh), so a container connects to `NAME:port` and reaches a healthy replica on any
node; names resolve to VIPs through the resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_VIP_RANGE", "MAX_RANGE_PREFIX", "parse_range", "resolver_address", "allocate_vip",
           "vips_in_use"]

DEFAULT_VIP_RANGE = "10.213.0.0/16"
# A range needs room for the resolver and at least a few services.
MAX_RANGE_PREFIX = 29
MIN_RANGE_PREFIX = 8


def parse_range(text: str) -> ipaddress.IPv4Network:
    """A VIP range "a.b.c.d/n" (IPv4, /8 to /29, host bits zero); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("expected a string such as '10.213.0.0/16'")
    net = ipaddress.ip_network(text, strict=True)
    if not isinstance(net, ipaddress.IPv4Network):
        raise ValueError("an IPv4 range is needed")
    if not MIN_RANGE_PREFIX <= net.prefixlen <= MAX_RANGE_PREFIX:
        raise ValueError(f"prefix must be /{MIN_RANGE_PREFIX} to /{MAX_RANGE_PREFIX}, got /{net.prefixlen}")
    if net.is_loopback or net.is_multicast or net.is_link_local:
        raise ValueError("a loopback, multicast or link-local range cannot hold VIPs")
    return net


def resolver_address(vip_range: str) -> str:
    """The mesh's DNS resolver: the range's first host address (never a service's VIP)."""
    return str(parse_range(vip_range).network_address + 1)


def vips_in_use(services: Iterable[dict[str, Any]]) -> set[str]:
    return {svc["vip"] for svc in services if isinstance(svc.get("vip"), str)}


def allocate_vip(vip_range: str, used: set[str]) -> str | None:
    """The lowest address of the range that is neither the network, the resolver, the broadcast nor
    `used`; None when the range is full. Deterministic: the same range and set give the same answer."""
    net = parse_range(vip_range)
    first = int(net.network_address) + 2
    last = int(net.broadcast_address) - 1
    # `used` is small next to most ranges: skip over the taken addresses, not over the whole range.
    taken = sorted(int(ipaddress.IPv4Address(v)) for v in used if _in(net, v))
    candidate = first
    for t in taken:
        if t < candidate:
            continue
        if t > candidate:
            break
        candidate += 1
    return str(ipaddress.IPv4Address(candidate)) if candidate <= last else None


def _in(net: ipaddress.IPv4Network, address: str) -> bool:
    try:
        return ipaddress.IPv4Address(address) in net
    except ValueError:
        return False
