"""How verbs print: tables for people (`-o table|wide`, `-q` ids), JSON or YAML for programs, and the
times, ages, sizes and durations in table cells."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = ["OUTPUTS", "format_table", "human_bytes", "fmt_duration", "machine_output", "emit_list", "add_quiet"]


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



OUTPUTS = ("table", "wide", "json", "yaml")



def machine_output(args: argparse.Namespace) -> bool:
    """`-o json` or `-o yaml`: stdout is for a program, so progress and prose go to stderr."""
    return getattr(args, "output", None) in ("json", "yaml")



def _plain(data: Any) -> Any:
    """The data as JSON would carry it (tuples as lists, odd types as strings): what YAML may dump safely."""
    return json.loads(json.dumps(data, default=str))



def _dump(args: argparse.Namespace, data: Any) -> str:
    if args.output == "yaml":
        import yaml  # here: only `-o yaml` pays for the import

        text = yaml.safe_dump(_plain(data), sort_keys=True, default_flow_style=False, allow_unicode=True)
        return str(text).rstrip("\n")
    return json.dumps(data, indent=2, sort_keys=True, default=str)



def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str | None], out: TextIO) -> None:
    """`data` as JSON or YAML for programs, else the table or sentence `human()` makes for people."""
    if machine_output(args):
        print(_dump(args, data), file=out)
        return
    text = human()
    if text:
        print(text, file=out)



def emit_list(args: argparse.Namespace, data: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
              ids: Sequence[Any], empty: str | None = None, wide: tuple[Sequence[str], Sequence[Sequence[Any]]]
              | None = None) -> None:
    """What a listing verb prints: `-q` the ids alone, one a line (for `xargs`); `-o json|yaml` the
    server's data; `-o wide` the table with the `wide` columns appended; else the table (`empty` when
    there are no rows)."""
    if getattr(args, "quiet", False):
        for ident in ids:
            print(_cell(ident), file=sys.stdout)
        return
    if args.output == "wide" and wide is not None:
        extra_headers, extra_rows = wide
        headers = [*headers, *extra_headers]
        rows = [[*row, *extra] for row, extra in zip(rows, extra_rows, strict=True)]
    _emit(args, data, lambda: format_table(headers, rows) if rows or empty is None else empty, sys.stdout)



def add_quiet(parser: argparse.ArgumentParser) -> None:
    """`-q/--quiet` of a listing verb: print only the ids."""
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the ids, one a line")



def _silence_stdout() -> None:
    """The reader of our stdout left (`orca ... | head`): send what is still buffered nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
