"""Tokens: JWT HS256 with a key derived from the cluster secret, and the role order.

Pure (no I/O, no clock unless the caller omits `now`), so masters, the CLI's offline
`orca token create --secret-file F` and the tests share it. Revocation is not decided here: a
verified token is then checked against the replicated `tokens` table by the API layer.

Why derived keys: the cluster secret also feeds the Raft password. Deriving one key per purpose
with HMAC-SHA256 and a fixed label means a leaked JWT signing key (or a cracked Raft password)
does not give away the other, and the raw secret is never used directly.

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
    "verify_token", "role_satisfies", "generate_cluster_secret",
]

ROLES = ("viewer", "deployer", "admin", "agent")
# Human roles are ordered; "agent" is deliberately outside the order (see `role_satisfies`).
ROLE_RANK = {"viewer": 1, "deployer": 2, "admin": 3}
ALGORITHM = "HS256"

_JWT_LABEL = b"orca/jwt/v1"
_RAFT_LABEL = b"orca/raft/v1"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_JTI_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Far above any token we mint (~250 bytes); bounds the work done on hostile input.
_MAX_TOKEN_LEN = 8192
_REQUIRED_CLAIMS = ("sub", "role", "jti", "iat")


@dataclass(frozen=True)
class Claims:
    """What a verified token says. `name` is the token's human label; today it equals `sub`."""

    sub: str
    role: str
    jti: str
    iat: int
    exp: int | None
    name: str


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
               jti: str | None = None) -> tuple[str, Claims]:
    """Sign a token for `name` with `role`; returns the JWT and its claims.

    `now` is passed in (not read) so that the state machine's proposer, the offline CLI and the
    tests all control the clock. `ttl_s=None` means no `exp`: agent join tokens and the bootstrap
    admin token live until revoked. The `jti` is what revocation refers to; pass one when the id is
    made elsewhere (the proposer of a `token_create` entry), else a random one is drawn.
    Raises `Invalid` for an unknown role, a bad name or jti, or a non-positive ttl.
    """
    if role not in ROLES:
        raise Invalid(f"role: must be one of {', '.join(ROLES)}", {"field": "role"})
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise Invalid("name: expected 1 to 128 characters of letters, digits, '_', '.', '@' or '-', "
                      "starting with a letter or digit", {"field": "name"})
    if jti is None:
        jti = uuid.uuid4().hex
    elif not isinstance(jti, str) or not _JTI_RE.fullmatch(jti):
        raise Invalid("jti: expected 1 to 64 characters of letters, digits, '_' or '-'", {"field": "jti"})
    if not _is_number(now):
        raise Invalid("now: expected a finite number of seconds", {"field": "now"})
    iat = int(now)
    exp: int | None = None
    if ttl_s is not None:
        if not _is_number(ttl_s) or ttl_s <= 0:
            raise Invalid("ttl_s: expected a positive number of seconds", {"field": "ttl_s"})
        exp = int(math.ceil(now + ttl_s))
    payload: dict[str, Any] = {"sub": name, "role": role, "jti": jti, "iat": iat}
    if exp is not None:
        payload["exp"] = exp
    token = jwt.encode(payload, key, algorithm=ALGORITHM)
    return token, Claims(sub=name, role=role, jti=jti, iat=iat, exp=exp, name=name)


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
    return Claims(sub=sub, role=role, jti=jti, iat=int(iat), exp=None if exp is None else int(exp),
                  name=name)
