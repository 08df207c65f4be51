"""Durable acknowledgements: a write is acknowledged only once its entry is on disk on a majority.

PySyncObj's journal (`pysyncobj.journal.FileJournal`) appends entries to an mmap'd file and never calls
msync or fsync while running (measured with strace: 0 fsync/fdatasync/msync calls over a write load, on
leader and followers): an acknowledged entry can sit only in the page cache for up to
`vm.dirty_expire_centisecs` (30 s by default), and a power loss of every master in that window loses it
although the client was told it committed. Raft's safety argument assumes the opposite: a member
persists an entry before it counts towards the commit.

With `durable=True` (orca's default, `raft.fsync = true`):

- a follower flushes its journal (fdatasync of the journal file; see `durable_flush`) before it tells
  the leader an append succeeded (`next_node_idx` with success), so an entry counts towards the
  commit only once that follower has it on disk. Its success answers wait until the end of the tick
  (`durable_answer`): every append that arrived in one poll then shares one flush, and consecutive
  successes to the same leader go as one answer, the latest (it vouches for everything before it);
  under a write load a follower synced and answered once per pipelined batch, one after the other;
- the leader flushes its journal before it acknowledges a write to the client (the commit callback in
  `orca.raft`, in the tick thread). It flushes first at the end of the tick that appended the entries
  (`durable_tick`, after they were sent, before the tick waits for answers): its own disk sync then runs
  while the followers do theirs, and the acknowledgement's flush finds nothing left to do. Flushing only
  at the commit put the leader's sync after the followers', two disk syncs in a row on every write's
  path (measured: 2-5 ms of a 15-25 ms write under load, raft_writes.py).

At acknowledgement the entry is then on disk on the leader and on the follower(s) whose answers made
the commit: a majority. After a power loss of every master, any master that lacks it cannot win an
election against that majority's votes (Raft's up-to-date rule), so it survives. One flush covers a
whole group-commit batch, and a flush is skipped when nothing was appended since the last one.

Not covered (upstream behaviour, documented): the term/vote metadata file and the log-compaction
snapshot are replaced without fsync; a power loss just after a compaction can still lose state.

`durable=False` restores upstream's behaviour (kill -9 safe, not power-loss safe) for throughput.

Memory: PySyncObj keeps every journal entry twice, as bytes in a list and in the mmap'd file, and the
file's pages stay mapped into the process once written: they count in its RSS (~18 MB of a leader's at
30,000 allocations). Once a flush made them durable, the whole pages written since the last flush are
unmapped from the process (`madvise(MADV_DONTNEED)`: the file and the page cache keep them, a later read
of the mapping faults them back in from there). PySyncObj reads the mapping only when it opens the
journal and when it truncates it.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from typing import Any

from pysyncobj import SyncObj

__all__ = ["DurabilityMixin"]

log = logging.getLogger("orca.raft")

SLOW_FLUSH_S = 0.1  # a flush slower than this is logged (at most once per 10 s)


class DurabilityMixin:
    """Mixed into orca's `SyncObj` subclass (before `SyncObj`); `_durability_init` before `SyncObj.__init__`."""

    def _durability_init(self, durable: bool) -> None:
        self.durable = durable
        self.flushes = 0
        self.flush_seconds = 0.0
        self._flushed_offset: int | None = None
        self._released_to = 0  # journal bytes [0, this) already unmapped from the process (page-aligned)
        self._slow_logged = 0.0
        self._answers: list[tuple[Any, int]] = []  # (leader node, next index): successes not sent yet

    def durable_flush(self) -> None:
        """Make every appended journal entry durable (tick thread only: the journal's mmap is resized
        there). A no-op when durability is off, the journal is in memory, or nothing was appended."""
        if not self.durable:
            return
        journal = self._SyncObj__raftLog
        flush = getattr(journal, "flush", None)
        if flush is None:
            return
        offset = getattr(journal, "_FileJournal__currentOffset", None)
        if offset is not None and offset == self._flushed_offset:
            return
        started = time.monotonic()
        fd = _journal_fd(journal)
        if fd is not None:
            os.fdatasync(fd)
        else:
            flush()
        took = time.monotonic() - started
        self.flushes += 1
        self.flush_seconds += took
        self._flushed_offset = offset
        if offset is not None:
            self._released_to = _release_pages(journal, self._released_to, offset)
        if took > SLOW_FLUSH_S and started - self._slow_logged > 10.0:
            self._slow_logged = started
            log.warning("raft journal flush took %.0f ms (slow disk: it delays this master's Raft work; "
                        "raft.fsync = false trades power-loss safety for speed)", took * 1000)

    def durable_tick(self) -> None:
        """A tick callback (PySyncObj runs them after the tick appended and sent new entries, before it
        polls for answers): the leader flushes what it appended in this tick. A no-op elsewhere (a
        follower flushes before it answers an append) and when nothing was appended."""
        if self.durable and self._isLeader():  # type: ignore[attr-defined]
            self.durable_flush()

    # "Nothing appended since the last flush" is judged by the journal's end offset. A truncation, a
    # compaction or a snapshot install rewrites the journal and could bring the end back to the offset of
    # the last flush with other, unsynced entries before it: after those the next flush always syncs.
    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:  # noqa: N802, N803 - upstream's names
        self._flushed_offset = None
        self._released_to = 0
        SyncObj._SyncObj__deleteEntriesFrom(self, fromIDx)  # type: ignore[attr-defined]

    def _SyncObj__deleteEntriesTo(self, toIDx: int) -> None:  # noqa: N802, N803 - upstream's names
        self._flushed_offset = None
        self._released_to = 0
        SyncObj._SyncObj__deleteEntriesTo(self, toIDx)  # type: ignore[attr-defined]

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:  # noqa: N802, N803 - upstream's names
        self._flushed_offset = None
        SyncObj._SyncObj__loadDumpFile(self, clearJournal)  # type: ignore[attr-defined]
        self._flushed_offset = None
        self._released_to = 0

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False, nextNodeIdx: Any = None,  # noqa: N802, N803
                                  success: bool = False) -> None:
        """Upstream's follower answer to append_entries (name-mangled). With durability on, a success is
        held until `durable_answer` (end of the tick: one flush for every append of the poll, then the
        answer); any other answer first sends the successes held before it, so the leader sees the
        answers in the order they were given."""
        if success and self.durable and not reset:
            if nextNodeIdx is None:
                nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1  # type: ignore[attr-defined]
            self._answers = hold_answer(self._answers, node, nextNodeIdx)
            return
        self.durable_answer()
        SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)

    def durable_answer(self) -> None:
        """Tick thread, at the end of every tick (and before any other answer): flush the journal once,
        then send the success answers held since the last call."""
        if not self._answers:
            return
        answers, self._answers = self._answers, []
        self.durable_flush()
        for node, next_index in answers:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, nextNodeIdx=next_index, success=True)  # type: ignore[attr-defined]


def hold_answer(held: list[tuple[Any, int]], node: Any, next_index: int) -> list[tuple[Any, int]]:
    """`held` with one more success answer to `node`: a success right after another to the same node
    replaces it (the later one vouches for every entry the earlier did; the leader only ever moves its
    match index forward), anything else is kept in order."""
    if held and held[-1][0] == node:
        return [*held[:-1], (node, max(held[-1][1], next_index))]
    return [*held, (node, next_index)]


def _journal_fd(journal: Any) -> int | None:
    """The file descriptor of PySyncObj's journal file, or None (then its own `flush` is used).

    Why not `journal.flush()`: it is `mmap.flush()`, i.e. msync(MS_SYNC), which CPython 3.11 calls
    *holding the GIL*: every flush froze the whole master, event loop included, for the length of a disk
    sync (35% of the leader's GIL time under a write load, measured with py-spy --gil). On Linux,
    msync(MS_SYNC) of a shared file mapping is `vfs_fsync_range(file, range, datasync=1)`, and the mapping
    covers the whole file, so `os.fdatasync` of the same file is the same flush, and it releases the GIL.
    Only the tick thread calls this, and only it replaces the file (when the journal grows), so the fd is
    not closed under us.
    """
    if not hasattr(os, "fdatasync"):
        return None
    resizable = getattr(journal, "_FileJournal__journalFile", None)
    f = getattr(resizable, "_ResizableFile__f", None)
    try:
        return int(f.fileno()) if f is not None and not f.closed else None
    except (AttributeError, ValueError, OSError):
        return None


def _release_pages(journal: Any, start: int, end: int) -> int:
    """Unmap the journal's whole pages in [start, end) (`end`: bytes durable on disk) from the process;
    the new `start`. Only for a journal flushed up to `end`: the pages are clean, the file holds them."""
    resizable = getattr(journal, "_FileJournal__journalFile", None)
    mm = getattr(resizable, "_ResizableFile__mm", None)
    stop = end - end % mmap.PAGESIZE  # the last, partial page is written again by the next entry
    if mm is None or not hasattr(mmap, "MADV_DONTNEED") or stop <= start:
        return start
    try:
        stop = min(stop, len(mm) - len(mm) % mmap.PAGESIZE)
        if stop > start:
            mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
    except (OSError, ValueError):  # a closed or replaced mapping: the next flush starts over
        return start
    return max(start, stop)
