"""`orca logs SERVICE`: the logs of every replica of a service, merged; `-f` follows."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import UsageError, _client, _silence_stdout

__all__ = ["add_parsers", "cmd_logs"]

def cmd_logs(args: argparse.Namespace) -> int:
    if args.tail < 0:
        raise UsageError("--tail must be >= 0")
    with _client(args) as client:
        stream = client.logs(args.name, tail=args.tail, follow=args.follow)
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
    p.add_argument("--tail", type=int, default=100, metavar="N", help="lines per replica (default 100)")
