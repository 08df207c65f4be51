"""`orca context ...`: named client contexts in `~/.orca/config.toml` (see `orca.sdk.config`).

`orca context set NAME --api URL[,URL...]` asks the cluster for its members (`/cluster/info`) and stores
every master's URL, so one URL is enough to remember the whole cluster; `orca context refresh` asks again
after masters were added or replaced. A cluster that cannot be asked (down, no token yet) gets the URLs
as given, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orca.client import ApiError, Client
from orca.commands.common import UsageError, _emit, format_table
from orca.sdk.config import ClientConfig, ConfigFileError, Context, home_token

__all__ = ["add_parsers", "cmd_context_set", "cmd_context_list", "cmd_context_use", "cmd_context_rm",
           "cmd_context_show", "cmd_context_refresh"]


def _load() -> ClientConfig:
    try:
        return ClientConfig.load()
    except ConfigFileError as exc:
        raise UsageError(str(exc)) from exc


def _discover(endpoints: list[str], token: str | None, ca_file: str | None) -> tuple[list[str], str | None]:
    """The members' URLs (configured first, then the ones learned), or the given ones and why not."""
    try:
        with Client(endpoints, token, retries=2, ca_file=ca_file) as client:
            members = client.discover()
    except ApiError as err:
        return endpoints, f"{err.message} ({err.code})"
    except ValueError as err:
        raise UsageError(f"--api: {err}") from err
    keep = [e for e in endpoints if e.rstrip("/") in members]
    return keep + [m for m in members if m not in keep], None


def _context_row(cfg: ClientConfig, ctx: Context) -> list[Any]:
    return ["*" if ctx.name == cfg.current else "", ctx.name, ",".join(ctx.endpoints), ctx.token_file or None,
            ctx.ca_file or None]


def cmd_context_set(args: argparse.Namespace) -> int:
    cfg = _load()
    old = cfg.contexts.get(args.name)
    # `--api` is the global option: here it names the context's endpoints (the others are learned).
    endpoints = [u for u in (args.api or "").split(",") if u.strip()] or (old.endpoints if old else [])
    if not endpoints:
        raise UsageError("--api is required for a new context")
    token_file = str(Path(args.token_file).expanduser().resolve()) if args.token_file else (
        old.token_file if old else "")
    ca_file = str(Path(args.ca_file).expanduser().resolve()) if args.ca_file else (old.ca_file if old else "")
    try:
        ctx = cfg.set(args.name, endpoints, token_file, ca_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    warning = None
    if not args.no_discover:
        token = ctx.token() or (args.token or None) or home_token()
        found, warning = _discover(ctx.endpoints, token, ctx.ca_file or None)
        ctx = cfg.set(args.name, found, token_file, ca_file)
    if args.use or not cfg.current:
        cfg.current = ctx.name
    cfg.save()
    if warning:
        print(f"orca: warning: could not ask the cluster for its members ({warning}); "
              f"saved the endpoints as given", file=sys.stderr)
    _emit(args, {"context": ctx.name, "current": cfg.current == ctx.name, **ctx.as_toml()},
          lambda: f"context {ctx.name}: {', '.join(ctx.endpoints)}" + (" (current)" if cfg.current == ctx.name
                                                                        else ""), sys.stdout)
    return 0


def cmd_context_refresh(args: argparse.Namespace) -> int:
    cfg = _load()
    try:
        ctx = cfg.context(args.name or args.context)
    except ConfigFileError as exc:
        raise UsageError(str(exc)) from exc
    if ctx is None:
        raise UsageError("no current context: name one, or create one with `orca context set`")
    found, warning = _discover(ctx.endpoints, ctx.token() or args.token or home_token(), ctx.ca_file or None)
    if warning:
        raise ApiError(0, "UNREACHABLE", f"context {ctx.name}: {warning}")
    ctx = cfg.set(ctx.name, found, ctx.token_file, ctx.ca_file)
    cfg.save()
    _emit(args, {"context": ctx.name, **ctx.as_toml()},
          lambda: f"context {ctx.name}: {', '.join(ctx.endpoints)}", sys.stdout)
    return 0


def cmd_context_list(args: argparse.Namespace) -> int:
    cfg = _load()
    rows = [_context_row(cfg, c) for _, c in sorted(cfg.contexts.items())]
    _emit(args, {"current": cfg.current, "contexts": {n: c.as_toml() for n, c in cfg.contexts.items()},
                 "path": str(cfg.path)},
          lambda: format_table(["CURRENT", "NAME", "ENDPOINTS", "TOKEN_FILE", "CA_FILE"], rows) if rows
          else f"no contexts in {cfg.path}", sys.stdout)
    return 0


def cmd_context_show(args: argparse.Namespace) -> int:
    cfg = _load()
    try:
        ctx = cfg.context(args.name or args.context)
    except ConfigFileError as exc:
        raise UsageError(str(exc)) from exc
    if ctx is None:
        raise UsageError(f"no current context in {cfg.path}")
    _emit(args, {"context": ctx.name, "current": cfg.current == ctx.name, **ctx.as_toml()},
          lambda: "\n".join([f"context:    {ctx.name}" + (" (current)" if cfg.current == ctx.name else ""),
                             f"endpoints:  {', '.join(ctx.endpoints)}",
                             f"token file: {ctx.token_file or '-'}",
                             f"CA file:    {ctx.ca_file or '-'}"]), sys.stdout)
    return 0


def cmd_context_use(args: argparse.Namespace) -> int:
    cfg = _load()
    if args.name not in cfg.contexts:
        raise UsageError(f"no context {args.name!r} in {cfg.path}")
    cfg.current = args.name
    cfg.save()
    _emit(args, {"current": args.name}, lambda: f"current context: {args.name}", sys.stdout)
    return 0


def cmd_context_rm(args: argparse.Namespace) -> int:
    cfg = _load()
    if cfg.contexts.pop(args.name, None) is None:
        raise UsageError(f"no context {args.name!r} in {cfg.path}")
    if cfg.current == args.name:
        cfg.current = ""
    cfg.save()
    _emit(args, {"removed": args.name}, lambda: f"removed context {args.name}", sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("context", parents=[common], help="named client contexts: which masters, which token")
    ctx = p.add_subparsers(dest="context_verb", metavar="ACTION", required=True)
    p = verb(ctx, "set", cmd_context_set, "create or update a context; learns every master from the cluster")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--token-file", metavar="FILE", help="file holding the token this context uses")
    p.add_argument("--ca-file", metavar="FILE", help="CA certificate for https masters (reserved for TLS)")
    p.add_argument("--use", action="store_true", help="make it the current context")
    p.add_argument("--no-discover", action="store_true", help="store the URLs as given, do not ask the cluster")
    verb(ctx, "list", cmd_context_list, "list contexts (* marks the current one)")
    p = verb(ctx, "show", cmd_context_show, "show one context (default: the current one)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p = verb(ctx, "use", cmd_context_use, "make a context the current one")
    p.add_argument("name", metavar="NAME")
    p = verb(ctx, "rm", cmd_context_rm, "remove a context")
    p.add_argument("name", metavar="NAME")
    p = verb(ctx, "refresh", cmd_context_refresh, "ask the cluster for its masters again and store them")
    p.add_argument("name", nargs="?", metavar="NAME")
