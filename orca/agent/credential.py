"""The credential an agent presents to the masters, and where it comes from.

The agent's `token_file` holds one of two things:
- a node token (a JWT of role "agent" bound to this node: `orca token create --role agent --node ID`):
  used as is, it always wins (an admin re-credentials a node by handing it a new one);
- a join token (`orca cluster join-token worker`): exchanged once, at the first start, for this node's
  token, which is kept in `data_dir/node.token` (mode 0600) and reused on every restart. The join
  token is single use: after the exchange it only matters again if `node.token` is lost (then the
  admin mints a new credential).

A retried exchange (the answer was lost) sends the same random nonce, kept in `data_dir/join.nonce`
until the credential is stored: the leader then returns the same credential instead of refusing the
now-used token. Anything else in `token_file` is sent as is (the masters decide).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from orca import auth, jointoken

__all__ = ["Credential", "NODE_TOKEN_FILE", "NONCE_FILE"]

NODE_TOKEN_FILE = "node.token"
NONCE_FILE = "join.nonce"

log = logging.getLogger("orca.agent")


def _write_private(path: Path, data: bytes) -> None:
    # Imported late: orca.agent.agent imports this module.
    from orca.agent.agent import write_atomic

    write_atomic(path, data, mode=0o600)


class Credential:
    """`token` is the bearer for register and heartbeat (None while a join token awaits its exchange);
    `join_token` is the configured join token, or None when the config holds a node token."""

    def __init__(self, node_id: str, configured: str, data_dir: Path) -> None:
        self.node_id = node_id
        self.dir = Path(data_dir)
        self.join_token: str | None = configured if jointoken.looks_like_join_token(configured) else None
        self.token: str | None = configured if self.join_token is None else self._load()

    def _load(self) -> str | None:
        path = self.dir / NODE_TOKEN_FILE
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read %s (%s): joining again with the configured join token", path, exc)
            return None
        if not self._for_me(token):
            log.warning("%s is not a credential of node %s: joining again with the configured join token",
                        path, self.node_id)
            return None
        return token

    def _for_me(self, token: str) -> bool:
        claims = auth.peek_claims(token)
        return bool(claims) and claims.get("role") == "agent" and claims.get("node") == self.node_id

    def nonce(self) -> str:
        """The exchange's nonce: made once and kept until the credential is stored."""
        path = self.dir / NONCE_FILE
        try:
            nonce = path.read_text().strip()
            if 32 <= len(nonce) <= 128:
                return nonce
        except FileNotFoundError:
            pass
        nonce = secrets.token_urlsafe(32)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(path, nonce.encode())
        return nonce

    def accept(self, reply: object) -> str | None:
        """Store the credential of a successful exchange; returns a problem, or None when stored."""
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not self._for_me(token):
            return f"the join answer holds no agent token for node {self.node_id}"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.dir / NODE_TOKEN_FILE, token.encode())
        (self.dir / NONCE_FILE).unlink(missing_ok=True)
        self.token = token
        return None
