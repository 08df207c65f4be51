"""Join tokens on the masters: admins mint, list and revoke them; an agent exchanges one, once, for its
node-bound credential (`POST /api/v1/agent/join`, authenticated by the join token itself).

The exchange answers `{"node_id", "token", "jti"}`; on a TLS cluster the agent also sends the CSR of
its key and the answer adds its node certificate and the CA bundle, and the tokens are version 2
(they carry the CA fingerprint the agent pins: orca.jointoken).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca import auth, jointoken, tls
from orca.errors import Invalid
from orca.master import views
from orca.master.api_tls import sign_node
from orca.master.http import json_response, read_json
from orca.state import ops_join

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["JoinEndpoints", "DEFAULT_TTL_S", "MAX_TTL_S"]

DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 365 * 24 * 3600
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")


class JoinEndpoints:
    """The join-token routes. Contract: `api.write` commits as the caller (the exchange has no
    caller claims: its actor is the join token id); `api.raft.read` reads the applied state."""

    def __init__(self, api: MasterApi) -> None:
        self.api = api
        self.key = jointoken.join_key(api.info.signing_key)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/agent/join", self.join)
        r.add_get("/api/v1/cluster/join-tokens", self.list_tokens)
        r.add_post("/api/v1/cluster/join-tokens", self.create_token)
        r.add_delete("/api/v1/cluster/join-tokens/{id}", self.revoke_token)

    # --- admin --------------------------------------------------------------------------------------
    async def list_tokens(self, request: web.Request) -> web.Response:
        return await self.api.read(request, lambda s: {"join_tokens": _views(s.get("join_tokens", {}).values())})

    async def create_token(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"role", "ttl_s", "node", "rotate"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        role = body.get("role", "worker")
        if role not in jointoken.ROLES:
            raise Invalid(f"role: expected one of {', '.join(jointoken.ROLES)}", {"field": "role"})
        ttl = body.get("ttl_s", DEFAULT_TTL_S)
        if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool)
                                or not 0 < ttl <= MAX_TTL_S):
            raise Invalid(f"ttl_s: expected seconds from 1 to {MAX_TTL_S}, or null for no expiry",
                          {"field": "ttl_s"})
        node = body.get("node")
        if node is not None and (not isinstance(node, str) or not auth.NODE_ID_RE.fullmatch(node)):
            raise Invalid("node: expected a node id ([a-z0-9-]{1,63})", {"field": "node"})
        rotate = body.get("rotate", False)
        if not isinstance(rotate, bool):
            raise Invalid("rotate: expected true or false", {"field": "rotate"})
        now = time.time()
        record = await self.api.write(request, "create_join_token", {
            "id": jointoken.new_id(), "role": role, "node": node, "rotate": rotate,
            "expires_at": None if ttl is None else int(now + ttl + 0.999)})
        out = _views([record])[0]
        fingerprint = self.api.tls.signer() if self.api.tls is not None else None
        out.update(token=jointoken.make(self.key, record["id"], fingerprint), rotated=record.get("rotated", []))
        if record.get("replayed"):
            out["replayed"] = True
        return json_response(out, status=201)

    async def revoke_token(self, request: web.Request) -> web.Response:
        record = await self.api.write(request, "revoke_join_token", {"id": request.match_info["id"]})
        return json_response(_views([record])[0])

    # --- agents -------------------------------------------------------------------------------------
    async def join(self, request: web.Request) -> web.Response:
        """Exchange a join token for the agent token of `node_id` (201), once; see orca.state.ops_join."""
        self.api._require_leader()
        header = request.headers.get("Authorization", "")
        token = jointoken.verify(self.key, header[len("Bearer "):].strip() if header.startswith("Bearer ") else "")
        body = await read_json(request)
        unknown = set(body) - {"node_id", "nonce", "csr", "names"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        node = body.get("node_id")
        if not isinstance(node, str) or not auth.NODE_ID_RE.fullmatch(node):
            raise Invalid("node_id: expected a node id ([a-z0-9-]{1,63})", {"field": "node_id"})
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
            raise Invalid("nonce: expected 32 to 128 URL-safe characters, kept by the agent for a retry",
                          {"field": "nonce"})
        digest = hashlib.sha256(nonce.encode()).hexdigest()
        if self.api.tls is not None:
            # Checked before the token is spent: a bad CSR must not burn a single-use token.
            try:
                tls.csr_public_key(body.get("csr"))
            except tls.TlsError as err:
                raise Invalid(f"{err} (this cluster runs TLS: send the CSR of the node's key)",
                              {"field": "csr"}) from None
        now = time.time()
        # Refuse from the applied state first (no log entry for a refusal); the op decides again, in order.
        self.api.raft.read(lambda s: ops_join.check_join(s, token.id, node, digest, now))
        # Signed before the token is spent: a refusal here (a name of another node) leaves it usable.
        signed = sign_node(self.api.tls, self.api, node, body["csr"], body.get("names")) \
            if self.api.tls is not None else None
        result = await self.api.raft.propose("join_node", {
            "id": token.id, "node_id": node, "jti": uuid.uuid4().hex, "iat": int(now),
            "nonce_digest": digest}, actor=f"join:{token.id}")
        credential, _ = auth.mint_token(self.api.info.signing_key, role="agent", name=node, node=node,
                                        now=result["iat"], jti=result["jti"])
        answer = {"node_id": node, "token": credential, "jti": result["jti"]}
        if signed is not None:
            answer.update(signed)
        return json_response(answer, status=200 if result.get("replayed") else 201)


def _views(records: Any) -> list[dict[str, Any]]:
    return [{"id": r["id"], "role": r["role"], "node": r.get("node"), "created_at": views.iso(r.get("created_at")),
             "created_by": r.get("created_by"), "expires_at": views.iso(r.get("expires_at")),
             "revoked": r["revoked"], "revoked_at": views.iso(r.get("revoked_at")), "used_by": r.get("used_by"),
             "used_at": views.iso(r.get("used_at"))}
            for r in sorted(records, key=lambda r: (r.get("created_at") or 0, r["id"]))]
