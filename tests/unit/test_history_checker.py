"""The chaos checker on hand-made histories: what must pass, and each way a history must fail."""

from __future__ import annotations

import threading

import pytest

from tests.chaos.history import History, Op, applied_counts, check, diverged


def write(h: History, process: str, key: str, t0: float, t1: float | None, outcome: str = "ok",
          scope: str | None = None) -> Op:
    op = h.invoke(process, "write", key, scope=scope, at=t0)
    if outcome == "ok":
        h.ok(op, at=t1)
    elif outcome == "fail":
        h.fail(op, "INVALID_SPEC", at=t1)
    elif outcome == "unknown":
        h.unknown(op, "timeout", at=t1)
    return op


def read(h: History, process: str, key: str, value: object, t0: float, t1: float,
         linearizable: bool = False) -> Op:
    op = h.invoke(process, "read", key, linearizable=linearizable, at=t0)
    h.ok(op, value, at=t1)
    return op


def test_every_acked_write_present_once_passes() -> None:
    h = History()
    write(h, "c1", "a", 0, 1)
    write(h, "c2", "b", 0.5, 1.5)
    verdict = check(h, {"a": 1, "b": 1})
    assert verdict.ok, verdict
    assert (verdict.acked, verdict.unknown, verdict.failed) == (2, 0, 0)


def test_acked_write_missing_is_lost() -> None:
    h = History()
    write(h, "c1", "a", 0, 1)
    write(h, "c1", "b", 1, 2)
    verdict = check(h, {"a": 1})
    assert not verdict.ok and verdict.lost == ["b"]
    assert "lost=1" in str(verdict)


def test_acked_write_applied_twice_is_duplicated() -> None:
    h = History()
    write(h, "c1", "a", 0, 1)
    verdict = check(h, {"a": 2})
    assert not verdict.ok and verdict.duplicated == {"a": 2}


def test_unknown_and_failed_writes_may_be_absent_or_present_once() -> None:
    h = History()
    write(h, "c1", "u1", 0, 3, "unknown")
    write(h, "c1", "u2", 3, 6, "unknown")
    write(h, "c2", "f1", 0, 1, "fail")
    write(h, "c2", "p", 1, None, "pending")  # never completed: counts as unknown
    verdict = check(h, {"u1": 1, "p": 1})
    assert verdict.ok, verdict
    assert (verdict.acked, verdict.unknown, verdict.failed) == (0, 3, 1)


def test_unknown_write_applied_twice_is_still_a_duplicate() -> None:
    h = History()
    write(h, "c1", "u", 0, 3, "unknown")
    assert check(h, {"u": 2}).duplicated == {"u": 2}


def test_state_nobody_wrote_is_a_phantom() -> None:
    h = History()
    write(h, "c1", "a", 0, 1)
    verdict = check(h, {"a": 1, "ghost": 1})
    assert not verdict.ok and verdict.phantoms == ["ghost"]


def test_reads_per_client_that_grow_pass() -> None:
    h = History()
    read(h, "c1", "applied_index", 5, 0, 1)
    read(h, "c1", "applied_index", 5, 1, 2)
    read(h, "c1", "applied_index", 9, 2, 3)
    read(h, "c1", "names", frozenset({"a"}), 0, 1)
    read(h, "c1", "names", frozenset({"a", "b"}), 1, 2)
    assert check(h, {}).ok


def test_read_going_backwards_fails() -> None:
    h = History()
    read(h, "c1", "applied_index", 10, 0, 1)
    read(h, "c1", "applied_index", 7, 2, 3)
    verdict = check(h, {})
    assert not verdict.ok and len(verdict.backwards_reads) == 1
    assert "7" in verdict.backwards_reads[0] and "10" in verdict.backwards_reads[0]


def test_set_read_losing_an_item_goes_backwards() -> None:
    h = History()
    read(h, "c1", "names", frozenset({"a", "b"}), 0, 1)
    read(h, "c1", "names", frozenset({"a", "c"}), 2, 3)  # larger, but "b" vanished
    assert len(check(h, {}).backwards_reads) == 1


def test_backwards_is_judged_against_every_earlier_read_not_only_the_last() -> None:
    h = History()
    read(h, "c1", "applied_index", 10, 0, 1)
    read(h, "c1", "applied_index", 12, 1, 2)
    read(h, "c1", "applied_index", 11, 3, 4)  # below 12
    assert len(check(h, {}).backwards_reads) == 1


def test_overlapping_reads_are_not_ordered() -> None:
    h = History()
    read(h, "c1", "applied_index", 10, 0, 5)
    read(h, "c1", "applied_index", 7, 1, 2)  # began before the first completed: either order is legal
    assert check(h, {}).ok


def test_different_clients_and_keys_are_independent() -> None:
    h = History()
    read(h, "c1", "applied_index", 10, 0, 1)
    read(h, "c2", "applied_index", 3, 2, 3)   # another client may read a lagging master
    read(h, "c1", "other", 1, 2, 3)
    assert check(h, {}).ok


def test_failed_reads_are_ignored() -> None:
    h = History()
    read(h, "c1", "applied_index", 10, 0, 1)
    op = h.invoke("c1", "read", "applied_index", at=2)
    h.fail(op, "CLUSTER_NOT_READY", at=3)
    assert check(h, {}).ok


def test_linearizable_read_must_see_writes_acked_before_it() -> None:
    h = History()
    write(h, "c1", "a", 0, 1, scope="p1")
    write(h, "c1", "b", 1, 2, scope="p1")
    write(h, "c2", "x", 0, 1, scope="p2")
    read(h, "c1", "p1", frozenset({"a"}), 3, 4, linearizable=True)
    verdict = check(h, {"a": 1, "b": 1, "x": 1})
    assert not verdict.ok and len(verdict.stale_reads) == 1 and "'b'" in verdict.stale_reads[0]


def test_linearizable_read_need_not_see_concurrent_or_unknown_writes() -> None:
    h = History()
    write(h, "c1", "a", 0, 1, scope="p1")
    write(h, "c1", "b", 2, 5, scope="p1")            # acked after the read began: concurrent
    write(h, "c2", "c", 0, 1, "unknown", scope="p1")  # unknown: not required
    read(h, "c1", "p1", frozenset({"a"}), 3, 4, linearizable=True)
    read(h, "c3", "p1", frozenset({"a"}), 0.5, 4)    # a local (non-linearizable) read may lag
    assert check(h, {"a": 1, "b": 1}).ok


def test_recorder_is_thread_safe_and_refuses_a_second_completion() -> None:
    h = History()

    def client(n: int) -> None:
        for i in range(200):
            h.ok(h.invoke(f"c{n}", "write", f"{n}-{i}"))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = h.ops()
    assert len(ops) == 1600 and len({o.id for o in ops}) == 1600
    assert all(o.outcome == "ok" and o.complete is not None and o.complete >= o.invoke for o in ops)
    with pytest.raises(ValueError):
        h.fail(ops[0], "late")
    with pytest.raises(ValueError):
        h.invoke("c1", "delete", "x")


def test_applied_counts_uses_versions_events_and_keys() -> None:
    services = [{"name": "a", "version": 1}, {"name": "b", "version": 2}, {"name": "other", "version": 5}]
    assert applied_counts(services, keys=["a", "b", "c"]) == {"a": 1, "b": 2}
    # a same-attempt double apply leaves version 1 but shows as a second deploy event
    assert applied_counts(services, {"a": 2, "b": 1}, keys=["a", "b"]) == {"a": 2, "b": 2}
    assert applied_counts([{"name": "a"}]) == {"a": 1}


def test_diverged_names_what_differs() -> None:
    same = {"m1": {"a": 1}, "m2": {"a": 1}, "m3": {"a": 1}}
    assert diverged(same) == []
    out = diverged({"m1": {"a": 1, "b": 1}, "m2": {"a": 2}, "m3": {"a": 1, "b": 1}})
    assert len(out) == 1 and out[0].startswith("m2 vs m1") and "'b'" in out[0] and "'a'" in out[0]
    assert diverged({"m1": 10, "m2": 11}) == ["m2 vs m1: 11 != 10"]
