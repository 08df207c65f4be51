"""The cluster: masters and membership, nodes and their drains, backup and restore."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from orca.sdk.errors import field
from orca.sdk.transport import Transport

__all__ = ["ClusterMixin"]


class ClusterMixin(Transport):
    """The cluster, node and snapshot calls of a client."""

    def cluster_info(self) -> dict[str, Any]:
        """Masters, leader, term, commit index and nodes."""
        return self.request("GET", "/api/v1/cluster/info")

    def discover(self) -> list[str]:
        """Ask any master for the members (`/cluster/info`), add their API URLs to the ones this client
        tries, and return every member's URL (the configured ones that are not members stay, last)."""
        masters = field(self.cluster_info(), "masters")
        members = [str(m["api_url"]).rstrip("/") for m in masters
                   if isinstance(m, dict) and isinstance(m.get("api_url"), str)
                   and urlsplit(m["api_url"]).scheme in ("http", "https") and urlsplit(m["api_url"]).netloc]
        self.endpoints.add(members)
        return members

    def cluster_leader(self) -> dict[str, Any]:
        """The current leader; `CLUSTER_NOT_READY` (after retries) when there is none."""
        return self.request("GET", "/api/v1/cluster/leader")

    def cluster_status(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/cluster/status")

    def members(self) -> dict[str, Any]:
        """The masters as the leader sees them: id, Raft and API address, role, last contact, lag."""
        return self.request("GET", "/api/v1/cluster/members")

    def add_master(self, node_id: str, raft: str, api: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Add a running master (started with the current members as its peers); returns once committed."""
        return self.request("POST", "/api/v1/cluster/members", json={"id": node_id, "raft": raft, "api": api},
                            idempotency_key=idempotency_key)

    def remove_master(self, node_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/cluster/members/{quote(node_id, safe='')}",
                            idempotency_key=idempotency_key)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: status, eligibility, labels, capacity, allocated, allocation count, drain."""
        return field(self.request("GET", "/api/v1/cluster/nodes"), "nodes")

    def node(self, node_id: str, *, consistent: bool = False) -> dict[str, Any]:
        """One node, with its `allocation_list`; `NODE_NOT_FOUND` when unknown."""
        return self.request("GET", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}", consistent=consistent)

    def drain(self, node_id: str, deadline_s: float = 300, force: bool = False,
              idempotency_key: str | None = None) -> dict[str, Any]:
        """Start draining a node (admin) -> `{"node_id", "eligibility": "draining", "drain": {...}}`.

        Nothing new is placed there; its replicas move off start-before-stop, whatever is left at
        `deadline_s` is stopped (`force`: at once), then the node is `ineligible`. See `wait_drained`.
        """
        return self.request("POST", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}/drain",
                            json={"deadline_s": deadline_s, "force": bool(force)}, idempotency_key=idempotency_key)

    def undrain(self, node_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Make a node eligible again (admin); nothing already moved comes back."""
        return self.request("POST", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}/undrain",
                            idempotency_key=idempotency_key)

    def remove_node(self, node_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Forget a down or drained node (admin) -> `{"node_id", "removed": true}`; `CONFLICT` (409) when
        the node is ready and not drained."""
        return self.request("DELETE", f"/api/v1/cluster/nodes/{quote(node_id, safe='')}",
                            idempotency_key=idempotency_key)

    # ------------------------------------------------------------------ backup and restore

    def snapshot_save(self) -> bytes:
        """A consistent snapshot of the whole replicated state, from the leader (admin): the bytes of an
        `orca.snapshot` file (its header says index, term, schema version and checksum)."""
        from orca.sdk import snapshots

        return snapshots.save(self)

    def snapshot_restore(self, data: bytes, force: bool = False,
                         on_progress: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
        """Load a snapshot file into this (empty, unless `force`) cluster (admin) -> `{"restored", "index",
        "term", "counts"}`. `on_progress(chunks_sent, chunks)` after each chunk."""
        from orca.sdk import snapshots

        return snapshots.restore(self, data, force=force, on_progress=on_progress)

