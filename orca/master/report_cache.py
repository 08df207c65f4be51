"""Heartbeat allocation reports that did not change since a node's last heartbeat are not validated again.

At 1,000 nodes of 30 replicas the leader validates 30,000 reports a second (orca.protocol), nearly all
of them the same as one second before. Per node this keeps the validated list packed
(orca.master.packed_reports), known by a digest of its JSON: a new report list whose JSON is byte for
byte that digest's is the same document (same keys in the same order, same values and JSON types), so
validating it again would give the same list (validation returns what it accepts unchanged: a test checks
that it is idempotent). The stored pack is handed back, so `HeartbeatBook.record` sees it unchanged at
once. Anything else (a change, another key order, a value orjson will not encode) is validated as before.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from orca.master.packed_reports import PackedReports, digest_of

__all__ = ["ReportCache"]


def _digest(reports: Any) -> bytes | None:
    try:
        return digest_of(orjson.dumps(reports))
    except (TypeError, orjson.JSONEncodeError):
        return None


class ReportCache:
    """node id -> the packed reports of its last accepted heartbeat; at most `max_nodes` nodes."""

    def __init__(self, max_nodes: int = 10_000) -> None:
        self.max_nodes = max_nodes
        self._last: OrderedDict[str, PackedReports] = OrderedDict()
        self.hits = 0

    def lookup(self, node_id: Any, raw_reports: Any) -> PackedReports | None:
        """The node's stored reports when `raw_reports` is the same document, else None."""
        if not isinstance(node_id, str) or not isinstance(raw_reports, list):
            return None
        last = self._last.get(node_id)
        if last is None or _digest(raw_reports) != last.digest:
            return None
        self.hits += 1
        return last

    def store(self, node_id: str, validated: list[dict[str, Any]] | PackedReports) -> PackedReports | None:
        """Remember a heartbeat's validated reports (call only once the node is authorised and known);
        the packed form kept, or None when they cannot be packed (then nothing is kept for the node)."""
        last = self._last.get(node_id)
        if last is not None and last is validated:
            return last
        packed = validated if isinstance(validated, PackedReports) else PackedReports.pack(validated)
        if packed is None:
            self._last.pop(node_id, None)
            return None
        self._last[node_id] = packed
        self._last.move_to_end(node_id)
        while len(self._last) > self.max_nodes:
            self._last.popitem(last=False)
        return packed

    def forget(self, node_id: str) -> None:
        self._last.pop(node_id, None)
