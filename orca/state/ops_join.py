"""Ops on join tokens: create (optionally rotating the outstanding ones), revoke, and the one-time
exchange of a join token for a node-bound agent credential.

The table `join_tokens` holds `{id: {"id", "role", "node", "created_at", "created_by", "expires_at",
"revoked", "revoked_at", "used_by", "used_at", "jti", "nonce_digest"}}`, never a secret: the token's
secret is derived from the id by the masters (orca.jointoken). The exchange is decided here, in
`apply`, so two agents racing with one token cannot both win: the first committed entry marks it used.

A retried exchange (the answer to the first was lost) is recognised by `nonce_digest`: the agent
sends a random nonce it keeps, the leader records its SHA-256; the same token, node and nonce get the
first credential again. Whoever only holds a used token (not the nonce) is refused.
"""

from __future__ import annotations

import re
from typing import Any

from orca.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from orca.state.core import Ctx, State, record_event

__all__ = ["OPS", "JOIN_ROLES", "check_join"]

JOIN_ROLES = ("worker",)
_ID_RE = re.compile(r"[0-9a-f]{16}")
_NODE_RE = re.compile(r"[a-z0-9-]{1,63}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def _table(state: State) -> dict[str, Any]:
    return state.setdefault("join_tokens", {})  # absent from snapshots made before join tokens


def _valid_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise Invalid(f"{field}: expected a join token id (16 hex characters)", {"field": field})
    return value


def _valid_node(value: Any, field: str = "node") -> str:
    if not isinstance(value, str) or not _NODE_RE.fullmatch(value):
        raise Invalid(f"{field}: expected a node id ([a-z0-9-]{{1,63}})", {"field": field})
    return value


def _revoke(record: dict[str, Any], ctx: Ctx) -> None:
    record["revoked"] = True
    record["revoked_at"] = ctx.now


def _apply_create_join_token(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Record a new join token; with `rotate`, first revoke every unused one of the same role."""
    token_id = _valid_id(args.get("id"))
    role = args.get("role")
    if role not in JOIN_ROLES:
        raise Invalid(f"role: expected one of {', '.join(JOIN_ROLES)}", {"field": "role"})
    node = args.get("node")
    if node is not None:
        _valid_node(node)
    expires_at = args.get("expires_at")
    if expires_at is not None and (not isinstance(expires_at, int | float) or isinstance(expires_at, bool)):
        raise Invalid("expires_at: expected a number or null", {"field": "expires_at"})
    rotate = args.get("rotate", False)
    if not isinstance(rotate, bool):
        raise Invalid("rotate: expected true or false", {"field": "rotate"})
    table = _table(state)
    if token_id in table:
        raise Conflict(f"join token {token_id} already exists", {"id": token_id})
    rotated = []
    if rotate:
        for other in sorted(table):
            rec = table[other]
            if rec["role"] == role and not rec["revoked"] and rec["used_by"] is None:
                _revoke(rec, ctx)
                rotated.append(other)
    record = {"id": token_id, "role": role, "node": node, "created_at": ctx.now, "created_by": ctx.actor,
              "expires_at": expires_at, "revoked": False, "revoked_at": None, "used_by": None, "used_at": None,
              "jti": None, "nonce_digest": None}
    table[token_id] = record
    record_event(state, ctx, "join_token_created",
                 f"{role} join token {token_id} created" + (f", {len(rotated)} revoked" if rotated else ""),
                 node=node, details={"id": token_id, "rotated": rotated})
    return {**record, "rotated": rotated}


def _apply_revoke_join_token(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    token_id = _valid_id(args.get("id"))
    record = _table(state).get(token_id)
    if record is None:
        raise NotFound(f"join token {token_id} not found", {"id": token_id})
    if not record["revoked"]:
        _revoke(record, ctx)
        record_event(state, ctx, "join_token_revoked", f"join token {token_id} revoked", details={"id": token_id})
    return dict(record)


def _live_credentials(state: State, node: str, now: float) -> list[str]:
    """Recorded, unrevoked, unexpired agent tokens bound to `node`."""
    return sorted(jti for jti, t in state["tokens"].items()
                  if t.get("node") == node and t.get("role") == "agent" and not t.get("revoked")
                  and (t.get("expires_at") is None or t["expires_at"] > now))


def check_join(state: State, token_id: str, node: str, nonce_digest: str, now: float) -> bool:
    """Raise the refusal of an exchange, if any; True when it is the first exchange's retry (same
    token, node and nonce), False when it may proceed. Pure: `_apply_join_node` decides with it, and
    the leader's handler asks it first so that a refusal costs no log entry."""
    record = state.get("join_tokens", {}).get(token_id)
    if record is None:
        raise Unauthorized("join token is not known to this cluster")
    if record["used_by"] is not None:
        if record["used_by"] == node and record["nonce_digest"] == nonce_digest and not record["revoked"]:
            return True
        raise Unauthorized("join token has already been used")
    if record["revoked"]:
        raise Unauthorized("join token has been revoked")
    if record["expires_at"] is not None and now >= record["expires_at"]:
        raise Unauthorized("join token has expired")
    if record["node"] is not None and record["node"] != node:
        raise Forbidden(f"this join token is for node {record['node']!r}", {"node": node})
    if node in state["nodes"]:
        raise Conflict(f"node {node!r} is already registered: an admin mints its credential "
                       f"(orca token create --role agent --node {node}) or removes the node first", {"node": node})
    live = _live_credentials(state, node, now)
    if live:
        raise Conflict(f"node {node!r} already has a credential: revoke it first (orca token revoke {live[0]})",
                       {"node": node, "jti": live[0]})
    return False


def _apply_join_node(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Exchange a join token (already checked against its secret by the leader) for an agent token
    bound to `node_id`. Refused: unknown, revoked, expired or used tokens (401); a token made for
    another node (403); a node that is registered or already holds a live credential (409: a node
    that exists is re-credentialed only by an admin)."""
    token_id = _valid_id(args.get("id"))
    node = _valid_node(args.get("node_id"), "node_id")
    jti, iat, nonce_digest = args.get("jti"), args.get("iat"), args.get("nonce_digest")
    if not isinstance(jti, str) or not jti or not isinstance(iat, int) or isinstance(iat, bool):
        raise Invalid("join needs a jti and an integer iat")
    if not isinstance(nonce_digest, str) or not _DIGEST_RE.fullmatch(nonce_digest):
        raise Invalid("nonce_digest: expected 64 hex characters", {"field": "nonce_digest"})
    record = _table(state).get(token_id)
    if check_join(state, token_id, node, nonce_digest, ctx.now):
        # The same agent retrying after a lost answer: the same credential again, nothing new.
        first = state["tokens"].get(record["jti"]) or {}
        return {"node_id": node, "jti": record["jti"], "iat": first.get("iat"), "id": token_id, "replayed": True}
    if jti in state["tokens"]:
        raise Conflict(f"token {jti} already exists", {"jti": jti})
    state["tokens"][jti] = {"jti": jti, "name": node, "role": "agent", "iat": iat, "created_at": ctx.now,
                            "created_by": f"join:{token_id}", "expires_at": None, "revoked": False,
                            "revoked_at": None, "node": node}
    record.update({"used_by": node, "used_at": ctx.now, "jti": jti, "nonce_digest": nonce_digest})
    record_event(state, ctx, "node_joined", f"node {node} exchanged join token {token_id} for its credential",
                 node=node, details={"id": token_id, "jti": jti})
    return {"node_id": node, "jti": jti, "iat": iat, "id": token_id}


OPS = {
    "create_join_token": _apply_create_join_token,
    "revoke_join_token": _apply_revoke_join_token,
    "join_node": _apply_join_node,
}
