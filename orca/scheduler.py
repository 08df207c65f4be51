"""Placement: a pure function from the replicated state to a plan.

`compute_plan(view, new_id)` reads plain data (the dicts the state machine holds) and returns a `Plan`
of allocations to create, allocations to stop and services left pending with a reason. It does no I/O,
reads no clock and draws no random numbers; ids come from the injected `new_id`, so the Raft leader can
run it on its applied state and commit the result as one entry, and tests get the same plan every time.

For every running service, in name order:

* **live** allocations are those with desired "run" on a node whose status is "ready". An allocation of
  the service's current version on a down, unreachable or missing node is stopped and its slot placed
  again (reschedule).
* Each replica has a slot `index` in `0..replicas-1`. Live current-version allocations in a slot past
  the end (scale down, highest first) or duplicating a slot are stopped; empty slots are placed.
* Allocations of other versions are left alone (the rollout owns them) but still take capacity.
* Stopped services have all their "run" allocations stopped, and so do allocations whose service is
  gone from the state.

Placing one slot is filter -> rank -> select:

* **filter**: node status "ready", eligibility "eligible", `placement.node` (if set) equal to the node
  id, `placement.labels` a subset of the node's labels, and free memory and cpu at least the request.
  Free = capacity minus the resources of every "run" allocation on the node, including those placed
  earlier in this call. Allocations this plan stops still count: their containers run until the agent
  stops them, so reusing their room in the same plan could overcommit a node for a while; the next
  cycle sees the room.
* **rank**: fewest current-version allocations of this service on the node (spread), then most free
  memory, then node id, so the choice never depends on dict order.
* **select** the best. A slot that fits nowhere stays pending with a reason for `status`.

The straightforward way re-filters and re-ranks every node for every replica (O(replicas x nodes)).
Here each service filters its candidates once and keeps them in a heap keyed by the rank; only the
node just chosen changes while a service is being placed, so after each placement that node alone is
pushed back with its new key. The result is the same as the straightforward rule: the tests check it
against a reference implementation.

CPU is compared in integer millicores, so that repeated float subtraction cannot make a request that
fits exactly look one ulp too large.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orca.jobs import finished, is_job
from orca.volumes import named_volumes, waiting_reason

__all__ = ["PlacementView", "Placement", "Plan", "compute_plan", "free_resources", "format_bytes"]

_MILLI = 1000


@dataclass(frozen=True)
class PlacementView:
    """A read-only view of the replicated tables the scheduler needs, as plain dicts.

    services:    name -> {"name", "state": "running"|"stopped", "replicas", "version",
                          "spec": {"resources": {"memory": bytes, "cpu": float},
                                   "placement": {"node": str|None, "labels": {str: str}}}}
    nodes:       id -> {"id", "status": "ready"|"down"|"unreachable",
                        "eligibility": "eligible"|"draining"|"ineligible",
                        "labels": {str: str}, "capacity": {"memory": bytes, "cpu": float}}
    allocations: id -> {"id", "service", "version", "node", "desired": "run"|"stop", "index": slot}

    An allocation may carry its own "resources" (the request it was placed with); otherwise its
    service's current request is charged, and nothing if the service is gone.
    """

    services: Mapping[str, dict[str, Any]]
    nodes: Mapping[str, dict[str, Any]]
    allocations: Mapping[str, dict[str, Any]]


@dataclass(frozen=True)
class Placement:
    """One allocation to create with desired "run"."""

    alloc_id: str
    service: str
    version: int
    node: str
    index: int


@dataclass(frozen=True)
class Plan:
    """What one scheduler pass wants committed.

    `place` and `stop` change the state; `pending` (service -> {"count", "reason"}) is derived status
    for replicas that fit nowhere, recomputed every pass.
    """

    place: tuple[Placement, ...] = ()
    stop: tuple[str, ...] = ()
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when there is nothing to commit: no placement and no stop (pending is only status)."""
        return not self.place and not self.stop


def format_bytes(n: int) -> str:
    """Human-readable binary size for reasons shown to operators: 536870912 -> "512 MiB"."""
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    text = f"{value:.1f}".removesuffix(".0") if unit != "B" else str(int(value))
    return f"{sign}{text} {unit}"


def free_resources(view: PlacementView) -> dict[str, dict[str, Any]]:
    """Free memory (bytes) and cpu per node: capacity minus every "run" allocation on it.

    Every node is listed whatever its status, and the figure may be negative if a node is
    overcommitted (e.g. its capacity shrank). Status and the pending reasons use the same numbers
    as `compute_plan`.
    """
    free = _free_table(view)
    return {node_id: {"memory": mem, "cpu": milli / _MILLI} for node_id, (mem, milli) in free.items()}


def compute_plan(view: PlacementView, new_id: Callable[[], str]) -> Plan:
    """Compute the placements, stops and pending replicas that bring the state to its desired shape.

    `new_id` is called once per placement, in placement order; the leader passes uuid-based ids and
    tests pass a counter, which keeps this function deterministic.
    """
    nodes = view.nodes
    run_by_service: dict[str, list[dict[str, Any]]] = {}
    for alloc in view.allocations.values():
        if alloc["desired"] == "run":
            run_by_service.setdefault(alloc["service"], []).append(alloc)

    stop: list[str] = []
    # (service name, service, slots to place, current-version allocations kept per node)
    work: list[tuple[str, dict[str, Any], list[int], dict[str, int]]] = []
    for name in sorted(view.services):
        service = view.services[name]
        allocs = run_by_service.pop(name, [])
        if service["state"] != "running":
            stop.extend(sorted(a["id"] for a in allocs))
            continue
        missing, per_node, stopped = _reconcile_slots(service, allocs, nodes)
        stop.extend(stopped)
        if missing:
            work.append((name, service, missing, per_node))
    for name in sorted(run_by_service):  # allocations of services that no longer exist
        stop.extend(sorted(a["id"] for a in run_by_service[name]))

    if not work:
        return Plan(stop=tuple(stop))

    free = _free_table(view)
    candidates = _Candidates(nodes)
    place: list[Placement] = []
    pending: dict[str, dict[str, Any]] = {}
    for name, service, missing, per_node in work:
        mem, milli = _request(service)
        pin, labels = _constraints(service)
        missing, waiting = _sticky(service, missing, nodes, free, mem, milli, new_id, place)
        if waiting is not None:
            pending[name] = waiting
        if not missing:
            continue
        heap: list[tuple[int, int, str]] = []
        for node_id in candidates.matching(pin, labels):
            node_mem, node_milli = free[node_id]
            if node_mem >= mem and node_milli >= milli:
                heap.append((per_node.get(node_id, 0), -node_mem, node_id))
        heapq.heapify(heap)
        version = service["version"]
        for position, index in enumerate(missing):
            if not heap:
                count = len(missing) - position + (pending[name]["count"] if name in pending else 0)
                reason = pending[name]["reason"] if name in pending else _explain(nodes, free, mem, milli, pin, labels)
                pending[name] = {"count": count, "reason": reason}
                break
            count, _, node_id = heapq.heappop(heap)
            node_mem, node_milli = free[node_id]
            node_mem -= mem
            node_milli -= milli
            free[node_id] = (node_mem, node_milli)
            place.append(Placement(new_id(), name, version, node_id, index))
            if node_mem >= mem and node_milli >= milli:
                heapq.heappush(heap, (count + 1, -node_mem, node_id))
    return Plan(place=tuple(place), stop=tuple(stop), pending=pending)


def _sticky(
    service: dict[str, Any], missing: list[int], nodes: Mapping[str, dict[str, Any]],
    free: dict[str, tuple[int, int]], mem: int, milli: int, new_id: Callable[[], str], place: list[Placement],
) -> tuple[list[int], dict[str, Any] | None]:
    """Place the slots bound to a node by their volumes (orca.volumes) on that node, or keep them pending.

    Returns the slots still to place freely and the pending entry of the bound slots that must wait.
    """
    spec = service.get("spec") or {}
    bindings = service.get("volumes") or {}
    if not bindings or not named_volumes(spec):
        return missing, None
    free_slots: list[int] = []
    waiting = 0
    reason = ""
    for index in missing:
        binding = bindings.get(str(index))
        if binding is None:
            free_slots.append(index)
            continue
        node_id = binding["node"]
        node = nodes.get(node_id)
        node_mem, node_milli = free.get(node_id, (0, 0))
        if node is None or not _usable(node) or node_mem < mem or node_milli < milli:
            waiting += 1
            if not reason:
                reason = waiting_reason(node_id, spec)
                if node is not None and _usable(node):
                    reason += " (it lacks free resources)"
            continue
        free[node_id] = (node_mem - mem, node_milli - milli)
        place.append(Placement(new_id(), service["name"], service["version"], node_id, index))
    return free_slots, ({"count": waiting, "reason": reason} if waiting else None)


def _reconcile_slots(
    service: dict[str, Any], allocs: list[dict[str, Any]], nodes: Mapping[str, dict[str, Any]]
) -> tuple[list[int], dict[str, int], list[str]]:
    """Split a running service's "run" allocations into kept slots, stops and slots to place.

    Returns (missing slot indexes ascending, kept current-version allocations per node, ids to stop).
    Duplicated slots keep the allocation with the lowest id, so the choice is stable across passes.
    """
    version = service["version"]
    replicas = service["replicas"]
    spec = service.get("spec") or {}
    run = int(service.get("run", 0))
    if is_job(spec) and spec.get("schedule") and run == 0:
        replicas = 0  # a periodic job runs at its first tick, not when deployed
    kept: dict[int, dict[str, Any]] = {}
    lost: list[str] = []
    excess: list[dict[str, Any]] = []
    for alloc in sorted(allocs, key=lambda a: a["id"]):
        if alloc["version"] != version or int(alloc.get("run", 0)) != run:
            continue  # another version (the rollout's) or an earlier run of a job
        node = nodes.get(alloc["node"])
        if (node is None or node["status"] != "ready") and not finished(alloc):
            lost.append(alloc["id"])  # a finished job replica is not run again because its node left
            continue
        index = alloc["index"]
        if not 0 <= index < replicas or index in kept:
            excess.append(alloc)
        else:
            kept[index] = alloc
    excess.sort(key=lambda a: (-a["index"], a["id"]))  # scale down stops the highest slots first
    per_node: dict[str, int] = {}
    for alloc in kept.values():
        per_node[alloc["node"]] = per_node.get(alloc["node"], 0) + 1
    done = _finished_slots(service) if is_job(spec) else set()
    missing = [i for i in range(replicas) if i not in kept and i not in done]
    return missing, per_node, lost + [a["id"] for a in excess]


def _finished_slots(service: dict[str, Any]) -> set[int]:
    """Slots of the job's current run and version that ended (recorded in Raft by node reports): they are
    never placed again, even once their allocation is gone (orca.state.ops_jobs.record_finished)."""
    run, version = int(service.get("run", 0)), service["version"]
    return {int(i) for i, f in (service.get("finished_slots") or {}).items()
            if f.get("run") == run and f.get("version") == version}


class _Candidates:
    """Nodes that pass the static filters (status, eligibility, pin, labels), computed once per pass.

    Services share few distinct constraint sets, so the label match is cached per set instead of
    being repeated for every service.
    """

    def __init__(self, nodes: Mapping[str, dict[str, Any]]):
        self._nodes = nodes
        self._usable = sorted(
            node_id
            for node_id, node in nodes.items()
            if node["status"] == "ready" and node["eligibility"] == "eligible"
        )
        self._by_labels: dict[frozenset[tuple[str, str]], list[str]] = {}

    def matching(self, pin: str | None, labels: dict[str, str]) -> Iterable[str]:
        if pin is not None:
            node = self._nodes.get(pin)
            if node is None or not _usable(node) or not _labels_match(node, labels):
                return ()
            return (pin,)
        key = frozenset(labels.items())
        found = self._by_labels.get(key)
        if found is None:
            found = [n for n in self._usable if _labels_match(self._nodes[n], labels)]
            self._by_labels[key] = found
        return found


def _usable(node: dict[str, Any]) -> bool:
    return node["status"] == "ready" and node["eligibility"] == "eligible"


def _labels_match(node: dict[str, Any], labels: dict[str, str]) -> bool:
    node_labels = node.get("labels") or {}
    return all(node_labels.get(k) == v for k, v in labels.items())


def _constraints(service: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    placement = (service.get("spec") or {}).get("placement") or {}
    return placement.get("node"), placement.get("labels") or {}


def _request(service: dict[str, Any] | None) -> tuple[int, int]:
    """(memory bytes, cpu millicores) a replica of the service asks for."""
    if service is None:
        return 0, 0
    return _resources((service.get("spec") or {}).get("resources"))


def _resources(resources: dict[str, Any] | None) -> tuple[int, int]:
    resources = resources or {}
    return int(resources.get("memory") or 0), round(float(resources.get("cpu") or 0) * _MILLI)


def _free_table(view: PlacementView) -> dict[str, tuple[int, int]]:
    """node id -> (free memory bytes, free cpu millicores), charging every "run" allocation."""
    free: dict[str, tuple[int, int]] = {}
    for node_id, node in view.nodes.items():
        free[node_id] = _resources(node.get("capacity"))
    requests: dict[str, tuple[int, int]] = {}
    for alloc in view.allocations.values():
        if alloc["desired"] != "run" or alloc["node"] not in free or finished(alloc):
            continue  # a finished replica's container has ended: it uses nothing
        if alloc.get("resources") is not None:
            mem, milli = _resources(alloc["resources"])
        else:
            name = alloc["service"]
            if name not in requests:
                requests[name] = _request(view.services.get(name))
            mem, milli = requests[name]
        node_mem, node_milli = free[alloc["node"]]
        free[alloc["node"]] = (node_mem - mem, node_milli - milli)
    return free


def _explain(
    nodes: Mapping[str, dict[str, Any]],
    free: Mapping[str, tuple[int, int]],
    mem: int,
    milli: int,
    pin: str | None,
    labels: dict[str, str],
) -> str:
    """Why no node can take a replica: the first filter that rules out every node, in filter order.

    Only called when placement fails, so it may scan all nodes.
    """
    if not nodes:
        return "no nodes"
    if pin is not None:
        node = nodes.get(pin)
        if node is None:
            return f"pinned to node '{pin}' which does not exist"
        if node["status"] != "ready":
            return f"pinned to node '{pin}' which is {node['status']}"
        if node["eligibility"] != "eligible":
            return f"pinned to node '{pin}' which is not eligible ({node['eligibility']})"
        pool = [pin]
    else:
        pool = [n for n, node in nodes.items() if _usable(node)]
        if not pool:
            return f"no ready and eligible node among {len(nodes)}"
    if labels:
        wanted = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if not any(_labels_match(nodes[n], labels) for n in pool):
            if pin is not None:
                return f"pinned node '{pin}' does not match labels {wanted}"
            if any(_labels_match(node, labels) for node in nodes.values()):
                return f"no eligible node matches labels {wanted}"
            return f"no node matches labels {wanted}"
    wants = " and ".join(
        part for part, needed in ((format_bytes(mem), mem), (f"{milli / _MILLI:g} CPU", milli)) if needed
    )
    if pin is not None:
        return f"pinned node '{pin}' lacks {wants} free" if wants else f"pinned node '{pin}' is overcommitted"
    return f"no eligible node with {wants} free" if wants else "every eligible node is overcommitted"
