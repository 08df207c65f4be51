"""`orca <verb>`: the command line, a thin layer over `orca.client.Client`.

This module builds the parser and runs a verb; the verbs themselves live in `orca/commands/`, one module
per verb group (`services`, `deploy`, `nodes`, `cluster`, ...), each with an `add_parsers(verbs, common,
verb)` that registers its verbs. A new verb group is a new module there plus one line in `VERB_GROUPS`.

Exit codes are part of the contract scripts rely on: 0 success, 1 the cluster refused or failed (the
server's message and code on stderr, never a traceback), 2 a usage error (bad arguments, an unreadable
deploy file). Tables are for people; `-o json` prints the server's response for scripts.

Global options (`--api`, `--token`, `--context`, `-o`, `-v`) may be given before or after the verb.
Where the cluster is and which token to use: flags, else `ORCA_API`/`ORCA_TOKEN`, else the current
context of `~/.orca/config.toml` (`orca context`, `orca.sdk.config`), else master-1 and `~/.orca/token`.

The names below are re-exported so `orca.cli` stays the one import for scripts and tests; `Client` is
also the seam tests replace with a fake cluster (`orca.commands.common._client` looks it up here).
"""

from __future__ import annotations

import argparse
import getpass as getpass  # re-exported: tests patch `cli.getpass.getpass`
import sys
import time as time  # re-exported: tests patch `cli.time.time`
from collections.abc import Callable, Sequence
from typing import Any

from orca import __version__
from orca.client import ApiError, Client
from orca.commands import (
    cluster,
    context,
    daemons,
    deploy,
    events,
    jobs,
    logs,
    nodes,
    scaling,
    secrets,
    services,
    snapshot,
    tokens,
    top,
    ui,
    volumes,
    webhooks,
)
from orca.commands.cluster import cluster_info_text, cmd_cluster_info, members_text
from orca.commands.common import (
    DEFAULT_API,
    UsageError,
    _age,
    _client,
    _emit,
    _epoch,
    _global_options,
    fmt_duration,
    format_table,
    human_bytes,
    parse_duration,
    resolve_ca_file,
    resolve_token,
)
from orca.commands.deploy import progress_line
from orca.commands.events import event_line, event_row
from orca.commands.nodes import NODE_HEADERS, cmd_drain, drain_line, node_rows, node_text
from orca.commands.scaling import scaling_mode, scaling_text
from orca.commands.services import PS_HEADERS, STATUS_HEADERS, cmd_status, ps_rows, status_rows
from orca.commands.specfile import load_services
from orca.commands.tokens import ROLES
from orca.commands.top import top_rows
from orca.commands.webhooks import webhook_rows

__all__ = ["main", "build_parser", "load_services", "format_table", "resolve_token", "parse_duration", "UsageError",
           "Client", "ApiError", "DEFAULT_API", "ROLES", "VERB_GROUPS", "resolve_ca_file", "human_bytes",
           "fmt_duration", "progress_line", "status_rows", "ps_rows", "node_rows", "node_text", "drain_line",
           "top_rows", "webhook_rows", "scaling_mode", "scaling_text", "event_row", "event_line",
           "cluster_info_text", "members_text", "cmd_status", "cmd_drain", "cmd_cluster_info", "STATUS_HEADERS",
           "PS_HEADERS", "NODE_HEADERS", "_age", "_epoch", "_client", "_emit"]

# The verb groups in the order `orca --help` lists their verbs.
VERB_GROUPS = (daemons, tokens, deploy, services, logs, nodes, volumes, jobs, secrets, events, top, scaling,
               webhooks, ui, cluster, context, snapshot)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    parser = argparse.ArgumentParser(prog="orca", description="A Raft-clustered container orchestrator.")
    parser.add_argument("--version", action="version", version=f"orca {__version__}")
    _global_options(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str,
             **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help, **kw)
        p.set_defaults(handler=handler)
        return p

    for group in VERB_GROUPS:
        group.add_parsers(verbs, common, verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `orca` console script and `python -m orca`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own exits: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    args.api = getattr(args, "api", None)  # resolved with the environment and the context by `_client`
    args.token = getattr(args, "token", None)
    args.context = getattr(args, "context", None)
    args.verbose = getattr(args, "verbose", False)
    args.output = getattr(args, "output", None) or "table"
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"orca: error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        details = exc.details if isinstance(exc.details, dict) else {}
        for err in details.get("errors") or []:
            if isinstance(err, dict):
                print(f"error: {err.get('service', '?')}: {err.get('error')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
