"""Private registry credentials: `registry_auth = "${secrets.REGISTRY}"` in a spec (orca.spec).

The spec holds only the reference; the secret's value travels like any `${secrets.KEY}` of `env` (only in
the leader's push to the agents that run the service, subject to the secret's grants) and is used by the
agent for `docker pull` only. It is never logged, stored in the state or echoed in an error: every message
here names the secret key at most. Two value formats are accepted:
  user:password                              (the registry is the image's own)
  {"username": "...", "password": "..."}      JSON, optionally with "serveraddress"
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_credentials", "MAX_CREDENTIALS"]

MAX_CREDENTIALS = 16 * 1024


def parse_credentials(value: str, key: str) -> dict[str, str]:
    """Docker's `auth_config` from a secret value; ValueError naming only `key` when malformed."""
    bad = ValueError(f"secret {key} is not registry credentials ('user:password' or JSON with username and "
                     "password)")
    if not isinstance(value, str) or not value or len(value) > MAX_CREDENTIALS:
        raise bad
    text = value.strip()
    if text.startswith("{"):
        try:
            data: Any = json.loads(text)
        except ValueError:
            raise bad from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data.get(k)
                                                 for k in ("username", "password")):
            raise bad
        out = {"username": data["username"], "password": data["password"]}
        if isinstance(data.get("serveraddress"), str) and data["serveraddress"]:
            out["serveraddress"] = data["serveraddress"]
        return out
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise bad
    return {"username": user, "password": password}
