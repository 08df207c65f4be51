"""Durable acknowledgements (orca.raft_durability) on three real in-process members with file journals:
with durability on, the leader and the followers flush their journals as writes commit (once per batch
at most), and a write is acknowledged only after the leader's flush; off, nothing is flushed (PySyncObj
as shipped)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.journal import FileJournal

from orca.devcluster import free_ports
from orca.raft import _SyncObj
from orca.raft_transport import GuardedTransport, TransportLimits


class _Counter(SyncObjConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @replicated
    def add(self, n: int) -> int:
        self.value += n
        return self.value


def test_upstream_internals_we_rely_on_exist() -> None:
    assert callable(getattr(SyncObj, "_SyncObj__sendNextNodeIdx", None))
    assert callable(getattr(FileJournal, "flush", None))


@pytest.fixture(params=[True, False], ids=["durable", "upstream"])
def trio(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[Any], bool]]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    nodes = []
    for i, me in enumerate(addrs):
        conf = SyncObjConf(password="pw", bindAddress=me, appendEntriesUseBatch=False, raftMinTimeout=0.3,
                           raftMaxTimeout=0.6, appendEntriesPeriod=0.05, connectionTimeout=1e6,
                           connectionRetryTime=0.1, journalFile=str(tmp_path / f"n{i}.journal"),
                           fullDumpFile=str(tmp_path / f"n{i}.dump"))
        counter = _Counter()
        node = _SyncObj(me, [a for a in addrs if a != me], conf=conf, consumers=[counter],
                        transportClass=functools.partial(GuardedTransport, limits=TransportLimits()),
                        durable=request.param)
        node.test_counter = counter
        nodes.append(node)
    try:
        deadline = time.monotonic() + 20
        while not (sum(n._isLeader() for n in nodes) == 1 and all(n._getLeader() for n in nodes)):
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.02)
        yield nodes, request.param
    finally:
        for n in nodes:
            n.destroy()


def test_journals_are_flushed_before_acknowledgement(trio: Any) -> None:
    nodes, durable = trio
    leader = next(n for n in nodes if n._isLeader())
    before = {id(n): n.flushes for n in nodes}
    flushed_at_ack: list[int] = []
    done = threading.Event()

    def acked(result: Any, err: Any) -> None:
        # orca.raft flushes in the commit callback, before handing the acknowledgement on
        leader.durable_flush()
        flushed_at_ack.append(leader.flushes)
        done.set()

    for _ in range(20):
        done.clear()
        leader.test_counter.add(1, callback=acked)
        assert done.wait(5)
    deadline = time.monotonic() + 5
    while any(n.test_counter.value != 20 for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.02)
    flushed = {id(n): n.flushes - before[id(n)] for n in nodes}
    if durable:
        assert all(f >= 1 for f in flushed.values()), flushed
        assert all(f <= 2 * 20 + 5 for f in flushed.values()), flushed  # per batch, not per byte
        assert all(f > 0 for f in flushed_at_ack)
        count = leader.flushes
        leader.durable_flush()  # nothing appended since: no flush
        assert leader.flushes == count
    else:
        assert all(f == 0 for f in flushed.values()), flushed


def test_flush_is_fdatasync_of_the_journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flush goes through os.fdatasync on the journal's own file (it releases the GIL; the mmap's
    msync does not), and grows with the journal: after a resize the new file is the one synced."""
    import os

    from orca import raft_durability

    path = tmp_path / "n.journal"
    journal = FileJournal(str(path))
    try:
        synced: list[int] = []
        real = os.fdatasync
        monkeypatch.setattr(raft_durability.os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])

        class Node(raft_durability.DurabilityMixin):
            _SyncObj__raftLog = journal

        node = Node()
        node._durability_init(True)
        for i in range(1, 200):  # well past the initial 1 KiB: the file is extended and reopened
            journal.add(b"x" * 100, i, 1)
            node.durable_flush()
        assert node.flushes == len(synced) == 199
        fd = raft_durability._journal_fd(journal)
        assert fd is not None and os.fstat(fd).st_ino == path.stat().st_ino
        assert synced[-1] == fd
        node.durable_flush()  # nothing appended since the last flush: no sync
        assert len(synced) == 199
    finally:
        journal._destroy()


def test_journal_fd_of_something_else_is_none() -> None:
    from orca import raft_durability

    assert raft_durability._journal_fd(object()) is None


def test_leader_flushes_in_the_tick_that_appended(trio: Any) -> None:
    """The leader syncs its journal right after sending the entries (its sync overlaps the followers'),
    so by the commit callback the entry is already on disk and the acknowledgement's flush is a no-op."""
    nodes, durable = trio
    leader = next(n for n in nodes if n._isLeader())
    seen: list[tuple[int, bool]] = []
    done = threading.Event()

    def acked(result: Any, err: Any) -> None:
        offset = leader._SyncObj__raftLog._FileJournal__currentOffset
        seen.append((leader.flushes, offset == leader._flushed_offset))
        done.set()

    for _ in range(10):
        done.clear()
        leader.test_counter.add(1, callback=acked)
        assert done.wait(5)
    if durable:
        assert all(already for _, already in seen), seen
        assert all(flushes > 0 for flushes, _ in seen), seen
    else:
        assert all(flushes == 0 for flushes, _ in seen), seen


def test_followers_apply_every_entry_of_a_pipelined_burst(trio: Any) -> None:
    """The leader skips the extra commit notice while later entries are on their way (orca.raft): the
    followers still learn every commit, from the next append or once the pipeline drains."""
    nodes, _durable = trio
    leader = next(n for n in nodes if n._isLeader())
    acked = threading.Semaphore(0)
    for _ in range(200):
        leader.test_counter.add(1, callback=lambda result, err: acked.release())
    for _ in range(200):
        assert acked.acquire(timeout=10)
    deadline = time.monotonic() + 10
    while any(n.test_counter.value != 200 for n in nodes):
        assert time.monotonic() < deadline, [n.test_counter.value for n in nodes]
        time.sleep(0.01)
    assert all(n.raftLastApplied == leader.raftLastApplied for n in nodes)


def test_a_rewritten_journal_is_always_synced_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncation that ends the journal at the last flush's offset again, with other entries before it,
    is synced anyway: the offset alone does not prove those entries are on disk."""
    from orca import raft_durability

    journal = FileJournal(str(tmp_path / "n.journal"))
    try:
        synced: list[int] = []
        monkeypatch.setattr(raft_durability.os, "fdatasync", lambda fd: synced.append(fd))

        class Node(raft_durability.DurabilityMixin, SyncObj):
            _SyncObj__raftLog = journal

            def __init__(self) -> None:  # no SyncObj.__init__: only the journal is used
                self._durability_init(True)

        node = Node()
        for i in range(1, 4):
            journal.add(b"a" * 10, i, 1)
        node.durable_flush()
        assert len(synced) == 1
        flushed_at = journal._FileJournal__currentOffset
        node._SyncObj__deleteEntriesFrom(3)  # entry 3 of term 1 conflicts: replaced by one of term 2
        journal.add(b"b" * 10, 3, 2)
        assert journal._FileJournal__currentOffset == flushed_at  # the same end, other bytes before it
        node.durable_flush()
        assert len(synced) == 2
        node.durable_flush()
        assert len(synced) == 2
    finally:
        journal._destroy()


def test_hold_answer_keeps_the_latest_success_per_run_of_one_node() -> None:
    from orca.raft_durability import hold_answer

    held = hold_answer([], "a", 5)
    held = hold_answer(held, "a", 9)
    assert held == [("a", 9)]
    held = hold_answer(held, "a", 7)  # a resent, older range: the answer never moves back
    assert held == [("a", 9)]
    held = hold_answer(held, "b", 3)
    held = hold_answer(held, "a", 12)
    assert held == [("a", 9), ("b", 3), ("a", 12)]


def test_follower_successes_wait_for_one_flush_and_other_answers_keep_their_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower holds its success answers until the end of the tick: the appends of one poll share one
    flush, the answer goes only after it, and a rejection sends the held successes first."""
    from orca import raft_durability

    journal = FileJournal(str(tmp_path / "n.journal"))
    try:
        events: list[Any] = []
        monkeypatch.setattr(raft_durability.os, "fdatasync", lambda fd: events.append("sync"))
        monkeypatch.setattr(SyncObj, "_SyncObj__sendNextNodeIdx",
                            lambda self, node, reset=False, nextNodeIdx=None, success=False:
                            events.append((node, nextNodeIdx, success, reset)))

        class Node(raft_durability.DurabilityMixin, SyncObj):
            _SyncObj__raftLog = journal

            def __init__(self) -> None:  # no SyncObj.__init__: only the journal is used
                self._durability_init(True)

        node = Node()
        for i in range(1, 4):  # three appends arrive in one poll
            journal.add(b"a" * 10, i, 1)
            node._SyncObj__sendNextNodeIdx("leader", nextNodeIdx=i + 1, success=True)
        assert events == []
        node.durable_answer()
        assert events == ["sync", ("leader", 4, True, False)]
        node.durable_answer()  # nothing held: nothing sent, no sync
        assert len(events) == 2
        journal.add(b"a" * 10, 4, 1)
        node._SyncObj__sendNextNodeIdx("leader", nextNodeIdx=5, success=True)
        node._SyncObj__sendNextNodeIdx("leader", nextNodeIdx=3, success=False, reset=True)
        assert events[2:] == ["sync", ("leader", 5, True, False), ("leader", 3, False, True)]
    finally:
        journal._destroy()


def _mapped_kb(path: Path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc only")
def test_flushed_journal_pages_leave_the_process_and_read_back_intact(tmp_path: Path) -> None:
    """Once flushed, the journal's whole pages are unmapped from the process (its RSS), not lost: the
    file holds every entry, read back by a new journal and by upstream's truncation (which reads the
    mapping)."""
    from orca import raft_durability

    path = tmp_path / "n.journal"
    journal = FileJournal(str(path))
    try:
        class Node(raft_durability.DurabilityMixin, SyncObj):
            _SyncObj__raftLog = journal

            def __init__(self) -> None:  # no SyncObj.__init__: only the journal is used
                self._durability_init(True)

        node = Node()
        entries = [(bytes([i % 251]) * 3000, i, 1) for i in range(1, 400)]  # ~1.2 MB
        for i, entry in enumerate(entries):
            journal.add(*entry)
            if i % 50 == 0:
                node.durable_flush()
        node.durable_flush()
        assert node._released_to % 4096 == 0 and node._released_to > 1_000_000
        assert _mapped_kb(path) <= 2 * 4096 // 1024  # at most the last, partial page (and the header's)
        node._SyncObj__deleteEntriesFrom(300)  # reads record sizes back through the mapping
        assert node._released_to == 0
        journal.add(b"new", 300, 2)
        node.durable_flush()
    finally:
        journal._destroy()
    again = FileJournal(str(path))
    try:
        assert [again[i] for i in range(len(again))] == [*entries[:299], (b"new", 300, 2)]
    finally:
        again._destroy()
