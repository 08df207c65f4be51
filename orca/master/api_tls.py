"""The cluster CA over the API: who may see it (anyone: it is public), rotate it (admins), and how a
node gets and renews its certificate (`POST /api/v1/agent/certificate`).

Node identity under TLS comes from the client certificate the TLS layer verified against the cluster
CA (`orca://node/<id>`): `peer_identity` reads it, `require_node_certificate` refuses a request made
over TLS without the certificate of the node it speaks for.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca import tls
from orca.errors import Conflict, Forbidden, Invalid, NotFound
from orca.master.http import json_response, read_json
from orca.master.tls_manager import ca_args

if TYPE_CHECKING:
    from orca.master.api import MasterApi
    from orca.master.tls_manager import MasterTls

__all__ = ["TlsEndpoints", "peer_identity", "over_tls", "require_node_certificate", "sign_node"]

_MAX_NAMES = 8
# How long a rotated CA is trusted everywhere before anything is signed by it: agents fetch the new
# bundle on their next heartbeat, so a few heartbeats are enough; an agent offline for longer re-joins.
DEFAULT_OVERLAP_S = 60.0
_HOST_RE = re.compile(r"[A-Za-z0-9.:_-]{1,253}")


def over_tls(request: web.Request) -> bool:
    transport = getattr(request, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def peer_identity(request: web.Request) -> tls.Identity | None:
    """The orca identity of the verified client certificate of this connection, if any."""
    transport = getattr(request, "transport", None)
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is None:
        return None
    return tls.identity_of(sslobj.getpeercert(binary_form=True))


def require_node_certificate(request: web.Request, node_id: str) -> None:
    """Over TLS, 403 unless the client certificate is node `node_id`'s. Plain HTTP (the loopback dev
    cluster) is left to the token's node claim."""
    if not over_tls(request):
        return
    ident = peer_identity(request)
    if ident != tls.Identity("node", node_id):
        shown = f"{ident.role} {ident.id}" if ident else "none"
        raise Forbidden(f"the client certificate ({shown}) is not node {node_id!r}'s: a node speaks only for itself",
                        {"node": node_id})


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > _MAX_NAMES or not all(
            isinstance(n, str) and _HOST_RE.fullmatch(n) for n in value):
        raise Invalid(f"names: expected at most {_MAX_NAMES} host names or addresses", {"field": "names"})
    return value


def sign_node(master_tls: MasterTls, api: MasterApi, node_id: str, csr: Any, names: Any) -> dict[str, Any]:
    """Issue node `node_id` a certificate for the key in `csr`; the answer carries the CA bundle too.
    `names` (the node's advertised host) may not be another node's address (a master on the same host
    is fine: identities are the orca:// names, not addresses)."""
    try:
        public_key = tls.csr_public_key(csr)
    except tls.TlsError as err:
        raise Invalid(str(err), {"field": "csr"}) from None
    wanted = _names(names)
    taken = api.raft.read(lambda s: {tls.names_for_url(n["address"])[0] for n in s["nodes"].values()
                                     if n["id"] != node_id and tls.names_for_url(n.get("address") or "")})
    clash = sorted(set(wanted) & taken - {"127.0.0.1", "localhost", "::1"})
    if clash:
        raise Forbidden(f"name {clash[0]!r} belongs to another member of the cluster", {"name": clash[0]})
    ca_key, ca_cert = master_tls.current_ca()
    cert = tls.issue(ca_key, ca_cert, public_key, tls.Identity("node", node_id), wanted, time.time(),
                     master_tls.cert_days)
    return {"node_id": node_id, "certificate": cert.decode(), "ca_bundle": master_tls.bundle().decode(),
            "ca_fingerprint": tls.fingerprint(ca_cert)}


class TlsEndpoints:
    """Routes of the CA; they answer 404 NOT_FOUND on a master that runs without TLS."""

    def __init__(self, api: MasterApi, master_tls: MasterTls | None) -> None:
        self.api = api
        self.tls = master_tls
        # node id -> fingerprint of the CA that signed the certificate it last heartbeated with (leader memory)
        self.seen_issuers: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/cluster/ca", self.show)
        r.add_post("/api/v1/cluster/ca/rotate", self.rotate)
        r.add_post("/api/v1/cluster/ca/finish", self.finish)
        r.add_post("/api/v1/agent/certificate", self.certificate)

    def _need(self) -> MasterTls:
        if self.tls is None:
            raise NotFound("TLS is off on this master ([tls] enabled = false): there is no cluster CA")
        return self.tls

    async def show(self, request: web.Request) -> web.Response:
        """`fingerprint`: the CA that signs now; `cas`: every trusted CA; `bundle`: their PEMs."""
        master_tls = self._need()
        t, signing = master_tls.table(), master_tls.signer()
        cas = [{"fingerprint": fp, "current": fp == signing, "created_at": r["created_at"],
                "activate_at": r.get("activate_at", r["created_at"]), "not_after": r["not_after"]}
               for fp, r in sorted(t["cas"].items(), key=lambda kv: kv[1]["created_at"])]
        return json_response({"fingerprint": signing, "newest": t["current"], "cas": cas,
                              "bundle": master_tls.bundle().decode()})

    async def rotate(self, request: web.Request) -> web.Response:
        """A new CA becomes current; the old one stays trusted until `finish` (the overlap)."""
        self.api._require_leader()  # before anything else: a lone master answers every write with 503
        master_tls = self._need()
        body = await read_json(request)
        unknown = set(body) - {"overlap_s"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        overlap = body.get("overlap_s", DEFAULT_OVERLAP_S)
        if not isinstance(overlap, int | float) or isinstance(overlap, bool) or not 0 <= overlap <= 30 * 86400:
            raise Invalid("overlap_s: expected 0 to 30 days in seconds", {"field": "overlap_s"})
        key, cert = tls.new_ca(time.time())
        result = await self.api.write(request, "ca_rotate", ca_args(master_tls.box, key, cert, float(overlap)))
        return json_response({**result, "activate_at": time.time() + overlap}, status=201)

    async def finish(self, request: web.Request) -> web.Response:
        """End the overlap: stop trusting the previous CAs. Refused (409) while a ready node was last
        seen with a certificate of an old CA, unless `force`."""
        self.api._require_leader()  # before anything else: a lone master answers every write with 503
        master_tls = self._need()
        body = await read_json(request)
        unknown = set(body) - {"force"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        current = master_tls.table()["current"]
        if master_tls.signer() != current:
            raise Conflict("the new CA is not active yet: its overlap has not elapsed")
        if body.get("force") is not True:
            ready = self.api.raft.read(lambda s: sorted(n["id"] for n in s["nodes"].values() if n["status"] == "ready"))
            behind = [n for n in ready if self.seen_issuers.get(n) != current]
            if behind:
                raise Conflict(f"node {behind[0]!r} has not renewed its certificate from the new CA yet "
                               f"({len(behind)} node(s) behind); retry shortly, or pass force",
                               {"nodes": behind[:20]})
        result = await self.api.write(request, "ca_retire", {"current": current})
        return json_response(result)

    async def certificate(self, request: web.Request) -> web.Response:
        """A node's certificate for the node its agent token is bound to (first one, renewal, or after a
        CA rotation). Over TLS with a client certificate, that certificate must be the same node's.
        Not a Raft write: any master issues from the replicated CA, so it needs no leader."""
        master_tls = self._need()
        body = await read_json(request)
        unknown = set(body) - {"csr", "names"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        node = getattr(request.get("claims"), "node", None)
        if node is None:
            raise Forbidden("this agent token is not bound to a node")
        ident = peer_identity(request)
        if ident is not None and ident != tls.Identity("node", node):
            raise Forbidden("the client certificate and the agent token name different nodes", {"node": node})
        return json_response(sign_node(master_tls, self.api, node, body.get("csr"), body.get("names")), status=201)

    def note_heartbeat(self, request: web.Request, node_id: str) -> None:
        """Remember which CA signed the certificate a node heartbeats with (for `finish`)."""
        if self.tls is None:
            return
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der is None:
            return
        for fp, record in self.tls.table()["cas"].items():
            if tls.issued_by(der, record["cert_pem"].encode()):
                self.seen_issuers[node_id] = fp
                return
