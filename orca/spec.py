"""Service spec validation, shared by the API, the CLI and the state machine.

One module does it so that all three agree on what a valid spec is: the CLI can reject a typo before
any network round trip, the API answers 400 `INVALID_SPEC` naming the field, and the state machine
only ever stores the *normalized* form, which is plain JSON data (str, int, float, bool, None, list,
dict) and therefore safe to put into msgpack and the Raft log.

Rules that shape the code:
- Pure: no I/O, no clock, no randomness, so `apply` may call it.
- Strict: unknown fields are errors (a misspelt `imgae` must not silently deploy the wrong thing),
  and every error message starts with the field path (`resources.memory: ...`).
- Idempotent: `validate_service(validate_service(x)) == validate_service(x)`; the state machine may
  re-validate what the API already normalized.
- Only `InvalidSpec` escapes, whatever the input.

`parse_memory` is `orca.config.parse_memory`, re-exported: a size in a spec and a size in an agent's
`[agent.resources]` must mean the same number of bytes, or the scheduler compares unlike things.
(orca.config reads files only inside its loaders; importing it does no I/O.)

`scaling` (the autoscaling policy, read by `orca.autoscale`) and `canary_weight` (the canary's share of
proxied requests) are traffic policy, not part of a version: changing them never restarts a container,
so they are outside `ROLLOUT_FIELDS`. `validate_scaling` checks a policy on its own, for
`PUT /api/v1/services/{name}/scaling`, with the same rules and the same `scaling.` field paths.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from typing import Any, NoReturn

from orca.config import parse_memory
from orca.errors import InvalidSpec
from orca.jobs import valid_schedule

__all__ = [
    "MAX_REPLICAS", "DEFAULT_MEMORY", "DEFAULT_CPU", "MIN_CPU", "MAX_CPU", "MIN_MEMORY", "MAX_MEMORY",
    "ROLLOUT_FIELDS", "OPTIONAL_ROLLOUT_FIELDS", "validate_service", "validate_deploy_body", "spec_digest",
    "rollout_fields_changed", "parse_memory", "secret_refs", "is_dns_label",
    "SCALING_MODES", "SCALING_DEFAULTS", "MIN_WINDOW_SECONDS", "validate_scaling",
]

MAX_REPLICAS = 1000
MAX_DEPLOY_SERVICES = 1000  # services in one deploy body
DEFAULT_MEMORY = 256 * 2**20  # 256Mi
DEFAULT_CPU = 0.25
# A hundredth of a core: Docker's own minimum (NanoCpus 10,000,000). Anything below would round to
# NanoCpus=0, which Docker reads as "no limit" - a tiny request must never become an unlimited one.
MIN_CPU = 0.01
MAX_CPU = 256.0
# Docker refuses a memory limit below 6 MiB at container start; failing at deploy time is kinder
# (and catches `memory = 512` written meaning MiB).
MIN_MEMORY = 6 * 2**20
# 1 PiB: far above any host, and keeps the value well inside msgpack's 64-bit integers.
MAX_MEMORY = 2**50

# The fields whose change makes a new version and hence a rolling update. Scaling,
# placement, domain, update policy, canary count and canary weight do not restart anything.
ROLLOUT_FIELDS = ("image", "command", "env", "resources", "port", "health")
# Container hardening options that also make a new version, but only count in the digest when set, so
# the digest of every spec written before they existed stays the same (no restart on upgrade).
OPTIONAL_ROLLOUT_FIELDS: dict[str, Any] = {"read_only": False, "user": None, "volumes": [], "kind": "service",
                                           "restart": "always", "max_attempts": 0, "schedule": None,
                                           "registry_auth": None, "depends_on": []}

SCALING_MODES = ("auto", "manual")
# Orchestry's policy fields with their defaults, in normalized order. Percentages are of the limit
# they qualify: scale out when the load reaches 80% of the limits, in when it stays under 30%.
SCALING_DEFAULTS: dict[str, Any] = {
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
# Shorter windows would average too few samples (the leader samples every few seconds) to be more
# than noise.
MIN_WINDOW_SECONDS = 5.0

_MAX_IMAGE_LEN = 1024
_MAX_PATH_LEN = 2048
_MAX_LABEL_VALUE_LEN = 255
# Every list and map of a spec is bounded (a spec is stored in the Raft log, in every version of the
# history, and pushed to agents): far above real use, small enough that a hostile deploy costs little.
_MAX_COMMAND_ARGS = 256
_MAX_ARG_LEN = 32 * 1024
_MAX_ENV = 256
_MAX_ENV_KEY_LEN = 256
_MAX_ENV_VALUE_LEN = 32 * 1024
_MAX_LABELS = 64
# Upper bounds of the time and rate fields (seconds unless named otherwise).
_MAX_DURATION_S = 86400.0
_MAX_RATE = 1e6
_MAX_PCT = 1000.0
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")

_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NODE_ID_RE = re.compile(r"[a-z0-9-]{1,63}")  # same rule as `[node] id` in the config
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
# `${secrets.KEY}` is resolved by the agent at container start; the spec keeps the template so the
# secret value never enters the service record, the Raft log or an API response.
_SECRET_REF_RE = re.compile(r"\$\{secrets\.([A-Za-z0-9_][A-Za-z0-9_.-]*)\}")
_SIZE_HINT = "expected a size like '512Mi' (units Ki, Mi, Gi, Ti, K, M, G, T) or a number of bytes"

_TOP_FIELDS = frozenset({
    "name", "project", "image", "command", "replicas", "port", "domain", "health", "env",
    "resources", "internal", "placement", "update", "canary", "scaling", "canary_weight",
    "read_only", "user", "volumes", "kind", "restart", "max_attempts", "schedule", "registry_auth",
    "depends_on", "protocol", "allow_from",
})
PROTOCOLS = ("http", "tcp")  # `protocol`: how the mesh (and the ingress) speak to the service's port
MAX_ALLOW_FROM = 64
_RESOURCE_FIELDS = frozenset({"memory", "cpu"})
_PLACEMENT_FIELDS = frozenset({"node", "labels"})
_UPDATE_FIELDS = frozenset({"max_parallel", "min_healthy_s", "healthy_deadline_s", "auto_revert"})
_SCALING_FIELDS = frozenset(SCALING_DEFAULTS)
_DEPLOY_BODY_FIELDS = frozenset({"services"})
_NAMED_VOLUME_FIELDS = frozenset({"name", "path"})
_BIND_FIELDS = frozenset({"host", "path", "read_only"})
_HEALTH_FIELDS = frozenset({"http", "tcp", "exec", "interval_s", "timeout_s", "retries", "start_period_s"})
MAX_VOLUMES = 16  # mounts of one service
_VOLUME_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_MAX_MOUNT_PATH_LEN = 1024


def is_dns_label(value: object) -> bool:
    """True for a lowercase RFC 1123 label: the rule for service and project names."""
    return isinstance(value, str) and _DNS_LABEL_RE.fullmatch(value) is not None


def secret_refs(spec: dict[str, Any]) -> set[str]:
    """The secret keys a normalized spec refers to with `${secrets.KEY}` (its env and `registry_auth`)."""
    refs: set[str] = set()
    for value in spec.get("env", {}).values():
        refs.update(_SECRET_REF_RE.findall(value))
    if spec.get("registry_auth"):  # pull credentials (orca.registry): a secret like any other
        refs.update(_SECRET_REF_RE.findall(spec["registry_auth"]))
    return refs


def validate_service(raw: object, *, index: int | None = None) -> dict[str, Any]:
    """Check one service spec and return its normalized form (every field present, defaults filled).

    `index` is the spec's position in a deploy body; it names the service in error details
    (`"#3"`) until the spec's own name is known to be valid. Raises `InvalidSpec` whose message
    starts with the field path and whose details are `{"field": path, "service": name-or-"#i"}`.
    """
    validator = _Validator(index)
    if not isinstance(raw, dict) or "labels" not in raw:
        return validator.spec(raw)
    # A service's own labels (an Orchestry app's `metadata.labels`): descriptive only, never part of a
    # version, and only present when given, so specs written before the field existed are unchanged.
    out = validator.spec({k: v for k, v in raw.items() if k != "labels"})
    labels = validator.label_map("labels", raw["labels"])
    if labels:
        out["labels"] = labels
    return out


def validate_scaling(raw: object, *, service: str | None = None) -> dict[str, Any]:
    """Check a scaling policy on its own (the body of `PUT .../scaling`) and return it normalized.

    Same rules as `scaling` inside a spec: every field optional, defaults filled, errors name the field
    as `scaling.<field>`; `service` only goes into the error details.
    """
    validator = _Validator(None)
    validator.label = service
    if raw is None:
        validator.fail("scaling", "expected an object, got null")
    return validator.scaling(raw)


def validate_deploy_body(body: object) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Split a deploy body `{"services": [...]}` into the valid normalized specs and the errors.

    A deploy is partial by design (`{"deployed": [...], "errors": [...]}`), so a bad
    service does not block the good ones; each error is `{"service": name-or-"#i", "error": text}`
    with `i` the 0-based position in the list. A name already used earlier in the same body is an
    error for the later one. Only a body of the wrong shape raises `InvalidSpec`.
    """
    if not isinstance(body, dict):
        _raise_body("body: expected an object with a 'services' list", "body")
    for key in body:
        if key not in _DEPLOY_BODY_FIELDS:
            _raise_body(f"unknown field {_field_name(key)}", str(key))
    services = body.get("services")
    if not isinstance(services, list) or not services:
        _raise_body("services: expected a non-empty list of service specs", "services")
    if len(services) > MAX_DEPLOY_SERVICES:
        _raise_body(f"services: at most {MAX_DEPLOY_SERVICES} services in one deploy", "services")

    valid: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, raw in enumerate(services):
        label = f"#{i}"
        if isinstance(raw, dict) and is_dns_label(raw.get("name")):
            label = raw["name"]
        try:
            spec = validate_service(raw, index=i)
        except InvalidSpec as exc:
            errors.append({"service": label, "error": exc.message})
            continue
        if spec["name"] in seen:
            errors.append({"service": label,
                           "error": f"name: duplicate service '{spec['name']}' in this deploy"})
            continue
        seen.add(spec["name"])
        valid.append(spec)
    return valid, errors


def spec_digest(spec: dict[str, Any]) -> str:
    """A short stable id of the version-making fields of a normalized spec.

    Canonical JSON (sorted keys, fixed separators, ASCII) so that key order, dict construction
    history and the machine it runs on never change the digest: it is compared across masters and
    stored in the version history.
    """
    material = {field: spec.get(field) for field in ROLLOUT_FIELDS}
    material.update({field: spec[field] for field, default in OPTIONAL_ROLLOUT_FIELDS.items()
                     if spec.get(field, default) != default})
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def rollout_fields_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when going from `old` to `new` needs a new version (and a rolling update)."""
    return spec_digest(old) != spec_digest(new)


# --------------------------------------------------------------------------------------------------


def _raise_body(message: str, field: str) -> NoReturn:
    raise InvalidSpec(message, {"field": field, "service": None})


def _type_name(value: object) -> str:
    """JSON vocabulary, since that is what the user wrote (or TOML, which maps onto it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: object, limit: int = 40) -> str:
    """A short echo of a user's scalar value, bounded so a huge input cannot blow up the message.

    Containers are described by type only: their repr could be huge, and `repr` of an int with more
    than 4300 digits even raises.
    """
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return "a very large integer"
    if value is None or isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return _type_name(value)


def _field_name(key: object) -> str:
    return f"'{key}'" if isinstance(key, str) and len(key) <= 64 else _show(key)


def _is_int(value: object) -> bool:
    # bool is an int subclass; `replicas: true` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_clean_token(value: str) -> bool:
    """Printable and without whitespace: an image reference or a URL path."""
    return value.isprintable() and not any(ch.isspace() for ch in value)


class _Validator:
    """Walks one raw spec; carries the service's display name for error details."""

    def __init__(self, index: int | None) -> None:
        self.label: str | None = f"#{index}" if index is not None else None

    def fail(self, field: str, message: str, **extra: Any) -> NoReturn:
        raise InvalidSpec(f"{field}: {message}", {"field": field, "service": self.label, **extra})

    def unknown(self, table: dict[Any, Any], allowed: frozenset[str], prefix: str) -> None:
        for key in table:
            if key in allowed:
                continue
            field = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}{_show(key)}"
            details: dict[str, Any] = {"field": field, "service": self.label}
            close = _closest(key, allowed)
            if close is not None:
                details["suggestion"] = f"{prefix}{close}"
            raise InvalidSpec(f"unknown field {_field_name(field)}", details)

    def table(self, raw: dict[str, Any], field: str, allowed: frozenset[str]) -> dict[Any, Any]:
        value = raw.get(field, {})
        if not isinstance(value, dict):
            self.fail(field, f"expected an object, got {_type_name(value)}")
        self.unknown(value, allowed, f"{field}.")
        return value

    # -- top level -----------------------------------------------------------------------------

    def spec(self, raw: object) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise InvalidSpec(f"service spec: expected an object, got {_type_name(raw)}",
                              {"field": None, "service": self.label})
        if "name" not in raw:
            self.fail("name", "required")
        name = self.dns_label("name", raw["name"])
        self.label = name
        self.unknown(raw, _TOP_FIELDS, "")

        replicas = self.int_range("replicas", raw.get("replicas", 1), 0, MAX_REPLICAS)
        port = raw.get("port")
        if port is not None:
            port = self.int_range("port", port, 1, 65535)
        health = self.health(raw.get("health"))
        if isinstance(health, str) or (isinstance(health, dict) and health.get("exec") is None):
            if health is not None and port is None:
                self.fail("health", "a health check needs 'port' (the container port it is sent to)")
        if isinstance(health, dict) and health.get("tcp") is not None and health["tcp"] != port:
            self.fail("health.tcp", f"must be the service's port ({port}), the one the agent can reach, "
                                    f"got {health['tcp']}")
        canary = self.int_range("canary", raw.get("canary", 0), 0, MAX_REPLICAS)
        if canary > replicas:
            self.fail("canary", f"must be at most replicas ({replicas}), got {canary}")
        internal = raw.get("internal", False)
        if not isinstance(internal, bool):
            self.fail("internal", f"expected true or false, got {_type_name(internal)}")
        read_only = raw.get("read_only", False)
        if not isinstance(read_only, bool):
            self.fail("read_only", f"expected true or false, got {_type_name(read_only)}")

        mesh = self.mesh_fields(raw, port)

        volumes = self.volumes(raw.get("volumes", []))
        if canary and any("name" in v for v in volumes):
            # A canary of slot i would need slot i's volume while the stable replica still uses it.
            self.fail("canary", "not supported with named volumes (each replica slot owns its volume)")
        return {
            "name": name,
            "project": self.dns_label("project", raw.get("project", "default")),
            "image": self.image(raw.get("image")),
            "command": self.command(raw.get("command")),
            "replicas": replicas,
            "port": port,
            "domain": self.domain(raw.get("domain")),
            "health": health,
            "env": self.env(raw.get("env", {})),
            "resources": self.resources(raw),
            "internal": internal,
            "placement": self.placement(raw),
            "update": self.update(raw),
            "canary": canary,
            "scaling": None if raw.get("scaling") is None else self.scaling(raw["scaling"]),
            "canary_weight": self.canary_weight(raw.get("canary_weight")),
            "read_only": read_only,
            "user": self.user(raw.get("user")),
            "volumes": volumes,
            **self.lifecycle(raw, replicas, canary),
            "registry_auth": self.registry_auth(raw.get("registry_auth")),
            "depends_on": self.depends_on(raw.get("depends_on", []), name),
            **mesh,
        }

    def mesh_fields(self, raw: dict[str, Any], port: int | None) -> dict[str, Any]:
        """`protocol` and `allow_from` (the service mesh, orca.mesh), present in the normalized spec only
        when not the default, so the digest of a spec written before they existed does not change."""
        out: dict[str, Any] = {}
        protocol = raw.get("protocol", "http")
        if protocol not in PROTOCOLS:
            self.fail("protocol", f"expected one of {', '.join(map(repr, PROTOCOLS))}, got {_show(protocol)}")
        if protocol != "http":
            if port is None:
                self.fail("protocol", f"a {protocol} service needs 'port' (the container port it serves)")
            if raw.get("domain") is not None:
                self.fail("domain", "a tcp service has no domain (the ingress routes HTTP by Host); it is reached "
                                    "through the mesh by name")
            out["protocol"] = protocol
        allow = raw.get("allow_from", [])
        if not isinstance(allow, list):
            self.fail("allow_from", f"expected a list of project names, got {_type_name(allow)}")
        if len(allow) > MAX_ALLOW_FROM:
            self.fail("allow_from", f"at most {MAX_ALLOW_FROM} projects, got {len(allow)}")
        projects = sorted({self.dns_label(f"allow_from[{i}]", p) if p != "*" else p for i, p in enumerate(allow)})
        if projects:
            out["allow_from"] = projects
        return out

    # -- scalars -------------------------------------------------------------------------------

    def dns_label(self, field: str, value: object) -> str:
        if not isinstance(value, str):
            self.fail(field, f"expected a string, got {_type_name(value)}")
        if not is_dns_label(value):
            self.fail(field, "expected a DNS label (lowercase letters, digits and '-', at most 63 "
                             f"characters, not starting or ending with '-'), got {_show(value)}")
        return value

    def int_range(self, field: str, value: object, low: int, high: int) -> int:
        if not _is_int(value):
            self.fail(field, f"expected an integer, got {_type_name(value)}")
        assert isinstance(value, int)
        if not low <= value <= high:
            self.fail(field, f"must be between {low} and {high}, got {_show(value)}")
        return value

    def number(self, field: str, value: object, *, low: float, high: float | None = None,
               low_inclusive: bool = True) -> float:
        """A finite float in range; ints are accepted (TOML `2` means 2.0) and normalized to float."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(field, f"expected a number, got {_type_name(value)}")
        try:
            result = float(value)
        except OverflowError:
            self.fail(field, f"number out of range, got {_show(value)}")
        if not math.isfinite(result):
            self.fail(field, f"expected a finite number, got {_show(value)}")
        too_low = result < low if low_inclusive else result <= low
        if too_low:
            bound = f"at least {low:g}" if low_inclusive else f"greater than {low:g}"
            self.fail(field, f"must be {bound}, got {_show(value)}")
        if high is not None and result > high:
            self.fail(field, f"must be at most {high:g}, got {_show(value)}")
        return result

    def image(self, value: object) -> str:
        if value is None:
            self.fail("image", "required")
        if not isinstance(value, str):
            self.fail("image", f"expected a string, got {_type_name(value)}")
        if not value:
            self.fail("image", "must not be empty")
        if not _is_clean_token(value):
            self.fail("image", f"must not contain whitespace or control characters, got {_show(value)}")
        if len(value) > _MAX_IMAGE_LEN:
            self.fail("image", f"must be at most {_MAX_IMAGE_LEN} characters")
        return value

    def command(self, value: object) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            # A string would need shell splitting, whose quoting rules differ between tools; a list
            # is unambiguous and is exactly what Docker receives.
            self.fail("command", 'expected a list of strings such as ["sh", "-c", "..."], got a string')
        if not isinstance(value, list):
            self.fail("command", f"expected a list of strings, got {_type_name(value)}")
        if not value:
            self.fail("command", "must not be an empty list (omit it to use the image's default)")
        if len(value) > _MAX_COMMAND_ARGS:
            self.fail("command", f"must have at most {_MAX_COMMAND_ARGS} arguments")
        for i, arg in enumerate(value):
            if not isinstance(arg, str):
                self.fail(f"command[{i}]", f"expected a string, got {_type_name(arg)}")
            if len(arg) > _MAX_ARG_LEN:
                self.fail(f"command[{i}]", f"must be at most {_MAX_ARG_LEN} characters")
            if "\x00" in arg:
                self.fail(f"command[{i}]", "must not contain NUL characters")
        return list(value)

    def user(self, value: object) -> str | None:
        """`user` or `user:group` (names or numeric ids) the container runs as; None: the image's."""
        if value is None:
            return None
        if not isinstance(value, str) or not _USER_RE.fullmatch(value):
            self.fail("user", "expected a user or user:group (letters, digits, '_', '.', '-'; at most 32 "
                              f"characters each), got {_show(value)}")
        return value

    def domain(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail("domain", f"expected a hostname string, got {_type_name(value)}")
        host = value.lower()  # hostnames are case-insensitive; store one spelling
        labels = host.split(".")
        # isascii first: str.lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones.
        valid = value.isascii() and len(host) <= 253
        if not valid or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
            self.fail("domain", f"expected a hostname such as 'app.example.com', got {_show(value)}")
        return host

    def health(self, value: object) -> str | dict[str, Any] | None:
        """The plain string form (an HTTP path) stays a string, so existing specs keep their digest; the
        table form (orca.healthcheck) is normalized with every timing field filled."""
        if value is None:
            return None
        if isinstance(value, dict):
            return self.health_table(value)
        if not isinstance(value, str):
            self.fail("health", f"expected an HTTP path string or a table, got {_type_name(value)}")
        if not value.startswith("/"):
            self.fail("health", f"expected an HTTP path starting with '/', got {_show(value)}")
        if not _is_clean_token(value) or len(value) > _MAX_PATH_LEN:
            self.fail("health", f"expected an HTTP path without whitespace, got {_show(value)}")
        return value

    def mount_path(self, field: str, value: object) -> str:
        """An absolute, normalized path without ':' (Docker's mount separator) or '..' components."""
        if not isinstance(value, str):
            self.fail(field, f"expected an absolute path string, got {_type_name(value)}")
        parts = value.split("/")
        if (not value.startswith("/") or len(value) > _MAX_MOUNT_PATH_LEN or ":" in value
                or not _is_clean_token(value) or any(p in (".", "..") for p in parts)):
            self.fail(field, "expected an absolute path without spaces, ':', '.' or '..' parts "
                             f"(at most {_MAX_MOUNT_PATH_LEN} characters), got {_show(value)}")
        normalized = "/" + "/".join(p for p in parts if p)
        return normalized

    def volumes(self, value: object) -> list[dict[str, Any]]:
        """`[{name, path}]` named volumes (kept by the node across restarts, see orca.volumes) and
        `[{host, path, read_only}]` bind mounts of host paths the agent's config allows (read-only unless
        `read_only = false`). Container paths are unique and never '/'."""
        if not isinstance(value, list):
            self.fail("volumes", f"expected a list of {{name, path}} or {{host, path}} tables, got {_type_name(value)}")
        if len(value) > MAX_VOLUMES:
            self.fail("volumes", f"must have at most {MAX_VOLUMES} entries")
        out: list[dict[str, Any]] = []
        paths: set[str] = set()
        names: set[str] = set()
        for i, item in enumerate(value):
            field = f"volumes[{i}]"
            if not isinstance(item, dict):
                self.fail(field, f"expected a table with name and path (or host and path), got {_type_name(item)}")
            is_bind = "host" in item
            self.unknown(item, _BIND_FIELDS if is_bind else _NAMED_VOLUME_FIELDS, f"{field}.")
            if "path" not in item:
                self.fail(f"{field}.path", "required (the path inside the container)")
            path = self.mount_path(f"{field}.path", item["path"])
            if path == "/":
                self.fail(f"{field}.path", "must not be '/'")
            if path in paths:
                self.fail(f"{field}.path", f"duplicate mount path {_show(path)}")
            paths.add(path)
            if is_bind:
                read_only = item.get("read_only", True)
                if not isinstance(read_only, bool):
                    self.fail(f"{field}.read_only", f"expected true or false, got {_type_name(read_only)}")
                out.append({"host": self.mount_path(f"{field}.host", item["host"]), "path": path,
                            "read_only": read_only})
                continue
            if "name" not in item:
                self.fail(f"{field}.name", "required (or 'host' for a bind mount)")
            name = item["name"]
            if not isinstance(name, str) or not _VOLUME_NAME_RE.fullmatch(name):
                self.fail(f"{field}.name", "expected lowercase letters, digits, '_' and '-' (at most 32, "
                                           f"starting with a letter or digit), got {_show(name)}")
            if name in names:
                self.fail(f"{field}.name", f"duplicate volume name {_show(name)}")
            names.add(name)
            out.append({"name": name, "path": path})
        return out

    def depends_on(self, value: object, name: str) -> list[str]:
        """Names of services of the same project to wait for (orca.depends); sorted, no duplicates."""
        if not isinstance(value, list):
            self.fail("depends_on", f"expected a list of service names, got {_type_name(value)}")
        if len(value) > 32:
            self.fail("depends_on", "must have at most 32 services")
        out = sorted({self.dns_label(f"depends_on[{i}]", v) for i, v in enumerate(value)})
        if name in out:
            self.fail("depends_on", f"a service cannot depend on itself ({name})")
        return out

    def registry_auth(self, value: object) -> str | None:
        """Exactly one `${secrets.KEY}`: credentials themselves never go into a spec (orca.registry)."""
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 300 or not _SECRET_REF_RE.fullmatch(value):
            # not echoed: a user who pasted the password here must not see it in logs or errors
            self.fail("registry_auth", "expected a secret reference like ${secrets.REGISTRY} (store the "
                                       "credentials with `orca secrets set`)")
        return value

    def lifecycle(self, raw: dict[str, Any], replicas: int, canary: int) -> dict[str, Any]:
        """`kind`, `restart`, `max_attempts` and `schedule` (orca.jobs), defaults depending on the kind."""
        kind = raw.get("kind", "service")
        if kind not in ("service", "job"):
            self.fail("kind", f"expected 'service' or 'job', got {_show(kind)}")
        job = kind == "job"
        restart = raw.get("restart", "on-failure" if job else "always")
        if restart not in ("always", "on-failure", "never"):
            self.fail("restart", f"expected 'always', 'on-failure' or 'never', got {_show(restart)}")
        if job and restart == "always":
            self.fail("restart", "a job runs to completion: use 'on-failure' or 'never'")
        attempts = self.int_range("max_attempts", raw.get("max_attempts", 3 if job else 0), 0, 1000)
        schedule = raw.get("schedule")
        if schedule is not None:
            if not job:
                self.fail("schedule", "only a job (kind = \"job\") has a schedule")
            if not isinstance(schedule, str) or len(schedule) > 100 or not schedule.isprintable() \
                    or not valid_schedule(schedule):
                self.fail("schedule",
                          f"expected a 5-field cron expression such as '*/5 * * * *', got {_show(schedule)}")
            schedule = " ".join(schedule.split())
        if job and canary:
            self.fail("canary", "a job has no canary")
        if job and raw.get("scaling") is not None:
            self.fail("scaling", "a job is not autoscaled")
        return {"kind": kind, "restart": restart, "max_attempts": attempts, "schedule": schedule}

    def health_table(self, value: dict[Any, Any]) -> dict[str, Any]:
        self.unknown(value, _HEALTH_FIELDS, "health.")
        kinds = [k for k in ("http", "tcp", "exec") if value.get(k) is not None]
        if len(kinds) != 1:
            self.fail("health", "expected exactly one of http = \"/path\", tcp = PORT or exec = [\"cmd\", ...]")
        out: dict[str, Any] = {"http": None, "tcp": None, "exec": None}
        kind = kinds[0]
        if kind == "http":
            path = value["http"]
            if not isinstance(path, str) or not path.startswith("/") or not _is_clean_token(path) \
                    or len(path) > _MAX_PATH_LEN:
                self.fail("health.http", f"expected an HTTP path starting with '/', got {_show(path)}")
            out["http"] = path
        elif kind == "tcp":
            out["tcp"] = self.int_range("health.tcp", value["tcp"], 1, 65535)
        else:
            cmd = value["exec"]
            if not isinstance(cmd, list) or not cmd or len(cmd) > _MAX_COMMAND_ARGS:
                self.fail("health.exec", f"expected a non-empty list of at most {_MAX_COMMAND_ARGS} strings")
            for i, arg in enumerate(cmd):
                if not isinstance(arg, str) or "\x00" in arg or len(arg) > _MAX_ARG_LEN:
                    self.fail(f"health.exec[{i}]", "expected a string without NUL characters")
            out["exec"] = list(cmd)
        out["interval_s"] = self.number("health.interval_s", value.get("interval_s", 1.0), low=1.0, high=3600.0)
        out["timeout_s"] = self.number("health.timeout_s", value.get("timeout_s", 1.0), low=0.0,
                                       low_inclusive=False, high=60.0)
        out["retries"] = self.int_range("health.retries", value.get("retries", 3), 1, 100)
        out["start_period_s"] = self.number("health.start_period_s", value.get("start_period_s", 0.0), low=0.0,
                                            high=_MAX_DURATION_S)
        return out

    # -- tables --------------------------------------------------------------------------------

    def env(self, value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            self.fail("env", f"expected an object of strings, got {_type_name(value)}")
        if len(value) > _MAX_ENV:
            self.fail("env", f"must have at most {_MAX_ENV} variables")
        out: dict[str, str] = {}
        for key, val in value.items():
            if not isinstance(key, str) or len(key) > _MAX_ENV_KEY_LEN or not _ENV_KEY_RE.fullmatch(key):
                self.fail("env", f"invalid variable name {_show(key)} (letters, digits and '_', "
                                 "not starting with a digit)")
            # Values are never echoed: they may hold a literal secret.
            if not isinstance(val, str):
                self.fail(f"env.{key}", f"expected a string, got {_type_name(val)}")
            if "\x00" in val:
                self.fail(f"env.{key}", "must not contain NUL characters")
            if len(val) > _MAX_ENV_VALUE_LEN:
                self.fail(f"env.{key}", f"must be at most {_MAX_ENV_VALUE_LEN} characters")
            self.secret_templates(f"env.{key}", val)
            out[key] = val
        return out

    def secret_templates(self, field: str, value: str) -> None:
        """Every `${secrets.` must open a well-formed reference, or the agent could not resolve it."""
        for m in re.finditer(r"\$\{secrets\.", value):
            if not _SECRET_REF_RE.match(value, m.start()):
                self.fail(field, "malformed secret reference; expected ${secrets.KEY}")

    def resources(self, raw: dict[str, Any]) -> dict[str, Any]:
        table = self.table(raw, "resources", _RESOURCE_FIELDS)
        memory_raw = table.get("memory", DEFAULT_MEMORY)
        memory = self.memory(memory_raw)
        if memory < MIN_MEMORY:
            self.fail("resources.memory", f"must be at least 6Mi (Docker's minimum), got {_show(memory_raw)}")
        if memory > MAX_MEMORY:
            self.fail("resources.memory", f"must be at most 1Pi, got {_show(memory_raw)}")
        cpu = self.number("resources.cpu", table.get("cpu", DEFAULT_CPU), low=MIN_CPU, high=MAX_CPU)
        return {"memory": memory, "cpu": cpu}

    def memory(self, value: object) -> int:
        """Sizes mean exactly what they mean in the config (`[agent.resources] memory`), so the
        scheduler compares like with like: one parser, `orca.config.parse_memory`."""
        if _is_int(value):
            assert isinstance(value, int)
            if value <= 0:
                self.fail("resources.memory", f"must be positive, got {_show(value)}")
            return value
        # Bounded length: the parser echoes the value in its message, and a 64-character size is
        # already absurd.
        if isinstance(value, str) and len(value) <= 64:
            try:
                return parse_memory(value)
            except ValueError:
                pass
        self.fail("resources.memory", f"{_SIZE_HINT}, got {_show(value)}")

    def placement(self, raw: dict[str, Any]) -> dict[str, Any]:
        table = self.table(raw, "placement", _PLACEMENT_FIELDS)
        node = table.get("node")
        if node is not None and (not isinstance(node, str) or not _NODE_ID_RE.fullmatch(node)):
            self.fail("placement.node",
                      f"expected a node id ([a-z0-9-], 1 to 63 characters), got {_show(node)}")
        return {"node": node, "labels": self.label_map("placement.labels", table.get("labels", {}))}

    def label_map(self, field: str, labels: object) -> dict[str, str]:
        """A bounded map of label names to printable strings (node selectors, or a service's own labels)."""
        if not isinstance(labels, dict):
            self.fail(field, f"expected an object of strings, got {_type_name(labels)}")
        if len(labels) > _MAX_LABELS:
            self.fail(field, f"must have at most {_MAX_LABELS} labels")
        out: dict[str, str] = {}
        for key, val in labels.items():
            if not isinstance(key, str) or not _LABEL_KEY_RE.fullmatch(key):
                self.fail(field, f"invalid label name {_show(key)}")
            if not isinstance(val, str):
                self.fail(f"{field}.{key}", f"expected a string, got {_type_name(val)}")
            if not val.isprintable() or len(val) > _MAX_LABEL_VALUE_LEN:
                self.fail(f"{field}.{key}", f"expected printable text of at most {_MAX_LABEL_VALUE_LEN} characters")
            out[key] = val
        return out

    def update(self, raw: dict[str, Any]) -> dict[str, Any]:
        table = self.table(raw, "update", _UPDATE_FIELDS)
        max_parallel = self.int_range("update.max_parallel", table.get("max_parallel", 1), 1, MAX_REPLICAS)
        min_healthy = self.number("update.min_healthy_s", table.get("min_healthy_s", 2.0), low=0.0,
                                  high=_MAX_DURATION_S)
        deadline = self.number("update.healthy_deadline_s", table.get("healthy_deadline_s", 60.0),
                               low=0.0, low_inclusive=False, high=_MAX_DURATION_S)
        if deadline <= min_healthy:
            # A replica must run min_healthy_s before it counts as healthy, so such a deadline
            # would fail every rollout.
            self.fail("update.healthy_deadline_s",
                      f"must be greater than update.min_healthy_s ({min_healthy:g}), got {deadline:g}")
        auto_revert = table.get("auto_revert", True)
        if not isinstance(auto_revert, bool):
            self.fail("update.auto_revert", f"expected true or false, got {_type_name(auto_revert)}")
        return {"max_parallel": max_parallel, "min_healthy_s": min_healthy,
                "healthy_deadline_s": deadline, "auto_revert": auto_revert}

    def scaling(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail("scaling", f"expected an object, got {_type_name(value)}")
        self.unknown(value, _SCALING_FIELDS, "scaling.")
        table = {**SCALING_DEFAULTS, **value}

        mode = table["mode"]
        if mode not in SCALING_MODES:
            self.fail("scaling.mode", f"expected 'auto' or 'manual', got {_show(mode)}")
        low = self.int_range("scaling.min_replicas", table["min_replicas"], 0, MAX_REPLICAS)
        high = self.int_range("scaling.max_replicas", table["max_replicas"], 0, MAX_REPLICAS)
        if high < low:
            self.fail("scaling.max_replicas", f"must be at least scaling.min_replicas ({low}), got {high}")

        def positive(field: str, high: float = _MAX_RATE) -> float:
            return self.number(f"scaling.{field}", table[field], low=0.0, low_inclusive=False, high=high)

        def percent(field: str) -> float:
            return self.number(f"scaling.{field}", table[field], low=0.0, high=100.0, low_inclusive=False)

        target_rps = positive("target_rps_per_replica")
        max_p95 = positive("max_p95_latency_ms")
        max_cpu = percent("max_cpu_percent")
        max_memory = percent("max_memory_percent")
        out_pct = positive("scale_out_threshold_pct", _MAX_PCT)
        in_pct = positive("scale_in_threshold_pct", _MAX_PCT)
        if in_pct >= out_pct:
            # Equal or crossed thresholds leave no band where the count holds: it would flap.
            self.fail("scaling.scale_in_threshold_pct",
                      f"must be less than scaling.scale_out_threshold_pct ({out_pct:g}), got {in_pct:g}")
        window = self.number("scaling.window_seconds", table["window_seconds"], low=MIN_WINDOW_SECONDS,
                             high=_MAX_DURATION_S)
        cooldown = self.number("scaling.cooldown_seconds", table["cooldown_seconds"], low=0.0, high=_MAX_DURATION_S)
        return {
            "mode": mode,
            "min_replicas": low,
            "max_replicas": high,
            "target_rps_per_replica": target_rps,
            "max_p95_latency_ms": max_p95,
            "max_cpu_percent": max_cpu,
            "max_memory_percent": max_memory,
            "scale_out_threshold_pct": out_pct,
            "scale_in_threshold_pct": in_pct,
            "window_seconds": window,
            "cooldown_seconds": cooldown,
        }

    def canary_weight(self, value: object) -> float | None:
        if value is None:
            return None
        # Both ends excluded: 0 would be a canary that sees no traffic, 1 one that takes all of it;
        # either is a different operation (no canary, promote).
        weight = self.number("canary_weight", value, low=0.0, low_inclusive=False)
        if weight >= 1.0:
            self.fail("canary_weight", f"must be less than 1, got {_show(value)}")
        return weight


def _closest(key: object, allowed: frozenset[str]) -> str | None:
    """The allowed field a misspelt key most likely meant, for the error's details."""
    if not isinstance(key, str) or len(key) > 64:
        return None
    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None
