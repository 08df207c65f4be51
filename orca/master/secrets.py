"""Secrets at rest: encrypted by the proposer with a key derived from the cluster secret.

The Raft journal and snapshots hold only Fernet ciphertext; any master (they all hold the cluster
secret) can decrypt what the dispatcher sends to an agent at start time. Values are never returned by
the API, logged, or put into events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["SecretBox"]


class SecretBox:
    def __init__(self, cluster_secret: bytes) -> None:
        key = hmac.new(cluster_secret, b"orca/secrets/v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, ciphertext: str) -> str | None:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except (InvalidToken, ValueError):
            return None

    def reveal(self, raft: Any, keys: Iterable[str]) -> dict[str, str]:
        """Plain values of the wanted keys that exist (a missing one is reported by the agent at start)."""
        wanted = set(keys)
        sealed = raft.read(lambda s: {k: v["ciphertext"] for k, v in s["secrets"].items() if k in wanted})
        out = {}
        for key, ciphertext in sealed.items():
            value = self.open(ciphertext)
            if value is not None:
                out[key] = value
        return out
