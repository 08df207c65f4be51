"""Ops on GitHub webhooks: registration (secret sealed by the proposer) and deliveries.

A delivery is one entry: the replay checks, the branch match, the invocation record (last 10 per
webhook) and the redeploy happen atomically, so a retried delivery across a leader failover redeploys
once. Replays are refused by delivery id (`X-GitHub-Delivery` seen before) and by body: the same
webhook, event and body digest within `replay_window_s` of its first acceptance, a window the leader
puts in the entry with the time, so the verdict depends on the entry and the state only. Entries from
before body digests existed carry none and replay as they did.
"""

from __future__ import annotations

import hashlib
from typing import Any

from orca.errors import Conflict, Invalid, NotFound
from orca.state.core import Ctx, State, record_event
from orca.state.ops_services import make_current, new_version

__all__ = ["OPS", "INVOCATIONS_KEPT", "DELIVERIES_KEPT", "BODY_DIGESTS_KEPT"]

INVOCATIONS_KEPT = 10
DELIVERIES_KEPT = 2000
BODY_DIGESTS_KEPT = 4096  # beyond this many accepted bodies in one window the oldest is forgotten early


def _apply_register_webhook(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    hook_id, repo, service, branch = args["id"], args["repo"], args["service"], args["branch"]
    if not all(isinstance(v, str) and v for v in (hook_id, repo, service, branch)):
        raise Invalid("webhook needs id, repo, service and branch")
    if not isinstance(args.get("secret_ciphertext"), str):
        raise Invalid("webhook needs a sealed secret")
    if hook_id in state["webhooks"]:
        raise Conflict(f"webhook {hook_id} exists", {"id": hook_id})
    state["webhooks"][hook_id] = {"id": hook_id, "repo": repo, "service": service, "branch": branch,
                                  "secret_ciphertext": args["secret_ciphertext"], "created_at": ctx.now,
                                  "created_by": ctx.actor, "invocations": []}
    record_event(state, ctx, "webhook_registered", f"webhook {hook_id}: {repo}@{branch} -> {service}",
                 service=service)
    return {"id": hook_id, "repo": repo, "service": service, "branch": branch}


def _apply_remove_webhook(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    hook = state["webhooks"].pop(args["id"], None) if isinstance(args["id"], str) else None
    if hook is None:
        raise NotFound(f"webhook {args['id']!r} not found", {"id": args["id"]})
    record_event(state, ctx, "webhook_removed", f"webhook {hook['id']} removed", service=hook["service"])
    return {"id": hook["id"], "removed": True}


def _apply_webhook_delivery(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    hook = state["webhooks"].get(args["id"])
    if hook is None:
        raise NotFound(f"webhook {args['id']!r} not found", {"id": args["id"]})
    delivery, event, ref = str(args["delivery"]), str(args["event"]), args.get("ref")
    body_digest, window = args.get("body_digest"), args.get("replay_window_s")
    if body_digest is not None and not (isinstance(body_digest, str) and isinstance(window, int | float)):
        raise Invalid("body_digest needs a replay_window_s")
    seen = state.setdefault("webhook_deliveries", {})
    action, reason, version = "ignored", None, None
    body_key = f"{hook['id']}:{event}:{body_digest}"
    if delivery in seen:
        reason = "repeated delivery"
    elif body_digest is not None and _seen_body(state, body_key, ctx.now, float(window)):
        reason = "replayed body"
    else:
        seen[delivery] = ctx.now
        while len(seen) > DELIVERIES_KEPT:
            del seen[next(iter(seen))]
        if body_digest is not None:
            bodies = state.setdefault("webhook_bodies", {})
            bodies[body_key] = ctx.now
            while len(bodies) > BODY_DIGESTS_KEPT:
                del bodies[next(iter(bodies))]
    if reason is not None:
        pass
    elif event == "ping":
        action = "pong"
    elif event != "push":
        reason = f"event {event!r} is not handled"
    elif ref != f"refs/heads/{hook['branch']}":
        reason = f"ref {ref!r} is not refs/heads/{hook['branch']}"
    elif hook["service"] not in state["services"]:
        reason = f"service {hook['service']!r} does not exist"
    else:
        svc = state["services"][hook["service"]]
        # Same spec, new revision: the image (a moving tag) is pulled again and rolled out like any version.
        spec = {**svc["spec"], "pull_policy": "always", "revision": delivery}
        digest = hashlib.sha256(f"{svc['digest']}:{delivery}".encode()).hexdigest()[:16]
        version = new_version(svc, spec, digest, ctx)
        svc["state"] = "running"
        svc["canary"] = None
        make_current(state, svc, version, ctx, reason=f"webhook {hook['id']} push {delivery}")
        action = "redeployed"
        record_event(state, ctx, "webhook_redeploy", f"{svc['name']} redeployed as version {version} by push "
                     f"to {hook['repo']}@{hook['branch']}", service=svc["name"], details={"delivery": delivery})
    hook["invocations"].append({"delivery": delivery, "event": event, "ref": ref, "at": ctx.now, "action": action,
                                "reason": reason, "version": version})
    del hook["invocations"][:-INVOCATIONS_KEPT]
    return {"id": hook["id"], "action": action, "reason": reason, "version": version, "delivery": delivery}


def _seen_body(state: State, key: str, now: float, window: float) -> bool:
    """Whether this body was accepted within the window; forgets bodies whose window has passed."""
    bodies = state.setdefault("webhook_bodies", {})
    while bodies:
        oldest = next(iter(bodies))
        if now - bodies[oldest] < window:
            break
        del bodies[oldest]
    at = bodies.get(key)
    return at is not None and now - at < window


OPS = {
    "register_webhook": _apply_register_webhook,
    "remove_webhook": _apply_remove_webhook,
    "webhook_delivery": _apply_webhook_delivery,
}
