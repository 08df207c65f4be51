"""The replicated state machine: one pure `apply(state, entry, index)` over plain data.

Contract (hashicorp/raft's FSM, Nomad's fsm.go):
- An entry is a msgpack map `{"op": str, "now": float, "args": {...}, "key": str|None, "actor": str|None}`.
  The proposer (the leader) stamps `now` and makes every id; apply never reads a clock, never draws a
  random number, never does I/O. Every master applies the same entries in the same order and ends with
  the same state.
- Every op is one `_apply_<op>(state, args, ctx)` of the same shape, registered in `OPS`. Ops are only ever
  added: an old journal must replay to the same state forever.
- Every entry carries the schema version it was written in (`v`, `orca.state.schema`). An entry of a newer
  version, or an op this code does not know, is not applied: the result carries `halt`, and the master
  stops applying (`orca.raft.ReplicatedState`) instead of diverging from masters that know it. The state
  records the highest version applied (`schema_version`), so PySyncObj's dumps carry it too.
- Ops validate everything before they mutate anything, so a rejected entry leaves the state untouched
  (no partial write). Errors are returned as values (`{"error": {...}}`), never raised out of apply.
- A write with an idempotency key stores its result when it succeeded; the same key applied again returns
  the stored result and changes nothing (a client retrying across a failover gets the first answer). A
  refused write stores nothing: every refusal leaves the state as it was.
- The state is plain dicts/lists/str/int/float/bool/None only, so PySyncObj's default snapshot (pickle)
  and msgpack both round-trip it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgpack

from orca.errors import Conflict, Invalid, OrcaError
from orca.state import (
    ops_ca,
    ops_credentials,
    ops_jobs,
    ops_join,
    ops_members,
    ops_nodes,
    ops_restore,
    ops_services,
    ops_volumes,
    ops_webhooks,
    schema,
)
from orca.state.core import EVENTS_KEPT, HISTORY_KEPT, Ctx, State, record_event

__all__ = ["new_state", "apply", "encode_entry", "decode_entry", "OPS", "EVENTS_KEPT", "IDEMPOTENCY_KEPT",
           "HISTORY_KEPT", "Entry", "record_event", "Ctx", "BATCH_OP", "unsupported", "halt_of"]

IDEMPOTENCY_KEPT = 4096
BATCH_OP = "batch"  # group commit: {"entries": [entry bytes...]} -> {"results": [...]}, applied in order

Entry = dict[str, Any]


def new_state() -> State:
    """The empty cluster: every table present so readers never need `.get` with defaults."""
    return {
        "services": {},
        "nodes": {},
        "allocations": {},
        "tokens": {},
        "webhooks": {},
        "secrets": {},
        "events": [],
        "event_seq": 0,
        "idempotency": {},
        "leader": {"term": 0, "node": None, "since": None},
        "removed_nodes": {},
        "webhook_deliveries": {},
        "join_tokens": {},
        "webhook_bodies": {},
        "schema_version": 1,  # the highest entry version applied (not this code's: masters must agree)
        "volume_seq": 0,      # generations of volume bindings (orca.volumes)
        "volume_purges": {},  # node id -> [{service, slot, gen}] volumes the node must remove
        "masters": {},
    }


def encode_entry(op: str, args: dict[str, Any], *, now: float, key: str | None = None,
                 actor: str | None = None) -> bytes:
    """Serialize a proposal. msgpack, not pickle: entries outlive code versions and stay readable."""
    return msgpack.packb({"op": op, "now": float(now), "args": args, "key": key, "actor": actor,
                          "v": schema.entry_version(op)}, use_bin_type=True)


def decode_entry(raw: bytes) -> Entry:
    entry = msgpack.unpackb(raw, raw=False)
    if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
        raise Invalid("malformed entry")
    if not isinstance(entry.get("args", {}), dict):
        raise Invalid("malformed entry args")
    return entry


def apply(state: State, raw: bytes, index: int = 0, *, nested: bool = False) -> dict[str, Any]:
    """Apply one committed entry; return `{"ok": True, "result": ...}` or `{"error": {...}}`. Never raises.

    Why it must not raise: PySyncObj re-applies an entry whose apply raised on its next tick, so inside a
    batch the sub-entries before the failing one would apply twice. Ops validate before they mutate;
    whatever still goes wrong inside an op (a bug, or input no validator foresaw) becomes an `INTERNAL`
    error value naming only the op and the exception type: deterministic, so every master stores the
    same result.
    """
    try:
        return _apply(state, raw, index, nested)
    except Exception as err:  # noqa: BLE001 - the last line of defence described above
        return OrcaError(f"entry failed to apply: {type(err).__name__}", {"op": _op_name(raw)}).as_value()


def _op_name(raw: bytes) -> str | None:
    try:
        op = decode_entry(raw)["op"]
    except Exception:  # noqa: BLE001 - only for an error message
        return None
    return op[:64] if isinstance(op, str) else None


def _apply(state: State, raw: bytes, index: int, nested: bool) -> dict[str, Any]:
    try:
        entry = decode_entry(raw)
    except Exception:  # noqa: BLE001 - a corrupt entry must not stop the state machine
        return Invalid("malformed entry").as_value()
    halt = unsupported(entry, index)
    if halt is not None:
        return halt
    key = entry.get("key")
    op = entry["op"]
    actor, now = entry.get("actor"), entry.get("now") or 0.0
    if key is not None and not (isinstance(key, str) and len(key) <= 1024) or actor is not None \
            and not isinstance(actor, str) or not isinstance(now, int | float) or isinstance(now, bool):
        return Invalid("malformed entry envelope", {"op": op[:64]}).as_value()
    if op == BATCH_OP:
        subs = (entry.get("args") or {}).get("entries")
        if not isinstance(subs, list) or not all(isinstance(e, bytes) for e in subs):
            return Invalid("malformed batch").as_value()
        if nested:
            return Invalid("nested batch").as_value()
        # Each sub-entry is applied exactly once: apply() never raises, so no sub-entry can make the
        # whole batch fail (and be re-applied) after its predecessors changed the state.
        _note_version(state, entry)
        return {"ok": True, "result": {"results": [apply(state, sub, index, nested=True) for sub in subs]}}
    if key is not None:
        seen = state["idempotency"].get(key)
        if seen is not None:
            if seen["op"] != op:
                return Conflict("Idempotency-Key was already used for a different request",
                                {"key": key, "op": seen["op"]}).as_value()
            return {**seen["result"], "replayed": True}
    handler = OPS.get(op)
    if handler is None:
        result = Invalid(f"unknown op {op[:64]!r}", {"op": op[:64]}).as_value()
    else:
        ctx = Ctx(now=float(now), actor=actor, index=index)
        try:
            result = {"ok": True, "result": handler(state, entry.get("args") or {}, ctx)}
        except OrcaError as err:  # schema.Unsupported among them: its value carries `halt`
            result = err.as_value()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, StopIteration, OverflowError) as err:
            # Ops validate before mutating, so a bad argument that slips through leaves no partial write.
            result = Invalid(f"bad arguments for {op}: {type(err).__name__}", {"op": op}).as_value()
    if "error" not in result:  # a rejected entry leaves the state as it was, its version too
        _note_version(state, entry)
    if key is not None and "error" not in result:
        # Only what was done is remembered: a refused write leaves the state exactly as it was (the key
        # included), and its retry with the same key runs again (Stripe does the same for failed requests).
        _remember_key(state, key, op, result)
    return result


def unsupported(entry: Entry, index: int) -> dict[str, Any] | None:
    """None when this code can apply `entry`; else the halt value (503, so clients try another master)."""
    version = entry.get("v", 1)
    op = entry["op"]
    known = schema.SCHEMA_VERSION
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= known and (
            op == BATCH_OP or op in OPS):
        return None
    why = (f"op {op!r} is unknown" if isinstance(version, int) and version <= known
           else f"schema version {version!r} is newer than this master's {known}")
    value = schema.Unsupported(why, index, op).as_value()
    value["halt"]["version"] = version
    return value


def halt_of(result: Any) -> dict[str, Any] | None:
    """The `halt` of an applied entry's result: its own, or the first of a batch's sub-entries (those
    after it were applied on this master's copy too, which is thrown away: it never serves again)."""
    if not isinstance(result, dict):
        return None
    if "halt" in result:
        return result["halt"]
    subs = (result.get("result") or {}).get("results") if isinstance(result.get("result"), dict) else None
    return next((r["halt"] for r in subs or () if isinstance(r, dict) and "halt" in r), None)


def _note_version(state: State, entry: Entry) -> None:
    version = entry.get("v", 1)
    if version > state.get("schema_version", 1):
        state["schema_version"] = version


def _remember_key(state: State, key: str, op: str, result: dict[str, Any]) -> None:
    keys = state["idempotency"]
    keys[key] = {"op": op, "result": result}
    while len(keys) > IDEMPOTENCY_KEPT:
        del keys[next(iter(keys))]  # insertion order: the oldest key goes first, on every master alike


# Ops are only ever added, never renamed or reused: old journals replay through this table forever.
OPS: dict[str, Callable[[State, dict[str, Any], Ctx], dict[str, Any]]] = {
    **ops_services.OPS, **ops_credentials.OPS, **ops_nodes.OPS, **ops_webhooks.OPS, **ops_join.OPS,
    **ops_ca.OPS, **ops_restore.OPS, **ops_volumes.OPS, **ops_jobs.OPS, **ops_members.OPS,
}

# Re-exported for readers of the state (leader loops, views).
NODE_STATUSES = ops_nodes.NODE_STATUSES
OBSERVED_FIELDS = ops_nodes.OBSERVED_FIELDS


def snapshot(state: State) -> State:
    """A deep copy readers can hold without the lock (tests use it for round-trips)."""
    return copy.deepcopy(state)
