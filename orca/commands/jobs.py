"""`orca run -f job.toml`: run a job (`kind = "job"`) to completion, print its logs and exit with its code.

A new job, or a changed spec, runs when deployed; an unchanged one gets a new run (`POST .../run`). The verb
waits until every replica of that run has ended (complete or given up), prints the replicas' logs, then a
summary line on stderr, and exits with the first non-zero exit code (0 when all completed; 1 when a replica
gave up without an exit code, or on timeout). A periodic job (`schedule`) is only deployed: its runs come
from the leader's schedule (`orca ps NAME` shows them).

"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from orca.client import ApiError
from orca.commands.common import UsageError, _client
from orca.commands.specfile import load_services

__all__ = ["add_parsers", "exit_code_of"]

_POLL_S = 0.5


def exit_code_of(detail: dict[str, Any]) -> int:
    """The process exit code `orca run` returns for a finished job run."""
    job = detail.get("job") or {}
    codes = [c for c in job.get("exit_codes") or [] if c not in (None, 0)]
    if codes:
        return int(codes[0]) if 0 < int(codes[0]) < 256 else 1
    return 0 if detail.get("status") == "complete" else 1


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `orca run`."""

    def cmd_run(args: argparse.Namespace) -> int:
        specs = load_services(args.file)
        if len(specs) != 1 or specs[0].get("kind") != "job":
            raise UsageError("orca run takes a file with exactly one job (kind = \"job\")")
        spec = specs[0]
        name = str(spec.get("name"))
        with _client(args) as client:
            try:
                before = client.service(name)
            except ApiError as err:
                if err.code != "SERVICE_NOT_FOUND":
                    raise
                before = None
            result = client.deploy([spec])
            if result.get("errors"):
                for err in result["errors"]:
                    print(f"error: {err.get('service', '?')}: {err.get('error')}", file=sys.stderr)
                return 1
            if spec.get("schedule"):
                print(f"deployed periodic job {name} ({spec['schedule']}, UTC); see `orca ps {name}`")
                return 0
            version = (result.get("versions") or {}).get(name)
            if before is not None and before.get("version") == version:
                run = int(client.run_job(name)["run"])
            else:
                run = int((client.service(name).get("job") or {}).get("run", 0))
            deadline = time.monotonic() + args.timeout
            detail = client.service(name)
            while time.monotonic() < deadline:
                detail = client.service(name)
                job = detail.get("job") or {}
                if int(job.get("run", -1)) == run and detail.get("version") == version \
                        and detail.get("status") in ("complete", "failed"):
                    break
                time.sleep(_POLL_S)
            else:
                print(f"error: job {name} run {run} did not finish within {args.timeout:g} s "
                      f"(status {detail.get('status')}); it goes on in the cluster", file=sys.stderr)
                return 1
            for line in client.logs(name, tail=args.tail):
                print(line)
            code = exit_code_of(detail)
            print(f"job {name} run {run}: {detail.get('status')} (exit code {code})", file=sys.stderr)
            return code

    p = verb(verbs, "run", cmd_run, "run a job (kind = \"job\") to completion: print its logs, exit with its code")
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="JSON/TOML file with one job spec")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for the run to end (default 600)")
    p.add_argument("--tail", type=int, default=1000, metavar="N", help="log lines per replica (default 1000)")
