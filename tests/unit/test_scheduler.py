"""Tests of `orca.scheduler`: a harness of fake nodes records every plan (after Nomad's
scheduler/tests Harness) and applies it the way the state machine would, so a test can run several
passes; hypothesis checks the invariants and compares with a straightforward reference implementation.
"""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import orca.scheduler as scheduler
from orca.scheduler import Placement, PlacementView, Plan, compute_plan, format_bytes, free_resources

MIB = 1024 * 1024
GIB = 1024 * MIB


class Harness:
    """Fake cluster state; `process()` runs one scheduler pass, records the plan and applies it."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.allocations: dict[str, dict[str, Any]] = {}
        self.plans: list[Plan] = []
        self._ids = itertools.count()

    def add_node(
        self,
        node_id: str,
        memory: int = 4 * GIB,
        cpu: float = 4.0,
        status: str = "ready",
        eligibility: str = "eligible",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.nodes[node_id] = {
            "id": node_id,
            "status": status,
            "eligibility": eligibility,
            "labels": labels or {},
            "capacity": {"memory": memory, "cpu": cpu},
        }

    def add_service(
        self,
        name: str,
        replicas: int,
        memory: int = 256 * MIB,
        cpu: float = 0.25,
        node: str | None = None,
        labels: dict[str, str] | None = None,
        state: str = "running",
        version: int = 1,
    ) -> None:
        self.services[name] = {
            "name": name,
            "state": state,
            "replicas": replicas,
            "version": version,
            "spec": {
                "resources": {"memory": memory, "cpu": cpu},
                "placement": {"node": node, "labels": labels or {}},
            },
        }

    def add_alloc(
        self, alloc_id: str, service: str, node: str, index: int, version: int = 1, desired: str = "run"
    ) -> None:
        self.allocations[alloc_id] = {
            "id": alloc_id,
            "service": service,
            "version": version,
            "node": node,
            "desired": desired,
            "index": index,
        }

    def view(self) -> PlacementView:
        return PlacementView(services=self.services, nodes=self.nodes, allocations=self.allocations)

    def new_id(self) -> str:
        return f"a{next(self._ids)}"

    def process(self) -> Plan:
        plan = compute_plan(self.view(), self.new_id)
        self.plans.append(plan)
        for alloc_id in plan.stop:
            self.allocations[alloc_id]["desired"] = "stop"
        for p in plan.place:
            self.add_alloc(p.alloc_id, p.service, p.node, p.index, p.version)
        return plan

    def running(self, service: str) -> list[dict[str, Any]]:
        return [a for a in self.allocations.values() if a["service"] == service and a["desired"] == "run"]

    def per_node(self, service: str) -> Counter[str]:
        return Counter(a["node"] for a in self.running(service))


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- filter -> rank -> select ---------------------------------------------------------------------------


def test_spread_evenly_over_identical_nodes(h: Harness) -> None:
    for n in ("n1", "n2", "n3"):
        h.add_node(n)
    h.add_service("web", replicas=6)
    plan = h.process()
    assert [p.index for p in plan.place] == [0, 1, 2, 3, 4, 5]
    assert [p.alloc_id for p in plan.place] == [f"a{i}" for i in range(6)]  # new_id once per placement
    assert h.per_node("web") == {"n1": 2, "n2": 2, "n3": 2}
    assert plan.stop == () and plan.pending == {}
    assert h.process().is_empty()  # converged


def test_spread_comes_before_free_memory(h: Harness) -> None:
    h.add_node("big", memory=16 * GIB)
    h.add_node("small", memory=1 * GIB)
    h.add_service("web", replicas=2)
    h.process()
    assert h.per_node("web") == {"big": 1, "small": 1}


def test_rank_by_free_memory_then_node_id(h: Harness) -> None:
    h.add_node("n2", memory=8 * GIB)
    h.add_node("n1", memory=8 * GIB)
    h.add_node("n0", memory=2 * GIB)
    h.add_service("a", replicas=1)
    h.add_service("b", replicas=1)
    plan = h.process()
    # a: n1 and n2 tie on free memory -> lowest id; b: n2 now has the most free memory.
    assert [(p.service, p.node) for p in plan.place] == [("a", "n1"), ("b", "n2")]


def test_other_services_count_for_memory_not_for_spread(h: Harness) -> None:
    h.add_node("n1")
    h.add_node("n2")
    h.add_service("db", replicas=1, memory=2 * GIB)
    h.add_service("web", replicas=1)
    plan = h.process()
    assert [(p.service, p.node) for p in plan.place] == [("db", "n1"), ("web", "n2")]


def test_capacity_is_never_exceeded_and_the_rest_is_pending(h: Harness) -> None:
    h.add_node("n1", memory=1 * GIB, cpu=4.0)
    h.add_service("web", replicas=5, memory=256 * MIB, cpu=0.5)
    plan = h.process()
    assert len(plan.place) == 4
    assert plan.pending == {"web": {"count": 1, "reason": "no eligible node with 256 MiB and 0.5 CPU free"}}
    assert free_resources(h.view())["n1"] == {"memory": 0, "cpu": 2.0}
    again = h.process()
    assert again.is_empty() and again.pending == plan.pending  # pending is recomputed, not committed


def test_cpu_is_a_limit_too_and_compared_exactly(h: Harness) -> None:
    h.add_node("n1", memory=64 * GIB, cpu=1.0)
    h.add_service("tiny", replicas=11, memory=0, cpu=0.1)
    plan = h.process()
    assert len(plan.place) == 10  # ten times 0.1 fits in 1.0 despite float arithmetic
    assert plan.pending == {"tiny": {"count": 1, "reason": "no eligible node with 0.1 CPU free"}}


def test_memory_only_request_reason(h: Harness) -> None:
    h.add_node("n1", memory=256 * MIB)
    h.add_service("web", replicas=1, memory=512 * MIB, cpu=0)
    assert h.process().pending["web"]["reason"] == "no eligible node with 512 MiB free"


def test_pinned_service_goes_only_to_its_node(h: Harness) -> None:
    for n in ("n1", "n2", "n3"):
        h.add_node(n)
    h.add_service("db", replicas=3, node="n2")
    h.process()
    assert h.per_node("db") == {"n2": 3}


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"eligibility": "draining"}, "pinned to node 'n2' which is not eligible (draining)"),
        ({"eligibility": "ineligible"}, "pinned to node 'n2' which is not eligible (ineligible)"),
        ({"status": "down"}, "pinned to node 'n2' which is down"),
        (None, "pinned to node 'n2' which does not exist"),
        ({"memory": 128 * MIB}, "pinned node 'n2' lacks 256 MiB and 0.25 CPU free"),
        ({"labels": {"zone": "a"}}, "pinned node 'n2' does not match labels zone=b"),
    ],
)
def test_pinned_service_pending_reasons(h: Harness, setup: dict[str, Any] | None, reason: str) -> None:
    h.add_node("n1", labels={"zone": "b"})
    if setup is not None:
        h.add_node("n2", **setup)
    h.add_service("db", replicas=2, node="n2", labels={"zone": "b"} if setup and "labels" in setup else None)
    plan = h.process()
    assert plan.place == ()
    assert plan.pending == {"db": {"count": 2, "reason": reason}}


def test_labels_must_be_a_subset_of_the_node_labels(h: Harness) -> None:
    h.add_node("n1", labels={"zone": "a", "disk": "ssd"})
    h.add_node("n2", labels={"zone": "b", "disk": "ssd"})
    h.add_node("n3", labels={"zone": "b"})
    h.add_service("web", replicas=4, labels={"zone": "b", "disk": "ssd"})
    h.process()
    assert h.per_node("web") == {"n2": 4}


def test_labels_matching_no_node(h: Harness) -> None:
    h.add_node("n1", labels={"zone": "a"})
    h.add_service("web", replicas=2, labels={"zone": "b"})
    assert h.process().pending == {"web": {"count": 2, "reason": "no node matches labels zone=b"}}


def test_labels_matching_only_a_draining_node(h: Harness) -> None:
    h.add_node("n1", labels={"zone": "a"})
    h.add_node("n2", labels={"zone": "b"}, eligibility="draining")
    h.add_service("web", replicas=1, labels={"zone": "b"})
    assert h.process().pending["web"]["reason"] == "no eligible node matches labels zone=b"


def test_no_nodes(h: Harness) -> None:
    h.add_service("web", replicas=3)
    plan = h.process()
    assert plan.is_empty()
    assert plan.pending == {"web": {"count": 3, "reason": "no nodes"}}


def test_no_ready_and_eligible_node(h: Harness) -> None:
    h.add_node("n1", status="down")
    h.add_node("n2", eligibility="ineligible")
    h.add_service("web", replicas=1)
    assert h.process().pending["web"]["reason"] == "no ready and eligible node among 2"


def test_draining_and_ineligible_nodes_get_nothing_new_but_keep_what_they_run(h: Harness) -> None:
    h.add_node("n1", eligibility="draining")
    h.add_node("n2", eligibility="ineligible")
    h.add_node("n3")
    h.add_service("web", replicas=4)
    h.add_alloc("old0", "web", "n1", 0)
    h.add_alloc("old1", "web", "n2", 1)
    plan = h.process()
    assert plan.stop == ()  # moving them off is the drainer's job
    assert [(p.node, p.index) for p in plan.place] == [("n3", 2), ("n3", 3)]


# --- reconcile: reschedule, scale, stop -------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["down", "unreachable", "gone"])
def test_lost_node_replicas_are_stopped_and_placed_elsewhere(h: Harness, loss: str) -> None:
    for n in ("n1", "n2", "n3"):
        h.add_node(n)
    h.add_service("web", replicas=6)
    h.process()
    on_n3 = sorted(a["id"] for a in h.running("web") if a["node"] == "n3")
    slots = sorted(h.allocations[a]["index"] for a in on_n3)
    if loss == "gone":
        del h.nodes["n3"]
    else:
        h.nodes["n3"]["status"] = loss
    plan = h.process()
    assert plan.stop == tuple(on_n3)
    assert sorted(p.index for p in plan.place) == slots
    assert h.per_node("web") == {"n1": 3, "n2": 3}
    assert h.process().is_empty()


def test_scale_up_places_only_missing_slots(h: Harness) -> None:
    h.add_node("n1")
    h.add_node("n2")
    h.add_service("web", replicas=2)
    h.process()
    h.services["web"]["replicas"] = 4
    plan = h.process()
    assert [p.index for p in plan.place] == [2, 3] and plan.stop == ()
    assert h.per_node("web") == {"n1": 2, "n2": 2}


def test_scale_down_stops_highest_slots_first(h: Harness) -> None:
    h.add_node("n1")
    h.add_service("web", replicas=5)
    h.process()
    by_index = {a["index"]: a["id"] for a in h.running("web")}
    h.services["web"]["replicas"] = 2
    plan = h.process()
    assert plan.stop == (by_index[4], by_index[3], by_index[2]) and plan.place == ()
    assert sorted(a["index"] for a in h.running("web")) == [0, 1]


def test_duplicate_and_out_of_range_slots_are_stopped(h: Harness) -> None:
    h.add_node("n1")
    h.add_service("web", replicas=2)
    h.add_alloc("x1", "web", "n1", 0)
    h.add_alloc("x0", "web", "n1", 0)  # same slot: the lowest id is kept
    h.add_alloc("x2", "web", "n1", 7)
    h.add_alloc("x3", "web", "n1", -1)
    plan = h.process()
    assert plan.stop == ("x2", "x1", "x3")
    assert [p.index for p in plan.place] == [1]


def test_stopped_service_stops_every_version(h: Harness) -> None:
    h.add_node("n1")
    h.add_service("web", replicas=3, state="stopped", version=2)
    h.add_alloc("v1", "web", "n1", 0, version=1)
    h.add_alloc("v2", "web", "n1", 0, version=2)
    h.add_alloc("done", "web", "n1", 1, version=2, desired="stop")
    plan = h.process()
    assert plan.stop == ("v1", "v2") and plan.place == () and plan.pending == {}


def test_allocations_of_a_removed_service_are_stopped(h: Harness) -> None:
    h.add_node("n1")
    h.add_alloc("orphan", "gone", "n1", 0)
    assert h.process().stop == ("orphan",)


def test_other_versions_are_left_alone_but_take_capacity(h: Harness) -> None:
    h.add_node("n1", memory=1 * GIB)
    h.add_service("web", replicas=2, memory=512 * MIB, version=2)
    h.add_alloc("old", "web", "n1", 0, version=1)
    h.add_alloc("lost-old", "web", "gone-node", 1, version=1)
    plan = h.process()
    assert plan.stop == ()  # the rollout retires old versions, even on lost nodes
    assert [(p.version, p.index) for p in plan.place] == [(2, 0)]
    assert plan.pending["web"]["count"] == 1


def test_capacity_freed_by_stops_is_reused_on_the_next_pass(h: Harness) -> None:
    """Stopped containers run until the agent stops them, so their room is not reused in the same plan."""
    h.add_node("n1", memory=1 * GIB)
    h.add_service("a", replicas=2, memory=512 * MIB)
    h.process()
    h.services["a"]["replicas"] = 1
    h.add_service("b", replicas=1, memory=512 * MIB)
    first = h.process()
    assert len(first.stop) == 1 and first.place == () and first.pending["b"]["count"] == 1
    second = h.process()
    assert [p.service for p in second.place] == ["b"] and second.pending == {}


def test_allocation_carrying_its_own_resources_is_charged_those(h: Harness) -> None:
    h.add_node("n1", memory=1 * GIB, cpu=2.0)
    h.add_service("web", replicas=0, version=2)
    h.add_alloc("old", "web", "n1", 0, version=1)
    h.allocations["old"]["resources"] = {"memory": 768 * MIB, "cpu": 1.5}
    assert free_resources(h.view())["n1"] == {"memory": 256 * MIB, "cpu": 0.5}


def test_input_is_not_mutated(h: Harness) -> None:
    h.add_node("n1")
    h.add_node("n2", status="down")
    h.add_service("web", replicas=3)
    h.add_alloc("x", "web", "n2", 0)
    before = repr((h.services, h.nodes, h.allocations))
    compute_plan(h.view(), h.new_id)
    assert repr((h.services, h.nodes, h.allocations)) == before


# --- helpers and surface ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1000, "1000 B"),
        (1536, "1.5 KiB"),
        (512 * MIB, "512 MiB"),
        (3 * GIB // 2, "1.5 GiB"),
        (-64 * MIB, "-64 MiB"),
        (2048 * GIB, "2 TiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_plan_is_empty() -> None:
    assert Plan().is_empty()
    assert Plan(pending={"web": {"count": 1, "reason": "no nodes"}}).is_empty()
    assert not Plan(stop=("x",)).is_empty()
    assert not Plan(place=(Placement("a", "web", 1, "n1", 0),)).is_empty()


def test_public_surface() -> None:
    defined_here = {
        name
        for name, value in vars(scheduler).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == scheduler.__name__
    }
    assert set(scheduler.__all__) == defined_here


# --- reference implementation and properties --------------------------------------------------------------


def reference_plan(view: PlacementView, new_id: Any) -> Plan:
    """The rules as written, with no indexing or caching: every replica re-filters and re-ranks every node.

    CPU is exact decimal arithmetic (Fraction of the decimal text), which is what millicores give for
    requests with up to three decimals.
    """

    def request(service: dict[str, Any] | None) -> tuple[int, Fraction]:
        res = (service or {}).get("spec", {}).get("resources", {})
        return res.get("memory", 0), Fraction(str(res.get("cpu", 0)))

    def charge(alloc: dict[str, Any]) -> tuple[int, Fraction]:
        if alloc.get("resources") is not None:
            return alloc["resources"]["memory"], Fraction(str(alloc["resources"]["cpu"]))
        return request(view.services.get(alloc["service"]))

    placed: list[Placement] = []

    def free(node_id: str) -> tuple[int, Fraction]:
        node = view.nodes[node_id]
        mem, cpu = node["capacity"]["memory"], Fraction(str(node["capacity"]["cpu"]))
        for a in view.allocations.values():
            if a["desired"] == "run" and a["node"] == node_id:
                m, c = charge(a)
                mem, cpu = mem - m, cpu - c
        for p in placed:
            if p.node == node_id:
                m, c = request(view.services[p.service])
                mem, cpu = mem - m, cpu - c
        return mem, cpu

    stop: list[str] = []
    kept: list[dict[str, Any]] = []
    missing: dict[str, list[int]] = {}
    for name in sorted(view.services):
        service = view.services[name]
        runs = [a for a in view.allocations.values() if a["service"] == name and a["desired"] == "run"]
        if service["state"] == "stopped":
            stop += [a["id"] for a in runs]
            continue
        current = [a for a in runs if a["version"] == service["version"]]
        live = []
        for a in current:
            node = view.nodes.get(a["node"])
            if node is not None and node["status"] == "ready":
                live.append(a)
            else:
                stop.append(a["id"])
        for index in range(service["replicas"]):
            holders = sorted((a for a in live if a["index"] == index), key=lambda a: a["id"])
            kept += holders[:1]
        stop += [a["id"] for a in live if a not in kept]
        missing[name] = [
            i
            for i in range(service["replicas"])
            if not any(a["service"] == name and a["index"] == i for a in kept)
        ]
    stop += [
        a["id"]
        for a in view.allocations.values()
        if a["desired"] == "run" and a["service"] not in view.services
    ]

    pending: dict[str, dict[str, Any]] = {}
    for name, slots in missing.items():
        service = view.services[name]
        mem, cpu = request(service)
        placement = service["spec"]["placement"]
        for index in slots:
            fits = []
            for node_id, node in view.nodes.items():
                if node["status"] != "ready" or node["eligibility"] != "eligible":
                    continue
                if placement["node"] is not None and placement["node"] != node_id:
                    continue
                if not placement["labels"].items() <= node["labels"].items():
                    continue
                free_mem, free_cpu = free(node_id)
                if free_mem >= mem and free_cpu >= cpu:
                    spread = sum(1 for a in kept if a["service"] == name and a["node"] == node_id)
                    spread += sum(1 for p in placed if p.service == name and p.node == node_id)
                    fits.append((spread, -free_mem, node_id))
            if not fits:
                pending.setdefault(name, {"count": 0})["count"] += 1
                continue
            placed.append(Placement(new_id(), name, service["version"], min(fits)[2], index))
    return Plan(place=tuple(placed), stop=tuple(stop), pending=pending)


NODE_IDS = ["n0", "n1", "n2", "n3", "n4"]
SERVICE_NAMES = ["a", "b", "c"]
LABELS = st.dictionaries(st.sampled_from(["zone", "disk"]), st.sampled_from(["x", "y"]), max_size=2)
CPUS = st.sampled_from([0, 0.1, 0.25, 0.5, 1.0, 1.5])


@st.composite
def views(draw: st.DrawFn) -> PlacementView:
    nodes = {}
    for node_id in draw(st.lists(st.sampled_from(NODE_IDS), unique=True, max_size=5)):
        nodes[node_id] = {
            "id": node_id,
            "status": draw(st.sampled_from(["ready", "ready", "ready", "down", "unreachable"])),
            "eligibility": draw(
                st.sampled_from(["eligible", "eligible", "eligible", "draining", "ineligible"])
            ),
            "labels": draw(LABELS),
            "capacity": {
                "memory": draw(st.integers(0, 8)) * 256 * MIB,
                "cpu": draw(st.sampled_from([0, 0.5, 1, 2])),
            },
        }
    services = {}
    for name in draw(st.lists(st.sampled_from(SERVICE_NAMES), unique=True, max_size=3)):
        services[name] = {
            "name": name,
            "state": draw(st.sampled_from(["running", "running", "running", "stopped"])),
            "replicas": draw(st.integers(0, 6)),
            "version": draw(st.integers(1, 2)),
            "spec": {
                "resources": {"memory": draw(st.integers(0, 4)) * 128 * MIB, "cpu": draw(CPUS)},
                "placement": {
                    "node": draw(st.one_of(st.none(), st.none(), st.sampled_from([*NODE_IDS, "n9"]))),
                    "labels": draw(LABELS),
                },
            },
        }
    allocations = {}
    for i in range(draw(st.integers(0, 10))):
        alloc = {
            "id": f"x{i}",
            "service": draw(st.sampled_from([*SERVICE_NAMES, "gone"])),
            "version": draw(st.integers(1, 2)),
            "node": draw(st.sampled_from([*NODE_IDS, "n9"])),
            "desired": draw(st.sampled_from(["run", "run", "stop"])),
            "index": draw(st.integers(-1, 7)),
        }
        if draw(st.booleans()):
            alloc["resources"] = {"memory": draw(st.integers(0, 4)) * 128 * MIB, "cpu": draw(CPUS)}
        allocations[alloc["id"]] = alloc
    return PlacementView(services=services, nodes=nodes, allocations=allocations)


def counter_ids() -> Any:
    return map("a{}".format, itertools.count()).__next__


@settings(max_examples=400, deadline=None)
@given(views())
def test_equals_reference_implementation(view: PlacementView) -> None:
    plan = compute_plan(view, counter_ids())
    expected = reference_plan(view, counter_ids())
    assert plan.place == expected.place
    assert sorted(plan.stop) == sorted(expected.stop) and len(set(plan.stop)) == len(plan.stop)
    assert {s: p["count"] for s, p in plan.pending.items()} == {
        s: p["count"] for s, p in expected.pending.items()
    }
    assert all(p["reason"] for p in plan.pending.values())


@settings(max_examples=200, deadline=None)
@given(views())
def test_same_input_same_plan(view: PlacementView) -> None:
    assert compute_plan(view, counter_ids()) == compute_plan(view, counter_ids())


@settings(max_examples=300, deadline=None)
@given(views())
def test_never_over_capacity_nor_on_an_unusable_node(view: PlacementView) -> None:
    plan = compute_plan(view, counter_ids())
    before = free_resources(view)
    used: dict[str, list[Fraction]] = {}
    for p in plan.place:
        node = view.nodes[p.node]
        assert node["status"] == "ready" and node["eligibility"] == "eligible"
        res = view.services[p.service]["spec"]["resources"]
        mem, cpu = used.setdefault(p.node, [Fraction(0), Fraction(0)])
        used[p.node] = [mem + res["memory"], cpu + Fraction(str(res["cpu"]))]
    for node_id, (mem, cpu) in used.items():
        assert mem <= before[node_id]["memory"]
        assert cpu <= Fraction(str(before[node_id]["cpu"]))


@settings(max_examples=200, deadline=None)
@given(
    nodes=st.integers(1, 8),
    replicas=st.lists(st.integers(0, 25), min_size=1, max_size=4),
    lost=st.integers(0, 7),
)
def test_spread_within_one_replica_on_identical_nodes(nodes: int, replicas: list[int], lost: int) -> None:
    h = Harness()
    for i in range(nodes):
        h.add_node(f"n{i}", memory=64 * GIB, cpu=64.0)
    for s, count in enumerate(replicas):
        h.add_service(f"s{s}", replicas=count)

    def assert_spread() -> None:
        ready = [n for n, node in h.nodes.items() if node["status"] == "ready"]
        for s, count in enumerate(replicas):
            per_node = h.per_node(f"s{s}")
            counts = [per_node.get(n, 0) for n in ready]
            assert sum(counts) == count
            assert max(counts) - min(counts) <= 1

    h.process()
    assert_spread()
    if lost < nodes - 1:  # lose a node: rescheduling keeps the spread over the survivors
        h.nodes[f"n{lost}"]["status"] = "down"
        h.process()
        assert_spread()
    assert h.process().is_empty()
