"""Blocking queries (`?index=N&wait=D`, orca.master.blocking) and `GET /api/v1/top`, against the real
`MasterApi` routes over HTTP, with a stand-in for the Raft node that applies real state-machine entries
in another thread and calls the apply listeners from there, as PySyncObj's tick thread does (the index
is counted only after apply returns, as PySyncObj counts it).

No timed assertions: a wait's end is asserted by the index and the content of the answer, and "still
waiting" by the request not having completed while the test holds the next write back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from orca import auth, spec
from orca.errors import Invalid, NotReady
from orca.master import blocking
from orca.master.api import MasterApi, MasterInfo
from orca.master.api_traffic import TrafficEndpoints
from orca.master.api_workers import WorkerEndpoints
from orca.master.http import error_response
from orca.master.leases import HeartbeatBook
from orca.master.secrets import SecretBox
from orca.master.traffic import SampleRing, ServiceSample, TrafficBook
from orca.state import machine

KEY = b"k" * 32
# The auth middleware keeps the claims under a str key (request["claims"]), which aiohttp warns about.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


class FakeRaft:
    """What MasterApi reads of a RaftNode, around a real state; `apply` runs entries in another thread."""

    def __init__(self) -> None:
        self.state = machine.new_state()
        self.lock = threading.RLock()
        self.store = SimpleNamespace(applied_listeners=[], generation=0, layout_generation=0)
        self.applied_index = 1
        self.halted: dict[str, Any] | None = None
        self.leader_id: str | None = "m1"
        self.leader_contact_age = 0.0
        self.is_leader = True
        self.settings = SimpleNamespace(listen="127.0.0.1:2")

    def read(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        with self.lock:
            return fn(self.state)

    def _apply(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            result = machine.apply(self.state, machine.encode_entry(op, args, now=time.time(), actor="t"),
                                   self.applied_index + 1)
            self.store.layout_generation += 1  # as orca.raft.ReplicatedState: the status pages' index follows it
        for listener in list(self.store.applied_listeners):
            listener(result)
        self.applied_index += 1  # PySyncObj counts the entry after apply (and its listeners) returned
        return result

    async def apply(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._apply, op, args)


def deploy_args(*names: str, image: str = "img:1", project: str = "default") -> dict[str, Any]:
    items = []
    for n in names:
        s = spec.validate_service({"name": n, "image": image, "replicas": 1, "project": project})
        items.append({"name": n, "spec": s, "digest": spec.spec_digest(s)})
    return {"services": items}


@pytest.fixture
async def master() -> AsyncIterator[SimpleNamespace]:
    raft = FakeRaft()
    info = MasterInfo(node_id="m1", api_urls={"m1": "http://127.0.0.1:1"}, raft_addrs={}, signing_key=KEY,
                      max_body_bytes=1 << 20, rate_limit_per_minute=100000, rate_limit_burst=100000)
    api = MasterApi(raft=raft, leadership=None, info=info)  # type: ignore[arg-type]
    api.extra_routes.append(WorkerEndpoints(api, HeartbeatBook(), SecretBox(b"s" * 32), 1.0, 5.0).add_routes)
    traffic = TrafficBook()
    decisions: dict[str, dict[str, Any]] = {}
    api.extra_routes.append(TrafficEndpoints(api, traffic, decisions).add_routes)
    token, _ = auth.mint_token(KEY, role="viewer", name="watcher", now=time.time())
    client = TestClient(TestServer(api.build_app()), headers={"Authorization": f"Bearer {token}"})
    await client.start_server()
    try:
        yield SimpleNamespace(raft=raft, api=api, client=client, traffic=traffic, decisions=decisions)
    finally:
        await client.close()


async def get(m: SimpleNamespace, path: str) -> tuple[int, int | None, Any]:
    resp = await m.client.get(path)
    header = resp.headers.get("X-Orca-Applied-Index")
    return resp.status, int(header) if header is not None else None, await resp.json()


async def until_waiting(m: SimpleNamespace, count: int = 1) -> None:
    """Until `count` requests wait on the master (bounded: 10 s)."""
    for _ in range(1000):
        if m.api._watch is not None and m.api._watch.waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the request never started waiting")


# ---------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("query", "expected"), [
    ({}, None),
    ({"index": ""}, None),
    ({"index": "7"}, blocking.BlockingQuery(7, blocking.DEFAULT_WAIT_S)),
    ({"index": "0", "wait": "30s"}, blocking.BlockingQuery(0, 30.0)),
    ({"index": "5", "wait": "1.5m"}, blocking.BlockingQuery(5, 90.0)),
    ({"index": "5", "wait": "500ms"}, blocking.BlockingQuery(5, 0.5)),
    ({"index": "5", "wait": "10"}, blocking.BlockingQuery(5, 10.0)),
    ({"index": "5", "wait": "5m"}, blocking.BlockingQuery(5, 300.0)),
    ({"index": "5", "wait": "0s"}, blocking.BlockingQuery(5, 0.0)),
])
def test_parse_accepts(query: dict[str, str], expected: blocking.BlockingQuery | None) -> None:
    assert blocking.parse(query) == expected


@pytest.mark.parametrize("query", [
    {"index": "abc"}, {"index": "-1"}, {"index": "1e3"}, {"index": "99999999999999999"}, {"index": "\u0661"},
    {"index": "1", "wait": "5m1s"}, {"index": "1", "wait": "301s"}, {"index": "1", "wait": "1h"},
    {"index": "1", "wait": "-1s"}, {"index": "1", "wait": "s"}, {"index": "1", "wait": "1.2345s"},
    {"index": "1", "wait": "\u0661s"}, {"wait": "30s"},
])
def test_parse_refuses_with_a_validation_error(query: dict[str, str]) -> None:
    with pytest.raises(Invalid) as info:
        blocking.parse(query)
    assert info.value.status == 400 and info.value.details["field"] in ("index", "wait")


@given(st.dictionaries(st.sampled_from(["index", "wait", "other"]), st.text(max_size=24)))
def test_parse_never_fails_otherwise_and_stays_in_bounds(query: dict[str, str]) -> None:
    try:
        parsed = blocking.parse(query)
    except Invalid:
        return
    if parsed is not None:
        assert 0 <= parsed.index <= 2**53 and 0.0 <= parsed.wait_s <= blocking.MAX_WAIT_S


# ---------------------------------------------------------------------- the routes


async def test_an_ordinary_read_answers_at_once_with_its_index(master: SimpleNamespace) -> None:
    await master.raft.apply("deploy", deploy_args("web"))
    status, index, body = await get(master, "/api/v1/status")
    assert status == 200 and index == master.raft.applied_index == 2
    assert [s["name"] for s in body["services"]] == ["web"]


async def test_a_write_ends_the_wait_with_the_new_state(master: SimpleNamespace) -> None:
    _, index, _ = await get(master, "/api/v1/status")
    waiting = asyncio.ensure_future(get(master, f"/api/v1/status?index={index}&wait=60s"))
    await until_waiting(master)
    assert not waiting.done()
    await master.raft.apply("deploy", deploy_args("web"))
    status, new_index, body = await asyncio.wait_for(waiting, 30)
    assert status == 200 and new_index is not None and index is not None and new_index > index
    assert [s["name"] for s in body["services"]] == ["web"]


async def test_nothing_new_answers_at_the_wait_with_the_same_index(master: SimpleNamespace) -> None:
    _, index, before = await get(master, "/api/v1/cluster/nodes")
    status, same, body = await get(master, f"/api/v1/cluster/nodes?index={index}&wait=200ms")
    assert (status, same, body) == (200, index, before)


async def test_a_write_that_does_not_change_the_answer_does_not_end_the_wait(master: SimpleNamespace) -> None:
    """Watching project a: a deploy to project b moves the index but not the answer (as the lease
    renewals of every heartbeat do); the deploy to project a then ends the wait."""
    _, index, _ = await get(master, "/api/v1/status?project=a")
    waiting = asyncio.ensure_future(get(master, f"/api/v1/status?project=a&index={index}&wait=60s"))
    await until_waiting(master)
    await master.raft.apply("deploy", deploy_args("other", project="b"))
    await asyncio.sleep(0.2)  # the wake-up ran; the answer is unchanged, so the request still waits
    assert not waiting.done() and master.api._watch.waiting == 1
    await master.raft.apply("deploy", deploy_args("web", project="a"))
    status, new_index, body = await asyncio.wait_for(waiting, 30)
    assert status == 200 and new_index == index + 2 and [s["name"] for s in body["services"]] == ["web"]


async def test_an_index_behind_answers_at_once_and_one_ahead_waits_for_it(master: SimpleNamespace) -> None:
    await master.raft.apply("deploy", deploy_args("web"))
    await master.raft.apply("deploy", deploy_args("api"))
    status, index, _ = await get(master, "/api/v1/events?index=1&wait=60s")  # behind: at once
    assert status == 200 and index == 3
    ahead = asyncio.ensure_future(get(master, "/api/v1/events?index=4&wait=60s"))  # a master further along
    await until_waiting(master)
    await master.raft.apply("deploy", deploy_args("db"))  # index 4: not past 4 yet
    await asyncio.sleep(0.2)
    assert not ahead.done()
    await master.raft.apply("deploy", deploy_args("cache"))  # index 5
    status, index, body = await asyncio.wait_for(ahead, 30)
    assert status == 200 and index == 5
    assert [e["service"] for e in body["events"] if e["type"] == "service_deployed"] == ["web", "api", "db", "cache"]


async def test_service_and_node_reads_block_and_an_error_is_an_answer(master: SimpleNamespace) -> None:
    """A watch of a service that does not exist yet ends when it is created; one of a node ends at the wait."""
    status, index, body = await get(master, "/api/v1/services/web")
    assert status == 404 and body["code"] == "SERVICE_NOT_FOUND"
    index = master.raft.applied_index
    waiting = asyncio.ensure_future(get(master, f"/api/v1/services/web?index={index}&wait=60s"))
    await until_waiting(master)
    await master.raft.apply("deploy", deploy_args("web"))
    status, new_index, body = await asyncio.wait_for(waiting, 30)
    assert status == 200 and body["name"] == "web" and new_index == index + 1
    status, _, body = await get(master, f"/api/v1/cluster/nodes/n1?index={new_index}&wait=100ms")
    assert status == 404 and body["code"] == "NODE_NOT_FOUND"


@pytest.mark.parametrize("query", ["index=abc", "index=-1", "index=1&wait=1h", "index=1&wait=soon", "wait=30s",
                                   "index=99999999999999999999"])
async def test_bad_parameters_are_a_400_envelope(master: SimpleNamespace, query: str) -> None:
    for path in ("/api/v1/status", "/api/v1/services/web", "/api/v1/cluster/nodes", "/api/v1/events"):
        resp = await master.client.get(f"{path}?{query}")
        body = await resp.json()
        assert resp.status == 400 and body["code"] == "VALIDATION_ERROR", (path, query, body)
        assert body["details"]["field"] in ("index", "wait")


async def test_past_the_waiter_bound_a_blocking_query_answers_at_once(master: SimpleNamespace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocking, "MAX_WAITERS", 0)
    _, index, _ = await get(master, "/api/v1/status")
    status, same, _ = await asyncio.wait_for(get(master, f"/api/v1/status?index={index}&wait=5m"), 30)
    assert (status, same) == (200, index)


async def test_a_master_that_stopped_applying_answers_503_after_the_wait(master: SimpleNamespace) -> None:
    _, index, _ = await get(master, "/api/v1/status")
    waiting = asyncio.ensure_future(master.client.get(f"/api/v1/status?index={index}&wait=60s"))
    await until_waiting(master)
    master.raft.halted = {"index": 9, "reason": "newer schema"}
    await master.raft.apply("deploy", deploy_args("web"))
    resp = await asyncio.wait_for(waiting, 30)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["code"] == "CLUSTER_NOT_READY"


async def test_shutting_down_answers_the_waiting_requests(master: SimpleNamespace) -> None:
    _, index, before = await get(master, "/api/v1/status")
    waiting = asyncio.ensure_future(get(master, f"/api/v1/status?index={index}&wait=5m"))
    await until_waiting(master)
    await master.api._release_waiters(master.client.app)  # what the app's on_shutdown runs
    assert await asyncio.wait_for(waiting, 30) == (200, index, before)
    assert await asyncio.wait_for(get(master, f"/api/v1/status?index={index}&wait=5m"), 30) == (200, index, before)


async def test_blocking_queries_stay_out_of_the_latency_histogram(master: SimpleNamespace) -> None:
    def observed() -> float:
        return sum(s.value for metric in master.api.metrics.api_latency.collect() for s in metric.samples
                   if s.name.endswith("_count") and s.labels.get("route") == "/api/v1/status")

    await get(master, "/api/v1/status")
    _, index, _ = await get(master, "/api/v1/status")
    assert observed() == 2
    await get(master, f"/api/v1/status?index={index}&wait=50ms")
    assert observed() == 2


def test_cluster_not_ready_carries_retry_after() -> None:
    assert error_response(NotReady("no leader")).headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(Invalid("bad")).headers


# ---------------------------------------------------------------------- GET /api/v1/top


async def test_top_is_one_answer_with_policies_and_samples(master: SimpleNamespace) -> None:
    args = deploy_args("web", "api")
    args["services"][0]["spec"]["scaling"] = policy = spec.validate_scaling(
        {"mode": "auto", "min_replicas": 1, "max_replicas": 4, "target_rps_per_replica": 50})
    args["services"][0]["digest"] = spec.spec_digest(args["services"][0]["spec"])
    await master.raft.apply("deploy", args)
    await master.raft.apply("deploy", deploy_args("db", project="data"))
    master.traffic.samples["web"] = ring = SampleRing(10)
    ring.append(ServiceSample(at=1.0, replicas=1, rps=12.5, error_rate=0.01, p95_ms=20.0, active=1, cpu_pct=3.0,
                              mem_pct=4.0))
    master.decisions["web"] = {"action": "hold"}
    resp = await master.client.get("/api/v1/top")
    body = await resp.json()
    assert resp.status == 200 and body["metrics_error"] is None and body["metrics_source"] == "m1"
    rows = {r["name"]: r for r in body["services"]}
    assert set(rows) == {"web", "api", "db"}
    assert rows["web"]["scaling"] == policy and rows["api"]["scaling"] is None
    assert rows["web"]["metrics"]["rps"] == 12.5 and rows["api"]["metrics"] is None
    assert rows["web"]["autoscaler"] == {"action": "hold"} and rows["web"]["replicas"] == 1
    resp = await master.client.get("/api/v1/top?project=data")
    assert [r["name"] for r in (await resp.json())["services"]] == ["db"]
    resp = await master.client.get("/api/v1/top?project=" + "x" * 300)
    assert resp.status == 400 and (await resp.json())["code"] == "VALIDATION_ERROR"


async def test_top_on_a_follower_without_a_leader_still_shows_the_services(master: SimpleNamespace) -> None:
    await master.raft.apply("deploy", deploy_args("web"))
    master.raft.is_leader = False
    master.raft.leader_id = None
    resp = await master.client.get("/api/v1/top")
    body = await resp.json()
    assert resp.status == 200 and body["metrics_source"] is None and "leader" in body["metrics_error"]
    assert [(r["name"], r["metrics"]) for r in body["services"]] == [("web", None)]
