"""`orca server`, `orca agent`, `orca join`: the long-running processes (a master, a worker agent)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orca.commands.common import UsageError

__all__ = ["add_parsers", "cmd_server", "cmd_agent", "cmd_join"]

def cmd_server(args: argparse.Namespace) -> int:
    # Imported here: the CLI must start (and `orca status` work) without loading the master.
    from orca.master.main import run_server

    return int(run_server(args.config))


def cmd_agent(args: argparse.Namespace) -> int:
    from orca.agent.main import run_agent  # lazy: the CLI must not load Docker and the agent to print status

    return int(run_agent(args.config))


def _labels(pairs: Sequence[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--label: expected KEY=VALUE, got {pair!r}")
        labels[key.strip()] = value.strip()
    return labels


def cmd_join(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for key in ("agent_id", "listen", "status_listen", "data_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.label:
        overrides["labels"] = _labels(args.label)
    if getattr(args, "cacert", None):
        overrides["ca_file"] = args.cacert  # https masters without a version-2 join token to pin by
    from orca.agent.main import run_join

    token_file = args.token_file
    join_token = getattr(args, "token", None)  # for `join`, the global --token is the join token
    if join_token is not None:
        # `orca join --token ORCAJOIN-2-... MASTER`: kept 0600 in the data directory (the agent reads
        # it from a file, like every credential), so the command line is all a new host needs.
        if token_file is not None:
            raise UsageError("give --token or --token-file, not both")
        from orca.master.tls_manager import write_private

        data_dir = Path(args.data_dir or f"./data/{args.agent_id or _default_agent_id()}")
        token_file = str(data_dir / "join.token")
        write_private(Path(token_file), join_token.strip().encode() + b"\n")
    if token_file is None:
        raise UsageError("orca join needs --token TOKEN or --token-file FILE")
    return int(run_join(list(args.masters), token_file, **overrides))


def _default_agent_id() -> str:
    from orca.agent.main import _default_id

    return _default_id()


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "server", cmd_server, "run a master")
    p.add_argument("--config", required=True, metavar="FILE", help="master TOML config")

    p = verb(verbs, "agent", cmd_agent, "run a worker agent from its config file")
    p.add_argument("--config", required=True, metavar="FILE", help="agent TOML config ([agent] table)")

    p = verb(verbs, "join", cmd_join, "run a worker agent that joins the given masters (no config file); "
             "--token ORCAJOIN-2-... or --token-file F")
    p.add_argument("masters", nargs="+", metavar="MASTER_URL", help="one or more master API URLs")
    p.add_argument("--token-file", metavar="F",
                   help="file holding this node's agent token (--role agent --node ID) or a join token")
    p.add_argument("--id", dest="agent_id", metavar="ID", help="node id (default: the host name)")
    p.add_argument("--listen", metavar="HOST:PORT", help="the agent API (where the leader pushes)")
    p.add_argument("--status-listen", metavar="HOST:PORT", help="the local status API")
    p.add_argument("--data-dir", metavar="DIR", help="default ./data/<id>")
    p.add_argument("--label", action="append", metavar="K=V", help="a node label (repeatable)")
