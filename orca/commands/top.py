"""`orca top`: a live table of services with their traffic, resource use and scaling mode."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from orca.client import ApiError, Client
from orca.commands.common import UsageError, _cell, _client, _emit, _silence_stdout, format_table
from orca.commands.scaling import scaling_mode

__all__ = ["add_parsers", "TOP_HEADERS", "top_rows", "cmd_top"]

TOP_HEADERS = ["NAME", "REPLICAS", "RPS", "P95", "ERR%", "CPU%", "MEM%", "SCALING"]


def _number(value: Any, digits: int = 1, suffix: str = "") -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def top_rows(snapshot: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per service of `_top_snapshot`: replicas running/desired, then the current sample (a
    dash for what is unknown: no traffic through a proxy yet, no stats from the agents yet)."""
    rows = []
    for s in snapshot:
        cur = s.get("metrics") if isinstance(s.get("metrics"), dict) else {}
        err = cur.get("error_rate")
        p95 = cur.get("p95_ms")
        rows.append([s.get("name"), f"{_cell(s.get('running'))}/{_cell(s.get('replicas'))}",
                     _number(cur.get("rps")), _number(p95, 0 if isinstance(p95, int | float) and p95 >= 10 else 1,
                                                      "ms"),
                     _number(err * 100 if isinstance(err, int | float) else None),
                     _number(cur.get("cpu_pct")), _number(cur.get("mem_pct")),
                     "-" if s.get("scaling_unknown") else scaling_mode(s.get("scaling"))])
    return rows


def _top_snapshot(client: Client, project: str | None) -> list[dict[str, Any]]:
    """Every service with its current metrics sample and scaling policy; a service whose metrics or
    policy could not be read (the leader unreachable, the service just removed) shows dashes there."""
    out = []
    for s in client.status(project):
        name = str(s.get("name"))
        item: dict[str, Any] = {"name": name, "status": s.get("status"), "replicas": s.get("replicas"),
                                "running": s.get("running_replicas"), "metrics": None, "scaling": None}
        try:
            item["metrics"] = (client.metrics(name) or {}).get("current")
        except ApiError:
            pass
        if "scaling" in s:
            item["scaling"] = s["scaling"]
        else:
            try:
                item["scaling"] = (client.get_scaling(name) or {}).get("scaling")
            except ApiError:
                item["scaling_unknown"] = True
        out.append(item)
    return out


_CLEAR = "\x1b[H\x1b[2J"


def cmd_top(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    tty = sys.stdout.isatty()
    with _client(args) as client:
        try:
            first = True
            while True:
                snapshot = _top_snapshot(client, args.project)
                doc = {"at": time.time(), "services": snapshot}
                if args.output == "json":
                    if args.once:
                        _emit(args, doc, lambda: None, sys.stdout)
                        return 0
                    print(json.dumps(doc, sort_keys=True, default=str), flush=True)
                else:
                    table = format_table(TOP_HEADERS, top_rows(snapshot)) if snapshot else "no services"
                    if args.once:
                        print(table, flush=True)
                        return 0
                    if tty:  # redraw in place; a pipe or a file gets every table, a blank line apart
                        table = (f"{_CLEAR}orca top  {time.strftime('%H:%M:%S')}  {len(snapshot)} services  "
                                 f"every {args.interval:g}s  (Ctrl-C quits)\n\n{table}")
                    elif not first:
                        table = "\n" + table
                    print(table, flush=True)
                first = False
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        except BrokenPipeError:
            _silence_stdout()
            return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "top", cmd_top, "live table of services: replicas, requests/s, p95, errors, cpu, memory, "
             "scaling (Ctrl-C quits)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh period (default 2)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--project", help="only this project")
