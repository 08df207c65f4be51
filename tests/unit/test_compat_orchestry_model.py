"""Orchestry's App model on orca's service spec: mapping both ways, time filters, log lines, errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca import spec as orca_spec
from orca.errors import Invalid, InvalidSpec, NotLeader, OrcaError, ServiceNotFound
from orca.master import compat_orchestry
from orca.master import compat_orchestry_model as model

APP: dict[str, Any] = {
    "apiVersion": "v1", "kind": "App",
    "metadata": {"name": "my-app", "labels": {"app": "my-app", "version": "v1"}},
    "spec": {"type": "http", "image": "nginx:alpine", "ports": [{"containerPort": 80, "protocol": "HTTP"}]},
}


def test_app_maps_to_a_service_and_back() -> None:
    svc = model.service_spec(APP)
    assert svc["name"] == "my-app" and svc["image"] == "nginx:alpine" and svc["port"] == 80
    assert svc["replicas"] == 0 and svc["labels"] == {"app": "my-app", "version": "v1"} and svc["scaling"] is None
    back = model.app_spec(svc)
    assert {k: back[k] for k in ("apiVersion", "kind", "metadata", "spec")} == APP
    assert back["scaling"] == {"mode": "manual", "minReplicas": 1, "maxReplicas": 10}
    # the normalized spec is stable (orca may validate it again) and its labels are not part of a version
    assert orca_spec.validate_service(svc) == svc
    assert orca_spec.spec_digest(svc) == orca_spec.spec_digest({**svc, "labels": {"other": "x"}})


def test_scaling_camel_case_round_trips() -> None:
    doc = {**APP, "scaling": {"mode": "auto", "minReplicas": 2, "maxReplicas": 6, "targetRPSPerReplica": 40,
                              "cooldownSeconds": 90}}
    svc = model.service_spec(doc)
    assert svc["scaling"]["mode"] == "auto" and svc["scaling"]["target_rps_per_replica"] == 40.0
    back = model.app_spec(svc)["scaling"]
    assert back["minReplicas"] == 2 and back["maxReplicas"] == 6 and back["targetRPSPerReplica"] == 40
    assert back["cooldownSeconds"] == 90


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["spec"].update(imgae="x"), "spec.imgae"),
    (lambda d: d["spec"].pop("image"), "spec.image"),
    (lambda d: d["metadata"].update(name="My App"), "metadata.name"),
    (lambda d: d["metadata"].pop("name"), "metadata.name"),
    (lambda d: d["metadata"].update(labels={"k": 1}), "metadata.labels.k"),
    (lambda d: d["spec"].update(type="tcp"), "spec.type"),
    (lambda d: d["spec"]["ports"].append({"containerPort": 81}), "spec.ports"),
    (lambda d: d["spec"]["ports"][0].update(containerPort=70000), "spec.ports[0].containerPort"),
    (lambda d: d["spec"]["ports"][0].update(protocol="UDP"), "spec.ports[0].protocol"),
    (lambda d: d.update(kind="Job"), "kind"),
    (lambda d: d.update(apiVersion="v2"), "apiVersion"),
    (lambda d: d.update(scaling={"minReplicas": 5, "maxReplicas": 2}), "scaling"),
    (lambda d: d.update(scaling={"minReplica": 1}), "scaling.minReplica"),
])
def test_bad_specs_name_the_app_field(mutate: Any, field: str) -> None:
    doc = {**APP, "metadata": dict(APP["metadata"]), "spec": {**APP["spec"], "ports": [dict(APP["spec"]["ports"][0])]}}
    mutate(doc)
    with pytest.raises(InvalidSpec) as err:
        model.service_spec(doc)
    assert err.value.message.startswith(field), err.value.message


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))
def test_any_json_is_a_spec_or_invalid_spec(raw: Any) -> None:
    try:
        svc = model.service_spec(raw)
    except InvalidSpec:
        return
    assert orca_spec.validate_service(svc) == svc


def test_since_accepts_relative_and_iso() -> None:
    now = 1_700_000_000.0
    assert model.parse_since("1h", now) == now - 3600
    assert model.parse_since("1d", now) == now - 86400
    assert model.parse_since("5m", now) == now - 300
    assert model.parse_since("2024-01-15T10:30:00Z", now) == dt.datetime(2024, 1, 15, 10, 30, tzinfo=dt.UTC).timestamp()
    assert model.parse_since("2024-01-15T10:30:00", now) == dt.datetime(2024, 1, 15, 10, 30, tzinfo=dt.UTC).timestamp()
    for bad in ("yesterday", "0h", "1y", "-1h", "", "1" * 100, "１h"):
        with pytest.raises(Invalid):
            model.parse_since(bad, now)
    assert model.parse_interval("5m") == 300
    with pytest.raises(Invalid):
        model.parse_interval("5 minutes")


@given(st.text(max_size=80))
def test_since_never_raises_anything_but_invalid(raw: str) -> None:
    try:
        model.parse_since(raw, 0.0)
    except Invalid:
        pass


def test_log_lines_become_json_entries() -> None:
    entry = model.log_entry("2024-01-15T10:30:15.123456789Z WARN High memory usage detected", "my-app-2")
    assert entry == {"timestamp": "2024-01-15T10:30:15.123Z", "container": "my-app-2", "level": "WARN",
                     "message": "WARN High memory usage detected"}
    plain = model.log_entry("GET / 200", "my-app-1")
    assert plain["timestamp"] is None and plain["level"] == "INFO"
    assert model.log_entry("x warning: disk", "c")["level"] == "WARN"
    assert model.log_entry("fatal: boom", "c")["level"] == "ERROR"


@given(st.text(max_size=300))
def test_any_log_line_becomes_an_entry(line: str) -> None:
    entry = model.log_entry(line, "c")
    assert set(entry) == {"timestamp", "container", "level", "message"}


def test_status_events_and_policy() -> None:
    assert model.app_status("stopped", 3) == "stopped"
    assert model.app_status("running", 0) == "stopped"
    assert model.app_status("degraded", 3) == "running"
    assert model.app_status("pending", 3) == "pending"
    assert model.event_category("service_scaled") == "scaling"
    assert model.event_category("autoscaled") == "scaling"
    assert model.event_category("scaling_set") == "config"
    assert model.event_category("rollout_halted") == "error"
    assert model.event_category("replica_unhealthy") == "health"
    details = model.event_details("autoscaled", {"previous": 2, "replicas": 3, "reason": "cpu_high",
                                                 "figures": {"cpu_pct": 78.5}})
    assert (details["previous_replicas"], details["new_replicas"], details["trigger"], details["cpu_percent"]) == (
        2, 3, "cpu_high", 78.5)
    mode, policy = model.policy_view(None)
    assert mode == "manual" and policy["min_replicas"] == 1 and isinstance(policy["max_replicas"], int)
    merged = model.policy_from_body({"mode": "auto", "min_replicas": 2}, {"mode": "manual", "max_replicas": 4})
    assert merged["mode"] == "auto" and merged["min_replicas"] == 2 and merged["max_replicas"] == 4
    with pytest.raises(InvalidSpec):
        model.policy_from_body({"min_replicas": 9}, {"max_replicas": 4})


def test_errors_take_orchestrys_codes_and_envelope() -> None:
    err = model.to_orchestry_error(ServiceNotFound("service 'x' not found", {"service": "x"}), "x")
    assert (err.status, err.code, err.message, err.details) == (
        404, "APP_NOT_FOUND", "Application not found", "Application 'x' does not exist")
    err = model.to_orchestry_error(Invalid("replicas: bad", {"field": "replicas"}), "x")
    assert (err.status, err.code, err.message, err.details) == (
        400, "VALIDATION_ERROR", "Request validation failed", "replicas: bad")
    redirect = NotLeader("http://m1")
    assert model.to_orchestry_error(redirect, "x") is redirect
    other = OrcaError("boom", {"a": 1}, code="PROJECT_FORBIDDEN")
    assert model.to_orchestry_error(other, "x").details == {"a": 1}


def test_health_constants_match_the_agent() -> None:
    from orca.agent import health
    assert compat_orchestry.FAILURES_BEFORE_RESTART == health.FAILURES_BEFORE_RESTART


def test_every_orchestry_route_has_an_openapi_entry() -> None:
    from dataclasses import dataclass, field

    from orca.master import openapi_orchestry
    from orca.master.api import MasterApi, MasterInfo
    from orca.master.api_traffic import TrafficEndpoints
    from orca.master.compat_orchestry_routes import add_orchestry_routes
    from orca.master.traffic import TrafficBook

    info = MasterInfo(node_id="m1", api_urls={"m1": "http://127.0.0.1:1"}, raft_addrs={}, signing_key=b"k" * 32,
                      max_body_bytes=1024)
    api = MasterApi(raft=None, leadership=None, info=info)  # type: ignore[arg-type] - routes only
    bare = {(r.method, r.resource.canonical) for r in api.build_app().router.routes() if r.resource}
    add_orchestry_routes(api, TrafficEndpoints(api, TrafficBook(), {}), api_listen=("127.0.0.1", 1),
                         raft_listen=("127.0.0.1", 2), election_timeout_s=1.0)
    served = {(r.method, r.resource.canonical) for r in api.build_app().router.routes()
              if r.resource and r.method != "HEAD"} - bare
    assert served == set(openapi_orchestry.ENTRIES)

    @dataclass(frozen=True)
    class Param:  # the OpenAPI module's shapes (orca.master.openapi), stood in for here
        name: str
        schema: dict[str, Any]
        description: str = ""

    @dataclass(frozen=True)
    class Op:
        summary: str
        query: tuple[Param, ...] = ()
        body: str | None = None
        body_type: str = "application/json"
        body_required: bool = True
        ok: int = 200
        ok_type: str = "application/json"
        ok_schema: dict[str, Any] = field(default_factory=dict)
        leader: bool = False
        websocket: bool = False
        idempotent_key: bool = False
        tag: str = "services"
        extra_errors: tuple[int, ...] = ()
    ops = openapi_orchestry.routes(Op, Param)
    for (method, path), op in ops.items():
        assert op.body is None or op.body in openapi_orchestry.SCHEMAS
        assert op.websocket == path.endswith("/stream")
        assert op.leader == (method != "GET"), (method, path)
