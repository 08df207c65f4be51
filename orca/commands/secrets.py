"""`orca secrets set|grant|list|rm`: secrets and the projects they are granted to (admin)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import UsageError, _client, _emit, format_table

__all__ = ["add_parsers", "cmd_secrets_set", "cmd_secrets_grant", "cmd_secrets_list", "cmd_secrets_rm"]

def _secret_value(args: argparse.Namespace) -> str:
    """VALUE from the command line, else a hidden prompt on a terminal, else all of stdin (one trailing
    newline dropped, so `echo x | orca secrets set K` stores "x")."""
    if args.value is not None:
        return str(args.value)
    if sys.stdin is None:
        raise UsageError("no VALUE given and no stdin to read it from")
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {args.key}: ")
    else:
        value = sys.stdin.read()
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if value == "":
        raise UsageError("empty secret value (give VALUE or pipe it on stdin)")
    return value


def _grants_text(grants: Any) -> str:
    if not isinstance(grants, dict):
        return "admins only"
    if grants.get("all_projects"):
        return "all projects"
    return ", ".join(grants.get("projects") or []) or "admins only"


def _grants_column(grants: Any) -> str:
    """`*` all projects, `-` admins only, else the projects (names are DNS labels: never `*` or `-`)."""
    text = _grants_text(grants)
    return {"all projects": "*", "admins only": "-"}.get(text, text.replace(", ", ","))


def cmd_secrets_set(args: argparse.Namespace) -> int:
    if args.project and args.all_projects:
        raise UsageError("--project and --all-projects exclude each other")
    value = _secret_value(args)
    with _client(args) as client:
        if args.project or args.all_projects:
            result = client.set_secret(args.key, value, projects=args.project or [], all_projects=args.all_projects)
        else:
            result = client.set_secret(args.key, value)
    _emit(args, result, lambda: f"{'created' if result.get('created') else 'updated'} secret "
                                f"{result.get('key', args.key)}"
                                + (f" (granted to: {_grants_text(result['grants'])})" if "grants" in result else ""),
          sys.stdout)
    return 0


def cmd_secrets_grant(args: argparse.Namespace) -> int:
    chosen = sum((bool(args.project), args.all_projects, args.admin_only))
    if chosen != 1:
        raise UsageError("give --project P (repeatable), --all-projects or --admin-only")
    with _client(args) as client:
        result = client.grant_secret(args.key, args.project or [], args.all_projects)
    _emit(args, result, lambda: f"secret {args.key} granted to: {_grants_text(result.get('grants'))}", sys.stdout)
    return 0


def cmd_secrets_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        secrets = client.list_secrets()
    rows = [[s.get("key"), _grants_column(s.get("grants")), s.get("created_at"), s.get("updated_at")]
            for s in secrets]
    _emit(args, {"secrets": secrets},
          lambda: format_table(["KEY", "GRANTS", "CREATED", "UPDATED"], rows) if rows else "no secrets",
          sys.stdout)
    return 0


def cmd_secrets_rm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.delete_secret(args.key)
    _emit(args, result, lambda: f"deleted secret {args.key}", sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("secrets", parents=[common], help="set, list and remove secrets (admin)")
    secrets = p.add_subparsers(dest="secrets_verb", metavar="ACTION", required=True)
    p = verb(secrets, "set", cmd_secrets_set, "create or replace a secret (VALUE from stdin when omitted)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", nargs="?", metavar="VALUE",
                   help="the value; better omitted (read from stdin, or a hidden prompt) so it stays out of "
                        "shell history and ps")
    p.add_argument("--project", action="append", metavar="P",
                   help="grant to this project (repeatable): its project-scoped deployers may reference it")
    p.add_argument("--all-projects", action="store_true",
                   help="grant to every project: any deployer may reference it")
    p = verb(secrets, "grant", cmd_secrets_grant, "replace a secret's grants (the value is untouched)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--project", action="append", metavar="P", help="grant to this project (repeatable)")
    p.add_argument("--all-projects", action="store_true", help="grant to every project")
    p.add_argument("--admin-only", action="store_true", help="no grants: only an admin's deploy may reference it")
    verb(secrets, "list", cmd_secrets_list,
         "list secret keys and their grants: * all projects, - admins only (values are never shown)",
         aliases=["ls"])
    p = verb(secrets, "rm", cmd_secrets_rm, "delete a secret")
    p.add_argument("key", metavar="KEY")
