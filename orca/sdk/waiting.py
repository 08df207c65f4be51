"""Waiting for the cluster to get somewhere: a deploy to converge, a drain to finish.

`is_converged` and `rollout_failure` are pure functions of a service detail, so the CLI and tests judge
a detail exactly as the wait does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from orca.sdk.errors import ApiError
from orca.sdk.transport import Transport

__all__ = ["WaitingMixin", "is_converged", "rollout_failure"]


def _ready(container: dict[str, Any]) -> bool:
    return container.get("status") == "running" and container.get("health") in (None, "healthy")


def is_converged(detail: dict[str, Any]) -> bool:
    """Whether a service detail (`GET /services/{name}`) shows the service where its spec wants it.

    Every desired replica running and healthy, and every container of the current version: during a
    rolling update the old version's replicas count as running too, so counts alone would say "done"
    before the new version has started. With a canary, the stable set at the current version and the
    canary's replicas at its version, every one running and healthy. A service scaled to 0 (or stopped)
    is done once its containers are gone.
    """
    if detail.get("kind") == "job":  # a job is where its spec wants it once its run ended (or waits for a tick)
        return detail.get("status") in ("complete", "failed", "waiting", "stopped")
    replicas = detail.get("replicas") or {}
    desired = int(replicas.get("desired") or 0)
    containers = detail.get("containers") or []
    version = detail.get("version")
    canary = detail.get("canary")
    if detail.get("status") == "stopped" or (desired == 0 and not canary):
        return not containers
    if isinstance(canary, dict) and canary.get("version") is not None:
        wanted = int(canary.get("replicas") or 0)
        stable = [c for c in containers if c.get("version") == version]
        canaries = [c for c in containers if c.get("version") == canary["version"]]
        return (len(stable) == desired and len(canaries) == wanted and len(containers) == desired + wanted
                and all(_ready(c) for c in containers))
    return (int(replicas.get("running") or 0) == desired and int(replicas.get("healthy") or 0) == desired
            and len(containers) == desired and all(c.get("version") == version for c in containers))


def _progress_key(detail: dict[str, Any]) -> Any:
    """What a progress report shows; a new report is due when this changes."""
    replicas = detail.get("replicas") or {}
    rollout = detail.get("rollout") or {}
    canary = detail.get("canary") or {}
    return (detail.get("version"), detail.get("status"), detail.get("pending_reason"),
            tuple(sorted(replicas.items())),
            (rollout.get("version"), rollout.get("state"), rollout.get("reverted_from")),
            (canary.get("version"), canary.get("replicas")),
            tuple((c.get("alloc"), c.get("version"), c.get("status"), c.get("health"), c.get("reason"))
                  for c in detail.get("containers") or []))


def _drain_key(node: dict[str, Any]) -> Any:
    drain = node.get("drain") or {}
    return (node.get("status"), node.get("eligibility"), drain.get("remaining"), drain.get("migrated"),
            drain.get("failed"), drain.get("complete"))


def _has_version(detail: dict[str, Any], version: int) -> bool:
    """Whether this detail already knows `version`: as current (or past it), or as the running canary."""
    current = detail.get("version")
    canary = detail.get("canary") or {}
    return (isinstance(current, int) and current >= version) or canary.get("version") == version


def _event_details(detail: dict[str, Any], type_: str, version: Any) -> dict[str, Any]:
    """The details of the newest event of `type_` about `version` in the detail's recent events."""
    for event in reversed(detail.get("events") or []):
        details = event.get("details") if isinstance(event, dict) else None
        if event.get("type") == type_ and isinstance(details, dict) and details.get("version") == version:
            return details
    return {}


def rollout_failure(name: str, detail: dict[str, Any], expect_version: int | None) -> ApiError | None:
    """`ROLLOUT_HALTED` / `ROLLOUT_REVERTED` when the detail shows the rollout of `expect_version` (or of
    a later version) halted or auto-reverted; None while it rolls or when it went through.

    A halted rollout of version V with `auto_revert` is replaced at once by a new rollout (of the
    revert version R, the old spec) carrying `reverted_from: V`, and that one may end "done": so a
    revert shows as `reverted_from`, whatever the state of the rollout that carries it.
    """
    rollout = detail.get("rollout")
    if not isinstance(rollout, dict):
        return None
    current = detail.get("version")
    expect = current if expect_version is None else expect_version
    if not isinstance(expect, int):
        return None
    reverted_from = rollout.get("reverted_from")
    if reverted_from is not None and (reverted_from == expect or (isinstance(current, int) and current > expect)):
        halt = _event_details(detail, "rollout_halted", reverted_from)
        revert = _event_details(detail, "rollout_reverted", rollout.get("version"))
        spec_of = revert.get("spec_of")
        if spec_of is None:  # the events scrolled away: the rollout's reason says "auto-revert to version N"
            found = re.search(r"version (\d+)", str(rollout.get("reason") or ""))
            spec_of = int(found.group(1)) if found else None
        message = (f"{name}: rollout of v{reverted_from} halted: {halt.get('reason') or 'not healthy in time'}"
                   f"; auto-reverted to v{rollout.get('version')}"
                   + (f" (spec of v{spec_of})" if spec_of is not None else ""))
        if rollout.get("state") == "halted":
            message += f", which halted too: {rollout.get('reason') or 'no reason given'}"
        return ApiError(0, "ROLLOUT_REVERTED", message, detail, detail)
    version = rollout.get("version")
    if rollout.get("state") == "halted" and isinstance(version, int) and version >= expect:
        return ApiError(0, "ROLLOUT_HALTED", f"{name}: rollout of v{version} halted: "
                        f"{rollout.get('reason') or 'no reason given'}", detail, detail)
    return None



class WaitingMixin(Transport):
    """`wait_converged` and `wait_drained` of a client (they read through `service` and `node`)."""

    def wait_converged(self, name: str, timeout_s: float, on_progress: Callable[[dict[str, Any]], Any] | None = None,
                       *, expect_version: int | None = None, interval_s: float = 0.5,
                       fail_after_s: float | None = 15.0) -> dict[str, Any]:
        """Poll `service(name)` until `is_converged`, and return that last detail.

        `expect_version` is the version the deploy answered (its `versions[name]`): a detail that does not
        know it yet (a follower behind the leader) is re-read from the leader and never counts as
        converged. `on_progress(detail)` is called with the first detail and then whenever what it shows
        changes (counts, pending reason, rollout state, a container's status, health or reason).

        Raises `ApiError` with status 0 and code:
        - `ROLLOUT_HALTED` when the rollout of `expect_version` (default: the version first seen) or a
          later one halted (not healthy within `healthy_deadline_s`) and was not reverted;
        - `ROLLOUT_REVERTED` when it halted and was auto-reverted: the service now runs a new version
          with the old spec, so this is a failure even once that revert is done;
        - `FAILED` once every replica of the newest version has reported `failed` for `fail_after_s`
          without a break (None never gives up early);
        - `TIMEOUT` after `timeout_s`.
        The details (and body) are the last detail. Either way the cluster keeps going: giving up here only
        ends the wait.
        """
        deadline = time.monotonic() + timeout_s
        last_key: Any = object()
        failed_since: float | None = None
        consistent = False
        expect = expect_version
        while True:
            try:
                detail = self.service(name, consistent=consistent)
            except ApiError as err:
                # Just deployed through the leader, asked a follower that has not applied it yet.
                if err.code != "SERVICE_NOT_FOUND" or consistent:
                    raise
                consistent = True
                continue
            stale = expect is not None and not _has_version(detail, expect)
            if stale and not consistent:
                consistent = True
                continue
            consistent = False
            if expect is None and isinstance(detail.get("version"), int):
                expect = detail["version"]
            key = _progress_key(detail)
            if key != last_key:
                last_key = key
                if on_progress is not None:
                    on_progress(detail)
            if not stale:
                failure = rollout_failure(name, detail, expect)
                if failure is not None:
                    raise failure
                if is_converged(detail):
                    return detail
            now = time.monotonic()
            canary = detail.get("canary") or {}
            newest = canary.get("version") if canary.get("version") is not None else detail.get("version")
            current = [c for c in detail.get("containers") or [] if c.get("version") == newest]
            if current and all(c.get("status") == "failed" for c in current):
                failed_since = now if failed_since is None else failed_since
                if fail_after_s is not None and now - failed_since >= fail_after_s:
                    reasons = sorted({str(c.get("reason") or "no reason given") for c in current})
                    raise ApiError(0, "FAILED", f"every replica of {name} v{newest} failed: "
                                   f"{'; '.join(reasons)}", detail, detail)
            else:
                failed_since = None
            if now >= deadline:
                replicas = detail.get("replicas") or {}
                raise ApiError(0, "TIMEOUT", f"{name} did not converge within {timeout_s:g} s "
                               f"({replicas.get('running', 0)}/{replicas.get('desired', 0)} running, "
                               f"{replicas.get('healthy', 0)}/{replicas.get('desired', 0)} healthy)",
                               detail, detail)
            time.sleep(max(0.0, min(interval_s, deadline - now)))

    def wait_drained(self, node_id: str, timeout_s: float, on_progress: Callable[[dict[str, Any]], Any] | None = None,
                     *, interval_s: float = 0.5) -> dict[str, Any]:
        """Poll `node(node_id)` until its drain is complete (no orca container left there), and return
        that node.

        `on_progress(node)` is called with the first node and then whenever its status, eligibility or
        drain counts change. Raises `ApiError` (status 0, details and body the last node) with code
        `TIMEOUT` after `timeout_s`, or `NOT_DRAINING` when the leader says the node has no drain (it was
        undrained meanwhile, or never drained); `NODE_NOT_FOUND` when it was removed.
        """
        deadline = time.monotonic() + timeout_s
        last_key: Any = object()
        consistent = False
        while True:
            node = self.node(node_id, consistent=consistent)
            drain = node.get("drain")
            if not isinstance(drain, dict):
                if not consistent:  # a follower that has not applied the drain yet: ask the leader
                    consistent = True
                    continue
                raise ApiError(0, "NOT_DRAINING", f"node {node_id} is not draining "
                               f"(eligibility {node.get('eligibility')})", node, node)
            consistent = False
            key = _drain_key(node)
            if key != last_key:
                last_key = key
                if on_progress is not None:
                    on_progress(node)
            if drain.get("complete"):
                return node
            now = time.monotonic()
            if now >= deadline:
                raise ApiError(0, "TIMEOUT", f"node {node_id} did not finish draining within {timeout_s:g} s "
                               f"({drain.get('remaining', '?')} remaining, {drain.get('migrated', 0)} migrated, "
                               f"{drain.get('failed', 0)} failed)", node, node)
            time.sleep(max(0.0, min(interval_s, deadline - now)))
