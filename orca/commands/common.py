"""What every verb group shares: finding the cluster and the token, the global options, reading durations
and times from the command line, confirmations, hints after errors, and the one exception for bad input
(`UsageError`, exit 2). How results are printed is `orca.commands.output`.

Exit codes are part of the contract scripts rely on: 0 success, 1 the cluster refused or failed (the
server's message and code on stderr, never a traceback), 2 a usage error (bad arguments, an unreadable
deploy file).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from orca.client import Client
from orca.commands.output import OUTPUTS
from orca.sdk import config as client_config

__all__ = ["DEFAULT_API", "UsageError", "resolve_token", "resolve_ca_file", "parse_duration", "since_arg",
           "Aborted", "add_yes", "confirm", "next_step"]


DEFAULT_API = client_config.DEFAULT_API


class UsageError(Exception):
    """Bad input from the person at the keyboard: exit 2 with one line, no traceback."""


def resolve_token(flag: str | None) -> str | None:
    """`--token`, else `$ORCA_TOKEN`, else `~/.orca/token` (what bootstrap writes), else none.
    (`_client` also consults the context between the two last; see `orca.sdk.config.resolve`.)"""
    if flag:
        return flag.strip()
    env = os.environ.get("ORCA_TOKEN", "").strip()
    return env or client_config.home_token()


def resolve_ca_file(flag: str | None, context_ca: str | None = None) -> str | None:
    """`--cacert`, else `$ORCA_CACERT`, else the client context's `ca_file`, else `~/.orca/ca.crt` when
    it exists (what the bootstrap copies the cluster CA to), else the system trust store (None)."""
    if flag:
        return flag
    env = os.environ.get("ORCA_CACERT", "").strip()
    if env:
        return env
    if context_ca:
        return context_ca
    path = Path.home() / ".orca" / "ca.crt"
    return str(path) if path.is_file() else None


_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h`, `1h30m`, `2.5m` -> seconds; ValueError for anything else."""
    t = str(text).strip().lower()
    found = _DURATION.fullmatch(t) if t else None
    if found is None or not any(found.groups()):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 90, 90s, 5m, 1h30m)")
    h, m, sec = (float(g) if g else 0.0 for g in found.group("h", "m", "s"))
    return h * 3600 + m * 60 + sec


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def since_arg(text: str) -> str:
    """`--since` of `events` and `logs`: a relative age (`10m`, `1h`, `2d`) or an RFC 3339 / ISO-8601 time,
    checked here (orca.timefilter, the parser the server uses) and passed on as written: the server
    resolves a relative age against its own clock. Bare digits are refused: to the events route they
    would be a sequence number (`--since-seq`), and Unix seconds are easy to mistake for one."""
    from orca.errors import OrcaError
    from orca.timefilter import parse_since

    if text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a relative age (10m, 1h) or an RFC 3339 time "
                                         "(2026-12-01T10:00:00Z); for an event sequence number use --since-seq")
    try:
        parse_since(text, time.time(), allow_epoch=False)
    except OrcaError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a relative age (30s, 10m, 1h, 2d) or an RFC 3339 "
                                         f"time (2026-12-01T10:00:00Z) ({exc.message})") from None
    return text.strip()


def next_step(code: str, message: str = "") -> str | None:
    """What to do about an error the cluster (or the way to it) answered, as one line for stderr; None
    when the message says it all. Keyed by the API's error codes (orca.errors), so it stays put when a
    message is reworded."""
    if code == "UNAUTHORIZED":
        if "missing" in message:
            return ("set ORCA_TOKEN, pass --token, or point a context at a token file "
                    "(`orca context set NAME --api URL --token-file FILE --use`); ~/.orca/token is read last")
        return ("the token was refused: get a fresh one from an admin (`orca token create --role ...`) and set "
                "ORCA_TOKEN or --token")
    if code == "FORBIDDEN":
        return "this token's role or projects do not allow that: use a token with the role the verb needs"
    if code == "UNREACHABLE":
        return ("is a master running there? Check --api / ORCA_API or the current context "
                "(`orca context list`); `orca version` shows which master answers")
    if code == "CLUSTER_NOT_READY":
        return "the cluster has no leader yet (or lost quorum): retry in a few seconds; `orca cluster members`"
    if code == "RATE_LIMIT_EXCEEDED":
        return "too many requests from this client: wait a moment and retry"
    if code == "SERVICE_NOT_FOUND":
        return "`orca status` lists the services"
    if code == "NODE_NOT_FOUND":
        return "`orca nodes` lists the nodes"
    if code in ("VALIDATION_ERROR", "INVALID_SPEC"):
        return "fix the input the message names and run the command again (`orca VERB --help` shows an example)"
    return None


class Aborted(Exception):
    """The person at the keyboard said no to a confirmation: exit 1, nothing changed."""


def add_yes(parser: argparse.ArgumentParser) -> None:
    """`-y/--yes` of a destructive verb."""
    parser.add_argument("-y", "--yes", action="store_true",
                        help="do it without asking (required when stdin is not a terminal)")


def confirm(args: argparse.Namespace, what: str) -> None:
    """Before a destructive verb: go on with `--yes`; else ask on a terminal (anything but y/yes aborts);
    else refuse (a script must say `--yes`, so a typo in a pipeline never stops a whole cluster)."""
    if getattr(args, "yes", False):
        return
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise UsageError(f"this would {what}; not asking, as stdin is not a terminal: add --yes to confirm")
    print(f"this will {what}. Continue? [y/N] ", end="", file=sys.stderr, flush=True)
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise Aborted()


def _report_skip(url: str, error: BaseException) -> None:
    print(f"orca: skipped {url}: {error or type(error).__name__}", file=sys.stderr)


def _client_class() -> type[Client]:
    """`orca.cli.Client`, looked up at each call: it is the seam tests replace with a fake cluster
    (`monkeypatch.setattr(orca.cli, "Client", Fake)`), and every verb group reaches it through here."""
    import orca.cli  # the facade imports this module first, so it is loaded by the time a verb runs

    return orca.cli.Client


def _client(args: argparse.Namespace) -> Client:
    """A client for the cluster the flags, environment or context name (see the module docstring)."""
    try:
        target = client_config.resolve(getattr(args, "api", None), getattr(args, "token", None),
                                       getattr(args, "context", None))
    except client_config.ConfigFileError as exc:
        raise UsageError(str(exc)) from exc
    try:
        ca_file = resolve_ca_file(getattr(args, "cacert", None), target.ca_file)
        return _client_class()(",".join(target.endpoints), target.token, ca_file=ca_file,
                      on_skip=_report_skip if getattr(args, "verbose", False) else None)
    except ValueError as exc:  # a malformed --api is the user's typo, not a cluster failure
        raise UsageError(f"--api: {exc}") from exc


def _global_options(parser: argparse.ArgumentParser, api: bool = True) -> None:
    # SUPPRESS: the verb's copy only overrides the top-level one when actually given.
    if api:
        parser.add_argument("--api", default=argparse.SUPPRESS,
                            help="master API URL(s), comma-separated (else env ORCA_API, else the context's "
                                 f"endpoints, else {DEFAULT_API})")
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token (else env ORCA_TOKEN, else the context's token file, else ~/.orca/token)")
    parser.add_argument("--context", default=argparse.SUPPRESS, metavar="NAME",
                        help="client context of ~/.orca/config.toml (else env ORCA_CONTEXT, else the current one)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="say on stderr which masters were skipped as unreachable")
    parser.add_argument("--cacert", default=argparse.SUPPRESS, metavar="FILE",
                        help="the cluster CA for https masters (else env ORCA_CACERT, else ~/.orca/ca.crt)")
    parser.add_argument("-o", "--output", choices=OUTPUTS, default=argparse.SUPPRESS,
                        help="output format: table (default), wide (more columns), json or yaml")
