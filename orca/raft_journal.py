"""PySyncObj's file journal without a second copy of every old entry in memory.

Upstream's `FileJournal` appends each entry to an mmap'd file *and* keeps it, bytes and all, in a list
until the next log compaction (every 5 minutes, or 5,000 entries): at 30,000 allocations that list held
~18 MB of a leader's memory after a deploy, and it grows by each second's lease renewals (~60 KB at
1,000 nodes) until the compaction. An entry's bytes are needed again only to send it to a follower that
lacks it, to apply it, and when a compaction or a conflict rewrites the journal's tail.

`LeanJournal` keeps the same file, in the same format, and the same list of `(command, idx, term)`; once
an entry is applied and older than the newest entries (up to KEEP_BYTES, at most KEEP_ENTRIES of them),
`release(...)` replaces its command by None, and reading it (`journal[i]`, a slice) reads the bytes back
from the file. The first two entries and the last are never released: PySyncObj reads `journal[0]`,
`journal[1]` and `journal[-1]` all the time. `entries(...)` is `SyncObj.__getEntries` (a follower far
behind gets what one message carries, read from the file, not the whole tail). Every access is in the
tick thread, as for upstream's journal. (A count of entries alone kept too much: the newest 64 held
14 MB after a deploy, whose entries are large.)
"""

from __future__ import annotations

import struct
from array import array
from typing import Any

from pysyncobj.journal import FIRST_RECORD_OFFSET, FileJournal
from pysyncobj.pickle import to_bytes

__all__ = ["LeanJournal", "KEEP_BYTES", "KEEP_ENTRIES"]

KEEP_BYTES = 256 << 10  # the newest entries within this keep their bytes in memory (sent and applied soon)
KEEP_ENTRIES = 64
_HEADER = 4 + 16  # record size, then idx and term (struct '<QQ'), then the command, then the size again

Entry = tuple[Any, int, int]


class LeanJournal(FileJournal):
    def __init__(self, journalFile: str) -> None:  # noqa: N803 - upstream's name
        super().__init__(journalFile)
        self._offsets = array("q")  # record offset in the file, per entry
        self._sizes = array("q")    # command length, per entry
        offset = FIRST_RECORD_OFFSET
        for command, _idx, _term in self._FileJournal__journal:  # bytes, as read from the file
            self._offsets.append(offset)
            self._sizes.append(len(command))
            offset += _HEADER + len(command) + 4
        self._released = 2  # entries [2, this) may have been released
        self.released_bytes = 0

    # --- what upstream's journal does, keeping offsets and sizes alongside --------------------------
    def add(self, command: Any, idx: int, term: int) -> None:
        offset = self._FileJournal__currentOffset
        super().add(command, idx, term)
        self._offsets.append(offset)
        self._sizes.append(len(to_bytes(command)))

    def clear(self) -> None:
        super().clear()
        self._offsets = array("q")
        self._sizes = array("q")
        self._released = 2

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - upstream's names
        super().deleteEntriesFrom(entryFrom)  # reads only record sizes, never the list's commands
        n = len(self._FileJournal__journal)
        del self._offsets[n:]
        del self._sizes[n:]
        self._released = max(2, min(self._released, n))

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803 - upstream's names
        keep = self[entryTo:]  # upstream re-adds the tail from its list: with the bytes, read back here
        self.clear()
        for entry in keep:
            self.add(*entry)

    def __getitem__(self, item: Any) -> Any:
        raw = self._FileJournal__journal
        if isinstance(item, slice):
            start, _, step = item.indices(len(raw))
            got = raw[item]
            if step != 1:
                return [self._full(start + k * step, e) for k, e in enumerate(got)]
            return [e if e[0] is not None else self._read(start + k, e) for k, e in enumerate(got)]
        entry = raw[item]
        if entry[0] is not None:
            return entry
        return self._read(item if item >= 0 else len(raw) + item, entry)

    # --- the lean part ------------------------------------------------------------------------------
    def entries(self, pos: int, count: int | None = None, max_bytes: int | None = None) -> list[Entry]:
        """`self[pos:pos + count]`, cut after the entry that reaches `max_bytes` of commands (as
        `SyncObj.__getEntries` cuts), reading from the file only what is returned."""
        n = len(self._FileJournal__journal)
        stop = n if count is None else min(n, pos + count)
        if max_bytes is not None and pos < stop:
            total = 0
            for i in range(pos, stop):
                total += self._sizes[i]
                if total >= max_bytes:
                    stop = i + 1
                    break
        return self[pos:stop] if pos < stop else []

    def release(self, applied_idx: int) -> None:
        """Drop from memory the bytes of every entry up to `applied_idx` (applied here) but the first
        two, the last one, and the newest ones (KEEP_BYTES, KEEP_ENTRIES)."""
        raw = self._FileJournal__journal
        n = len(raw)
        stop = min(n - 1, applied_idx - raw[0][1] + 1) if n >= 3 else 0
        if stop <= self._released:
            return
        kept, last = 0, stop
        while stop > self._released and last - stop < KEEP_ENTRIES and kept + self._sizes[stop - 1] <= KEEP_BYTES:
            stop -= 1
            kept += self._sizes[stop]
        for i in range(self._released, stop):
            entry = raw[i]
            if entry[0] is not None:
                self.released_bytes += self._sizes[i]
                raw[i] = (None, entry[1], entry[2])
        self._released = stop

    def _full(self, pos: int, entry: Entry) -> Entry:
        return entry if entry[0] is not None else self._read(pos, entry)

    def _read(self, pos: int, entry: Entry) -> Entry:
        offset, size = self._offsets[pos], self._sizes[pos]
        record = self._FileJournal__journalFile.read(offset, _HEADER + size)
        length, idx, term = struct.unpack("<IQQ", record[:_HEADER])
        if length != 16 + size or idx != entry[1] or term != entry[2]:  # never: the file is the journal
            raise RuntimeError(f"raft journal record at {offset} is not entry {entry[1]} of term {entry[2]}")
        return (record[_HEADER:], idx, term)


def create_journal(journal_file: str | None = None) -> Any:
    """`pysyncobj.journal.createJournal`, with the lean journal for a file."""
    if journal_file is None:
        from pysyncobj.journal import MemoryJournal

        return MemoryJournal()
    return LeanJournal(journal_file)
