"""`orca events`: the cluster's event history; `-f` follows new events as they are committed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from orca.client import Client
from orca.commands.common import UsageError, _client, since_arg
from orca.commands.output import _cell, _dump, _fmt_time, _silence_stdout, add_quiet, emit_list, machine_output

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
    if args.since is not None and args.since_seq is not None:
        raise UsageError("give --since (a time) or --since-seq (an event sequence number), not both")
    since = args.since_seq if args.since_seq is not None else args.since
    with _client(args) as client:
        events = client.events(service=args.service, type=args.type, since=since, limit=args.limit)
        if args.follow:
            return _follow_events(args, client, events, since)
    emit_list(args, {"events": events}, EVENT_HEADERS, [event_row(e) for e in events],
              ids=[e.get("seq") for e in events], wide=(["SEQ"], [[e.get("seq")] for e in events]))
    return 0


def _follow_events(args: argparse.Namespace, client: Client, history: list[dict[str, Any]],
                   given_since: Any) -> int:
    """`events -f`: the history just read, then every new event as it is committed (one JSON object a
    line with -o json), until Ctrl-C (130) or the server ends the stream (0)."""
    as_json = machine_output(args)

    def show(event: dict[str, Any]) -> None:
        if args.output == "yaml":  # a stream of YAML documents, one an event
            text = "---\n" + _dump(args, event)
        else:
            text = json.dumps(event, sort_keys=True, default=str) if as_json else event_line(event)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    seqs = [e["seq"] for e in history if isinstance(e.get("seq"), int) and not isinstance(e.get("seq"), bool)]
    # Resume right after what was shown, so nothing committed in between is lost or shown twice. With
    # nothing shown and no --since, nothing in the kept log matches the filters: replay from the start.
    since = max(seqs) if seqs else (0 if given_since is None else None)
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
    p.add_argument("--since", type=since_arg, metavar="WHEN",
                   help="only events from this time on: a relative age (30s, 10m, 1h, 2d) or an RFC 3339 time "
                        "(2026-12-01T10:00:00Z; no zone means UTC)")
    p.add_argument("--since-seq", type=int, metavar="SEQ",
                   help="only events after this sequence number (the `seq` of `-o json`), e.g. to resume")
    p.add_argument("--limit", type=int, metavar="N", help="at most the N newest (server default 100)")
    add_quiet(p)
    p.add_argument("-f", "--follow", action="store_true",
                   help="then keep printing new events as they are committed (Ctrl-C ends)")
