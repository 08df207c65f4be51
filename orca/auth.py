"""Tokens: JWT HS256 with a key derived from the cluster secret, and the role order.

Pure (no I/O, no clock unless the caller omits `now`), so masters, the CLI's offline
`orca token create --secret-file F` and the tests share it. Revocation is not decided here: a
verified token is then checked against the replicated `tokens` table by the API layer.

Why derived keys: the cluster secret also feeds the Raft password. Deriving one key per purpose
with HMAC-SHA256 and a fixed label means a leaked JWT signing key (or a cracked Raft password)
does not give away the other, and the raw secret is never used directly.

Node identity: a token of role `agent` carries a `node` claim, the one node id it may speak for
(register, heartbeat). Mint refuses an agent token without one and verify refuses one that lacks
it, so a credential can never act for a node it was not issued for. Other roles never carry it.

Error messages never contain the token, the key or the secret: they end up in logs and responses.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from orca.errors import Invalid, Unauthorized

__all__ = [
    "ROLES", "ROLE_RANK", "ALGORITHM", "Claims", "signing_key", "raft_password", "mint_token",
    "verify_token", "role_satisfies", "generate_cluster_secret", "NODE_ID_RE", "peek_claims",
]

ROLES = ("viewer", "deployer", "admin", "agent")
# Human roles are ordered; "agent" is deliberately outside the order (see `role_satisfies`).
ROLE_RANK = {"viewer": 1, "deployer": 2, "admin": 3}
ALGORITHM = "HS256"

_JWT_LABEL = b"orca/jwt/v1"
_RAFT_LABEL = b"orca/raft/v1"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_JTI_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A node id, as in the agent config's `[agent].id` (orca.config keeps the same rule).
NODE_ID_RE = re.compile(r"[a-z0-9-]{1,63}")
# Far above any token we mint (~250 bytes); bounds the work done on hostile input.
_MAX_TOKEN_LEN = 8192
_PROJECT_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_TOKEN_PROJECTS = 32
_REQUIRED_CLAIMS = ("sub", "role", "jti", "iat")


@dataclass(frozen=True)
class Claims:
    """What a verified token says. `name` is the token's human label; today it equals `sub`.

    `node` is the node id an agent token is bound to (always set for role "agent", None otherwise).
    `projects` scopes a deployer token to those projects (`orca.secret_scopes`); None is unscoped.
    """

    sub: str
    role: str
    jti: str
    iat: int
    exp: int | None
    name: str
    node: str | None = None
    projects: tuple[str, ...] | None = None


def signing_key(cluster_secret: bytes) -> bytes:
    """The JWT HMAC key: HMAC-SHA256(cluster_secret, "orca/jwt/v1"), 32 bytes."""
    return hmac.new(cluster_secret, _JWT_LABEL, hashlib.sha256).digest()


def raft_password(cluster_secret: bytes) -> str:
    """PySyncObj's transport password: HMAC-SHA256(cluster_secret, "orca/raft/v1") as hex."""
    return hmac.new(cluster_secret, _RAFT_LABEL, hashlib.sha256).hexdigest()


def generate_cluster_secret() -> str:
    """A new cluster secret: 32 random bytes as 64 hex characters (what the secret file holds)."""
    return secrets.token_hex(32)


def mint_token(key: bytes, *, role: str, name: str, now: float, ttl_s: float | None = None,
               jti: str | None = None, node: str | None = None,
               projects: list[str] | tuple[str, ...] | None = None) -> tuple[str, Claims]:
    """Sign a token for `name` with `role`; returns the JWT and its claims.

    `now` is passed in (not read) so that the state machine's proposer, the offline CLI and the
    tests all control the clock. `ttl_s=None` means no `exp`: agent join tokens and the bootstrap
    admin token live until revoked. The `jti` is what revocation refers to; pass one when the id is
    made elsewhere (the proposer of a `token_create` entry), else a random one is drawn.
    `node` binds an agent token to one node id: required for role "agent", refused for the others.
    `projects` (deployer tokens only) scopes the token to projects.
    Raises `Invalid` for an unknown role, a bad name, jti or node, or a non-positive ttl.
    """
    if role not in ROLES:
        raise Invalid(f"role: must be one of {', '.join(ROLES)}", {"field": "role"})
    if role == "agent":
        if not isinstance(node, str) or not NODE_ID_RE.fullmatch(node):
            raise Invalid("node: an agent token is bound to one node id ([a-z0-9-]{1,63}), e.g. --node worker-2",
                          {"field": "node"})
    elif node is not None:
        raise Invalid("node: only agent tokens are bound to a node", {"field": "node"})
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise Invalid("name: expected 1 to 128 characters of letters, digits, '_', '.', '@' or '-', "
                      "starting with a letter or digit", {"field": "name"})
    if jti is None:
        jti = uuid.uuid4().hex
    elif not isinstance(jti, str) or not _JTI_RE.fullmatch(jti):
        raise Invalid("jti: expected 1 to 64 characters of letters, digits, '_' or '-'", {"field": "jti"})
    if not _is_number(now):
        raise Invalid("now: expected a finite number of seconds", {"field": "now"})
    scoped = _check_projects(projects, role)
    iat = int(now)
    exp: int | None = None
    if ttl_s is not None:
        if not _is_number(ttl_s) or ttl_s <= 0:
            raise Invalid("ttl_s: expected a positive number of seconds", {"field": "ttl_s"})
        exp = int(math.ceil(now + ttl_s))
    payload: dict[str, Any] = {"sub": name, "role": role, "jti": jti, "iat": iat}
    if exp is not None:
        payload["exp"] = exp
    if node is not None:
        payload["node"] = node
    if scoped is not None:
        payload["projects"] = list(scoped)
    token = jwt.encode(payload, key, algorithm=ALGORITHM)
    return token, Claims(sub=name, role=role, jti=jti, iat=iat, exp=exp, name=name, node=node, projects=scoped)


def _check_projects(projects: object, role: str) -> tuple[str, ...] | None:
    """A valid project scope, sorted and unique; only deployer tokens carry one (reads are not scoped)."""
    if projects is None:
        return None
    if role != "deployer":
        raise Invalid("projects: only deployer tokens are scoped to projects", {"field": "projects"})
    if not isinstance(projects, list | tuple) or not 1 <= len(projects) <= MAX_TOKEN_PROJECTS or not all(
            isinstance(p, str) and _PROJECT_RE.fullmatch(p) for p in projects):
        raise Invalid(f"projects: expected 1 to {MAX_TOKEN_PROJECTS} project names (DNS labels)",
                      {"field": "projects"})
    return tuple(sorted(set(projects)))


def verify_token(key: bytes, token: str, *, now: float | None = None) -> Claims:
    """Check signature, algorithm, expiry and claims; raise `Unauthorized` saying which failed.

    Only HS256 is accepted, checked against the header before anything else: `none` and
    asymmetric algorithms are the classic JWT confusion attacks. Time checks are done here with
    `now` (default: the wall clock) rather than by pyjwt, so tests and callers control the clock.
    """
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LEN:
        raise Unauthorized("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        # The non-pyjwt types guard against library quirks on hostile input: fail closed, as a 401.
        raise Unauthorized("malformed token") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(f"token algorithm not accepted (only {ALGORITHM})")
    try:
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM],
            options={"verify_signature": True, "verify_exp": False, "verify_iat": False,
                     "verify_nbf": False, "verify_aud": False, "verify_iss": False,
                     "verify_sub": False, "verify_jti": False, "require": []},
        )
    except jwt.InvalidSignatureError:
        raise Unauthorized("invalid token signature") from None
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise Unauthorized("malformed token") from None
    return _claims(payload, time.time() if now is None else now)


def role_satisfies(have: str, need: str) -> bool:
    """Whether a token with role `have` may use a route that requires `need`.

    admin >= deployer >= viewer. "agent" is a separate axis: only an agent token satisfies "agent",
    and an agent token satisfies nothing else — so a stolen join token cannot deploy, and an admin
    token is never accepted by agent endpoints (keeps humans and machines apart in the audit log).
    Unknown roles on either side are denied: fail closed.
    """
    if need == "agent" or have == "agent":
        return have == need == "agent"
    if have not in ROLE_RANK or need not in ROLE_RANK:
        return False
    return ROLE_RANK[have] >= ROLE_RANK[need]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _claims(payload: dict[str, Any], now: float) -> Claims:
    for claim in _REQUIRED_CLAIMS:
        if claim not in payload:
            raise Unauthorized(f"token is missing the '{claim}' claim")
    sub, role, jti, iat = payload["sub"], payload["role"], payload["jti"], payload["iat"]
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("token claim 'sub' must be a non-empty string")
    if not isinstance(jti, str) or not jti:
        raise Unauthorized("token claim 'jti' must be a non-empty string")
    if not isinstance(role, str) or role not in ROLES:
        raise Unauthorized("token has an unknown role")
    if not _is_number(iat):
        raise Unauthorized("token claim 'iat' must be a number")
    exp = payload.get("exp")
    if exp is not None:
        if not _is_number(exp):
            raise Unauthorized("token claim 'exp' must be a number")
        if now >= exp:
            raise Unauthorized("token expired")
    nbf = payload.get("nbf")
    if nbf is not None and (not _is_number(nbf) or now < nbf):
        raise Unauthorized("token not yet valid")
    name = payload.get("name", sub)
    if not isinstance(name, str):
        name = sub
    node = payload.get("node")
    if role == "agent":
        if node is None:
            raise Unauthorized("agent token is not bound to a node (minted before node identity): "
                               "mint one with `orca token create --role agent --node ID` or use a join token")
        if not isinstance(node, str) or not NODE_ID_RE.fullmatch(node):
            raise Unauthorized("token claim 'node' must be a node id")
    elif node is not None:
        raise Unauthorized("token claim 'node' is only allowed on agent tokens")
    projects = payload.get("projects")
    if projects is not None:
        try:
            projects = _check_projects(projects, role)
        except Invalid:
            raise Unauthorized("token claim 'projects' is malformed") from None
    return Claims(sub=sub, role=role, jti=jti, iat=int(iat), exp=None if exp is None else int(exp),
                  name=name, node=node, projects=projects)


def peek_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT WITHOUT checking its signature, or None when it is not one.

    Only for early, friendly checks of one's own token (an agent config naming node worker-1 with a
    token for worker-2 exits at start-up instead of being refused by every master); never for a
    decision about someone else's token: that is `verify_token`.
    """
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LEN or token.count(".") != 2:
        return None
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None
