"""The backup file of a cluster (`orca snapshot save/inspect/restore`): format, checksum, decoding.

    ORCA-SNAPSHOT 1\\n
    {"format": 1, "schema_version": 1, "index": ..., "term": ..., "created_at": ..., "sha256": ...,
     "body_bytes": ..., "state_bytes": ..., "counts": {...}, "orca_version": ...}\\n
    <body: zlib(msgpack(state))>

The header is one JSON line so that `head -2 FILE` tells what a file is without orca. The body is the
whole replicated state as msgpack (the same encoding as the log entries, so it outlives code versions),
compressed; `sha256` covers the body exactly as stored. Secrets stay sealed with the cluster secret
(a restore needs a cluster started with the same secret), token records are records (never tokens).

Pure functions, no I/O: the master builds and the state machine decodes with them (deterministically:
zlib and msgpack give every master the same state from the same bytes).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

import msgpack

__all__ = ["MAGIC", "FORMAT", "SnapshotError", "encode", "pack_state", "build", "parse", "check_header",
           "decode_body", "counts",
           "MAX_STATE_BYTES", "HEADER_MAX", "EXCLUDED_KEYS"]

MAGIC = b"ORCA-SNAPSHOT 1\n"
FORMAT = 1
HEADER_MAX = 64 << 10
MAX_STATE_BYTES = 2 << 30  # a decompressed state above this is refused (a zip bomb, not a cluster)
# Not part of a backup: a restore in progress (its staged chunks).
EXCLUDED_KEYS = frozenset({"restore"})


class SnapshotError(ValueError):
    """The bytes are not a valid orca snapshot (wrong magic, bad header, checksum mismatch, ...)."""


def counts(state: dict[str, Any]) -> dict[str, int]:
    """How many of each thing the state holds: what `inspect` shows and what restore reports."""
    return {k: len(state.get(k) or ()) for k in ("services", "allocations", "nodes", "tokens", "secrets",
                                                  "webhooks", "events")}


def pack_state(state: dict[str, Any]) -> bytes:
    """The state as msgpack (call under the state lock: it reads every table)."""
    return msgpack.packb({k: v for k, v in state.items() if k not in EXCLUDED_KEYS}, use_bin_type=True)


def build(raw: bytes, *, index: int, term: int, schema_version: int, created_at: float, orca_version: str,
          leader: str | None = None, table_counts: dict[str, int] | None = None) -> bytes:
    """The file's bytes from a packed state (no lock needed: `raw` is already a copy). `table_counts`:
    `counts(state)` taken with the pack (else the packed state is decoded again to count)."""
    body = zlib.compress(raw, 6)
    header = {"format": FORMAT, "schema_version": int(schema_version), "index": int(index), "term": int(term),
              "created_at": float(created_at), "leader": leader, "orca_version": orca_version,
              "sha256": hashlib.sha256(body).hexdigest(), "body_bytes": len(body), "state_bytes": len(raw),
              "counts": table_counts if table_counts is not None
              else counts(msgpack.unpackb(raw, raw=False, strict_map_key=False))}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body


def encode(state: dict[str, Any], **meta: Any) -> bytes:
    """`build(pack_state(state), **meta)`: the file's bytes for `state` in one call."""
    return build(pack_state(state), **meta)


def parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, body) of a snapshot file, the body's length and checksum verified."""
    if not data.startswith(MAGIC):
        raise SnapshotError("not an orca snapshot (the first line is not 'ORCA-SNAPSHOT 1')")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + HEADER_MAX)
    if end < 0:
        raise SnapshotError("snapshot header missing or too long")
    try:
        header = json.loads(data[len(MAGIC):end])
    except ValueError as exc:
        raise SnapshotError(f"snapshot header is not JSON: {exc}") from None
    check_header(header)
    body = data[end + 1:]
    if len(body) != header["body_bytes"]:
        raise SnapshotError(f"snapshot truncated: body has {len(body)} bytes, the header says "
                            f"{header['body_bytes']}")
    if hashlib.sha256(body).hexdigest() != header["sha256"]:
        raise SnapshotError("snapshot checksum mismatch: the file is corrupt")
    return header, body


def check_header(header: Any) -> dict[str, Any]:
    """The header's shape (types and bounds), as the API checks it before a restore begins."""
    if not isinstance(header, dict):
        raise SnapshotError("snapshot header must be an object")
    if header.get("format") != FORMAT:
        raise SnapshotError(f"unsupported snapshot format {header.get('format')!r} (this orca reads {FORMAT})")
    for key in ("schema_version", "index", "term", "body_bytes", "state_bytes"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_STATE_BYTES:
            raise SnapshotError(f"snapshot header: {key} must be an integer from 0 to {MAX_STATE_BYTES}")
    sha = header.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise SnapshotError("snapshot header: sha256 must be 64 lowercase hex digits")
    return header


def decode_body(body: bytes, state_bytes: int) -> dict[str, Any]:
    """The state from a verified body; bounded: never inflates past `state_bytes` (itself bounded)."""
    if not 0 < state_bytes <= MAX_STATE_BYTES:
        raise SnapshotError("snapshot state size out of bounds")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, state_bytes)
    except zlib.error as exc:
        raise SnapshotError(f"snapshot body does not decompress: {exc}") from None
    if len(raw) != state_bytes or inflater.unconsumed_tail or not inflater.eof:
        raise SnapshotError("snapshot body does not match its stated size")
    try:
        state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"snapshot body is not a state: {exc}") from None
    if not isinstance(state, dict):
        raise SnapshotError("snapshot body is not a state (not a map)")
    return state
