"""`orca version` (and `orca --version`): the client's version and the version of the master that answers.

The server's comes from `GET /api/v1/health` (public: no token needed), so it also tells which master
answered and its state-schema version. `orca version` exits 1 when no master answers (the client line is
printed first); `orca --version` and `orca version --client` never ask the cluster's opinion to exit 0.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from typing import Any

from orca import __version__
from orca.client import ApiError
from orca.commands.common import _client, next_step
from orca.commands.output import _emit

__all__ = ["add_parsers", "cmd_version", "version_info"]


def version_info(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """{"client": ..., "server": ... or None} and, when no master answered, why not."""
    info: dict[str, Any] = {"client": {"version": __version__, "python": platform.python_version()},
                            "server": None}
    if getattr(args, "client_only", False):
        return info, None
    try:
        with _client(args) as client:
            health = client.request("GET", "/api/v1/health")
            answered = str(getattr(client, "_last_good", None) or client.apis[0]).rstrip("/")
    except ApiError as err:
        info["error_code"] = err.code
        return info, f"{err.message} ({err.code})"
    info["server"] = {"version": health.get("version"), "node_id": health.get("node_id"), "api": answered,
                      "schema_version": health.get("schema_version"), "status": health.get("status")}
    return info, None


def version_text(info: dict[str, Any], error: str | None) -> str:
    lines = [f"client: orca {info['client']['version']} (Python {info['client']['python']})"]
    server = info.get("server")
    if server:
        lines.append(f"server: orca {server['version']} on {server['node_id']} at {server['api']} "
                     f"(state schema {server['schema_version']}, {server['status']})")
    elif error:
        lines.append(f"server: unknown: {error}")
    return "\n".join(lines)


def cmd_version(args: argparse.Namespace) -> int:
    info, error = version_info(args)
    error_code = info.pop("error_code", None)
    if error:
        info["server_error"] = error
    _emit(args, info, lambda: version_text(info, error), sys.stdout)
    if error and not getattr(args, "from_flag", False):
        hint = next_step(error_code or "")
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 1
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "version", cmd_version, "the client's version and the version of the master that answers")
    p.add_argument("--client", dest="client_only", action="store_true", help="only the client's version")
