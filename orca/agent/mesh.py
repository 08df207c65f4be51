"""The service mesh on one agent: project networks, VIPs, the mesh HAProxy and the DNS responder.

How a container reaches `store:6379` of its project, on any node:
  1. The agent starts the container on its project's Docker network on this node (`orca-<cluster>-<node>-
     <project>`, a /24 from `[agent.mesh] subnet_pool`, labelled orca.cluster / orca.node / orca.project /
     orca.mesh) with `dns = [resolver, upstreams...]` (`container_network`, called by the runtime).
  2. Docker's embedded DNS forwards `store` to the resolver (an address of the cluster's VIP range), where
     this agent's responder (orca.agent.mesh_dns) answers the VIP of `store` in the asker's project (known
     by its source address: the subnet of a project network of this cluster on this engine).
  3. The VIP and the resolver are local addresses (on `lo`, labelled `lo:om<cluster>`) and the mesh HAProxy
     (its own process, config from orca.agent.mesh_config) listens on VIP:port, accepts only the project's
     networks (and `allow_from`'s), and forwards to a healthy replica at its node's publish address and
     host port: the same endpoints the ingress uses, so a rescheduled replica is reachable as soon as it
     is healthy, under the same name and VIP. A replica on this very node is reached at its container's
     address on the project network and the service's port instead (no Docker port mapping on the way).
Everything the leader sends (the MeshTable) is validated entry by entry (mesh_config.parse_table).

The mesh HAProxy is a second HAProxy process beside the ingress one (same binary, same supervision:
orca.agent.proxy.Proxy): a VIP that cannot be bound then never takes the ingress down, and either can
reload without the other. Agents of one cluster sharing an engine (tests) share VIPs through
SO_REUSEPORT and answer alike, as every agent has the whole table and sees every project network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from orca.agent import mesh_config as mc
from orca.agent.mesh_dns import MeshDns
from orca.agent.proxy import Proxy
from orca.config import MeshConfig, ProxyConfig

__all__ = ["Mesh", "network_name", "lo_label", "LABEL_PROJECT", "LABEL_MESH", "upstream_dns", "mesh_addresses"]

log = logging.getLogger("orca.agent.mesh")

LABEL_PROJECT = "orca.project"
LABEL_MESH = "orca.mesh"
REFRESH_S = 5.0  # the project networks of the engine are listed again this often (other agents' ones)
IP_TIMEOUT_S = 10.0
MAX_NETWORK_TRIES = 16
NEW_NETWORK_WAIT_S = 10.0  # a container's start waits at most this long for its new network to be applied


def network_name(cluster_id: str, node_id: str, project: str) -> str:
    return f"orca-{cluster_id[:12]}-{node_id}-{project}"


def lo_label(cluster_id: str) -> str:
    """The label of this cluster's mesh addresses on `lo` (at most 15 characters, `lo:` first)."""
    return f"lo:om{cluster_id[:10]}"


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class MeshProxy(Proxy):
    """The mesh's HAProxy: the ingress proxy's supervision (start, hitless reload, stop) with the mesh's
    config instead of the route table's."""

    def __init__(self, mesh: Mesh, run_dir: Path) -> None:
        super().__init__(ProxyConfig(listen=f"127.0.0.1:{_free_loopback_port()}", drain_timeout_s=5.0),
                         run_dir=run_dir)
        self.mesh = mesh

    def render(self) -> str:
        services = mc.with_local_endpoints(self.mesh.services, self.mesh.local)
        return mc.render(services, self.mesh.networks, ready_listen=self.config.listen,
                         stats_socket=str(self.admin_socket) if self._sock_dir is not None else None)

    def refresh(self) -> None:
        """Render again and reload when the text changed (in the background, see Proxy.settled)."""
        self._bump()


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
        self._network_lock = threading.Lock()  # the reconciler starts containers from several threads
        self.proxy = MeshProxy(self, run_dir)
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
        """From the runtime's thread, after a new network: apply it (the listeners' source ACLs and the DNS
        learn its subnet) and wait until HAProxy runs with it, so the container about to start is not
        refused in its first second. Bounded; without a running mesh loop it returns at once."""
        loop = self._event_loop
        if loop is None or not loop.is_running():
            return

        async def apply_and_settle() -> None:
            await self.apply()
            await self.proxy.settled(NEW_NETWORK_WAIT_S)
        try:
            asyncio.run_coroutine_threadsafe(apply_and_settle(), loop).result(NEW_NETWORK_WAIT_S + 5)
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

    def _list_local(self) -> dict[str, str]:
        """This node's replicas' container addresses on its project networks (one engine call)."""
        rows = self.runtime.client.api.containers(
            filters={"label": [f"orca.cluster={self.cluster_id}", f"orca.node={self.node_id}"], "status": "running"})
        return mc.local_addresses(rows, f"orca-{str(self.cluster_id)[:12]}-{self.node_id}-")

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

    async def start(self) -> None:
        if shutil.which("ip") is None:
            raise RuntimeError("the service mesh ([agent.mesh]) needs the `ip` command: apt-get install iproute2")
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self.proxy.start()
        self._event_loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._loop())
        log.info("service mesh on (HAProxy pid %s)", self.proxy._proc.pid if self.proxy._proc else None)

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
        """One pass: networks, addresses, DNS names, HAProxy config."""
        async with self._apply_lock:
            await self._apply()

    async def _apply(self) -> None:
        if not self.cluster_id or self.resolver is None:
            return
        loop = asyncio.get_running_loop()
        # Its own thread: the runtime's threads (the default executor) may be waiting on this very pass.
        self.networks = await loop.run_in_executor(self._executor, self._list_networks)
        self._subnets = [(ipaddress.IPv4Network(c), p) for p, cidrs in self.networks.items() for c in cidrs]
        self.local = await loop.run_in_executor(self._executor, self._list_local)
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
        self.proxy.refresh()

    async def settled(self, timeout: float = 10.0) -> bool:
        return await self.proxy.settled(timeout)

    async def stop(self) -> None:
        """End the loop, the DNS responder and the mesh HAProxy. The addresses on lo stay: another agent of
        the cluster on this host may serve them too, and the next start takes them over."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
        await self.proxy.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
