"""The lease monitor's timer: it wakes when a node's silence reaches the probe threshold or the TTL, not on
its next periodic pass, and it probes (never marks down) a node that is merely late."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from orca.master.leases import SUSPECT_HEARTBEATS, HeartbeatBook, LeaseMonitor


class FakeRaft:
    def __init__(self, nodes: dict[str, dict[str, Any]]) -> None:
        self.state = {"nodes": nodes, "allocations": {}}
        self.proposed: list[tuple[str, dict[str, Any]]] = []
        self.is_leader, self.term = True, 1

    def read(self, fn: Any) -> Any:
        return fn(self.state)

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.proposed.append((op, args))
        return {}


def _monitor(probes: list[str], verdict: str = "alive") -> tuple[LeaseMonitor, HeartbeatBook, FakeRaft]:
    raft = FakeRaft({"n1": {"id": "n1", "status": "ready", "address": "http://127.0.0.1:1"}})
    book = HeartbeatBook()

    async def prober(node_id: str, address: str, timeout_s: float) -> str:
        probes.append(node_id)
        return verdict

    monitor = LeaseMonitor(raft, book, heartbeat_s=1.0, ttl_s=5.0, prober=prober)  # type: ignore[arg-type]
    monitor.term = 1
    return monitor, book, raft


def test_default_probe_threshold_is_one_and_a_half_heartbeats() -> None:
    monitor, _, _ = _monitor([])
    assert monitor.suspect_s == pytest.approx(SUSPECT_HEARTBEATS * 1.0) == pytest.approx(1.5)


@pytest.mark.parametrize("silent, next_in", [(0.2, 1.3), (1.0, 0.5), (1.49, 0.01)])
async def test_timer_is_set_to_the_probe_threshold(silent: float, next_in: float) -> None:
    probes: list[str] = []
    monitor, book, raft = _monitor(probes)
    book.last_seen["n1"] = time.monotonic() - silent
    await monitor._expire()
    # never later than the threshold (+5 ms), and never longer than the idle period of 0.25 s
    assert monitor.period_s <= min(next_in, 0.25) + 0.006
    assert monitor.period_s >= min(next_in, 0.25) - 0.05
    assert probes == [] and raft.proposed == []


async def test_a_late_node_is_probed_at_the_threshold_and_the_timer_moves_to_the_ttl() -> None:
    probes: list[str] = []
    monitor, book, raft = _monitor(probes)
    book.last_seen["n1"] = time.monotonic() - 1.5
    await monitor._expire()
    await asyncio.sleep(0.01)  # the probe runs as a task
    assert probes == ["n1"] and raft.proposed == []  # alive: a probe, never a verdict
    assert book.last_seen["n1"] > time.monotonic() - 0.5  # its answer renewed the lease in memory
    for task in monitor.probes.values():
        task.cancel()


async def test_a_refusing_agent_is_marked_down_on_the_wake_up() -> None:
    probes: list[str] = []
    monitor, book, raft = _monitor(probes, verdict="gone")
    book.last_seen["n1"] = time.monotonic() - 1.6
    await monitor._expire()
    await asyncio.sleep(0.01)
    await monitor._expire()
    assert [op for op, _ in raft.proposed] == ["node_status"]
    assert raft.proposed[0][1]["status"] == "down"
