"""Volume bookkeeping in the replicated state (the lifecycle is described in `orca.volumes`).

- `bind_slots` (called by the `plan` op) binds each newly placed slot of a service with named volumes to
  its node, once: later placements of the slot must go to that node (the scheduler reads the binding).
- `tombstone` turns bindings into removal orders for their nodes (`purge_service`, `volume_remove`).
- `volume_conflict` is the drain guard: the nodes' bindings of running services, as a message.
- op `volume_remove {node, service, slot?}` forgets a stopped or purged service's volumes on a node.
All pure: counters come from the state, never from a clock.
"""

from __future__ import annotations

from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import Ctx, State, record_event
from orca.volumes import TOMBSTONES_KEPT, named_volumes

__all__ = ["bind_slots", "tombstone", "volume_conflict", "forget_node_bindings", "OPS"]


def bind_slots(state: State, svc: dict[str, Any], spec: dict[str, Any], node: str, index: int) -> None:
    """Record that slot `index` of `svc` keeps its volumes on `node` (first placement only)."""
    if not named_volumes(spec):
        return
    bindings = svc.setdefault("volumes", {})
    if str(index) in bindings:
        return
    state["volume_seq"] = int(state.get("volume_seq", 0)) + 1
    bindings[str(index)] = {"node": node, "gen": state["volume_seq"], "names": [v["name"] for v in named_volumes(spec)]}


def tombstone(state: State, service: str, slot: str, binding: dict[str, Any]) -> None:
    """Ask the binding's node to remove that slot's volumes (bounded list per node, oldest dropped)."""
    purges = state.setdefault("volume_purges", {}).setdefault(binding["node"], [])
    purges.append({"service": service, "slot": int(slot), "gen": int(binding["gen"])})
    del purges[:-TOMBSTONES_KEPT]


def volume_conflict(state: State, node_id: str) -> str | None:
    """Why draining `node_id` would lose data: the running services whose volumes live there, or None."""
    held = sorted({name for name, svc in state["services"].items() if svc["state"] == "running"
                   and named_volumes(svc["spec"])
                   and any(b["node"] == node_id for b in (svc.get("volumes") or {}).values())})
    if not held:
        return None
    return (f"node {node_id} holds the volumes of {', '.join(held)}: their replicas cannot move without their "
            "data. Stop those services first, or drain with force: the replicas then start on new, EMPTY "
            f"volumes elsewhere and the old volumes stay on {node_id} (orca volumes ls / rm)")


def forget_node_bindings(state: State, node_id: str, ctx: Ctx) -> list[str]:
    """A forced drain: drop the bindings on `node_id` (the volumes stay there, unbound). Returns services."""
    moved = []
    for name, svc in sorted(state["services"].items()):
        bindings = svc.get("volumes") or {}
        gone = [slot for slot, b in bindings.items() if b["node"] == node_id]
        for slot in gone:
            del bindings[slot]
        if gone:
            moved.append(name)
            record_event(state, ctx, "volumes_abandoned",
                         f"{name}: slot(s) {', '.join(sorted(gone))} leave their volumes on {node_id} "
                         "(forced drain); they restart with empty volumes elsewhere", service=name, node=node_id)
    return moved


def _apply_volume_remove(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Remove a service's volumes on one node: its bound slots there (service stopped) or, for volumes no
    longer bound (a purged service, a forced drain), the exact `gen` the operator names."""
    node, service = args.get("node"), args.get("service")
    slot, gen = args.get("slot"), args.get("gen")
    if not isinstance(node, str) or not isinstance(service, str):
        raise Invalid("node and service must be strings", {"field": "node"})
    for field, value in (("slot", slot), ("gen", gen)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise Invalid(f"{field} must be a non-negative integer", {"field": field})
    if node not in state["nodes"] and node not in state.get("volume_purges", {}):
        raise NotFound(f"node {node!r} not found", {"node": node}, code="NODE_NOT_FOUND")
    svc = state["services"].get(service)
    bindings = (svc or {}).get("volumes") or {}
    mine = {s: b for s, b in bindings.items() if b["node"] == node and (slot is None or s == str(slot))
            and (gen is None or b["gen"] == gen)}
    if mine and svc is not None and svc["state"] == "running":
        raise Conflict(f"{service} is running and uses these volumes; stop it first (orca stop {service})",
                       {"service": service, "node": node})
    removed = []
    for s, b in sorted(mine.items()):
        tombstone(state, service, s, b)
        del bindings[s]
        removed.append({"slot": int(s), "gen": b["gen"]})
    if not mine:
        if slot is None or gen is None:
            raise NotFound(f"{service} has no bound volumes on {node}; name an unbound one with its slot and gen",
                           {"service": service, "node": node})
        tombstone(state, service, str(slot), {"node": node, "gen": gen})
        removed.append({"slot": slot, "gen": gen})
    record_event(state, ctx, "volumes_removed", f"{service}: volume(s) of slot(s) "
                 f"{', '.join(str(r['slot']) for r in removed)} on {node} removed", service=service, node=node)
    return {"node": node, "service": service, "removed": removed}


OPS = {"volume_remove": _apply_volume_remove}
