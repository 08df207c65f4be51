"""The leader's control plane: lease monitor, scheduler loop and dispatcher, built and reported together.

`ControlPlane.components` is the list `Leadership` enables and disables; `health()` gives the
ComponentHealth of the scheduler and the dispatcher; `refresh_metrics()` updates their gauges at scrape
time. Every applied entry wakes the scheduler and the dispatcher (they are level-triggered and cheap
when nothing changed), through `call_soon_threadsafe` because entries are applied in the Raft thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Gauge

from orca.master.autoscaler import Autoscaler
from orca.master.cron import CronLoop
from orca.master.dispatcher import Dispatcher
from orca.master.leases import HeartbeatBook, LeaseMonitor
from orca.master.scheduling import SchedulerLoop
from orca.master.secrets import SecretBox
from orca.master.traffic import TrafficBook, TrafficCollector
from orca.metrics import MasterMetrics
from orca.raft import RaftNode

__all__ = ["ControlPlane"]


class ControlPlane:
    def __init__(self, raft: RaftNode, secrets: SecretBox, metrics: MasterMetrics, heartbeat_s: float,
                 lease_ttl_s: float, mesh_vip_range: str | None = None) -> None:
        self.raft = raft
        self.book = HeartbeatBook()
        self.leases = LeaseMonitor(raft, self.book, heartbeat_s, lease_ttl_s)
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
        r = metrics.registry
        self.g_nodes = Gauge("orca_nodes", "Worker nodes by status.", ["status"], registry=r)
        self.g_allocs = Gauge("orca_allocations", "Allocations by desired state.", ["desired"], registry=r)
        self.g_pending = Gauge("orca_pending_replicas", "Replicas that fit on no node.", registry=r)
        self.g_sched = Gauge("orca_scheduler_last_plan_seconds", "Duration of the last scheduling pass.",
                             registry=r)
        self.g_placed = Gauge("orca_scheduler_placements", "Replicas placed by this leader since it was elected.",
                              registry=r)
        self.g_pushes = Gauge("orca_dispatch_pushes", "Desired-state pushes sent by this master.", registry=r)
        self.g_push_fail = Gauge("orca_dispatch_push_failures", "Desired-state pushes that failed.", registry=r)
        self.g_inflight = Gauge("orca_dispatch_in_flight", "Pushes not yet acknowledged.", registry=r)
        metrics.on_scrape(self.refresh_metrics)

    def _on_applied(self, _result: object) -> None:
        """Raft thread: one cross-thread wake-up per burst of applied entries, not one per entry."""
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

    def refresh_metrics(self) -> None:
        def counts(state: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
            nodes = {"ready": 0, "down": 0, "unreachable": 0}
            for n in state["nodes"].values():
                nodes[n["status"]] = nodes.get(n["status"], 0) + 1
            allocs = {"run": 0, "stop": 0}
            for a in state["allocations"].values():
                allocs[a["desired"]] = allocs.get(a["desired"], 0) + 1
            return nodes, allocs
        nodes, allocs = self.raft.read(counts)
        for k, v in nodes.items():
            self.g_nodes.labels(k).set(v)
        for k, v in allocs.items():
            self.g_allocs.labels(k).set(v)
        self.g_pending.set(self._pending())
        self.g_sched.set(self.scheduler.last_plan_s)
        self.g_placed.set(self.scheduler.placements_total)
        self.g_pushes.set(self.dispatcher.pushes_total)
        self.g_push_fail.set(self.dispatcher.push_failures_total)
        self.g_inflight.set(self.dispatcher.in_flight()[0])
