"""The service mesh on one agent: project networks, VIPs, the kernel data plane and the DNS responder.

How a container reaches `store:6379` of its project, on any node:
  1. The agent starts the container on its project's Docker network on this node (`orca-<cluster>-<node>-
     <project>`, a /24 from `[agent.mesh] subnet_pool`, labelled orca.cluster / orca.node / orca.project /
     orca.mesh) with `dns = [resolver, upstreams...]` (`container_network`, called by the runtime).
  2. Docker's embedded DNS forwards `store` to the resolver (an address of the cluster's VIP range), where
     this agent's responder (orca.agent.mesh_dns) answers the VIP of `store` in the asker's project (known
     by its source address: the subnet of a project network of this cluster on this engine).
  3. The connection to VIP:6379 leaves the container through its bridge's gateway, and this agent's
     nftables table (orca.agent.mesh_nft) checks its source (the project's networks and `allow_from`'s)
     and DNATs it to one healthy replica: at its container's address when it runs on this node, else at
     its node's publish address and host port (the endpoints the ingress uses), so a rescheduled
     replica is reachable as soon as it is healthy, under the same name and VIP. The kernel moves the bytes;
     no process of the agent is in their path.
Everything the leader sends (the MeshTable) is validated entry by entry (mesh_config.parse_table).

The VIPs and the resolver are local addresses (on `lo`, labelled `lo:om<cluster>`): the DNS responder binds
the resolver, and the host's own connections to a VIP are routed locally and DNATed on the output hook.
Health: the endpoints are the leader's healthy replicas (each agent health-checks its own and reports;
a replica that fails leaves the table at the next push); the agent adds no checks of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import re
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from orca.agent import mesh_config as mc
from orca.agent import mesh_nft
from orca.agent.local_containers import list_rows, network_prefix
from orca.agent.mesh_dns import MeshDns
from orca.config import MeshConfig

__all__ = ["Mesh", "network_name", "lo_label", "LABEL_PROJECT", "LABEL_MESH", "upstream_dns", "mesh_addresses",
           "cleanup_cluster"]

log = logging.getLogger("orca.agent.mesh")

LABEL_PROJECT = "orca.project"
LABEL_MESH = "orca.mesh"
REFRESH_S = 5.0  # the project networks of the engine are listed again this often (other agents' ones)
IP_TIMEOUT_S = 10.0
NFT_TIMEOUT_S = 30.0  # one `nft -f` of the whole table (10,000 services: well under a second)
MAX_NETWORK_TRIES = 16
NEW_NETWORK_WAIT_S = 10.0  # a container's start waits at most this long for its new network to be applied


def network_name(cluster_id: str, node_id: str, project: str) -> str:
    return f"{network_prefix(cluster_id)}{node_id}-{project}"


def lo_label(cluster_id: str) -> str:
    """The label of this cluster's mesh addresses on `lo` (at most 15 characters, `lo:` first)."""
    return f"lo:om{cluster_id[:10]}"


RESOLV_CONFS = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


def upstream_dns(paths: tuple[str, ...] = RESOLV_CONFS) -> list[str]:
    """The host's own name servers, at most 2: the first file naming any that a container can reach (not a
    loopback one: with systemd-resolved, /etc/resolv.conf names 127.0.0.53 and the second file the real
    ones, which is what Docker itself does)."""
    for path in paths:
        out: list[str] = []
        with contextlib.suppress(OSError):
            for line in Path(path).read_text(errors="replace").splitlines()[:100]:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    with contextlib.suppress(ValueError):
                        addr = ipaddress.ip_address(parts[1])
                        if not addr.is_loopback and addr.version == 4:
                            out.append(str(addr))
        if out:
            return out[:2]
    return []


def mesh_addresses(ip_addr_output: str, label: str) -> set[str]:
    """The /32 addresses carrying `label` in `ip -4 -o addr show dev lo` output."""
    pattern = re.compile(r"inet ([0-9.]+)/32 .*" + re.escape(label) + r"(\\|\s|$)")
    return {m.group(1) for line in ip_addr_output.splitlines() if (m := pattern.search(line))}


def _run(args: list[str], stdin: str | None = None, timeout: float = IP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def cleanup_cluster(cluster_id: str) -> list[str]:
    """Remove every mesh table and DOCKER-USER rule of `cluster_id` on this host (any node's): for tests and
    operators after agents that were killed (an agent that stops removes its own). Returns the problems."""
    prefix = f"{mesh_nft.TABLE_PREFIX}{cluster_id[:12]}_"
    problems = []
    for line in _run(["nft", "list", "tables", "ip"]).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].startswith(prefix):
            res = _run(["nft", "-f", "-"], mesh_nft.delete_script(parts[2]))
            if res.returncode != 0:
                problems.append(res.stderr.strip()[:200])
    for line in _run(["iptables", "-w", "5", "-S", "DOCKER-USER"]).stdout.splitlines():
        if f"--comment {prefix}" in line and line.startswith("-A DOCKER-USER "):
            _run(["iptables", "-w", "5", "-D", *shlex.split(line)[1:]])
    return problems


class Mesh:
    """Contract: `set_table(push["mesh"])` on every accepted push; `container_network(alloc)` from the
    runtime (a thread) before it creates a container; `start()` / `stop()` by whoever serves the agent.
    `runtime` is the agent's DockerRuntime (its engine client and cluster id)."""

    def __init__(self, config: MeshConfig, *, node_id: str, run_dir: Path, runtime: Any) -> None:
        self.config = config
        self.node_id = node_id
        self.run_dir = run_dir
        self.runtime = runtime
        self.resolver: str | None = None
        self.services: list[mc.MeshService] = []
        self.networks: dict[str, tuple[str, ...]] = {}  # project -> subnets (every node's, this engine)
        self._subnets: list[tuple[ipaddress.IPv4Network, str]] = []  # subnet -> project, for the DNS
        self._own: dict[str, str] = {}  # project -> this node's network name
        self.local: dict[str, str] = {}  # alloc -> its container's address on this node's project network
        self.engine: dict[str, str] = {}  # the same for every replica of the cluster on this engine
        self._network_lock = threading.Lock()  # the reconciler starts containers from several threads
        self.vip_range: str | None = None
        self._table: str | None = None  # this agent's nftables table, once a cluster id is known
        self._applied: str | None = None  # the nft script the kernel runs now
        self._forward: list[str] | None = None  # the DOCKER-USER rule this agent put in (forward_rule)
        self._forward_warned = False
        self.dns: MeshDns | None = None
        self._changed = asyncio.Event()
        self._apply_lock = asyncio.Lock()  # the loop and a new network (from the runtime's thread) both apply
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="orca-mesh")
        self._task: asyncio.Task[None] | None = None
        self._addresses: set[str] = set()
        self.upstreams = upstream_dns()

    # -- inputs ---------------------------------------------------------------------------------------

    @property
    def cluster_id(self) -> str | None:
        return getattr(self.runtime, "cluster_id", None)

    def set_table(self, table: Any) -> None:
        resolver, services, warnings = mc.parse_table(table)
        for warning in warnings:
            log.warning("%s", warning)
        self.resolver, self.services = resolver, services
        self.vip_range = mc.vip_range_of(table, resolver, services)
        self._changed.set()

    def project_of(self, address: str) -> str | None:
        """The project of a container address (None: not on a mesh network of this cluster)."""
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return None
        return next((project for net, project in self._subnets if ip in net), None)

    # -- networks (called from the runtime's thread) ----------------------------------------------------

    def container_network(self, alloc: dict[str, Any]) -> dict[str, Any] | None:
        """{"network", "dns"} for the allocation's container, its project's network made if missing;
        None while the mesh has no table yet (the container then starts on Docker's default bridge)."""
        if self.resolver is None or not self.cluster_id:
            return None
        project = str((alloc.get("spec") or {}).get("project") or "default")
        name = self._ensure_network(project)
        return {"network": name, "dns": [self.resolver, *self.upstreams]}

    def _ensure_network(self, project: str) -> str:
        with self._network_lock:
            return self._ensure_network_locked(project)

    def _ensure_network_locked(self, project: str) -> str:
        import docker  # the agent's runtime dependency; imported here so the pure parts need no engine

        cluster_id = str(self.cluster_id)
        name = network_name(cluster_id, self.node_id, project)
        client = self.runtime.client
        if client.networks.list(names=[name]):
            self._own[project] = name
            return name
        taken = self._engine_subnets(client)
        pool = ipaddress.IPv4Network(self.config.subnet_pool)
        tries = 0
        for subnet in pool.subnets(new_prefix=24):
            if any(subnet.overlaps(t) for t in taken):
                continue
            tries += 1
            if tries > MAX_NETWORK_TRIES:
                break
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet=str(subnet), gateway=str(subnet.network_address + 1))])
            labels = {"orca.cluster": cluster_id, "orca.node": self.node_id, LABEL_PROJECT: project, LABEL_MESH: "1"}
            try:
                client.networks.create(name, driver="bridge", ipam=ipam, labels=labels, check_duplicate=True)
            except docker.errors.APIError as exc:
                if client.networks.list(names=[name]):  # made meanwhile (a concurrent start)
                    break
                log.info("network %s on %s: %s; trying the next subnet", name, subnet, exc)
                continue
            log.info("project network %s on %s", name, subnet)
            break
        else:
            raise RuntimeError(f"no free /24 left in the mesh subnet pool {self.config.subnet_pool}")
        if not client.networks.list(names=[name]):
            raise RuntimeError(f"could not make the project network {name} in {self.config.subnet_pool}")
        self._own[project] = name
        self._applied_from_thread()
        return name

    def _applied_from_thread(self) -> None:
        """From the runtime's thread, after a new network: apply it (the access rules and the DNS learn its
        subnet), so the container about to start is not refused in its first second. Bounded; without a
        running mesh loop it returns at once."""
        loop = self._event_loop
        if loop is None or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.apply(), loop).result(NEW_NETWORK_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - the loop applies it anyway within REFRESH_S
            log.warning("the new project network is not applied yet: %s", exc)

    @staticmethod
    def _engine_subnets(client: Any) -> list[ipaddress.IPv4Network]:
        out = []
        for net in client.api.networks():
            for cfg in ((net.get("IPAM") or {}).get("Config") or []):
                with contextlib.suppress(ValueError, TypeError):
                    n = ipaddress.ip_network(cfg.get("Subnet"), strict=False)
                    if isinstance(n, ipaddress.IPv4Network):
                        out.append(n)
        return out

    def _list_networks(self) -> dict[str, tuple[str, ...]]:
        """project -> subnets of every mesh network of this cluster on the engine (any node's)."""
        out: dict[str, set[str]] = {}
        client = self.runtime.client
        for net in client.api.networks(filters={"label": [f"orca.cluster={self.cluster_id}", f"{LABEL_MESH}=1"]}):
            project = (net.get("Labels") or {}).get(LABEL_PROJECT)
            if not project:
                continue
            for cfg in ((net.get("IPAM") or {}).get("Config") or []):
                with contextlib.suppress(ValueError, TypeError):
                    out.setdefault(project, set()).add(str(ipaddress.IPv4Network(cfg.get("Subnet"))))
        return {p: tuple(sorted(s)) for p, s in sorted(out.items())}

    def _list_local(self) -> tuple[dict[str, str], dict[str, str]]:
        """The container addresses on their project networks of this node's replicas, and of every replica
        of the cluster on this engine (other nodes' too when agents share the engine, as in tests): one
        engine call. The host reaches all of them over their bridges (mesh_config.with_local_endpoints)."""
        rows = list_rows(self.runtime.client, str(self.cluster_id))
        prefix = network_prefix(str(self.cluster_id))
        return mc.local_addresses(rows, prefix, self.node_id), mc.local_addresses(rows, prefix)

    # -- addresses on lo ----------------------------------------------------------------------------------

    def _ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)

    def _sync_addresses(self, wanted: set[str]) -> None:
        """Make `wanted` exactly this cluster's mesh addresses on lo (others' addresses untouched)."""
        label = lo_label(str(self.cluster_id))
        have = mesh_addresses(self._ip("-4", "-o", "addr", "show", "dev", "lo").stdout, label)
        for addr in sorted(wanted - have):
            res = self._ip("addr", "add", f"{addr}/32", "dev", "lo", "label", label)
            if res.returncode != 0 and "exists" not in res.stderr:
                log.error("cannot add the mesh address %s to lo: %s", addr, res.stderr.strip()[:200])
        for addr in sorted(have - wanted):
            self._ip("addr", "del", f"{addr}/32", "dev", "lo")
        self._addresses = wanted

    # -- the loop ---------------------------------------------------------------------------------------------

    # -- the kernel's rules ---------------------------------------------------------------------------------

    def _apply_rules(self, script: str) -> None:
        """Load `script` (the whole table, one transaction) unless the kernel runs it already."""
        if script == self._applied:
            return
        res = _run(["nft", "-f", "-"], script, timeout=NFT_TIMEOUT_S)
        if res.returncode != 0:
            raise RuntimeError(f"nft refused the mesh table: {res.stderr.strip()[:500]}")
        self._applied = script

    def _ensure_forward(self) -> None:
        """Keep this agent's rule first in Docker's DOCKER-USER chain (see mesh_nft.forward_rule); a Docker
        restart or an operator may have removed it. No Docker chain here (a host without Docker's
        iptables rules): nothing to do, said once."""
        if self.vip_range is None or self._table is None:
            return
        rule = mesh_nft.forward_rule(self.vip_range, self._table)
        if self._forward is not None and self._forward != rule:
            _run(["iptables", "-w", "5", "-D", "DOCKER-USER", *self._forward])
            self._forward = None
        if _run(["iptables", "-w", "5", "-C", "DOCKER-USER", *rule]).returncode == 0:
            self._forward = rule
            return
        res = _run(["iptables", "-w", "5", "-I", "DOCKER-USER", "1", *rule])
        if res.returncode == 0:
            self._forward = rule
        elif not self._forward_warned:
            self._forward_warned = True
            log.warning("no rule in Docker's DOCKER-USER chain (%s): containers reach mesh services on their "
                        "own bridge and on other nodes, not on another bridge of this host",
                        res.stderr.strip()[:200])

    def _remove_rules(self) -> None:
        if self._table is not None:
            res = _run(["nft", "-f", "-"], mesh_nft.delete_script(self._table), timeout=NFT_TIMEOUT_S)
            if res.returncode != 0:
                log.warning("could not remove the mesh table %s: %s", self._table, res.stderr.strip()[:200])
            self._applied = None
        if self._forward is not None:
            _run(["iptables", "-w", "5", "-D", "DOCKER-USER", *self._forward])
            self._forward = None

    # -- the loop ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
            if shutil.which(tool) is None:
                raise RuntimeError(f"the service mesh ([agent.mesh]) needs the `{tool}` command: "
                                   f"apt-get install {package}")
        with contextlib.suppress(OSError):
            if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
                log.warning("net.ipv4.ip_forward is 0: containers reach mesh replicas on this host's bridges "
                            "only (Docker turns it on; `sysctl -w net.ipv4.ip_forward=1`)")
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._event_loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._loop())
        log.info("service mesh on (nftables)")

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REFRESH_S)
            self._changed.clear()
            try:
                await self.apply()
            except Exception:  # noqa: BLE001 - the loop must outlive an engine hiccup; it retries
                log.exception("service mesh: applying the table failed (retrying)")
                await asyncio.sleep(1.0)
                self._changed.set()

    async def apply(self) -> None:
        """One pass: networks, addresses, DNS names, the kernel's rules."""
        async with self._apply_lock:
            await self._apply()

    async def _apply(self) -> None:
        if not self.cluster_id or self.resolver is None:
            return
        loop = asyncio.get_running_loop()
        # Its own thread: the runtime's threads (the default executor) may be waiting on this very pass.
        self.networks = await loop.run_in_executor(self._executor, self._list_networks)
        self._subnets = [(ipaddress.IPv4Network(c), p) for p, cidrs in self.networks.items() for c in cidrs]
        self.local, self.engine = await loop.run_in_executor(self._executor, self._list_local)
        wanted = {self.resolver, *(s.vip for s in self.services)}
        await loop.run_in_executor(self._executor, self._sync_addresses, wanted)
        if self.dns is None or self.dns.address != self.resolver:
            if self.dns is not None:
                self.dns.stop()
            dns = MeshDns(self.resolver, self.project_of)
            try:
                await dns.start()
                self.dns = dns
            except OSError as exc:
                log.error("mesh DNS on %s:53: %s", self.resolver, exc)
        if self.dns is not None:
            self.dns.names = {(s.project, s.name): s.vip for s in self.services}
        self._table = mesh_nft.table_name(str(self.cluster_id), self.node_id)
        await loop.run_in_executor(self._executor, self._apply_rules, self.render())
        await loop.run_in_executor(self._executor, self._ensure_forward)

    def render(self) -> str:
        """The nft script for the current table, networks and container addresses."""
        table = self._table or mesh_nft.table_name(str(self.cluster_id), self.node_id)
        return mesh_nft.render(table, mc.with_local_endpoints(self.services, self.local, self.engine),
                               self.networks)

    async def stop(self) -> None:
        """End the loop and the DNS responder, and remove this agent's table and DOCKER-USER rule (keyed by
        its node: another agent of the cluster on this host keeps serving with its own; without any agent
        a VIP's rules would send new connections to replicas nobody keeps up to date). The addresses on lo
        stay: another agent of the cluster on this host may serve them too, and the next start takes them
        over."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
        async with self._apply_lock:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._remove_rules)
        self._executor.shutdown(wait=False, cancel_futures=True)
