"""The layout generation (orca.raft.ReplicatedState.layout_generation) and what is cached by it.

A `node_reports` entry that only renews leases is `leases_only` and changes nothing but `renewed_at`;
every other applied entry moves the layout generation. The lease monitor's allocations per node and
its "this report already agreed with the state" memory, and the dispatcher's desired sets, are kept per
layout generation: they must commit and push exactly what a monitor/dispatcher without them would.
Pure: a real state machine behind a stand-in for the Raft node (no cluster, no network).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orca import spec
from orca.master.dispatcher import Dispatcher, desired_sets
from orca.master.leases import HeartbeatBook, LeaseMonitor
from orca.master.scheduling import decide_cycle
from orca.raft import RaftNode, ReplicatedState
from orca.state.machine import encode_entry
from orca.state.ops_nodes import leases_only

NODES = ("n1", "n2", "n3")


class FakeRaft:
    """The parts of orca.raft.RaftNode the leader loops use, over a real ReplicatedState."""

    def __init__(self) -> None:
        self.store = ReplicatedState()
        self.is_leader, self.term, self.applied_index = True, 2, 0
        self.proposed: list[tuple[str, dict[str, Any]]] = []
        self.ids = itertools.count()  # allocation ids: two equal clusters make the same ones

    def read(self, fn: Any) -> Any:
        with self.store.lock:
            return fn(self.store.state)

    def read_unlocked(self, fn: Any, attempts: int = 3) -> tuple[int, Any]:
        return RaftNode.read_unlocked(self, fn, attempts)  # type: ignore[arg-type]  # it uses only .store

    def apply(self, op: str, args: dict[str, Any], now: float = 1000.0) -> dict[str, Any]:
        self.applied_index += 1
        result = self.store.apply(encode_entry(op, args, now=now), _doApply=True)
        assert "error" not in result, result
        return result

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.proposed.append((op, copy.deepcopy(args)))
        return self.apply(op, args)["result"]


def _cluster(replicas: int) -> FakeRaft:
    raft = FakeRaft()
    raft.apply("leader_elected", {"term": 2, "node": "m1"})
    for n in NODES:
        raft.apply("register_node", {"node_id": n, "address": f"http://127.0.0.1:1/{n}", "labels": {},
                                     "capacity": {"memory": 2**34, "cpu": 64.0}, "push_token": "p",
                                     "agent_version": "1"})
    s = spec.validate_service({"name": "web", "image": "img", "replicas": replicas,
                               "resources": {"memory": "16Mi", "cpu": 0.01}})
    raft.apply("deploy", {"services": [{"name": "web", "spec": s, "digest": spec.spec_digest(s)}]})
    _plan(raft)
    return raft


def _plan(raft: FakeRaft) -> None:
    c = raft.read(lambda s: decide_cycle(s, 2000.0, new_id=lambda: f"a{next(raft.ids):05d}"))
    raft.apply("plan", {"term": 2, "place": c.place, "stop": c.stop, "pending": c.pending,
                        "migrate": c.migrate, "migrated": c.migrated})


def _report(raft: FakeRaft, node: str, status: str) -> list[dict[str, Any]]:
    allocs = raft.read(lambda s: sorted(a["id"] for a in s["allocations"].values() if a["node"] == node))
    return [{"alloc": a, "service": "web", "version": 1, "container_id": f"c-{a}", "status": status,
             "health": None, "started_at": None, "restarts": 0, "reason": None, "host_port": None,
             "exit_code": None} for a in allocs]


def _without_renewals(state: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(state)
    for node in out["nodes"].values():
        node.pop("renewed_at", None)
    return out


@given(st.lists(st.tuples(st.sampled_from(NODES), st.booleans()), min_size=1, max_size=3, unique_by=lambda t: t[0]),
       st.sampled_from([None, "n1"]), st.booleans())
@settings(max_examples=60, deadline=None)
def test_a_renewal_only_entry_is_leases_only_and_changes_nothing_else(
        renewals: list[tuple[str, bool]], down: str | None, observed_first: bool) -> None:
    raft = _cluster(replicas=4)
    if observed_first:
        seen = {r["alloc"]: {k: r[k] for k in ("status", "container_id", "restarts")}
                for r in _report(raft, "n2", "running")}
        raft.apply("node_reports", {"term": 2, "nodes": {"n2": {"renewed_at": 1.0, "allocs": seen}}})
    if down is not None:
        raft.apply("node_status", {"term": 2, "node_id": down, "status": "down", "reason": "test"})
    before, layout = _without_renewals(raft.store.state), raft.store.layout_generation
    nodes = {n: {"renewed_at": 5.0, "allocs": ({} if with_allocs else None)} for n, with_allocs in renewals}
    result = raft.apply("node_reports", {"term": 2, "nodes": nodes})
    expected = not any(with_allocs for _, with_allocs in renewals) and down not in nodes
    assert leases_only(result) is expected
    assert raft.store.layout_generation == layout + (0 if expected else 1)
    if expected:
        assert _without_renewals(raft.store.state) == before
        assert all(raft.store.state["nodes"][n]["renewed_at"] == 5.0 for n in nodes)


def test_every_other_entry_and_a_snapshot_load_move_the_layout_generation() -> None:
    raft = _cluster(replicas=2)
    g = raft.store.layout_generation
    raft.apply("scale", {"name": "web", "replicas": 3})
    assert raft.store.layout_generation == g + 1
    raft.store._deserialize({"state": copy.deepcopy(raft.store.state)})
    assert raft.store.layout_generation == g + 2
    assert not leases_only({"ok": True, "result": {"renewed": 1, "back": []}}) and not leases_only(None)


STEPS = st.lists(st.one_of(
    st.tuples(st.just("beat"), st.sampled_from(NODES), st.sampled_from(["starting", "running", "failed"])),
    st.tuples(st.just("scale"), st.integers(1, 6), st.just("")),
    st.tuples(st.just("commit"), st.just(0), st.just("")),
), min_size=1, max_size=25)


@given(STEPS)
@settings(max_examples=60, deadline=None)
def test_the_lease_monitor_commits_exactly_what_an_uncached_one_would(steps: list[tuple[str, Any, str]]) -> None:
    """Two monitors on two equal states get the same heartbeats; one forgets its caches before every
    commit. Their proposed entries (and so their states) stay the same."""
    async def run() -> None:
        cached, fresh = _cluster(replicas=4), _cluster(replicas=4)
        monitors = []
        for raft in (cached, fresh):
            m = LeaseMonitor(raft, HeartbeatBook(), heartbeat_s=1.0, ttl_s=10.0)  # type: ignore[arg-type]
            m.term = 2
            monitors.append(m)
        for kind, arg, status in [*steps, ("commit", 0, "")]:
            for raft, m in zip((cached, fresh), monitors, strict=True):
                if kind == "beat":
                    m.book.record({"node_id": arg, "allocations": _report(raft, arg, status)})
                    m.book.received_at[arg] = 7.0  # the same wall time on both sides
                elif kind == "scale":
                    raft.apply("scale", {"name": "web", "replicas": arg})
                    _plan(raft)
                else:
                    if m is monitors[1]:
                        m._by_node, m._agreed = None, {}
                    await m._commit_renewals()
            assert cached.proposed == fresh.proposed
        assert _without_renewals(cached.store.state) == _without_renewals(fresh.store.state)
    asyncio.run(run())


def test_an_unchanged_report_is_compared_once_per_layout(monkeypatch: Any) -> None:
    from orca.master import leases
    calls: list[str] = []
    real = leases.allocs_changed
    monkeypatch.setattr(leases, "allocs_changed", lambda s, n, *a: calls.append(n) or real(s, n, *a))

    async def run() -> None:
        raft = _cluster(replicas=3)
        m = LeaseMonitor(raft, HeartbeatBook(), heartbeat_s=1.0, ttl_s=10.0)  # type: ignore[arg-type]
        m.term = 2
        for _ in range(3):
            m.book.record({"node_id": "n1", "allocations": _report(raft, "n1", "running")})
            await m._commit_renewals()
        assert calls == ["n1", "n1"]  # the report changed once (committed: a new layout), then agreed
        raft.apply("scale", {"name": "web", "replicas": 4})
        m.book.record({"node_id": "n1", "allocations": _report(raft, "n1", "running")})
        await m._commit_renewals()
        assert len(calls) >= 3  # a new layout: compared again
    asyncio.run(run())


def test_the_dispatchers_desired_sets_are_made_once_per_layout() -> None:
    raft = _cluster(replicas=3)
    d = Dispatcher(raft, secrets=None, ttl_s=10.0)  # type: ignore[arg-type]
    first = d._desired()
    raft.apply("node_reports", {"term": 2, "nodes": {"n1": {"renewed_at": 9.0, "allocs": None}}})
    assert d._desired() is first  # a lease renewal: the same sets
    raft.apply("scale", {"name": "web", "replicas": 5})
    _plan(raft)
    second = d._desired()
    assert second is not first
    fresh = raft.read(desired_sets)
    assert {n: [a["id"] for a in t["allocations"]] for n, t in second.sets.items()} == \
        {n: [a["id"] for a in t["allocations"]] for n, t in fresh.items()}


def test_the_store_lock_is_reentrant_for_reads_inside_apply_listeners() -> None:
    raft = _cluster(replicas=1)
    assert isinstance(raft.store.lock, type(threading.RLock()))


@given(st.lists(st.tuples(st.sampled_from(["web", "api", "db"]), st.sampled_from(["run", "migrate", "stop"]),
                          st.sampled_from([None, "running", "starting", "failed"])), max_size=30))
def test_running_replicas_counts_what_a_scan_per_service_counted(allocs: list[tuple[str, str, Any]]) -> None:
    from orca.master.traffic import running_replicas
    state = {"allocations": {f"a{i}": {"id": f"a{i}", "service": svc, "desired": desired,
                                       "observed": None if status is None else {"status": status}}
                             for i, (svc, desired, status) in enumerate(allocs)}}
    for name in ("web", "api", "db"):
        expected = sum(1 for a in state["allocations"].values()
                       if a["service"] == name and a["desired"] in ("run", "migrate")
                       and (a.get("observed") or {}).get("status") == "running")
        assert running_replicas(state).get(name, 0) == expected


class _FakeLoop:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.woken = False

    @property
    def woken_while_disabled(self) -> bool:
        return not self.enabled and self.woken

    def wake(self) -> None:
        self.woken = True


def _plane(enabled: bool) -> tuple[Any, list[Any]]:
    from orca.master.control import ControlPlane
    woken: list[Any] = []
    plane = ControlPlane.__new__(ControlPlane)
    plane._wake_pending = False
    plane.scheduler, plane.dispatcher = _FakeLoop(enabled), _FakeLoop(enabled)
    plane._loop = type("Loop", (), {"call_soon_threadsafe": lambda self, fn: woken.append(fn)})()
    return plane, woken


def test_a_lease_renewal_wakes_no_leader_loop() -> None:
    plane, woken = _plane(enabled=True)
    plane._on_applied({"ok": True, "result": {"renewed": 3, "back": [], "leases_only": True}})
    assert woken == []
    plane._on_applied({"ok": True, "result": {"renewed": 3, "back": ["n1"]}})
    assert len(woken) == 1


def test_a_follower_wakes_its_disabled_loops_once() -> None:
    """Loops that are off keep one pending wake-up (their first cycle runs as soon as they are turned
    on); further entries on a follower cost no hop to the event loop."""
    plane, woken = _plane(enabled=False)
    entry = {"ok": True, "result": {"replicas": 2}}
    plane._on_applied(entry)
    assert len(woken) == 1
    woken.pop()()  # the loop runs the wake-up: both loops now hold one
    for _ in range(5):
        plane._on_applied(entry)
    assert woken == []
    plane.scheduler.enabled = plane.dispatcher.enabled = True  # leader now: every entry wakes them
    plane._on_applied(entry)
    assert len(woken) == 1


def test_leader_loop_reports_a_pending_wake_while_disabled() -> None:
    from orca.master.loops import LeaderLoop

    async def main() -> None:
        loop = LeaderLoop.__new__(LeaderLoop)
        loop._task = None
        loop._wake = asyncio.Event()
        assert not loop.woken_while_disabled
        loop.wake()
        assert loop.woken_while_disabled
        loop._task = object()  # type: ignore[assignment]
        assert not loop.woken_while_disabled

    asyncio.run(main())


def test_each_desired_allocation_gets_the_spec_of_its_own_version() -> None:
    raft = _cluster(replicas=3)
    s = spec.validate_service({"name": "web", "image": "img:2", "replicas": 3,
                               "resources": {"memory": "16Mi", "cpu": 0.01}})
    raft.apply("deploy", {"services": [{"name": "web", "spec": s, "digest": spec.spec_digest(s)}]})
    _plan(raft)
    history = raft.read(lambda st: {h["version"]: h["spec"]["image"] for h in st["services"]["web"]["history"]})
    items = [a for t in raft.read(desired_sets).values() for a in t["allocations"]]
    assert {a["version"] for a in items} == {1, 2}
    assert all(a["spec"]["image"] == history[a["version"]] for a in items)


def test_a_push_carries_the_desired_set_as_json() -> None:
    """The dispatcher's push (body encoded by orca.master.http.dumps) to a stand-in agent on 127.0.0.1."""
    import json

    from aiohttp import web

    async def run() -> None:
        got: list[tuple[str, Any]] = []

        async def put(request: web.Request) -> web.Response:
            got.append((request.content_type, json.loads(await request.read())))
            return web.json_response({})
        app = web.Application()
        app.router.add_put("/v1/allocations", put)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            raft = _cluster(replicas=3)
            d = Dispatcher(raft, secrets=None, ttl_s=10.0)  # type: ignore[arg-type]
            d.term = 2
            target = dict(d._desired().sets["n1"], address=f"http://127.0.0.1:{port}")
            d.links["n1"] = __import__("orca.master.dispatcher", fromlist=["NodeLink"]).NodeLink()
            await d._push("n1", target, target["allocations"], "digest", 5)
            assert d.links["n1"].acked_digest == "digest" and d.push_failures_total == 0
            ctype, body = got[0]
            assert ctype == "application/json" and body["term"] == 2 and body["version"] == 5
            assert [a["id"] for a in body["allocations"]] == [a["id"] for a in target["allocations"]]
        finally:
            if d.session is not None:
                await d.session.close()
            await runner.cleanup()
    asyncio.run(run())
