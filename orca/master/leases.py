"""Node leases: heartbeats gathered in the leader's memory, committed as one batched entry per interval.

A heartbeat does not become a Raft entry of its own (a thousand nodes at 1 Hz would be a thousand
commits a second). The leader keeps the latest report of each node (`HeartbeatBook`) and the
`LeaseMonitor` commits, once per `heartbeat_s`, a single `node_reports` entry with every node heard from
since the last one; a node's allocation list is included only when it differs from what the state holds.
Expiry is a leader decision committed as `node_status: down`, and a new leader grants every node one
full TTL of grace first: it has not been listening to heartbeats until now.

A node silent for `suspect_s` (one and a half heartbeat intervals by default) is probed: the leader asks its agent's
`/v1/health` directly. A refused or reset connection, or another node answering at its address, is proof
that the agent is gone (its process died, its host rebooted): the node is marked down at once instead of
at the TTL, which is what brings node loss to replicas-running-elsewhere under 4 s. An answer from the
node is proof of life and renews the lease like a heartbeat (the agent runs; its heartbeats are late, not
lost). A probe that times out proves nothing (a slow link looks the same as a dead host): the TTL decides.
Since only the probe's answer can mark a node down early, probing soon costs a request to a live but
late agent, never a false verdict; and the monitor wakes at the moment a node's silence reaches
`suspect_s` (or the TTL), not on its next periodic pass.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgpack

from orca import trace
from orca.errors import NotReady, OrcaError
from orca.master.loops import LeaderLoop
from orca.master.packed_reports import PackedReports, unpacked
from orca.master.tls_manager import peer_ssl
from orca.raft import RaftNode
from orca.state.machine import OBSERVED_FIELDS
from orca.state.ops_nodes import report_problem

__all__ = ["HeartbeatBook", "LeaseMonitor", "ProbeResult", "http_prober", "probe_agent"]

ProbeResult = str  # "alive" | "gone" | "unknown"
# Silence (in heartbeat intervals) after which the leader probes a node. A live agent's heartbeats come a
# period apart, so 1.5 leaves half a period of slack for a busy loop before the (harmless) probe.
SUSPECT_HEARTBEATS = 1.5
Prober = Callable[[str, str, float], Awaitable[ProbeResult]]  # (node id, agent address, timeout)


class HeartbeatBook:
    """Latest heartbeat per node, in the leader's memory. Written by the heartbeat handler.

    A node's reports are kept packed (orca.master.packed_reports: ~1 KB instead of ~30 KB of dicts per
    node of 30 replicas); a list that cannot be packed (not plain JSON data) is kept as it is.
    """

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}        # node -> monotonic time of its last heartbeat
        self.received_at: dict[str, float] = {}      # node -> wall time (committed as renewed_at)
        self.reports: dict[str, PackedReports | list[dict[str, Any]]] = {}
        self.dirty: set[str] = set()
        self.changed = False  # a report differs from the previous one: the lease monitor commits at once
        self.on_change: Callable[[], None] | None = None  # called on the loop when a report changed

    def record(self, heartbeat: dict[str, Any]) -> None:
        """`heartbeat["allocations"]`: the validated reports, a list or already packed."""
        node = heartbeat["node_id"]
        self.last_seen[node] = time.monotonic()
        self.received_at[node] = time.time()
        new = heartbeat["allocations"]
        if not isinstance(new, PackedReports):
            new = PackedReports.pack(new) or new
        changed = self.reports.get(node) != new
        if changed or node not in self.reports:
            # An equal report keeps the stored one: the lease monitor knows it by identity as one it
            # already compared with the state (LeaseMonitor._agreed).
            self.reports[node] = new
        self.dirty.add(node)
        self.changed |= changed
        if changed and trace.enabled():
            trace.mark("hb_changed", node=node, allocs={r["alloc"]: [r.get("status"), r.get("health")]
                                                        for r in unpacked(new)})
        if changed and self.on_change is not None:
            self.on_change()  # a replica changed state: commit soon, not at the next lease tick

    def renew(self, node_id: str) -> None:
        """Alive, with no allocation report (Dory's edge heartbeat): the lease renews and is committed with
        the next batch; the node's last full report, if any, stays as it was."""
        self.last_seen[node_id] = time.monotonic()
        self.received_at[node_id] = time.time()
        self.dirty.add(node_id)

    def touch(self, node_id: str) -> None:
        """Alive, but no report (registration): only the lease clock moves."""
        self.last_seen[node_id] = time.monotonic()

    def clear(self) -> None:
        self.last_seen.clear()
        self.received_at.clear()
        self.reports.clear()
        self.dirty.clear()
        self.changed = False


def allocs_changed(state: dict[str, Any], node_id: str, reports: list[dict[str, Any]],
                   node_allocs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The node's allocation map for the entry, or None when the state already says the same."""
    by_alloc = {r["alloc"]: {k: r.get(k) for k in OBSERVED_FIELDS} for r in reports}
    changed = False
    mine = {}
    if node_allocs is None:
        node_allocs = [a for a in state["allocations"].values() if a["node"] == node_id]
    for alloc in node_allocs:
        alloc_id = alloc["id"]
        new = by_alloc.get(alloc_id)
        if new is None:
            changed |= alloc["desired"] == "stop"  # it is gone from the node: forget it
            continue
        mine[alloc_id] = new
        old = alloc.get("observed") or {}
        if any(old.get(k) != new.get(k) for k in OBSERVED_FIELDS):
            changed = True
    return mine if changed else None


_REFUSED = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}

# Allocation reports in one `node_reports` entry (nodes whose report changed past it wait for the next
# entry, a cycle later). Every master applies the entry in its Raft thread, which sends nothing meanwhile:
# 1,000 nodes of 30 changed replicas made a 4 MB entry that took ~0.5 s to decode and apply on a loaded
# box, on the leader and both followers at once, and the followers called elections.
MAX_REPORTED_ALLOCS = 3000


async def probe_agent(session: aiohttp.ClientSession, address: str, node_id: str, timeout_s: float,
                      ssl: Any = True) -> ProbeResult:
    """Ask the agent at `address` whether it is `node_id`: "alive", "gone" (refused, reset, unreachable, or
    another node answers there) or "unknown" (a timeout or anything else that proves nothing)."""
    try:
        async with session.get(address.rstrip("/") + "/v1/health", ssl=ssl,
                               timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)) as resp:
            if resp.status != 200:
                return "unknown"
            body = await resp.json(content_type=None)
            return "alive" if isinstance(body, dict) and body.get("node_id") == node_id else "gone"
    except aiohttp.ClientConnectorError as exc:
        return "gone" if exc.os_error is not None and exc.os_error.errno in _REFUSED else "unknown"
    except (ConnectionResetError, aiohttp.ServerDisconnectedError):
        return "gone"
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError):
        return "unknown"


class LeaseMonitor(LeaderLoop):
    name = "leases"

    def __init__(self, raft: RaftNode, book: HeartbeatBook, heartbeat_s: float, ttl_s: float,
                 suspect_s: float | None = None, prober: Prober | None = None) -> None:
        super().__init__(raft)
        self.book = book
        self.commit_period_s = heartbeat_s
        # Expiry is checked at least four times per heartbeat interval, and at the moment a node's silence
        # reaches suspect_s or the TTL (`_expire` sets the timer): a verdict must not wait for a tick.
        self.idle_period_s = self.period_s = min(heartbeat_s, 0.25)
        self.ttl_s = ttl_s
        self.suspect_s = min(suspect_s if suspect_s is not None else SUSPECT_HEARTBEATS * heartbeat_s, ttl_s)
        self.prober = prober
        self.grace_until = 0.0
        self.enabled_at = 0.0
        self.last_commit = 0.0
        self.quarantined: dict[str, str] = {}  # node -> why its last report was left out (for operators)
        self.probes: dict[str, asyncio.Task[ProbeResult]] = {}
        self.gone: dict[str, float] = {}  # node -> silence when its probe came back "gone"
        # Allocations per node, made once per layout generation (ReplicatedState.layout_generation: the
        # lease renewals committed every second leave it), and per node the report (by identity) that
        # the state agreed with at a layout generation: an unchanged report against an unchanged layout
        # needs no comparison. At 30,000 allocations both were redone every second.
        self._by_node: tuple[int, dict[str, list[dict[str, Any]]]] | None = None
        self._agreed: dict[str, tuple[int, PackedReports | list[dict[str, Any]]]] = {}

    def on_enable(self) -> None:
        self.book.clear()
        self._by_node = None
        self._agreed.clear()
        self.enabled_at = time.monotonic()
        self.grace_until = self.enabled_at + self.ttl_s
        self.last_commit = 0.0
        self.gone.clear()

    def on_disable(self) -> None:
        for task in self.probes.values():
            task.cancel()
        self.probes.clear()
        # A deposed leader hears no heartbeats: nothing it kept would be used again (on_enable starts over).
        self.book.clear()
        self._by_node = None
        self._agreed.clear()

    async def cycle(self) -> None:
        now = time.monotonic()
        if self.book.dirty and (self._report_changed() or now - self.last_commit >= self.commit_period_s):
            self.last_commit = now
            await self._commit_renewals()
        await self._expire()

    def _report_changed(self) -> bool:
        """A report changed (the heartbeat book woke us): commit now, not at the next interval."""
        changed, self.book.changed = self.book.changed, False
        return changed

    async def _commit_renewals(self) -> None:
        if not self.book.dirty:
            return
        dirty, self.book.dirty = self.book.dirty, set()

        deferred: set[str] = set()

        def build(state: dict[str, Any]) -> dict[str, Any]:
            out = {}
            generation = self.raft.store.layout_generation
            by_node = self._allocs_by_node(state, generation)
            budget = MAX_REPORTED_ALLOCS
            for node_id in sorted(dirty):
                if node_id not in state["nodes"]:
                    continue
                report = self.book.reports.get(node_id)
                agreed = self._agreed.get(node_id)
                if report is not None and agreed is not None and agreed[0] == generation and agreed[1] is report:
                    allocs = None  # the same report against the same allocations: still nothing new
                else:
                    try:
                        allocs = allocs_changed(state, node_id, unpacked(report), by_node.get(node_id, []))
                    except Exception as exc:  # noqa: BLE001 - a malformed report: renew the lease, drop the report
                        self._forget_report(node_id, f"unreadable report: {type(exc).__name__}")
                        allocs = None
                    if allocs is None and report is not None and node_id in self.book.reports:
                        self._agreed[node_id] = (generation, report)
                    else:
                        self._agreed.pop(node_id, None)
                if allocs is not None:
                    if len(allocs) > budget and budget < MAX_REPORTED_ALLOCS:  # the first always goes in
                        deferred.add(node_id)  # its lease renews now, its report goes in the next entry
                        allocs = None
                    else:
                        budget -= len(allocs)
                out[node_id] = {"renewed_at": self.book.received_at.get(node_id, 0.0), "allocs": allocs}
            return out
        nodes = self._isolate(self.raft.read(build))
        if deferred:
            self.book.dirty |= deferred
            self.book.changed = True  # the next cycle commits them at once, not at the next interval
        if not nodes:
            return
        try:
            await self.propose("node_reports", {"nodes": nodes})
            if trace.enabled():
                trace.mark("reports_committed", nodes=sorted(n for n, e in nodes.items() if e["allocs"] is not None))
        except OrcaError as err:
            if isinstance(err, NotReady) or err.code == "STALE_LEADER":
                self.book.dirty |= dirty  # not committed: send them again next interval
                raise
            self.log.warning("batched renewal of %d nodes refused (%s); committing them one by one",
                             len(nodes), err.code)
            await self._commit_one_by_one(nodes)
        except Exception as err:  # noqa: BLE001 - whatever one node's report did, the others still renew
            self.log.warning("batched renewal of %d nodes failed (%s); committing them one by one",
                             len(nodes), type(err).__name__)
            await self._commit_one_by_one(nodes)

    def _allocs_by_node(self, state: dict[str, Any], generation: int) -> dict[str, list[dict[str, Any]]]:
        """Every allocation grouped by node, at this layout generation (under the state lock)."""
        if self._by_node is None or self._by_node[0] != generation:
            by_node: dict[str, list[dict[str, Any]]] = {}
            for alloc in state["allocations"].values():
                by_node.setdefault(alloc["node"], []).append(alloc)
            self._by_node = (generation, by_node)
            self._agreed = {n: a for n, a in self._agreed.items() if a[0] == generation}
        return self._by_node[1]

    def _isolate(self, nodes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Drop (and forget) every node whose entry could not be committed: malformed, or not encodable.

        The heartbeat handler validates reports (orca.protocol), so this only triggers if something got
        past it; one node's garbage must never make the batch, and with it every other lease, fail.
        """
        out = {}
        for node_id, entry in nodes.items():
            problem = report_problem(entry)
            if problem is None:
                try:
                    msgpack.packb(entry, use_bin_type=True)
                except (TypeError, ValueError, OverflowError) as exc:
                    problem = f"not encodable: {type(exc).__name__}"
            if problem is None:
                out[node_id] = entry
                continue
            self._forget_report(node_id, problem)
            if report_problem({**entry, "allocs": None}) is None:
                out[node_id] = {**entry, "allocs": None}  # the node is alive: its lease still renews
        return out

    def _forget_report(self, node_id: str, problem: str) -> None:
        self.book.reports.pop(node_id, None)  # the next heartbeat starts clean
        self._agreed.pop(node_id, None)
        if self.quarantined.get(node_id) != problem:  # once per problem, not once a second
            self.log.warning("ignoring the report of node %s: %s", node_id, problem)
        self.quarantined[node_id] = problem

    async def _commit_one_by_one(self, nodes: dict[str, dict[str, Any]]) -> None:
        for node_id, entry in sorted(nodes.items()):
            try:
                await self.propose("node_reports", {"nodes": {node_id: entry}})
            except OrcaError as err:
                if isinstance(err, NotReady) or err.code == "STALE_LEADER":
                    self.book.dirty |= set(nodes)
                    raise
                self._forget_report(node_id, f"renewal refused: {err.code}")
            except Exception as err:  # noqa: BLE001 - isolate the node whose entry fails
                self._forget_report(node_id, f"renewal failed: {type(err).__name__}")

    async def _expire(self) -> None:
        now = time.monotonic()
        if now < self.grace_until:
            self.period_s = min(self.idle_period_s, self.grace_until - now + 0.005)
            return
        candidates = self.raft.read(lambda s: [(n["id"], n.get("address")) for n in s["nodes"].values()
                                               if n["status"] != "down"])
        soonest = now + self.idle_period_s
        for node_id, address in candidates:
            seen = self.book.last_seen.get(node_id, self.enabled_at)
            silent = now - seen
            # The next moment this node's silence crosses a threshold: the loop's timer goes off then.
            for threshold in (self.suspect_s, self.ttl_s):
                if silent < threshold:
                    soonest = min(soonest, seen + threshold)
                    break
            gone_at = self.gone.pop(node_id, None)
            if silent > self.ttl_s:
                await self.propose("node_status", {"node_id": node_id, "status": "down",
                                                   "reason": f"no heartbeat for {silent:.1f} s"})
                trace.mark("node_down", node=node_id, silent=round(silent, 3), by="ttl")
            elif gone_at is not None and silent >= gone_at:  # still silent since the probe said gone
                await self.propose("node_status", {"node_id": node_id, "status": "down",
                                                   "reason": f"no heartbeat for {silent:.1f} s and its agent "
                                                             f"refuses connections"})
                trace.mark("node_down", node=node_id, silent=round(silent, 3), by="probe")
            elif silent >= self.suspect_s and address and self.prober is not None and node_id not in self.probes:
                self._start_probe(node_id, address, silent)
        # + 5 ms: wake just after the moment, not just before it; at most idle_period_s from now.
        self.period_s = max(0.0, soonest - time.monotonic() + 0.005)

    def _start_probe(self, node_id: str, address: str, silent: float) -> None:
        """Probe in the background: one slow node never holds up the others' verdicts."""
        assert self.prober is not None
        timeout = max(0.5, self.ttl_s - silent)  # an answer after the TTL is too late to matter
        trace.mark("probe_start", node=node_id, silent=round(silent, 3))
        task = asyncio.get_running_loop().create_task(self.prober(node_id, address, timeout),
                                                      name=f"orca-probe-{node_id}")
        self.probes[node_id] = task

        def done(t: asyncio.Task[ProbeResult]) -> None:
            if self.probes.get(node_id) is t:
                del self.probes[node_id]
            if t.cancelled() or t.exception() is not None:
                return
            result = t.result()
            trace.mark("probe_done", node=node_id, result=result)
            if result == "alive":
                self.book.touch(node_id)
            elif result == "gone":
                self.gone[node_id] = silent
                self.wake()
        task.add_done_callback(done)

    def silent_for(self, node_id: str) -> float | None:
        seen = self.book.last_seen.get(node_id)
        return None if seen is None else time.monotonic() - seen


async def http_prober(node_id: str, address: str, timeout_s: float) -> ProbeResult:
    """The production prober: over the same TLS context as the dispatcher's pushes (the agent's
    certificate must name the node; with mutual TLS the agent sees a master of its cluster)."""
    async with aiohttp.ClientSession() as session:
        return await probe_agent(session, address, node_id, timeout_s, ssl=peer_ssl())
