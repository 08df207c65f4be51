"""Restart policies and jobs: the pure rules shared by the spec, the agent and the leader.

- `restart = "always" | "on-failure" | "never"` and `max_attempts` (runs in all, 0 = unlimited) decide what the
  agent does when a container exits (`decide_exit`). A service defaults to always/unlimited.
- `kind = "job"` runs to completion: exit 0 is "complete" and never restarted; a failure is retried under
  the policy (default on-failure, 3 attempts), then the replica is "dead". The leader does not reschedule a
  finished replica (not even when its node goes down) and does not charge its resources.
- A job runs once when deployed (and again when its spec changes: a new version), or once more per
  `POST /api/v1/services/{name}/run` (`orca run`). Each run has a number (`service["run"]`, op `job_run`);
  only the current run's allocations fill the slots; finished replicas of older runs are removed.
- `schedule = "*/5 * * * *"` (5-field cron, UTC; parsed by the croniter library) makes a periodic job: the
  leader's cron loop commits op `job_tick {name, tick}` for the newest scheduled time <= now that is later
  than the last committed tick (or the deploy time); apply accepts a tick only if it is newer, so a new
  leader after a failover neither repeats a committed tick nor skips the one in progress. Ticks missed
  while no leader existed are not run in bulk: the newest one runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESTART_POLICIES", "KINDS", "is_job", "finished", "decide_exit", "due_tick", "valid_schedule",
           "FINISHED"]

RESTART_POLICIES = ("always", "on-failure", "never")
KINDS = ("service", "job")
FINISHED = ("complete", "dead")  # final statuses of a replica: never restarted, never rescheduled


def is_job(spec: dict[str, Any] | None) -> bool:
    return (spec or {}).get("kind") == "job"


def finished(alloc: dict[str, Any]) -> bool:
    """The replica's container ended for good (complete, or dead after its attempts)."""
    return (alloc.get("observed") or {}).get("status") in FINISHED


def decide_exit(spec: dict[str, Any] | None, exit_code: int | None, runs: int) -> str:
    """What to do with a container that exited after `runs` runs: "restart", "complete" or "dead"."""
    spec = spec or {}
    policy = spec.get("restart") or ("on-failure" if is_job(spec) else "always")
    attempts = int(spec.get("max_attempts") or 0)
    if exit_code == 0 and (is_job(spec) or policy != "always"):
        return "complete"
    if policy == "never" or (attempts and runs >= attempts):
        return "complete" if exit_code == 0 else "dead"
    return "restart"


def valid_schedule(expr: str) -> bool:
    from croniter import croniter  # imported here: only specs with a schedule need it

    return len(expr.split()) == 5 and bool(croniter.is_valid(expr))


def due_tick(expr: str, after: float, now: float) -> float | None:
    """The newest scheduled time in (after, now], or None: what the leader's cron loop commits."""
    from croniter import croniter

    # get_prev excludes its start: start just past `now`'s second so a tick exactly at `now` counts.
    tick = float(croniter(expr, float(int(now)) + 1.0).get_prev(float))
    return tick if after < tick <= now else None
