"""`orca volumes [ls|rm]`: the named volumes of every node (lifecycle: `orca.volumes`).

  orca volumes ls [--node ID]                   each node's orca volumes, asked of its agent now
  orca volumes rm NODE SERVICE [--slot N --gen G]
                                                remove a stopped service's volumes on NODE (all its bound
                                                slots there; an unbound one, e.g. left by a forced drain,
                                                with its slot and gen from `ls`)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import _client, _emit

__all__ = ["add_parsers"]


def _rows(volumes: list[dict[str, Any]]) -> str:
    header = ("NODE", "SERVICE", "SLOT", "GEN", "VOLUME", "BOUND", "NAME")
    rows = [header] + [(str(v.get("node")), str(v.get("service")), str(v.get("slot")), str(v.get("gen")),
                        str(v.get("volume")), "yes" if v.get("bound") else "no", str(v.get("name")))
                       for v in volumes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `orca volumes ls|rm`."""

    def cmd_ls(args: argparse.Namespace) -> int:
        with _client(args) as client:
            result = client.request("GET", "/api/v1/volumes", params={"node": args.node})
        _emit(args, result, lambda: _rows(result.get("volumes") or []) if result.get("volumes") else "no volumes",
             sys.stdout)
        for err in result.get("errors") or []:
            print(f"warning: node {err.get('node')}: {err.get('error')}", file=sys.stderr)
        return 0

    def cmd_rm(args: argparse.Namespace) -> int:
        params = {"slot": args.slot, "gen": args.gen}
        with _client(args) as client:
            result = client.request("DELETE", f"/api/v1/volumes/{args.node}/{args.service}", params=params)
        _emit(args, result, lambda: f"removing {len(result.get('removed') or [])} volume set(s) of {args.service} "
                                   f"on {args.node} (the agent deletes them once no container mounts them)",
             sys.stdout)
        return 0

    p = verbs.add_parser("volumes", parents=[common], help="list and remove named volumes per node")
    sub = p.add_subparsers(dest="volumes_verb", metavar="ACTION", required=True)
    p = verb(sub, "ls", cmd_ls, "every node's orca volumes")
    p.add_argument("--node", help="only this node")
    p = verb(sub, "rm", cmd_rm, "remove a stopped service's volumes on a node")
    p.add_argument("node")
    p.add_argument("service")
    p.add_argument("--slot", type=int, help="only this replica slot")
    p.add_argument("--gen", type=int, help="the volume generation (from ls), for an unbound volume")
