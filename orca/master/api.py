"""The master's HTTP API: handlers only; the rules they share live in `orca.master.http`.

Reads are served from this master's applied state (headers `X-Orca-Leader`, `X-Orca-Applied-Index`, and
`X-Orca-Leader-Contact-Age`: how stale they may be); `?consistent=true` sends them to the leader, which
commits a barrier first. Writes are served by the leader only: a follower answers 307 to a leader it heard
from within the election timeout, else 503 CLUSTER_NOT_READY (so does /readyz), and the leader returns
only after the entry is applied, with its result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from orca import __version__, auth, bounds, secret_scopes, spec, timefilter
from orca.errors import Forbidden, Invalid, InvalidSpec, NotFound, NotLeader, NotReady, OrcaError, ServiceNotFound
from orca.master import blocking as blocking_query
from orca.master import status_groups, views
from orca.master.http import (
    POLICY,
    TokenChecker,
    add_rate_limit_headers,
    json_response,
    make_middlewares,
    read_json,
)
from orca.master.leadership import Leadership
from orca.master.metrics_live import register_raft_and_services
from orca.master.ratelimit import RateLimiter
from orca.master.status_index import MAX_CURSOR_LEN, StatusIndex
from orca.mesh import DEFAULT_VIP_RANGE
from orca.metrics import CONTENT_TYPE, MasterMetrics
from orca.raft import RaftNode
from orca.state import schema
from orca.state.digest import state_digest

__all__ = ["MasterApi", "MasterInfo"]

IDEMPOTENCY_KEY_MAX = 200
LAG_DEGRADED = 1000  # a follower this many entries behind the leader is not "healthy", even if connected


@dataclass(frozen=True)
class MasterInfo:
    """Who the masters are: id -> API URL, and id -> Raft address (for connection state)."""

    node_id: str
    api_urls: dict[str, str]
    raft_addrs: dict[str, str]
    signing_key: bytes
    max_body_bytes: int
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 100
    cluster_id: str = ""  # orca.protocol.cluster_id_of(cluster secret): agents label containers with it
    metrics_require_token: bool = False
    mesh_vip_range: str = DEFAULT_VIP_RANGE  # [mesh] vip_range: deploys carry it, apply picks VIPs in it


class MasterApi:
    """Builds the aiohttp application of one master around its `RaftNode` and `Leadership`."""

    def __init__(self, raft: RaftNode, leadership: Leadership, info: MasterInfo,
                 metrics: MasterMetrics | None = None,
                 extra_components: dict[str, Callable[[], dict[str, Any]]] | None = None,
                 extra_routes: list[Callable[[web.Application], None]] | None = None) -> None:
        self.extra_components = dict(extra_components or {})
        self.extra_routes = list(extra_routes or [])
        self.raft = raft
        self.leadership = leadership
        self.info = info
        self.metrics = metrics or MasterMetrics()
        self.started = time.time()
        register_raft_and_services(self.metrics.live, raft, lambda: len(self.master_directory()))
        self.checker = TokenChecker(info.signing_key, self._is_revoked)
        self.tls: Any = None  # the MasterTls when [tls] is on (orca.master.tls_manager)
        self._openapi: bytes | None = None
        self._watch: blocking_query.AppliedWatch | None = None
        # (op, outcome) -> the labelled counter: `labels()` validates and locks on every call. Both come
        # from code (op names, error codes), so the dict stays small.
        self._write_counters: dict[tuple[str, str], Any] = {}
        self.status_index = StatusIndex()

    # --- wiring -----------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        limiter = RateLimiter(self.info.rate_limit_per_minute, self.info.rate_limit_burst)
        app = web.Application(client_max_size=self.info.max_body_bytes,
                              middlewares=make_middlewares(self.checker, self.metrics, self.info.max_body_bytes,
                                                           limiter))
        app.on_response_prepare.append(add_rate_limit_headers)
        app.on_shutdown.append(self._release_waiters)
        r = app.router
        r.add_get("/livez", self.livez)
        r.add_get("/readyz", self.readyz)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics_view)
        r.add_get("/api/v1/health", self.health)
        r.add_get("/api/v1/status/{component}", self.component_status)
        r.add_get("/api/v1/openapi.json", self.openapi_document)
        r.add_get("/api/v1/cluster/leader", self.cluster_leader)
        r.add_get("/api/v1/cluster/health", self.cluster_health)
        r.add_get("/api/v1/cluster/info", self.cluster_info)
        r.add_get("/api/v1/cluster/status", self.cluster_status)
        r.add_get("/api/v1/cluster/digest", self.cluster_digest)
        r.add_get("/api/v1/status", self.status)
        r.add_get("/api/v1/services/{name}", self.service)
        r.add_get("/api/v1/events", self.events)
        r.add_post("/api/v1/deploy", self.deploy)
        r.add_post("/api/v1/services/{name}/scale", self.scale)
        r.add_delete("/api/v1/services/{name}", self.stop_service)
        r.add_post("/api/v1/services/{name}/start", self.start_service)
        r.add_delete("/api/v1/projects/{name}", self.stop_project)
        r.add_post("/api/v1/stop", self.stop_all)
        r.add_get("/api/v1/tokens", self.list_tokens)
        r.add_post("/api/v1/tokens", self.create_token)
        r.add_delete("/api/v1/tokens/{jti}", self.revoke_token)
        r.add_post("/api/v1/services/{name}/promote", self.promote)
        r.add_post("/api/v1/services/{name}/rollback", self.rollback)
        r.add_get("/api/v1/services/{name}/history", self.history)
        for add in self.extra_routes:
            add(app)
        return app

    def routes_without_policy(self, app: web.Application) -> list[tuple[str, str]]:
        """Registered routes missing from the policy table (a test keeps this empty)."""
        missing = []
        for route in app.router.routes():
            if route.method == "HEAD" or route.resource is None:
                continue
            key = (route.method, route.resource.canonical)
            if key not in POLICY:
                missing.append(key)
        return missing

    # --- shared helpers ---------------------------------------------------------------------------
    def _is_revoked(self, jti: str) -> bool:
        return bool(self.raft.read(lambda s: (s["tokens"].get(jti) or {}).get("revoked", False)))

    def master_directory(self) -> dict[str, dict[str, str]]:
        """id -> {raft, api} of every master: the replicated member list once a membership change seeded
        it (orca.state.ops_members), else this master's config."""
        listed = self.raft.read(lambda s: {k: {"raft": v["raft"], "api": v["api"]}
                                           for k, v in (s.get("masters") or {}).items()})
        if listed:
            return listed
        out = {mid: {"raft": self.info.raft_addrs.get(mid, ""), "api": url} for mid, url in self.info.api_urls.items()}
        out.setdefault(self.info.node_id, {"api": self.info.api_urls.get(self.info.node_id, "")})
        out[self.info.node_id]["raft"] = self.raft.settings.listen
        return out

    def api_url_of(self, node_id: str | None) -> str | None:
        """A master's API URL (redirect targets follow the replicated member list)."""
        if node_id is None:
            return None
        m = self.master_directory().get(node_id)
        return m["api"] if m else self.info.api_urls.get(node_id)

    def leader_url(self) -> str | None:
        return self.api_url_of(self.raft.leader_id)

    def _require_serving(self) -> None:
        """A master that stopped applying the log (a newer schema met mid-upgrade) serves nothing: 503,
        which clients answer by trying another master."""
        halted = self.raft.halted
        if halted is not None:
            raise NotReady(f"this master stopped applying the log: {halted.get('reason')}; upgrade it",
                           {"halted_at_index": halted.get("index")})

    def _require_leader(self) -> None:
        self._require_serving()
        if self.raft.is_leader:
            return
        url = self.leader_url()
        if url is None:
            raise NotReady("no leader heard from within the election timeout; the cluster is electing, has "
                           "no quorum, or this master is cut off",
                           {"leader_contact_age_s": _round(self.raft.leader_contact_age)})
        raise NotLeader(url)

    async def write(self, request: web.Request, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Commit one entry as the request's actor, with its Idempotency-Key; return the op's result.

        Every write passes the caller's project scope and secret grants first (`orca.secret_scopes`):
        a refusal is a 403 and nothing is proposed.
        """
        self._require_leader()
        claims: auth.Claims | None = request.get("claims")
        authority = secret_scopes.Authority.of(claims)
        self.raft.read(lambda s: secret_scopes.check_write(s, op, args, authority))
        actor = claims.sub if claims else None
        if op == "deploy":  # the leader decides the range new services' mesh VIPs come from (orca.mesh)
            args = {**args, "vip_range": self.info.mesh_vip_range}
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if not key or len(key) > IDEMPOTENCY_KEY_MAX:
                raise Invalid(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
            key = f"{actor or '-'}:{key}"  # scoped per principal, as Stripe does
        try:
            result = await self.raft.propose(op, args, key=key, actor=actor)
        except OrcaError as err:
            self._count_write(op, err.code)
            raise
        self._count_write(op, "ok")
        return result

    def _count_write(self, op: str, outcome: str) -> None:
        counter = self._write_counters.get((op, outcome))
        if counter is None:
            counter = self._write_counters[(op, outcome)] = self.metrics.raft_writes.labels(op, outcome)
        counter.inc()

    async def read(self, request: web.Request, fn: Callable[[dict[str, Any]], Any], *,
                   blocking: bool = False) -> web.Response:
        """Serve a read from local state, or linearizably from the leader with `?consistent=true`.

        `blocking`: the route takes `?index=N&wait=D` (orca.master.blocking): the answer waits until this
        master's state moved past N and the answer changed, or D passed; a consistent read commits its
        barrier after that wait."""
        self._require_serving()
        query = blocking_query.parse(request.query) if blocking else None
        if query is not None:
            await self.watch.wait(query, lambda: self.raft.read(fn))
            self._require_serving()
        if request.query.get("consistent", "").lower() in ("1", "true", "yes"):
            self._require_leader()
            await self.raft.barrier()
        body = self.raft.read(fn)
        return json_response(body, headers=self._read_headers())

    @property
    def watch(self) -> blocking_query.AppliedWatch:
        """The waiters' wake-up on applied entries, made on first use (on the event loop, as it must be)."""
        if self._watch is None:
            self._watch = blocking_query.AppliedWatch(lambda: self.raft.applied_index,
                                                      self.raft.store.applied_listeners)
        return self._watch

    async def _release_waiters(self, _app: web.Application) -> None:
        """Shutting down: blocking queries answer now instead of holding the shutdown for their wait."""
        if self._watch is not None:
            self._watch.release()

    def applied_index(self) -> int:
        return self._watch.index() if self._watch is not None else self.raft.applied_index

    def _read_headers(self) -> dict[str, str]:
        return {"X-Orca-Leader": self.leader_url() or "", "X-Orca-Applied-Index": str(self.applied_index()),
                "X-Orca-Leader-Contact-Age": _contact_age(self.raft.leader_contact_age)}

    # --- health and metrics -----------------------------------------------------------------------
    def _health_body(self) -> dict[str, Any]:
        leader = self.raft.leader_id
        peers_up = sum(1 for addr in self.info.raft_addrs.values() if self.raft.peer_connected(addr))
        ready = self.raft.ready and leader is not None
        lag = self.raft.lag
        if not ready:
            status = "unhealthy"
        elif peers_up < len(self.info.raft_addrs) or lag > LAG_DEGRADED:
            status = "degraded"
        else:
            status = "healthy"
        return {"status": status, "node_id": self.info.node_id, "state": self.raft.role(),
                "is_leader": self.raft.is_leader, "leader_id": leader, "leader_url": self.leader_url(),
                "cluster_size": len(self.info.api_urls), "cluster_ready": ready, "term": self.raft.term,
                "commit_index": self.raft.commit_index, "applied_index": self.raft.applied_index,
                "lag": lag, "leader_contact_age_s": _round(self.raft.leader_contact_age),
                "version": __version__, "timestamp": views.iso(time.time()),
                "schema_version": schema.SCHEMA_VERSION, "halted": self.raft.halted}

    async def livez(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        self._require_serving()
        if not (self.raft.ready and self.raft.leader_id is not None):
            raise NotReady("not ready: Raft has no leader or this master has not caught up")
        return json_response({"status": "ready", "leader_id": self.raft.leader_id})

    async def health(self, request: web.Request) -> web.Response:
        return json_response(self._health_body())

    def _raft_component(self) -> dict[str, Any]:
        in_flight, oldest = self.raft.in_flight()
        peers_up = sum(1 for addr in self.info.raft_addrs.values() if self.raft.peer_connected(addr))
        leader = self.raft.leader_id
        if leader is None or not self.raft.ready:
            status = "down"
        elif peers_up < len(self.info.raft_addrs):
            status = "degraded"
        else:
            status = "up"
        return {"status": status, "live_pullers": peers_up,
                "backlog": max(0, self.raft.commit_index - self.raft.applied_index),
                "in_flight": in_flight, "oldest_unacked_seconds": round(oldest, 3),
                "detail": {"state": self.raft.role(), "term": self.raft.term, "leader_id": leader,
                           "has_quorum": self.raft.has_quorum, "leader_changes": self.raft.leader_changes,
                           "established_term": self.leadership.established_term}}

    def _components(self) -> dict[str, dict[str, Any]]:
        return {"raft": self._raft_component(), **{name: fn() for name, fn in self.extra_components.items()}}

    async def component_status(self, request: web.Request) -> web.Response:
        name = request.match_info["component"]
        components = self._components()
        if name not in components:
            raise NotFound(f"unknown component {name!r}; known: {', '.join(sorted(components))}",
                           {"component": name})
        return json_response(components[name])

    async def healthz(self, request: web.Request) -> web.Response:
        """Dory's health document: every component as `{status, message, last_check}`, the overall status by
        Dory's rule (orca.master.status_groups), 503 when unhealthy."""
        now = views.iso(time.time())
        leader = self.raft.leader_id
        components = {name: status_groups.dory_component(name, c, leader, now)
                      for name, c in self._components().items()}
        overall = status_groups.dory_overall(components)
        body = {"status": overall, "timestamp": now, "version": __version__, "components": components,
                "node_id": self.info.node_id}
        return json_response(body, status=503 if overall == "unhealthy" else 200)

    async def metrics_view(self, request: web.Request) -> web.Response:
        """Public by default (the route policy); with `security.metrics_require_token` the scraper must send
        a bearer token of role viewer or above, like any read: the series name every service."""
        if self.info.metrics_require_token:
            claims = self.checker.check(request.headers.get("Authorization"))
            if not auth.role_satisfies(claims.role, "viewer"):
                raise Forbidden(f"role {claims.role!r} may not read metrics; needs 'viewer'",
                                {"role": claims.role, "required": "viewer"})
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def openapi_document(self, request: web.Request) -> web.Response:
        """Built once from the router of the running app (all routes are added before it serves)."""
        if self._openapi is None:
            from orca.master import openapi  # imports the schemas, which read this module's bounds

            self._openapi = json.dumps(openapi.build_document(request.app), separators=(",", ":")).encode()
        return web.Response(body=self._openapi, content_type="application/json")

    # --- cluster ----------------------------------------------------------------------------------
    async def cluster_digest(self, request: web.Request) -> web.Response:
        digest, index = self.raft.read(lambda s: (state_digest(s), self.raft.applied_index))
        return json_response({"node_id": self.info.node_id, "applied_index": index, "digest": digest})

    async def cluster_leader(self, request: web.Request) -> web.Response:
        leader = self.raft.leader_id
        if leader is None:
            raise NotReady("no leader is known")
        url = self.api_url_of(leader)
        return json_response({"leader_id": leader, "leader_url": url,
                              "term": self.raft.term, "is_self": leader == self.info.node_id},
                             headers={"X-Current-Leader": url or ""})

    def _masters(self) -> list[dict[str, Any]]:
        leader = self.raft.leader_id
        out = []
        for node_id, m in sorted(self.master_directory().items()):
            url = m["api"]
            if node_id == self.info.node_id:
                healthy, state = True, self.raft.role()
            else:
                healthy = self.raft.peer_connected(m["raft"])
                state = "leader" if node_id == leader else ("follower" if healthy else "unreachable")
            out.append({"id": node_id, "api_url": url, "state": state, "healthy": healthy,
                        "is_self": node_id == self.info.node_id})
        return out

    async def cluster_info(self, request: web.Request) -> web.Response:
        masters = self._masters()

        def body(state: dict[str, Any]) -> dict[str, Any]:
            nodes = [{"id": n["id"], "address": n.get("address"), "status": n.get("status"),
                      "eligibility": n.get("eligibility"), "capacity": n.get("capacity"),
                      "last_heartbeat": views.iso(n.get("renewed_at"))} for n in state["nodes"].values()]
            return {"masters": masters, "leader": self.raft.leader_id, "leader_url": self.leader_url(),
                    "term": self.raft.term, "commit_index": self.raft.commit_index,
                    "applied_index": self.raft.applied_index, "nodes": nodes,
                    "services": len(state["services"]), "cluster_id": self.info.cluster_id or None}
        return await self.read(request, body)

    async def cluster_status(self, request: web.Request) -> web.Response:
        health = self._health_body()
        return json_response({"node_id": self.info.node_id, "state": health["state"],
                              "leader_id": health["leader_id"], "leader_url": health["leader_url"],
                              "term": health["term"], "is_leader": health["is_leader"],
                              "cluster_size": health["cluster_size"], "cluster_ready": health["cluster_ready"],
                              "commit_index": health["commit_index"], "nodes": self._masters()},
                             headers=self._read_headers())

    async def cluster_health(self, request: web.Request) -> web.Response:
        health = self._health_body()
        masters = self._masters()
        return json_response({"status": health["status"], "healthy": health["status"] != "unhealthy",
                              "cluster_ready": health["cluster_ready"], "leader_id": health["leader_id"],
                              "term": health["term"], "total_nodes": len(masters),
                              "healthy_nodes": sum(1 for m in masters if m["healthy"]),
                              "timestamp": health["timestamp"]},
                             status=200 if health["cluster_ready"] else 503)

    # --- services (reads) -------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        """Every service's summary, by name; `?limit=N` (1-1000) pages it, `?cursor=` (a page's
        `next_cursor`) goes on after that name. Pages come from an index made once per state change."""
        q = request.query
        project = q.get("project") or None
        limit = _int_param(q, "limit", 100, 1, 1000) if q.get("limit") else None
        cursor = q.get("cursor") or None
        if cursor is not None and len(cursor) > MAX_CURSOR_LEN:
            raise Invalid(f"cursor: at most {MAX_CURSOR_LEN} characters", {"param": "cursor"})
        # The state lock is held while the function runs (RaftNode.read): generation and state agree.
        return await self.read(request, lambda s: self.status_index.page(
            s, self.raft.store.layout_generation, project, cursor, limit), blocking=True)

    async def service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def body(state: dict[str, Any]) -> dict[str, Any]:
            svc = state["services"].get(name)
            if svc is None:
                raise ServiceNotFound(f"service not found: {name}", {"service": name})
            return views.service_detail(state, svc)
        return await self.read(request, body, blocking=True)

    async def events(self, request: web.Request) -> web.Response:
        q = request.query
        limit = _int_param(q, "limit", 100, 1, 1000)
        since_seq: int | None = None
        since_time: float | None = None
        if q.get("since"):
            since_seq, since_time = _parse_since(q["since"])
        return await self.read(request, lambda s: {"events": views.events_query(
            s, service=q.get("service") or None, type_=q.get("type") or None, since_seq=since_seq,
            since_time=since_time, limit=limit)}, blocking=True)

    # --- services (writes) ------------------------------------------------------------------------
    async def deploy(self, request: web.Request) -> web.Response:
        self._require_leader()
        body = await read_json(request)
        valid, errors = spec.validate_deploy_body(body)
        if not valid:
            raise InvalidSpec("no valid service in the deploy", {"errors": errors})
        items = [{"name": s["name"], "spec": s, "digest": spec.spec_digest(s)} for s in valid]
        result = await self.write(request, "deploy", {"services": items})
        return json_response({"deployed": result["deployed"], "versions": result.get("versions", {}),
                              "errors": errors, **_replayed(result)})

    async def scale(self, request: web.Request) -> web.Response:
        self._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"replicas"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        replicas = body.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= spec.MAX_REPLICAS:
            raise Invalid(f"replicas: expected an integer from 0 to {spec.MAX_REPLICAS}", {"field": "replicas"})
        result = await self.write(request, "scale", {"name": request.match_info["name"], "replicas": replicas})
        return json_response(result)

    async def stop_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        purge = request.query.get("purge", "").lower() in ("1", "true", "yes")
        result = await self.write(request, "purge_service" if purge else "stop_service", {"name": name})
        return json_response(result)

    async def start_service(self, request: web.Request) -> web.Response:
        return json_response(await self.write(request, "start_service", {"name": request.match_info["name"]}))

    async def stop_project(self, request: web.Request) -> web.Response:
        return json_response(await self.write(request, "stop_project", {"project": request.match_info["name"]}))

    async def stop_all(self, request: web.Request) -> web.Response:
        return json_response(await self.write(request, "stop_all", {}))

    async def promote(self, request: web.Request) -> web.Response:
        return json_response(await self.write(request, "promote", {"name": request.match_info["name"]}))

    async def rollback(self, request: web.Request) -> web.Response:
        return json_response(await self.write(request, "rollback", {"name": request.match_info["name"]}))

    async def history(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def body(state: dict[str, Any]) -> dict[str, Any]:
            svc = state["services"].get(name)
            if svc is None:
                raise ServiceNotFound(f"service not found: {name}", {"service": name})
            return {"name": name, "version": svc["version"], "versions": views.history_view(svc)}
        return await self.read(request, body)

    # --- tokens -----------------------------------------------------------------------------------
    async def list_tokens(self, request: web.Request) -> web.Response:
        return await self.read(request, lambda s: {"tokens": views.token_list(s)})

    async def create_token(self, request: web.Request) -> web.Response:
        self._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"role", "name", "ttl_s", "node", "projects"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        if body.get("ttl_s") is not None:
            bounds.bounded_number(body["ttl_s"], "ttl_s", 1.0, MAX_TOKEN_TTL_S)
        # Mint first (validates role, name, ttl, node, projects), then record; the token itself is never
        # stored: it is re-signed from the recorded claims, so an idempotent replay returns the very same token.
        # An agent token is bound to its node; its name defaults to the node id.
        node = body.get("node")
        name = body.get("name", node if body.get("role") == "agent" and isinstance(node, str) else "")
        _, claims = auth.mint_token(self.info.signing_key, role=body.get("role", ""), name=name,
                                    now=time.time(), ttl_s=body.get("ttl_s"), node=node, projects=body.get("projects"))
        args: dict[str, Any] = {"jti": claims.jti, "name": claims.name, "role": claims.role, "iat": claims.iat,
                                "expires_at": claims.exp, "node": claims.node}
        if claims.projects is not None:
            args["projects"] = list(claims.projects)
        record = await self.write(request, "create_token", args)
        token, _ = auth.mint_token(self.info.signing_key, role=record["role"], name=record["name"],
                                   now=record["iat"],
                                   ttl_s=None if record["expires_at"] is None
                                   else record["expires_at"] - record["iat"], jti=record["jti"],
                                   node=record.get("node"), projects=record.get("projects"))
        out = views.token_list({"tokens": {record["jti"]: {k: v for k, v in record.items() if k != "replayed"}}})[0]
        return json_response({**out, "token": token, **_replayed(record)}, status=201)

    async def revoke_token(self, request: web.Request) -> web.Response:
        record = await self.write(request, "revoke_token", {"jti": request.match_info["jti"]})
        out = views.token_list({"tokens": {record["jti"]: {k: v for k, v in record.items() if k != "replayed"}}})[0]
        return json_response(out)


MAX_TOKEN_TTL_S = 10 * 365 * 86400.0  # ten years: an `exp` beyond it is a mistake (or an attack on the encoder)


def _replayed(result: dict[str, Any]) -> dict[str, Any]:
    return {"replayed": True} if result.get("replayed") else {}


def _int_param(q: Any, name: str, default: int, lo: int, hi: int) -> int:
    return bounds.query_int(q.get(name), name, default, lo, hi)


def _parse_since(raw: str) -> tuple[int | None, float | None]:
    """`since` is an event sequence number (a cursor), or a time: a relative age (`1h`, `1d`) or an ISO-8601
    time (orca.timefilter)."""
    if raw.isascii() and raw.isdigit():
        return bounds.query_int(raw, "since", 0, 0, bounds.MAX_INT), None
    return None, timefilter.parse_since(raw, time.time(), allow_epoch=False)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _contact_age(seconds: float | None) -> str:
    """`X-Orca-Leader-Contact-Age`: seconds since this master last heard from a leader (how stale a local
    read may be; 0 on the leader), or `unknown` when it never has."""
    return "unknown" if seconds is None else f"{seconds:.3f}"
