"""orca.master.packed_reports: a packed report list unpacks to exactly the validated list (pure)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orca import protocol
from orca.master.leases import HeartbeatBook
from orca.master.packed_reports import PackedReports, unpacked

TEXT = st.one_of(st.none(), st.text(max_size=8))
REPORT = st.fixed_dictionaries({
    "alloc": st.text(min_size=1, max_size=8), "service": st.text(min_size=1, max_size=8),
    "version": st.integers(0, 2**40), "container_id": TEXT, "status": st.sampled_from(protocol.ALLOC_STATUSES),
    "health": st.sampled_from([None, *protocol.HEALTH_STATES]), "started_at": TEXT,
    "restarts": st.integers(0, 100), "reason": TEXT, "host_port": st.one_of(st.none(), st.integers(1, 65535)),
    "exit_code": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
})


def _validated(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return protocol.validate_heartbeat({"node_id": "n1", "allocations": reports})["allocations"]


@given(st.lists(REPORT, max_size=30))
def test_unpack_gives_the_validated_list_back(reports: list[dict[str, Any]]) -> None:
    validated = _validated(json.loads(json.dumps(reports)))
    packed = PackedReports.pack(validated)
    assert packed is not None and packed.count == len(validated)
    back = packed.unpack()
    assert back == validated and [list(r) for r in back] == [list(r) for r in validated]  # key order too
    assert back is not packed.unpack()  # a fresh list every time: a caller may change it
    assert PackedReports.pack(back) == packed and hash(PackedReports.pack(back)) == hash(packed)


def test_packs_differ_when_the_reports_do() -> None:
    one = _validated([{"alloc": "a1", "service": "web", "version": 1, "status": "running"}])
    two = [{**one[0], "restarts": 1}]
    assert PackedReports.pack(one) != PackedReports.pack(two)
    assert PackedReports.pack([{"a": 2**70}]) is None  # not plain JSON data: the caller keeps the list
    assert unpacked(None) == [] and unpacked(one) is one


def test_the_book_keeps_reports_packed_and_an_equal_report_keeps_the_stored_pack() -> None:
    book = HeartbeatBook()
    reports = _validated([{"alloc": "a1", "service": "web", "version": 1, "status": "running"}])
    book.record({"node_id": "n1", "allocations": reports})
    first = book.reports["n1"]
    assert isinstance(first, PackedReports) and first.unpack() == reports and book.changed
    book.changed = False
    book.record({"node_id": "n1", "allocations": json.loads(json.dumps(reports))})
    assert book.reports["n1"] is first and not book.changed  # the lease monitor knows it by identity
    book.record({"node_id": "n1", "allocations": [{**reports[0], "status": "failed"}]})
    assert book.reports["n1"] is not first and book.changed
    garbage = [{"alloc": "a1", "n": 2**70}]
    book.record({"node_id": "n2", "allocations": garbage})
    assert book.reports["n2"] is garbage  # cannot be packed: kept as it is
