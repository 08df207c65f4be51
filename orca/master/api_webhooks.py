"""GitHub webhooks: register/list/remove (tokens) and the delivery endpoint (HMAC, no token).

Delivery checks, in order: rate limit per source address (429 + Retry-After); a known repository and an
`X-Hub-Signature-256` that matches one of its webhooks' secrets, compared in constant time over the raw
body (else 401, and nothing is recorded); then one Raft entry does the rest (replay check, branch
match, redeploy). GitHub does not follow redirects, so a follower forwards the delivery to the leader
itself instead of answering 307.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from orca.errors import Invalid, NotReady, RateLimited, Unauthorized
from orca.master import views
from orca.master.http import json_response, parse_json_object, read_body, read_json
from orca.master.ratelimit import RateLimiter
from orca.master.secrets import SecretBox

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["WebhookEndpoints"]

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
FORWARDED_HEADERS = ("X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256", "Content-Type")


class WebhookEndpoints:
    def __init__(self, api: MasterApi, box: SecretBox, per_minute: int = 60, burst: int = 20) -> None:
        self.api = api
        self.box = box
        self.limiter = RateLimiter(per_minute, burst)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/webhooks", self.list)
        r.add_post("/api/v1/webhooks", self.register)
        r.add_delete("/api/v1/webhooks/{id}", self.remove)
        r.add_post("/api/v1/webhooks/github", self.github)

    async def list(self, request: web.Request) -> web.Response:
        def body(state: dict[str, Any]) -> dict[str, Any]:
            return {"webhooks": [
                {"id": h["id"], "repo": h["repo"], "service": h["service"], "branch": h["branch"],
                 "created_at": views.iso(h["created_at"]), "created_by": h.get("created_by"),
                 "invocations": [dict(i, at=views.iso(i["at"])) for i in reversed(h["invocations"])]}
                for h in sorted(state["webhooks"].values(), key=lambda h: h["created_at"])]}
        return await self.api.read(request, body)

    async def register(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"repo", "service", "branch", "secret"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        repo, service, branch = body.get("repo"), body.get("service"), body.get("branch", "main")
        if not isinstance(repo, str) or not REPO_RE.match(repo):
            raise Invalid("repo: expected 'owner/name'", {"field": "repo"})
        if not isinstance(service, str) or not service:
            raise Invalid("service: expected a service name", {"field": "service"})
        if not isinstance(branch, str) or not BRANCH_RE.match(branch):
            raise Invalid("branch: expected a branch name", {"field": "branch"})
        secret = body.get("secret")
        if secret is None:
            secret = secrets.token_hex(24)  # a webhook always has a secret: generated and shown once
        elif not isinstance(secret, str) or not 16 <= len(secret) <= 256:
            raise Invalid("secret: expected 16 to 256 characters", {"field": "secret"})
        result = await self.api.write(request, "register_webhook", {
            "id": uuid.uuid4().hex[:12], "repo": repo, "service": service, "branch": branch,
            "secret_ciphertext": self.box.seal(secret)})
        return json_response({**{k: result[k] for k in ("id", "repo", "service", "branch")}, "secret": secret},
                             status=201)

    async def remove(self, request: web.Request) -> web.Response:
        return json_response(await self.api.write(request, "remove_webhook", {"id": request.match_info["id"]}))

    async def github(self, request: web.Request) -> web.Response:
        decision = self.limiter.check(request.remote or "-", "github")
        if not decision.allowed:
            raise RateLimited("too many webhook deliveries from this source", decision.retry_after_s)
        raw = await read_body(request)
        if not self.api.raft.is_leader:
            return await self._forward(request, raw)
        signature = request.headers.get("X-Hub-Signature-256", "")
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        if not signature.startswith("sha256="):
            raise Unauthorized("missing or malformed X-Hub-Signature-256")
        try:
            payload = parse_json_object(raw)
            repo = payload["repository"]["full_name"]
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("signature does not match any registered webhook") from None
        hooks = self.api.raft.read(lambda s: [(h["id"], h["secret_ciphertext"]) for h in s["webhooks"].values()
                                              if h["repo"] == repo])
        matched = [hook_id for hook_id, sealed in hooks if _signature_ok(self.box.open(sealed), raw, signature)]
        if not matched:
            raise Unauthorized("signature does not match any registered webhook")
        if not delivery or len(delivery) > 100:
            raise Invalid("missing X-GitHub-Delivery")
        results = []
        for hook_id in matched:
            results.append(await self.api.raft.propose("webhook_delivery", {
                "id": hook_id, "delivery": f"{hook_id}:{delivery}", "event": event, "ref": payload.get("ref")},
                actor=f"github:{repo}"))
        return json_response({"event": event, "results": results})

    async def _forward(self, request: web.Request, raw: bytes) -> web.Response:
        leader = self.api.leader_url()
        if leader is None:
            raise NotReady("no leader is known")
        headers = {k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers}
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.post(leader + request.raw_path, data=raw, headers=headers) as resp:
                body = await resp.read()
                return web.Response(body=body, status=resp.status,
                                    content_type=resp.content_type or "application/json")
        except (aiohttp.ClientError, TimeoutError):
            raise NotReady(f"could not forward the delivery to the leader {leader}") from None


def _signature_ok(secret: str | None, raw: bytes, signature: str) -> bool:
    if secret is None:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)

