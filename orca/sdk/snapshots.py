"""Backup and restore over the API: `Client.snapshot_save` / `Client.snapshot_restore` call these.

A restore is three kinds of request, all to the leader: begin (the file's header; the cluster checks it
is empty and that it knows the schema version), one PUT per chunk of the body, then commit. Each is an
ordinary idempotent write, so a leader failover in the middle is ridden through by the client's
retries; a restore that the new leader does not know any more (begun before a restore of someone else)
answers 409 and is started again by running the command again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from orca import snapshot

if TYPE_CHECKING:
    from orca.client import Client

__all__ = ["save", "restore"]


def save(client: Client) -> bytes:
    data = client.request("GET", "/api/v1/snapshot", raw="bytes")
    snapshot.parse(data)  # never hand back (or write) a file that does not verify
    return data


def restore(client: Client, data: bytes, *, force: bool = False,
            on_progress: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    header, body = snapshot.parse(data)
    begun = client.request("POST", "/api/v1/snapshot/restore", json={"header": header, "force": bool(force)})
    restore_id, chunks, size = str(begun["restore_id"]), int(begun["chunks"]), int(begun["chunk_bytes"])
    base = f"/api/v1/snapshot/restore/{quote(restore_id, safe='')}"
    for n in range(chunks):
        client.request("PUT", f"{base}/{n}", data=body[n * size:(n + 1) * size])
        if on_progress is not None:
            on_progress(n + 1, chunks)
    return client.request("POST", f"{base}/commit", json={})
