"""`orca <verb>`: the command line, a thin layer over `orca.client.Client`.

Exit codes are part of the contract scripts rely on: 0 success, 1 the cluster refused or failed (the
server's message and code on stderr, never a traceback), 2 a usage error (bad arguments, an unreadable
deploy file). Tables are for people; `-o json` prints the server's response for scripts.

Global options (`--api`, `--token`, `-o`) may be given before or after the verb.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from orca import __version__
from orca.client import ApiError, Client
from orca.errors import OrcaError

__all__ = ["main", "build_parser", "load_services", "format_table", "resolve_token", "UsageError"]

DEFAULT_API = "http://127.0.0.1:6880"
ROLES = ("admin", "deployer", "viewer", "agent")


class UsageError(Exception):
    """Bad input from the person at the keyboard: exit 2 with one line, no traceback."""


# ---------------------------------------------------------------------- helpers


def resolve_token(flag: str | None) -> str | None:
    """`--token`, else `$ORCA_TOKEN`, else `~/.orca/token` (what bootstrap writes), else none."""
    if flag:
        return flag.strip()
    env = os.environ.get("ORCA_TOKEN", "").strip()
    if env:
        return env
    path = Path.home() / ".orca" / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; None shows as "-" so columns never look shifted."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _fmt_time(ts: Any) -> Any:
    """Epoch seconds as local ISO time; anything else (already a string, None) unchanged."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return ts


def _read_doc(path: Path) -> Any:
    """Parse one JSON or TOML file; the suffix decides, and an unknown suffix tries JSON then TOML."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix != ".toml":
        try:
            return json.loads(text)
        except ValueError as exc:
            if suffix == ".json":
                raise UsageError(f"{path}: invalid JSON: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from exc


def _specs_from_doc(doc: Any, path: Path) -> list[dict[str, Any]]:
    """`{"services": [...]}` (also TOML `[[services]]`), `{"service": {...}}`, a single spec, or a list."""
    if isinstance(doc, list):
        specs = doc
    elif isinstance(doc, dict) and "services" in doc:
        specs = doc["services"]
        if not isinstance(specs, list):
            raise UsageError(f"{path}: 'services' must be a list of service specs")
    elif isinstance(doc, dict) and isinstance(doc.get("service"), dict) and len(doc) == 1:
        specs = [doc["service"]]
    elif isinstance(doc, dict):
        specs = [doc]
    else:
        raise UsageError(f"{path}: expected a service spec or {{\"services\": [...]}}")
    if not specs:
        raise UsageError(f"{path}: no services")
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise UsageError(f"{path}: service #{i + 1} is not a table/object")
    return [dict(s) for s in specs]


def load_services(path: str | Path) -> list[dict[str, Any]]:
    """The service specs a deploy file or directory holds, in a stable order.

    A directory is a project laid out one service per folder: every `services/*/service.toml` in it
    (or `*/service.toml` when the directory is itself the `services` folder). A service file without
    a `name` takes its folder's name, so renaming the folder is all it takes to copy a service.
    Validation is the server's job (one validator, in one place); this only finds and parses.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("services/*/service.toml")) or sorted(path.glob("*/service.toml"))
        if not files:
            raise UsageError(f"{path}: no services/*/service.toml in this directory")
        specs: list[dict[str, Any]] = []
        for file in files:
            found = _specs_from_doc(_read_doc(file), file)
            if len(found) != 1:
                raise UsageError(f"{file}: a service.toml holds exactly one service, found {len(found)}")
            found[0].setdefault("name", file.parent.name)
            specs.extend(found)
        return specs
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    return _specs_from_doc(_read_doc(path), path)


def _claims_dict(claims: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(claims) and not isinstance(claims, type):
        return dataclasses.asdict(claims)
    if isinstance(claims, dict):
        return dict(claims)
    return {k: v for k, v in vars(claims).items() if not k.startswith("_")}


# ---------------------------------------------------------------------- verbs
# Each handler takes the parsed args and returns an exit code; ApiError and UsageError propagate to
# main, which prints them in one place.


def _client(args: argparse.Namespace) -> Client:
    try:
        return Client(args.api, resolve_token(args.token))
    except ValueError as exc:  # a malformed --api is the user's typo, not a cluster failure
        raise UsageError(f"--api: {exc}") from exc


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str | None], out: TextIO) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True, default=str), file=out)
        return
    text = human()
    if text:
        print(text, file=out)


def cmd_server(args: argparse.Namespace) -> int:
    # Imported here: the CLI must start (and `orca status` work) without loading the master.
    from orca.master.main import run_server

    return int(run_server(args.config))


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    if args.secret_file:
        # Offline: how the first admin token of a fresh cluster is made (no bootstrap endpoint).
        from orca.auth import mint_token, signing_key

        try:
            secret = Path(args.secret_file).read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"{args.secret_file}: {exc.strerror or exc}") from exc
        if not secret:
            raise UsageError(f"{args.secret_file}: the cluster secret is empty")
        try:
            token, claims = mint_token(signing_key(secret), role=args.role, name=args.name,
                                       now=time.time(), ttl_s=args.ttl)
        except OrcaError as exc:  # e.g. a name the token format does not allow
            raise UsageError(exc.message) from exc
        result: dict[str, Any] = {"token": token, **_claims_dict(claims)}
    else:
        with _client(args) as client:
            result = client.create_token(args.role, args.name, args.ttl)
    # Only the token on stdout, so `TOKEN=$(orca token create ...)` works.
    _emit(args, result, lambda: str(result["token"]), sys.stdout)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_tokens()
    rows = [[t.get("jti"), t.get("name", t.get("sub")), t.get("role"),
             _fmt_time(t.get("created_at", t.get("iat"))), _fmt_time(t.get("expires_at", t.get("exp"))),
             bool(t.get("revoked"))] for t in tokens]
    _emit(args, {"tokens": tokens},
          lambda: format_table(["JTI", "NAME", "ROLE", "ISSUED", "EXPIRES", "REVOKED"], rows), sys.stdout)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.revoke_token(args.jti)
    _emit(args, result, lambda: f"revoked {args.jti}", sys.stdout)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
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
    return 1 if errors else 0


def status_rows(services: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per service for the status table (split out so it is testable without a server)."""
    rows = []
    for s in services:
        rows.append([s.get("name"), s.get("project"), s.get("status"),
                     f"{s.get('running_replicas', 0)}/{s.get('replicas', 0)}", s.get("healthy_replicas"),
                     s.get("image"), s.get("version"), s.get("pending_reason")])
    return rows


STATUS_HEADERS = ["NAME", "PROJECT", "STATUS", "REPLICAS", "HEALTHY", "IMAGE", "VERSION", "PENDING"]


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        services = client.status(args.project)

    def human() -> str:
        if not services:
            return "no services"
        return format_table(STATUS_HEADERS, status_rows(services))

    _emit(args, {"services": services}, human, sys.stdout)
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise UsageError("replicas must be >= 0")
    with _client(args) as client:
        result = client.scale(args.name, args.replicas)
    _emit(args, result, lambda: (f"scaled {result.get('name', args.name)}: "
                                 f"{_cell(result.get('previous_replicas'))} -> "
                                 f"{result.get('replicas', args.replicas)}"), sys.stdout)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    given = [x for x in (args.name, args.project, args.all or None) if x]
    if len(given) != 1:
        raise UsageError("stop takes exactly one of: NAME, --project P, --all")
    if args.purge and not args.name:
        raise UsageError("--purge applies to one service: orca stop NAME --purge")
    with _client(args) as client:
        if args.name:
            result = client.stop(args.name, purge=args.purge)
            what = f"{'purged' if args.purge else 'stopped'} {args.name}"
        elif args.project:
            result = client.stop_project(args.project)
            what = f"stopped project {args.project}"
        else:
            result = client.stop_all()
            what = "stopped every service"
    _emit(args, result, lambda: what, sys.stdout)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.start(args.name)
    _emit(args, result, lambda: f"started {args.name}", sys.stdout)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args) as client:
        events = client.events(service=args.service, type=args.type, since=args.since, limit=args.limit)
    rows = [[_fmt_time(e.get("time", e.get("timestamp"))), e.get("type"), e.get("service"),
             e.get("actor"), e.get("message", e.get("detail"))] for e in events]
    _emit(args, {"events": events},
          lambda: format_table(["TIME", "TYPE", "SERVICE", "ACTOR", "MESSAGE"], rows), sys.stdout)
    return 0


def cluster_info_text(info: dict[str, Any]) -> str:
    """Masters table, then leader/term/commit index, then nodes when there are any."""
    masters = info.get("masters") or []
    parts = [format_table(["ID", "API", "STATE", "HEALTHY", "LAST_CONTACT"],
                          [[m.get("id"), m.get("api_url"), m.get("state"), m.get("healthy"),
                            m.get("last_contact")] for m in masters])]
    leader = info.get("leader")
    if isinstance(leader, dict):
        leader = leader.get("id") or leader.get("leader_id") or leader.get("api_url")
    commit = info.get("commit_index", info.get("commit"))
    parts.append(f"leader: {_cell(leader)}  term: {_cell(info.get('term'))}  commit index: {_cell(commit)}")
    nodes = info.get("nodes") or []
    if nodes:
        parts.append(format_table(["NODE", "ADDRESS", "STATUS", "ELIGIBILITY", "ALLOCATIONS"],
                                  [[n.get("id"), n.get("address"), n.get("status"), n.get("eligibility"),
                                    n.get("allocations") if not isinstance(n.get("allocations"), list)
                                    else len(n["allocations"])] for n in nodes]))
    return "\n\n".join(parts)


def cmd_cluster_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.cluster_info()
    _emit(args, info, lambda: cluster_info_text(info), sys.stdout)
    return 0


def cmd_cluster_leader(args: argparse.Namespace) -> int:
    with _client(args) as client:
        leader = client.cluster_leader()

    def human() -> str:
        ident = leader.get("leader_id", leader.get("id", leader.get("leader")))
        url = leader.get("api_url", leader.get("leader_url", leader.get("url")))
        return f"leader: {_cell(ident)}  api: {_cell(url)}  term: {_cell(leader.get('term'))}"

    _emit(args, leader, human, sys.stdout)
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.cluster_status()
    _emit(args, result, lambda: json.dumps(result, indent=2, sort_keys=True, default=str), sys.stdout)
    return 0


# ---------------------------------------------------------------------- parser


def _global_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: the verb's copy only overrides the top-level one when actually given.
    parser.add_argument("--api", default=argparse.SUPPRESS,
                        help=f"master API URL(s), comma-separated (env ORCA_API, default {DEFAULT_API})")
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token (else env ORCA_TOKEN, else ~/.orca/token)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default table)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    parser = argparse.ArgumentParser(prog="orca", description="A Raft-clustered container orchestrator.")
    parser.add_argument("--version", action="version", version=f"orca {__version__}")
    _global_options(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str,
             **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help, **kw)
        p.set_defaults(handler=handler)
        return p

    p = verb(verbs, "server", cmd_server, "run a master")
    p.add_argument("--config", required=True, metavar="FILE", help="master TOML config")

    p = verbs.add_parser("token", parents=[common], help="create, list and revoke API tokens")
    tokens = p.add_subparsers(dest="token_verb", metavar="ACTION", required=True)
    p = verb(tokens, "create", cmd_token_create,
             "mint a token: offline with --secret-file, else by the leader (recorded, revocable)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", required=True, help="who the token is for (its `sub`)")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expiry (default: none)")
    p.add_argument("--secret-file", metavar="F", help="cluster secret file: mint offline, no API call")
    verb(tokens, "list", cmd_token_list, "list recorded tokens")
    p = verb(tokens, "revoke", cmd_token_revoke, "revoke a recorded token")
    p.add_argument("jti")

    p = verb(verbs, "deploy", cmd_deploy, "create or update services from a file or project directory")
    p.add_argument("-f", "--file", required=True, metavar="FILE",
                   help="JSON/TOML: {services: [...]}, [[services]], or one spec; or a directory of "
                        "services/*/service.toml")
    p.add_argument("--detach", action="store_true",
                   help="do not wait for the rollout (currently the CLI never waits)")

    p = verb(verbs, "status", cmd_status, "list services")
    p.add_argument("--project", help="only this project")

    p = verb(verbs, "scale", cmd_scale, "set the replica count of a service")
    p.add_argument("name")
    p.add_argument("replicas", type=int)

    p = verb(verbs, "stop", cmd_stop, "stop a service (orca stop NAME [--purge]), a project "
             "(orca stop --project P) or everything (orca stop --all, admin)")
    p.add_argument("name", nargs="?")
    p.add_argument("--purge", action="store_true", help="also forget the service's config")
    p.add_argument("--project", help="stop every service of this project")
    p.add_argument("--all", action="store_true", help="stop every service of the cluster")

    p = verb(verbs, "start", cmd_start, "resume a stopped service")
    p.add_argument("name")

    p = verb(verbs, "events", cmd_events, "show the event history")
    p.add_argument("--service")
    p.add_argument("--type")
    p.add_argument("--since", help="timestamp (epoch seconds or ISO-8601)")
    p.add_argument("--limit", type=int)

    p = verbs.add_parser("cluster", parents=[common], help="masters, leader and nodes")
    cluster = p.add_subparsers(dest="cluster_verb", metavar="ACTION", required=True)
    verb(cluster, "info", cmd_cluster_info, "masters, leader, term, commit index and nodes")
    verb(cluster, "leader", cmd_cluster_leader, "the current leader")
    verb(cluster, "status", cmd_cluster_status, "cluster status (Orchestry-compatible JSON)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `orca` console script and `python -m orca`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own exits: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "api", None) is None:
        args.api = os.environ.get("ORCA_API", "").strip() or DEFAULT_API
    args.token = getattr(args, "token", None)
    args.output = getattr(args, "output", None) or "table"
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"orca: error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        details = exc.details if isinstance(exc.details, dict) else {}
        for err in details.get("errors") or []:
            if isinstance(err, dict):
                print(f"error: {err.get('service', '?')}: {err.get('error')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
