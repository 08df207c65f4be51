"""The agent's reconcile loop and health checks against FakeRuntime, with an injected clock."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from orca.agent.health import HealthMonitor
from orca.agent.reconcile import Reconciler, resolve_env
from orca.agent.runtime import ContainerState, FakeRuntime, RuntimeFailure
from orca.agent.stats import StatsSampler, cpu_percent, mem_percent
from orca.protocol import validate_alloc_report

IMAGE = "orca-test/busybox:latest"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def alloc(alloc_id: str, service: str = "web", *, version: int = 1, image: str = IMAGE, port: int | None = None,
          env: dict[str, str] | None = None, health: str | None = None) -> dict[str, Any]:
    return {"id": alloc_id, "service": service, "version": version, "index": 0,
            "spec": {"name": service, "image": image, "command": None, "port": port, "health": health,
                     "env": env or {}, "domain": None, "resources": {"memory": 64 << 20, "cpu": 0.1}}}


def push(*allocs: dict[str, Any], term: int = 1, version: int = 1,
         secrets: dict[str, str] | None = None) -> dict[str, Any]:
    return {"term": term, "version": version, "allocations": list(allocs), "secrets": secrets or {}}


class RecordingRuntime(FakeRuntime):
    """FakeRuntime that also remembers the env and host port of every start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[tuple[str, dict[str, str], int | None]] = []
        self.taken_ports: set[int] = set()

    def start(self, alloc: dict[str, Any], *, env: dict[str, str], host_port: int | None) -> ContainerState:
        self.started.append((alloc["id"], dict(env), host_port))
        if host_port in self.taken_ports:
            raise RuntimeFailure(f"port {host_port} already allocated")
        return super().start(alloc, env=env, host_port=host_port)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(clock: Clock) -> RecordingRuntime:
    return RecordingRuntime("node-1", images=[IMAGE], clock=clock)


@pytest.fixture
def rec(runtime: RecordingRuntime, clock: Clock) -> Reconciler:
    return Reconciler(runtime, host_port_range=(20000, 20009), clock=clock, wall=clock)


async def settle(r: Reconciler) -> None:
    await r.reconcile_once()
    await r.wait_idle()


def running(runtime: FakeRuntime) -> set[str]:
    return {c.alloc_id for c in runtime.list() if c.status == "running"}


def ops(runtime: FakeRuntime, *names: str) -> list[tuple[str, Any]]:
    return [c for c in runtime.calls if c[0] in names]


async def test_starts_missing_allocations_and_reports_them(rec: Reconciler, runtime: RecordingRuntime) -> None:
    rec.set_desired(push(alloc("a1"), alloc("a2"), alloc("a3", "api")))
    await settle(rec)
    assert running(runtime) == {"a1", "a2", "a3"}
    reports = rec.reports()
    assert [r["alloc"] for r in reports] == ["a1", "a2", "a3"]
    for i, r in enumerate(reports):
        assert validate_alloc_report(r, i) == r
        assert r["status"] == "running" and r["container_id"] and r["started_at"] and r["health"] is None


async def test_stops_allocations_no_longer_desired(rec: Reconciler, runtime: RecordingRuntime) -> None:
    rec.set_desired(push(alloc("a1"), alloc("a2"), alloc("a3")))
    await settle(rec)
    rec.set_desired(push(alloc("a2"), version=2))
    await settle(rec)
    assert running(runtime) == {"a2"}
    assert sorted(a for _, a in ops(runtime, "stop")) == ["a1", "a3"]
    await settle(rec)  # forgotten once gone
    assert [r["alloc"] for r in rec.reports()] == ["a2"]


async def test_a_finished_stop_wakes_the_heartbeat(clock: Clock) -> None:
    """The leader learns at once that a stopped replica left the node (a drain completes on that)."""
    class Gated(FakeRuntime):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.gate, self.stopping = threading.Event(), threading.Event()

        def stop(self, alloc_id: str, timeout_s: float = 5) -> None:
            self.stopping.set()
            self.gate.wait(5)
            super().stop(alloc_id, timeout_s)

    runtime = Gated("node-1", images=[IMAGE], clock=clock)
    rec = Reconciler(runtime, clock=clock, wall=clock)
    rec.set_desired(push(alloc("a1"), alloc("a2")))
    await settle(rec)
    rec.set_desired(push(alloc("a2"), version=2))
    await rec.reconcile_once()
    await asyncio.to_thread(runtime.stopping.wait, 5)
    rec.changed.clear()  # a heartbeat sent while the stop runs (it reports a1 "stopped")
    assert [r["alloc"] for r in rec.reports()] == ["a1", "a2"]
    runtime.gate.set()
    await rec.wait_idle()
    assert rec.changed.is_set()
    assert [r["alloc"] for r in rec.reports()] == ["a2"]


async def test_a_push_starts_and_stops_at_once_without_waiting_for_a_list(rec: Reconciler,
                                                                          runtime: RecordingRuntime) -> None:
    rec.set_desired(push(alloc("a1"), alloc("a2")))
    await settle(rec)
    lists = len(ops(runtime, "list"))
    rec.set_desired(push(alloc("a2"), alloc("a3"), version=2))  # a3 new, a1 dropped
    await rec.wait_idle()  # no pass has run: the push itself launched both
    assert len(ops(runtime, "list")) == lists
    assert running(runtime) == {"a2", "a3"}
    assert ("stop", "a1") in runtime.calls
    await settle(rec)  # the pass that follows finds nothing left to do
    assert [a for _, a in ops(runtime, "start")] == ["a1", "a2", "a3"]
    assert [r["alloc"] for r in rec.reports()] == ["a2", "a3"]


async def test_before_a_first_list_a_push_acts_on_nothing(runtime: RecordingRuntime, clock: Clock) -> None:
    """A restarted agent adopts what runs (one list) before it starts or stops anything."""
    runtime.start(alloc("a1"), env={}, host_port=None)
    rec = Reconciler(runtime, clock=clock, wall=clock)
    rec.set_desired(push(alloc("a1"), alloc("a2")))
    await rec.wait_idle()
    assert ops(runtime, "start") == [("start", "a1")] and ops(runtime, "stop") == []
    await settle(rec)
    assert running(runtime) == {"a1", "a2"}
    assert ops(runtime, "start") == [("start", "a1"), ("start", "a2")]  # a1 adopted, not started again


async def test_same_push_twice_does_nothing_new(rec: Reconciler, runtime: RecordingRuntime) -> None:
    p = push(alloc("a1"), alloc("a2"))
    rec.set_desired(p)
    await settle(rec)
    before = len(ops(runtime, "start", "stop", "restart", "ensure_image"))
    rec.set_desired(p)
    for _ in range(3):
        await settle(rec)
    assert len(ops(runtime, "start", "stop", "restart", "ensure_image")) == before
    assert running(runtime) == {"a1", "a2"}


async def test_readopts_running_containers_without_duplicates(runtime: RecordingRuntime, clock: Clock) -> None:
    # What a previous agent process left running.
    for a in (alloc("a1"), alloc("a2")):
        runtime.start(a, env={}, host_port=None)
    ids = {c.alloc_id: c.container_id for c in runtime.list()}

    fresh = Reconciler(runtime, clock=clock, wall=clock)
    fresh.set_desired(None)
    await settle(fresh)  # nothing desired known yet: adopt and report, touch nothing
    assert {r["alloc"]: r["container_id"] for r in fresh.reports()} == ids
    assert not ops(runtime, "stop")

    runtime.calls.clear()
    fresh.set_desired(push(alloc("a1"), alloc("a2"), alloc("a3")))
    await settle(fresh)
    assert [a for _, a in ops(runtime, "start")] == ["a3"]
    assert len(runtime.list()) == 3
    assert {c.alloc_id: c.container_id for c in runtime.list() if c.alloc_id != "a3"} == ids


async def test_readopted_container_gets_its_spec_and_health_state(runtime: RecordingRuntime, clock: Clock) -> None:
    a = alloc("a1", port=8080, health="/ok")
    runtime.start(a, env={}, host_port=20005)
    fresh = Reconciler(runtime, clock=clock, wall=clock)
    fresh.set_desired(push(a))  # what a restarted agent does with its saved desired set, before any pass
    await settle(fresh)
    assert not ops(runtime, "start", "ensure_image")[1:]  # only the test's own start
    [report] = fresh.reports()
    assert report["health"] == "starting" and report["host_port"] == 20005 and report["status"] == "running"
    [(alloc_id, container_id, port, check)] = fresh.health_targets()
    assert (alloc_id, container_id, port, check["kind"], check["target"]) == (
        "a1", report["container_id"], 20005, "http", "/ok")


async def test_pull_failure_is_reported_and_retried_with_backoff(clock: Clock) -> None:
    runtime = FakeRuntime("node-1", pullable=[], clock=clock)
    rec = Reconciler(runtime, clock=clock, wall=clock)
    rec.set_desired(push(alloc("a1", image="nope:1")))
    await settle(rec)
    [report] = rec.reports()
    assert report["status"] == "failed" and report["reason"] == "image not found: nope:1"

    def pulls() -> int:
        return len(ops(runtime, "ensure_image"))

    assert pulls() == 1
    for _ in range(5):  # no hot loop: passes within the backoff do nothing
        await settle(rec)
    assert pulls() == 1
    clock.advance(1.0)
    await settle(rec)
    assert pulls() == 2
    clock.advance(1.0)  # the delay doubled to 2 s
    await settle(rec)
    assert pulls() == 2
    clock.advance(1.0)
    await settle(rec)
    assert pulls() == 3
    clock.advance(1000)
    runtime.pullable = None  # the registry has it now
    await settle(rec)
    assert rec.reports()[0]["status"] == "running" and rec.reports()[0]["reason"] is None


async def test_start_failure_backoff_is_capped(clock: Clock) -> None:
    runtime = FakeRuntime("node-1", images=[IMAGE], clock=clock)
    runtime.fail_start[IMAGE] = "start container failed: boom"
    rec = Reconciler(runtime, clock=clock, wall=clock)
    rec.set_desired(push(alloc("a1")))
    for _ in range(12):
        await settle(rec)
        clock.advance(100)
    assert rec.states["a1"].delay == 30.0
    assert rec.reports()[0]["reason"] == "start container failed: boom"


async def test_secrets_are_resolved_at_start(rec: Reconciler, runtime: RecordingRuntime) -> None:
    env = {"DB": "postgres://app:${secrets.db_pw}@db/x", "PLAIN": "1"}
    rec.set_desired(push(alloc("a1", env=env), secrets={"db_pw": "s3cret"}))
    await settle(rec)
    assert runtime.started == [("a1", {"DB": "postgres://app:s3cret@db/x", "PLAIN": "1"}, None)]


async def test_missing_secret_is_a_failure_until_a_push_brings_it(rec: Reconciler, runtime: RecordingRuntime) -> None:
    a = alloc("a1", env={"TOKEN": "${secrets.api_key}"})
    rec.set_desired(push(a))
    await settle(rec)
    [report] = rec.reports()
    assert report["status"] == "failed" and report["reason"] == "missing secret api_key"
    assert not ops(runtime, "start", "ensure_image")
    rec.set_desired(push(a, version=2, secrets={"api_key": "k"}))  # retried at once, not after the backoff
    await settle(rec)
    assert runtime.started == [("a1", {"TOKEN": "k"}, None)]
    assert rec.reports()[0]["status"] == "running"


def test_resolve_env() -> None:
    assert resolve_env({"A": "${secrets.x}-${secrets.y}"}, {"x": "1", "y": "2"}) == {"A": "1-2"}
    with pytest.raises(RuntimeFailure, match="missing secret y"):
        resolve_env({"A": "${secrets.y}"}, {})


async def test_exited_container_restarts_with_backoff(rec: Reconciler, runtime: RecordingRuntime,
                                                      clock: Clock) -> None:
    rec.set_desired(push(alloc("a1")))
    await settle(rec)
    runtime.exit("a1", 3)
    await settle(rec)
    [report] = rec.reports()
    assert report["status"] == "exited"
    assert report["reason"].startswith("crash loop: exited 1 time")
    assert not ops(runtime, "restart")
    clock.advance(1.0)
    await settle(rec)
    assert len(ops(runtime, "restart")) == 1
    await settle(rec)
    assert rec.reports()[0]["status"] == "running" and rec.reports()[0]["restarts"] == 1

    clock.advance(0.5)
    runtime.exit("a1", 3)
    await settle(rec)
    assert "exited 2 times" in rec.reports()[0]["reason"]
    clock.advance(1.0)  # the second crash waits 2 s
    await settle(rec)
    assert len(ops(runtime, "restart")) == 1
    clock.advance(1.0)
    await settle(rec)
    assert len(ops(runtime, "restart")) == 2


async def test_host_ports_are_distinct_and_a_taken_port_is_skipped(rec: Reconciler,
                                                                    runtime: RecordingRuntime) -> None:
    runtime.taken_ports = {20000}
    rec.set_desired(push(alloc("a1", port=80), alloc("a2", port=80), alloc("a3")))
    await settle(rec)
    ports = {c.alloc_id: c.host_port for c in runtime.list()}
    assert ports["a3"] is None
    assert ports["a1"] != ports["a2"]
    assert {ports["a1"], ports["a2"]} <= set(range(20001, 20010))
    assert all(r["status"] == "running" for r in rec.reports())
    assert {r["alloc"]: r["host_port"] for r in rec.reports()} == ports


async def test_starts_run_in_parallel_but_bounded(clock: Clock) -> None:
    lock = threading.Lock()
    active = {"now": 0, "max": 0}

    class Slow(FakeRuntime):
        def start(self, alloc: dict[str, Any], *, env: dict[str, str], host_port: int | None) -> ContainerState:
            with lock:
                active["now"] += 1
                active["max"] = max(active["max"], active["now"])
            time.sleep(0.05)
            with lock:
                active["now"] -= 1
                return super().start(alloc, env=env, host_port=host_port)

    runtime = Slow("node-1", images=[IMAGE], clock=clock)
    rec = Reconciler(runtime, clock=clock, wall=clock, parallel=4)
    rec.set_desired(push(*(alloc(f"a{i:02d}") for i in range(12))))
    await settle(rec)
    assert len(runtime.list()) == 12
    assert active["max"] == 4


async def test_a_list_older_than_a_finished_stop_does_not_resurrect_it(clock: Clock) -> None:
    class Racy(FakeRuntime):
        """`stop` waits for a gate; a stale `list` takes its snapshot, then lets the stop finish."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.gate, self.stopped, self.stale = threading.Event(), threading.Event(), False

        def stop(self, alloc_id: str, timeout_s: float = 5) -> None:
            self.gate.wait(5)
            super().stop(alloc_id, timeout_s)
            self.stopped.set()

        def list(self) -> list[ContainerState]:
            snapshot = super().list()
            if self.stale:
                self.gate.set()
                self.stopped.wait(5)
                time.sleep(0.05)  # let the stop's completion reach the event loop first
            return snapshot

    runtime = Racy("node-1", images=[IMAGE], clock=clock)
    rec = Reconciler(runtime, clock=clock, wall=clock)
    rec.set_desired(push(alloc("a1"), alloc("a2")))
    await settle(rec)
    rec.set_desired(push(alloc("a1"), version=2))
    await rec.reconcile_once()  # launches the stop of a2, which waits at the gate
    runtime.stale = True
    await rec.reconcile_once()  # its list still shows a2
    await rec.wait_idle()
    assert "a2" not in rec.states
    runtime.stale = False
    await settle(rec)
    assert set(rec.states) == {"a1"} and [a for _, a in ops(runtime, "stop")] == ["a2"]


async def test_one_image_check_for_many_replicas(rec: Reconciler, runtime: RecordingRuntime) -> None:
    rec.set_desired(push(*(alloc(f"a{i}") for i in range(10))))
    await settle(rec)
    assert len(ops(runtime, "ensure_image")) == 1 and len(runtime.list()) == 10


async def test_nothing_desired_yet_means_nothing_stopped(rec: Reconciler, runtime: RecordingRuntime) -> None:
    runtime.start(alloc("old"), env={}, host_port=None)
    await settle(rec)
    assert running(runtime) == {"old"}
    rec.set_desired(push())  # an explicit empty set does stop it
    await settle(rec)
    assert running(runtime) == set()


async def test_engine_failure_is_remembered(clock: Clock) -> None:
    class Down(FakeRuntime):
        def list(self) -> list[ContainerState]:
            raise RuntimeFailure("docker engine unreachable")

    rec = Reconciler(Down(clock=clock), clock=clock, wall=clock)
    await settle(rec)
    assert rec.engine_error == "docker engine unreachable"


# -- health ------------------------------------------------------------------------------------------


async def test_health_starting_then_healthy_then_restart_after_three_failures(
        rec: Reconciler, runtime: RecordingRuntime, clock: Clock) -> None:
    verdicts: list[bool] = []
    urls: list[str] = []

    async def probe(url: str) -> bool:
        urls.append(url)
        return verdicts.pop(0)

    monitor = HealthMonitor(rec, "127.0.0.1", probe=probe)
    rec.set_desired(push(alloc("a1", port=8080, health="/healthz"), alloc("a2")))
    await settle(rec)
    assert rec.states["a1"].report()["health"] == "starting"
    assert rec.states["a2"].report()["health"] is None

    verdicts[:] = [False, True]
    await monitor.check_once()
    assert rec.states["a1"].health == "starting"
    await monitor.check_once()
    assert rec.states["a1"].health == "healthy"
    host_port = rec.states["a1"].host_port
    assert urls[0] == f"http://127.0.0.1:{host_port}/healthz"

    verdicts[:] = [False, False, False]
    for _ in range(3):
        await monitor.check_once()
    assert [a for _, a in ops(runtime, "restart")] == ["a1"]
    report = rec.states["a1"].report()
    assert report["health"] == "unhealthy" and report["restarts"] == 1
    assert "health check /healthz failed 3 times" in report["reason"]

    # Still failing: the next restart waits for the backoff, then happens.
    verdicts[:] = [False] * 3
    for _ in range(3):
        await monitor.check_once()
    assert len(ops(runtime, "restart")) == 1
    clock.advance(1.0)
    verdicts[:] = [False]
    await monitor.check_once()
    assert len(ops(runtime, "restart")) == 2
    verdicts[:] = [True]
    await monitor.check_once()
    assert rec.states["a1"].health == "healthy"


async def test_real_probe_against_a_closed_port_fails(rec: Reconciler) -> None:
    monitor = HealthMonitor(rec, "127.0.0.1", timeout_s=0.5)
    try:
        assert await monitor.probe("http://127.0.0.1:9/health") is False
    finally:
        await monitor.close()


# -- the before-stop hook (the ingress proxy drains there) ----------------------------------------------


async def test_before_stop_is_awaited_before_the_stop(runtime: RecordingRuntime, clock: Clock) -> None:
    events: list[str] = []
    release = asyncio.Event()

    async def before_stop(alloc_id: str) -> None:
        events.append(f"drain {alloc_id}")
        await release.wait()
        events.append(f"drained {alloc_id}")

    rec = Reconciler(runtime, clock=clock, wall=clock, before_stop=before_stop)
    rec.set_desired(push(alloc("a1"), alloc("a2")))
    await settle(rec)
    rec.set_desired(push(alloc("a2"), version=2))
    await rec.reconcile_once()
    for _ in range(50):
        if events:
            break
        await asyncio.sleep(0.01)
    assert events == ["drain a1"] and running(runtime) == {"a1", "a2"}  # still serving while it drains
    assert rec.states["a1"].busy
    await rec.reconcile_once()  # a pass meanwhile leaves the draining replica alone
    assert len(ops(runtime, "stop")) == 0
    release.set()
    await rec.wait_idle()
    assert events == ["drain a1", "drained a1"] and running(runtime) == {"a2"}
    assert [a for _, a in ops(runtime, "stop")] == ["a1"]


async def test_a_failing_before_stop_does_not_prevent_the_stop(runtime: RecordingRuntime, clock: Clock) -> None:
    async def before_stop(alloc_id: str) -> None:
        raise RuntimeError("proxy gone")

    rec = Reconciler(runtime, clock=clock, wall=clock, before_stop=before_stop)
    rec.set_desired(push(alloc("a1")))
    await settle(rec)
    rec.set_desired(push(version=2))
    await settle(rec)
    assert running(runtime) == set()


# -- container stats ---------------------------------------------------------------------------------------


def test_cpu_and_mem_percent() -> None:
    cur = {"cpu_total": 3_000, "system_cpu": 20_000, "online_cpus": 2, "pre_cpu_total": 1_000,
           "pre_system_cpu": 10_000, "mem_usage": 64, "mem_limit": 256}
    assert cpu_percent(cur, None) == 40.0  # the engine's own pre-sample: 2000/10000 * 2 CPUs
    one_shot = {**cur, "pre_cpu_total": None, "pre_system_cpu": None}
    assert cpu_percent(one_shot, None) is None  # no interval yet
    assert cpu_percent(one_shot, {"cpu_total": 2_000, "system_cpu": 15_000}) == 40.0
    assert cpu_percent(one_shot, {"cpu_total": 2_000, "system_cpu": 20_000}) is None  # no time went by
    assert mem_percent(cur) == 25.0 and mem_percent({**cur, "mem_limit": 0}) is None


async def test_stats_sampler_on_the_fake_runtime(rec: Reconciler, runtime: RecordingRuntime) -> None:
    rec.set_desired(push(*(alloc(f"a{i}") for i in range(5))))
    await settle(rec)
    runtime.usage = {"a0": (50.0, 10.0), "a1": (150.0, 75.0)}

    def alive() -> list[str]:
        return [s.alloc_id for s in list(rec.states.values()) if s.status == "running"]

    sampler = StatsSampler(runtime, alive, max_per_pass=3)
    first = sampler.sample_once()  # a0..a2: memory at once, cpu once there is an interval
    assert set(first) == {"a0", "a1", "a2"}
    assert first["a0"] == {"cpu_pct": 0.0, "mem_pct": 10.0} and first["a1"]["mem_pct"] == 75.0
    second = sampler.sample_once()  # bounded work: the next three in turn (a3, a4, a0)
    assert set(second) == {"a0", "a1", "a2", "a3", "a4"}
    assert second["a0"] == {"cpu_pct": 50.0, "mem_pct": 10.0}
    third = sampler.sample_once()
    assert third["a1"] == {"cpu_pct": 150.0, "mem_pct": 75.0}
    assert sampler.latest() == third
    rec.set_desired(push(alloc("a1"), version=2))
    await settle(rec)
    assert set(sampler.sample_once()) == {"a1"}  # stopped containers drop out
    sampler.interval_s = 0.01
    sampler.start()
    try:
        await asyncio.sleep(0.1)
        assert sampler.latest()["a1"]["cpu_pct"] == 150.0
    finally:
        sampler.stop()
