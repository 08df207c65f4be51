"""GitHub and Gitea webhooks: register/list/remove (tokens) and the delivery endpoint (HMAC, no token).

Delivery checks, in order: rate limit per source address (429 + Retry-After); the signature over the raw
body, before a byte of it is parsed (GitHub's `X-Hub-Signature-256: sha256=<hex>` or Gitea's
`X-Gitea-Signature: <hex>`, both HMAC-SHA256 with the webhook's secret, compared in constant time
against the secrets of the webhooks whose repository name occurs in the body, at most 16 per
repository; else 401 and nothing is recorded); only then the JSON, and its repository must be the
signing webhook's. One Raft entry does the rest: the replay checks (the
delivery id seen before, or the same event with the same body digest within the replay window, so a
captured delivery re-sent under a fresh `X-GitHub-Delivery` is ignored), the branch match and the
redeploy. The leader stamps the time and the window; apply decides from them alone, so every master
records the same verdict. GitHub does not follow redirects, so a follower forwards the delivery to the
leader itself instead of answering 307.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from orca.errors import Conflict, Invalid, NotReady, RateLimited, Unauthorized
from orca.master import views
from orca.master.http import json_response, parse_json_object, read_body, read_json
from orca.master.ratelimit import RateLimiter
from orca.master.secrets import SecretBox
from orca.master.tls_manager import peer_ssl

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["WebhookEndpoints"]

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
FORWARDED_HEADERS = ("X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256", "X-Gitea-Event",
                     "X-Gitea-Delivery", "X-Gitea-Signature", "Content-Type")
HEX_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
# A body seen again within this window (same webhook, same event) is a replay: 24 h covers any
# redelivery a forge makes on its own; a captured body can be replayed at most once per window.
REPLAY_WINDOW_S = 86400.0
# Past this many bytes of HMAC work (body size x webhooks) the check runs off the event loop.
HMAC_INLINE_BYTES = 256 * 1024
MAX_WEBHOOKS_PER_REPO = 16


class WebhookEndpoints:
    def __init__(self, api: MasterApi, box: SecretBox, per_minute: int = 60, burst: int = 20,
                 replay_window_s: float = REPLAY_WINDOW_S) -> None:
        self.api = api
        self.box = box
        self.limiter = RateLimiter(per_minute, burst)
        self.replay_window_s = replay_window_s

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
        same_repo = self.api.raft.read(lambda s: sum(1 for h in s["webhooks"].values() if h["repo"] == repo))
        if same_repo >= MAX_WEBHOOKS_PER_REPO:  # each one costs an HMAC of every delivery for the repo
            raise Conflict(f"{repo} already has {same_repo} webhooks (at most {MAX_WEBHOOKS_PER_REPO})",
                           {"repo": repo, "max": MAX_WEBHOOKS_PER_REPO})
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
        raw = await read_body(request)  # bounded by the API's max body size, chunked or not (413)
        if not self.api.raft.is_leader:
            return await self._forward(request, raw)
        signatures = claimed_signatures(request.headers)
        if not signatures:
            raise Unauthorized("missing or malformed X-Hub-Signature-256 or X-Gitea-Signature")
        hooks = self.api.raft.read(lambda s: [(h["id"], h["repo"], h["secret_ciphertext"])
                                              for h in s["webhooks"].values()])
        # Bound the HMAC work an unsigned body can cause: only webhooks whose repository's name occurs in
        # the body are candidates (a byte search, not a parse; the repository is checked again after).
        keyed = [(hook_id, repo, self.box.open(sealed)) for hook_id, repo, sealed in hooks
                 if repo_mentioned(raw, repo)]
        if len(raw) * max(1, len(keyed)) > HMAC_INLINE_BYTES:
            signed = await asyncio.to_thread(signed_by, keyed, raw, signatures)
        else:
            signed = signed_by(keyed, raw, signatures)
        if not signed:
            raise Unauthorized("signature does not match any registered webhook")
        # Authenticated: only now is the body parsed (a hostile one cannot reach the parser unsigned).
        try:
            payload = parse_json_object(raw)
            repo = payload["repository"]["full_name"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise Invalid("the delivery is not a JSON object with repository.full_name") from None
        matched = [hook_id for hook_id, hook_repo in signed if hook_repo == repo]
        if not matched:
            raise Unauthorized("signature does not match any registered webhook")
        event = request.headers.get("X-GitHub-Event") or request.headers.get("X-Gitea-Event") or ""
        delivery = request.headers.get("X-GitHub-Delivery") or request.headers.get("X-Gitea-Delivery") or ""
        if not delivery or len(delivery) > 100:
            raise Invalid("missing X-GitHub-Delivery (or X-Gitea-Delivery)")
        ref = payload.get("ref") if isinstance(payload, dict) and isinstance(payload.get("ref"), str) else None
        body_digest = hashlib.sha256(raw).hexdigest()
        results = []
        for hook_id in matched:
            results.append(await self.api.raft.propose("webhook_delivery", {
                "id": hook_id, "delivery": f"{hook_id}:{delivery}", "event": event[:100], "ref": ref,
                "body_digest": body_digest, "replay_window_s": self.replay_window_s},
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
                    session.post(leader + request.raw_path, data=raw, headers=headers,
                                 ssl=peer_ssl()) as resp:
                body = await resp.read()
                return web.Response(body=body, status=resp.status,
                                    content_type=resp.content_type or "application/json")
        except (aiohttp.ClientError, TimeoutError):
            raise NotReady(f"could not forward the delivery to the leader {leader}") from None


def repo_mentioned(raw: bytes, repo: str) -> bool:
    """Whether `owner/name` occurs in the body as a JSON string would carry it (`/` escaped or not)."""
    name = repo.encode()
    return b'"' + name + b'"' in raw or b'"' + name.replace(b"/", b"\\/") + b'"' in raw


def claimed_signatures(headers: Any) -> list[str]:
    """The well-formed hex HMAC-SHA256 digests a delivery claims (GitHub's and/or Gitea's header), lower case."""
    out = []
    github = headers.get("X-Hub-Signature-256", "")
    if github.startswith("sha256=") and HEX_SHA256_RE.match(github[len("sha256="):]):
        out.append(github[len("sha256="):].lower())
    gitea = headers.get("X-Gitea-Signature", "")
    if HEX_SHA256_RE.match(gitea):
        out.append(gitea.lower())
    return out


def signed_by(hooks: Sequence[tuple[str, str, str | None]], raw: bytes,
              signatures: Sequence[str]) -> list[tuple[str, str]]:
    """(id, repo) of every webhook whose secret signs `raw` with one of `signatures` (constant-time compare)."""
    out = []
    for hook_id, repo, secret in hooks:
        if secret is None:
            continue
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, claimed) for claimed in signatures):
            out.append((hook_id, repo))
    return out

