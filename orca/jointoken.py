"""Join tokens: a one-time secret an agent exchanges for its node-bound credential (Swarm's model).

Shapes:  `ORCAJOIN-1-<id>-<secret>` (plain-HTTP clusters) and `ORCAJOIN-2-<ca>-<id>-<secret>` (TLS)
- `id` is 16 lowercase hex characters, drawn by the leader and recorded in the replicated
  `join_tokens` table (role, optional node, expiry, used/revoked): what revocation, rotation and
  single use refer to.
- `secret` is HMAC-SHA256(join key, id) as 64 hex characters, the join key being derived from the
  JWT signing key with its own label. Any master can check a token without the state holding the
  secret: the journal and the snapshots never contain a usable join token.

- `ca` (version 2) is the SHA-256 of the cluster CA certificate (64 hex): the agent pins the CA on
  first contact, so the token is the only thing copied to a new host. The secret does not cover it:
  a token whose fingerprint was altered only makes the agent refuse the genuine master.
`parse` refuses versions it does not know, naming them.

Pure (no I/O, no clock); error messages never contain the token or its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from orca.errors import Unauthorized

__all__ = ["PREFIX", "VERSION", "VERSIONS", "JoinToken", "join_key", "new_id", "make", "parse", "verify",
           "looks_like_join_token", "ROLES"]

PREFIX = "ORCAJOIN"
VERSION = 2
VERSIONS = (1, 2)
ROLES = ("worker",)  # masters join through their config; only workers exchange join tokens
_LABEL = b"orca/join/v1"
_ID_RE = re.compile(r"[0-9a-f]{16}")
_SECRET_RE = re.compile(r"[0-9a-f]{64}")
_MAX_LEN = 256


@dataclass(frozen=True)
class JoinToken:
    """A parsed join token; `ca_fingerprint` is None in version 1."""

    version: int
    id: str
    secret: str = ""
    ca_fingerprint: str | None = None

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"JoinToken(version={self.version}, id={self.id!r})"


def join_key(signing_key: bytes) -> bytes:
    """The key join-token secrets are made with: HMAC-SHA256(signing key, "orca/join/v1")."""
    return hmac.new(signing_key, _LABEL, hashlib.sha256).digest()


def new_id() -> str:
    """A fresh join-token id (the leader draws it; the state machine only records it)."""
    return secrets.token_hex(8)


def _secret(key: bytes, token_id: str) -> str:
    return hmac.new(key, token_id.encode(), hashlib.sha256).hexdigest()


def make(key: bytes, token_id: str, ca_fingerprint: str | None = None) -> str:
    """The join token for a recorded id (version 2 with the CA's fingerprint, else version 1); the
    same id always gives the same token."""
    if not _ID_RE.fullmatch(token_id):
        raise ValueError("join token id: expected 16 lowercase hex characters")
    if ca_fingerprint is not None:
        if not _SECRET_RE.fullmatch(ca_fingerprint):
            raise ValueError("CA fingerprint: expected 64 lowercase hex characters")
        return f"{PREFIX}-2-{ca_fingerprint}-{token_id}-{_secret(key, token_id)}"
    return f"{PREFIX}-1-{token_id}-{_secret(key, token_id)}"


def looks_like_join_token(text: str) -> bool:
    """Whether `text` is meant as a join token (rather than a JWT): it has our prefix."""
    return isinstance(text, str) and text.startswith(PREFIX + "-")


def parse(text: str) -> JoinToken:
    """Split a join token into its fields; raise `Unauthorized` when it is not one we understand."""
    if not isinstance(text, str) or len(text) > _MAX_LEN or not looks_like_join_token(text):
        raise Unauthorized("malformed join token")
    parts = text.split("-")
    if len(parts) < 2 or not parts[1].isascii() or not parts[1].isdigit() or len(parts[1]) > 3:
        raise Unauthorized("malformed join token")
    version = int(parts[1])
    if version not in VERSIONS:
        raise Unauthorized(f"join token version {version} is not supported by this master (it knows "
                           f"{', '.join(map(str, VERSIONS))})")
    fingerprint = None
    if version == 2:
        if len(parts) != 5 or not _SECRET_RE.fullmatch(parts[2]):
            raise Unauthorized("malformed join token")
        fingerprint = parts.pop(2)
    if len(parts) != 4 or not _ID_RE.fullmatch(parts[2]) or not _SECRET_RE.fullmatch(parts[3]):
        raise Unauthorized("malformed join token")
    return JoinToken(version=version, id=parts[2], secret=parts[3], ca_fingerprint=fingerprint)


def verify(key: bytes, text: str) -> JoinToken:
    """Parse and check the secret in constant time; the caller then checks the recorded id
    (known, unused, unrevoked, unexpired) in the replicated state."""
    token = parse(text)
    if not hmac.compare_digest(token.secret.encode(), _secret(key, token.id).encode()):
        raise Unauthorized("invalid join token")
    return token
