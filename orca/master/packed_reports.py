"""A node's validated allocation reports, kept packed (compressed JSON) while nobody reads them.

The leader keeps every node's latest reports (the heartbeat book, the report cache): at 1,000 nodes of 30
replicas that was 30,000 report dicts of 11 keys, ~30 MB of the leader's memory, held only to be compared
with the state when a node's report or the allocations change (orca.master.leases). Packed they are the
reports' JSON (orjson) compressed with zlib at its fastest level, ~1 KB per node of 30 replicas, and
unpacked on demand; at steady state (the same reports every second, no layout change) nothing unpacks them.

Round trip: validated reports are str, int and None values in dicts in a list (orca.protocol), which JSON
gives back exactly, keys in the same order. `pack` answers None for anything orjson cannot encode
(an integer past 64 bits, a non-str key): the caller keeps such a list as it is.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import orjson

__all__ = ["PackedReports", "digest_of", "unpacked"]


def digest_of(blob: bytes) -> bytes:
    """The digest a report list is known by: of its JSON as orjson writes it."""
    return hashlib.blake2b(blob, digest_size=16).digest()


class PackedReports:
    """Immutable; equal packs hold the same reports in the same order. Compare by `digest`."""

    __slots__ = ("_zipped", "count", "digest")

    def __init__(self, blob: bytes, count: int) -> None:
        self._zipped = zlib.compress(blob, 1)
        self.digest = digest_of(blob)
        self.count = count

    @classmethod
    def pack(cls, reports: list[dict[str, Any]]) -> PackedReports | None:
        """The packed form of `reports`, or None when they are not plain JSON data."""
        try:
            return cls(orjson.dumps(reports), len(reports))
        except (TypeError, orjson.JSONEncodeError):
            return None

    def unpack(self) -> list[dict[str, Any]]:
        """A fresh list of fresh dicts, equal to what was packed (the caller may keep or change it)."""
        return orjson.loads(zlib.decompress(self._zipped))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedReports):
            return self.digest == other.digest
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"PackedReports({self.count} reports, {len(self._zipped)} bytes)"


def unpacked(reports: PackedReports | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The report list, whichever form it is held in (a list stays as it is)."""
    if reports is None:
        return []
    return reports.unpack() if isinstance(reports, PackedReports) else reports
