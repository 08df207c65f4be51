"""`orca status`, `scale`, `stop`, `start`, `ps`, `history`: look at and steer deployed services."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import UsageError, _client, add_yes, confirm
from orca.commands.output import _age, _cell, _emit, add_quiet, emit_list, format_table

__all__ = ["add_parsers", "STATUS_HEADERS", "PS_HEADERS", "HISTORY_HEADERS", "status_rows", "ps_rows",
           "history_rows", "cmd_status", "cmd_scale", "cmd_stop", "cmd_start", "cmd_ps", "cmd_history"]


def status_rows(services: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per service for the status table (split out so it is testable without a server)."""
    rows = []
    for s in services:
        rows.append([s.get("name"), s.get("project"), s.get("status"),
                     f"{s.get('running_replicas', 0)}/{s.get('replicas', 0)}", s.get("healthy_replicas"),
                     s.get("image"), s.get("version"), s.get("pending_reason")])
    return rows


STATUS_HEADERS = ["NAME", "PROJECT", "STATUS", "REPLICAS", "HEALTHY", "IMAGE", "VERSION", "PENDING"]


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        services = client.status(args.project)

    wide = (["KIND", "DOMAIN", "ROLLOUT", "UPDATED"],
            [[s.get("kind", "service"), s.get("domain"), s.get("rollout"), _age(s.get("updated_at"))]
             for s in services])
    emit_list(args, {"services": services}, STATUS_HEADERS, status_rows(services),
              ids=[s.get("name") for s in services], empty="no services", wide=wide)
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise UsageError("replicas must be >= 0")
    with _client(args) as client:
        result = client.scale(args.name, args.replicas)
    _emit(args, result, lambda: (f"scaled {result.get('name', args.name)}: "
                                 f"{_cell(result.get('previous_replicas'))} -> "
                                 f"{result.get('replicas', args.replicas)}"), sys.stdout)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    given = [x for x in (args.name, args.project, args.all or None) if x]
    if len(given) != 1:
        raise UsageError("stop takes exactly one of: NAME, --project P, --all")
    if args.purge and not args.name:
        raise UsageError("--purge applies to one service: orca stop NAME --purge")
    if args.all:
        confirm(args, "stop every service of the cluster")
    elif args.project:
        confirm(args, f"stop every service of project {args.project}")
    elif args.purge:
        confirm(args, f"forget service {args.name} and remove its named volumes")
    with _client(args) as client:
        if args.name:
            result = client.stop(args.name, purge=args.purge)
            what = f"{'purged' if args.purge else 'stopped'} {args.name}"
        elif args.project:
            result = client.stop_project(args.project)
            what = f"stopped project {args.project}"
        else:
            result = client.stop_all()
            what = "stopped every service"
    _emit(args, result, lambda: what, sys.stdout)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.start(args.name)
    _emit(args, result, lambda: f"started {args.name}", sys.stdout)
    return 0


PS_HEADERS = ["ALLOC", "INDEX", "NODE", "VERSION", "STATUS", "HEALTH", "STARTED", "RESTARTS", "PORT", "REASON"]


def ps_rows(detail: dict[str, Any]) -> list[list[Any]]:
    return [[c.get("alloc"), c.get("index"), c.get("node"), c.get("version"), c.get("status"), c.get("health"),
             _age(c.get("started_at")), c.get("restarts"), c.get("host_port"), c.get("reason")]
            for c in detail.get("containers") or []]


def cmd_ps(args: argparse.Namespace) -> int:
    with _client(args) as client:
        detail = client.service(args.name)

    if getattr(args, "quiet", False):
        emit_list(args, detail, PS_HEADERS, [], ids=[c.get("alloc") for c in detail.get("containers") or []])
        return 0

    def human() -> str:
        replicas = detail.get("replicas") or {}
        head = (f"{detail.get('name', args.name)} v{_cell(detail.get('version'))} {_cell(detail.get('status'))}: "
                f"{replicas.get('running', 0)}/{replicas.get('desired', 0)} running, "
                f"{replicas.get('healthy', 0)}/{replicas.get('desired', 0)} healthy")
        if detail.get("pending_reason"):
            head += f" (pending: {detail['pending_reason']})"
        if detail.get("vip"):
            head += f"; mesh address {detail['vip']}"
        rows, headers = ps_rows(detail), PS_HEADERS
        if args.output == "wide":
            headers = [*PS_HEADERS, "CONTAINER", "EXIT-CODE"]
            rows = [[*row, (c.get("id") or "")[:12] or None, c.get("exit_code")]
                    for row, c in zip(rows, detail.get("containers") or [], strict=True)]
        return head + "\n" + (format_table(headers, rows) if rows else "no containers")

    _emit(args, detail, human, sys.stdout)
    return 0


HISTORY_HEADERS = ["VERSION", "IMAGE", "DIGEST", "AT", "STATE"]


def history_rows(history: dict[str, Any]) -> list[list[Any]]:
    return [[v.get("version"), v.get("image"), v.get("digest"), v.get("at"),
             "current" if v.get("current") else ("canary" if v.get("canary") else None)]
            for v in history.get("versions") or []]


def cmd_history(args: argparse.Namespace) -> int:
    with _client(args) as client:
        history = client.history(args.name)

    versions = history.get("versions") or []
    emit_list(args, history, HISTORY_HEADERS, history_rows(history), ids=[v.get("version") for v in versions],
              empty="no history", wide=(["CHANGED"], [[",".join(v.get("changed") or []) or None] for v in versions]))
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "status", cmd_status, "list services")
    p.add_argument("--project", help="only this project")
    add_quiet(p)

    p = verb(verbs, "scale", cmd_scale, "set the replica count of a service")
    p.add_argument("name")
    p.add_argument("replicas", type=int)

    p = verb(verbs, "stop", cmd_stop, "stop a service (orca stop NAME [--purge]), a project "
             "(orca stop --project P) or everything (orca stop --all, admin)")
    p.add_argument("name", nargs="?")
    p.add_argument("--purge", action="store_true",
                   help="also forget the service's config and remove its named volumes")
    p.add_argument("--project", help="stop every service of this project")
    p.add_argument("--all", action="store_true", help="stop every service of the cluster")
    add_yes(p)

    p = verb(verbs, "start", cmd_start, "resume a stopped service")
    p.add_argument("name")

    p = verb(verbs, "ps", cmd_ps, "the containers of a service")
    p.add_argument("name", metavar="SERVICE")
    add_quiet(p)

    p = verb(verbs, "history", cmd_history, "the versions of a service, newest first")
    p.add_argument("name", metavar="SERVICE")
    add_quiet(p)
