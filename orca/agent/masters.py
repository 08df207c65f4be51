"""Which masters an agent talks to: the cluster's replicated member list, learnt from the masters.

An agent's config names masters only to find the cluster the first time. Masters come and go at runtime
(`orca cluster add-master` / `remove-master`, a master replaced at a new address): the leader's answers
to `register` and `heartbeat` carry `masters`, the API URLs of the replicated member list (the same
list as `GET /api/v1/cluster/info`, which an agent token may not read: agent tokens satisfy no human
route). The agent follows that list from then on, and keeps it in `data_dir/masters.json` so that a
restart after every configured master was replaced still finds the cluster. Configured masters the list
does not name are tried last (they may be how an operator points a lost agent at a rebuilt cluster).

The list comes from a master the agent already trusts (its credential and, with TLS, the cluster CA),
but it is still bounded and checked: at most `MAX_MASTERS` URLs of at most `MAX_URL_CHARS`, http(s)
with a host, no credentials, query or fragment, and never plain http for a cluster configured with
https (a list must not downgrade the link the agent's credential travels on).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MAX_MASTERS", "valid_master_list", "MasterList"]

log = logging.getLogger("orca.agent")

MAX_MASTERS = 15
MAX_URL_CHARS = 512
FILE_NAME = "masters.json"


def _url_ok(url: Any, https_only: bool) -> bool:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or not url.isascii() or not url.isprintable():
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or (https_only and parts.scheme != "https"):
        return False
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        return False
    if parts.path not in ("", "/") or (port is not None and port == 0):
        return False
    return True


def valid_master_list(value: Any, https_only: bool) -> list[str] | None:
    """The master URLs of a reply's `masters` (trailing slash dropped, duplicates removed, order kept),
    or None when it is absent or any entry is not acceptable (the whole list is then ignored)."""
    if not isinstance(value, list) or not value or len(value) > MAX_MASTERS:
        return None
    out: list[str] = []
    for url in value:
        if not _url_ok(url, https_only):
            return None
        url = url.rstrip("/")
        if url not in out:
            out.append(url)
    return out


class MasterList:
    """The agent's masters: the learnt list (persisted) first, then the configured ones it does not name."""

    def __init__(self, configured: Sequence[str], data_dir: Path | None) -> None:
        self.configured = [m.rstrip("/") for m in configured]
        self.https_only = any(m.startswith("https://") for m in self.configured)
        self.path = Path(data_dir) / FILE_NAME if data_dir is not None else None
        self.learnt: list[str] = self._load()

    @property
    def urls(self) -> list[str]:
        return [*self.learnt, *(m for m in self.configured if m not in self.learnt)]

    def _load(self) -> list[str]:
        if self.path is None:
            return []
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return []
        try:
            value = json.loads(raw[:64 * 1024])
        except ValueError:
            value = None
        urls = valid_master_list(value.get("masters") if isinstance(value, dict) else None, self.https_only)
        if urls is None:
            log.warning("ignoring unreadable %s", self.path)
            return []
        return urls

    def learn(self, value: Any) -> bool:
        """Take a reply's `masters`; True when the list changed (it is then saved and logged)."""
        urls = valid_master_list(value, self.https_only)
        if urls is None or urls == self.learnt:
            return False
        before = self.learnt
        self.learnt = urls
        log.info("the cluster's masters are now %s (were %s)", ", ".join(urls), ", ".join(before or self.configured))
        if self.path is not None:
            from orca.agent.agent import write_atomic  # the agent's own atomic, fsynced write

            try:
                write_atomic(self.path, json.dumps({"masters": urls}).encode())
            except OSError as exc:
                log.warning("could not save %s: %s", self.path, exc)
        return True
