"""What a service's `health` asks for, in one shape, for the agent's monitor and the leader's readiness.

A spec's `health` is either the original string form, an HTTP path (`"/healthz"`), or a table with exactly
one of `http = "/path"`, `tcp = PORT` (the service's published `port`) or `exec = ["cmd", ...]` (run inside
the container; exit 0 passes), plus timing:

  interval_s      seconds between checks (default 1; the monitor's round is 1 s, so whole seconds)
  timeout_s       seconds one check may take before it counts as failed (default 1)
  retries         consecutive failures that restart the container (liveness; default 3)
  start_period_s  failures in this many seconds after the container (re)starts do not count (default 0)

Readiness: a replica with a check is ready (for rollouts, drains and the ingress) once a check passed.
Pure module: no I/O, so the leader (orca.rollout) and the agent read the same rules.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULTS", "check_of", "has_check", "KINDS"]

KINDS = ("http", "tcp", "exec")
DEFAULTS: dict[str, Any] = {"interval_s": 1.0, "timeout_s": 1.0, "retries": 3, "start_period_s": 0.0}


def check_of(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The normalized check `{"kind", "target", interval_s, timeout_s, retries, start_period_s}` or None.

    `target` is the HTTP path, the port, or the command. A check that cannot run (http/tcp without a
    published port) is None, as before: such a spec is refused by orca.spec anyway.
    """
    health = (spec or {}).get("health")
    if not health:
        return None
    if isinstance(health, str):
        return {"kind": "http", "target": health, **DEFAULTS} if spec and spec.get("port") else None
    if not isinstance(health, dict):
        return None
    for kind in KINDS:
        target = health.get(kind)
        if target is not None:
            if kind != "exec" and not (spec or {}).get("port"):
                return None
            return {"kind": kind, "target": target,
                    **{k: health.get(k, default) for k, default in DEFAULTS.items()}}
    return None


def has_check(spec: dict[str, Any] | None) -> bool:
    return check_of(spec) is not None
