"""The generated references (docs/api.md, docs/spec.md, docs/spec.schema.json) match the code.

`python -m orca.reference --check` fails when a generated file is stale; the spec schema's notes cover
every field the validator accepts, its defaults are the validator's, and schema and validator agree on
the examples and on values just past each bound.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from orca import reference, spec
from orca.errors import InvalidSpec
from orca.spec_schema import NOTES, field_paths, schema_errors, spec_schema

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_up_to_date() -> None:
    assert reference.main(["--check", "--root", str(ROOT)]) == 0, "run: python -m orca.reference --write"


def test_the_published_schema_is_the_code_schema_and_valid() -> None:
    published = json.loads((ROOT / "docs" / "spec.schema.json").read_text())
    assert published == spec_schema()
    Draft202012Validator.check_schema(published)


def test_every_field_has_a_note_and_no_note_is_stale() -> None:
    assert set(NOTES) == set(field_paths())


def _schema_field(schema: dict[str, Any], path: str) -> dict[str, Any]:
    defs = schema["$defs"]
    if path.startswith("scaling."):
        return defs["ScalingPolicy"]["properties"][path.split(".", 1)[1]]
    node = defs["ServiceSpec"]["properties"]
    parts = path.split(".")
    field = node[parts[0]]
    for part in parts[1:]:
        table = field.get("properties")
        if table is None:
            for option in field["anyOf"]:
                for deeper in option.get("anyOf", (option,)):
                    table = deeper.get("properties", table)
        field = table[part]
    return field


def test_every_field_of_the_schema_is_documented_with_the_validators_default() -> None:
    schema = spec_schema()
    base = spec.validate_service({"name": "x", "image": "x"})
    for path in field_paths():
        field = _schema_field(schema, path)
        assert field["description"] and field["examples"], path
        if "default" in field:
            top, _, sub = path.partition(".")
            if top == "scaling" and sub:
                expected = spec.SCALING_DEFAULTS[sub]
            elif top == "health" and sub:
                expected = spec.validate_service({"name": "x", "image": "x", "port": 1,
                                                  "health": {"tcp": 1}})["health"][sub]
            else:
                expected = base[top][sub] if sub else base[top]
            assert field["default"] == expected, path
        else:
            assert "x-default" in field or path in ("name", "image"), path


def _with(path: str, value: Any) -> dict[str, Any]:
    """A minimal spec in which `path = value` makes sense (a health check needs a port, ...)."""
    doc: dict[str, Any] = {"name": "web", "image": "orca-test/busybox", "port": 8080, "replicas": 2}
    top, _, sub = path.partition(".")
    if top == "health" and sub:
        doc["health"] = {"http": "/"} if sub not in ("http", "tcp", "exec") else {}
        if sub == "tcp":
            doc["port"] = value
        doc["health"][sub] = value
        return doc
    if top in ("kind", "schedule", "max_attempts", "restart") and (value == "job" or top == "schedule"):
        doc["kind"] = "job"
    if top == "restart":
        doc["kind"] = "job"
    if top == "depends_on":
        return {"services": [doc, *({"name": d, "image": "x"} for d in value)]}
    if sub:
        doc.setdefault(top, {})[sub] = value
    else:
        doc[top] = value
    return doc


@pytest.mark.parametrize("path", sorted(NOTES))
def test_each_example_is_accepted_by_the_schema_and_the_validator(path: str) -> None:
    doc = _with(path, copy.deepcopy(NOTES[path][1]))
    assert schema_errors(doc) == [], (path, doc)
    valid, errors = spec.validate_deploy_body(doc if "services" in doc else {"services": [doc]})
    assert errors == [] and valid, (path, errors)


def _example_files() -> list[Path]:
    return sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".json", ".toml"))


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_every_example_file_passes_the_schema_and_the_validator(path: Path) -> None:
    doc = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
    assert schema_errors(doc) == []
    _, errors = spec.validate_deploy_body(doc if "services" in doc else {"services": [doc]})
    assert errors == []


# Values just past a bound: the schema must refuse each (so `orca validate` catches it before a deploy),
# and so must the validator (the schema is never stricter than the server on these).
OUT_OF_BOUNDS = [
    ("replicas", spec.MAX_REPLICAS + 1), ("replicas", -1), ("port", 0), ("port", 65536), ("name", "Web"),
    ("name", "a" * 64), ("image", ""), ("image", "a b"), ("command", []), ("command", "sh -c x"),
    ("resources.cpu", 0.001), ("resources.cpu", 257), ("resources.memory", 1024), ("canary", -1),
    ("canary_weight", 1), ("canary_weight", 0), ("user", "a b"), ("kind", "daemon"), ("restart", "sometimes"),
    ("max_attempts", 1001), ("registry_auth", "user:pass"), ("depends_on", ["Db"]), ("update.max_parallel", 0),
    ("health.interval_s", 0.5), ("health.retries", 0), ("health.timeout_s", 61), ("scaling.mode", "turbo"),
    ("scaling.window_seconds", 1), ("placement.node", "Worker"), ("env", {"1A": "x"}), ("env", {"A": 1}),
    ("volumes", [{"name": "Data", "path": "/d"}]), ("internal", "yes"), ("domain", "-x.example"),
]


@pytest.mark.parametrize(("path", "value"), OUT_OF_BOUNDS, ids=lambda v: str(v)[:20])
def test_out_of_bounds_values_are_refused_by_both(path: str, value: Any) -> None:
    doc = _with(path, value)
    assert schema_errors(doc), (path, value)
    with pytest.raises(InvalidSpec):
        if "services" in doc:
            _, errors = spec.validate_deploy_body(doc)
            if errors:
                raise InvalidSpec(errors[0]["error"], {})
        else:
            spec.validate_service(doc)


def test_schema_errors_name_the_field_and_never_echo_an_env_value() -> None:
    errors = schema_errors({"services": [{"name": "web", "image": "x", "env": {"TOKEN": 12345678},
                                          "replicas": 5000, "bogus": 1}]})
    text = "\n".join(errors)
    assert "services[0].replicas: must be at most 1000" in text
    assert "services[0].env.TOKEN: expected string" in text
    assert "'bogus' was unexpected" in text
    assert "12345678" not in text
