"""`orca scaling get|set|off`: a service's autoscaling policy."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orca.commands.common import UsageError, _cell, _client, _duration_arg, _emit, format_table

__all__ = ["add_parsers", "SCALING_FIELDS", "scaling_mode", "scaling_text", "cmd_scaling_get", "cmd_scaling_set",
           "cmd_scaling_off"]

# (policy field, CLI flag, what it is) in the order the policy lists them.
SCALING_FIELDS = [
    ("mode", "--mode", "auto: the leader scales within min..max; manual: only `orca scale`"),
    ("min_replicas", "--min", "never fewer replicas"),
    ("max_replicas", "--max", "never more replicas"),
    ("target_rps_per_replica", "--target-rps", "requests/s one replica should take"),
    ("max_p95_latency_ms", "--max-p95-ms", "p95 latency limit (ms)"),
    ("max_cpu_percent", "--max-cpu", "cpu limit (% of the replica's share)"),
    ("max_memory_percent", "--max-mem", "memory limit (% of the replica's limit)"),
    ("scale_out_threshold_pct", "--out-pct", "scale out when load reaches this % of a limit"),
    ("scale_in_threshold_pct", "--in-pct", "scale in when load stays under this % of every limit"),
    ("window_seconds", "--window", "averaging window (s)"),
    ("cooldown_seconds", "--cooldown", "wait after a change before the next one (s)"),
]


def scaling_mode(policy: Any) -> str:
    """`auto 2..10` for an autoscaled service, else `manual` (no policy, or one in manual mode)."""
    if isinstance(policy, dict) and policy.get("mode") == "auto":
        return f"auto {_cell(policy.get('min_replicas'))}..{_cell(policy.get('max_replicas'))}"
    return "manual"


def scaling_text(name: str, policy: Any, replicas: Any = None) -> str:
    """A headline, then SETTING VALUE FLAG rows of the policy (none when there is no policy)."""
    now = f", {replicas} replicas now" if isinstance(replicas, int) else ""
    if not isinstance(policy, dict):
        return (f"{name}: no scaling policy: manual{now} "
                f"(`orca scaling set {name} --mode auto --min N --max N` turns autoscaling on)")
    if policy.get("mode") == "auto":
        head = f"{name}: {scaling_mode(policy)}{now}"
    else:
        head = f"{name}: manual{now}: the policy is kept but the autoscaler leaves {name} alone " \
               f"(`orca scaling set {name} --mode auto` turns it on)"
    rows = [[field, policy.get(field), flag] for field, flag, _ in SCALING_FIELDS if field in policy]
    return head + "\n" + format_table(["SETTING", "VALUE", "FLAG"], rows)


def cmd_scaling_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.get_scaling(args.name)
    _emit(args, result, lambda: scaling_text(result.get("name", args.name), result.get("scaling"),
                                             result.get("replicas")), sys.stdout)
    return 0


def _plain_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def cmd_scaling_set(args: argparse.Namespace) -> int:
    changes = {field: _plain_number(getattr(args, field)) for field, _, _ in SCALING_FIELDS
               if getattr(args, field, None) is not None}
    if not changes:
        raise UsageError("nothing to set: give --mode and/or the settings to change (orca scaling set --help)")
    with _client(args) as client:
        # Merge into what is there: `--max 20` changes the maximum and keeps everything else.
        current = client.get_scaling(args.name).get("scaling")
        policy = {**(current if isinstance(current, dict) else {}), **changes}
        result = client.set_scaling(args.name, policy)
    _emit(args, result, lambda: scaling_text(result.get("name", args.name), result.get("scaling")), sys.stdout)
    return 0


def cmd_scaling_off(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.set_scaling(args.name, None)
    _emit(args, result, lambda: f"{result.get('name', args.name)}: scaling policy removed; the replica count "
                                f"stays where it is (orca scale {args.name} N)", sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("scaling", parents=[common], help="show, set and remove a service's autoscaling policy")
    scaling = p.add_subparsers(dest="scaling_verb", metavar="ACTION", required=True)
    p = verb(scaling, "get", cmd_scaling_get, "the autoscaling policy of a service")
    p.add_argument("name", metavar="SERVICE")
    p = verb(scaling, "set", cmd_scaling_set, "change the autoscaling policy: the settings given are merged into "
             "the current policy (defaults for a service without one)")
    p.add_argument("name", metavar="SERVICE")
    for field, flag, help_text in SCALING_FIELDS:
        if field == "mode":
            p.add_argument(flag, dest=field, choices=("auto", "manual"), help=help_text)
        elif field in ("min_replicas", "max_replicas"):
            p.add_argument(flag, dest=field, type=int, metavar="N", help=help_text)
        elif field in ("window_seconds", "cooldown_seconds"):
            p.add_argument(flag, dest=field, type=_duration_arg, metavar="DURATION",
                           help=help_text + ": 30, 30s, 2m")
        else:
            p.add_argument(flag, dest=field, type=float, metavar="X", help=help_text)
    p = verb(scaling, "off", cmd_scaling_off, "remove the policy: the service keeps its replica count, scaled by hand")
    p.add_argument("name", metavar="SERVICE")
