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

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_VIP_RANGE", "MAX_RANGE_PREFIX", "parse_range", "resolver_address", "allocate_vip",
           "vips_in_use", "VipAllocator"]

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


@functools.lru_cache(maxsize=16)
def resolver_address(vip_range: str) -> str:
    """The mesh's DNS resolver: the range's first host address (never a service's VIP). Cached: the
    dispatcher asks on every cycle, and a range is a handful of strings for a master's life."""
    return str(parse_range(vip_range).network_address + 1)


def vips_in_use(services: Iterable[dict[str, Any]]) -> set[str]:
    return {svc["vip"] for svc in services if isinstance(svc.get("vip"), str)}


def allocate_vip(vip_range: str, used: set[str]) -> str | None:
    """The lowest address of the range that is neither the network, the resolver, the broadcast nor
    `used`; None when the range is full. Deterministic: the same range and set give the same answer."""
    return VipAllocator(vip_range, used).take()


class VipAllocator:
    """`allocate_vip` for many services at once (one deploy op of 500 new services at 10,000 services).

    Calling `allocate_vip` per service parsed every address in use each time: quadratic, and it ran in
    `apply` (the Raft thread), long enough at 10,000 services to make followers call elections. Here the
    addresses in use are parsed once; each `take` hands out the lowest free address and marks it used,
    so a sequence of takes gives exactly what `allocate_vip` would give one after the other.
    """

    def __init__(self, vip_range: str, used: Iterable[str]) -> None:
        net = parse_range(vip_range)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        self._taken = {n for n in map(_to_int, used) if n is not None and lo <= n <= hi}
        self._next = lo + 2  # every address below this one is taken (or the network / the resolver)
        self._last = hi - 1

    def take(self) -> str | None:
        """The lowest free address, now marked used; None when the range is full."""
        candidate = self._next
        while candidate in self._taken:
            candidate += 1
        if candidate > self._last:
            return None
        self._taken.add(candidate)
        self._next = candidate + 1
        return str(ipaddress.IPv4Address(candidate))


def _to_int(address: str) -> int | None:
    """A dotted-quad IPv4 address as an int, None for anything `ipaddress` refuses (as `_in` did)."""
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError:
        return None
