"""A digest of the replicated state: equal on two masters exactly when their states are equal.

`apply` is deterministic, so every master builds the same dicts in the same insertion order; msgpack
of the whole state (insertion order kept) is therefore a canonical encoding across masters. Used by
`GET /api/v1/cluster/digest` (admin): operators compare masters at the same applied index (as etcd's
HashKV does), and the API fuzz tier checks that a refused request changed nothing. The state holds no
plaintext secret (secrets are sealed; tokens are not stored), so the digest reveals nothing but change.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import msgpack

__all__ = ["state_digest"]


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of the state's msgpack encoding; pickle if a value is outside msgpack's range."""
    try:
        raw = msgpack.packb(state, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        raw = pickle.dumps(state, protocol=5)
    return hashlib.sha256(raw).hexdigest()
