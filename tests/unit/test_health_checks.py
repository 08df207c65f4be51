"""Health checks (orca.healthcheck): the spec's string and table forms, readiness on the leader, and the agent's
monitor for http, tcp and exec checks with interval, retries, start period and timeouts."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import spec
from orca.agent.health import HealthMonitor
from orca.agent.reconcile import Reconciler
from orca.agent.runtime import FakeRuntime
from orca.errors import InvalidSpec
from orca.healthcheck import check_of, has_check
from orca.rollout import is_ready

IMAGE = "orca-test/busybox:latest"


def svc(**fields: Any) -> dict[str, Any]:
    return spec.validate_service({"name": "web", "image": IMAGE, **fields})


# -- spec --------------------------------------------------------------------------------------------


def test_string_form_is_unchanged_and_keeps_its_digest() -> None:
    s = svc(port=8080, health="/healthz")
    assert s["health"] == "/healthz"
    assert check_of(s) == {"kind": "http", "target": "/healthz", "interval_s": 1.0, "timeout_s": 1.0, "retries": 3,
                           "start_period_s": 0.0}


def test_table_forms_are_normalized_and_idempotent() -> None:
    tcp = svc(port=6379, health={"tcp": 6379, "interval_s": 2, "retries": 5, "start_period_s": 10})
    assert tcp["health"] == {"http": None, "tcp": 6379, "exec": None, "interval_s": 2.0, "timeout_s": 1.0,
                             "retries": 5, "start_period_s": 10.0}
    assert spec.validate_service(tcp) == tcp
    ex = svc(health={"exec": ["sh", "-c", "test -f /ready"], "timeout_s": 0.5})
    assert check_of(ex)["kind"] == "exec" and has_check(ex)  # type: ignore[index]
    assert spec.validate_service(ex) == ex
    http = svc(port=80, health={"http": "/up"})
    assert check_of(http)["target"] == "/up"  # type: ignore[index]
    assert spec.spec_digest(http) != spec.spec_digest(svc(port=80, health="/up"))


@pytest.mark.parametrize(("health", "port", "field"), [
    ({}, 80, "health"),
    ({"http": "/a", "tcp": 80}, 80, "health"),
    ({"tcp": 81}, 80, "health.tcp"),
    ({"tcp": 80}, None, "health"),
    ({"http": "/a"}, None, "health"),
    ({"http": "a"}, 80, "health.http"),
    ({"exec": []}, None, "health.exec"),
    ({"exec": "true"}, None, "health.exec"),
    ({"exec": ["a", 1]}, None, "health.exec[1]"),
    ({"exec": ["true"], "interval_s": 0.5}, None, "health.interval_s"),
    ({"exec": ["true"], "timeout_s": 0}, None, "health.timeout_s"),
    ({"exec": ["true"], "retries": 0}, None, "health.retries"),
    ({"exec": ["true"], "start_period_s": -1}, None, "health.start_period_s"),
    ({"exec": ["true"], "period": 1}, None, "health.period"),
    (5, 80, "health"),
])
def test_bad_health_tables(health: Any, port: int | None, field: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        svc(port=port, health=health)
    assert exc.value.details["field"] == field


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["http", "tcp", "exec", "interval_s", "timeout_s", "retries",
                                        "start_period_s", "x"]),
                       st.one_of(st.none(), st.integers(-5, 70000), st.floats(allow_nan=True), st.text(max_size=5),
                                 st.lists(st.text(max_size=3), max_size=3))))
def test_health_tables_never_raise_anything_but_invalid_spec(health: dict) -> None:
    try:
        out = svc(port=80, health=health)
    except InvalidSpec:
        return
    assert spec.validate_service(out) == out
    assert has_check(out)


def test_readiness_needs_a_pass_for_every_kind_of_check() -> None:
    running = {"observed": {"status": "running", "health": "starting", "running_since": 0.0}}
    healthy = {"observed": {"status": "running", "health": "healthy", "running_since": 0.0}}
    for s in (svc(health={"exec": ["true"]}), svc(port=80, health={"tcp": 80}), svc(port=80, health="/")):
        assert not is_ready(running, s, now=100.0)
        assert is_ready(healthy, s, now=100.0)
    assert is_ready(running, svc(), now=100.0)  # no check: running long enough


# -- the agent's monitor ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def alloc(alloc_id: str, s: dict[str, Any]) -> dict[str, Any]:
    return {"id": alloc_id, "service": "web", "version": 1, "index": 0, "spec": s}


async def started(*allocs: dict[str, Any]) -> tuple[Reconciler, FakeRuntime, Clock]:
    clock = Clock()
    rt = FakeRuntime(images=[IMAGE], clock=clock)
    rec = Reconciler(rt, host_port_range=(20000, 20009), clock=clock, wall=clock)
    rec.set_desired({"term": 1, "version": 1, "allocations": list(allocs)})
    await rec.reconcile_once()
    await rec.wait_idle()
    return rec, rt, clock


async def test_exec_check_passes_fails_and_restarts_after_its_retries() -> None:
    rec, rt, clock = await started(alloc("a1", svc(health={"exec": ["check"], "retries": 2})))
    monitor = HealthMonitor(rec)
    assert rec.states["a1"].health == "starting"
    await monitor.check_once()
    assert rec.states["a1"].health == "healthy"
    rt.exec_codes["a1"] = 1
    await monitor.check_once()
    assert rec.states["a1"].health == "healthy" and rec.states["a1"].restarts == 0
    await monitor.check_once()
    assert rec.states["a1"].restarts == 1 and rec.states["a1"].health == "unhealthy"
    assert "exec check failed 2 times" in (rec.states["a1"].reason or "")
    await monitor.close()


async def test_interval_counts_rounds_and_start_period_forgives_early_failures() -> None:
    seen: list[str] = []
    verdict = {"ok": False}

    async def probe(what: str) -> bool:
        seen.append(what)
        return verdict["ok"]

    rec, rt, _ = await started(alloc("a1", svc(port=6379, health={"tcp": 6379, "interval_s": 2, "retries": 1,
                                                                  "start_period_s": 4})))
    monitor = HealthMonitor(rec, probe=probe)
    for _ in range(4):  # rounds 1..4: probed at 1 and 3, both within the start period
        await monitor.check_once()
    assert len(seen) == 2 and seen[0].startswith("tcp://127.0.0.1:")
    assert rec.states["a1"].restarts == 0 and rec.states["a1"].health == "starting"
    await monitor.check_once()  # round 5: past the start period, one failure is the retry limit
    assert rec.states["a1"].restarts == 1


async def test_a_pass_ends_the_start_period_early() -> None:
    answers = [True, False]

    async def probe(what: str) -> bool:
        return answers.pop(0)

    rec, _, _ = await started(alloc("a1", svc(health={"exec": ["x"], "retries": 1, "start_period_s": 100})))
    monitor = HealthMonitor(rec, probe=probe)
    await monitor.check_once()
    await monitor.check_once()
    assert rec.states["a1"].restarts == 1  # once healthy, failures count at once


async def test_real_tcp_check_against_a_listener_and_a_closed_port() -> None:
    from orca.agent.health import _tcp

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # waits for its client, like a database
        writer.close()

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        await writer.drain()
        writer.close()

    async def proxy_without_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # what docker-proxy does when nothing listens in the container

    servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (quiet, greeter, proxy_without_backend)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    try:
        assert [await _tcp("127.0.0.1", p, 1.0) for p in ports] == [True, True, False]
        assert await _tcp("127.0.0.1", 9, 0.5) is False
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_a_hanging_exec_times_out_and_is_not_started_twice() -> None:
    release = threading.Event()

    class Hanging(FakeRuntime):
        def exec_check(self, alloc_id: str, cmd: list[str]) -> int:
            self.calls.append(("exec_check", alloc_id))
            release.wait(10)
            return 0

    clock = Clock()
    rt = Hanging(images=[IMAGE], clock=clock)
    rec = Reconciler(rt, clock=clock, wall=clock)
    rec.set_desired({"term": 1, "version": 1,
                     "allocations": [alloc("a1", svc(health={"exec": ["x"], "timeout_s": 0.2, "retries": 10}))]})
    await rec.reconcile_once()
    await rec.wait_idle()
    monitor = HealthMonitor(rec)
    await monitor.check_once()
    await monitor.check_once()
    assert len([c for c in rt.calls if c[0] == "exec_check"]) == 1
    assert rec.states["a1"].health == "starting"
    release.set()
    await asyncio.sleep(0.1)
    await monitor.check_once()
    assert rec.states["a1"].health == "healthy"
