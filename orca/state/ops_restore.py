"""Disaster recovery as replicated ops: a snapshot file is staged in chunks, then swapped in at once.

Why chunks: the file of a large cluster is tens of MB, and one entry that size would hold PySyncObj's
tick thread (encryption, journal write, send) for long enough to miss heartbeats. The leader commits
`restore_begin` (the header, checked), `restore_chunk` entries of at most `CHUNK_MAX` bytes, then
`restore_commit`, which every master applies alike: verify the checksum, decode, replace the state.

What a restore keeps from the cluster it lands on: its member list (`masters`: the masters that run now,
not those of the lost cluster, orca.state.ops_members), the `leader` record (the current term's leader, for
the fence of leader decisions). What it adds: `fence_base`, so that the terms the leader sends agents
(term + fence_base) stay above any term those agents saw from the lost cluster, and `restored_from`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from orca import snapshot
from orca.errors import Conflict, Invalid
from orca.state import schema
from orca.state.core import Ctx, State, record_event

__all__ = ["OPS", "CHUNK_MAX", "RESTORE_TERM_GAP", "is_empty"]

CHUNK_MAX = 512 << 10
CHUNK_MIN = 16 << 10
CHUNKS_MAX = (snapshot.MAX_STATE_BYTES // CHUNK_MIN) + 1
# The lost cluster may have gone through elections after the snapshot was taken; its agents hold the
# highest term they saw. A gap no cluster's elections will ever cover keeps the restored leader above it.
RESTORE_TERM_GAP = 1_000_000
_TABLES = {"services": dict, "nodes": dict, "allocations": dict, "tokens": dict, "webhooks": dict,
           "secrets": dict, "events": list, "idempotency": dict}


def is_empty(state: State) -> bool:
    """No services, allocations, secrets, webhooks or recorded tokens. Nodes do not count: agents of the
    lost cluster re-register with the fresh one before the restore, as they should."""
    return not any(state.get(k) for k in ("services", "allocations", "secrets", "webhooks", "tokens"))


def _staged(state: State, restore_id: Any) -> dict[str, Any]:
    if not isinstance(restore_id, str) or not 1 <= len(restore_id) <= 64:
        raise Invalid("restore id must be 1-64 characters", {"field": "id"})
    staged = state.get("restore")
    if not isinstance(staged, dict) or staged.get("id") != restore_id:
        raise Conflict("no such restore in progress (another one began, or it was committed)",
                       {"restore_id": restore_id})
    return staged


def _apply_set_lineage(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The cluster's identity, made once by its first leader (kept if already set). Agents refuse pushes
    from another cluster; a restore carries the lost cluster's identity over to the new one."""
    lineage = args["lineage"]
    if not isinstance(lineage, str) or not 1 <= len(lineage) <= 64:
        raise Invalid("lineage must be 1-64 characters", {"field": "lineage"})
    if not state.get("lineage"):
        state["lineage"] = lineage
    return {"lineage": state["lineage"]}


def _apply_restore_begin(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    restore_id = args["id"]
    if not isinstance(restore_id, str) or not 1 <= len(restore_id) <= 64:
        raise Invalid("restore id must be 1-64 characters", {"field": "id"})
    try:
        header = snapshot.check_header(args["header"])
    except snapshot.SnapshotError as exc:
        raise Invalid(str(exc), {"field": "header"}) from None
    if header["schema_version"] > schema.SCHEMA_VERSION:  # the leader checked it knows it; this master not
        raise schema.Unsupported(f"a snapshot of schema version {header['schema_version']} is being restored",
                                 ctx.index, "restore_begin")
    force = args.get("force") is True
    if not force and not is_empty(state):
        raise Conflict("the cluster is not empty: restore into a fresh cluster, or force it",
                       {"counts": snapshot.counts(state)})
    size = args.get("chunk_bytes", CHUNK_MAX)  # the leader's choice: at most its request body limit
    if not isinstance(size, int) or isinstance(size, bool) or not CHUNK_MIN <= size <= CHUNK_MAX:
        raise Invalid(f"chunk_bytes must be from {CHUNK_MIN} to {CHUNK_MAX}", {"field": "chunk_bytes"})
    chunks = -(-header["body_bytes"] // size)
    if not 1 <= chunks <= CHUNKS_MAX:
        raise Invalid("snapshot body size out of bounds", {"field": "header"})
    state["restore"] = {"id": restore_id, "header": dict(header), "chunks": chunks, "chunk_bytes": size,
                        "parts": {}, "force": force, "began_at": ctx.now}
    return {"restore_id": restore_id, "chunks": chunks, "chunk_bytes": size}


def _apply_restore_chunk(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    staged = _staged(state, args["id"])
    n, data = args["n"], args["data"]
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < staged["chunks"]:
        raise Invalid(f"chunk number must be from 0 to {staged['chunks'] - 1}", {"field": "n"})
    if not isinstance(data, bytes) or not data or len(data) > staged["chunk_bytes"]:
        raise Invalid(f"a chunk is 1 to {staged['chunk_bytes']} bytes", {"field": "data"})
    staged["parts"][str(n)] = data
    return {"restore_id": staged["id"], "n": n, "received": len(staged["parts"]), "chunks": staged["chunks"]}


def _apply_restore_commit(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    staged = _staged(state, args["id"])
    missing = [i for i in range(staged["chunks"]) if str(i) not in staged["parts"]]
    if missing:
        raise Conflict(f"{len(missing)} chunk(s) not received yet", {"missing": missing[:20]})
    header = staged["header"]
    if not staged["force"] and not is_empty(state):
        raise Conflict("the cluster is no longer empty: something was written during the restore",
                       {"counts": snapshot.counts(state)})
    body = b"".join(staged["parts"][str(i)] for i in range(staged["chunks"]))
    try:
        if len(body) != header["body_bytes"] or hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise snapshot.SnapshotError("checksum mismatch: the chunks do not make the snapshot")
        restored = snapshot.decode_body(body, header["state_bytes"])
    except snapshot.SnapshotError as exc:  # (the staging stays, as every refusal leaves the state: begin anew)
        raise Invalid(f"restore refused: {exc}") from None
    version = restored.get("schema_version", 1)
    if not isinstance(version, int) or version > schema.SCHEMA_VERSION:
        raise schema.Unsupported(f"the restored state is of schema version {version!r}", ctx.index,
                                 "restore_commit")
    for key, kind in _TABLES.items():
        if not isinstance(restored.get(key, kind()), kind):
            raise Invalid(f"restore refused: the snapshot's {key} is not a {kind.__name__}")
    from orca.state.machine import new_state  # the ops modules are imported by machine

    fresh = new_state()
    fresh.update({k: v for k, v in restored.items() if k not in ("leader", "restore", "masters")})
    fresh["leader"] = state["leader"]
    fresh["masters"] = state.get("masters") or {}
    fresh["lineage"] = restored.get("lineage") or state.get("lineage")
    fresh["fence_base"] = int(restored.get("fence_base") or 0) + header["term"] + RESTORE_TERM_GAP
    fresh["restored_from"] = {"index": header["index"], "term": header["term"], "created_at": header["created_at"],
                              "sha256": header["sha256"], "at": ctx.now}
    state.clear()
    state.update(fresh)
    record_event(state, ctx, "snapshot_restored",
                 f"restored the snapshot of index {header['index']} (term {header['term']})",
                 details={"index": header["index"], "term": header["term"], "counts": snapshot.counts(state)})
    return {"restored": True, "index": header["index"], "term": header["term"], "counts": snapshot.counts(state)}


OPS = {
    "set_lineage": _apply_set_lineage,
    "restore_begin": _apply_restore_begin,
    "restore_chunk": _apply_restore_chunk,
    "restore_commit": _apply_restore_commit,
}
