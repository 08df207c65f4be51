"""The service mesh's data plane in the kernel: one nftables table per cluster and node (pure: no I/O).

`render` turns the mesh table (orca.agent.mesh_config) into an `nft -f` script that replaces the agent's
own table in one transaction: the kernel swaps the old rules for the new ones atomically, and
connections already open keep their conntrack entry (their NAT mapping), so a change never breaks one.
The same idea as kube-proxy's iptables/nftables modes and Swarm's routing mesh (IPVS is not in every
kernel; nftables is): a connection to VIP:port is DNATed to one healthy replica, picked at random
(`numgen random mod N`) when the connection opens; every later packet follows conntrack. No process sits
in the byte path, so service to service costs what a routed hop costs, for HTTP and TCP alike (HTTP is
balanced per connection, like a Kubernetes ClusterIP).

The table (family ip, named `orca_mesh_<cluster>_<node>`: two agents of one cluster on one host each own
theirs, and for a connection the first DNAT that matches wins; both tables say the same):
  - `access_in` (filter, prerouting, before DNAT): a new connection to a served VIP:port whose source is
    not in the service's allowed networks (its project's and its `allow_from` projects' networks) is
    rejected with a TCP reset; so is one to a service with no replica reachable from a container.
  - `access_out` (filter, output): the host's own connections to a service without replicas are reset.
    The host's processes are not checked against the project networks: they can reach every container
    and published port straight anyway, so the VIP gives them nothing new.
  - `dnat_in` / `dnat_out` (nat, prerouting / output): VIP . port -> the service's chain, which DNATs to
    one endpoint. Containers (prerouting) never get a loopback endpoint: a packet from a bridge cannot be
    routed to 127.0.0.0/8 (that would need route_localnet, which exposes the host's loopback services to
    every container); the host (output) can use them.
  - `source_nat` (nat, postrouting): every mesh connection leaving by another interface than `lo` takes
    the outgoing interface's address as its source, so the reply comes back through this host (a replica
    on the same bridge as its client would otherwise answer the client straight, and a replica on another
    node would answer an address that is not routed back here), and conntrack rewrites it back to the VIP.

Forwarding between two Docker bridges (a container of project B allowed into project A's service, or two
agents sharing one engine) is dropped by Docker's isolation rules in iptables' FORWARD chain, which no
accept in another table can override; the agent puts one rule in Docker's DOCKER-USER chain
(`forward_rule`): connections DNATed from the VIP range are accepted there. This table decides who they are.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from orca.agent.mesh_config import MeshService, allowed_networks

__all__ = ["TABLE_PREFIX", "table_name", "render", "delete_script", "forward_rule", "container_endpoints",
           "ACCESS_PRIORITY", "DNAT_PRIORITY"]

TABLE_PREFIX = "orca_mesh_"
ACCESS_PRIORITY = -110  # before the DNAT: the access check sees the VIP, not the replica
# Just before Docker's own DNAT (iptables' nat table, -100), which matches any local address (a VIP is one)
# on a published host port: a service port that equals some container's host port stays the mesh's.
DNAT_PRIORITY = -101
_NODE_RE = re.compile(r"^[a-z0-9-]{1,63}$")
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")
ELEMENTS_PER_LINE = 16


def table_name(cluster_id: str, node_id: str) -> str:
    """`orca_mesh_<cluster id's first 12 characters>_<node id>` (node ids are [a-z0-9-]{1,63})."""
    if not _CLUSTER_RE.match(cluster_id) or not _NODE_RE.match(node_id):
        raise ValueError("a cluster id (letters and digits) and a node id ([a-z0-9-]) are needed")
    return f"{TABLE_PREFIX}{cluster_id[:12]}_{node_id}"


def _is_loopback(address: str) -> bool:
    return ipaddress.IPv4Address(address.rsplit(":", 1)[0]).is_loopback


def container_endpoints(service: MeshService) -> tuple[tuple[str, str], ...]:
    """The endpoints a container's connection may be DNATed to: all but loopback ones."""
    return tuple(e for e in service.endpoints if not _is_loopback(e[1]))


def _elements(items: Iterable[str], indent: str) -> list[str]:
    """`elements = { a, b, ... }` over lines of ELEMENTS_PER_LINE; nothing for an empty set."""
    items = list(items)
    if not items:
        return []
    rows = [", ".join(items[i:i + ELEMENTS_PER_LINE]) for i in range(0, len(items), ELEMENTS_PER_LINE)]
    return [f"{indent}elements = {{ " + (f",\n{indent}             ".join(rows)) + " }"]


def _set(name: str, type_: str, items: Iterable[str], *, interval: bool = False) -> list[str]:
    lines = [f"    set {name} {{", f"        type {type_}"]
    if interval:
        lines.append("        flags interval")
    return lines + _elements(items, "        ") + ["    }"]


def _map(name: str, items: Iterable[str]) -> list[str]:
    return (["    map " + name + " {", "        type ipv4_addr . inet_service : verdict"]
            + _elements(items, "        ") + ["    }"])


def _dnat_chain(name: str, service: str, endpoints: tuple[tuple[str, str], ...]) -> list[str]:
    targets = [f"{i} : {address.rsplit(':', 1)[0]} . {address.rsplit(':', 1)[1]}"
               for i, (_, address) in enumerate(endpoints)]
    return [f"    chain {name} {{",
            f'        comment "{service}"',
            f"        meta l4proto tcp dnat to numgen random mod {len(endpoints)} map {{ {', '.join(targets)} }}",
            "    }"]


def render(table: str, services: list[MeshService], networks: dict[str, tuple[str, ...]]) -> str:
    """The `nft -f` script that makes `table` serve `services` (replicas on this engine already at their
    container's address, see mesh_config.with_local_endpoints); `networks` maps a project to its networks'
    subnets. Same input, same text (the agent applies only a change)."""
    vips = sorted({s.vip for s in services}, key=ipaddress.IPv4Address)
    served, allowed, closed_in, closed_out, to_in, to_out, chains = [], [], [], [], [], [], []
    for i, svc in enumerate(services):
        key = f"{svc.vip} . {svc.port}"
        served.append(key)
        allowed += [f"{key} . {cidr}" for cidr in allowed_networks(svc, networks)]
        inside = container_endpoints(svc)
        if inside:
            chains += _dnat_chain(f"svc_{i}", svc.name, inside)
            to_in.append(f"{key} : goto svc_{i}")
        else:
            closed_in.append(key)
        if not svc.endpoints:
            closed_out.append(key)
        elif inside == svc.endpoints:
            to_out.append(f"{key} : goto svc_{i}")
        else:  # loopback endpoints: the host reaches them, containers do not
            chains += _dnat_chain(f"svc_{i}_host", svc.name, svc.endpoints)
            to_out.append(f"{key} : goto svc_{i}_host")
    lines = [
        "# Generated by the orca agent (service mesh); replaced as a whole on every change. Do not edit.",
        f"table ip {table} {{}}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        *_set("vips", "ipv4_addr", vips),
        *_set("services", "ipv4_addr . inet_service", served),
        *_set("allowed", "ipv4_addr . inet_service . ipv4_addr", allowed, interval=True),
        *_set("closed_in", "ipv4_addr . inet_service", closed_in),
        *_set("closed_out", "ipv4_addr . inet_service", closed_out),
        *_map("to_in", to_in),
        *_map("to_out", to_out),
        "    chain access_in {",
        f"        type filter hook prerouting priority {ACCESS_PRIORITY}; policy accept;",
        # A connection is checked when it opens (as a proxy checks it at accept; later packets follow
        # conntrack, so the bytes cost no lookups). Never a reply: one to the host's own connection (from
        # a replica on lo, to the VIP it used as its source) may come to a port that is a service's.
        "        ct state new ip daddr . tcp dport @services ip daddr . tcp dport . ip saddr != @allowed"
        " reject with tcp reset",
        "        ct state new ip daddr . tcp dport @closed_in reject with tcp reset",
        "    }",
        "    chain access_out {",
        f"        type filter hook output priority {ACCESS_PRIORITY}; policy accept;",
        "        ct state new ip daddr . tcp dport @closed_out reject with tcp reset",
        "    }",
        "    chain dnat_in {",
        f"        type nat hook prerouting priority {DNAT_PRIORITY}; policy accept;",
        "        ip daddr . tcp dport vmap @to_in",
        "    }",
        "    chain dnat_out {",
        f"        type nat hook output priority {DNAT_PRIORITY}; policy accept;",
        "        ip daddr . tcp dport vmap @to_out",
        "    }",
        "    chain source_nat {",
        "        type nat hook postrouting priority 100; policy accept;",
        '        oifname != "lo" ct status dnat ct original ip daddr @vips masquerade',
        "    }",
        *chains,
        "}",
    ]
    return "\n".join(lines) + "\n"


def delete_script(table: str) -> str:
    """Remove `table` if it exists (one transaction: creating an empty one first makes the delete safe)."""
    return f"table ip {table} {{}}\ndelete table ip {table}\n"


def forward_rule(vip_range: str, table: str) -> list[str]:
    """The iptables rule (for Docker's DOCKER-USER chain) that lets mesh connections cross from one Docker
    bridge to another: conntrack says they were DNATed from the VIP range, which only this table does
    (after its access check). The comment names the owner, so each agent removes exactly its own."""
    net = ipaddress.IPv4Network(vip_range, strict=True)
    return ["-m", "conntrack", "--ctstate", "DNAT", "--ctorigdst", str(net),
            "-m", "comment", "--comment", table, "-j", "ACCEPT"]
