"""Node leases: heartbeats gathered in the leader's memory, committed as one batched entry per interval.

A heartbeat does not become a Raft entry of its own (a thousand nodes at 1 Hz would be a thousand
commits a second). The leader keeps the latest report of each node (`HeartbeatBook`) and the
`LeaseMonitor` commits, once per `heartbeat_s`, a single `node_reports` entry with every node heard from
since the last one; a node's allocation list is included only when it differs from what the state holds.
Expiry is a leader decision committed as `node_status: down`, and a new leader grants every node one
full TTL of grace first: it has not been listening to heartbeats until now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack

from orca.errors import NotReady, OrcaError
from orca.master.loops import LeaderLoop
from orca.raft import RaftNode
from orca.state.machine import OBSERVED_FIELDS
from orca.state.ops_nodes import report_problem

__all__ = ["HeartbeatBook", "LeaseMonitor"]


class HeartbeatBook:
    """Latest heartbeat per node, in the leader's memory. Written by the heartbeat handler."""

    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}        # node -> monotonic time of its last heartbeat
        self.received_at: dict[str, float] = {}      # node -> wall time (committed as renewed_at)
        self.reports: dict[str, list[dict[str, Any]]] = {}
        self.dirty: set[str] = set()
        self.on_change: Callable[[], None] | None = None  # called on the loop when a report changed

    def record(self, heartbeat: dict[str, Any]) -> None:
        node = heartbeat["node_id"]
        self.last_seen[node] = time.monotonic()
        self.received_at[node] = time.time()
        changed = self.reports.get(node) != heartbeat["allocations"]
        self.reports[node] = heartbeat["allocations"]
        self.dirty.add(node)
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


class LeaseMonitor(LeaderLoop):
    name = "leases"

    def __init__(self, raft: RaftNode, book: HeartbeatBook, heartbeat_s: float, ttl_s: float) -> None:
        super().__init__(raft)
        self.book = book
        self.period_s = heartbeat_s
        self.ttl_s = ttl_s
        self.grace_until = 0.0
        self.enabled_at = 0.0
        self.quarantined: dict[str, str] = {}  # node -> why its last report was left out (for operators)

    def on_enable(self) -> None:
        self.book.clear()
        self.enabled_at = time.monotonic()
        self.grace_until = self.enabled_at + self.ttl_s

    async def cycle(self) -> None:
        await self._commit_renewals()
        await self._expire()

    async def _commit_renewals(self) -> None:
        if not self.book.dirty:
            return
        dirty, self.book.dirty = self.book.dirty, set()

        def build(state: dict[str, Any]) -> dict[str, Any]:
            out = {}
            by_node: dict[str, list[dict[str, Any]]] = {n: [] for n in dirty}
            for alloc in state["allocations"].values():
                mine = by_node.get(alloc["node"])
                if mine is not None:
                    mine.append(alloc)
            for node_id in sorted(dirty):
                if node_id not in state["nodes"]:
                    continue
                try:
                    allocs = allocs_changed(state, node_id, self.book.reports.get(node_id, []), by_node[node_id])
                except Exception as exc:  # noqa: BLE001 - a malformed report: renew the lease, drop the report
                    self._forget_report(node_id, f"unreadable report: {type(exc).__name__}")
                    allocs = None
                out[node_id] = {"renewed_at": self.book.received_at.get(node_id, 0.0), "allocs": allocs}
            return out
        nodes = self._isolate(self.raft.read(build))
        if not nodes:
            return
        try:
            await self.propose("node_reports", {"nodes": nodes})
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
            return
        candidates = self.raft.read(lambda s: [n["id"] for n in s["nodes"].values() if n["status"] != "down"])
        for node_id in candidates:
            seen = self.book.last_seen.get(node_id, self.enabled_at)
            silent = now - seen
            if silent > self.ttl_s:
                await self.propose("node_status", {"node_id": node_id, "status": "down",
                                                   "reason": f"no heartbeat for {silent:.1f} s"})

    def silent_for(self, node_id: str) -> float | None:
        seen = self.book.last_seen.get(node_id)
        return None if seen is None else time.monotonic() - seen
