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

# The fields whose change makes a new version and hence a rolling update (DESIGN §7). Scaling,
# placement, domain, update policy, canary count and canary weight do not restart anything.
ROLLOUT_FIELDS = ("image", "command", "env", "resources", "port", "health")
# Container hardening options that also make a new version, but only count in the digest when set, so
# the digest of every spec written before they existed stays the same (no restart on upgrade).
OPTIONAL_ROLLOUT_FIELDS = {"read_only": False, "user": None}

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
    "read_only", "user",
})
_RESOURCE_FIELDS = frozenset({"memory", "cpu"})
_PLACEMENT_FIELDS = frozenset({"node", "labels"})
_UPDATE_FIELDS = frozenset({"max_parallel", "min_healthy_s", "healthy_deadline_s", "auto_revert"})
_SCALING_FIELDS = frozenset(SCALING_DEFAULTS)
_DEPLOY_BODY_FIELDS = frozenset({"services"})


def is_dns_label(value: object) -> bool:
    """True for a lowercase RFC 1123 label: the rule for service and project names."""
    return isinstance(value, str) and _DNS_LABEL_RE.fullmatch(value) is not None


def secret_refs(spec: dict[str, Any]) -> set[str]:
    """The secret keys a normalized spec's env refers to with `${secrets.KEY}`."""
    refs: set[str] = set()
    for value in spec.get("env", {}).values():
        refs.update(_SECRET_REF_RE.findall(value))
    return refs


def validate_service(raw: object, *, index: int | None = None) -> dict[str, Any]:
    """Check one service spec and return its normalized form (every field present, defaults filled).

    `index` is the spec's position in a deploy body; it names the service in error details
    (`"#3"`) until the spec's own name is known to be valid. Raises `InvalidSpec` whose message
    starts with the field path and whose details are `{"field": path, "service": name-or-"#i"}`.
    """
    return _Validator(index).spec(raw)


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

    A deploy is partial by design (DESIGN §6: `{"deployed": [...], "errors": [...]}`), so a bad
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
        if health is not None and port is None:
            self.fail("health", "a health check needs 'port' (the container port it is sent to)")
        canary = self.int_range("canary", raw.get("canary", 0), 0, MAX_REPLICAS)
        if canary > replicas:
            self.fail("canary", f"must be at most replicas ({replicas}), got {canary}")
        internal = raw.get("internal", False)
        if not isinstance(internal, bool):
            self.fail("internal", f"expected true or false, got {_type_name(internal)}")
        read_only = raw.get("read_only", False)
        if not isinstance(read_only, bool):
            self.fail("read_only", f"expected true or false, got {_type_name(read_only)}")

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
        }

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

    def health(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail("health", f"expected an HTTP path string, got {_type_name(value)}")
        if not value.startswith("/"):
            self.fail("health", f"expected an HTTP path starting with '/', got {_show(value)}")
        if not _is_clean_token(value) or len(value) > _MAX_PATH_LEN:
            self.fail("health", f"expected an HTTP path without whitespace, got {_show(value)}")
        return value

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
        labels = table.get("labels", {})
        if not isinstance(labels, dict):
            self.fail("placement.labels", f"expected an object of strings, got {_type_name(labels)}")
        if len(labels) > _MAX_LABELS:
            self.fail("placement.labels", f"must have at most {_MAX_LABELS} labels")
        out: dict[str, str] = {}
        for key, val in labels.items():
            if not isinstance(key, str) or not _LABEL_KEY_RE.fullmatch(key):
                self.fail("placement.labels", f"invalid label name {_show(key)}")
            if not isinstance(val, str):
                self.fail(f"placement.labels.{key}", f"expected a string, got {_type_name(val)}")
            if not val.isprintable() or len(val) > _MAX_LABEL_VALUE_LEN:
                self.fail(f"placement.labels.{key}",
                          f"expected printable text of at most {_MAX_LABEL_VALUE_LEN} characters")
            out[key] = val
        return {"node": node, "labels": out}

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
