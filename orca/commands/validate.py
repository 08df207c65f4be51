"""`orca validate -f FILE`: check a deploy file without a cluster.

The file (or project directory) is read exactly as `orca deploy -f` reads it, then checked against the
published JSON Schema (docs/spec.schema.json, `orca.spec_schema`: every structural problem at once, with
its field path) and against the rules a schema cannot say (`orca.spec.validate_deploy_body`, the code the
API runs). Exit 0 when the cluster would accept every service, 1 with one line per problem otherwise,
2 when the file cannot be read. No token, no network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_parsers", "cmd_validate"]


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "validate", cmd_validate, "check a deploy file against the spec schema, without a cluster")
    p.add_argument("-f", "--file", help="JSON or TOML file, or a project directory "
                                                       "(services/*/service.toml), as for `orca deploy -f`")
    p.add_argument("--schema", action="store_true",
                   help="print the JSON Schema the file is checked against (docs/spec.schema.json) and exit")


def cmd_validate(args: argparse.Namespace) -> int:
    from orca.spec_schema import check_services, spec_schema

    if args.schema:
        print(json.dumps(spec_schema(), indent=2, ensure_ascii=False))
        return 0
    from orca.commands.common import UsageError
    from orca.commands.specfile import load_services

    if not args.file:
        raise UsageError("validate needs -f FILE (a deploy file or a project directory), or --schema")
    specs = load_services(args.file)  # UsageError (exit 2) for a file that cannot be read or parsed
    problems = check_services(specs)
    names = ", ".join(str(s.get("name", f"#{i}")) for i, s in enumerate(specs))
    if getattr(args, "output", None) == "json":
        print(json.dumps({"file": args.file, "services": len(specs), "valid": not problems, "problems": problems}))
        return 1 if problems else 0
    if problems:
        for line in problems:
            print(f"{args.file}: {line}", file=sys.stderr)
        print(f"{args.file}: {len(problems)} problem(s); fix them and run `orca validate -f {args.file}` again "
              "(every field: docs/spec.md)", file=sys.stderr)
        return 1
    print(f"{args.file}: valid ({len(specs)} service{'s' if len(specs) != 1 else ''}: {names})")
    return 0
