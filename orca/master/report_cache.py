"""Heartbeat allocation reports that did not change since a node's last heartbeat are not validated again.

At 1,000 nodes of 30 replicas the leader validates 30,000 reports a second (orca.protocol), nearly all
of them the same as one second before. Per node this keeps a digest of the validated list as JSON and
the list itself: a new report list whose JSON is byte for byte that digest's is the same document
(same keys in the same order, same values and JSON types), so validating it again would give the same
list (validation returns what it accepts unchanged: a test checks that it is idempotent). The stored
list object is handed back, so `HeartbeatBook.record` sees it unchanged at once. Anything else (a
change, another key order, a value orjson will not encode) is validated as before.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson

__all__ = ["ReportCache"]


def _digest(reports: Any) -> bytes | None:
    try:
        return hashlib.blake2b(orjson.dumps(reports), digest_size=16).digest()
    except (TypeError, orjson.JSONEncodeError):
        return None


class ReportCache:
    """node id -> (digest, validated reports) of its last accepted heartbeat; at most `max_nodes` nodes."""

    def __init__(self, max_nodes: int = 10_000) -> None:
        self.max_nodes = max_nodes
        self._last: OrderedDict[str, tuple[bytes, list[dict[str, Any]]]] = OrderedDict()
        self.hits = 0

    def lookup(self, node_id: Any, raw_reports: Any) -> list[dict[str, Any]] | None:
        """The node's stored validated list when `raw_reports` is the same document, else None."""
        if not isinstance(node_id, str) or not isinstance(raw_reports, list):
            return None
        last = self._last.get(node_id)
        if last is None or _digest(raw_reports) != last[0]:
            return None
        self.hits += 1
        return last[1]

    def store(self, node_id: str, validated: list[dict[str, Any]]) -> None:
        """Remember a heartbeat's validated reports (call only once the node is authorised and known)."""
        if self._last.get(node_id, (b"", None))[1] is validated:
            return
        digest = _digest(validated)
        if digest is None:
            self._last.pop(node_id, None)
            return
        self._last[node_id] = (digest, validated)
        self._last.move_to_end(node_id)
        while len(self._last) > self.max_nodes:
            self._last.popitem(last=False)

    def forget(self, node_id: str) -> None:
        self._last.pop(node_id, None)
