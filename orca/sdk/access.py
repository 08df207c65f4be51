"""Who may do what, and what they may read: API tokens, join tokens, secrets and webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from orca.sdk.errors import field
from orca.sdk.transport import Transport

__all__ = ["AccessMixin"]


class AccessMixin(Transport):
    """The token, secret and webhook calls of a client."""

    def create_token(self, role: str, name: str | None = None, ttl_s: float | None = None,
                     idempotency_key: str | None = None, *, node: str | None = None,
                     projects: Sequence[str] | None = None) -> dict[str, Any]:
        """Ask the leader for a recorded token -> `{"token", "jti", "name", "role", "node", ...}` (shown
        once). An agent token is bound to `node` (required for role "agent"; its name defaults to it).
        `projects` (deployer only) scopes the token: it writes only services of those projects and may
        reference secrets granted to them (see `orca secrets`)."""
        body: dict[str, Any] = {"role": role, "ttl_s": ttl_s}
        if name is not None:
            body["name"] = name
        if node is not None:
            body["node"] = node
        if projects is not None:
            body["projects"] = list(projects)
        return self.request("POST", "/api/v1/tokens", json=body, idempotency_key=idempotency_key)

    def create_join_token(self, role: str = "worker", *, ttl_s: float | None = 86400.0, node: str | None = None,
                          rotate: bool = False, idempotency_key: str | None = None) -> dict[str, Any]:
        """A one-time join token an agent exchanges for its node credential -> `{"token", "id", "expires_at",
        "node", "rotated": [ids revoked by rotate], ...}` (the token is shown once). `node` restricts it to
        one node id; `rotate` first revokes every unused join token; `ttl_s=None`: no expiry."""
        body: dict[str, Any] = {"role": role, "ttl_s": ttl_s, "rotate": rotate}
        if node is not None:
            body["node"] = node
        return self.request("POST", "/api/v1/cluster/join-tokens", json=body, idempotency_key=idempotency_key)

    def list_join_tokens(self) -> list[dict[str, Any]]:
        """Join tokens with their state (used_by, revoked, expires_at); never the tokens themselves."""
        return field(self.request("GET", "/api/v1/cluster/join-tokens"), "join_tokens")

    def revoke_join_token(self, token_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/cluster/join-tokens/{quote(token_id, safe='')}",
                            idempotency_key=idempotency_key)

    def list_tokens(self) -> list[dict[str, Any]]:
        """Recorded tokens (never the token strings themselves)."""
        return field(self.request("GET", "/api/v1/tokens"), "tokens")

    def revoke_token(self, jti: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/tokens/{quote(jti, safe='')}",
                            idempotency_key=idempotency_key)

    def webhooks(self) -> list[dict[str, Any]]:
        """Registered GitHub webhooks `{"id", "repo", "service", "branch", "created_at", "created_by",
        "invocations": [{"delivery", "event", "ref", "at", "action", "reason", "version"}]}`, the
        invocations newest first; never a secret."""
        return field(self.request("GET", "/api/v1/webhooks"), "webhooks")

    def add_webhook(self, repo: str, service: str, branch: str = "main", secret: str | None = None,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Register a webhook: a push to `repo` (`owner/name`) on `branch` redeploys `service`
        -> `{"id", "repo", "service", "branch", "secret"}`. Without `secret` (16-256 characters) the
        server makes one; either way this answer is the only place it is ever shown."""
        body: dict[str, Any] = {"repo": repo, "service": service, "branch": branch}
        if secret is not None:
            body["secret"] = secret
        return self.request("POST", "/api/v1/webhooks", json=body, idempotency_key=idempotency_key)

    def remove_webhook(self, webhook_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """-> `{"id", "removed": true}`; `NOT_FOUND` (404) for an unknown id."""
        return self.request("DELETE", f"/api/v1/webhooks/{quote(webhook_id, safe='')}",
                            idempotency_key=idempotency_key)

    def set_secret(self, key: str, value: str, idempotency_key: str | None = None, *,
                   projects: Sequence[str] | None = None, all_projects: bool = False) -> dict[str, Any]:
        """Create or replace a secret (admin) -> `{"key", "created", "grants"}`; the value is never returned.

        `projects` grants it to those projects, `all_projects=True` to every project; with neither a new
        secret is admin-only (only an admin's deploy may reference it) and an existing one keeps its grants.
        """
        body: dict[str, Any] = {"key": key, "value": value}
        if projects is not None or all_projects:
            body["grants"] = {"all_projects": all_projects, "projects": list(projects or [])}
        return self.request("POST", "/api/v1/secrets", json=body, idempotency_key=idempotency_key)

    def grant_secret(self, key: str, projects: Sequence[str] = (), all_projects: bool = False,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Replace a secret's grants, value untouched (admin) -> `{"key", "grants"}`; no projects and
        `all_projects=False` make it admin-only."""
        return self.request("PUT", f"/api/v1/secrets/{quote(key, safe='')}/grants",
                            json={"all_projects": all_projects, "projects": list(projects)},
                            idempotency_key=idempotency_key)

    def list_secrets(self) -> list[dict[str, Any]]:
        """Secret keys with `created_at`/`updated_at` and `grants` `{all_projects, projects}` (never values)."""
        return field(self.request("GET", "/api/v1/secrets"), "secrets")

    def delete_secret(self, key: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/secrets/{quote(key, safe='')}", idempotency_key=idempotency_key)

