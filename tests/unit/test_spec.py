"""Tests for orca.spec: a table of good and bad specs, then hypothesis properties."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orca import config
from orca import spec as spec_mod
from orca.errors import InvalidSpec
from orca.spec import (
    MAX_REPLICAS,
    ROLLOUT_FIELDS,
    SCALING_DEFAULTS,
    parse_memory,
    rollout_fields_changed,
    secret_refs,
    spec_digest,
    validate_deploy_body,
    validate_scaling,
    validate_service,
)

DEFAULTS: dict[str, Any] = {
    "name": "web",
    "project": "default",
    "image": "nginx:1.25",
    "command": None,
    "replicas": 1,
    "port": None,
    "domain": None,
    "health": None,
    "env": {},
    "resources": {"memory": 268435456, "cpu": 0.25},
    "internal": False,
    "placement": {"node": None, "labels": {}},
    "update": {"max_parallel": 1, "min_healthy_s": 2.0, "healthy_deadline_s": 60.0, "auto_revert": True},
    "canary": 0,
    "scaling": None,
    "canary_weight": None,
    "read_only": False,
    "user": None,
    "volumes": [],
    "kind": "service",
    "restart": "always",
    "max_attempts": 0,
    "schedule": None,
    "registry_auth": None,
    "depends_on": [],
}

SCALING: dict[str, Any] = {
    "mode": "manual",
    "min_replicas": 1,
    "max_replicas": 10,
    "target_rps_per_replica": 50.0,
    "max_p95_latency_ms": 250.0,
    "max_cpu_percent": 80.0,
    "max_memory_percent": 85.0,
    "scale_out_threshold_pct": 80.0,
    "scale_in_threshold_pct": 30.0,
    "window_seconds": 60.0,
    "cooldown_seconds": 120.0,
}


def base(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": "web", "image": "nginx:1.25"}
    raw.update(over)
    return raw


def expect(**over: Any) -> dict[str, Any]:
    out = copy.deepcopy(DEFAULTS)
    out.update(over)
    return out


def test_public_surface() -> None:
    for name in spec_mod.__all__:
        assert hasattr(spec_mod, name), name
    assert MAX_REPLICAS == 1000


def test_minimal_spec_gets_every_default() -> None:
    assert validate_service({"name": "web", "image": "nginx:1.25"}) == expect()


def test_normalized_field_order() -> None:
    # The new fields go last; the order of the older ones is what existing records were written with.
    assert list(validate_service(base(scaling={}, canary_weight=0.1))) == list(DEFAULTS)
    assert list(validate_scaling({})) == list(SCALING)


def test_scaling_defaults_are_the_documented_ones() -> None:
    assert SCALING_DEFAULTS == SCALING
    assert list(SCALING_DEFAULTS) == list(SCALING)


# -- good inputs: raw overrides -> expected overrides of the normalized form ----------------------

GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("project", {"project": "shop"}, {"project": "shop"}),
    ("name 63 chars", {"name": "a" * 63}, {"name": "a" * 63}),
    ("name single char", {"name": "a"}, {"name": "a"}),
    ("name digits and dash", {"name": "1-web-2"}, {"name": "1-web-2"}),
    ("image with registry and digest", {"image": "reg.io:5000/a/b@sha256:" + "0" * 64},
     {"image": "reg.io:5000/a/b@sha256:" + "0" * 64}),
    ("command list", {"command": ["sh", "-c", "echo hi"]}, {"command": ["sh", "-c", "echo hi"]}),
    ("command explicit null", {"command": None}, {}),
    ("replicas zero", {"replicas": 0}, {"replicas": 0}),
    ("replicas max", {"replicas": 1000}, {"replicas": 1000}),
    ("port low", {"port": 1}, {"port": 1}),
    ("port high", {"port": 65535}, {"port": 65535}),
    ("port null", {"port": None}, {}),
    ("domain", {"domain": "app.example.com"}, {"domain": "app.example.com"}),
    ("domain lowercased", {"domain": "App.Example.COM"}, {"domain": "app.example.com"}),
    ("domain single label", {"domain": "localhost"}, {"domain": "localhost"}),
    ("health with port", {"port": 8080, "health": "/healthz?x=1"}, {"port": 8080, "health": "/healthz?x=1"}),
    ("env", {"env": {"A": "1", "_b2": "", "LOG_LEVEL": "debug x"}},
     {"env": {"A": "1", "_b2": "", "LOG_LEVEL": "debug x"}}),
    ("env secret template kept", {"env": {"DB": "postgres://u:${secrets.DB_PASS}@db/x"}},
     {"env": {"DB": "postgres://u:${secrets.DB_PASS}@db/x"}}),
    ("env plain dollar brace is not a secret", {"env": {"X": "${HOME}"}}, {"env": {"X": "${HOME}"}}),
    ("memory Mi", {"resources": {"memory": "512Mi"}}, {"resources": {"memory": 512 * 2**20, "cpu": 0.25}}),
    ("memory Gi and cpu int", {"resources": {"memory": "1Gi", "cpu": 2}},
     {"resources": {"memory": 2**30, "cpu": 2.0}}),
    ("memory int bytes", {"resources": {"memory": 2**27}}, {"resources": {"memory": 2**27, "cpu": 0.25}}),
    ("memory decimal G", {"resources": {"memory": "1G"}}, {"resources": {"memory": 10**9, "cpu": 0.25}}),
    ("cpu fraction", {"resources": {"cpu": 0.1}}, {"resources": {"memory": 268435456, "cpu": 0.1}}),
    ("cpu max", {"resources": {"cpu": 256}}, {"resources": {"memory": 268435456, "cpu": 256.0}}),
    ("internal", {"internal": True}, {"internal": True}),
    ("placement node", {"placement": {"node": "worker-1"}}, {"placement": {"node": "worker-1", "labels": {}}}),
    ("placement labels", {"placement": {"labels": {"zone": "a", "disk": "ssd"}}},
     {"placement": {"node": None, "labels": {"zone": "a", "disk": "ssd"}}}),
    ("update partial", {"update": {"max_parallel": 3}},
     {"update": {"max_parallel": 3, "min_healthy_s": 2.0, "healthy_deadline_s": 60.0, "auto_revert": True}}),
    ("update full", {"update": {"max_parallel": 2, "min_healthy_s": 0, "healthy_deadline_s": 0.5,
                                "auto_revert": False}},
     {"update": {"max_parallel": 2, "min_healthy_s": 0.0, "healthy_deadline_s": 0.5, "auto_revert": False}}),
    ("canary equal to replicas", {"replicas": 3, "canary": 3}, {"replicas": 3, "canary": 3}),
    ("empty tables", {"resources": {}, "placement": {}, "update": {}, "env": {}}, {}),
    ("scaling null", {"scaling": None}, {}),
    ("scaling empty gets every default", {"scaling": {}}, {"scaling": SCALING}),
    ("scaling auto", {"scaling": {"mode": "auto"}}, {"scaling": {**SCALING, "mode": "auto"}}),
    ("scaling ints become floats", {"scaling": {"target_rps_per_replica": 20, "max_p95_latency_ms": 100,
                                                "window_seconds": 5, "cooldown_seconds": 0}},
     {"scaling": {**SCALING, "target_rps_per_replica": 20.0, "max_p95_latency_ms": 100.0, "window_seconds": 5.0,
                  "cooldown_seconds": 0.0}}),
    ("scaling min zero", {"scaling": {"min_replicas": 0}}, {"scaling": {**SCALING, "min_replicas": 0}}),
    ("scaling min equals max", {"scaling": {"min_replicas": 4, "max_replicas": 4}},
     {"scaling": {**SCALING, "min_replicas": 4, "max_replicas": 4}}),
    ("scaling max zero with min zero", {"scaling": {"min_replicas": 0, "max_replicas": 0}},
     {"scaling": {**SCALING, "min_replicas": 0, "max_replicas": 0}}),
    ("scaling max at MAX_REPLICAS", {"scaling": {"max_replicas": 1000}},
     {"scaling": {**SCALING, "max_replicas": 1000}}),
    ("scaling percents at 100", {"scaling": {"max_cpu_percent": 100, "max_memory_percent": 100.0}},
     {"scaling": {**SCALING, "max_cpu_percent": 100.0, "max_memory_percent": 100.0}}),
    ("scaling small percents", {"scaling": {"max_cpu_percent": 0.5, "max_memory_percent": 1e-3}},
     {"scaling": {**SCALING, "max_cpu_percent": 0.5, "max_memory_percent": 1e-3}}),
    ("scaling thresholds above 100", {"scaling": {"scale_out_threshold_pct": 150, "scale_in_threshold_pct": 100}},
     {"scaling": {**SCALING, "scale_out_threshold_pct": 150.0, "scale_in_threshold_pct": 100.0}}),
    ("scaling thresholds close", {"scaling": {"scale_out_threshold_pct": 50, "scale_in_threshold_pct": 49.9}},
     {"scaling": {**SCALING, "scale_out_threshold_pct": 50.0, "scale_in_threshold_pct": 49.9}}),
    ("scaling full", {"scaling": {"mode": "auto", "min_replicas": 2, "max_replicas": 20,
                                  "target_rps_per_replica": 100.5, "max_p95_latency_ms": 300,
                                  "max_cpu_percent": 70, "max_memory_percent": 90, "scale_out_threshold_pct": 75,
                                  "scale_in_threshold_pct": 25, "window_seconds": 30, "cooldown_seconds": 90}},
     {"scaling": {"mode": "auto", "min_replicas": 2, "max_replicas": 20, "target_rps_per_replica": 100.5,
                  "max_p95_latency_ms": 300.0, "max_cpu_percent": 70.0, "max_memory_percent": 90.0,
                  "scale_out_threshold_pct": 75.0, "scale_in_threshold_pct": 25.0, "window_seconds": 30.0,
                  "cooldown_seconds": 90.0}}),
    ("scaling independent of replicas", {"replicas": 0, "scaling": {"min_replicas": 3}},
     {"replicas": 0, "scaling": {**SCALING, "min_replicas": 3}}),
    ("canary_weight null", {"canary_weight": None}, {}),
    ("canary_weight", {"canary_weight": 0.1}, {"canary_weight": 0.1}),
    ("canary_weight tiny", {"canary_weight": 1e-9}, {"canary_weight": 1e-9}),
    ("canary_weight near one", {"canary_weight": 0.999}, {"canary_weight": 0.999}),
    ("canary_weight with canary", {"replicas": 4, "canary": 1, "canary_weight": 0.5},
     {"replicas": 4, "canary": 1, "canary_weight": 0.5}),
]


@pytest.mark.parametrize(("raw_over", "want_over"), [(r, w) for _, r, w in GOOD], ids=[c for c, _, _ in GOOD])
def test_good_specs(raw_over: dict[str, Any], want_over: dict[str, Any]) -> None:
    got = validate_service(base(**raw_over))
    assert got == expect(**{"name": got["name"], "image": got["image"], **want_over})
    assert validate_service(got) == got


# -- bad inputs: raw overrides -> (field in details, text the message contains) -------------------

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top field", {"imgae": "x"}, "imgae", "unknown field 'imgae'"),
    ("unknown resources field", {"resources": {"gpu": 1}}, "resources.gpu", "unknown field 'resources.gpu'"),
    ("unknown update field", {"update": {"parallel": 1}}, "update.parallel", "unknown field 'update.parallel'"),
    ("unknown placement field", {"placement": {"host": "x"}}, "placement.host", "unknown field"),
    ("name missing", {"name": None}, "name", "name:"),
    ("name uppercase", {"name": "Web"}, "name", "name: expected a DNS label"),
    ("name underscore", {"name": "my_web"}, "name", "name:"),
    ("name leading dash", {"name": "-web"}, "name", "name:"),
    ("name trailing dash", {"name": "web-"}, "name", "name:"),
    ("name too long", {"name": "a" * 64}, "name", "name:"),
    ("name empty", {"name": ""}, "name", "name:"),
    ("name not string", {"name": 5}, "name", "name: expected a string"),
    ("name trailing newline", {"name": "web\n"}, "name", "name:"),
    ("project bad", {"project": "My Project"}, "project", "project:"),
    ("project null", {"project": None}, "project", "project:"),
    ("image missing", {"image": None}, "image", "image: required"),
    ("image empty", {"image": ""}, "image", "image: must not be empty"),
    ("image whitespace", {"image": "nginx latest"}, "image", "image:"),
    ("image newline", {"image": "nginx\n"}, "image", "image:"),
    ("image not string", {"image": ["nginx"]}, "image", "image: expected a string"),
    ("command string", {"command": "echo hi"}, "command", "command: expected a list"),
    ("command empty", {"command": []}, "command", "command:"),
    ("command non-string item", {"command": ["sleep", 5]}, "command[1]", "command[1]: expected a string"),
    ("command NUL", {"command": ["a\x00b"]}, "command[0]", "command[0]:"),
    ("replicas negative", {"replicas": -1}, "replicas", "replicas: must be between 0 and 1000"),
    ("replicas too many", {"replicas": 1001}, "replicas", "replicas:"),
    ("replicas bool", {"replicas": True}, "replicas", "replicas: expected an integer"),
    ("replicas float", {"replicas": 2.0}, "replicas", "replicas: expected an integer"),
    ("replicas string", {"replicas": "2"}, "replicas", "replicas:"),
    ("replicas null", {"replicas": None}, "replicas", "replicas:"),
    ("port zero", {"port": 0}, "port", "port:"),
    ("port too big", {"port": 65536}, "port", "port:"),
    ("port string", {"port": "80"}, "port", "port: expected an integer"),
    ("port bool", {"port": True}, "port", "port:"),
    ("domain bad chars", {"domain": "a_b.example.com"}, "domain", "domain:"),
    ("domain empty label", {"domain": "a..b"}, "domain", "domain:"),
    ("domain trailing dot", {"domain": "a.b."}, "domain", "domain:"),
    ("domain url", {"domain": "http://a.b"}, "domain", "domain:"),
    ("domain non-ascii folding", {"domain": "\u212a.example"}, "domain", "domain:"),
    ("domain too long", {"domain": ".".join(["a" * 60] * 5)}, "domain", "domain:"),
    ("health without slash", {"port": 80, "health": "healthz"}, "health", "health:"),
    ("health without port", {"health": "/healthz"}, "health", "health: a health check needs 'port'"),
    ("health whitespace", {"port": 80, "health": "/a b"}, "health", "health:"),
    ("health not string", {"port": 80, "health": 1}, "health", "health:"),
    ("env not dict", {"env": ["A=1"]}, "env", "env: expected an object"),
    ("env bad key digit", {"env": {"1A": "x"}}, "env", "env: invalid variable name"),
    ("env bad key dash", {"env": {"A-B": "x"}}, "env", "env:"),
    ("env non-string value", {"env": {"PORT": 80}}, "env.PORT", "env.PORT: expected a string"),
    ("env NUL", {"env": {"A": "x\x00"}}, "env.A", "env.A:"),
    ("env malformed secret", {"env": {"A": "${secrets.}"}}, "env.A", "env.A: malformed secret reference"),
    ("env unclosed secret", {"env": {"A": "${secrets.X"}}, "env.A", "env.A:"),
    ("resources not dict", {"resources": "big"}, "resources", "resources: expected an object"),
    ("memory word", {"resources": {"memory": "lots"}}, "resources.memory",
     "resources.memory: expected a size like '512Mi'"),
    ("memory lowercase unit", {"resources": {"memory": "512mi"}}, "resources.memory", "resources.memory:"),
    ("memory float", {"resources": {"memory": 5.0e8}}, "resources.memory", "resources.memory:"),
    ("memory bool", {"resources": {"memory": True}}, "resources.memory", "resources.memory:"),
    ("memory zero", {"resources": {"memory": 0}}, "resources.memory", "resources.memory:"),
    ("memory negative", {"resources": {"memory": -5}}, "resources.memory", "resources.memory:"),
    ("memory below docker minimum", {"resources": {"memory": 512}}, "resources.memory",
     "resources.memory: must be at least 6Mi"),
    ("memory absurd", {"resources": {"memory": "2000Ti"}}, "resources.memory", "resources.memory:"),
    ("cpu zero", {"resources": {"cpu": 0}}, "resources.cpu", "resources.cpu: must be at least 0.01"),
    ("cpu tiny", {"resources": {"cpu": 1e-300}}, "resources.cpu", "resources.cpu: must be at least 0.01"),
    ("read_only string", {"read_only": "yes"}, "read_only", "read_only: expected true or false"),
    ("user with space", {"user": "root user"}, "user", "user: expected a user"),
    ("user empty", {"user": ""}, "user", "user: expected a user"),
    ("user too long", {"user": "u" * 33}, "user", "user: expected a user"),
    ("user number", {"user": 0}, "user", "user: expected a user"),
    ("command too long", {"command": ["x"] * 257}, "command", "command: must have at most 256 arguments"),
    ("command arg huge", {"command": ["x" * 40000]}, "command[0]", "command[0]: must be at most"),
    ("env too many", {"env": {f"K{i}": "v" for i in range(257)}}, "env", "env: must have at most 256"),
    ("env value huge", {"env": {"K": "v" * 40000}}, "env.K", "env.K: must be at most"),
    ("deadline huge", {"update": {"healthy_deadline_s": 1e30}}, "update.healthy_deadline_s",
     "update.healthy_deadline_s: must be at most 86400"),
    ("labels too many", {"placement": {"labels": {f"k{i}": "v" for i in range(65)}}}, "placement.labels",
     "placement.labels: must have at most 64"),
    ("cpu negative", {"resources": {"cpu": -1}}, "resources.cpu", "resources.cpu:"),
    ("cpu too many", {"resources": {"cpu": 257}}, "resources.cpu", "resources.cpu: must be at most 256"),
    ("cpu nan", {"resources": {"cpu": float("nan")}}, "resources.cpu", "resources.cpu:"),
    ("cpu inf", {"resources": {"cpu": float("inf")}}, "resources.cpu", "resources.cpu:"),
    ("cpu string", {"resources": {"cpu": "1"}}, "resources.cpu", "resources.cpu: expected a number"),
    ("cpu bool", {"resources": {"cpu": True}}, "resources.cpu", "resources.cpu:"),
    ("cpu huge int", {"resources": {"cpu": 10**400}}, "resources.cpu", "resources.cpu:"),
    ("internal string", {"internal": "yes"}, "internal", "internal: expected true or false"),
    ("internal int", {"internal": 1}, "internal", "internal:"),
    ("placement not dict", {"placement": "worker-1"}, "placement", "placement:"),
    ("placement node bad", {"placement": {"node": "Worker 1"}}, "placement.node", "placement.node:"),
    ("placement node int", {"placement": {"node": 1}}, "placement.node", "placement.node:"),
    ("placement labels not dict", {"placement": {"labels": ["a"]}}, "placement.labels", "placement.labels:"),
    ("placement label value int", {"placement": {"labels": {"zone": 1}}}, "placement.labels.zone",
     "placement.labels.zone: expected a string"),
    ("placement label key bad", {"placement": {"labels": {"": "a"}}}, "placement.labels", "placement.labels:"),
    ("update not dict", {"update": 1}, "update", "update:"),
    ("max_parallel zero", {"update": {"max_parallel": 0}}, "update.max_parallel", "update.max_parallel:"),
    ("max_parallel float", {"update": {"max_parallel": 1.5}}, "update.max_parallel", "update.max_parallel:"),
    ("min_healthy negative", {"update": {"min_healthy_s": -1}}, "update.min_healthy_s",
     "update.min_healthy_s: must be at least 0"),
    ("deadline zero", {"update": {"healthy_deadline_s": 0}}, "update.healthy_deadline_s",
     "update.healthy_deadline_s:"),
    ("deadline below min_healthy", {"update": {"min_healthy_s": 10, "healthy_deadline_s": 5}},
     "update.healthy_deadline_s", "must be greater than update.min_healthy_s"),
    ("auto_revert string", {"update": {"auto_revert": "true"}}, "update.auto_revert", "update.auto_revert:"),
    ("canary negative", {"canary": -1}, "canary", "canary:"),
    ("canary above replicas", {"replicas": 2, "canary": 3}, "canary", "canary: must be at most replicas (2)"),
    ("canary bool", {"canary": True}, "canary", "canary: expected an integer"),
    ("scaling not dict", {"scaling": "auto"}, "scaling", "scaling: expected an object, got a string"),
    ("scaling list", {"scaling": [{"mode": "auto"}]}, "scaling", "scaling: expected an object"),
    ("scaling unknown field", {"scaling": {"min_replica": 1}}, "scaling.min_replica",
     "unknown field 'scaling.min_replica'"),
    ("scaling mode bad", {"scaling": {"mode": "automatic"}}, "scaling.mode",
     "scaling.mode: expected 'auto' or 'manual'"),
    ("scaling mode case", {"scaling": {"mode": "Auto"}}, "scaling.mode", "scaling.mode:"),
    ("scaling mode null", {"scaling": {"mode": None}}, "scaling.mode", "scaling.mode:"),
    ("scaling mode list", {"scaling": {"mode": ["auto"]}}, "scaling.mode", "scaling.mode:"),
    ("scaling min negative", {"scaling": {"min_replicas": -1}}, "scaling.min_replicas",
     "scaling.min_replicas: must be between 0 and 1000"),
    ("scaling min float", {"scaling": {"min_replicas": 1.0}}, "scaling.min_replicas",
     "scaling.min_replicas: expected an integer"),
    ("scaling min bool", {"scaling": {"min_replicas": True}}, "scaling.min_replicas", "scaling.min_replicas:"),
    ("scaling min above MAX_REPLICAS", {"scaling": {"min_replicas": 1001, "max_replicas": 1001}},
     "scaling.min_replicas", "scaling.min_replicas:"),
    ("scaling max above MAX_REPLICAS", {"scaling": {"max_replicas": 1001}}, "scaling.max_replicas",
     "scaling.max_replicas: must be between 0 and 1000"),
    ("scaling max string", {"scaling": {"max_replicas": "10"}}, "scaling.max_replicas", "scaling.max_replicas:"),
    ("scaling max below min", {"scaling": {"min_replicas": 5, "max_replicas": 4}}, "scaling.max_replicas",
     "scaling.max_replicas: must be at least scaling.min_replicas (5), got 4"),
    ("scaling min above default max", {"scaling": {"min_replicas": 11}}, "scaling.max_replicas",
     "must be at least scaling.min_replicas (11), got 10"),
    ("scaling target rps zero", {"scaling": {"target_rps_per_replica": 0}}, "scaling.target_rps_per_replica",
     "scaling.target_rps_per_replica: must be greater than 0"),
    ("scaling target rps negative", {"scaling": {"target_rps_per_replica": -5.0}},
     "scaling.target_rps_per_replica", "scaling.target_rps_per_replica:"),
    ("scaling target rps string", {"scaling": {"target_rps_per_replica": "50"}}, "scaling.target_rps_per_replica",
     "scaling.target_rps_per_replica: expected a number"),
    ("scaling target rps inf", {"scaling": {"target_rps_per_replica": float("inf")}},
     "scaling.target_rps_per_replica", "expected a finite number"),
    ("scaling p95 zero", {"scaling": {"max_p95_latency_ms": 0}}, "scaling.max_p95_latency_ms",
     "scaling.max_p95_latency_ms: must be greater than 0"),
    ("scaling p95 nan", {"scaling": {"max_p95_latency_ms": float("nan")}}, "scaling.max_p95_latency_ms",
     "scaling.max_p95_latency_ms:"),
    ("scaling p95 bool", {"scaling": {"max_p95_latency_ms": True}}, "scaling.max_p95_latency_ms",
     "scaling.max_p95_latency_ms:"),
    ("scaling cpu zero", {"scaling": {"max_cpu_percent": 0}}, "scaling.max_cpu_percent",
     "scaling.max_cpu_percent: must be greater than 0"),
    ("scaling cpu above 100", {"scaling": {"max_cpu_percent": 100.5}}, "scaling.max_cpu_percent",
     "scaling.max_cpu_percent: must be at most 100"),
    ("scaling memory zero", {"scaling": {"max_memory_percent": 0.0}}, "scaling.max_memory_percent",
     "scaling.max_memory_percent: must be greater than 0"),
    ("scaling memory above 100", {"scaling": {"max_memory_percent": 101}}, "scaling.max_memory_percent",
     "scaling.max_memory_percent: must be at most 100"),
    ("scaling out threshold zero", {"scaling": {"scale_out_threshold_pct": 0, "scale_in_threshold_pct": 0}},
     "scaling.scale_out_threshold_pct", "scaling.scale_out_threshold_pct: must be greater than 0"),
    ("scaling in threshold zero", {"scaling": {"scale_in_threshold_pct": 0}}, "scaling.scale_in_threshold_pct",
     "scaling.scale_in_threshold_pct: must be greater than 0"),
    ("scaling in threshold negative", {"scaling": {"scale_in_threshold_pct": -10}},
     "scaling.scale_in_threshold_pct", "scaling.scale_in_threshold_pct:"),
    ("scaling in equals out", {"scaling": {"scale_in_threshold_pct": 80}}, "scaling.scale_in_threshold_pct",
     "scaling.scale_in_threshold_pct: must be less than scaling.scale_out_threshold_pct (80), got 80"),
    ("scaling in above out", {"scaling": {"scale_out_threshold_pct": 20}}, "scaling.scale_in_threshold_pct",
     "must be less than scaling.scale_out_threshold_pct (20), got 30"),
    ("scaling window too short", {"scaling": {"window_seconds": 4.9}}, "scaling.window_seconds",
     "scaling.window_seconds: must be at least 5"),
    ("scaling window zero", {"scaling": {"window_seconds": 0}}, "scaling.window_seconds", "scaling.window_seconds:"),
    ("scaling window string", {"scaling": {"window_seconds": "60s"}}, "scaling.window_seconds",
     "scaling.window_seconds: expected a number"),
    ("scaling window huge int", {"scaling": {"window_seconds": 10**400}}, "scaling.window_seconds",
     "scaling.window_seconds: number out of range"),
    ("scaling cooldown negative", {"scaling": {"cooldown_seconds": -1}}, "scaling.cooldown_seconds",
     "scaling.cooldown_seconds: must be at least 0"),
    ("scaling cooldown null", {"scaling": {"cooldown_seconds": None}}, "scaling.cooldown_seconds",
     "scaling.cooldown_seconds: expected a number, got null"),
    ("canary_weight zero", {"canary_weight": 0}, "canary_weight", "canary_weight: must be greater than 0"),
    ("canary_weight one", {"canary_weight": 1}, "canary_weight", "canary_weight: must be less than 1"),
    ("canary_weight above one", {"canary_weight": 1.5}, "canary_weight", "canary_weight: must be less than 1"),
    ("canary_weight negative", {"canary_weight": -0.1}, "canary_weight", "canary_weight:"),
    ("canary_weight string", {"canary_weight": "0.1"}, "canary_weight", "canary_weight: expected a number"),
    ("canary_weight bool", {"canary_weight": True}, "canary_weight", "canary_weight: expected a number"),
    ("canary_weight nan", {"canary_weight": float("nan")}, "canary_weight", "canary_weight:"),
    ("canary_weight percent", {"canary_weight": 10}, "canary_weight", "canary_weight: must be less than 1"),
]


@pytest.mark.parametrize(("raw_over", "field", "text"), [(r, f, t) for _, r, f, t in BAD],
                         ids=[c for c, _, _, _ in BAD])
def test_bad_specs(raw_over: dict[str, Any], field: str, text: str) -> None:
    raw = base(**raw_over)
    for key in [k for k, v in raw_over.items() if v is None and k in ("name", "image")]:
        del raw[key]  # "missing" cases: the key is absent, not null
    with pytest.raises(InvalidSpec) as info:
        validate_service(raw, index=4)
    err = info.value
    assert text in err.message
    assert err.details is not None and err.details["field"] == field
    assert err.code == "INVALID_SPEC" and err.status == 400
    assert err.message.startswith((field, "unknown field"))


def test_scaling_unknown_field_suggests() -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_service(base(scaling={"cooldown": 10}))
    assert info.value.details == {"field": "scaling.cooldown", "service": "web",
                                  "suggestion": "scaling.cooldown_seconds"}


# -- validate_scaling (PUT /api/v1/services/{name}/scaling) ----------------------------------------


def test_validate_scaling_matches_the_spec_field() -> None:
    assert validate_scaling({}) == SCALING
    for _, raw_over, want_over in GOOD:
        if raw_over.get("scaling") is not None:
            assert validate_scaling(raw_over["scaling"]) == want_over["scaling"]


@pytest.mark.parametrize(("raw_over", "field", "text"),
                         [(r, f, t) for _, r, f, t in BAD if "scaling" in r],
                         ids=[c for c, r, _, _ in BAD if "scaling" in r])
def test_validate_scaling_rejects_what_the_spec_rejects(raw_over: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_scaling(raw_over["scaling"], service="web")
    assert text in info.value.message
    assert info.value.details is not None
    assert info.value.details["field"] == field and info.value.details["service"] == "web"
    assert info.value.code == "INVALID_SPEC"


@pytest.mark.parametrize("raw", [None, [], "auto", 1, True])
def test_validate_scaling_needs_an_object(raw: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_scaling(raw)
    assert info.value.message.startswith("scaling: expected an object")
    assert info.value.details == {"field": "scaling", "service": None}


def test_validate_scaling_does_not_touch_its_input() -> None:
    raw = {"mode": "auto", "max_replicas": 3}
    out = validate_scaling(raw)
    assert raw == {"mode": "auto", "max_replicas": 3}
    out["min_replicas"] = 7
    assert validate_scaling(raw)["min_replicas"] == 1
    assert SCALING_DEFAULTS == SCALING


def test_error_details_name_the_service() -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_service(base(imgae="x"))
    assert info.value.message == "unknown field 'imgae'"
    assert info.value.details == {"field": "imgae", "service": "web", "suggestion": "image"}
    # Before the name is known to be valid, the position stands in for it.
    with pytest.raises(InvalidSpec) as info:
        validate_service(base(name="Bad"), index=7)
    assert info.value.details == {"field": "name", "service": "#7"}
    with pytest.raises(InvalidSpec) as info:
        validate_service(base(name="Bad"))
    assert info.value.details == {"field": "name", "service": None}


@pytest.mark.parametrize("raw", [None, [], "web", 3, ("a",)])
def test_spec_must_be_an_object(raw: object) -> None:
    with pytest.raises(InvalidSpec, match="expected an object"):
        validate_service(raw)


def test_env_values_are_never_echoed() -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_service(base(env={"PASSWORD": "hunter2${secrets."}))
    assert "hunter2" not in info.value.message
    assert "hunter2" not in repr(info.value.details)


def test_input_is_not_mutated_and_output_is_not_aliased() -> None:
    raw = base(command=["a"], env={"A": "1"}, placement={"labels": {"z": "a"}})
    before = copy.deepcopy(raw)
    out = validate_service(raw)
    assert raw == before
    out["command"].append("b")
    out["env"]["B"] = "2"
    out["placement"]["labels"]["y"] = "b"
    assert raw == before


def test_secret_refs() -> None:
    spec = validate_service(base(env={"A": "${secrets.ONE}:${secrets.two.x}", "B": "${secrets.ONE}", "C": "x"}))
    assert secret_refs(spec) == {"ONE", "two.x"}


# -- parse_memory ---------------------------------------------------------------------------------


def test_parse_memory_is_the_config_parser() -> None:
    # One meaning of "512Mi" for specs and agent capacities (the config's own tests cover the parser).
    assert parse_memory is config.parse_memory
    assert parse_memory("512Mi") == 512 * 2**20


@pytest.mark.parametrize(("value", "want"), [
    ("512Mi", 512 * 2**20), ("1Gi", 2**30), ("1.5Gi", 3 * 2**29), ("64Mi", 64 * 2**20), ("1G", 10**9),
    ("10M", 10**7), ("1Ti", 2**40), (" 512Mi ", 512 * 2**20), ("104857600", 104857600), (104857600, 104857600),
])
def test_spec_memory_sizes(value: object, want: int) -> None:
    assert validate_service(base(resources={"memory": value}))["resources"]["memory"] == want


@pytest.mark.parametrize("value", [
    "", "Mi", "512 Mi", "512MB", "512mi", "1k", "-1Mi", "1e9", "0x10", "1,5Gi", ".5Gi", "1.Gi", "1.5", "0",
    0, -1, True, 1.5, None, [], {}, pytest.param("9" * 5000, id="5000 digits"), "2000Ti", 2**51,
    pytest.param(10**5000, id="huge int"), pytest.param(-(10**5000), id="huge negative int"),
])
def test_spec_memory_rejects(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_service(base(resources={"memory": value}))
    assert info.value.message.startswith("resources.memory: ")
    assert len(info.value.message) < 200


# -- deploy bodies --------------------------------------------------------------------------------


def test_deploy_body_splits_valid_and_errors() -> None:
    body = {"services": [
        {"name": "a", "image": "x"},
        {"name": "b", "image": "x", "replicas": -1},
        {"image": "x"},
        "not a spec",
        {"name": "a", "image": "y"},
        {"name": "c", "image": "x", "project": "p"},
        {"name": "Bad", "image": "x"},
    ]}
    valid, errors = validate_deploy_body(body)
    assert [s["name"] for s in valid] == ["a", "c"]
    assert valid[1]["project"] == "p"
    assert [e["service"] for e in errors] == ["b", "#2", "#3", "a", "#6"]
    assert errors[0]["error"].startswith("replicas:")
    assert errors[1]["error"] == "name: required"
    assert errors[3]["error"] == "name: duplicate service 'a' in this deploy"
    assert all(set(e) == {"service", "error"} for e in errors)


def test_deploy_body_all_invalid_is_not_an_exception() -> None:
    valid, errors = validate_deploy_body({"services": [{"name": "a"}]})
    assert valid == [] and errors == [{"service": "a", "error": "image: required"}]


@pytest.mark.parametrize(("body", "field"), [
    (None, "body"), ([], "body"), ("x", "body"),
    ({}, "services"), ({"services": []}, "services"), ({"services": {"name": "a"}}, "services"),
    ({"services": None}, "services"),
    ({"services": [{"name": "a", "image": "x"}], "dry_run": True}, "dry_run"),
])
def test_deploy_body_shape(body: object, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        validate_deploy_body(body)
    assert info.value.details is not None and info.value.details["field"] == field


# -- digest ---------------------------------------------------------------------------------------


def test_digest_tracks_rollout_fields_only() -> None:
    old = validate_service(base(port=80))
    assert len(spec_digest(old)) == 16 and int(spec_digest(old), 16) >= 0
    for change in [{"image": "nginx:2"}, {"command": ["x"]}, {"env": {"A": "1"}}, {"port": 81},
                   {"resources": {"memory": "1Gi"}}, {"resources": {"cpu": 1}}, {"health": "/h"}]:
        new = validate_service(base(**{"port": 80, **change}))
        assert rollout_fields_changed(old, new), change
    for change in [{"replicas": 5}, {"domain": "a.b"}, {"internal": True}, {"project": "p"},
                   {"placement": {"node": "n1"}}, {"update": {"max_parallel": 4}}, {"canary": 1}]:
        new = validate_service(base(**{"port": 80, **change}))
        assert not rollout_fields_changed(old, new), change


def test_traffic_policy_is_not_a_rollout_field() -> None:
    # Changing the scaling policy or the canary's traffic share must never restart a container.
    assert ROLLOUT_FIELDS == ("image", "command", "env", "resources", "port", "health")
    assert "scaling" not in ROLLOUT_FIELDS and "canary_weight" not in ROLLOUT_FIELDS
    old = validate_service(base(port=80))
    for change in [{"scaling": {}}, {"scaling": {"mode": "auto", "min_replicas": 3, "max_replicas": 9}},
                   {"scaling": {"window_seconds": 5, "cooldown_seconds": 0}}, {"canary_weight": 0.25},
                   {"replicas": 4, "canary": 1, "canary_weight": 0.9, "scaling": {"mode": "auto"}}]:
        new = validate_service(base(**{"port": 80, **change}))
        assert spec_digest(new) == spec_digest(old), change
        assert not rollout_fields_changed(old, new), change
    # ... and the pinned digest of the default spec is unchanged by the two new (null) fields.
    assert spec_digest(validate_service(base(scaling={"mode": "auto"}, canary_weight=0.5))) == "f11b5fa9e8197eca"


def test_digest_is_pinned() -> None:
    # The digest is stored in version history and compared across masters and releases: pin it.
    assert spec_digest(validate_service(base())) == spec_digest(copy.deepcopy(expect()))
    assert spec_digest(expect()) == "f11b5fa9e8197eca"


# -- properties -----------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
_env_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_label_key = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,10}", fullmatch=True)
_size = st.one_of(
    st.integers(min_value=6 * 2**20, max_value=2**40),
    st.builds(lambda n, u: f"{n}{u}", st.integers(min_value=6, max_value=4096), st.sampled_from(["Mi", "Gi"])),
)


@st.composite
def _scaling_tables(draw: st.DrawFn) -> dict[str, Any]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "mode": st.sampled_from(["auto", "manual"]),
        "target_rps_per_replica": st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6),
        "max_p95_latency_ms": st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6),
        "max_cpu_percent": st.floats(min_value=0.01, max_value=100) | st.integers(1, 100),
        "max_memory_percent": st.floats(min_value=0.01, max_value=100) | st.integers(1, 100),
        "window_seconds": st.floats(min_value=5, max_value=86400) | st.integers(5, 86400),
        "cooldown_seconds": st.floats(min_value=0, max_value=86400) | st.integers(0, 86400),
    }
    raw: dict[str, Any] = {key: draw(strategy) for key, strategy in optional.items() if draw(st.booleans())}
    # Bounds and thresholds are drawn together: each pair has an ordering rule, and either side may be
    # left to its default (min 1, max 10, in 30, out 80).
    if draw(st.booleans()):
        low = raw["min_replicas"] = draw(st.integers(0, 20) | st.integers(0, MAX_REPLICAS))
        if low > 10 or draw(st.booleans()):
            raw["max_replicas"] = draw(st.integers(low, MAX_REPLICAS))
    elif draw(st.booleans()):
        raw["max_replicas"] = draw(st.integers(1, MAX_REPLICAS))
    if draw(st.booleans()):
        out_pct = raw["scale_out_threshold_pct"] = draw(st.floats(min_value=0.02, max_value=500))
        if out_pct <= 30 or draw(st.booleans()):
            raw["scale_in_threshold_pct"] = draw(st.floats(min_value=0.01, max_value=out_pct, exclude_max=True))
    elif draw(st.booleans()):
        raw["scale_in_threshold_pct"] = draw(st.floats(min_value=0.01, max_value=80, exclude_max=True))
    return raw


_scaling_raw = _scaling_tables()


@st.composite
def valid_raw_specs(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": draw(_label), "image": draw(st.from_regex(r"[a-z0-9./:@-]{1,30}",
                                                                               fullmatch=True))}
    replicas = draw(st.integers(0, MAX_REPLICAS))
    if draw(st.booleans()):
        raw["replicas"] = replicas
    else:
        replicas = 1
    optional: dict[str, st.SearchStrategy[Any]] = {
        "project": _label,
        "command": st.lists(_text, min_size=1, max_size=3),
        "domain": st.lists(_label, min_size=1, max_size=3).map(".".join),
        "env": st.dictionaries(_env_key, _text, max_size=4),
        "resources": st.fixed_dictionaries({}, optional={
            "memory": _size,
            "cpu": st.floats(min_value=0.01, max_value=256) | st.integers(1, 256)}),
        "internal": st.booleans(),
        "read_only": st.booleans(),
        "user": st.none() | st.from_regex(r"[a-z0-9_]{1,8}(:[0-9]{1,5})?", fullmatch=True),
        "placement": st.fixed_dictionaries({}, optional={
            "node": st.none() | _label,
            "labels": st.dictionaries(_label_key, _text.filter(str.isprintable), max_size=3)}),
        "update": st.fixed_dictionaries({}, optional={
            "max_parallel": st.integers(1, MAX_REPLICAS),
            "min_healthy_s": st.floats(0, 1.0),
            "healthy_deadline_s": st.floats(2.5, 86400) | st.integers(3, 86400),
            "auto_revert": st.booleans()}),
        "canary": st.integers(0, replicas),
        "scaling": st.none() | _scaling_raw,
        "canary_weight": st.none() | st.floats(min_value=1e-6, max_value=0.999),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            raw[key] = draw(strategy)
    if draw(st.booleans()):
        raw["port"] = draw(st.integers(1, 65535))
        if draw(st.booleans()):
            raw["health"] = "/" + draw(st.from_regex(r"[a-z0-9/?=&]{0,20}", fullmatch=True))
    return raw


@given(valid_raw_specs())
@settings(max_examples=300)
def test_valid_specs_normalize_idempotently(raw: dict[str, Any]) -> None:
    once = validate_service(raw)
    assert validate_service(once) == once
    assert set(once) == set(DEFAULTS)
    assert spec_digest(once) == spec_digest(validate_service(once))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
_field_names = st.sampled_from(sorted(spec_mod._TOP_FIELDS) + ["imgae", "x"])
_nested_keys = st.sampled_from(["memory", "cpu", "node", "labels", "max_parallel", "min_healthy_s",
                                "healthy_deadline_s", "auto_revert", "gpu", *sorted(SCALING_DEFAULTS)])
_values = st.one_of(
    _json,
    st.dictionaries(_nested_keys, _json, max_size=4),
    st.dictionaries(_env_key, _json, max_size=3),
    st.integers(min_value=-(10**400), max_value=10**400),
)


@given(st.one_of(_json, st.dictionaries(_field_names, _values, max_size=8),
                 st.builds(lambda d, n: {**d, "name": n, "image": "x"},
                           st.dictionaries(_field_names, _values, max_size=6), _label)))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_random_input_only_ever_raises_invalid_spec(raw: object) -> None:
    try:
        out = validate_service(raw, index=0)
    except InvalidSpec as exc:
        assert exc.message and isinstance(exc.details, dict) and "field" in exc.details
        return
    assert validate_service(out) == out


@given(st.lists(st.one_of(_json, valid_raw_specs()), max_size=5))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_random_deploy_bodies(services: list[Any]) -> None:
    try:
        valid, errors = validate_deploy_body({"services": services})
    except InvalidSpec:
        assert not services
        return
    assert len(valid) + len(errors) == len(services)
    assert len({s["name"] for s in valid}) == len(valid)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(valid_raw_specs(), st.randoms(use_true_random=False))
@settings(max_examples=200)
def test_digest_stable_under_key_order(raw: dict[str, Any], rng: random.Random) -> None:
    spec = validate_service(raw)
    shuffled = _shuffled(spec, rng)
    assert spec_digest(shuffled) == spec_digest(spec)
    assert validate_service(_shuffled(raw, rng)) == spec
    assert not rollout_fields_changed(spec, shuffled)


@given(_scaling_raw)
@settings(max_examples=300)
def test_valid_scaling_normalizes_idempotently(raw: dict[str, Any]) -> None:
    once = validate_scaling(raw)
    assert list(once) == list(SCALING)
    assert validate_scaling(once) == once
    assert validate_service(base(scaling=raw))["scaling"] == once
    assert once["min_replicas"] <= once["max_replicas"] <= MAX_REPLICAS
    assert 0 < once["scale_in_threshold_pct"] < once["scale_out_threshold_pct"]
    assert all(isinstance(once[k], float) for k in SCALING if k not in ("mode", "min_replicas", "max_replicas"))


@given(st.dictionaries(st.sampled_from(sorted(SCALING_DEFAULTS) + ["x"]), _json, max_size=6))
@settings(max_examples=300)
def test_random_scaling_only_ever_raises_invalid_spec(raw: dict[str, Any]) -> None:
    try:
        out = validate_scaling(raw)
    except InvalidSpec as exc:
        assert exc.details is not None and str(exc.details["field"]).startswith("scaling")
        assert exc.message.startswith(("scaling", "unknown field 'scaling."))
        return
    assert validate_scaling(out) == out


def test_deploy_body_is_bounded_in_services() -> None:
    with pytest.raises(InvalidSpec, match="at most 1000 services"):
        validate_deploy_body({"services": [{"name": f"s{i}", "image": "x"} for i in range(1001)]})
