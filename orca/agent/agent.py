"""One worker agent: its durable state, the pushes it accepts, and its link to the masters.

- `PushStore` keeps what must survive an agent restart in `data_dir`: the push token the leader must
  present (`push_token`), the fence (`fence.json`: the highest term seen and the version applied in
  it) and the last accepted desired set (`desired.json`, secrets included, hence mode 600), so a
  restarted agent keeps running its replicas even when no master answers.
- `Agent` ties the store, the reconciler, the health monitor, the ingress proxy (when configured) and
  the container stats sampler together, answers pushes and builds the status API's NodeReport.
- `MasterLink` obtains the node's credential (exchanging a join token once, orca.agent.credential),
  registers with the masters and heartbeats the actual allocations to the leader,
  following 307s itself (so the bearer token is never dropped by a client library on a cross-origin
  redirect) and rotating through the masters when one is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from orca import __version__, jointoken, tls, trace
from orca.agent.credential import Credential
from orca.agent.health import HealthMonitor
from orca.agent.local_containers import LocalContainer, list_rows, local_containers, network_prefix
from orca.agent.masters import MasterList
from orca.agent.mesh import Mesh
from orca.agent.metrics import AgentMetrics
from orca.agent.node_tls import NodeTls
from orca.agent.proxy import MAX_REPLICAS_REPORTED, Proxy
from orca.agent.reconcile import Reconciler, iso
from orca.agent.runtime import Runtime, RuntimeFailure
from orca.agent.stats import StatsSampler
from orca.config import AgentConfig
from orca.errors import OrcaError, StaleLeader
from orca.protocol import CLUSTER_ID_RE, HEARTBEAT_MAX_BYTES

__all__ = ["PushStore", "Agent", "MasterLink", "write_atomic"]

EARLY_HEARTBEAT_MIN_S = 0.05  # between two early heartbeats: at most 20 a second from one node

log = logging.getLogger("orca.agent")

REGISTER_BACKOFF_S = (0.2, 2.0)  # first delay, cap
MAX_REDIRECTS = 5
REQUEST_TIMEOUT_S = 5.0


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via a temporary file and rename, so a crash leaves the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class PushStore:
    """The fence, the desired set and the push token, in memory and in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # desired.json holds secrets
        self.push_token = self._load_token()
        fence = self._read_json("fence.json") or {}
        self.term = int(fence.get("term", 0))
        self.version = int(fence.get("version", 0))
        # The cluster this node took a desired set from: a push from another cluster (a fresh, empty one
        # started after every master's disk was lost, before the restore) is refused, not obeyed.
        self.lineage: str | None = fence.get("lineage") if isinstance(fence.get("lineage"), str) else None
        self.desired: dict[str, Any] | None = self._read_json("desired.json")
        self.cluster_id = self._load_cluster_id()

    def _load_cluster_id(self) -> str | None:
        """The cluster this node belongs to (learnt at the first registration), or None before that."""
        try:
            value = (self.dir / "cluster_id").read_text().strip()
        except FileNotFoundError:
            return None
        if not CLUSTER_ID_RE.fullmatch(value):
            log.warning("ignoring unreadable %s", self.dir / "cluster_id")
            return None
        return value

    def set_cluster_id(self, cluster_id: str) -> None:
        write_atomic(self.dir / "cluster_id", cluster_id.encode())
        self.cluster_id = cluster_id

    def _load_token(self) -> str:
        path = self.dir / "push_token"
        try:
            token = path.read_text().strip()
            if token:
                return token
        except FileNotFoundError:
            pass
        token = secrets.token_urlsafe(32)
        write_atomic(path, token.encode())
        return token

    def _read_json(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / name).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("ignoring unreadable %s", self.dir / name)
            return None
        return data if isinstance(data, dict) else None

    def check_token(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.push_token.encode())

    def accept(self, push: dict[str, Any]) -> bool:
        """Apply the fencing rules to a validated push; True when it is the new desired set.

        A lower term than the highest seen raises StaleLeader (a deposed leader); within one term an
        older version is ignored (a late retry). The fence is on disk before the answer goes out.
        """
        term, version = push["term"], push["version"]
        lineage = push.get("lineage")
        if self.lineage is not None and lineage != self.lineage:
            raise StaleLeader(f"push from cluster state {lineage or '(no lineage)'}, but this node runs the desired "
                              f"set of cluster state {self.lineage} (restore that cluster's snapshot, or wipe this "
                              "agent's data directory to move it)",
                              {"lineage": lineage, "seen_lineage": self.lineage})
        if term < self.term:
            raise StaleLeader(f"push from term {term}, but term {self.term} has been seen",
                              {"term": term, "seen_term": self.term})
        if term == self.term and version < self.version:
            return False
        self.term, self.version = term, version
        self.lineage = lineage or self.lineage
        fence = {"term": term, "version": version, **({"lineage": self.lineage} if self.lineage else {})}
        write_atomic(self.dir / "fence.json", json.dumps(fence).encode())
        write_atomic(self.dir / "desired.json", json.dumps(push).encode())
        self.desired = push
        return True

    def forget_desired(self) -> None:
        self.desired = None
        (self.dir / "desired.json").unlink(missing_ok=True)


class Agent:
    """The agent's state and its parts. Contract: `accept_push(push)` is called by the agent API with a
    validated AllocationsPush; `node_report()` by the status API; `run()` runs the loops until `stop()`
    (returns 0) or a `shutdown` directive (stops this node's containers, then returns 0).

    `proxy` is the ingress proxy when `config.proxy` is set (else None): it takes each accepted push's
    routes, and the reconciler awaits its drain of a replica before stopping it. Whoever serves the
    agent (orca.agent.main) starts and stops the proxy's listener; `run()` does not. `stats` samples
    container CPU and memory in a thread while `run()` runs.
    """

    def __init__(self, config: AgentConfig, runtime: Runtime, *, reconciler: Reconciler | None = None,
                 health: HealthMonitor | None = None, proxy: Proxy | None = None) -> None:
        self.config = config
        self.node_id = config.agent_id
        self.runtime = runtime
        self.store = PushStore(config.data_dir)
        # Containers are labelled with the cluster id and only those of this cluster are touched; an agent
        # that never registered does not know it yet, and its runtime touches nothing until it does.
        if self.store.cluster_id is not None:
            runtime.cluster_id = self.store.cluster_id
        self.proxy = proxy or (Proxy(config.proxy, run_dir=Path(config.data_dir) / "haproxy")
                              if config.proxy is not None else None)
        # The service mesh (orca.agent.mesh) when `[agent.mesh]` is set: containers join their project's
        # network and reach other services by name through it.
        self.mesh = Mesh(config.mesh, node_id=config.agent_id, run_dir=Path(config.data_dir) / "mesh",
                         runtime=runtime) if getattr(config, "mesh", None) is not None else None
        if self.mesh is not None and hasattr(runtime, "network_for"):
            runtime.network_for = self.mesh.container_network
        # The ingress reaches this node's replicas at their container's address (skipping Docker's port
        # mapping) when the runtime is a Docker engine's; `client` is looked up on the type: the property
        # itself connects to the engine.
        if (self.proxy is not None and self.proxy.config.local_by_address and self.proxy.list_local is None
                and hasattr(type(runtime), "client")):
            self.proxy.list_local = self._list_local
        self.reconciler = reconciler or Reconciler(runtime, host_port_range=config.host_port_range)
        if hasattr(runtime, "adopt_legacy"):  # containers from before cluster labels (orca.agent.runtime)
            runtime.adopt_legacy = self.reconciler.wants
        if self.proxy is not None and self.reconciler.before_stop is None:
            self.reconciler.before_stop = self.proxy.drain
        self.health = health or HealthMonitor(self.reconciler, config.publish_address)
        self.stats = StatsSampler(runtime, self._running_allocs)
        self.link = MasterLink(self)
        self.metrics = AgentMetrics(self)
        self.started_at = time.time()
        self._stop = asyncio.Event()
        if self.store.desired is not None:
            log.info("resuming the saved desired set (term %d, version %d, %d allocations)",
                     self.store.term, self.store.version, len(self.store.desired.get("allocations", [])))
            self._set_routes(self.store.desired)
            self.reconciler.set_desired(self.store.desired)

    def _list_local(self) -> dict[str, LocalContainer]:
        """This node's running replicas and their addresses on this host's bridges (a mesh network of the
        cluster, or Docker's default bridge without the mesh). Runs in the proxy's thread."""
        cluster_id = getattr(self.runtime, "cluster_id", None)
        if not cluster_id:
            return {}
        rows = list_rows(self.runtime.client, str(cluster_id))
        return local_containers(rows, network_prefix(str(cluster_id)), self.node_id, default_bridge=True)

    def _running_allocs(self) -> list[str]:
        # Called from the stats thread: list() copies the dict's values in one step under the GIL.
        return [st.alloc_id for st in list(self.reconciler.states.values())
                if st.status == "running" and st.container_id]

    def _set_routes(self, push: dict[str, Any]) -> None:
        if self.proxy is not None:
            self.proxy.set_routes(push.get("routes") or {})
        if self.mesh is not None:
            self.mesh.set_table(push.get("mesh") or {})

    def accept_push(self, push: dict[str, Any]) -> dict[str, Any]:
        before = {a.get("id") for a in ((self.store.desired or {}).get("allocations") or [])}
        if not self.store.accept(push):
            return {"accepted": False, "version": self.store.version}
        trace.mark("push_received", node=self.node_id, version=push["version"], allocs=len(push["allocations"]))
        # Routes first: a replica leaving both is already out of the table when its stop (and drain) begins.
        self._set_routes(push)
        self.reconciler.set_desired(push)
        # The leader re-sends the same set every few seconds: INFO only when the allocations changed.
        changed = before != {a.get("id") for a in push["allocations"]}
        log.log(logging.INFO if changed else logging.DEBUG, "accepted push term %d version %d: %d allocations",
                push["term"], push["version"], len(push["allocations"]))
        return {"accepted": True, "version": push["version"]}

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        tasks = [asyncio.create_task(self.reconciler.run(), name="reconciler"),
                 asyncio.create_task(self.health.run(), name="health")]
        link = asyncio.create_task(self.link.run(), name="master-link")
        stopped = asyncio.create_task(self._stop.wait())
        self.stats.start()
        try:
            done, _ = await asyncio.wait([link, stopped], return_when=asyncio.FIRST_COMPLETED)
            if link in done and link.result() == "shutdown":
                log.warning("the cluster has forgotten this node: stopping its containers and exiting")
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.reconciler.stop_all()
                self.store.forget_desired()
            else:
                log.info("agent stopping; its containers keep running and are re-adopted on restart")
            return 0
        finally:
            for t in [*tasks, link, stopped]:
                t.cancel()
            await asyncio.gather(*tasks, link, stopped, return_exceptions=True)
            await asyncio.to_thread(self.stats.stop)
            await self.link.close()

    def node_report(self) -> dict[str, Any]:
        """The status API's NodeReport, as orun documents it: `deployments` and `services` keyed by the
        service's name (its manifest name), `node.git_head` the fingerprint of the desired set this node runs.

        orun runs one container per deployment; an orca service may have several replicas on one node, so
        a deployment's `container_id` and `image` are its first replica's, `state` is "running" only when
        every replica runs (else the first other state), `changed_at` the latest change, and `replicas`
        lists each one (an addition to the document)."""
        by_service: dict[str, list[Any]] = {}
        for alloc_id in sorted(self.reconciler.states):
            st = self.reconciler.states[alloc_id]
            by_service.setdefault(st.service, []).append(st)
        deployments: dict[str, Any] = {}
        services: dict[str, Any] = {}
        for service, replicas in sorted(by_service.items()):
            first = replicas[0]
            other = next((st.status for st in replicas if st.status != "running"), None)
            spec = next((st.spec for st in replicas if st.spec), None) or {}
            deployments[service] = {
                "name": service, "image": spec.get("image") or first.image, "container_id": first.container_id,
                "state": other or "running", "changed_at": iso(max(st.changed_at for st in replicas)),
                "replicas": [{"name": st.name, "alloc": st.alloc_id, "version": st.version,
                              "container_id": st.container_id, "state": st.status, "changed_at": iso(st.changed_at)}
                             for st in replicas]}
            services[service] = {"name": service, "deployment": service, "domain": spec.get("domain"),
                                 "route_active": self.proxy is not None and self.proxy.route_active(service)}
        link = self.link
        return {"node": {"name": self.node_id, "started_at": iso(self.started_at),
                         "last_sync_time": iso(link.last_sync) if link.last_sync else None,
                         "git_head": desired_head(self.store.desired), "leader": link.leader,
                         "sync_error": link.sync_error or self.reconciler.engine_error},
                "deployments": deployments, "services": services}


def desired_head(desired: dict[str, Any] | None) -> str | None:
    """orun's `git_head` (the commit of the manifests a node runs) for orca: a 40-hex fingerprint of the
    desired set this node last accepted (term, version, and each allocation's id and spec; never the
    secret values the push also carries), None before the first push."""
    if desired is None:
        return None
    allocs = [{"id": a.get("id"), "spec": a.get("spec")} for a in desired.get("allocations") or []
              if isinstance(a, dict)]
    doc = {"term": desired.get("term"), "version": desired.get("version"), "allocations": allocs}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:40]


class _LinkError(Exception):
    """A master could not be asked (connection refused, timeout, bad reply)."""


class MasterLink:
    """Registration and heartbeats. `run()` returns "shutdown" on that directive, else runs forever.

    `leader` is the last leader a master named (None until one did), `last_sync` the wall time of the
    last answered heartbeat, `sync_error` the last failure (None once a heartbeat got through).
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config
        self.master_list = MasterList(self.config.masters, self.config.data_dir)
        # The loader always fills `advertise`; a config built in code may leave it empty.
        self.address = self.config.advertise or f"http://{self.config.listen}"
        self.heartbeat_s = self.config.heartbeat_s
        self.leader: str | None = None
        self.last_sync: float | None = None
        self.sync_error: str | None = None
        self.heartbeats: dict[str, int] = {}  # "ok" | "failed" -> heartbeat rounds since start (/metrics)
        self._cursor = 0
        self._seq = 0
        self._session: aiohttp.ClientSession | None = None
        self._last_logged: str | None = None
        self.credential = Credential(agent.node_id, self.config.token, self.config.data_dir)
        self.tls = NodeTls(agent.node_id, self.config.data_dir, tls.names_for_url(self.address),
                           ca_file=getattr(self.config, "ca_file", None),
                           enabled=any(m.startswith("https://") for m in self.masters))

    @property
    def masters(self) -> list[str]:
        """The masters to try: the cluster's member list as the leader last sent it, then the configured
        ones it does not name (orca.agent.masters)."""
        return self.master_list.urls

    @masters.setter
    def masters(self, urls: list[str]) -> None:
        """Point the agent at these masters only (forgets the learnt list; tests and tools)."""
        self.master_list.configured = [u.rstrip("/") for u in urls]
        self.master_list.learnt = []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- plumbing ----------------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        """Remember a failure; log it once until it changes (an unreachable cluster must not flood)."""
        self.sync_error = message
        if message != self._last_logged:
            log.warning("%s", message)
            self._last_logged = message

    def _targets(self) -> list[str]:
        """The leader first when known, then every master, starting from the rotation cursor."""
        n = len(self.masters)
        order = [self.masters[(self._cursor + i) % n] for i in range(n)]
        if self.leader:
            order = [self.leader, *(m for m in order if m != self.leader)]
        return order

    async def _post(self, base: str, path: str, body: dict[str, Any],
                    bearer: str | None = None) -> tuple[int, Any, str]:
        """POST following 307/308 ourselves; returns (status, parsed body or None, final base URL).
        The bearer is the node's credential unless given (the join exchange sends the join token)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        url = base + path
        headers = {"Authorization": f"Bearer {bearer or self.credential.token or ''}"}
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._session.post(url, data=data, headers={**headers, "Content-Type": "application/json"},
                                              allow_redirects=False, ssl=self.tls.client_ssl()) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    raw = await resp.read()
                    try:
                        parsed = json.loads(raw) if raw else None
                    except ValueError:
                        parsed = None
                    parts = urlsplit(url)
                    return resp.status, parsed, f"{parts.scheme}://{parts.netloc}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _LinkError(f"{base}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        raise _LinkError(f"{base}: too many redirects")

    # -- registration ------------------------------------------------------------------------------

    async def _capacity(self) -> dict[str, Any]:
        memory, cpu = self.config.memory_bytes, self.config.cpu
        if memory is None or cpu is None:
            engine = await asyncio.to_thread(self.agent.runtime.engine_resources)
            memory = memory if memory is not None else int(engine["memory"])
            cpu = cpu if cpu is not None else float(engine["cpu"])
        return {"memory": memory, "cpu": cpu}

    async def join(self) -> bool:
        """Exchange the configured join token for this node's credential; True once it is stored.
        A refusal (used, revoked, expired, node taken: 401/403/409) is logged and not retried on the
        other masters, who share the same state; the caller backs off and tries again later."""
        join_token = self.credential.join_token
        if join_token is None:
            return False
        body: dict[str, Any] = {"node_id": self.agent.node_id, "nonce": self.credential.nonce()}
        if self.tls.enabled:
            body.update(csr=self.tls.csr(), names=self.tls.names)
        for base in self._targets():
            try:
                status, reply, final = await self._post(base, "/api/v1/agent/join", body, bearer=join_token)
            except _LinkError as exc:
                self._error(f"join: {exc}")
                continue
            if 200 <= status < 300:
                problem = self.credential.accept(reply)
                if problem is None and self.tls.enabled:
                    problem = self.tls.accept(reply)
                if problem is None:
                    log.info("joined: obtained the credential of node %s from %s (kept in %s)",
                             self.agent.node_id, final, self.config.data_dir)
                    return True
                self._error(f"join: {final}: {problem}")
                return False
            self._error(f"join: {final} answered {status}: {_describe(reply)}")
            if status in (401, 403, 409):
                return False
        return False

    async def _get(self, base: str, path: str, verify: bool = True) -> Any:
        """GET a public JSON document from one master (verify=False only to fetch a CA to pin)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        try:
            async with self._session.get(base + path, ssl=self.tls.client_ssl(verify)) as resp:
                raw = await resp.content.read(256 * 1024)
                return json.loads(raw) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise _LinkError(f"{base}: {type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def bearer_status(self, bearer: str) -> int | None:
        """Ask the masters whether `bearer` may read (a viewer read with it): 200, or the 401/403 a master
        answered; None when no master gave a verdict. The bearer goes only to the configured masters, over
        this link's TLS, and is never logged."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        for base in self._targets():
            try:
                async with self._session.get(base + "/api/v1/cluster/info", allow_redirects=False,
                                             headers={"Authorization": f"Bearer {bearer}"},
                                             ssl=self.tls.client_ssl()) as resp:
                    await resp.content.read(256 * 1024)
                    if resp.status in (200, 401, 403):
                        return resp.status
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                continue
        return None

    async def prepare_tls(self, stop: asyncio.Event) -> bool:
        """Before anything listens or heartbeats on a TLS cluster: trust (the pinned CA of a version-2
        join token, or ca_file) and this node's certificate (from the join exchange, or signed for the
        node token). Retries with backoff until done (True) or `stop` (False)."""
        delay, cap = REGISTER_BACKOFF_S
        while not stop.is_set():
            if self.tls.ready():
                return True
            try:
                await self._obtain_tls()
            except _LinkError as exc:
                self._error(f"tls: {exc}")
            if self.tls.ready():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, cap)
        return False

    async def _obtain_tls(self) -> None:
        if self.tls.trust() is None:
            try:
                token = jointoken.parse(self.credential.join_token) if self.credential.join_token else None
            except OrcaError:
                token = None
            if token is None or token.ca_fingerprint is None:
                self._error("tls: the masters are https:// but this node trusts no CA: set agent.ca_file, or use "
                            "a version-2 join token (orca cluster join-token worker)")
                return
            for base in self._targets():
                doc = await self._get(base, "/api/v1/cluster/ca", verify=False)
                problem = self.tls.pin(doc.get("bundle") if isinstance(doc, dict) else None, token.ca_fingerprint)
                if problem is None:
                    log.info("pinned the cluster CA %s (from the join token) at %s", token.ca_fingerprint, base)
                    break
                self._error(f"tls: {base}: {problem}")
            else:
                return
        if self.credential.token is None:
            await self.join()
        elif self.tls.cert() is None:
            await self.renew_certificate()

    async def renew_certificate(self) -> bool:
        """Ask for a (new) node certificate for this node's key; True once stored."""
        body = {"csr": self.tls.csr(), "names": self.tls.names}
        for base in self._targets():
            try:
                status, reply, final = await self._post(base, "/api/v1/agent/certificate", body)
            except _LinkError as exc:
                self._error(f"certificate: {exc}")
                continue
            if 200 <= status < 300:
                problem = self.tls.accept(reply)
                if problem is None:
                    return True
                self._error(f"certificate: {final}: {problem}")
                return False
            self._error(f"certificate: {final} answered {status}: {_describe(reply)}")
            if status in (401, 403):
                return False
        return False

    async def _follow_ca(self, reply: dict[str, Any]) -> None:
        """After a heartbeat: fetch CAs this node does not trust yet, renew a certificate the signing
        CA did not issue or that is two thirds through its life."""
        trusted = reply.get("ca_trusted")
        if isinstance(trusted, list) and not set(map(str, trusted)) <= self.tls.trusted_fingerprints():
            doc = await self._get(self.leader or self.masters[0], "/api/v1/cluster/ca")
            if isinstance(doc, dict):
                self.tls.add_trust(doc.get("bundle"))
                log.info("trusting the cluster CAs %s", ", ".join(fp[:16] for fp in sorted(map(str, trusted))))
        if self.tls.wants_renewal(reply.get("ca_fingerprint"), time.time()):
            await self.renew_certificate()

    async def register(self) -> None:
        """Register with the first master that answers (any master: followers redirect), retrying
        with a jittered backoff from 0.2 s to 2 s until one accepts. Without a credential yet, the
        configured join token is exchanged for one first."""
        delay, cap = REGISTER_BACKOFF_S
        while True:
            if self.credential.token is None and not await self.join():
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, cap)
                continue
            try:
                proxy = self.config.proxy
                body = {"node_id": self.agent.node_id, "address": self.address,
                        "labels": dict(self.config.labels), "capacity": await self._capacity(),
                        "push_token": self.agent.store.push_token, "agent_version": __version__,
                        "publish_address": self.config.publish_address,
                        "proxy": proxy.listen if proxy is not None else None}
            except RuntimeFailure as exc:
                self._error(f"cannot read the engine's capacity: {exc.reason}")
            else:
                for base in self._targets():
                    try:
                        status, reply, final = await self._post(base, "/api/v1/agent/register", body)
                    except _LinkError as exc:
                        self._error(f"register: {exc}")
                        continue
                    if 200 <= status < 300 and isinstance(reply, dict):
                        if not self._adopt_cluster(reply.get("cluster_id"), final):
                            break
                        self.leader = reply.get("leader") or final
                        self.master_list.learn(reply.get("masters"))
                        hb = reply.get("heartbeat_s")
                        if isinstance(hb, int | float) and not isinstance(hb, bool) and hb > 0:
                            self.heartbeat_s = float(hb)
                        self.sync_error = None
                        self._last_logged = None
                        log.info("registered as %s with %s (leader %s)", self.agent.node_id, final, self.leader)
                        return
                    self._error(f"register: {final} answered {status}: {_describe(reply)}")
                    if status in (401, 403):
                        break  # every master checks the same token: asking the others is pointless
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, cap)

    def _adopt_cluster(self, cluster_id: Any, master: str) -> bool:
        """Learn the cluster id at the first registration; refuse masters of another cluster after that
        (a data dir, and the containers it describes, belong to one cluster for good)."""
        if not isinstance(cluster_id, str) or not CLUSTER_ID_RE.fullmatch(cluster_id):
            self._error(f"register: {master} sent no valid cluster id (a master older than this agent?)")
            return False
        store = self.agent.store
        if store.cluster_id is None:
            store.set_cluster_id(cluster_id)
            log.info("this node belongs to cluster %s", cluster_id)
        elif store.cluster_id != cluster_id:
            self._error(f"register: {master} is cluster {cluster_id}, but this agent's data dir belongs to "
                        f"cluster {store.cluster_id}; use another data_dir to join another cluster")
            return False
        self.agent.runtime.cluster_id = cluster_id
        return True

    # -- heartbeats --------------------------------------------------------------------------------

    def _heartbeat_body(self) -> dict[str, Any]:
        self._seq += 1
        reports = self.agent.reconciler.reports()
        body: dict[str, Any] = {"node_id": self.agent.node_id, "seq": self._seq, "allocations": reports,
                                "applied": {"term": self.agent.store.term, "version": self.agent.store.version},
                                "stats": self.agent.stats.latest()}
        proxy = self.agent.proxy
        if proxy is not None:
            body["proxy"] = proxy.stats(max_replicas=MAX_REPLICAS_REPORTED)

        def size() -> int:
            return len(json.dumps(body, separators=(",", ":")))

        # Over 64 KiB the leader refuses the heartbeat (413). Shed what matters least first; the
        # allocations themselves always go, the master must see every replica.
        if size() > HEARTBEAT_MAX_BYTES:
            for r in reports:
                r["reason"] = None
        if proxy is not None and size() > HEARTBEAT_MAX_BYTES:
            body["proxy"] = proxy.stats(max_replicas=0)
        if size() > HEARTBEAT_MAX_BYTES:
            body["stats"] = {}
        if size() > HEARTBEAT_MAX_BYTES:
            body.pop("proxy", None)
        return body

    async def heartbeat_once(self) -> str | None:
        """One heartbeat to the leader, else to each master in turn. Returns the directive, or None
        when no master answered usefully."""
        body = self._heartbeat_body()
        for base in self._targets():
            try:
                status, reply, final = await self._post(base, "/api/v1/agent/heartbeat", body)
            except _LinkError as exc:
                self._error(f"heartbeat: {exc}")
                if base == self.leader:
                    self.leader = None
                self._cursor = (self._cursor + 1) % max(1, len(self.masters))
                continue
            if 200 <= status < 300 and isinstance(reply, dict):
                trace.mark("hb_sent", node=self.agent.node_id, seq=body["seq"])
                self.leader = reply.get("leader") or final
                self.master_list.learn(reply.get("masters"))
                self.last_sync = time.time()
                if self.tls.enabled and "ca_fingerprint" in reply:
                    try:
                        await self._follow_ca(reply)
                    except _LinkError as exc:
                        self._error(f"tls: {exc}")
                if self.sync_error:
                    log.info("heartbeats reach the leader %s again", self.leader)
                self.sync_error = None
                self._last_logged = None
                return str(reply.get("directive") or "continue")
            code = reply.get("code") if isinstance(reply, dict) else None
            self._error(f"heartbeat: {final} answered {status}: {_describe(reply)}")
            if status == 404 and code == "NODE_NOT_FOUND":
                return "register"
            if status in (401, 403):
                return None
            # 503 (no leader yet) or anything else: another master may know better.
        return None

    async def run(self) -> str:
        await self.register()
        failures = 0
        changed = self.agent.reconciler.changed
        while True:
            started = asyncio.get_running_loop().time()
            # Cleared before the body is built: a change from here on is either in this heartbeat or
            # wakes the next one early (clearing after the send lost changes made during it, and the
            # leader then heard "running" a whole heartbeat period late).
            changed.clear()
            directive = await self.heartbeat_once()
            outcome = "ok" if directive is not None else "failed"
            self.heartbeats[outcome] = self.heartbeats.get(outcome, 0) + 1
            if directive == "shutdown":
                return "shutdown"
            if directive == "register":
                await self.register()
                continue
            if directive is None:
                failures += 1
                # Bounded backoff while no master answers: never a hot loop, never silent for long.
                pause = min(self.heartbeat_s * 2 ** min(failures - 1, 4), max(self.heartbeat_s, 5.0))
                pause *= random.uniform(0.8, 1.0)
            else:
                failures = 0
                pause = self.heartbeat_s - (asyncio.get_running_loop().time() - started)
            if failures:
                await asyncio.sleep(max(pause, 0.05))
                continue
            # The next heartbeat is due after `pause`, or sooner when a replica changed (at most ~20/s).
            await asyncio.sleep(EARLY_HEARTBEAT_MIN_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(pause - EARLY_HEARTBEAT_MIN_S, 0.0))


def _describe(reply: Any) -> str:
    if isinstance(reply, dict) and reply.get("error"):
        return f"{reply.get('code', '')} {reply['error']}".strip()[:200]
    return "unexpected reply"
