"""The member list ops (orca.state.ops_members) and the quorum rule of a membership change
(orca.membership): pure code, checked exhaustively and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca.errors import Conflict
from orca.membership import check_add, check_remove, majority
from orca.state import machine

M = {f"m{i}": {"id": f"m{i}", "raft": f"127.0.0.1:{7000 + i}", "api": f"http://127.0.0.1:{8000 + i}"}
     for i in range(1, 7)}


def run(state: dict, op: str, args: dict, now: float = 1.0) -> dict:
    return machine.apply(state, machine.encode_entry(op, args, now=now))


def seeded(n: int = 3) -> dict:
    state = machine.new_state()
    assert run(state, "masters_seed", {"masters": [M[f"m{i}"] for i in range(1, n + 1)]})["ok"]
    return state


def test_seed_once_then_add_and_remove() -> None:
    state = seeded()
    assert sorted(state["masters"]) == ["m1", "m2", "m3"]
    again = run(state, "masters_seed", {"masters": [M["m4"]]})
    assert again["result"]["seeded"] is False and "m4" not in state["masters"]
    assert run(state, "master_add", M["m4"])["result"]["added"] is True
    assert run(state, "master_add", M["m4"])["result"]["added"] is False  # a retry changes nothing
    assert run(state, "master_remove", {"id": "m1"})["result"]["removed"] is True
    assert sorted(state["masters"]) == ["m2", "m3", "m4"]
    assert [e["type"] for e in state["events"]] == ["master_added", "master_removed"]


def test_refusals_leave_the_state_untouched() -> None:
    state = seeded()
    before = machine.snapshot(state)
    other_addr = {**M["m1"], "raft": "127.0.0.1:9999"}
    assert run(state, "master_add", other_addr)["error"]["code"] == "CONFLICT"
    assert run(state, "master_add", {**M["m4"], "raft": M["m2"]["raft"]})["error"]["code"] == "CONFLICT"
    assert run(state, "master_remove", {"id": "nope"})["error"]["code"] == "NOT_FOUND"
    for bad in ({"id": "", "raft": "h:1", "api": "http://x"}, {"id": "a", "raft": "nohost", "api": "http://x"},
                {"id": "a", "raft": "h:70000", "api": "http://x"}, {"id": "a", "raft": "h:1", "api": "ftp://x"},
                {"id": "a b", "raft": "h:1", "api": "http://x"}):
        assert run(state, "master_add", bad)["error"]["code"] == "VALIDATION_ERROR"
    assert state == before


def test_the_last_master_stays() -> None:
    state = seeded(1)
    assert run(state, "master_remove", {"id": "m1"})["error"]["code"] == "CONFLICT"


def test_same_entries_same_state() -> None:
    entries = [("master_add", M["m4"]), ("master_remove", {"id": "m2"}), ("master_add", M["m5"])]
    a, b = seeded(), seeded()
    for op, args in entries:
        run(a, op, args, now=5.0)
        run(b, op, args, now=5.0)
    assert a == b


@pytest.mark.parametrize(("size", "healthy", "ok"), [(1, 1, True), (3, 3, True), (3, 2, False), (4, 3, True),
                                                      (4, 2, False), (5, 3, False), (5, 4, True)])
def test_add_table(size: int, healthy: int, ok: bool) -> None:
    members = {f"m{i}" for i in range(size)}
    up = {f"m{i}" for i in range(healthy)}
    if ok:
        check_add(members, up, "new")
    else:
        with pytest.raises(Conflict) as err:
            check_add(members, up, "new")
        assert err.value.code == "QUORUM_AT_RISK" and "lose quorum" in err.value.message


def test_removing_a_dead_member_of_three_is_allowed_a_live_one_is_not() -> None:
    members = {"a", "b", "c"}
    check_remove(members, {"a", "b"}, "c")          # c is dead: 2 of 2 remain healthy
    with pytest.raises(Conflict):
        check_remove(members, {"a", "b"}, "b")      # only a would be healthy of {a, c}
    with pytest.raises(Conflict):
        check_remove({"a"}, {"a"}, "a")
    with pytest.raises(Conflict):
        check_remove(members, members, "zz")


@given(st.integers(1, 9), st.integers(0, 9), st.data())
def test_an_accepted_change_always_leaves_a_healthy_majority(size: int, up: int, data: st.DataObject) -> None:
    members = {f"m{i}" for i in range(size)}
    healthy = {f"m{i}" for i in range(min(up, size))}
    try:
        check_add(members, healthy, "new")
    except Conflict:
        assert len(healthy) < majority(size + 1)
    else:
        assert len(healthy) >= majority(size + 1) or (size == 1 and healthy)
    gone = data.draw(st.sampled_from(sorted(members)))
    try:
        check_remove(members, healthy, gone)
    except Conflict:
        assert size == 1 or len(healthy - {gone}) < majority(size - 1)
    else:
        assert len(healthy - {gone}) >= majority(size - 1)
