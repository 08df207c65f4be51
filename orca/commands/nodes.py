"""`orca nodes`, `drain`, `undrain`, `node rm`: the worker nodes and taking them out of service."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from orca.client import ApiError
from orca.commands.common import (
    UsageError,
    _age,
    _cell,
    _client,
    _duration_arg,
    _emit,
    _epoch,
    fmt_duration,
    format_table,
    human_bytes,
)

__all__ = ["add_parsers", "NODE_HEADERS", "node_rows", "node_text", "drain_line", "cmd_nodes", "cmd_drain",
           "cmd_undrain", "cmd_node_rm"]

NODE_HEADERS = ["ID", "STATUS", "ELIGIBILITY", "ALLOCS", "MEMORY", "CPU", "LAST-HEARTBEAT", "LABELS"]


def _eligibility(node: dict[str, Any]) -> Any:
    drain = node.get("drain")
    if isinstance(drain, dict) and drain.get("complete"):
        return f"{node.get('eligibility')} (drained)"
    if isinstance(drain, dict) and drain.get("remaining") is not None:
        return f"{node.get('eligibility')} ({drain['remaining']} left)"
    return node.get("eligibility")


def _labels_text(labels: Any) -> Any:
    if isinstance(labels, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None
    return labels


def _resource(node: dict[str, Any], key: str) -> str:
    used = (node.get("allocated") or {}).get(key)
    cap = (node.get("capacity") or {}).get(key)
    if key == "memory":
        return f"{human_bytes(used or 0)}/{human_bytes(cap)}"
    return f"{_cell(used or 0)}/{_cell(cap)}"


def node_rows(nodes: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for n in nodes:
        status = n.get("status")
        if n.get("status_reason") and status != "ready":
            status = f"{status} ({n['status_reason']})"
        rows.append([n.get("id"), status, _eligibility(n), n.get("allocations"), _resource(n, "memory"),
                     _resource(n, "cpu"), _age(n.get("last_heartbeat")), _labels_text(n.get("labels"))])
    return rows


def node_text(node: dict[str, Any]) -> str:
    """One node as `key: value` lines, then its allocations."""
    fields = [("id", node.get("id")), ("address", node.get("address")), ("status", node.get("status")),
              ("status reason", node.get("status_reason")), ("eligibility", _eligibility(node)),
              ("labels", _labels_text(node.get("labels"))), ("memory", _resource(node, "memory")),
              ("cpu", _resource(node, "cpu")), ("allocations", node.get("allocations")),
              ("last heartbeat", node.get("last_heartbeat")), ("agent version", node.get("agent_version"))]
    if isinstance(node.get("drain"), dict):
        fields.append(("drain", drain_line(node).split(", ", 1)[1]))  # without "id: state", shown above
    elif node.get("drain"):
        fields.append(("drain", node["drain"]))
    lines = [f"{k + ':':<16}{_cell(v)}" for k, v in fields]
    allocs = node.get("allocation_list") or []
    if allocs:
        lines += ["", format_table(["ALLOC", "SERVICE", "INDEX", "VERSION", "STATUS", "HEALTH"],
                                   [[a.get("id"), a.get("service"), a.get("index"), a.get("version"),
                                     a.get("status"), a.get("health")] for a in allocs])]
    return "\n".join(lines)


def cmd_nodes(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.node_id:
            node = client.node(args.node_id)
            _emit(args, node, lambda: node_text(node), sys.stdout)
            return 0
        nodes = client.nodes()
    _emit(args, {"nodes": nodes},
          lambda: format_table(NODE_HEADERS, node_rows(nodes)) if nodes else "no nodes", sys.stdout)
    return 0


def drain_line(node: dict[str, Any], now: float | None = None) -> str:
    """`worker-1: draining, 3 remaining, 2 migrated, 0 failed, deadline in 4m10s` for one poll."""
    drain = node.get("drain") or {}
    complete = bool(drain.get("complete"))
    state = "drained" if complete else (node.get("eligibility") or "draining")
    parts = [f"{node.get('id', '?')}: {state}", f"{_cell(drain.get('remaining'))} remaining",
             f"{drain.get('migrated', 0)} migrated", f"{drain.get('failed', 0)} failed"]
    deadline = _epoch(drain.get("deadline"))
    if not complete and deadline is not None:
        left = deadline - (time.time() if now is None else now)
        parts.append(f"deadline in {fmt_duration(left)}" if left > 0 else "deadline passed, stopping the rest")
    if node.get("status") not in (None, "ready"):
        parts.append(f"node {node['status']}")
    return ", ".join(parts)


MAX_DRAIN_DEADLINE_S = 86400


def cmd_drain(args: argparse.Namespace) -> int:
    if not 0 <= args.deadline <= MAX_DRAIN_DEADLINE_S:
        raise UsageError(f"--deadline must be from 0 to {fmt_duration(MAX_DRAIN_DEADLINE_S)}")
    timeout = args.deadline + 60 if args.timeout is None else args.timeout
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    deadline_s: float | int = int(args.deadline) if float(args.deadline).is_integer() else args.deadline
    with _client(args) as client:
        result = client.drain(args.node, deadline_s, args.force)
        if result.get("warning"):
            print(f"warning: {result['warning']}", file=sys.stderr)
        _emit(args, result, lambda: (f"draining {args.node} (deadline {fmt_duration(args.deadline)}"
                                     + (", force" if args.force else "") + ")"), sys.stdout)
        if args.detach:
            return 0
        out = sys.stderr if args.output == "json" else sys.stdout
        try:
            node = client.wait_drained(args.node, timeout, lambda n: print(drain_line(n), file=out, flush=True))
        except ApiError as err:
            if err.code != "TIMEOUT":
                raise
            print(f"error: {err.message}", file=sys.stderr)
            print(f"the drain goes on in the cluster; see `orca nodes {args.node}`", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\ninterrupted: the drain goes on in the cluster (orca nodes {args.node})", file=sys.stderr)
            return 130
    drain = node.get("drain") or {}
    print(f"{args.node}: drain complete: {drain.get('migrated', 0)} migrated, {drain.get('failed', 0)} stopped "
          f"at the deadline; now {node.get('eligibility', 'ineligible')}", file=out, flush=True)
    return 0


def cmd_undrain(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.undrain(args.node)
    _emit(args, result, lambda: f"{args.node}: {result.get('eligibility', 'eligible')} again "
                                f"(replicas already moved stay where they are)", sys.stdout)
    return 0


def cmd_node_rm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.remove_node(args.node)
    _emit(args, result, lambda: f"removed node {args.node} (its agent is told to shut down)", sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "nodes", cmd_nodes, "list worker nodes, or show one")
    p.add_argument("node_id", nargs="?", metavar="NODE_ID")

    p = verb(verbs, "drain", cmd_drain, "move every replica off a node (start-before-stop), then make it "
             "ineligible; shows progress until done (admin)")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--deadline", type=_duration_arg, default=300.0, metavar="DURATION",
                   help="stop whatever is still there after this long: 90, 90s, 5m, 1h (default 5m)")
    p.add_argument("--force", action="store_true", help="stop the replicas at once instead of migrating first; "
                   "needed for a node holding named volumes (their replicas restart elsewhere on EMPTY volumes)")
    p.add_argument("--detach", action="store_true", help="return at once, do not watch the drain")
    p.add_argument("--timeout", type=_duration_arg, metavar="DURATION",
                   help="how long to watch before exit 1 (default: the deadline + 60s)")

    p = verb(verbs, "undrain", cmd_undrain, "make a drained or draining node eligible again (admin)")
    p.add_argument("node", metavar="NODE")

    p = verbs.add_parser("node", parents=[common], help="manage one worker node")
    node_verbs = p.add_subparsers(dest="node_verb", metavar="ACTION", required=True)
    p = verb(node_verbs, "rm", cmd_node_rm, "forget a down or drained node; its agent is told to shut down (admin)")
    p.add_argument("node", metavar="NODE")
