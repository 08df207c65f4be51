"""Restart policies and jobs (orca.jobs): spec rules, the agent's exit decisions, the leader's runs and ticks
(fenced, each tick at most once), finished replicas neither rescheduled nor charged, job status, `orca run`'s
exit code."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import spec
from orca.agent.reconcile import Reconciler
from orca.agent.runtime import FakeRuntime
from orca.commands.jobs import exit_code_of
from orca.errors import InvalidSpec
from orca.jobs import decide_exit, due_tick
from orca.master.cron import due_ticks
from orca.master.scheduling import decide_cycle
from orca.master.views import service_detail, service_summary
from orca.state.machine import apply, encode_entry, new_state

IMAGE = "orca-test/busybox:latest"
_IDS = itertools.count()


def job(**fields: Any) -> dict[str, Any]:
    return spec.validate_service({"name": "migrate", "image": IMAGE, "kind": "job", **fields})


# -- spec and the pure rules -------------------------------------------------------------------------


def test_defaults_per_kind_and_digest_of_services_unchanged() -> None:
    j = job()
    assert (j["kind"], j["restart"], j["max_attempts"], j["schedule"]) == ("job", "on-failure", 3, None)
    s = spec.validate_service({"name": "web", "image": IMAGE})
    assert (s["kind"], s["restart"], s["max_attempts"]) == ("service", "always", 0)
    legacy = {k: v for k, v in s.items() if k not in ("kind", "restart", "max_attempts", "schedule")}
    assert spec.spec_digest(s) == spec.spec_digest(legacy)
    assert spec.validate_service(j) == j
    periodic = job(schedule="*/5  * * * *")
    assert periodic["schedule"] == "*/5 * * * *"


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": "cron"}, "kind"),
    ({"restart": "sometimes"}, "restart"),
    ({"kind": "job", "restart": "always"}, "restart"),
    ({"max_attempts": -1}, "max_attempts"),
    ({"schedule": "* * * * *"}, "schedule"),  # a service has no schedule
    ({"kind": "job", "schedule": "every minute"}, "schedule"),
    ({"kind": "job", "schedule": "* * * * * *"}, "schedule"),
    ({"kind": "job", "schedule": 5}, "schedule"),
    ({"kind": "job", "replicas": 2, "canary": 1}, "canary"),
    ({"kind": "job", "scaling": {"mode": "manual"}}, "scaling"),
])
def test_bad_lifecycle_fields(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        spec.validate_service({"name": "x", "image": IMAGE, **fields})
    assert exc.value.details["field"] == field


@pytest.mark.parametrize(("fields", "code", "runs", "verdict"), [
    ({"kind": "job"}, 0, 1, "complete"),
    ({"kind": "job"}, 1, 1, "restart"),
    ({"kind": "job"}, 1, 3, "dead"),
    ({"kind": "job", "restart": "never"}, 1, 1, "dead"),
    ({"kind": "job", "max_attempts": 0}, 1, 50, "restart"),
    ({}, 0, 1, "restart"),
    ({}, 1, 100, "restart"),
    ({"restart": "on-failure"}, 0, 1, "complete"),
    ({"restart": "on-failure", "max_attempts": 2}, 1, 2, "dead"),
    ({"restart": "never"}, 137, 1, "dead"),
    ({"max_attempts": 2}, 1, 2, "dead"),
])
def test_decide_exit(fields: dict[str, Any], code: int, runs: int, verdict: str) -> None:
    s = spec.validate_service({"name": "x", "image": IMAGE, **fields})
    assert decide_exit(s, code, runs) == verdict


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["* * * * *", "*/5 * * * *", "0 3 * * *", "15,45 * * * 1-5"]),
       st.floats(0, 2e9), st.floats(0, 1e6))
def test_due_tick_is_the_newest_match_after_the_last_and_never_in_the_future(expr: str, after: float,
                                                                               gap: float) -> None:
    now = after + gap
    tick = due_tick(expr, after, now)
    if tick is not None:
        assert after < tick <= now and tick % 60 == 0
        assert due_tick(expr, tick, now) is None  # once committed, the same tick is never due again


# -- the agent ------------------------------------------------------------------------------------------


def test_agent_marks_a_job_complete_or_dead_and_never_restarts_it() -> None:
    async def scenario() -> None:
        rt = FakeRuntime(images=[IMAGE])
        rec = Reconciler(rt)
        ok_job = {"id": "a1", "service": "migrate", "version": 1, "index": 0, "spec": job()}
        bad_job = {"id": "a2", "service": "other", "version": 1, "index": 0, "spec": job(max_attempts=2)}
        svc = {"id": "a3", "service": "web", "version": 1, "index": 0,
               "spec": spec.validate_service({"name": "web", "image": IMAGE})}
        rec.set_desired({"term": 1, "version": 1, "allocations": [ok_job, bad_job, svc]})
        await rec.reconcile_once()
        await rec.wait_idle()
        rt.exit("a1", 0)
        rt.exit("a2", 3)
        rt.exit("a3", 0)
        for _ in range(3):
            await rec.reconcile_once()
            await rec.wait_idle()
            for st_ in rec.states.values():
                st_.next_attempt = 0.0  # skip the crash backoff
            if rt._containers["a2"].status == "running":
                rt.exit("a2", 3)
        reports = {r["alloc"]: r for r in rec.reports()}
        assert (reports["a1"]["status"], reports["a1"]["exit_code"]) == ("complete", 0)
        assert (reports["a2"]["status"], reports["a2"]["exit_code"]) == ("dead", 3)
        assert "gave up after 2 runs" in reports["a2"]["reason"]
        assert reports["a3"]["status"] == "running"  # a service restarts whatever its exit code
        restarts = [a for op, a in rt.calls if op == "restart"]
        assert "a1" not in restarts and restarts.count("a2") == 1
    asyncio.run(scenario())


# -- the leader -----------------------------------------------------------------------------------------


def entry(op: str, args: dict[str, Any], now: float = 1000.0) -> bytes:
    return encode_entry(op, args, now=now, actor="t")


def ok(result: dict[str, Any]) -> Any:
    assert "error" not in result, result
    return result["result"]


def cluster(*specs: dict[str, Any]) -> dict[str, Any]:
    s = new_state()
    ok(apply(s, entry("leader_elected", {"term": 2, "node": "m1"})))
    for n in ("n1", "n2"):
        ok(apply(s, entry("register_node", {"node_id": n, "address": f"http://127.0.0.1:1/{n}", "labels": {},
                                             "capacity": {"memory": 2**30, "cpu": 1.0}, "push_token": "p",
                                             "agent_version": "1"})))
    ok(apply(s, entry("deploy", {"services": [{"name": x["name"], "spec": x, "digest": spec.spec_digest(x)}
                                              for x in specs]})))
    return s


def cycle(s: dict[str, Any], now: float = 2000.0) -> Any:
    c = decide_cycle(s, now, new_id=lambda: f"j{next(_IDS):05d}")
    ok(apply(s, entry("plan", {"term": 2, "place": c.place, "stop": c.stop, "pending": c.pending,
                               "migrate": c.migrate, "migrated": c.migrated})))
    for v in c.verdicts:
        apply(s, entry("rollout_status", {**v, "term": 2}))
    return c


def finish(s: dict[str, Any], status: str = "complete", code: int = 0) -> None:
    for a in s["allocations"].values():
        if a["desired"] == "run":
            a["observed"] = {"status": status, "exit_code": code, "health": None}


def test_a_finished_job_is_not_rerun_not_rescheduled_and_not_charged() -> None:
    s = cluster(job(replicas=2, resources={"memory": "600Mi"}))
    assert len(cycle(s).place) == 2
    finish(s)
    s["nodes"]["n1"]["status"] = "down"
    c = cycle(s)
    assert not c.place and not c.stop
    assert service_summary(s, s["services"]["migrate"])["status"] == "complete"
    # the room they held is free again: another 600Mi replica fits on n2
    s2 = cluster(job(replicas=1, resources={"memory": "600Mi"}),
                 spec.validate_service({"name": "web", "image": IMAGE, "resources": {"memory": "600Mi"}}))
    cycle(s2)
    finish(s2)
    for a in s2["allocations"].values():
        if a["service"] == "web":
            a["observed"] = {"status": "running"}
    ok(apply(s2, entry("scale", {"name": "web", "replicas": 2})))
    assert cycle(s2).place


def test_job_run_starts_a_fresh_run_and_removes_the_finished_one() -> None:
    s = cluster(job())
    cycle(s)
    finish(s)
    first = set(s["allocations"])
    assert ok(apply(s, entry("job_run", {"name": "migrate"}))) == {"name": "migrate", "run": 1}
    assert all(s["allocations"][a]["desired"] == "stop" for a in first)
    c = cycle(s)
    assert len(c.place) == 1 and s["allocations"][c.place[0]["alloc_id"]]["run"] == 1
    detail = service_detail(s, s["services"]["migrate"])
    assert detail["kind"] == "job" and detail["job"]["run"] == 1 and detail["status"] in ("pending", "running")
    web = spec.validate_service({"name": "web", "image": IMAGE})
    ok(apply(s, entry("deploy", {"services": [{"name": "web", "spec": web, "digest": spec.spec_digest(web)}]})))
    assert apply(s, entry("job_run", {"name": "web"}))["error"]["code"] == "CONFLICT"


def test_a_changed_job_spec_reruns_and_the_rollout_is_done_at_once() -> None:
    s = cluster(job())
    cycle(s)
    finish(s)
    new = job(command=["true"])
    ok(apply(s, entry("deploy", {"services": [{"name": "migrate", "spec": new, "digest": spec.spec_digest(new)}]})))
    c = cycle(s)
    assert len(c.place) == 1 and c.place[0]["version"] == 2
    assert s["services"]["migrate"]["rollout"]["state"] == "done"


def test_periodic_job_waits_for_its_tick_and_each_tick_runs_once_whoever_leads() -> None:
    s = cluster(job(schedule="* * * * *"))
    assert not cycle(s).place  # deployed at t=1000: nothing before the first tick
    assert service_summary(s, s["services"]["migrate"])["status"] == "waiting"
    assert due_ticks(s, 1019.0) == []
    assert due_ticks(s, 1021.0) == [("migrate", 1020.0)]
    ok(apply(s, entry("job_tick", {"name": "migrate", "tick": 1020.0, "term": 2})))
    # the same decision again (a new leader that read the state before the commit): refused, no second run
    again = apply(s, entry("job_tick", {"name": "migrate", "tick": 1020.0, "term": 3}))
    assert again["error"]["code"] == "TICK_DONE"
    assert s["services"]["migrate"]["run"] == 1 and due_ticks(s, 1079.0) == []
    stale = apply(s, entry("job_tick", {"name": "migrate", "tick": 1080.0, "term": 1}))
    assert stale["error"]["code"] == "STALE_LEADER"
    assert len(cycle(s).place) == 1
    finish(s)
    assert due_ticks(s, 1085.0) == [("migrate", 1080.0)]
    ok(apply(s, entry("job_tick", {"name": "migrate", "tick": 1080.0, "term": 2})))
    assert s["services"]["migrate"]["run"] == 2
    assert len(cycle(s).place) == 1


def test_exit_code_of_a_run() -> None:
    assert exit_code_of({"status": "complete", "job": {"exit_codes": [0, 0]}}) == 0
    assert exit_code_of({"status": "failed", "job": {"exit_codes": [0, 3]}}) == 3
    assert exit_code_of({"status": "failed", "job": {"exit_codes": [None]}}) == 1
    assert exit_code_of({"status": "failed", "job": {"exit_codes": [-1]}}) == 1


# -- depends_on (orca.depends) ----------------------------------------------------------------------------


def dep_spec(name: str, **fields: Any) -> dict[str, Any]:
    return spec.validate_service({"name": name, "image": IMAGE, **fields})


def test_depends_on_spec_rules() -> None:
    assert dep_spec("app", depends_on=["db", "cache", "db"])["depends_on"] == ["cache", "db"]
    for bad, field in ((["app"], "depends_on"), ("db", "depends_on"), (["DB"], "depends_on[0]"),
                       ([f"s{i}" for i in range(33)], "depends_on")):
        with pytest.raises(InvalidSpec) as exc:
            dep_spec("app", depends_on=bad)
        assert exc.value.details["field"] == field


def test_a_service_waits_for_its_dependency_to_be_healthy_then_starts() -> None:
    s = cluster(dep_spec("db", port=6379, health={"tcp": 6379}), dep_spec("app", depends_on=["db"]))
    c = cycle(s)
    assert {p["service"] for p in c.place} == {"db"}
    assert s["services"]["app"]["pending"] == {"count": 1, "reason": "waiting for db to be healthy (depends_on)"}
    for a in s["allocations"].values():
        a["observed"] = {"status": "running", "health": "starting", "running_since": 0.0}
    assert not cycle(s).place
    for a in s["allocations"].values():
        a["observed"]["health"] = "healthy"
    c = cycle(s)
    assert [p["service"] for p in c.place] == ["app"]
    assert s["services"]["app"]["pending"] is None


def test_depends_on_a_job_waits_for_its_completion_and_bad_references_say_why() -> None:
    s = cluster(job(), dep_spec("app", depends_on=["migrate"]), dep_spec("lost", depends_on=["ghost"]),
                dep_spec("a", depends_on=["b"]), dep_spec("b", depends_on=["a"]))
    cycle(s)
    pending = {n: (svc.get("pending") or {}).get("reason") for n, svc in s["services"].items()}
    assert pending["app"] == "waiting for migrate to be complete (depends_on)"
    assert pending["lost"] == "depends on ghost, which is not a service of project default"
    assert "cycle" in pending["a"] and "cycle" in pending["b"]
    finish(s)
    assert [p["service"] for p in cycle(s).place] == ["app"]


def test_a_schedule_added_later_starts_from_the_deploy_not_from_the_past() -> None:
    s = cluster(job())
    periodic = job(schedule="* * * * *")
    ok(apply(s, entry("deploy", {"services": [{"name": "migrate", "spec": periodic,
                                               "digest": spec.spec_digest(periodic)}]}, now=5000.0)))
    assert due_ticks(s, 5030.0) == []
    assert due_ticks(s, 5041.0) == [("migrate", 5040.0)]


def test_a_completed_slot_stays_done_after_its_allocation_is_gone() -> None:
    s = cluster(job(replicas=2))
    cycle(s)
    for a in list(s["allocations"].values()):
        ok(apply(s, entry("node_reports", {"term": 2, "nodes": {a["node"]: {"renewed_at": 1500.0, "allocs": {
            x: {"status": "complete", "exit_code": 0, "restarts": 0}
            for x, y in s["allocations"].items() if y["node"] == a["node"]}}}})))
    assert {f["status"] for f in s["services"]["migrate"]["finished_slots"].values()} == {"complete"}
    node = next(iter(s["allocations"].values()))["node"]
    ok(apply(s, entry("drain_node", {"node_id": node, "deadline_s": 0, "force": True})))
    c = cycle(s)
    assert c.stop  # the drained node's finished replica is removed ...
    for alloc_id in c.stop:
        del s["allocations"][alloc_id]
    assert not cycle(s).place  # ... and its slot is not run again
    assert service_summary(s, s["services"]["migrate"])["status"] == "complete"
    ok(apply(s, entry("job_run", {"name": "migrate"})))
    assert len(cycle(s).place) == 2  # a new run fills every slot again
