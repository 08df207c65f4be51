"""The leader's control plane: lease monitor, scheduler loop and dispatcher, built and reported together.

`ControlPlane.components` is the list `Leadership` enables and disables; `health()` gives the
ComponentHealth of the scheduler and the dispatcher; their series are read at scrape time (orca.metrics.
LiveCollector). Every applied entry wakes the scheduler and the dispatcher (they are level-triggered and cheap
when nothing changed), through `call_soon_threadsafe` because entries are applied in the Raft thread; on a
follower, whose loops are off, only until both hold a pending wake-up.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from orca.master.autoscaler import Autoscaler
from orca.master.cron import CronLoop
from orca.master.dispatcher import Dispatcher
from orca.master.leases import HeartbeatBook, LeaseMonitor, http_prober
from orca.master.scheduling import SchedulerLoop
from orca.master.secrets import SecretBox
from orca.master.traffic import TrafficBook, TrafficCollector
from orca.metrics import LiveCollector, MasterMetrics
from orca.raft import RaftNode
from orca.state.ops_nodes import leases_only

__all__ = ["ControlPlane"]


class ControlPlane:
    def __init__(self, raft: RaftNode, secrets: SecretBox, metrics: MasterMetrics, heartbeat_s: float,
                 lease_ttl_s: float, mesh_vip_range: str | None = None) -> None:
        self.raft = raft
        self.book = HeartbeatBook()
        self.leases = LeaseMonitor(raft, self.book, heartbeat_s, lease_ttl_s, prober=http_prober)
        self.book.on_change = self.leases.wake
        self.scheduler = SchedulerLoop(raft)
        self.dispatcher = Dispatcher(raft, secrets, lease_ttl_s, heartbeat_age=self.leases.silent_for,
                                     **({"mesh_vip_range": mesh_vip_range} if mesh_vip_range else {}))
        self.traffic = TrafficBook(sample_s=2.0)
        self.autoscaler = Autoscaler(raft, self.traffic)
        self.cron = CronLoop(raft)
        self.components = [self.leases, self.scheduler, self.dispatcher, self.autoscaler, self.cron]
        metrics.registry.register(TrafficCollector(self.traffic))
        self._loop = asyncio.get_running_loop()
        self._wake_pending = False
        raft.store.applied_listeners.append(self._on_applied)
        self._register_metrics(metrics.live)

    def _on_applied(self, result: object) -> None:
        """Raft thread: one cross-thread wake-up per burst of applied entries, not one per entry.

        A lease renewal (`leases_only`: nothing but `renewed_at` moved, which no decider reads) wakes
        nobody: at 1,000 nodes it applies every second, and each wake-up was a full scheduling pass over
        every service and allocation. What only the clock changes, the loops' own timers see.

        On a follower the loops are off: once both hold a pending wake-up (their first cycle when this
        master becomes leader runs at once), further entries wake nothing. Each wake-up was a hop to the
        follower's event loop per applied batch, whose GIL time the Raft thread waited for.
        """
        if leases_only(result):
            return
        if self.scheduler.woken_while_disabled and self.dispatcher.woken_while_disabled:
            return  # a follower: both loops are off and already woken for when they are turned on
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self.scheduler.wake()
        self.dispatcher.wake()

    def _pending(self) -> int:
        return int(self.raft.read(lambda s: sum((svc.get("pending") or {}).get("count", 0)
                                                for svc in s["services"].values())))

    def _status(self, loop_enabled: bool, error: str | None) -> str:
        if self.raft.is_leader:
            return "up" if loop_enabled and error is None else "degraded"
        return "up" if self.raft.leader_id is not None else "down"  # followers: the leader runs it

    def scheduler_health(self) -> dict[str, Any]:
        return {"status": self._status(self.scheduler.enabled, self.scheduler.last_error),
                "live_pullers": 1 if self.scheduler.enabled else 0, "backlog": self._pending(),
                "in_flight": 0, "oldest_unacked_seconds": 0.0,
                "detail": {"running_here": self.scheduler.enabled,
                           "last_plan_seconds": round(self.scheduler.last_plan_s, 4),
                           "idle_passes_skipped": self.scheduler.skipped,
                           "placements": self.scheduler.placements_total, "last_error": self.scheduler.last_error,
                           "pending": self.scheduler.pending}}

    def leases_health(self) -> dict[str, Any]:
        """The node leases: `live_pullers` is the worker nodes heard from within the lease TTL (leader only:
        heartbeats go to the leader), `backlog` the heartbeats not yet committed."""
        enabled = self.leases.enabled
        now = time.monotonic()
        heard = sum(1 for seen in self.book.last_seen.values() if now - seen <= self.leases.ttl_s) if enabled else 0
        status = self._status(enabled, self.leases.last_error)
        if status == "up" and self.leases.quarantined:
            status = "degraded"
        return {"status": status, "live_pullers": heard, "backlog": len(self.book.dirty) if enabled else 0,
                "in_flight": 0, "oldest_unacked_seconds": 0.0,
                "detail": {"running_here": enabled, "nodes_heard": heard, "last_error": self.leases.last_error,
                           "quarantined": dict(self.leases.quarantined)}}

    def dispatcher_health(self) -> dict[str, Any]:
        in_flight, oldest = self.dispatcher.in_flight()
        failing = {n: link.last_error for n, link in self.dispatcher.links.items() if link.failures}
        status = self._status(self.dispatcher.enabled, self.dispatcher.last_error)
        if status == "up" and failing:
            status = "degraded"
        return {"status": status, "live_pullers": len(self.dispatcher.links), "backlog": len(failing),
                "in_flight": in_flight, "oldest_unacked_seconds": round(oldest, 3),
                "detail": {"running_here": self.dispatcher.enabled, "failing_nodes": failing,
                           "pushes": self.dispatcher.pushes_total,
                           "push_failures": self.dispatcher.push_failures_total}}

    def _register_metrics(self, live: LiveCollector) -> None:
        """Scheduler, dispatcher and cluster-object series, read at scrape time. The counters count what
        this master did as leader since it started (they restart at 0 with the process, as counters may)."""
        def counts(state: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
            nodes = {"ready": 0, "down": 0, "unreachable": 0}
            for n in state["nodes"].values():
                nodes[n["status"]] = nodes.get(n["status"], 0) + 1
            allocs = {"run": 0, "stop": 0}
            for a in state["allocations"].values():
                allocs[a["desired"]] = allocs.get(a["desired"], 0) + 1
            return nodes, allocs

        live.gauge("orca_nodes", "Worker nodes by status.",
                   lambda: [((k,), v) for k, v in self.raft.read(counts)[0].items()], ["status"])
        live.gauge("orca_allocations", "Allocations by desired state.",
                   lambda: [((k,), v) for k, v in self.raft.read(counts)[1].items()], ["desired"])
        live.gauge("orca_pending_replicas", "Replicas that fit on no node.", self._pending)
        live.gauge("orca_scheduler_last_plan_duration_seconds", "Duration of the last scheduling pass.",
                   lambda: self.scheduler.last_plan_s)
        live.counter("orca_scheduler_placements_total", "Replicas placed by the scheduler on this master.",
                     lambda: self.scheduler.placements_total)
        live.counter("orca_dispatch_pushes_total", "Desired-state pushes sent to agents by this master.",
                     lambda: self.dispatcher.pushes_total)
        live.counter("orca_dispatch_push_failures_total", "Desired-state pushes to agents that failed.",
                     lambda: self.dispatcher.push_failures_total)
        live.gauge("orca_dispatch_in_flight", "Pushes sent and not yet acknowledged.",
                   lambda: self.dispatcher.in_flight()[0])
