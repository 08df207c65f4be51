"""What every verb group shares: finding the cluster and the token, printing tables and JSON, reading
durations and times, and the one exception for bad input (`UsageError`, exit 2).

Exit codes are part of the contract scripts rely on: 0 success, 1 the cluster refused or failed (the
server's message and code on stderr, never a traceback), 2 a usage error (bad arguments, an unreadable
deploy file). Tables are for people; `-o json` prints the server's response for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from orca.client import Client
from orca.sdk import config as client_config

__all__ = ["DEFAULT_API", "UsageError", "resolve_token", "resolve_ca_file", "format_table", "human_bytes",
           "parse_duration", "fmt_duration"]

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


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; None shows as "-" so columns never look shifted."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _fmt_time(ts: Any) -> Any:
    """Epoch seconds as local ISO time; anything else (already a string, None) unchanged."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return ts


def _age(ts: Any, now: float | None = None) -> Any:
    """An ISO-8601 time (or epoch seconds) as "4s ago" / "3m ago" / "2h ago" / "5d ago"; else unchanged."""
    if isinstance(ts, str):
        try:
            parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return ts
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        seconds = parsed.timestamp()
    elif isinstance(ts, int | float) and not isinstance(ts, bool):
        seconds = float(ts)
    else:
        return ts
    delta = max(0, int((time.time() if now is None else now) - seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit} ago"
    return f"{delta}s ago"


def human_bytes(n: Any) -> str:
    """Bytes as MiB below 1 GiB and GiB above, e.g. `512MiB`, `3.5GiB`; "-" when unknown."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}".removesuffix(".0") + "GiB"
    return f"{n / (1 << 20):.0f}MiB" if n else "0"


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


def fmt_duration(seconds: float) -> str:
    """Seconds as `4m10s`, `45s`, `1h2m5s`, `5m` (whole seconds, rounded up so "in 0s" means now)."""
    total = max(0, int(-(-seconds // 1)))
    h, rest = divmod(total, 3600)
    m, sec = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return text or "0s"


def _epoch(ts: Any) -> float | None:
    """An ISO-8601 time or epoch seconds as epoch seconds; None when it is neither."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, str):
        try:
            parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    return None


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


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str | None], out: TextIO) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True, default=str), file=out)
        return
    text = human()
    if text:
        print(text, file=out)


def _silence_stdout() -> None:
    """The reader of our stdout left (`orca ... | head`): send what is still buffered nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


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
    parser.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default table)")
