"""Ops on the list of masters: who is in the cluster, by id, with the Raft and API addresses of each.

The Raft membership itself is PySyncObj's (its `add`/`rem` log entries, replayed from the journal and
carried in its snapshot); this list is what orca adds to it: the id and the API URL of every member, so
that any master can name the leader and redirect to it after the cluster changed, whatever its config
file says. Configs only say how to find the cluster the first time: the list is seeded once, by the
first leader that changes the membership, from the members it knows, and is the truth from then on.
"""

from __future__ import annotations

import re
from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import Ctx, State, record_event

__all__ = ["OPS", "members_of", "valid_member", "MAX_MASTERS"]

MAX_MASTERS = 9  # Raft clusters beyond 7 gain nothing; the bound keeps an entry and a state small
_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,253}:[0-9]{1,5}$")


def members_of(state: State) -> dict[str, dict[str, Any]]:
    """The replicated member list (empty until the first membership change seeded it)."""
    return state.get("masters") or {}


def valid_member(item: Any) -> dict[str, str]:
    """`{"id", "raft", "api"}` checked for shape (the API validates addresses more strictly before it
    proposes; this keeps a hand-made entry from putting junk into the state)."""
    if not isinstance(item, dict):
        raise Invalid("a master is {id, raft, api}")
    mid, raft, api = item.get("id"), item.get("raft"), item.get("api")
    if not isinstance(mid, str) or not _ID.match(mid):
        raise Invalid("master id: letters, digits, '_', '.', '-' (at most 63)", {"field": "id"})
    if not isinstance(raft, str) or not _HOST_PORT.match(raft) or not 0 < int(raft.rsplit(":", 1)[1]) < 65536:
        raise Invalid("raft: expected HOST:PORT", {"field": "raft"})
    if not isinstance(api, str) or not api.startswith(("http://", "https://")) or len(api) > 512:
        raise Invalid("api: expected an http(s) URL", {"field": "api"})
    return {"id": mid, "raft": raft, "api": api.rstrip("/")}


def _apply_masters_seed(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Record the members the leader knows, once: a list already there is kept as it is (a second
    seed, e.g. from a leader elected before it saw the first, changes nothing)."""
    items = [valid_member(m) for m in args["masters"]]
    if not items or len(items) > MAX_MASTERS or len({m["id"] for m in items}) != len(items) \
            or len({m["raft"] for m in items}) != len(items):
        raise Invalid("seed: 1 to 9 masters with distinct ids and Raft addresses")
    current = state.setdefault("masters", {})
    if current:
        return {"seeded": False, "masters": sorted(current)}
    for m in items:
        current[m["id"]] = {**m, "added_at": ctx.now}
    return {"seeded": True, "masters": sorted(current)}


def _apply_master_add(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    item = valid_member(args)
    current = state.setdefault("masters", {})
    same = current.get(item["id"])
    if same is not None:
        if same["raft"] == item["raft"] and same["api"] == item["api"]:
            return {**item, "added": False}  # a retried add: nothing to do
        raise Conflict(f"master {item['id']} is a member with other addresses; remove it first",
                       {"id": item["id"], "raft": same["raft"], "api": same["api"]})
    for other in current.values():
        if other["raft"] == item["raft"]:
            raise Conflict(f"Raft address {item['raft']} belongs to master {other['id']}",
                           {"id": other["id"], "raft": item["raft"]})
    if len(current) >= MAX_MASTERS:
        raise Conflict(f"the cluster has {len(current)} masters already (at most {MAX_MASTERS})")
    current[item["id"]] = {**item, "added_at": ctx.now}
    record_event(state, ctx, "master_added", f"master {item['id']} added ({item['raft']}, {item['api']})",
                 details={"id": item["id"], "raft": item["raft"], "api": item["api"]})
    return {**item, "added": True}


def _apply_master_remove(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    mid = args["id"]
    current = state.setdefault("masters", {})
    gone = current.get(mid) if isinstance(mid, str) else None
    if gone is None:
        raise NotFound(f"master {mid!r} is not a member", {"id": mid})
    if len(current) <= 1:
        raise Conflict("the last master cannot be removed")
    del current[mid]
    record_event(state, ctx, "master_removed", f"master {mid} removed ({gone['raft']})",
                 details={"id": mid, "raft": gone["raft"]})
    return {"id": mid, "raft": gone["raft"], "removed": True}


OPS = {
    "masters_seed": _apply_masters_seed,
    "master_add": _apply_master_add,
    "master_remove": _apply_master_remove,
}
