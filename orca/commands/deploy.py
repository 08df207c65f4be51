"""`orca deploy`, `orca promote`, `orca rollback`: change what runs, then follow the rollout to its end."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from orca.client import ApiError, Client, is_converged
from orca.commands.common import UsageError, _cell, _client, _emit
from orca.commands.specfile import load_services

__all__ = ["add_parsers", "progress_line", "cmd_deploy", "cmd_promote", "cmd_rollback"]

def _ready(c: dict[str, Any]) -> bool:
    return c.get("status") == "running" and c.get("health") in (None, "healthy")


def progress_line(detail: dict[str, Any]) -> str:
    """One poll of a deploy as a line, e.g.
    `web: 1/3 running, 0/3 healthy (pending: no eligible node with 512 MiB free)`,
    `web: rolling to v3: 2/4 on v3 (2 healthy), 2 on older versions`,
    `web: canary v3: 1/1 on v3 (1 healthy) beside 4/4 on v2 (4 healthy)`."""
    name = detail.get("name", "?")
    replicas = detail.get("replicas") or {}
    desired = replicas.get("desired", 0)
    containers = detail.get("containers") or []
    version = detail.get("version")
    rollout = detail.get("rollout") or {}
    canary = detail.get("canary") or {}
    on_current = [c for c in containers if c.get("version") == version]
    if canary.get("version") is not None:
        cv = canary["version"]
        canaries = [c for c in containers if c.get("version") == cv]
        line = (f"{name}: canary v{cv}: {len(canaries)}/{canary.get('replicas', 0)} on v{cv} "
                f"({sum(map(_ready, canaries))} healthy) beside {len(on_current)}/{desired} on v{version} "
                f"({sum(map(_ready, on_current))} healthy)")
    elif rollout.get("state") == "rolling" and rollout.get("version") == version:
        what = (f"reverting to v{version} (v{rollout['reverted_from']} halted)"
                if rollout.get("reverted_from") is not None else f"rolling to v{version}")
        line = (f"{name}: {what}: {len(on_current)}/{desired} on v{version} ({sum(map(_ready, on_current))} "
                f"healthy), {len(containers) - len(on_current)} on older versions")
    else:
        line = (f"{name}: {replicas.get('running', 0)}/{desired} running, "
                f"{replicas.get('healthy', 0)}/{desired} healthy")
        old = len(containers) - len(on_current)
        if old:
            line += f", {len(on_current)}/{desired} at v{version} ({old} older to retire)"
    notes = []
    if detail.get("pending_reason"):
        notes.append(f"pending: {detail['pending_reason']}")
    failed = [c for c in containers if c.get("status") == "failed" or c.get("reason")]
    for c in failed[:3]:
        notes.append(f"{name}.{_cell(c.get('index'))} {c.get('status')}: {_cell(c.get('reason'))}")
    if len(failed) > 3:
        notes.append(f"{len(failed) - 3} more with problems")
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _why_not_converged(detail: dict[str, Any]) -> list[str]:
    """The lines `deploy` prints for a service that did not converge: the pending reason and every
    container that is not running and healthy, with its reason."""
    name = detail.get("name", "?")
    lines = []
    if detail.get("pending_reason"):
        lines.append(f"  pending: {detail['pending_reason']}")
    for c in detail.get("containers") or []:
        if c.get("status") == "running" and c.get("health") in (None, "healthy") and not c.get("reason"):
            continue
        lines.append(f"  {name}.{_cell(c.get('index'))} on {_cell(c.get('node'))} (v{_cell(c.get('version'))}): "
                     f"{_cell(c.get('status'))}, health {_cell(c.get('health'))}"
                     + (f": {c['reason']}" if c.get("reason") else ""))
    return lines


_GAVE_UP = ("TIMEOUT", "FAILED", "ROLLOUT_HALTED", "ROLLOUT_REVERTED")


def _converged_line(name: str, detail: dict[str, Any]) -> str:
    canary = detail.get("canary") or {}
    if canary.get("version") is not None:
        return (f"{name}: canary v{canary['version']} running beside v{detail.get('version')}: "
                f"`orca promote {name}` rolls it out, `orca rollback {name}` drops it")
    return f"{name}: converged"


def _wait_for_rollout(client: Client, names: list[str], timeout_s: float, out: TextIO,
                      versions: dict[str, Any] | None = None) -> int:
    """Wait for each deployed service in turn against one deadline; 0 when all converged, else 1 (also
    when a rollout halted or was auto-reverted: the version asked for is not what runs)."""
    deadline = time.monotonic() + timeout_s
    versions = versions if isinstance(versions, dict) else {}

    def report(detail: dict[str, Any]) -> None:
        print(progress_line(detail), file=out, flush=True)

    for i, name in enumerate(names):
        expect = versions.get(name)
        try:
            final = client.wait_converged(name, max(0.0, deadline - time.monotonic()), report,
                                          expect_version=expect if isinstance(expect, int) else None)
        except ApiError as err:
            if err.code not in _GAVE_UP:
                raise
            detail = err.details if isinstance(err.details, dict) else {}
            print(f"error: {err.message}", file=sys.stderr)
            if err.code != "ROLLOUT_REVERTED":  # reverted: the containers are the revert's, not the culprits
                for line in _why_not_converged(detail):
                    print(line, file=sys.stderr)
            for rest in names[i + 1:]:  # one look at the others, so the report is complete
                other = client.service(rest)
                if not is_converged(other):
                    print(f"error: {rest} has not converged either: {progress_line(other)}", file=sys.stderr)
            if err.code == "ROLLOUT_REVERTED":
                print(f"the cluster is rolling the previous spec back in; see `orca ps {name}` and "
                      f"`orca history {name}`", file=sys.stderr)
            elif err.code == "ROLLOUT_HALTED":
                print(f"the rollout stays halted with the old replicas serving: fix the spec and deploy again, "
                      f"or `orca rollback {name}`", file=sys.stderr)
            else:
                print("the deploy itself stands and the cluster keeps trying; see `orca ps SERVICE`",
                      file=sys.stderr)
            return 1
        print(_converged_line(name, final if isinstance(final, dict) else {}), file=out, flush=True)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    specs = load_services(args.file)
    with _client(args) as client:
        result = client.deploy(specs)
        errors = result.get("errors") or []

        def human() -> str:
            return "\n".join(f"deployed {name}" for name in result.get("deployed") or [])

        _emit(args, result, human, sys.stdout)
        if args.output != "json":
            for err in errors:
                print(f"error: {err.get('service', '?')}: {err.get('error')}", file=sys.stderr)
        code = 1 if errors else 0
        deployed = [str(n) for n in result.get("deployed") or []]
        if args.detach or not deployed:
            return code
        # Progress is for people: with -o json stdout holds only the deploy result.
        out = sys.stderr if args.output == "json" else sys.stdout
        try:
            return _wait_for_rollout(client, deployed, args.timeout, out, result.get("versions")) or code
        except KeyboardInterrupt:
            print("\ninterrupted: the deploy stands and goes on in the cluster (orca status)", file=sys.stderr)
            return 130


def _after_switch(args: argparse.Namespace, client: Client, result: dict[str, Any]) -> int:
    """promote/rollback: with --wait, follow the rollout they started like deploy does."""
    if not args.wait:
        return 0
    out = sys.stderr if args.output == "json" else sys.stdout
    try:
        return _wait_for_rollout(client, [args.name], args.timeout, out, {args.name: result.get("version")})
    except KeyboardInterrupt:
        print(f"\ninterrupted: the rollout goes on in the cluster (orca ps {args.name})", file=sys.stderr)
        return 130


def cmd_promote(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    with _client(args) as client:
        result = client.promote(args.name)
        _emit(args, result, lambda: f"promoted {result.get('name', args.name)}: v{_cell(result.get('version'))} "
                                    f"rolls out to every replica", sys.stdout)
        return _after_switch(args, client, result)


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    with _client(args) as client:
        result = client.rollback(args.name)

        def human() -> str:
            name = result.get("name", args.name)
            if result.get("dropped_canary") is not None:
                return (f"{name}: dropped canary v{result['dropped_canary']}; "
                        f"v{_cell(result.get('version'))} stays current")
            spec_of = f" (spec of v{result['spec_of']})" if result.get("spec_of") is not None else ""
            return f"rolled back {name}: v{_cell(result.get('version'))}{spec_of} rolls out"

        _emit(args, result, human, sys.stdout)
        return _after_switch(args, client, result)


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "deploy", cmd_deploy, "create or update services from a file or project directory")
    p.add_argument("-f", "--file", required=True, metavar="FILE",
                   help="JSON/TOML: {services: [...]}, [[services]], or one spec; or a directory of "
                        "services/*/service.toml")
    p.add_argument("--detach", action="store_true", help="return at once, do not wait for the rollout")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for every service to converge (default 120); exit 1 after it")

    for name, handler, help_text in (
            ("promote", cmd_promote, "roll the canary out to every replica"),
            ("rollback", cmd_rollback, "drop the canary; without one, roll back to the previous version")):
        p = verb(verbs, name, handler, help_text)
        p.add_argument("name", metavar="SERVICE")
        p.add_argument("--wait", action="store_true", help="follow the rollout it starts, like deploy")
        p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                       help="with --wait: how long before exit 1 (default 120)")
