"""Orchestry's application model mapped onto orca's one model (pure: no I/O, no clock unless passed in).

An Orchestry app *is* an orca service; nothing here is stored anywhere else:

    metadata.name    -> the service name          metadata.labels -> the spec's `labels`
    spec.image       -> spec `image`              spec.ports[0]   -> spec `port` (HTTP, proxied by orca)
    scaling.*        -> the spec's `scaling` policy (camelCase here, snake_case in orca)

The reverse mapping (`app_spec`) rebuilds the App document from the stored service spec, so
`GET /api/v1/apps/{app}/spec` answers what orca runs, not a copy that could drift from it.

Also here, because the handlers and the client both need them and they are pure: the error titles of
Orchestry's envelope, relative `since` values (`1h`, `1d`, ISO-8601), event categories, and log lines
to Orchestry's JSON shape.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from orca import spec as orca_spec
from orca.errors import Conflict, Invalid, InvalidSpec, NotFound, NotLeader, OrcaError, RateLimited

__all__ = [
    "AppNotFound", "AppAlreadyExists", "ScalingInProgress", "InsufficientResources", "to_orchestry_error",
    "service_spec", "app_spec", "policy_view", "policy_from_body", "parse_since", "parse_interval",
    "event_category", "event_details", "EVENT_CATEGORIES", "app_status", "log_entry",
]

API_VERSION = "v1"
KIND = "App"
DEFAULT_TYPE = "http"


class AppNotFound(NotFound):
    code = "APP_NOT_FOUND"


class AppAlreadyExists(Conflict):
    code = "APP_ALREADY_EXISTS"


class ScalingInProgress(Conflict):
    code = "SCALING_IN_PROGRESS"


class InsufficientResources(OrcaError):
    status = 503
    code = "INSUFFICIENT_RESOURCES"


# Orchestry's envelope: `error` is a short title, `details` a sentence (orca's own routes keep an object).
TITLES = {
    "APP_NOT_FOUND": "Application not found",
    "APP_ALREADY_EXISTS": "Application already registered",
    "INVALID_SPEC": "Invalid application specification",
    "SCALING_IN_PROGRESS": "Scaling operation in progress",
    "INSUFFICIENT_RESOURCES": "Not enough system resources",
    "VALIDATION_ERROR": "Request validation failed",
    "RATE_LIMIT_EXCEEDED": "Rate limit exceeded",
    "CLUSTER_NOT_READY": "No leader elected, cluster not ready",
}


def to_orchestry_error(err: OrcaError, app: str | None) -> OrcaError:
    """The same error with Orchestry's code and envelope: a missing service is APP_NOT_FOUND, `error` is
    the title and `details` the sentence. Redirects and rate limits keep their own headers and shape."""
    if isinstance(err, NotLeader | RateLimited):
        return err
    if err.code in ("SERVICE_NOT_FOUND", "NOT_FOUND") and app is not None:
        found = AppNotFound(TITLES["APP_NOT_FOUND"])
        found.details = f"Application '{app}' does not exist"  # type: ignore[assignment]
        return found
    title = TITLES.get(err.code)
    if title is not None and not isinstance(err.details, str):
        err.details = err.message  # type: ignore[assignment]
        err.message = title
    return err


# --- the App spec ---------------------------------------------------------------------------------

_APP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "scaling"})
_METADATA_FIELDS = frozenset({"name", "labels"})
_SPEC_FIELDS = frozenset({"type", "image", "ports"})
_PORT_FIELDS = frozenset({"containerPort", "protocol"})
# camelCase (the App document) -> orca's policy field
SCALING_NAMES: dict[str, str] = {
    "mode": "mode", "minReplicas": "min_replicas", "maxReplicas": "max_replicas",
    "targetRPSPerReplica": "target_rps_per_replica", "maxP95LatencyMs": "max_p95_latency_ms",
    "maxCPUPercent": "max_cpu_percent", "maxMemoryPercent": "max_memory_percent",
    "scaleOutThresholdPct": "scale_out_threshold_pct", "scaleInThresholdPct": "scale_in_threshold_pct",
    "windowSeconds": "window_seconds", "cooldownSeconds": "cooldown_seconds",
}
_SCALING_BACK = {v: k for k, v in SCALING_NAMES.items()}


def _fail(field: str, message: str) -> InvalidSpec:
    return InvalidSpec(f"{field}: {message}", {"field": field})


def _object(raw: object, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(field, "expected an object")
    for key in raw:
        if key not in allowed:
            raise _fail(f"{field}.{key}" if isinstance(key, str) and len(key) <= 64 else field,
                        f"unknown field; expected one of {', '.join(sorted(allowed))}")
    return raw


def service_spec(app: object, replicas: int = 0) -> dict[str, Any]:
    """An App document -> the orca service spec that runs it (validated and normalized by `orca.spec`).

    Raises `InvalidSpec` naming the App field. A registered app runs nothing until it is started, hence
    `replicas` 0 by default.
    """
    doc = _object(app, "app", _APP_FIELDS)
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        raise _fail("apiVersion", f"expected {API_VERSION!r}")
    if doc.get("kind", KIND) != KIND:
        raise _fail("kind", f"expected {KIND!r}")
    meta = _object(doc.get("metadata"), "metadata", _METADATA_FIELDS)
    if "name" not in meta:
        raise _fail("metadata.name", "required")
    body = _object(doc.get("spec"), "spec", _SPEC_FIELDS)
    if body.get("type", DEFAULT_TYPE) != DEFAULT_TYPE:
        raise _fail("spec.type", "only 'http' apps are supported (orca proxies HTTP)")
    ports = body.get("ports", [])
    if not isinstance(ports, list) or len(ports) > 1:
        raise _fail("spec.ports", "expected a list of at most one port (orca routes one port per service)")
    port = None
    if ports:
        entry = _object(ports[0], "spec.ports[0]", _PORT_FIELDS)
        if str(entry.get("protocol", "HTTP")).upper() != "HTTP":
            raise _fail("spec.ports[0].protocol", "only 'HTTP' is supported")
        port = entry.get("containerPort")
        if port is None:
            raise _fail("spec.ports[0].containerPort", "required")
    raw: dict[str, Any] = {"name": meta["name"], "image": body.get("image"), "replicas": replicas}
    if port is not None:
        raw["port"] = port
    if meta.get("labels"):
        raw["labels"] = meta["labels"]
    if doc.get("scaling") is not None:
        raw["scaling"] = _policy_from_camel(doc["scaling"])
    try:
        return orca_spec.validate_service(raw)
    except InvalidSpec as err:
        raise _fail(_app_field(str((err.details or {}).get("field") or "spec")), err.message.split(": ", 1)[-1]) \
            from None


def _app_field(orca_field: str) -> str:
    """Name an orca spec field as the App document does, so the error points at what the user wrote."""
    head, _, rest = orca_field.partition(".")
    if head == "name":
        return "metadata.name"
    if head == "labels":
        return "metadata." + orca_field
    if head == "image":
        return "spec.image"
    if head == "port":
        return "spec.ports[0].containerPort"
    if head == "scaling" and rest:
        return "scaling." + _SCALING_BACK.get(rest, rest)
    return orca_field


def _policy_from_camel(raw: object) -> dict[str, Any]:
    table = _object(raw, "scaling", frozenset(SCALING_NAMES))
    return {SCALING_NAMES[k]: v for k, v in table.items()}


def app_spec(svc_spec: dict[str, Any]) -> dict[str, Any]:
    """The App document of a stored (normalized) service spec."""
    out: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": svc_spec["name"], "labels": dict(svc_spec.get("labels") or {})},
        "spec": {"type": DEFAULT_TYPE, "image": svc_spec.get("image"),
                 "ports": [] if svc_spec.get("port") is None
                 else [{"containerPort": svc_spec["port"], "protocol": "HTTP"}]},
    }
    policy = svc_spec.get("scaling") or {"mode": "manual",
                                         "min_replicas": orca_spec.SCALING_DEFAULTS["min_replicas"],
                                         "max_replicas": orca_spec.SCALING_DEFAULTS["max_replicas"]}
    out["scaling"] = {_SCALING_BACK[k]: _num(v) for k, v in policy.items() if k in _SCALING_BACK}
    return out


def _num(value: Any) -> Any:
    """3.0 -> 3: orca normalizes policy numbers to floats; the document writes whole numbers as integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# --- the scaling policy ---------------------------------------------------------------------------

def policy_view(scaling: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(mode, policy) as `GET .../scaling` shows them; no stored policy reads as orca's manual defaults."""
    full = {**orca_spec.SCALING_DEFAULTS, **(scaling or {})}
    return str(full["mode"]), {k: _num(v) for k, v in full.items() if k != "mode"}


def policy_from_body(body: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """`PUT .../scaling` body (snake_case fields, optional `mode`, or `{"policy": {...}}`) merged over the
    current policy, validated by `orca.spec`."""
    raw = dict(body)
    nested = raw.pop("policy", None)
    if nested is not None:
        if not isinstance(nested, dict):
            raise Invalid("policy: expected an object", {"field": "policy"})
        raw.update(nested)
    merged = {**(current or {}), **raw}
    return orca_spec.validate_scaling(merged)


# --- time filters ---------------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_interval(raw: str, field: str = "interval") -> float:
    """`30s`, `5m`, `1h`, `1d`, `1w` -> seconds (positive)."""
    match = _RELATIVE.fullmatch(raw.strip()) if raw.isascii() else None
    if match is None or int(match.group(1)) == 0:
        raise Invalid(f"{field}: expected a duration like 5m, 1h or 1d", {"field": field})
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def parse_since(raw: str, now: float, field: str = "since") -> float:
    """`since` as Orchestry writes it: a relative age (`1h`, `1d`) or an ISO-8601 time -> epoch seconds."""
    if len(raw) > 64:
        raise Invalid(f"{field}: expected a duration (1h, 1d) or an ISO-8601 time", {"field": field})
    if raw.isascii() and _RELATIVE.fullmatch(raw.strip()):
        return now - parse_interval(raw, field)
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{field}: expected a duration (1h, 1d) or an ISO-8601 time", {"field": field}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


# --- events, status, logs -------------------------------------------------------------------------

EVENT_CATEGORIES = ("scaling", "health", "config", "error", "lifecycle")
_CATEGORY = {
    "service_scaled": "scaling", "autoscaled": "scaling",
    "scaling_set": "config", "service_deployed": "config", "service_updated": "config",
    "canary_promoted": "config", "canary_dropped": "config", "service_rollback": "config",
    "webhook_redeploy": "config", "rollout_done": "config",
    "rollout_halted": "error", "rollout_reverted": "error",
    "service_started": "lifecycle", "service_stopped": "lifecycle", "service_purged": "lifecycle",
    "replicas_placed": "lifecycle",
}


def event_category(orca_type: str) -> str:
    """Orchestry's event type (scaling, health, config, error) of an orca event type; the rest is lifecycle."""
    if "health" in orca_type:
        return "health"
    if "fail" in orca_type or "error" in orca_type:
        return "error"
    return _CATEGORY.get(orca_type, "lifecycle")


def event_details(orca_type: str, details: dict[str, Any]) -> dict[str, Any]:
    """orca's event details, plus Orchestry's names for a scaling event's figures."""
    if event_category(orca_type) != "scaling":
        return dict(details)
    figures = details.get("figures") or {}
    return {**details, "previous_replicas": details.get("previous"), "new_replicas": details.get("replicas"),
            "trigger": details.get("reason") or "manual", "cpu_percent": figures.get("cpu_pct")}


def app_status(orca_status: str, desired: int) -> str:
    """Orchestry's app status of orca's service status: a registered app runs 0 replicas: stopped."""
    if orca_status == "stopped" or desired == 0:
        return "stopped"
    if orca_status in ("running", "degraded"):
        return "running"
    return orca_status  # "pending": placed but nothing runs yet


_LEVEL = re.compile(r"\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|FATAL)\b", re.IGNORECASE)
_LEVEL_NAME = {"WARNING": "WARN", "ERR": "ERROR", "CRITICAL": "ERROR", "FATAL": "ERROR", "NOTICE": "INFO"}
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))\s")


def log_entry(line: str, container: str) -> dict[str, Any]:
    """One log line -> `{timestamp, container, level, message}`.

    The timestamp is the one Docker stamps on the line (the agent asks for it) or one the line starts
    with; None when neither is there. The level is the first level word in the line, else INFO.
    """
    timestamp = None
    stamp = _STAMP.match(line)
    if stamp is not None:
        try:
            when = dt.datetime.fromisoformat(_trim_fraction(stamp.group(1)).replace("Z", "+00:00"))
            timestamp = when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            line = line[stamp.end():]
        except ValueError:
            pass
    level = _LEVEL.search(line[:200])
    name = level.group(1).upper() if level else "INFO"
    return {"timestamp": timestamp, "container": container, "level": _LEVEL_NAME.get(name, name),
            "message": line.rstrip("\n")}


def _trim_fraction(stamp: str) -> str:
    """Docker writes nanoseconds; Python parses at most microseconds."""
    return re.sub(r"\.(\d{6})\d+", r".\1", stamp)
