"""The masters of the cluster at runtime: list them, add one, remove one (`orca cluster members`,
`add-master`, `remove-master`).

- `GET /api/v1/cluster/members` (viewer): every member with its Raft and API address, role, and, from the
  leader's view, whether it is connected, seconds since it last answered and how many entries it lags.
  A follower answers 307 to the leader (only the leader tracks its followers), or 503 without one.
- `POST /api/v1/cluster/members` `{"id", "raft": "HOST:PORT", "api": URL}` (admin): the new master
  must already run, started from an ordinary config whose `raft.peers` lists the current members; the
  leader records it in the replicated member list, then adds it to the Raft configuration, and it
  catches up from the leader's log or snapshot. Answers once the change is committed.
- `DELETE /api/v1/cluster/members/{id}` (admin): takes it out of the Raft configuration, then out of
  the list. Removing the leader first hands leadership to a caught-up follower (503: retry, the
  client does) and the new leader removes it.

One change at a time (this lock, and PySyncObj refuses a change while the previous one is not applied);
each is refused with 409 QUORUM_AT_RISK when it would leave the new configuration without a healthy
majority (orca.membership). The replicated list (orca.state.ops_members) is seeded from what the leader
knows at the first change; redirects, `cluster info` and Raft's peer check follow it from then on.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca.config import parse_host_port
from orca.errors import Conflict, Invalid, NotFound, NotReady
from orca.master.http import json_response, read_json
from orca.membership import check_add, check_remove
from orca.state import ops_members

if TYPE_CHECKING:
    from orca.master.api import MasterApi

__all__ = ["MemberEndpoints", "MAX_HEALTHY_LAG"]

MAX_HEALTHY_LAG = 1000  # entries: a follower further behind does not count towards a change's quorum


class MemberEndpoints:
    def __init__(self, api: MasterApi) -> None:
        self.api = api
        self._lock = asyncio.Lock()

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v1/cluster/members", self.list_members)
        r.add_post("/api/v1/cluster/members", self.add_member)
        r.add_delete("/api/v1/cluster/members/{id}", self.remove_member)

    # --- views ----------------------------------------------------------------------------------------
    def directory(self) -> dict[str, dict[str, str]]:
        return self.api.master_directory()

    def _rows(self) -> list[dict[str, Any]]:
        raft = self.api.raft
        members = raft.raft_members()
        progress = raft.peer_progress()
        commit = raft.commit_index
        leader = raft.leader_id
        known = self.directory()
        by_addr = {v["raft"]: k for k, v in known.items()}
        rows = []
        for addr in sorted(members | {v["raft"] for v in known.values()}, key=lambda a: (by_addr.get(a) or a)):
            mid = by_addr.get(addr) or raft.id_of(addr) or addr
            row: dict[str, Any] = {"id": mid, "raft": addr, "api": (known.get(mid) or {}).get("api"),
                                   "in_raft": addr in members, "listed": mid in known}
            if addr == raft.settings.listen:
                row.update(role=raft.role(), connected=True, last_contact_s=0.0, lag=0)
            else:
                p = progress.get(addr) or {}
                row.update(role="leader" if mid == leader else ("follower" if p.get("connected") else "unreachable"),
                           connected=p.get("connected", False), last_contact_s=p.get("last_contact_s"),
                           lag=max(0, commit - p["match_index"]) if "match_index" in p else None)
            rows.append(row)
        return rows

    def _healthy(self) -> set[str]:
        raft = self.api.raft
        commit = raft.commit_index
        ok = {raft.settings.listen}
        for addr, p in raft.peer_progress().items():
            if p["connected"] and commit - p["match_index"] <= MAX_HEALTHY_LAG:
                ok.add(addr)
        return ok

    async def list_members(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        return json_response({"members": self._rows(), "leader": self.api.raft.leader_id,
                              "term": self.api.raft.term, "commit_index": self.api.raft.commit_index})

    # --- changes --------------------------------------------------------------------------------------
    def _require_established(self) -> None:
        """A leader changes the membership only once it has committed an entry of its own term: before
        that, a change its predecessor left uncommitted may still be in the log, and two overlapping
        single-member changes could make two majorities (Raft's known single-server-change hazard)."""
        self.api._require_leader()
        if self.api.leadership is None or self.api.leadership.established_term != self.api.raft.term:
            raise NotReady("this leader was just elected and has not committed its first entry yet; retry")

    async def _ensure_seeded(self, actor: str | None) -> None:
        """Record the current members in the replicated list before the first change (once per cluster)."""
        if self.api.raft.read(ops_members.members_of):
            return
        raft = self.api.raft
        info = self.api.info
        seed = [{"id": info.node_id, "raft": raft.settings.listen, "api": info.api_urls[info.node_id]}]
        for addr in sorted(raft.raft_members() - {raft.settings.listen}):
            mid = raft.settings.peers.get(addr)
            if mid is None or mid not in info.api_urls:
                raise NotReady(f"the Raft member {addr} is not in this master's config; cannot name it",
                               {"raft": addr})
            seed.append({"id": mid, "raft": addr, "api": info.api_urls[mid]})
        await raft.propose("masters_seed", {"masters": seed}, actor=actor)

    async def add_member(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        unknown = set(body) - {"id", "raft", "api"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", {"field": sorted(unknown)[0]})
        item = ops_members.valid_member(body)
        try:
            host, _ = parse_host_port(item["raft"])
        except ValueError as e:
            raise Invalid(f"raft: {e}", {"field": "raft"}) from None
        if host in ("0.0.0.0", "::"):
            raise Invalid("raft: the address the others connect to, not a wildcard", {"field": "raft"})
        own = self.api.info.api_urls.get(self.api.info.node_id, "")
        if own and item["api"].split(":", 1)[0] != own.split(":", 1)[0]:
            raise Invalid(f"api: this cluster's masters speak {own.split(':', 1)[0]}://, got {item['api']!r}",
                          {"field": "api"})
        claims = request.get("claims")
        actor = claims.sub if claims else None
        started = time.monotonic()
        async with self._lock:
            self._require_established()
            await self._ensure_seeded(actor)
            raft = self.api.raft
            members = raft.raft_members()
            listed = self.directory().get(item["id"])
            wanted = {"raft": item["raft"], "api": item["api"]}
            if listed == wanted and item["raft"] in members:
                return json_response({**item, "added": False})
            if listed is not None and listed != wanted:
                raise Conflict(f"master {item['id']} is a member with other addresses; remove it first",
                              {"id": item["id"], **listed})
            if item["raft"] not in members:
                check_add(members, self._healthy(), item["raft"])
            await raft.propose("master_add", item, actor=actor)
            if item["raft"] not in raft.raft_members():
                try:
                    await raft.change_membership("add", item["raft"])
                except NotReady:
                    if item["raft"] not in raft.raft_members():
                        await raft.propose("master_remove", {"id": item["id"]}, actor=actor)
                    raise
        return json_response({**item, "added": True, "seconds": round(time.monotonic() - started, 3)})

    async def remove_member(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        mid = request.match_info["id"]
        claims = request.get("claims")
        actor = claims.sub if claims else None
        async with self._lock:
            self._require_established()
            await self._ensure_seeded(actor)
            raft = self.api.raft
            listed = self.directory().get(mid)
            if listed is None:
                raise NotFound(f"master {mid!r} is not a member", {"id": mid})
            addr = listed["raft"]
            members = raft.raft_members()
            if addr == raft.settings.listen:
                check_remove(members, self._healthy(), addr)
                raft.transfer_leadership()
                raise NotReady(f"{mid} is the leader: leadership is moving to another master; retry there "
                               "(the CLI does)", {"id": mid})
            if addr in members:
                check_remove(members, self._healthy(), addr)
                await raft.change_membership("remove", addr)
            result = await raft.propose("master_remove", {"id": mid}, actor=actor)
        return json_response(result)
