"""The service spec as a published JSON Schema (`docs/spec.schema.json`), used by `orca validate`.

The schema is not written a second time: it is the `ServiceSpec` body schema the API documents
(`orca.master.openapi_schemas`, whose bounds come from `orca.spec`'s constants), wrapped so it also
accepts a whole project file (`{"services": [...]}`, TOML's `[[services]]`), and annotated for readers:
every field gets its default (taken from what `orca.spec.validate_service` fills in, not typed again),
a description and an example (`NOTES` below). `tests/unit/test_spec_schema.py` checks that every field
the validator knows has a note, that the defaults are the validator's, that the examples are accepted
by both, and that the file in `docs/` is this schema.

JSON Schema cannot say the cross-field rules (`canary <= replicas`, a health check needs `port`, ...):
`orca validate` runs the schema first (every structural error at once, with its path) and then
`orca.spec.validate_deploy_body`, the very code the API runs.
"""

from __future__ import annotations

import copy
from typing import Any

from orca import spec

__all__ = ["NOTES", "SCHEMA_ID", "check_services", "field_paths", "spec_schema", "schema_errors"]

SCHEMA_ID = "https://github.com/orca/orca/blob/main/docs/spec.schema.json"

Schema = dict[str, Any]

# Per field: (what it means, an example value). Every field the validator accepts has one (a test checks).
NOTES: dict[str, tuple[str, Any]] = {
    "name": ("The service's name, unique in the cluster; also its containers' name part.", "web"),
    "project": ("The project the service belongs to: a unit for `orca stop --project`, secret grants, "
                "scoped tokens and `depends_on`.", "shop"),
    "image": ("The container image (pulled by the agent when missing; `registry_auth` for a private one).",
              "orca-test/busybox"),
    "command": ("The container's command as a list (never a shell string); the image's default when absent.",
                ["httpd", "-f", "-p", "8080"]),
    "replicas": ("How many replicas run.", 2),
    "port": ("The container port the service listens on: published on a host port from the agent's range, "
             "health-checked, and routed to by the ingress.", 8080),
    "domain": ("The host name the agents' ingress proxy routes to this service (by the Host header).",
               "web.local"),
    "health": ("The health check: an HTTP path (`\"/healthz\"`) or a table with exactly one of `http`, `tcp`, "
               "`exec`. A replica is ready once a check passed; that gates rollouts, drains and the ingress.",
               {"http": "/healthz", "interval_s": 2}),
    "health.http": ("HTTP GET of this path on the published port; 2xx/3xx passes.", "/healthz"),
    "health.tcp": ("A TCP connect to this port, which must be the service's `port`.", 6379),
    "health.exec": ("A command run in the container; exit status 0 passes.", ["redis-cli", "ping"]),
    "health.interval_s": ("Seconds between two checks.", 2),
    "health.timeout_s": ("Seconds one check may take.", 1),
    "health.retries": ("Failures in a row that restart the container.", 3),
    "health.start_period_s": ("Failures before the first pass within this many seconds do not count.", 5),
    "env": ("Environment variables. A value may hold `${secrets.KEY}`, resolved by the agent at container "
            "start (the spec keeps the reference, never the value).", {"DB_PASSWORD": "${secrets.db_password}"}),
    "resources": ("What one replica reserves and is limited to.", {"memory": "64Mi", "cpu": 0.1}),
    "resources.memory": ("Memory limit and reservation: bytes, or a size with Ki, Mi, Gi, Ti (binary) or "
                         "K, M, G, T (decimal).", "128Mi"),
    "resources.cpu": ("CPU cores (limit and reservation); at least a hundredth of a core, never unlimited.", 0.5),
    "internal": ("true: never routed by the ingress: reachable through the service mesh (by name) and its "
                 "published ports only.", True),
    "protocol": ("How the service mesh speaks to `port`: \"http\" (L7, the default) or \"tcp\" (L4 balancing with "
                 "TCP health checks; needs `port`, no `domain`). Other services reach it as NAME (same project) or "
                 "NAME.PROJECT, see docs/networking.md.", "tcp"),
    "allow_from": ("Other projects whose services may reach this one through the mesh (\"*\": every project); "
                   "its own project always may.", ["shop"]),
    "placement": ("Where replicas may run.", {"labels": {"zone": "a"}}),
    "placement.node": ("Only on this node.", "worker-1"),
    "placement.labels": ("Only on nodes with all these labels (`[agent] labels`).", {"zone": "a"}),
    "update": ("How a changed spec is rolled out.", {"max_parallel": 2, "auto_revert": True}),
    "update.max_parallel": ("Replicas replaced at a time.", 2),
    "update.min_healthy_s": ("Seconds a new replica must be running and healthy before it counts.", 2),
    "update.healthy_deadline_s": ("Seconds a new version has to become healthy before the rollout halts; "
                                  "must exceed `min_healthy_s`.", 60),
    "update.auto_revert": ("A halted rollout rolls back to the previous version by itself.", True),
    "canary": ("Replicas of a new version run beside the old set until `orca promote` or `orca rollback`; "
               "at most `replicas`; not with named volumes, not for a job.", 1),
    "scaling": ("The autoscaling policy (leader-side, from the agents' proxy and container metrics); "
                "`orca scaling set` changes it without a deploy. Not for a job.",
                {"mode": "auto", "min_replicas": 2, "max_replicas": 6, "target_rps_per_replica": 50}),
    "scaling.mode": ("`auto` lets the leader scale within min/max; `manual` keeps `replicas`.", "auto"),
    "scaling.min_replicas": ("The fewest replicas autoscaling keeps.", 1),
    "scaling.max_replicas": ("The most replicas autoscaling starts; at least `min_replicas`.", 5),
    "scaling.target_rps_per_replica": ("Requests per second one replica should take.", 50),
    "scaling.max_p95_latency_ms": ("A p95 latency above this calls for more replicas.", 250),
    "scaling.max_cpu_percent": ("Container CPU, in percent of its limit, that calls for more replicas.", 80),
    "scaling.max_memory_percent": ("Container memory, in percent of its limit, that calls for more replicas.",
                                   85),
    "scaling.scale_out_threshold_pct": ("Scale out when a load figure reaches this percentage of its limit.", 80),
    "scaling.scale_in_threshold_pct": ("Scale in when every figure stays under this percentage (three windows "
                                       "in a row); below `scale_out_threshold_pct`.", 30),
    "scaling.window_seconds": ("The window the figures are averaged over.", 60),
    "scaling.cooldown_seconds": ("Seconds after a scaling decision before the next one.", 120),
    "canary_weight": ("The canary's share of proxied requests, between 0 and 1 (both excluded); default: its "
                      "share of the replicas.", 0.1),
    "read_only": ("A read-only root filesystem (with a 64 MiB tmpfs on /tmp).", True),
    "user": ("`user` or `user:group` (names or numeric ids) the container runs as; default: the image's.",
             "1000:1000"),
    "volumes": ("Named volumes `{name, path}` (one per replica slot, kept on the node where the slot first "
                "ran) and bind mounts `{host, path, read_only}` of host directories the agent allows "
                "(`[agent.docker] bind_paths`).", [{"name": "data", "path": "/data"}]),
    "kind": ("`service` runs forever; `job` runs to completion (exit 0 is complete).", "job"),
    "restart": ("When a container that exited is started again. Default: `always` for a service, `on-failure` "
                "for a job (`always` is refused for a job).", "on-failure"),
    "max_attempts": ("Runs in all before the replica is given up (`dead`); 0 is unlimited. Default: 0 for a "
                     "service, 3 for a job.", 3),
    "schedule": ("A 5-field cron expression (UTC) that starts a job periodically; jobs only.", "*/5 * * * *"),
    "registry_auth": ("Pull credentials, as a secret reference only (the secret holds `user:password` or a "
                      "JSON object).", "${secrets.registry}"),
    "depends_on": ("Services of the same project that must be ready (or, for a job, complete) before this "
                   "one's replicas are placed.", ["db"]),
    "labels": ("Descriptive labels of the service (not node selectors; never a new version).",
               {"team": "payments"}),
}

# Defaults that depend on another field or on the machine, said in words instead of a value.
_DEFAULT_WORDS = {
    "resources": "see its fields", "placement": "see its fields", "update": "see its fields",
    "health.http": "none (exactly one of http, tcp, exec)", "health.tcp": "none (exactly one of http, tcp, exec)",
    "health.exec": "none (exactly one of http, tcp, exec)", "labels": "none",
    "restart": "always (a job: on-failure)",
    "max_attempts": "0 (a job: 3)",
    "canary_weight": "the canary's share of the replicas",
    "protocol": "http (not stored in the normalized spec when left at its default)",
    "allow_from": "none: only the service's own project",
}


def _minimal_defaults() -> dict[str, Any]:
    """What the validator fills in for fields left out, per dotted path (its own normalization)."""
    out: dict[str, Any] = {}
    base = spec.validate_service({"name": "x", "image": "x"})
    for key, value in base.items():
        if key in ("name", "image"):
            continue
        if isinstance(value, dict) and key in ("resources", "placement", "update"):
            for sub, subvalue in value.items():
                out[f"{key}.{sub}"] = subvalue
        else:
            out[key] = value
    health = spec.validate_service({"name": "x", "image": "x", "port": 1, "health": {"tcp": 1}})["health"]
    for key in ("interval_s", "timeout_s", "retries", "start_period_s"):
        out[f"health.{key}"] = health[key]
    for key, value in spec.SCALING_DEFAULTS.items():
        out[f"scaling.{key}"] = value
    return out


def _components() -> tuple[Schema, Schema]:
    # Imported here: the schemas module pulls in the master's API modules, which the CLI needs only now.
    from orca.master.openapi_schemas import COMPONENTS

    return copy.deepcopy(COMPONENTS["ServiceSpec"]), copy.deepcopy(COMPONENTS["ScalingPolicy"])


def _retarget(node: Any) -> Any:
    """OpenAPI's `#/components/schemas/X` references become this document's `#/$defs/X`."""
    if isinstance(node, dict):
        return {k: ("#/$defs/" + v.rsplit("/", 1)[-1] if k == "$ref" and isinstance(v, str) else _retarget(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(v) for v in node]
    return node


def _annotate(properties: dict[str, Schema], prefix: str, defaults: dict[str, Any]) -> None:
    for key in list(properties):
        # A copy per field: the API's schemas share one dict between fields (name and project).
        schema = properties[key] = copy.deepcopy(properties[key])
        path = prefix + key
        description, example = NOTES[path]
        schema["description"] = description
        schema["examples"] = [example]
        if path in _DEFAULT_WORDS:
            schema["x-default"] = _DEFAULT_WORDS[path]
        elif path in defaults:
            schema["default"] = defaults[path]
        inner = schema.get("properties")
        if inner is None:  # a nullable table: anyOf [table, null]
            for option in schema.get("anyOf", ()):
                for deeper in option.get("anyOf", (option,)):
                    if "properties" in deeper:
                        inner = deeper["properties"]
        if inner is not None and not path.startswith("volumes"):
            _annotate(inner, path + ".", defaults)


def spec_schema() -> Schema:
    """The published JSON Schema (draft 2020-12): one service spec, or a project file of several."""
    service, scaling = _components()
    # `labels` is accepted beside the other fields (orca.spec.validate_service), outside _TOP_FIELDS.
    service["properties"]["labels"] = {
        "type": "object", "maxProperties": 64,
        "propertyNames": {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$"},
        "additionalProperties": {"type": "string", "maxLength": 255}}
    defaults = _minimal_defaults()
    _annotate(service["properties"], "", defaults)
    _annotate(scaling["properties"], "scaling.", defaults)
    return _retarget({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "orca service spec",
        "description": "A file `orca deploy -f` and `orca validate -f` read: one service spec, or a project "
                       "of several under `services` (TOML: `[[services]]` tables). Generated from orca's "
                       "spec code (python -m orca.reference --write); the reference is docs/spec.md.",
        "anyOf": [{"$ref": "#/components/schemas/ServiceSpec"},
                  {"$ref": "#/components/schemas/ProjectFile"}],
        "$defs": {
            "ServiceSpec": service,
            "ScalingPolicy": scaling,
            "ProjectFile": {"type": "object", "additionalProperties": False, "required": ["services"],
                            "properties": {"services": {"type": "array", "minItems": 1,
                                                        "maxItems": spec.MAX_DEPLOY_SERVICES,
                                                        "items": {"$ref": "#/components/schemas/ServiceSpec"}}}},
        },
    })


def field_paths() -> list[str]:
    """Every dotted field path the validator accepts (the keys NOTES must have)."""
    paths = sorted(spec._TOP_FIELDS | {"labels"})
    paths += [f"resources.{k}" for k in sorted(spec._RESOURCE_FIELDS)]
    paths += [f"placement.{k}" for k in sorted(spec._PLACEMENT_FIELDS)]
    paths += [f"update.{k}" for k in sorted(spec._UPDATE_FIELDS)]
    paths += [f"health.{k}" for k in sorted(spec._HEALTH_FIELDS)]
    paths += [f"scaling.{k}" for k in spec.SCALING_DEFAULTS]
    return paths


def schema_errors(document: Any, schema: Schema | None = None) -> list[str]:
    """Every place `document` breaks the published schema, as `path: message` lines (empty if none).

    For a project file, the errors of the branch that fits best are shown (the services list), not the
    'one service' reading of it.
    """
    from jsonschema import Draft202012Validator
    schema = spec_schema() if schema is None else schema
    validator = Draft202012Validator(schema)
    if isinstance(document, dict) and "services" in document:
        target = {"$ref": "#/$defs/ProjectFile"}
    elif isinstance(document, dict):
        target = {"$ref": "#/$defs/ServiceSpec"}
    else:
        if validator.is_valid(document):
            return []
        return ["(file): expected one service spec (an object) or a project ({\"services\": [...]})"]
    branch = Draft202012Validator({"$defs": schema["$defs"], **target})
    lines = []
    errors = [_leaf(e) for e in branch.iter_errors(document)]
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path)
        lines.append(f"{where.replace('.[', '[') or '(file)'}: {_short(error)}")
    return lines


def check_services(specs: list[dict[str, Any]]) -> list[str]:
    """Every problem of the services a deploy file holds, one line each, named by service: the schema's
    (all of them at once) and then, for the services the schema passes, the rules only the validator
    knows (`orca.spec.validate_deploy_body`, the API's own check). Empty: the server would accept them."""
    names = [s.get("name") if isinstance(s.get("name"), str) and spec.is_dns_label(s.get("name")) else f"#{i}"
             for i, s in enumerate(specs)]
    problems: list[str] = []
    failed: set[int] = set()
    for line in schema_errors({"services": specs}):
        head, _, rest = line.partition(": ")
        if head.startswith("services[") and "]" in head:
            index = int(head[len("services["):head.index("]")])
            field = head[head.index("]") + 1:].lstrip(".")
            failed.add(index)
            problems.append(f"{names[index]}: {field + ': ' if field else ''}{rest}")
        else:
            problems.append(line)
    rest_specs = [s for i, s in enumerate(specs) if i not in failed]
    if rest_specs:
        _, errors = spec.validate_deploy_body({"services": rest_specs})
        problems += [f"{e['service']}: {e['error']}" for e in errors]
    return problems


def _leaf(error: Any) -> Any:
    """The most telling error inside alternatives (anyOf): the one that got deepest into the document,
    else one that is not a mere type mismatch (a table that is wrong inside, not 'expected null')."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        pool = [e for e in error.context if e.relative_path] or [e for e in error.context if e.validator != "type"]
        if not pool:
            break
        error = max(pool, key=lambda e: len(e.absolute_path))
    return error


_WORDS = {
    "type": "expected {}", "enum": "expected one of {}", "const": "expected {}", "pattern": "must match {}",
    "minimum": "must be at least {}", "maximum": "must be at most {}", "exclusiveMinimum": "must be greater than {}",
    "exclusiveMaximum": "must be less than {}", "minLength": "must have at least {} characters",
    "maxLength": "must have at most {} characters", "minItems": "must have at least {} items",
    "maxItems": "must have at most {} items", "maxProperties": "must have at most {} entries",
}


def _short(error: Any) -> str:
    """What is wrong, said from the rule and never from the value: an env value may be a literal secret."""
    if error.validator in ("anyOf", "oneOf"):
        # Only type mismatches among the alternatives (see _leaf): "expected integer or null".
        types = [str(e.validator_value) for e in error.context if e.validator == "type"]
        return "expected " + " or ".join(types) if types else "matches none of the allowed forms"
    if error.validator in ("additionalProperties", "required"):
        return error.message  # names the field(s), which the author wrote (or forgot) as keys
    if error.validator == "propertyNames":
        return f"invalid name {error.instance!r}" if isinstance(error.instance, str) and len(error.instance) <= 64 \
            else "invalid name"
    template = _WORDS.get(error.validator)
    if template is None:
        return f"breaks the rule {error.validator!r}"
    value = error.validator_value
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return template.format(value)
