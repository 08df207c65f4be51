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

from orca.master.loops import LeaderLoop
from orca.raft import RaftNode
from orca.state.machine import OBSERVED_FIELDS

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
                out[node_id] = {"renewed_at": self.book.received_at[node_id],
                                "allocs": allocs_changed(state, node_id, self.book.reports.get(node_id, []),
                                                         by_node[node_id])}
            return out
        nodes = self.raft.read(build)
        if nodes:
            try:
                await self.propose("node_reports", {"nodes": nodes})
            except Exception:
                self.book.dirty |= dirty  # not committed: send them again next interval
                raise

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
