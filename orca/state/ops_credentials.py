"""Ops on credentials: API tokens (revocation) and secrets (ciphertext only, with project grants).

A token record of role "agent" also names the `node` the token is bound to (None for records
written before node identity: those tokens are refused by every master anyway).

Grants (`orca.secret_scopes`) are validated by the proposer; apply only checks their shape. A
`set_secret` without `grants` keeps the stored grants (a value rotation), and an entry written before
grants existed replays exactly as it did then.
"""

from __future__ import annotations

import re
from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import Ctx, State, record_event

_ROLES = ("viewer", "deployer", "admin", "agent")
_NODE_RE = re.compile(r"[a-z0-9-]{1,63}")  # orca.auth.NODE_ID_RE (the state machine imports no auth code)


def node_claim(args: dict[str, Any], role: Any) -> str | None:
    """The validated optional `node` of a token: a node id, only with role "agent"."""
    node = args.get("node")
    if node is not None and (role != "agent" or not isinstance(node, str) or not _NODE_RE.fullmatch(node)):
        raise Invalid("node must be a node id, and only agent tokens carry one", {"field": "node"})
    return node


def _apply_create_token(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    jti, name, role = args["jti"], args["name"], args["role"]
    if not (isinstance(jti, str) and jti and isinstance(name, str) and name and role in _ROLES):
        raise Invalid("token needs jti, name and a known role")
    if jti in state["tokens"]:
        raise Conflict(f"token {jti} already exists", {"jti": jti})
    expires_at, iat = args.get("expires_at"), args.get("iat")
    if not isinstance(iat, int) or not (expires_at is None or isinstance(expires_at, int)):
        raise Invalid("token iat and expires_at must be integers")
    node = node_claim(args, role)
    projects = args.get("projects")
    if projects is not None and not (isinstance(projects, list) and all(isinstance(p, str) for p in projects)):
        raise Invalid("token projects must be a list of names")
    record = {"jti": jti, "name": name, "role": role, "iat": iat, "created_at": ctx.now, "created_by": ctx.actor,
              "expires_at": expires_at, "revoked": False, "revoked_at": None, "node": node}
    if projects is not None:  # absent, not None, on unscoped tokens: their records stay as before
        record["projects"] = list(projects)
    state["tokens"][jti] = record
    record_event(state, ctx, "token_created", f"token {name!r} ({role}) created", node=node, details={"jti": jti})
    return dict(record)


def _apply_revoke_token(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Revoke a recorded token, or record a tombstone for one minted offline (so it can be revoked too)."""
    jti = args["jti"]
    if not isinstance(jti, str) or not jti:
        raise Invalid("jti must be a non-empty string", {"field": "jti"})
    record = state["tokens"].get(jti)
    if record is None:
        record = {"jti": jti, "name": None, "role": None, "iat": None, "created_at": None, "created_by": None,
                  "expires_at": None, "revoked": False, "revoked_at": None}
        state["tokens"][jti] = record
    if not record["revoked"]:
        record["revoked"] = True
        record["revoked_at"] = ctx.now
        record_event(state, ctx, "token_revoked", f"token {jti} revoked", details={"jti": jti})
    return dict(record)


def _apply_set_secret(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Store a secret, already encrypted by the proposer (the journal never holds the plain value)."""
    key, ciphertext = args["key"], args["ciphertext"]
    if not isinstance(key, str) or not key or not isinstance(ciphertext, str):
        raise Invalid("secret needs a key and a ciphertext")
    grants = args.get("grants")
    if grants is not None:
        _check_grants(grants)
    old = state["secrets"].get(key)
    record = {"key": key, "ciphertext": ciphertext, "updated_at": ctx.now,
              "created_at": old["created_at"] if old else ctx.now}
    if grants is not None:
        record["grants"] = grants
    elif old is not None and "grants" in old:
        record["grants"] = old["grants"]
    state["secrets"][key] = record
    record_event(state, ctx, "secret_set", f"secret {key} {'updated' if old else 'created'}",
                 details={"grants": record["grants"]} if "grants" in record else None)
    result = {"key": key, "created": old is None}
    if "grants" in record:
        result["grants"] = record["grants"]
    return result


def _apply_set_secret_grants(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Replace a secret's grants without touching its value."""
    key, grants = args["key"], args["grants"]
    record = state["secrets"].get(key) if isinstance(key, str) else None
    if record is None:
        raise NotFound(f"secret {key!r} not found", {"key": key})
    _check_grants(grants)
    record["grants"] = grants
    record_event(state, ctx, "secret_granted", f"secret {key} grants set", details={"grants": grants})
    return {"key": key, "grants": grants}


def _check_grants(grants: Any) -> None:
    if not (isinstance(grants, dict) and set(grants) == {"all_projects", "projects"}
            and isinstance(grants["all_projects"], bool) and isinstance(grants["projects"], list)
            and all(isinstance(p, str) for p in grants["projects"])):
        raise Invalid("grants must be {all_projects: bool, projects: [names]}", {"field": "grants"})


def _apply_delete_secret(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    key = args["key"]
    if key not in state["secrets"]:
        raise NotFound(f"secret {key!r} not found", {"key": key})
    del state["secrets"][key]
    record_event(state, ctx, "secret_deleted", f"secret {key} deleted")
    return {"key": key, "deleted": True}



OPS = {
    "create_token": _apply_create_token,
    "revoke_token": _apply_revoke_token,
    "set_secret": _apply_set_secret,
    "delete_secret": _apply_delete_secret,
    "set_secret_grants": _apply_set_secret_grants,
}
