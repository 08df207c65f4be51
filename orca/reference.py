"""The generated references in `docs/`: the API, the service spec and the configuration keys.

    python -m orca.reference --write     rewrite docs/api.md, docs/spec.md, docs/spec.schema.json and the
                                         key tables of docs/configuration.md
    python -m orca.reference --check     exit 1 naming each stale file (tests/unit/test_reference.py runs it)

They are generated so they cannot drift: `docs/api.md` from the document every master serves
(`orca.master.openapi.build_document`, over a router holding exactly the routes of the policy table,
which a unit test keeps equal to the served routes), the spec reference and its JSON Schema from
`orca.spec_schema`, the configuration keys from `config.example.toml` (checked against the loader by
`tests/unit/test_configuration_doc.py`). A file may start with hand-written text: everything above the
line `MARKER` is kept as it is (the blocking-queries section of docs/api.md lives there, for instance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "render_api", "render_spec", "render_schema", "outputs", "main"]

MARKER = "<!-- generated below by `python -m orca.reference --write`: edit orca/, not this part -->"
Schema = dict[str, Any]


def _document() -> dict[str, Any]:
    from aiohttp import web

    from orca.master.http import POLICY
    from orca.master.openapi import build_document

    async def handler(request: web.Request) -> web.Response:  # pragma: no cover - never called
        raise web.HTTPNotImplemented()

    app = web.Application()
    for method, path in sorted(POLICY):
        app.router.add_route(method, path, handler)
    return build_document(app)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _bounds(schema: Schema) -> str:
    """A schema's constraints in words, for a table cell."""
    if "$ref" in schema:
        return f"[{schema['$ref'].rsplit('/', 1)[-1]}](#{schema['$ref'].rsplit('/', 1)[-1].lower()})"
    parts = []
    options = schema.get("anyOf")
    if options:
        return " or ".join(_bounds(o) for o in options)
    kind = schema.get("type")
    if kind:
        parts.append(kind if isinstance(kind, str) else "/".join(kind))
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{word} {schema[key]:g}" if isinstance(schema[key], float) else f"{word} {schema[key]}")
    for key, word in (("minLength", "length >="), ("maxLength", "length <="), ("minItems", "items >="),
                      ("maxItems", "items <="), ("maxProperties", "entries <=")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "pattern" in schema:
        parts.append(f"`{schema['pattern']}`")
    if "propertyNames" in schema and "pattern" in schema["propertyNames"]:
        parts.append(f"keys `{schema['propertyNames']['pattern']}`")
    if isinstance(schema.get("additionalProperties"), dict):
        parts.append("values: " + _bounds(schema["additionalProperties"]))
    if isinstance(schema.get("items"), dict):
        parts.append("items: " + _bounds(schema["items"]))
    return ", ".join(parts)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


# ------------------------------------------------------------------------------------------------ API


def render_api() -> str:
    doc = _document()
    ops: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ops.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    lines = ["## Every route", "",
             f"orca master API {doc['info']['version']}: {doc['info']['description']}", "",
             "Generated from the OpenAPI 3.1 document every master serves at `GET /api/v1/openapi.json` "
             "(no token needed). Roles: `viewer` < `deployer` < `admin`; `agent` is for agents only; "
             "`public` needs no token. Writes accept an `Idempotency-Key` header; a follower answers a "
             "write with 307 to the leader. Every error is the [Error](#error) envelope.", ""]
    lines += ["| route | role | summary |", "|---|---|---|"]
    for tag in sorted(ops):
        for method, path, op in sorted(ops[tag], key=lambda t: (t[1], t[0])):
            lines.append(f"| [`{method} {path}`](#{_anchor(method, path)}) | {op['x-orca-role']} | "
                         f"{_cell(op['summary'])} |")
    lines.append("")
    for tag in sorted(ops):
        lines += [f"### {tag}", ""]
        for method, path, op in sorted(ops[tag], key=lambda t: (t[1], t[0])):
            lines += _api_operation(method, path, op)
    lines += ["## Bodies", "",
              "The JSON Schemas (2020-12) of the request bodies and answers named above, with the bounds the "
              "server enforces. Cross-field rules are in each description.", ""]
    for name, schema in sorted(doc["components"]["schemas"].items()):
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [schema["description"], ""]
        lines += ["```json", json.dumps(schema, indent=1, ensure_ascii=False), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _anchor(method: str, path: str) -> str:
    text = f"{method} {path}".lower()
    return "".join(c for c in text.replace(" ", "-") if c.isalnum() or c in "-_")


def _api_operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"#### {method} {path}", "", op["summary"], "", f"- role: `{op['x-orca-role']}`"]
    if op.get("description"):
        lines.append(f"- {op['description']}")
    params = op.get("parameters", [])
    for p in params:
        note = f": {p['description']}" if p.get("description") else ""
        lines.append(f"- {p['in']} `{p['name']}` ({_bounds(p['schema'])}){note}")
    body = op.get("requestBody")
    if body:
        (ctype, content), = body["content"].items()
        lines.append(f"- body ({ctype}): {_bounds(content['schema'])}")
    answers = []
    for status, response in op["responses"].items():
        if status == "default":
            continue
        answers.append(f"{status} {response['description']}")
    lines.append("- answers: " + "; ".join(answers))
    return lines + [""]


# ------------------------------------------------------------------------------------------------ spec


def render_schema() -> str:
    from orca.spec_schema import spec_schema

    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"


def _default(schema: Schema) -> str:
    if "x-default" in schema:
        return schema["x-default"]
    if "default" not in schema:
        return "required"
    value = schema["default"]
    return "none" if value is None else f"`{_compact(value)}`"


def _rows(properties: dict[str, Schema], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for key, schema in properties.items():
        path = prefix + key
        shown = dict(schema)
        inner = shown.pop("properties", None)
        table = None
        for option in shown.get("anyOf", ()):
            for deeper in option.get("anyOf", (option,)):
                if "properties" in deeper:
                    table = deeper
        default = "required" if key in required else _default(schema)
        example = _compact(schema["examples"][0])
        rows.append(f"| `{path}` | {_cell(_bounds(_without_doc(shown)))} | {_cell(default)} | "
                    f"{_cell(schema['description'])} | `{_cell(example)}` |")
        if inner is not None:
            rows += _rows(inner, path + ".", set())
        elif table is not None and not path.startswith("volumes"):
            rows += _rows(table["properties"], path + ".", set())
    return rows


def _without_doc(schema: Schema) -> Schema:
    out = {k: v for k, v in schema.items() if k not in ("description", "examples", "default", "x-default")}
    if "anyOf" in out:
        out["anyOf"] = [_table_word(o) for o in out["anyOf"]]
    return out


def _table_word(option: Schema) -> Schema:
    if "properties" in option or "$ref" in option:
        return {"type": "table"}
    if "anyOf" in option:
        return {"anyOf": [_table_word(o) for o in option["anyOf"]]}
    return {k: v for k, v in option.items() if k != "description"}


def render_spec() -> str:
    from orca.spec_schema import spec_schema

    schema = spec_schema()
    service = schema["$defs"]["ServiceSpec"]
    lines = [
        "# Service spec reference", "",
        "What `orca deploy -f FILE` reads: one service spec, or a project of several (`{\"services\": [...]}` in "
        "JSON, `[[services]]` tables in TOML, or a directory of `services/*/service.toml`). Unknown fields are "
        "refused, naming the field. The same rules hold for `POST /api/v1/deploy` (400 `INVALID_SPEC`).", "",
        "The JSON Schema of this file is [spec.schema.json](spec.schema.json) (draft 2020-12; point your "
        "editor at it). `orca validate -f FILE` checks a file against it and then against the rules a schema "
        "cannot say, without a cluster:", "",
        "- `canary` is at most `replicas`; not with named volumes; a job has no canary and no `scaling`;",
        "- a health check other than `exec` needs `port`; `health.tcp` must be `port`;",
        "- `update.healthy_deadline_s` must exceed `update.min_healthy_s`;",
        "- `scaling.max_replicas` >= `scaling.min_replicas`, `scale_in_threshold_pct` < `scale_out_threshold_pct`;",
        "- `schedule` only for `kind = \"job\"`, which may not have `restart = \"always\"`;",
        "- `depends_on` names other services of the same project; `${secrets.KEY}` references are well formed.",
        "",
        "Fields that make a new version (a rolling update) when changed: " +
        ", ".join(f"`{f}`" for f in _rollout_fields()) + ". The others (replicas, placement, domain, "
        "update, canary, scaling, canary_weight, labels) take effect without restarting a container.", "",
        "| field | type and bounds | default | meaning | example |", "|---|---|---|---|---|",
    ]
    lines += _rows(service["properties"], "", set(service.get("required", ())))
    scaling = schema["$defs"]["ScalingPolicy"]
    lines += _rows(scaling["properties"], "scaling.", set())
    lines += ["", "Examples: the files in [examples/](../examples/), each deployed by the docker tier "
              "(`tests/docker/test_examples_e2e.py`).", ""]
    return "\n".join(lines)


def _rollout_fields() -> list[str]:
    from orca import spec

    return [*spec.ROLLOUT_FIELDS, *spec.OPTIONAL_ROLLOUT_FIELDS]


# ------------------------------------------------------------------------------------------------ config

_EXAMPLE = "config.example.toml"
_AGENT_BEGIN, _AGENT_END = "# AGENT-EXAMPLE-BEGIN", "# AGENT-EXAMPLE-END"


def example_keys(text: str) -> list[tuple[str, str, str, str]]:
    """The keys `config.example.toml` documents, in file order: (dotted key, example value, default or
    "required", what it does). The agent block (commented out between the AGENT-EXAMPLE markers) counts
    as well; a table header's comment is listed under the table's own name."""
    rows: list[tuple[str, str, str, str]] = []
    table = ""
    in_agent = False
    depth = 0  # inside a multi-line array (raft.peers): its lines are not keys
    for raw in text.splitlines():
        if raw.startswith(_AGENT_BEGIN):
            in_agent, table = True, ""
            continue
        if raw.startswith(_AGENT_END):
            break
        line = raw[2:] if in_agent and raw.startswith("# ") else raw
        if in_agent and not raw.startswith("# "):
            continue
        code, _, comment = line.partition(" #")
        code, comment = code.strip(), comment.strip().lstrip("#").strip()
        if depth:
            depth += code.count("[") - code.count("]")
            continue
        if not code or code.startswith("#"):
            continue
        if code.startswith("[") and code.endswith("]"):
            table = code.strip("[]").strip()
            if comment:
                rows.append((table, "", *_default_and_text(comment)))
            continue
        key, _, value = code.partition("=")
        key, value = key.strip(), value.strip()
        if value.startswith("[") and value.count("[") > value.count("]"):
            depth = value.count("[") - value.count("]")
            value = "[...]"
        rows.append((f"{table}.{key}" if table else key, value, *_default_and_text(comment)))
    return rows


def _default_and_text(comment: str) -> tuple[str, str]:
    head, sep, rest = comment.partition("; ")
    if head.startswith("default") or head.startswith("required") or head.startswith("optional"):
        return head, rest
    return "", comment


def render_configuration(root: Path) -> str:
    rows = example_keys((root / _EXAMPLE).read_text(encoding="utf-8"))
    lines = ["## Every key", "",
             f"Generated from [`{_EXAMPLE}`](../{_EXAMPLE}), which is itself a valid master config (the agent "
             "part is commented out at its end); `tests/unit/test_configuration_doc.py` checks that it names "
             "exactly the keys the loader (`orca/config.py`) accepts.", ""]
    section = None
    for key, value, default, text in rows:
        top = key.split(".", 1)[0]
        if top != section:
            section = top
            kind = "an agent's config" if top == "agent" else "a master's config"
            lines += ([""] if len(lines) > 4 else []) + [f"### [{top}] ({kind})", "",
                                                         "| key | example | default | what it does |",
                                                         "|---|---|---|---|"]
        shown = f"`[{key}]`" if value == "" else f"`{key}`"
        example = "" if value == "" else f"`{_cell(value)}`"
        lines.append(f"| {shown} | {example} | {_cell(default)} | {_cell(text)} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ files


def outputs(root: Path) -> dict[str, str]:
    """File (relative to the repository root) -> its generated content."""
    return {"docs/api.md": render_api(), "docs/spec.md": render_spec(), "docs/spec.schema.json": render_schema(),
            "docs/configuration.md": render_configuration(root)}


def _merged(existing: str | None, generated: str, markdown: bool) -> str:
    """Keep the hand-written part above MARKER (markdown files only)."""
    if not markdown:
        return generated
    head = existing.split(MARKER, 1)[0] if existing and MARKER in existing else ""
    return head + MARKER + "\n\n" + generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orca.reference", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the generated files")
    group.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the repository root (default: where this package lives)")
    args = parser.parse_args(argv)
    stale = []
    for rel, generated in outputs(args.root).items():
        path = args.root / rel
        existing = path.read_text(encoding="utf-8") if path.exists() else None
        wanted = _merged(existing, generated, rel.endswith(".md"))
        if existing == wanted:
            continue
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted, encoding="utf-8")
            print(f"wrote {rel}")
        else:
            stale.append(rel)
    if stale:
        print("stale: " + ", ".join(stale) + " (run: python -m orca.reference --write)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
