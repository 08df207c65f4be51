"""orca.raft_journal: the lean journal reads and writes exactly what upstream's FileJournal does, whatever
it released from memory (hypothesis: random appends, releases, truncations and compactions, against a
FileJournal in another file and against the entries themselves)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj.journal import FileJournal

from orca import raft_journal
from orca.raft_journal import LeanJournal

OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.binary(max_size=300), st.integers(0, 2)),
    st.tuples(st.just("release"), st.integers(-3, 200), st.just(0)),
    st.tuples(st.just("delete_from"), st.integers(0, 200), st.just(0)),
    st.tuples(st.just("delete_to"), st.integers(0, 200), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0), st.just(0)),
), max_size=60)


def _upstream_get_entries(entries: list[Any], pos: int, count: int | None, max_bytes: int | None) -> list[Any]:
    """SyncObj.__getEntries on a plain list (pysyncobj 0.3.17)."""
    result = entries[pos:] if count is None else entries[pos:pos + count]
    if max_bytes is None:
        return result
    total, cut = 0, len(result)
    for n, entry in enumerate(result, 1):
        total += len(entry[0])
        if total >= max_bytes:
            cut = n
            break
    return result[:max(cut, 1)]


@given(OPS, st.integers(0, 700))
@settings(max_examples=150, deadline=None)
def test_the_lean_journal_is_upstreams_journal(ops: list[tuple[str, Any, int]], keep: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lean, plain = LeanJournal(f"{tmp}/lean"), FileJournal(f"{tmp}/plain")
        real_keep, raft_journal.KEEP_BYTES = raft_journal.KEEP_BYTES, keep
        try:
            model: list[tuple[bytes, int, int]] = []
            for op, arg, term_step in ops:
                if op == "add":
                    entry = (arg, (model[-1][1] + 1) if model else 1, (model[-1][2] if model else 1) + term_step)
                    model.append(entry)
                    lean.add(*entry)
                    plain.add(*entry)
                elif op == "release" and model:
                    lean.release(model[0][1] + arg)
                elif op == "delete_from" and model:
                    cut = arg % (len(model) + 1)
                    del model[cut:]
                    lean.deleteEntriesFrom(cut)
                    plain.deleteEntriesFrom(cut)
                elif op == "delete_to" and model:
                    cut = arg % (len(model) + 1)
                    del model[:cut]
                    lean.deleteEntriesTo(cut)
                    plain.deleteEntriesTo(cut)
                elif op == "reopen":
                    lean._destroy()
                    lean = LeanJournal(f"{tmp}/lean")
                    lean.release(10**6)
                assert len(lean) == len(plain) == len(model)
                assert [lean[i] for i in range(len(model))] == model == [plain[i] for i in range(len(model))]
                assert lean[:] == model and lean[1:] == model[1:] and lean[::2] == model[::2]
                if model:
                    assert lean[-1] == model[-1] and lean[-len(model)] == model[0]
                for pos in (0, len(model) // 2, len(model)):
                    for count in (None, 1, 3):
                        for max_bytes in (None, 1, 200, 10**6):
                            assert lean.entries(pos, count, max_bytes) == _upstream_get_entries(model, pos, count,
                                                                                                max_bytes)
            lean._destroy()
            assert [(c, i, t) for c, i, t in LeanJournal(f"{tmp}/lean")[:]] == model  # the file: upstream's format
            assert FileJournal(f"{tmp}/lean")[:] == model
        finally:
            raft_journal.KEEP_BYTES = real_keep
            plain._destroy()


def test_released_entries_leave_memory_but_the_first_two_the_last_and_the_newest_few_stay(tmp_path: Path) -> None:
    journal = LeanJournal(str(tmp_path / "j"))
    try:
        for i in range(1, 401):
            journal.add(bytes([i % 256]) * 100_000, i, 1)  # 100 kB entries: the newest 2 fit KEEP_BYTES
        journal.release(150)  # applied up to 150: entries 3..148 go (150 and 149 are the newest kept)
        raw = journal._FileJournal__journal
        assert [e[0] is None for e in raw[:152]] == [False, False] + [True] * 146 + [False] * 4
        assert journal.released_bytes == 146 * 100_000
        journal.release(10**6)  # everything applied
        assert [i for i, e in enumerate(raw) if e[0] is not None] == [0, 1, 397, 398, 399]
        assert journal[5] == (bytes([6]) * 100_000, 6, 1) and raw[5][0] is None  # read back, not kept again
        for i in range(401, 1001):
            journal.add(b"s", i, 1)  # small entries: at most KEEP_ENTRIES of them stay
        journal.release(10**6)
        assert sum(e[0] is not None for e in raw) == 2 + 1 + raft_journal.KEEP_ENTRIES
    finally:
        journal._destroy()


def test_masters_use_the_lean_journal() -> None:
    import pysyncobj.syncobj

    import orca.raft  # noqa: F401 - installs it

    assert pysyncobj.syncobj.createJournal is raft_journal.create_journal
    assert type(raft_journal.create_journal(None)).__name__ == "MemoryJournal"
