"""The dispatcher: pushes each node's full desired allocation set to its agent (level-triggered).

- One push in flight per node; a push carries the leader's term (agents refuse lower terms with 409
  STALE_LEADER, so a deposed leader can never drive containers) and a version (the applied index it was
  built from; an agent ignores older versions within a term).
- A node is pushed when its desired set differs from the last one it acknowledged, and every
  `resync_s` anyway (an agent restarted from scratch, or a container removed by hand, converges).
- Failures back off (0.2 s doubling to 5 s). A node whose pushes keep failing for a lease TTL while its
  heartbeats still arrive is committed `unreachable`: liveness follows the channel that carries work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from orca import spec as specs
from orca import trace
from orca.errors import OrcaError
from orca.master.http import dumps
from orca.master.loops import LeaderLoop
from orca.master.mesh_table import mesh_table
from orca.master.secrets import SecretBox
from orca.master.tls_manager import peer_ssl
from orca.master.traffic import route_table
from orca.mesh import DEFAULT_VIP_RANGE
from orca.raft import RaftNode

__all__ = ["Dispatcher", "desired_sets"]


def desired_sets(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """node id -> {"address", "push_token", "status", "allocations": [AllocSpec...]} from the applied state."""
    out: dict[str, dict[str, Any]] = {}
    for node in state["nodes"].values():
        out[node["id"]] = {"address": node["address"], "push_token": node["push_token"],
                           "status": node["status"], "allocations": []}
    specs: dict[tuple[str, Any], Any] = {}  # (service, version) -> spec: the history is searched once per pair
    for alloc in sorted(state["allocations"].values(), key=lambda a: a["id"]):
        target = out.get(alloc["node"])
        svc = state["services"].get(alloc["service"])
        if target is None or svc is None or alloc["desired"] not in ("run", "migrate"):
            continue
        key = (alloc["service"], alloc["version"])
        spec = specs.get(key)
        if spec is None:
            spec = specs[key] = next((h["spec"] for h in svc["history"] if h["version"] == alloc["version"]),
                                     svc["spec"])
        item = {"id": alloc["id"], "service": alloc["service"], "version": alloc["version"],
                "index": alloc.get("index", 0), "spec": spec}
        binding = (svc.get("volumes") or {}).get(str(item["index"]))
        if binding is not None and binding["node"] == alloc["node"]:
            item["volume_gen"] = binding["gen"]  # which generation of the slot's volumes to mount (orca.volumes)
        target["allocations"].append(item)
    for node_id, purges in (state.get("volume_purges") or {}).items():
        if node_id in out:
            out[node_id]["purge_volumes"] = list(purges)
    return out


@dataclass(frozen=True)
class _Desired:
    generation: int                      # ReplicatedState.layout_generation they were made at
    sets: dict[str, dict[str, Any]]      # desired_sets(), each with its "routes"
    digests: dict[str, str]              # node id -> digest of its set and the routes


@dataclass
class NodeLink:
    acked_digest: str | None = None
    acked_at: float = 0.0
    failures: int = 0
    failing_since: float | None = None
    next_try: float = 0.0
    in_flight_since: float | None = None
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Dispatcher(LeaderLoop):
    name = "dispatcher"
    period_s = 0.5

    def __init__(self, raft: RaftNode, secrets: SecretBox, ttl_s: float, resync_s: float = 5.0,
                 heartbeat_age: Any = None, mesh_vip_range: str = DEFAULT_VIP_RANGE) -> None:
        super().__init__(raft)
        self.mesh_vip_range = mesh_vip_range
        self.secrets = secrets
        self.ttl_s = ttl_s
        self.resync_s = resync_s
        self.links: dict[str, NodeLink] = {}
        self.heartbeat_age = heartbeat_age or (lambda node_id: None)
        self.session: aiohttp.ClientSession | None = None
        self.pushes_total = 0
        self.push_failures_total = 0
        self._cached: _Desired | None = None

    def on_enable(self) -> None:
        self.links = {}
        self._cached = None

    def on_disable(self) -> None:
        for link in self.links.values():
            if link.task is not None:
                link.task.cancel()
        self.links = {}
        self._cached = None  # the desired sets of a term that is over (~6 MB at 30,000 allocations)
        if self.session is not None:
            session, self.session = self.session, None
            asyncio.get_running_loop().create_task(session.close())

    def in_flight(self) -> tuple[int, float]:
        now = time.monotonic()
        ages = [now - link.in_flight_since for link in self.links.values() if link.in_flight_since is not None]
        return len(ages), max(ages, default=0.0)

    def _desired(self) -> _Desired:
        """The desired sets, routes and digests, made once per layout generation.

        The dispatcher cycles on every applied entry and every finished push: at 1,000 nodes that is
        several times a second (the lease renewals, the resyncs), and each pass sorted and scanned every
        allocation. A lease renewal changes nothing the sets are made of (ReplicatedState.layout_generation).
        """
        if self._cached is not None and self._cached.generation == self.raft.store.layout_generation:
            return self._cached
        # Without the state lock when no entry applies meanwhile (RaftNode.read_unlocked): at 30,000
        # allocations this read must not hold the Raft thread's apply.
        generation, (sets, routes, mesh) = self.raft.read_unlocked(
            lambda s: (desired_sets(s), route_table(s), mesh_table(s, self.mesh_vip_range)))
        routes_digest = hashlib.sha256(json.dumps([routes, mesh], sort_keys=True).encode()).hexdigest()
        digests = {}
        for node_id, target in sets.items():
            # Allocation ids are never reused, so (id, version, index) identifies the desired set; a full
            # JSON dump of every node's set on every cycle cost 0.3 s at 10,000 allocations.
            body = target["allocations"]
            digests[node_id] = hashlib.sha256(repr(([(a["id"], a["version"], a["index"], a.get("volume_gen"))
                                                     for a in body], len(target.get("purge_volumes") or ()))
                                                   ).encode()).hexdigest() + routes_digest
            target["routes"] = routes
            target["mesh"] = mesh
        self._cached = _Desired(generation, sets, digests)
        return self._cached

    async def cycle(self) -> None:
        desired = self._desired()
        sets = desired.sets
        version = self.raft.applied_index
        now = time.monotonic()
        for node_id, target in sets.items():
            if target["status"] == "down":
                continue
            link = self.links.setdefault(node_id, NodeLink())
            body = target["allocations"]
            digest = desired.digests[node_id]
            due = link.acked_digest != digest or now - link.acked_at > self.resync_s
            if not due or (link.task is not None and not link.task.done()) or now < link.next_try:
                continue
            link.task = asyncio.get_running_loop().create_task(
                self._push(node_id, target, body, digest, version))
        for node_id in set(self.links) - set(sets):
            link = self.links.pop(node_id)
            if link.task is not None:
                link.task.cancel()

    def _secrets_for(self, allocations: list[dict[str, Any]]) -> dict[str, str]:
        wanted: set[str] = set()
        for alloc in allocations:
            wanted |= specs.secret_refs(alloc["spec"])
        return self.secrets.reveal(self.raft, wanted) if wanted else {}

    async def _push(self, node_id: str, target: dict[str, Any], allocations: list[dict[str, Any]], digest: str,
                    version: int) -> None:
        link = self.links[node_id]
        term = self.term
        if term is None:
            return
        link.in_flight_since = time.monotonic()
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5, sock_connect=1))
        # After a restore the terms restart low; `fence_base` keeps what agents see above the lost cluster's.
        base, lineage = self.raft.read(lambda st: (int(st.get("fence_base") or 0), st.get("lineage")))
        term += base
        payload = {"term": term, "version": version, "allocations": allocations, "lineage": lineage,
                   "secrets": self._secrets_for(allocations), "routes": target.get("routes") or {},
                   "mesh": target.get("mesh") or {}, "purge_volumes": target.get("purge_volumes") or []}
        self.pushes_total += 1
        trace.mark("push_sent", node=node_id, version=version, allocs=len(allocations))
        try:
            # orjson when installed (orca.master.http.dumps): the resyncs push every node's whole set every
            # resync_s, and the standard encoder was a tenth of the leader's samples at 30,000 allocations.
            async with self.session.put(target["address"] + "/v1/allocations", data=dumps(payload),
                                        headers={"Authorization": f"Bearer {target['push_token']}",
                                                 "Content-Type": "application/json"},
                                        ssl=peer_ssl()) as resp:
                if resp.status == 409:
                    self.log.warning("node %s refused term %s as stale: a newer leader exists", node_id, term)
                    raise RuntimeError("stale leader")
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            link.acked_digest, link.acked_at = digest, time.monotonic()
            trace.mark("push_acked", node=node_id, version=version)
            link.failures, link.failing_since, link.last_error = 0, None, None
            if target["status"] == "unreachable":
                await self._set_status(node_id, "ready", "dispatches succeed again")
        except (aiohttp.ClientError, TimeoutError, RuntimeError, OSError) as err:
            self.push_failures_total += 1
            link.failures += 1
            link.last_error = str(err) or type(err).__name__
            now = time.monotonic()
            link.failing_since = link.failing_since or now
            link.next_try = now + min(5.0, 0.2 * 2 ** (link.failures - 1))
            heard = self.heartbeat_age(node_id)
            if (target["status"] == "ready" and now - link.failing_since > self.ttl_s and heard is not None
                    and heard < self.ttl_s):
                await self._set_status(node_id, "unreachable", f"dispatches fail: {link.last_error}")
        finally:
            link.in_flight_since = None
            self.wake()

    async def _set_status(self, node_id: str, status: str, reason: str) -> None:
        try:
            await self.propose("node_status", {"node_id": node_id, "status": status, "reason": reason})
        except OrcaError as err:
            self.log.info("could not mark %s %s: %s", node_id, status, err)
