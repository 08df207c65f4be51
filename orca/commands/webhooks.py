"""`orca webhooks add|list|remove`: GitHub webhooks; a push redeploys a service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import _age, _cell, _client, _emit, format_table

__all__ = ["add_parsers", "WEBHOOK_HEADERS", "webhook_rows", "cmd_webhooks_add", "cmd_webhooks_list",
           "cmd_webhooks_remove"]

WEBHOOK_HEADERS = ["ID", "REPO", "BRANCH", "SERVICE", "LAST-DELIVERY", "RESULT"]


_SECRET_KEYS = ("secret", "secret_ciphertext")


def _invocation_result(inv: dict[str, Any]) -> str:
    action = inv.get("action")
    if action == "redeployed":
        return f"redeployed v{_cell(inv.get('version'))}" if inv.get("version") is not None else "redeployed"
    if action == "ignored" and inv.get("reason"):
        return f"ignored: {inv['reason']}"
    return _cell(action)


def webhook_rows(hooks: list[dict[str, Any]], now: float | None = None) -> list[list[Any]]:
    rows = []
    for h in hooks:
        invocations = [i for i in h.get("invocations") or [] if isinstance(i, dict)]
        last = max(invocations, key=lambda i: str(i.get("at") or "")) if invocations else None
        rows.append([h.get("id"), h.get("repo"), h.get("branch"), h.get("service"),
                     _age(last.get("at"), now) if last else None, _invocation_result(last) if last else None])
    return rows


def cmd_webhooks_add(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.add_webhook(args.repo, args.service, args.branch, args.secret)
        api = client.apis[0].strip().rstrip("/")

    def human() -> str:
        return "\n".join([
            f"registered webhook {result.get('id')}: a push to {result.get('repo', args.repo)}@"
            f"{result.get('branch', args.branch)} redeploys {result.get('service', args.service)}",
            f"secret: {result.get('secret')}",
            "",
            "The secret is shown only this once. In GitHub: the repository > Settings > Webhooks > Add webhook:",
            f"  Payload URL:   {api}/api/v1/webhooks/github   (any master; it must be reachable from GitHub)",
            "  Content type:  application/json",
            "  Secret:        the secret above",
            "  Events:        just the push event",
        ])

    _emit(args, result, human, sys.stdout)
    return 0


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        hooks = [{k: v for k, v in h.items() if k not in _SECRET_KEYS} for h in client.webhooks()]
    _emit(args, {"webhooks": hooks},
          lambda: format_table(WEBHOOK_HEADERS, webhook_rows(hooks)) if hooks else "no webhooks", sys.stdout)
    return 0


def cmd_webhooks_remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.remove_webhook(args.id)
    _emit(args, result, lambda: f"removed webhook {args.id}", sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("webhooks", parents=[common], help="GitHub webhooks: a push redeploys a service")
    hooks = p.add_subparsers(dest="webhooks_verb", metavar="ACTION", required=True)
    p = verb(hooks, "add", cmd_webhooks_add, "register a webhook; prints its secret once, to paste into GitHub")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the GitHub repository")
    p.add_argument("--service", required=True, help="the service a push redeploys (image re-pulled)")
    p.add_argument("--branch", default="main", help="only pushes to this branch (default main)")
    p.add_argument("--secret", help="16-256 characters (default: generated)")
    verb(hooks, "list", cmd_webhooks_list, "registered webhooks and their last delivery (never the secret)")
    p = verb(hooks, "remove", cmd_webhooks_remove, "remove a webhook")
    p.add_argument("id", metavar="ID")
