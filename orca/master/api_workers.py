"""Master endpoints about workers: agent registration and heartbeats, nodes, and service logs (secrets:
`orca.master.api_secrets`).

Agents authenticate with their node-bound token (role "agent", claim `node`): a token speaks for its
own node only, so registering or heartbeating any other node id is 403 and changes nothing (checked
before anything is written or recorded). Their writes go to the leader like any other (a follower
answers 307). Heartbeats are not entries: the leader records them in its `HeartbeatBook` and the lease
monitor commits them in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from orca import bounds, protocol, timefilter
from orca.errors import Forbidden, Invalid, NodeNotFound, PayloadTooLarge, ServiceNotFound
from orca.master import views
from orca.master.api_tls import require_node_certificate
from orca.master.http import json_response, read_json
from orca.master.leases import HeartbeatBook
from orca.master.report_cache import ReportCache
from orca.master.secrets import SecretBox
from orca.master.tls_manager import peer_ssl
from orca.master.traffic import TrafficBook

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["WorkerEndpoints", "require_own_node"]


class WorkerEndpoints:
    def __init__(self, api: MasterApi, book: HeartbeatBook, secrets: SecretBox, heartbeat_s: float,
                 lease_ttl_s: float, traffic: TrafficBook | None = None) -> None:
        self.api = api
        self.book = book
        self.traffic = traffic
        self.secrets = secrets
        self.heartbeat_s = heartbeat_s
        self.lease_ttl_s = lease_ttl_s
        self.tls_routes: Any = None  # orca.master.api_tls.TlsEndpoints, set by orca.master.main
        self.report_cache = ReportCache()  # unchanged allocation reports are not validated again

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/agent/register", self.register)
        r.add_post("/api/v1/agent/heartbeat", self.heartbeat)
        r.add_get("/api/v1/cluster/nodes", self.nodes)
        r.add_get("/api/v1/cluster/nodes/{id}", self.node)
        r.add_post("/api/v1/cluster/nodes/{id}/drain", self.drain)
        r.add_post("/api/v1/cluster/nodes/{id}/undrain", self.undrain)
        r.add_delete("/api/v1/cluster/nodes/{id}", self.remove_node)
        r.add_get("/api/v1/services/{name}/logs", self.logs)

    # --- agents -----------------------------------------------------------------------------------
    async def register(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        try:
            msg = protocol.validate_register(await read_json(request))
        except protocol.ProtocolError as err:
            raise Invalid(str(err), {"field": err.field}) from None
        require_own_node(request, msg["node_id"])
        await self.api.write(request, "register_node", msg)
        self.book.touch(msg["node_id"])  # registering is a sign of life: the lease counts from now
        return json_response({"node_id": msg["node_id"], "leader": self.api.leader_url(),
                              "masters": self.master_urls(), "heartbeat_s": self.heartbeat_s,
                              "lease_ttl_s": self.lease_ttl_s, "cluster_id": self.api.info.cluster_id or None})

    def master_urls(self) -> list[str]:
        """The API URLs of the cluster's masters (the replicated member list once a membership change
        seeded it): agents follow it instead of their config (orca.agent.masters)."""
        return [m["api"] for _, m in sorted(self.api.master_directory().items()) if m.get("api")]

    async def heartbeat(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > protocol.HEARTBEAT_MAX_BYTES:
            raise PayloadTooLarge("heartbeat larger than 64 KiB", {"max_bytes": protocol.HEARTBEAT_MAX_BYTES})
        self.api._require_leader()
        body = await read_json(request, protocol.HEARTBEAT_MAX_BYTES)
        same = self.report_cache.lookup(body.get("node_id"), body.get("allocations", []))
        try:
            if same is None:
                hb = protocol.validate_heartbeat(body)
            else:  # the node's reports as last accepted: the rest of the message is still validated
                hb = protocol.validate_heartbeat({**body, "allocations": []})
                hb["allocations"] = same
        except protocol.ProtocolError as err:
            raise Invalid(str(err), {"field": err.field}) from None
        require_own_node(request, hb["node_id"])
        known = self.api.raft.read(lambda s: hb["node_id"] in s["nodes"])
        if not known:
            if self.api.raft.read(lambda s: hb["node_id"] in s.get("removed_nodes", {})):
                return json_response({"directive": "shutdown", "leader": self.api.leader_url(),
                                      "orchestrator_time": time.time()})
            raise NodeNotFound(f"node {hb['node_id']!r} is not registered; register first",
                               {"node": hb["node_id"]})
        packed = same if same is not None else self.report_cache.store(hb["node_id"], hb["allocations"])
        if packed is not None:
            hb["allocations"] = packed  # the book keeps it packed (orca.master.packed_reports)
        self.book.record(hb)
        if self.traffic is not None:
            self.traffic.record(hb["node_id"], hb)
        answer = {"directive": "continue", "leader": self.api.leader_url(), "masters": self.master_urls(),
                  "orchestrator_time": time.time()}
        if self.tls_routes is not None and self.tls_routes.tls is not None:
            # The agent renews its certificate when the current CA is not the one that signed it.
            self.tls_routes.note_heartbeat(request, hb["node_id"])
            answer["ca_fingerprint"] = self.tls_routes.tls.signer()
            answer["ca_trusted"] = sorted(self.tls_routes.tls.table()["cas"])
        return json_response(answer)

    # --- nodes ------------------------------------------------------------------------------------
    async def nodes(self, request: web.Request) -> web.Response:
        def body(s: dict[str, Any]) -> dict[str, Any]:
            by_node = views.allocations_by_node(s)
            return {"nodes": [views.node_view(s, n, mine=by_node.get(n["id"], []))
                              for _, n in sorted(s["nodes"].items())]}
        return await self.api.read(request, body, blocking=True)

    async def node(self, request: web.Request) -> web.Response:
        node_id = request.match_info["id"]

        def body(state: dict[str, Any]) -> dict[str, Any]:
            node = state["nodes"].get(node_id)
            if node is None:
                raise NodeNotFound(f"node {node_id!r} not found", {"node": node_id})
            return views.node_view(state, node, with_allocations=True)
        return await self.api.read(request, body, blocking=True)

    async def drain(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"deadline_s", "force"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        deadline = body.get("deadline_s", 300)
        if not isinstance(deadline, int | float) or isinstance(deadline, bool) or not 0 <= deadline <= 86400:
            raise Invalid("deadline_s: expected seconds from 0 to 86400", {"field": "deadline_s"})
        if not isinstance(body.get("force", False), bool):
            raise Invalid("force: expected true or false", {"field": "force"})
        return json_response(await self.api.write(request, "drain_node", {
            "node_id": request.match_info["id"], "deadline_s": deadline, "force": body.get("force", False)}))

    async def undrain(self, request: web.Request) -> web.Response:
        return json_response(await self.api.write(request, "undrain_node", {"node_id": request.match_info["id"]}))

    async def remove_node(self, request: web.Request) -> web.Response:
        return json_response(await self.api.write(request, "remove_node", {"node_id": request.match_info["id"]}))

    # --- logs -------------------------------------------------------------------------------------
    async def logs(self, request: web.Request) -> web.StreamResponse:
        """Proxy every replica's log from its agent, each line prefixed with the replica; any master."""
        name = request.match_info["name"]
        tail, follow = log_params(request)
        since, timestamps = log_filters(request)
        lines = log_lines(self.api.raft, name, tail, follow, since=since, timestamps=timestamps)
        first = await anext(lines, None)  # raises SERVICE_NOT_FOUND before the 200 is sent
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        if first is not None:
            await resp.write(first)
            async for line in lines:
                await resp.write(line)
        await resp.write_eof()
        return resp


async def fan_in(queue: asyncio.Queue[Any], pumps: list[Coroutine[Any, Any, None]]) -> AsyncIterator[Any]:
    """Run `pumps` (each puts items on `queue`, then None when it ends) and yield their items as they come,
    until every pump has ended; the pumps are cancelled if the reader goes away first."""
    tasks = [asyncio.create_task(p) for p in pumps]
    try:
        open_streams = len(tasks)
        while open_streams:
            item = await queue.get()
            if item is None:
                open_streams -= 1
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def require_own_node(request: web.Request, node_id: str) -> None:
    """403 unless the caller's agent token is bound to `node_id` (its `node` claim) and, over TLS, its
    client certificate is that node's.

    The auth middleware has already verified the token and its role; a token without a node claim
    never gets this far (orca.auth refuses it). Fails closed when claims are missing.
    """
    require_node_certificate(request, node_id)
    claims = request.get("claims")
    bound = getattr(claims, "node", None)
    if bound is None or bound != node_id:
        raise Forbidden(f"this agent token is bound to node {bound!r}; it may not act for node {node_id!r}",
                        {"node": node_id, "token_node": bound})


def log_params(request: web.Request) -> tuple[int, bool]:
    q = request.query
    tail = bounds.query_int(q.get("tail"), "tail", 100, 0, 10000)
    return tail, q.get("follow", "").lower() in ("1", "true", "yes")


def log_filters(request: web.Request) -> tuple[float | None, bool]:
    """`since` (a relative age, an ISO-8601 time or Unix seconds: orca.timefilter; 400 otherwise) and
    `timestamps` of the logs route."""
    q = request.query
    since = timefilter.parse_since(q["since"], time.time()) if q.get("since") else None
    return since, q.get("timestamps", "").lower() in ("1", "true", "yes")


# The time Docker stamps on a line when asked (`timestamps=1`): RFC 3339 with up to nanoseconds, UTC.
_DOCKER_STAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?(Z|[+-]\d\d:\d\d) ")


def split_stamp(line: bytes) -> tuple[float | None, bytes, bytes]:
    """(Unix seconds, the stamp with its space, the rest) of a line Docker stamped; (None, b"", line) when
    the line has no stamp (an agent's own note such as "(logs unavailable ...)")."""
    found = _DOCKER_STAMP.match(line)
    if found is None:
        return None, b"", line
    whole, fraction, zone = (g.decode() if g else "" for g in found.groups())
    try:
        when = dt.datetime.fromisoformat(whole + (fraction[:7] if fraction else "") + zone.replace("Z", "+00:00"))
    except ValueError:
        return None, b"", line
    return when.timestamp(), line[:found.end()], line[found.end():]


async def log_lines(raft: Any, name: str, tail: int, follow: bool, *, since: float | None = None,
                    timestamps: bool = False) -> AsyncIterator[bytes]:
    """Lines of every current replica's log, fetched from the agents concurrently and merged as they come.

    With `since` or `timestamps` the agents are asked for Docker's time stamps: `since` drops the lines
    stamped before it (the `tail` lines are counted before that filter, as the agents cut them), and
    the stamps stay on the lines only with `timestamps`, after the replica prefix.
    Raises ServiceNotFound on the first iteration when the service does not exist.
    """
    stamped = since is not None or timestamps
    def targets(state: dict[str, Any]) -> list[dict[str, Any]]:
        if name not in state["services"]:
            raise ServiceNotFound(f"service not found: {name}", {"service": name})
        out = []
        for alloc in sorted(state["allocations"].values(), key=lambda a: (a.get("index", 0), a["id"])):
            node = state["nodes"].get(alloc["node"])
            if alloc["service"] == name and alloc["desired"] in ("run", "migrate") and node is not None:
                out.append({"alloc": alloc["id"], "index": alloc.get("index", 0), "address": node["address"],
                            "push_token": node["push_token"]})
        return out
    allocs = raft.read(targets)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)
    timeout = aiohttp.ClientTimeout(total=None if follow else 15, sock_connect=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def pump(t: dict[str, Any]) -> None:
            prefix = f"[{name}.{t['index']} {t['alloc']}] ".encode()
            url = f"{t['address']}/v1/logs/{t['alloc']}?tail={tail}&follow={int(follow)}" + (
                "&timestamps=1" if stamped else "")
            try:
                async with session.get(url, headers={"Authorization": f"Bearer {t['push_token']}"},
                                       ssl=peer_ssl()) as r:
                    if r.status != 200:
                        await queue.put(prefix + f"(logs unavailable: HTTP {r.status})\n".encode())
                        return
                    async for line in r.content:
                        if stamped:
                            when, stamp, rest = split_stamp(line)
                            if since is not None and when is not None and when < since:
                                continue
                            line = stamp + rest if timestamps else rest
                        await queue.put(prefix + (line if line.endswith(b"\n") else line + b"\n"))
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                await queue.put(prefix + f"(logs unavailable: {type(err).__name__})\n".encode())
            finally:
                await queue.put(None)
        async for item in fan_in(queue, [pump(t) for t in allocs]):
            yield item
