"""Ops on the cluster certificate authority: its first record, rotation, and the end of an overlap.

The table `cluster_ca` is `{"current": fingerprint, "cas": {fingerprint: {"fingerprint", "cert_pem",
"key_sealed", "created_at", "activate_at", "not_after"}}}`. The key is sealed by the proposer with the
cluster secret (orca.master.secrets.SecretBox), so the journal and the snapshots never hold it in
clear, and any master can unseal it and issue certificates. Every CA in `cas` is trusted at once; the
one that signs at wall time t is the newest whose `activate_at` <= t (`signer`): a rotation first
spreads the new CA to every trust store (agents fetch it on their next heartbeat) and only then, after
the overlap, do certificates from it appear. `current` is the newest CA.

The proposer draws the key (randomness stays out of `apply`); these ops only check the shape and
record it. `ca_init` is first-wins: a second proposal (two masters racing at first start) is a
conflict and changes nothing, so every master ends up with the same CA.
"""

from __future__ import annotations

import re
from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import Ctx, State, record_event

__all__ = ["OPS", "ca_table", "signer"]

_FP_RE = re.compile(r"[0-9a-f]{64}")
_MAX_PEM = 16 * 1024


def ca_table(state: State) -> dict[str, Any]:
    """The CA table, or an empty one (absent from snapshots made before TLS)."""
    return state.get("cluster_ca") or {"current": None, "cas": {}}


def signer(table: dict[str, Any], now: float) -> str | None:
    """The CA that signs at wall time `now`: the newest one already active (read by masters, not apply)."""
    active = [r for r in table["cas"].values() if r.get("activate_at", r["created_at"]) <= now]
    if not active:
        return table["current"]
    return max(active, key=lambda r: (r.get("activate_at", r["created_at"]), r["fingerprint"]))["fingerprint"]


def _record(args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    fp, cert, sealed, not_after = (args.get("fingerprint"), args.get("cert_pem"), args.get("key_sealed"),
                                   args.get("not_after"))
    if not isinstance(fp, str) or not _FP_RE.fullmatch(fp):
        raise Invalid("fingerprint: expected 64 hex characters", {"field": "fingerprint"})
    if not isinstance(cert, str) or not cert.startswith("-----BEGIN CERTIFICATE-----") or len(cert) > _MAX_PEM:
        raise Invalid("cert_pem: expected a PEM certificate", {"field": "cert_pem"})
    if not isinstance(sealed, str) or not sealed or len(sealed) > _MAX_PEM:
        raise Invalid("key_sealed: expected the sealed CA key", {"field": "key_sealed"})
    if not isinstance(not_after, int | float) or isinstance(not_after, bool):
        raise Invalid("not_after: expected a number", {"field": "not_after"})
    overlap = args.get("overlap_s", 0)
    if not isinstance(overlap, int | float) or isinstance(overlap, bool) or not 0 <= overlap <= 30 * 86400:
        raise Invalid("overlap_s: expected 0 to 30 days in seconds", {"field": "overlap_s"})
    return {"fingerprint": fp, "cert_pem": cert, "key_sealed": sealed, "created_at": ctx.now,
            "activate_at": ctx.now + float(overlap), "not_after": float(not_after)}


def _public(table: dict[str, Any]) -> dict[str, Any]:
    return {"current": table["current"], "trusted": sorted(table["cas"])}


def _apply_ca_init(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    record = _record(args, ctx)
    table = state.get("cluster_ca")
    if table and table.get("current"):
        raise Conflict("the cluster already has a CA", {"current": table["current"]})
    state["cluster_ca"] = {"current": record["fingerprint"], "cas": {record["fingerprint"]: record}}
    record_event(state, ctx, "ca_created", f"cluster CA {record['fingerprint'][:16]} created",
                 details={"fingerprint": record["fingerprint"]})
    return _public(state["cluster_ca"])


def _apply_ca_rotate(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Make a new CA current; the previous ones stay trusted until `ca_retire` (the overlap)."""
    record = _record(args, ctx)
    table = state.get("cluster_ca")
    if not table or not table.get("current"):
        raise NotFound("the cluster has no CA yet")
    if record["fingerprint"] in table["cas"]:
        raise Conflict("that CA is already trusted", {"fingerprint": record["fingerprint"]})
    previous = table["current"]
    table["cas"][record["fingerprint"]] = record
    table["current"] = record["fingerprint"]
    record_event(state, ctx, "ca_rotated", f"cluster CA rotated: {previous[:16]} -> {record['fingerprint'][:16]}; "
                 "both trusted until the rotation is finished",
                 details={"previous": previous, "fingerprint": record["fingerprint"]})
    return _public(table)


def _apply_ca_retire(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Stop trusting every CA but the current one (the end of a rotation's overlap); refused while the
    current one is not active yet (certificates from it may not exist anywhere)."""
    table = state.get("cluster_ca")
    if not table or not table.get("current"):
        raise NotFound("the cluster has no CA yet")
    record = table["cas"][table["current"]]
    if record.get("activate_at", record["created_at"]) > ctx.now:
        raise Conflict("the new CA is not active yet: its overlap has not elapsed",
                       {"activate_at": record.get("activate_at")})
    expected = args.get("current")
    if expected is not None and expected != table["current"]:
        raise Conflict("the current CA changed meanwhile", {"current": table["current"]})
    retired = sorted(fp for fp in table["cas"] if fp != table["current"])
    for fp in retired:
        del table["cas"][fp]
    if retired:
        record_event(state, ctx, "ca_retired", f"{len(retired)} previous cluster CA(s) no longer trusted",
                     details={"retired": retired, "current": table["current"]})
    return {**_public(table), "retired": retired}


OPS = {
    "ca_init": _apply_ca_init,
    "ca_rotate": _apply_ca_rotate,
    "ca_retire": _apply_ca_retire,
}
