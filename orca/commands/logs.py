"""`orca logs SERVICE`: the logs of every replica of a service, merged; `-f` follows."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import UsageError, _client, since_arg
from orca.commands.output import _silence_stdout

__all__ = ["add_parsers", "cmd_logs"]


# With --since and no --tail, as many lines per replica as the server gives (its bound), so the time is
# what limits them.
MAX_TAIL = 10000


def cmd_logs(args: argparse.Namespace) -> int:
    tail = args.tail if args.tail is not None else (MAX_TAIL if args.since else 100)
    if tail < 0:
        raise UsageError("--tail must be >= 0")
    # Only what was asked for is passed on, so a cluster (or SDK) without these filters still serves
    # a plain `orca logs`.
    extra = {k: v for k, v in (("since", args.since), ("timestamps", args.timestamps)) if v}
    with _client(args) as client:
        stream = client.logs(args.name, tail=tail, follow=args.follow, **extra)
        try:
            for line in stream:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()  # -f: each line as it arrives, also through a pipe
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # `orca logs web | head`: the reader left, which is not an error
            _silence_stdout()
            return 0
        finally:
            stream.close()
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "logs", cmd_logs, "the logs of every replica of a service")
    p.add_argument("name", metavar="SERVICE")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines (Ctrl-C ends)")
    p.add_argument("--tail", type=int, metavar="N",
                   help="lines per replica (default 100; with --since, all of them up to 10000)")
    p.add_argument("--since", type=since_arg, metavar="WHEN",
                   help="only lines from this time on: a relative age (30s, 10m, 1h) or an RFC 3339 time "
                        "(2026-12-01T10:00:00Z)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="show the time each line was written (RFC 3339, UTC), after the replica prefix")
