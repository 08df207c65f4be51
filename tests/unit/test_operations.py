"""Rollouts, canaries and drains as pure decisions, driven through the real state machine.

A small simulator plays the leader: it runs `decide_cycle` on the state, commits the plan, and plays the
agents by marking placed replicas running (and healthy, or not, per image). Every cycle it samples how
many replicas run, so the "never below N - max_parallel" promise is checked at every step.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from orca import spec as specs
from orca.master.scheduling import decide_cycle
from orca.state.machine import apply, encode_entry, new_state

TERM = 1


class Sim:
    def __init__(self, nodes: int = 3, bad_images: tuple[str, ...] = ()) -> None:
        self.state = new_state()
        self.now = 1000.0
        self.ids = (f"a{i}" for i in itertools.count())
        self.bad = set(bad_images)
        self.samples: list[int] = []
        self.op("leader_elected", {"term": TERM, "node": "m1"})
        for i in range(nodes):
            self.op("register_node", {"node_id": f"n{i}", "address": "http://x", "labels": {},
                                      "capacity": {"memory": 2**32, "cpu": 8.0}, "push_token": "t",
                                      "agent_version": "1"})

    def op(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        result = apply(self.state, encode_entry(op, args, now=self.now))
        assert "error" not in result, result
        return result["result"]

    def deploy(self, **fields: Any) -> None:
        spec = specs.validate_service({"resources": {"memory": "64Mi", "cpu": 0.1}, **fields})
        self.op("deploy", {"services": [{"name": spec["name"], "spec": spec, "digest": specs.spec_digest(spec)}]})

    def running(self, name: str) -> int:
        return sum(1 for a in self.state["allocations"].values() if a["service"] == name
                   and a["desired"] in ("run", "migrate") and (a.get("observed") or {}).get("status") == "running")

    def agents_report(self) -> None:
        """Every node reports: desired replicas run (healthy unless their image is bad), stopped ones are gone."""
        reports: dict[str, Any] = {n: {"renewed_at": self.now, "allocs": {}} for n in self.state["nodes"]}
        for a in self.state["allocations"].values():
            if a["desired"] == "stop" or a["node"] not in reports:
                continue
            svc = self.state["services"][a["service"]]
            image = next(h["spec"]["image"] for h in svc["history"] if h["version"] == a["version"])
            bad = image in self.bad
            reports[a["node"]]["allocs"][a["id"]] = {
                "status": "failed" if bad else "running", "health": None, "container_id": a["id"],
                "started_at": None, "restarts": 0, "reason": "crash loop" if bad else None, "host_port": None}
        self.op("node_reports", {"term": TERM, "nodes": reports})

    def cycle(self, name: str = "web") -> None:
        c = decide_cycle(self.state, self.now, new_id=lambda: next(self.ids))
        for verdict in c.verdicts:
            self.op("rollout_status", {**verdict, "term": TERM})
        for node in c.drained:
            self.op("drain_complete", {"node_id": node, "term": TERM})
        if not c.plan_is_empty():
            self.op("plan", {"term": TERM, "place": c.place, "stop": c.stop, "pending": c.pending,
                             "migrate": c.migrate, "migrated": c.migrated})
        self.samples.append(self.running(name))
        self.agents_report()
        self.samples.append(self.running(name))
        self.now += 1.0

    def run(self, cycles: int, name: str = "web") -> None:
        for _ in range(cycles):
            self.cycle(name)

    def versions(self, name: str = "web") -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.state["allocations"].values():
            if a["service"] == name and a["desired"] in ("run", "migrate"):
                out[a["version"]] = out.get(a["version"], 0) + 1
        return out


def test_rolling_update_keeps_at_least_n_minus_max_parallel_running() -> None:
    sim = Sim()
    sim.deploy(name="web", image="img:1", replicas=6, update={"max_parallel": 2, "min_healthy_s": 1})
    sim.run(4)
    assert sim.versions() == {1: 6}
    sim.samples.clear()
    sim.deploy(name="web", image="img:2", replicas=6, update={"max_parallel": 2, "min_healthy_s": 1})
    sim.run(25)
    assert sim.versions() == {2: 6}
    assert min(sim.samples) >= 6 - 2, sim.samples
    assert max(sim.samples) <= 6 + 2, sim.samples  # surge bounded by max_parallel
    assert sim.state["services"]["web"]["rollout"]["state"] == "done"


def test_bad_version_halts_and_auto_reverts_without_dropping_below_n() -> None:
    sim = Sim(bad_images=("img:bad",))
    sim.deploy(name="web", image="img:1", replicas=4, update={"max_parallel": 1, "healthy_deadline_s": 5})
    sim.run(5)
    sim.samples.clear()
    sim.deploy(name="web", image="img:bad", replicas=4, update={"max_parallel": 1, "healthy_deadline_s": 5})
    sim.run(20)
    svc = sim.state["services"]["web"]
    assert svc["version"] == 3 and svc["spec"]["image"] == "img:1"  # 2 was bad; the revert is version 3
    assert [e["type"] for e in sim.state["events"] if e["type"].startswith("rollout")] == [
        "rollout_halted", "rollout_reverted", "rollout_done"]
    assert sim.versions() == {3: 4}
    assert min(sim.samples) >= 3, sim.samples


def test_halt_without_auto_revert_stops_placing_and_keeps_old_replicas() -> None:
    sim = Sim(bad_images=("img:bad",))
    upd = {"max_parallel": 1, "healthy_deadline_s": 3, "auto_revert": False}
    sim.deploy(name="web", image="img:1", replicas=3, update=upd)
    sim.run(4)
    sim.deploy(name="web", image="img:bad", replicas=3, update=upd)
    sim.run(12)
    svc = sim.state["services"]["web"]
    assert svc["rollout"]["state"] == "halted" and svc["version"] == 2
    assert sim.versions() == {1: 3, 2: 1}


def test_canary_then_promote_and_canary_rollback() -> None:
    sim = Sim()
    sim.deploy(name="web", image="img:1", replicas=4)
    sim.run(4)
    sim.deploy(name="web", image="img:2", replicas=4, canary=1)
    sim.run(5)
    assert sim.versions() == {1: 4, 2: 1}  # full old set plus the canary
    sim.op("rollback", {"name": "web"})
    sim.run(6)
    assert sim.versions() == {1: 4}
    sim.deploy(name="web", image="img:3", replicas=4, canary=2)
    sim.run(5)
    assert sim.versions() == {1: 4, 3: 2}  # versions only grow: the dropped canary keeps number 2
    sim.op("promote", {"name": "web"})
    sim.run(20)
    assert sim.versions() == {3: 4} and sim.state["services"]["web"]["spec"]["image"] == "img:3"


def test_rollback_without_canary_rolls_to_previous_spec_as_new_version() -> None:
    sim = Sim()
    sim.deploy(name="web", image="img:1", replicas=3, update={"max_parallel": 1, "min_healthy_s": 0})
    sim.run(3)
    sim.deploy(name="web", image="img:2", replicas=3, update={"max_parallel": 1, "min_healthy_s": 0})
    sim.run(12)
    sim.samples.clear()
    result = sim.op("rollback", {"name": "web"})
    assert result == {"name": "web", "version": 3, "spec_of": 1}
    sim.run(12)
    assert sim.versions() == {3: 3} and sim.state["services"]["web"]["spec"]["image"] == "img:1"
    assert min(sim.samples) >= 2


def test_drain_migrates_start_before_stop_then_node_is_ineligible() -> None:
    sim = Sim(nodes=3)
    sim.deploy(name="web", image="img:1", replicas=6, update={"max_parallel": 2, "min_healthy_s": 1})
    sim.run(4)
    on_n0 = [a for a in sim.state["allocations"].values() if a["node"] == "n0"]
    assert len(on_n0) == 2
    sim.samples.clear()
    sim.op("drain_node", {"node_id": "n0", "deadline_s": 300})
    sim.run(15)
    node = sim.state["nodes"]["n0"]
    assert node["eligibility"] == "ineligible" and node["drain"]["migrated"] == 2
    assert node["drain"]["stopped"] == 0
    assert not [a for a in sim.state["allocations"].values() if a["node"] == "n0"]
    assert min(sim.samples) >= 6, sim.samples  # start-before-stop: never below N
    sim.op("undrain_node", {"node_id": "n0"})
    assert sim.state["nodes"]["n0"]["eligibility"] == "eligible"


def test_drain_pinned_replica_goes_pending_and_deadline_stops_the_rest() -> None:
    sim = Sim(nodes=2)
    sim.deploy(name="pin", image="img:1", replicas=1, placement={"node": "n0"})
    sim.deploy(name="web", image="img:1", replicas=2, update={"min_healthy_s": 100, "healthy_deadline_s": 200})
    sim.run(3, "pin")
    sim.op("drain_node", {"node_id": "n0", "deadline_s": 5})
    sim.run(3, "pin")
    assert sim.running("pin") == 0
    assert "pinned" in sim.state["services"]["pin"]["pending"]["reason"]
    sim.run(8, "pin")  # web's replacement never becomes ready (min_healthy_s=100): the deadline stops it
    assert sim.state["nodes"]["n0"]["eligibility"] == "ineligible"
    assert sim.state["nodes"]["n0"]["drain"]["stopped"] >= 2


def test_remove_node_refuses_a_ready_eligible_node_and_forgets_a_drained_one() -> None:
    sim = Sim(nodes=2)
    result = apply(sim.state, encode_entry("remove_node", {"node_id": "n0"}, now=sim.now))
    assert result["error"]["code"] == "CONFLICT"
    sim.op("drain_node", {"node_id": "n0", "deadline_s": 0})
    sim.run(2)
    sim.op("remove_node", {"node_id": "n0"})
    assert "n0" not in sim.state["nodes"] and "n0" in sim.state["removed_nodes"]


def test_decommission_forgets_a_ready_node_and_its_replicas_are_placed_elsewhere() -> None:
    sim = Sim(nodes=2)
    sim.deploy(name="web", image="img:1", replicas=4)
    sim.run(2)
    on_n0 = sum(1 for a in sim.state["allocations"].values() if a["node"] == "n0" and a["desired"] == "run")
    assert on_n0 > 0
    result = sim.op("decommission_node", {"node_id": "n0"})
    assert result == {"node_id": "n0", "decommissioned": True, "apps_stopped": on_n0}
    assert "n0" not in sim.state["nodes"] and "n0" in sim.state["removed_nodes"]
    assert sim.state["events"][-1]["type"] == "node_decommissioned"
    sim.run(2)
    assert sim.running("web") == 4 and {a["node"] for a in sim.state["allocations"].values()} == {"n1"}
    again = apply(sim.state, encode_entry("decommission_node", {"node_id": "n0"}, now=sim.now))
    assert again["error"]["code"] == "NODE_NOT_FOUND"


@pytest.mark.parametrize("deadline", [-1, "5", True, 10**9])
def test_drain_rejects_bad_deadlines(deadline: object) -> None:
    sim = Sim(nodes=1)
    result = apply(sim.state, encode_entry("drain_node", {"node_id": "n0", "deadline_s": deadline}, now=1.0))
    assert result["error"]["code"] == "VALIDATION_ERROR"
    assert sim.state["nodes"]["n0"]["eligibility"] == "eligible"


def test_rollback_skips_a_dropped_canary() -> None:
    sim = Sim()
    sim.deploy(name="web", image="img:1", replicas=2, update={"min_healthy_s": 0})
    sim.run(3)
    sim.deploy(name="web", image="img:2", replicas=2, canary=1)
    sim.run(3)
    sim.op("rollback", {"name": "web"})  # drops the canary (version 2)
    sim.deploy(name="web", image="img:3", replicas=2, update={"min_healthy_s": 0})
    sim.run(8)
    assert sim.op("rollback", {"name": "web"})["spec_of"] == 1  # not the canary that never ran as the service
