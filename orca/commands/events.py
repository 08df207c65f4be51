"""`orca events`: the cluster's event history; `-f` follows new events as they are committed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from orca.client import Client
from orca.commands.common import UsageError, _cell, _client, _emit, _fmt_time, _silence_stdout, format_table

__all__ = ["add_parsers", "EVENT_HEADERS", "event_row", "event_line", "event_header", "cmd_events"]

EVENT_HEADERS = ["TIME", "TYPE", "SERVICE/NODE", "ACTOR", "MESSAGE"]


# Followed events are printed one line at a time, so their columns cannot be sized to the rows: fixed
# widths that fit the usual values (an ISO time, the event types, DNS-label names); longer ones push on.
_EVENT_WIDTHS = (24, 20, 16, 14)


def event_row(event: dict[str, Any]) -> list[Any]:
    """TIME TYPE SERVICE/NODE ACTOR MESSAGE of one event (the node when it is about no service)."""
    return [_fmt_time(event.get("time", event.get("timestamp"))), event.get("type"),
            event.get("service") or event.get("node"), event.get("actor"), event.get("message", event.get("detail"))]


def event_line(event: dict[str, Any]) -> str:
    """One event as a fixed-width line under `event_header()`, for `orca events -f`."""
    *cells, message = [_cell(v) for v in event_row(event)]
    return "  ".join([*(c.ljust(w) for c, w in zip(cells, _EVENT_WIDTHS, strict=True)), message]).rstrip()


def event_header() -> str:
    return "  ".join([*(h.ljust(w) for h, w in zip(EVENT_HEADERS, _EVENT_WIDTHS, strict=False)),
                      EVENT_HEADERS[-1]])


def cmd_events(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    with _client(args) as client:
        events = client.events(service=args.service, type=args.type, since=args.since, limit=args.limit)
        if args.follow:
            return _follow_events(args, client, events)
    rows = [event_row(e) for e in events]
    _emit(args, {"events": events}, lambda: format_table(EVENT_HEADERS, rows), sys.stdout)
    return 0


def _follow_events(args: argparse.Namespace, client: Client, history: list[dict[str, Any]]) -> int:
    """`events -f`: the history just read, then every new event as it is committed (one JSON object a
    line with -o json), until Ctrl-C (130) or the server ends the stream (0)."""
    as_json = args.output == "json"

    def show(event: dict[str, Any]) -> None:
        sys.stdout.write((json.dumps(event, sort_keys=True, default=str) if as_json else event_line(event)) + "\n")
        sys.stdout.flush()

    seqs = [e["seq"] for e in history if isinstance(e.get("seq"), int) and not isinstance(e.get("seq"), bool)]
    # Resume right after what was shown, so nothing committed in between is lost or shown twice. With
    # nothing shown and no --since, nothing in the kept log matches the filters: replay from the start.
    since = max(seqs) if seqs else (0 if args.since is None else None)
    stream = client.stream_events(args.service, args.type, since)
    try:
        if not as_json:
            print(event_header(), flush=True)
        for event in history:
            show(event)
        for event in stream:
            show(event)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    finally:
        stream.close()
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "events", cmd_events, "show the event history; -f follows new events as they happen")
    p.add_argument("--service")
    p.add_argument("--type")
    p.add_argument("--since", help="timestamp (epoch seconds or ISO-8601)")
    p.add_argument("--limit", type=int, metavar="N", help="at most the N newest (server default 100)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="then keep printing new events as they are committed (Ctrl-C ends)")
