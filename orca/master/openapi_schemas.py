"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of the API's bodies: what `orca.master.openapi` puts
under `components.schemas`.

Each schema states the bounds the code enforces, taken from the constants the validators use
(`orca.spec`, `orca.protocol`, `orca.auth`, the handlers), so a bound changes in one place. Schemas
describe the *accepted* input; anything else gets a 4xx with the error envelope (`Error`). Cross-field
rules (`canary <= replicas`, `healthy_deadline_s > min_healthy_s`, ...) are in the descriptions:
JSON Schema cannot say them simply.
"""

from __future__ import annotations

from typing import Any

from orca import auth, bounds, protocol, spec
from orca.master import api, api_webhooks
from orca.master.api_secrets import SECRET_KEY_RE, SECRET_VALUE_MAX

__all__ = ["MAX_INT", "COMPONENTS", "ref", "ERROR_CODES"]

Schema = dict[str, Any]

# Every integer from the network is within +-2**53 (exactly representable in JSON parsers everywhere).
MAX_INT = bounds.MAX_INT

ERROR_CODES = ("VALIDATION_ERROR", "INVALID_SPEC", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "SERVICE_NOT_FOUND",
               "NODE_NOT_FOUND", "METHOD_NOT_ALLOWED", "CONFLICT", "STALE_LEADER", "PAYLOAD_TOO_LARGE",
               "RATE_LIMIT_EXCEEDED", "NOT_LEADER", "CLUSTER_NOT_READY", "INTERNAL")

_DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "maxLength": 63}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _number(*, minimum: float | None = None, exclusive_minimum: float | None = None,
            maximum: float | None = None, exclusive_maximum: float | None = None) -> Schema:
    out: Schema = {"type": "number"}
    for key, value in (("minimum", minimum), ("exclusiveMinimum", exclusive_minimum), ("maximum", maximum),
                       ("exclusiveMaximum", exclusive_maximum)):
        if value is not None:
            out[key] = value
    return out


def _int(lo: int = 0, hi: int = MAX_INT) -> Schema:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _string(max_length: int, min_length: int = 1, **extra: Any) -> Schema:
    return {"type": "string", "minLength": min_length, "maxLength": max_length, **extra}


_ERROR: Schema = {
    "type": "object",
    "description": "The error envelope: every 4xx and 5xx answer carries it (a 307 NOT_LEADER too).",
    "required": ["error", "code", "details", "timestamp"],
    "properties": {
        "error": {"type": "string", "description": "A human-readable message; never holds a secret."},
        "code": {"type": "string", "enum": list(ERROR_CODES)},
        "details": {"anyOf": [{"type": "object"}, {"type": "null"}],
                    "description": "Machine-readable context, e.g. {\"field\": \"replicas\"}."},
        "timestamp": {"type": "string", "format": "date-time"},
        "leader": {"type": "string", "description": "NOT_LEADER only: the leader's API URL."},
    },
}

_SCALING: Schema = {
    "type": "object",
    "additionalProperties": False,
    "description": "Autoscaling policy; every field optional (defaults filled). scale_in_threshold_pct must "
                   "be below scale_out_threshold_pct, max_replicas at least min_replicas.",
    "properties": {
        "mode": {"type": "string", "enum": list(spec.SCALING_MODES)},
        "min_replicas": _int(0, spec.MAX_REPLICAS),
        "max_replicas": _int(0, spec.MAX_REPLICAS),
        "target_rps_per_replica": _number(exclusive_minimum=0, maximum=spec._MAX_RATE),
        "max_p95_latency_ms": _number(exclusive_minimum=0, maximum=spec._MAX_RATE),
        "max_cpu_percent": _number(exclusive_minimum=0, maximum=100),
        "max_memory_percent": _number(exclusive_minimum=0, maximum=100),
        "scale_out_threshold_pct": _number(exclusive_minimum=0, maximum=spec._MAX_PCT),
        "scale_in_threshold_pct": _number(exclusive_minimum=0, maximum=spec._MAX_PCT),
        "window_seconds": _number(minimum=spec.MIN_WINDOW_SECONDS, maximum=spec._MAX_DURATION_S),
        "cooldown_seconds": _number(minimum=0, maximum=spec._MAX_DURATION_S),
    },
}

_SERVICE_SPEC: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "image"],
    "description": "One service. Unknown fields are refused (INVALID_SPEC naming the field); canary must be "
                   "at most replicas; a health check needs a port; update.healthy_deadline_s must exceed "
                   "update.min_healthy_s. env values may reference secrets as ${secrets.KEY}.",
    "properties": {
        "name": _DNS_LABEL,
        "project": _DNS_LABEL,
        "image": _string(1024, pattern=r"^\S+$"),
        "command": {"type": "array", "minItems": 1, "maxItems": spec._MAX_COMMAND_ARGS,
                    "items": {"type": "string", "maxLength": spec._MAX_ARG_LEN}},
        "replicas": _int(0, spec.MAX_REPLICAS),
        "port": _nullable(_int(1, 65535)),
        "domain": _nullable({"type": "string", "maxLength": 253,
                             "pattern": r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"}),
        "health": _nullable({"anyOf": [
            _string(2048, pattern=r"^/\S*$", description="an HTTP path (the plain form)"),
            {"type": "object", "additionalProperties": False,
             "description": "exactly one of http, tcp or exec, with optional timing",
             "properties": {
                 "http": _nullable(_string(2048, pattern=r"^/\S*$")),
                 "tcp": _nullable(_int(1, 65535)),
                 "exec": _nullable({"type": "array", "minItems": 1, "maxItems": spec._MAX_COMMAND_ARGS,
                                    "items": {"type": "string", "maxLength": spec._MAX_ARG_LEN}}),
                 "interval_s": _number(minimum=1, maximum=3600),
                 "timeout_s": _number(exclusive_minimum=0, maximum=60),
                 "retries": _int(1, 100),
                 "start_period_s": _number(minimum=0, maximum=spec._MAX_DURATION_S)}}]}),
        "env": {"type": "object", "maxProperties": spec._MAX_ENV,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": spec._MAX_ENV_KEY_LEN},
                "additionalProperties": {"type": "string", "maxLength": spec._MAX_ENV_VALUE_LEN}},
        "resources": {"type": "object", "additionalProperties": False, "properties": {
            "memory": {"anyOf": [_int(spec.MIN_MEMORY, spec.MAX_MEMORY),
                                 _string(64, description="a size such as '512Mi' (Ki, Mi, Gi, Ti, K, M, G, T)")]},
            "cpu": _number(minimum=spec.MIN_CPU, maximum=spec.MAX_CPU)}},
        "internal": {"type": "boolean"},
        "placement": {"type": "object", "additionalProperties": False, "properties": {
            "node": _nullable({"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"}),
            "labels": {"type": "object", "maxProperties": spec._MAX_LABELS,
                       "propertyNames": {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$"},
                       "additionalProperties": {"type": "string", "maxLength": 255}}}},
        "update": {"type": "object", "additionalProperties": False, "properties": {
            "max_parallel": _int(1, spec.MAX_REPLICAS),
            "min_healthy_s": _number(minimum=0, maximum=spec._MAX_DURATION_S),
            "healthy_deadline_s": _number(exclusive_minimum=0, maximum=spec._MAX_DURATION_S),
            "auto_revert": {"type": "boolean"}}},
        "canary": _int(0, spec.MAX_REPLICAS),
        "scaling": _nullable(ref("ScalingPolicy")),
        "canary_weight": _nullable(_number(exclusive_minimum=0, exclusive_maximum=1)),
        "read_only": {"type": "boolean", "description": "a read-only root filesystem"},
        "user": _nullable({"type": "string", "pattern": "^" + spec._USER_RE.pattern + "$",
                           "description": "user or user:group the container runs as (default: the image's)"}),
        "volumes": {"type": "array", "maxItems": spec.MAX_VOLUMES, "description":
                    "named volumes {name, path} (kept on their node) or bind mounts {host, path, read_only} of "
                    "host paths the agent allows", "items": {"anyOf": [
                        {"type": "object", "additionalProperties": False, "required": ["name", "path"],
                         "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,31}$"},
                                        "path": _string(1024, pattern=r"^/\S*$")}},
                        {"type": "object", "additionalProperties": False, "required": ["host", "path"],
                         "properties": {"host": _string(1024, pattern=r"^/\S*$"),
                                        "path": _string(1024, pattern=r"^/\S*$"),
                                        "read_only": {"type": "boolean"}}}]}},
        "kind": {"type": "string", "enum": ["service", "job"]},
        "restart": {"type": "string", "enum": ["always", "on-failure", "never"]},
        "max_attempts": _int(0, 1000),
        "schedule": _nullable(_string(100, description="5-field cron, UTC (jobs only)")),
        "registry_auth": _nullable(_string(300, pattern=r"^\$\{secrets\.[A-Za-z0-9_][A-Za-z0-9_.-]*\}$",
                                           description="a secret reference holding the pull credentials")),
        "depends_on": {"type": "array", "maxItems": 32, "items": _DNS_LABEL},
        "protocol": {"type": "string", "enum": list(spec.PROTOCOLS), "description":
                     "what the port speaks: http (the ingress may route it by domain) or tcp (no domain); "
                     "the mesh balances both per connection; default http"},
        "allow_from": {"type": "array", "maxItems": spec.MAX_ALLOW_FROM, "description":
                       "other projects whose containers may reach this service through the mesh ('*': all)",
                       "items": {"anyOf": [_DNS_LABEL, {"type": "string", "enum": ["*"]}]}},
    },
}

_ALLOC_REPORT: Schema = {
    "type": "object",
    "required": ["alloc", "service", "version", "status"],
    "properties": {
        "alloc": _string(protocol.MAX_STR), "service": _string(protocol.MAX_STR), "version": _int(),
        "container_id": _nullable({"type": "string", "maxLength": protocol.MAX_OPT_STR}),
        "status": {"type": "string", "enum": list(protocol.ALLOC_STATUSES)},
        "health": _nullable({"type": "string", "enum": list(protocol.HEALTH_STATES)}),
        "started_at": _nullable({"type": "string", "maxLength": protocol.MAX_OPT_STR}),
        "restarts": _int(), "reason": _nullable({"type": "string", "maxLength": protocol.MAX_OPT_STR}),
        "host_port": _nullable(_int(0, protocol.MAX_PORT)),
    },
}

_ID_KEYS = {"propertyNames": {"minLength": 1, "maxLength": protocol.MAX_ID}}

_PROXY_STATS: Schema = {
    "type": "object",
    "properties": {
        "requests": _int(), "errors": _int(), "active": _int(),
        "latency_buckets": {"type": "array", "items": _int(),
                            "maxItems": len(protocol.LATENCY_BUCKETS_MS) + 1},
        "latency_sum_ms": _number(minimum=0, maximum=MAX_INT),
        "replicas": {"type": "object", "maxProperties": protocol.MAX_PROXY_REPLICAS, **_ID_KEYS,
                     "additionalProperties": {"type": "object", "properties": {
                         "requests": _int(), "errors": _int(), "active": _int()}}},
    },
}

_HEARTBEAT: Schema = {
    "type": "object",
    "required": ["node_id"],
    "description": f"At most {protocol.HEARTBEAT_MAX_BYTES} bytes (413 beyond).",
    "properties": {
        "node_id": _string(protocol.MAX_STR),
        "seq": _int(),
        "allocations": {"type": "array", "maxItems": protocol.MAX_ALLOCS, "items": ref("AllocReport")},
        "applied": {"type": "object", "properties": {"term": _int(), "version": _int()}},
        "stats": {"type": "object", "maxProperties": protocol.MAX_STATS, **_ID_KEYS,
                  "additionalProperties": {"type": "object", "properties": {
                      "cpu_pct": _nullable(_number(minimum=0, maximum=protocol.MAX_PCT)),
                      "mem_pct": _nullable(_number(minimum=0, maximum=protocol.MAX_PCT))}}},
        "proxy": {"type": "object", "maxProperties": protocol.MAX_PROXY_SERVICES, **_ID_KEYS,
                  "additionalProperties": ref("ProxyStats")},
    },
}

_REGISTER: Schema = {
    "type": "object",
    "required": ["node_id", "address", "capacity", "push_token"],
    "properties": {
        "node_id": _string(protocol.MAX_STR),
        "address": _string(protocol.MAX_STR, pattern=r"^https?://", description="the agent API's URL"),
        "labels": {"type": "object", "maxProperties": protocol.MAX_LABELS, **_ID_KEYS,
                   "additionalProperties": {"type": "string", "maxLength": protocol.MAX_LABEL_VALUE}},
        "capacity": {"type": "object", "required": ["memory", "cpu"], "properties": {
            "memory": _int(1, protocol.MAX_MEMORY), "cpu": _number(exclusive_minimum=0, maximum=protocol.MAX_CPU)}},
        "push_token": _string(protocol.MAX_STR),
        "agent_version": _nullable({"type": "string", "maxLength": protocol.MAX_OPT_STR}),
        "publish_address": _nullable({"type": "string", "maxLength": protocol.MAX_OPT_STR}),
        "proxy": _nullable({"type": "string", "maxLength": protocol.MAX_OPT_STR}),
    },
}

_DEPLOY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["services"],
    "description": "A partial deploy: valid services are deployed, each invalid one is listed in `errors`.",
    "properties": {"services": {"type": "array", "minItems": 1, "items": ref("ServiceSpec")}},
}

_SCALE: Schema = {"type": "object", "additionalProperties": False, "required": ["replicas"],
                  "properties": {"replicas": _int(0, spec.MAX_REPLICAS)}}

_TOKEN_CREATE: Schema = {
    "type": "object", "additionalProperties": False, "required": ["role"],
    "description": "An agent token is bound to `node` (and named after it by default); a deployer token may "
                   "be scoped to `projects`.",
    "properties": {
        "role": {"type": "string", "enum": list(auth.ROLES)},
        "name": _string(128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"),
        "ttl_s": _nullable(_number(minimum=1, maximum=api.MAX_TOKEN_TTL_S)),
        "node": _nullable({"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"}),
        "projects": _nullable({"type": "array", "maxItems": 64, "items": _DNS_LABEL}),
    },
}

_SECRET_SET: Schema = {
    "type": "object", "additionalProperties": False, "required": ["key", "value"],
    "description": "Without grants a new secret is admin-only and an existing one keeps its grants.",
    "properties": {"key": {"type": "string", "pattern": SECRET_KEY_RE.pattern},
                   "value": {"type": "string", "maxLength": SECRET_VALUE_MAX},
                   "grants": _nullable(ref("SecretGrants"))},
}

_DRAIN: Schema = {
    "type": "object", "additionalProperties": False,
    "properties": {"deadline_s": _number(minimum=0, maximum=86400), "force": {"type": "boolean"}},
}

_WEBHOOK_CREATE: Schema = {
    "type": "object", "additionalProperties": False, "required": ["repo", "service"],
    "properties": {
        "repo": {"type": "string", "pattern": api_webhooks.REPO_RE.pattern},
        "service": _string(256),
        "branch": {"type": "string", "pattern": api_webhooks.BRANCH_RE.pattern},
        "secret": _string(256, 16, description="generated (and shown once) when omitted"),
    },
}

_SCALING_PUT: Schema = {
    "anyOf": [ref("ScalingPolicy"),
              {"type": "object", "additionalProperties": False, "required": ["scaling"],
               "properties": {"scaling": _nullable(ref("ScalingPolicy"))}}],
    "description": "The policy itself, or {\"scaling\": policy}; {\"scaling\": null} removes it.",
}

_GITHUB_PUSH: Schema = {
    "type": "object",
    "description": "GitHub's push event; only repository.full_name and ref are read, after the signature.",
    "properties": {"ref": {"type": "string"},
                   "repository": {"type": "object", "properties": {"full_name": {"type": "string"}}}},
}

_OBJECT: Schema = {"type": "object"}

# Secret grants (who may reference a secret from a spec).
_SECRET_GRANTS: Schema = {
    "type": "object", "additionalProperties": False,
    "description": "all_projects and projects exclude each other; {} makes the secret admin-only.",
    "properties": {"all_projects": {"type": "boolean"},
                   "projects": {"type": "array", "maxItems": 64, "items": _DNS_LABEL}},
}

# Join tokens: an agent exchanges one, once, for its node credential.
_JOIN_TOKEN_CREATE: Schema = {
    "type": "object", "additionalProperties": False,
    "properties": {"role": {"type": "string", "enum": ["worker"]},
                   "ttl_s": _nullable(_number(exclusive_minimum=0, maximum=365 * 24 * 3600)),
                   "node": _nullable({"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"}),
                   "rotate": {"type": "boolean"}},
}
_CSR = {"type": "string", "maxLength": 16 * 1024, "description": "a PEM certificate signing request (TLS clusters)"}
_HOST_NAMES = {"type": "array", "maxItems": 8, "items": {"type": "string", "pattern": r"^[A-Za-z0-9.:_-]{1,253}$"},
               "description": "the node's advertised host names or addresses"}
_JOIN: Schema = {
    "type": "object", "additionalProperties": False, "required": ["node_id", "nonce"],
    "properties": {"node_id": {"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"},
                   "nonce": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{32,128}$",
                             "description": "kept by the agent: a retry with the same nonce gets the same answer"},
                   "csr": _nullable(_CSR), "names": _nullable(_HOST_NAMES)},
}
_CERTIFICATE: Schema = {
    "type": "object", "additionalProperties": False, "required": ["csr"],
    "properties": {"csr": _CSR, "names": _nullable(_HOST_NAMES)},
}
_CA_ROTATE: Schema = {"type": "object", "additionalProperties": False,
                      "properties": {"overlap_s": _number(minimum=0, maximum=30 * 86400)}}
_CA_FINISH: Schema = {"type": "object", "additionalProperties": False,
                      "description": "force: finish although some node still presents the old CA's certificate",
                      "properties": {"force": {"type": "boolean"}}}
_RESTORE_BEGIN: Schema = {
    "type": "object", "additionalProperties": False, "required": ["header"],
    "properties": {"header": {"type": "object", "description": "the snapshot's header (its first line)"},
                   "force": {"type": "boolean"}},
}
_BINARY: Schema = {"type": "string", "contentMediaType": "application/octet-stream"}

COMPONENTS: dict[str, Schema] = {
    "Error": _ERROR,
    "ServiceSpec": _SERVICE_SPEC,
    "ScalingPolicy": _SCALING,
    "DeployRequest": _DEPLOY,
    "ScaleRequest": _SCALE,
    "TokenCreateRequest": _TOKEN_CREATE,
    "SecretSetRequest": _SECRET_SET,
    "DrainRequest": _DRAIN,
    "WebhookCreateRequest": _WEBHOOK_CREATE,
    "ScalingPutRequest": _SCALING_PUT,
    "GithubPush": _GITHUB_PUSH,
    "RegisterRequest": _REGISTER,
    "Heartbeat": _HEARTBEAT,
    "AllocReport": _ALLOC_REPORT,
    "ProxyStats": _PROXY_STATS,
    "Object": _OBJECT,
    "SecretGrants": _SECRET_GRANTS,
    "JoinTokenCreateRequest": _JOIN_TOKEN_CREATE,
    "EdgeHeartbeat": {
        "type": "object", "additionalProperties": False, "description": "Dory's heartbeat; every field optional",
        "properties": {"processor_id": _string(256), "node_id": _string(256), "role": _string(256),
                       "epoch": _nullable(_int()), "timestamp": _number(minimum=0), "status": _string(256),
                       "last_state_sync": _nullable(_number(minimum=0)), "state_size_bytes": _nullable(_int()),
                       "uptime_sec": _number(minimum=0)}},
    "EdgeNodeCreate": {
        "type": "object", "additionalProperties": False, "required": ["name", "organization_id"],
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"},
                       "organization_id": {"type": "string", "format": "uuid",
                                           "pattern": r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$"}}},
    "EdgeNodeDecommission": {
        "type": "object", "additionalProperties": False, "required": ["node_name"],
        "properties": {"node_name": {"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"}}},
    "MemberAdd": {
        "type": "object", "additionalProperties": False, "required": ["id", "raft", "api"],
        "properties": {"id": {"type": "string", "pattern": r"^[a-z0-9-]{1,63}$"},
                       "raft": _string(261, description="HOST:PORT the other masters connect to"),
                       "api": _string(2048, pattern=r"^https?://\S+$")}},
    "JoinRequest": _JOIN,
    "CertificateRequest": _CERTIFICATE,
    "CaRotateRequest": _CA_ROTATE,
    "CaFinishRequest": _CA_FINISH,
    "RestoreBeginRequest": _RESTORE_BEGIN,
    "Binary": _BINARY,
}
