"""orca.master.report_cache: a heartbeat's unchanged allocation reports are taken from the cache only
when validating them again would give exactly the stored list (pure; hypothesis over JSON-like reports)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orca import protocol
from orca.master.report_cache import ReportCache

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=5), st.sampled_from(["running", "starting", "failed", "healthy", "a1"]))
FIELDS = ["alloc", "service", "version", "container_id", "status", "health", "started_at", "restarts", "reason",
          "host_port", "exit_code"]


def _valid(i: int, status: str = "running", restarts: int = 0) -> dict[str, Any]:
    return {"alloc": f"a{i}", "service": "web", "version": 1, "container_id": f"c{i}", "status": status,
            "health": None, "started_at": None, "restarts": restarts, "reason": None, "host_port": None,
            "exit_code": None}


def _validate(reports: Any) -> list[dict[str, Any]] | str:
    try:
        return protocol.validate_heartbeat({"node_id": "n1", "allocations": reports})["allocations"]
    except protocol.ProtocolError as err:
        return err.field


REPORT = st.one_of(
    st.builds(_valid, st.integers(0, 3), st.sampled_from(["running", "starting"]), st.integers(0, 2)),
    st.builds(lambda base, k, v: {**base, k: v}, st.builds(_valid, st.integers(0, 3)), st.sampled_from(FIELDS),
              SCALARS),
    st.builds(lambda base, k: {x: y for x, y in base.items() if x != k}, st.builds(_valid, st.integers(0, 3)),
              st.sampled_from(FIELDS)),
    st.builds(lambda base: dict(reversed(list(base.items()))), st.builds(_valid, st.integers(0, 3))),
)


@given(st.lists(REPORT, max_size=4))
def test_validation_is_idempotent_on_what_it_accepts(reports: list[dict[str, Any]]) -> None:
    first = _validate(reports)
    if isinstance(first, list):
        assert _validate(json.loads(json.dumps(first))) == first


@given(st.lists(REPORT, max_size=4), st.lists(REPORT, max_size=4))
@settings(max_examples=300)
def test_a_hit_is_always_what_validation_would_answer(accepted: list[dict[str, Any]],
                                                      sent: list[dict[str, Any]]) -> None:
    cache = ReportCache()
    first = _validate(accepted)
    stored = cache.store("n1", first) if isinstance(first, list) else None
    raw = json.loads(json.dumps(sent))  # what the parser hands over
    hit = cache.lookup("n1", raw)
    if hit is not None:
        assert hit is stored and _validate(raw) == first == hit.unpack()
    if isinstance(first, list):  # the accepted form sent again (what the agent sends): a hit
        assert stored is not None and cache.lookup("n1", json.loads(json.dumps(first))) is stored


def test_a_bool_or_float_where_an_integer_was_is_no_hit() -> None:
    cache = ReportCache()
    first = _validate([_valid(1, restarts=1)])
    assert isinstance(first, list)
    stored = cache.store("n1", first)
    assert cache.lookup("n1", [{**_valid(1), "restarts": True}]) is None  # True == 1, but not valid
    assert cache.lookup("n1", [{**_valid(1), "restarts": 1.0}]) is None
    assert cache.lookup("n2", [_valid(1, restarts=1)]) is None  # another node's entry is never used
    assert cache.lookup("n1", [_valid(1, restarts=1)]) is stored
    assert cache.store("n1", stored) is stored  # a hit stored again: the same pack, kept


def test_the_cache_is_bounded() -> None:
    cache = ReportCache(max_nodes=3)
    for i in range(10):
        cache.store(f"n{i}", [_valid(i)])
    assert len(cache._last) == 3 and cache.lookup("n9", [_valid(9)]) is not None
    cache.forget("n9")
    assert cache.lookup("n9", [_valid(9)]) is None


def test_a_list_that_cannot_be_packed_is_not_kept() -> None:
    cache = ReportCache()
    cache.store("n1", [_valid(1)])
    assert cache.store("n1", [{**_valid(1), "restarts": 2**70}]) is None  # past 64 bits: orjson refuses
    assert cache.lookup("n1", [_valid(1)]) is None
