"""Bounded input: the central JSON reader, bounded numbers, strict query parameters, the agent protocol.

Every byte from the network goes through orca.bounds / orca.master.http.read_json / orca.protocol; these
tests generate hostile input for each and check that the only failure is a 400/413 with the envelope.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orca import bounds, protocol
from orca.agent.agent import Agent
from orca.agent.api import make_agent_api
from orca.agent.runtime import FakeRuntime
from orca.errors import OrcaError
from orca.master.http import error_response, read_json
from tests.unit.test_agent_api import assert_envelope, bearer, make_config

DEEP = b"[" * 100_000 + b"]" * 100_000

json_leaf = st.none() | st.booleans() | st.integers(-bounds.MAX_INT, bounds.MAX_INT) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_doc = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


def depth(doc: Any) -> int:
    if isinstance(doc, dict):
        return 1 + max((depth(v) for v in doc.values()), default=0)
    if isinstance(doc, list):
        return 1 + max((depth(v) for v in doc), default=0)
    return 0


# -- orca.bounds -------------------------------------------------------------------------------------


@given(json_doc)
def test_loads_round_trips_every_document_within_bounds(doc: Any) -> None:
    raw = json.dumps(doc)
    if depth(doc) <= bounds.MAX_JSON_DEPTH:
        assert bounds.loads(raw) == json.loads(raw)
    else:
        with pytest.raises(bounds.BoundsError):
            bounds.loads(raw)


@pytest.mark.parametrize("raw", [
    DEEP, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 33 + b"]" * 33,
    b'{"n": 18446744073709551616}', b'{"n": -9007199254740993}', b'{"n": ' + b"9" * 5000 + b"}",
    b'{"x": 1e999}', b'{"x": -1e400}', b'{"x": NaN}', b'{"x": Infinity}', b'[-Infinity]',
    b"\xff\xfe", b"{", b'{"a": 1,}', b"",
])
def test_loads_refuses_with_a_bounds_error(raw: bytes) -> None:
    with pytest.raises(bounds.BoundsError) as info:
        bounds.loads(raw)
    assert info.value.status == 400 and info.value.code == "VALIDATION_ERROR"
    assert info.value.details == {"field": "body"}


@given(st.text(max_size=40))
def test_query_int_is_an_integer_in_range_or_a_400(raw: str) -> None:
    try:
        value = bounds.query_int(raw, "q", 7, 0, 10_000)
    except bounds.BoundsError as err:
        assert err.status == 400 and err.details == {"field": "q"}
        return
    assert 0 <= value <= 10_000
    assert raw == "" and value == 7 or raw.isascii() and int(raw) == value


@pytest.mark.parametrize("raw", ["5" * 5000, "٣", "²", "1_000", " 1", "1 ", "+1", "0x10", "1e3", "١٢"])
def test_query_int_accepts_only_ascii_digits(raw: str) -> None:
    with pytest.raises(bounds.BoundsError):
        bounds.query_int(raw, "since", 0, 0, bounds.MAX_INT)


@given(st.one_of(json_leaf, st.integers(), st.floats(), st.text(max_size=3)))
def test_bounded_number_and_int_never_raise_anything_else(value: Any) -> None:
    for check in (lambda v: bounds.bounded_int(v, "f", 0, 100), lambda v: bounds.bounded_number(v, "f", 0.5, 64.0)):
        try:
            out = check(value)
        except bounds.BoundsError:
            continue
        assert isinstance(out, int | float) and not isinstance(out, bool) and math.isfinite(out)


# -- the one HTTP reader -----------------------------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    try:
        return web.json_response(await read_json(request))
    except OrcaError as err:
        return error_response(err, request)


@pytest.fixture
async def echo(aiohttp_client: Any) -> Any:
    app = web.Application(client_max_size=1024)
    app.router.add_post("/echo", _echo)
    return await aiohttp_client(app)


async def test_chunked_body_over_the_limit_is_413(echo: Any) -> None:
    async def chunks() -> Any:
        for _ in range(64):
            yield b" " * 100
    resp = await echo.post("/echo", data=chunks())  # no Content-Length: Transfer-Encoding chunked
    assert resp.status == 413
    assert_envelope(await resp.json(), "PAYLOAD_TOO_LARGE")
    resp = await echo.post("/echo", data=b" " * 2000)
    assert resp.status == 413


async def test_chunked_body_within_the_limit_is_read(echo: Any) -> None:
    async def chunks() -> Any:
        yield b'{"a": '
        yield b"[1, 2]}"
    resp = await echo.post("/echo", data=chunks())
    assert resp.status == 200 and await resp.json() == {"a": [1, 2]}


@pytest.mark.parametrize("raw", [b"[" * 500 + b"]" * 500, b'{"n": 18446744073709551616}', b"[]", b"12", b"{x"])
async def test_bad_bodies_are_400_with_the_envelope(echo: Any, raw: bytes) -> None:
    resp = await echo.post("/echo", data=raw)
    assert resp.status == 400
    assert_envelope(await resp.json(), "VALIDATION_ERROR")


async def test_deep_push_to_the_agent_api_is_400(aiohttp_client: Any, tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path), FakeRuntime("worker-1"))
    client = await aiohttp_client(make_agent_api(agent))
    for raw in (DEEP, b'{"term": 18446744073709551616, "version": 1, "allocations": []}'):
        resp = await client.put("/v1/allocations", data=raw, headers=bearer(agent))
        assert resp.status == 400
        assert_envelope(await resp.json(), "VALIDATION_ERROR")
    for tail in ("5" * 5000, "٣", "-1"):
        resp = await client.get(f"/v1/logs/a1?tail={tail}", headers=bearer(agent))
        assert resp.status == 400
    assert agent.store.term == 0


# -- orca.protocol -----------------------------------------------------------------------------------


def heartbeat(**kw: Any) -> dict[str, Any]:
    return {"node_id": "w1", "seq": 1, "allocations": [], "applied": {"term": 1, "version": 1}, **kw}


@pytest.mark.parametrize("msg", [
    heartbeat(seq=2**64), heartbeat(applied={"term": 2**64}),
    heartbeat(allocations=[{"alloc": "a", "service": "s", "version": 2**64, "status": "running"}]),
    heartbeat(allocations=[{"alloc": "a", "service": "s", "version": 1, "status": "running", "host_port": 70000}]),
    heartbeat(stats={"a1": {"cpu_pct": "high"}}), heartbeat(stats={"a1": {"cpu_pct": 1e300}}),
    heartbeat(stats={"a1": {"cpu_pct": -1}}), heartbeat(stats={"a1": 3}), heartbeat(stats=[1]),
    heartbeat(stats={f"a{i}": {} for i in range(protocol.MAX_STATS + 1)}),
    heartbeat(proxy={"web": {"requests": "many"}}), heartbeat(proxy={"web": {"requests": 2**64}}),
    heartbeat(proxy={"web": {"latency_buckets": [1] * 20}}), heartbeat(proxy={"web": {"latency_buckets": ["x"]}}),
    heartbeat(proxy={"web": {"latency_sum_ms": float("nan")}}), heartbeat(proxy={"x" * 200: {}}),
    heartbeat(proxy={"web": {"replicas": {"a1": {"active": True}}}}), heartbeat(proxy={"web": []}),
    heartbeat(allocations=[{}] * (protocol.MAX_ALLOCS + 1)),
])
def test_heartbeat_numbers_and_maps_are_bounded(msg: dict[str, Any]) -> None:
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.validate_heartbeat(msg)
    assert info.value.status == 400 and info.value.field


def test_heartbeat_output_is_a_normalized_copy() -> None:
    hb = protocol.validate_heartbeat(heartbeat(
        stats={"a1": {"cpu_pct": 12, "mem_pct": None, "extra": "dropped"}},
        proxy={"web": {"requests": 5, "errors": 1, "active": 0, "latency_buckets": [1, 2], "latency_sum_ms": 3,
                       "replicas": {"a1": {"requests": 5}}, "extra": [1]}}))
    assert hb["stats"] == {"a1": {"cpu_pct": 12.0, "mem_pct": None}}
    assert hb["proxy"] == {"web": {"requests": 5, "errors": 1, "active": 0, "latency_buckets": [1, 2],
                                   "latency_sum_ms": 3.0,
                                   "replicas": {"a1": {"requests": 5, "errors": 0, "active": 0}}}}


@pytest.mark.parametrize("cap", [{"memory": 2**70, "cpu": 1}, {"memory": 1, "cpu": 1e30}, {"memory": 0, "cpu": 1},
                                 {"memory": 1, "cpu": 0}, {"memory": "1", "cpu": 1}, {"memory": 1, "cpu": True}])
def test_register_capacity_is_bounded(cap: dict[str, Any]) -> None:
    msg = {"node_id": "w1", "address": "http://127.0.0.1:1", "capacity": cap, "push_token": "t"}
    with pytest.raises(protocol.ProtocolError):
        protocol.validate_register(msg)


hostile = st.recursive(json_leaf | st.integers() | st.floats(), lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["cpu_pct", "mem_pct", "requests", "errors", "active",
                                                         "latency_buckets", "latency_sum_ms", "replicas", "a1",
                                                         "web", "x"]), inner, max_size=4), max_leaves=20)


def _numbers(doc: Any) -> Any:
    if isinstance(doc, dict):
        for v in doc.values():
            yield from _numbers(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _numbers(v)
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        yield doc


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(stats=hostile, proxy=hostile)
def test_generated_heartbeat_maps_are_refused_or_fully_bounded(stats: Any, proxy: Any) -> None:
    try:
        hb = protocol.validate_heartbeat(heartbeat(stats=stats, proxy=proxy))
    except protocol.ProtocolError:
        return
    for n in _numbers([hb["stats"], hb["proxy"]]):
        assert math.isfinite(n) and 0 <= n <= bounds.MAX_INT


# -- the orjson fast path of bounds.loads gives the standard library's answers --------------------------

wide_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
wide_doc = st.recursive(wide_leaf, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=40)


def _outcome(fn: Any, raw: bytes) -> Any:
    try:
        return ("ok", fn(raw))
    except bounds.BoundsError as err:
        return ("error", err.field)


@settings(max_examples=300)
@given(wide_doc, st.integers(1, 40))
def test_fast_path_accepts_and_refuses_what_the_standard_library_does(doc: Any, max_depth: int) -> None:
    raw = json.dumps(doc).encode()  # NaN/Infinity and integers past 2**53 included: all refused
    fast = _outcome(lambda r: bounds.loads(r, max_depth), raw)
    slow = _outcome(lambda r: bounds._loads_stdlib(r, max_depth, "body"), raw)
    if fast[0] == "ok" and slow[0] == "ok":
        assert json.dumps(fast[1]) == json.dumps(slow[1])  # same values (NaN-free, so == on the text)
    else:
        assert fast == slow


@pytest.mark.parametrize("raw", [b'{"n": 18446744073709551616}', b'[-18446744073709551616]', b'[9223372036854775808]',
                                 b'\xef\xbb\xbf{"a": 1}', b'"\\ud800"', b'{"a": 1, "a": 2}', b'[1e308, -0, 0.1]',
                                 b'\x00{\x00}', b'[' * 40 + b']' * 40])
def test_fast_path_edge_cases_match(raw: bytes) -> None:
    slow = _outcome(lambda r: bounds._loads_stdlib(r, bounds.MAX_JSON_DEPTH, "body"), raw)
    assert _outcome(bounds.loads, raw) == slow


def test_json_response_is_compact_utf8_json_as_before() -> None:
    import datetime as dt

    from orca.master.http import dumps, json_response

    body = {"a": [1, 2.5, None, True], "é": "ü", 3: "int key", "t": dt.datetime(2024, 1, 2, 3, 4, 5)}
    assert json.loads(dumps(body)) == json.loads(json.dumps(body, separators=(",", ":"), default=str))
    assert json.loads(dumps({"big": 2**70})) == {"big": 2**70}  # past orjson's range: the standard library
    resp = json_response({"ok": True})
    assert resp.content_type == "application/json" and resp.charset == "utf-8"
