"""`orca <verb>`: the command line, a thin layer over `orca.client.Client`.

Exit codes are part of the contract scripts rely on: 0 success, 1 the cluster refused or failed (the
server's message and code on stderr, never a traceback), 2 a usage error (bad arguments, an unreadable
deploy file). Tables are for people; `-o json` prints the server's response for scripts.

Global options (`--api`, `--token`, `--context`, `-o`, `-v`) may be given before or after the verb.
Where the cluster is and which token to use: flags, else `ORCA_API`/`ORCA_TOKEN`, else the current
context of `~/.orca/config.toml` (`orca context`, `orca.sdk.config`), else master-1 and `~/.orca/token`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from orca import __version__, cli_ui
from orca.client import ApiError, Client, is_converged
from orca.errors import OrcaError
from orca.sdk import config as client_config

__all__ = ["main", "build_parser", "load_services", "format_table", "resolve_token", "parse_duration", "UsageError"]

DEFAULT_API = client_config.DEFAULT_API
ROLES = ("admin", "deployer", "viewer", "agent")


class UsageError(Exception):
    """Bad input from the person at the keyboard: exit 2 with one line, no traceback."""


# ---------------------------------------------------------------------- helpers


def resolve_token(flag: str | None) -> str | None:
    """`--token`, else `$ORCA_TOKEN`, else `~/.orca/token` (what bootstrap writes), else none.
    (`_client` also consults the context between the two last; see `orca.sdk.config.resolve`.)"""
    if flag:
        return flag.strip()
    env = os.environ.get("ORCA_TOKEN", "").strip()
    return env or client_config.home_token()


def resolve_ca_file(flag: str | None, context_ca: str | None = None) -> str | None:
    """`--cacert`, else `$ORCA_CACERT`, else the client context's `ca_file`, else `~/.orca/ca.crt` when
    it exists (what the bootstrap copies the cluster CA to), else the system trust store (None)."""
    if flag:
        return flag
    env = os.environ.get("ORCA_CACERT", "").strip()
    if env:
        return env
    if context_ca:
        return context_ca
    path = Path.home() / ".orca" / "ca.crt"
    return str(path) if path.is_file() else None


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


def _age(ts: Any, now: float | None = None) -> Any:
    """An ISO-8601 time (or epoch seconds) as "4s ago" / "3m ago" / "2h ago" / "5d ago"; else unchanged."""
    if isinstance(ts, str):
        try:
            parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return ts
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        seconds = parsed.timestamp()
    elif isinstance(ts, int | float) and not isinstance(ts, bool):
        seconds = float(ts)
    else:
        return ts
    delta = max(0, int((time.time() if now is None else now) - seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit} ago"
    return f"{delta}s ago"


def human_bytes(n: Any) -> str:
    """Bytes as MiB below 1 GiB and GiB above, e.g. `512MiB`, `3.5GiB`; "-" when unknown."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}".removesuffix(".0") + "GiB"
    return f"{n / (1 << 20):.0f}MiB" if n else "0"


_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h`, `1h30m`, `2.5m` -> seconds; ValueError for anything else."""
    t = str(text).strip().lower()
    found = _DURATION.fullmatch(t) if t else None
    if found is None or not any(found.groups()):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 90, 90s, 5m, 1h30m)")
    h, m, sec = (float(g) if g else 0.0 for g in found.group("h", "m", "s"))
    return h * 3600 + m * 60 + sec


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def fmt_duration(seconds: float) -> str:
    """Seconds as `4m10s`, `45s`, `1h2m5s`, `5m` (whole seconds, rounded up so "in 0s" means now)."""
    total = max(0, int(-(-seconds // 1)))
    h, rest = divmod(total, 3600)
    m, sec = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return text or "0s"


def _epoch(ts: Any) -> float | None:
    """An ISO-8601 time or epoch seconds as epoch seconds; None when it is neither."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, str):
        try:
            parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    return None


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


def _report_skip(url: str, error: BaseException) -> None:
    print(f"orca: skipped {url}: {error or type(error).__name__}", file=sys.stderr)


def _client(args: argparse.Namespace) -> Client:
    """A client for the cluster the flags, environment or context name (see the module docstring)."""
    try:
        target = client_config.resolve(getattr(args, "api", None), getattr(args, "token", None),
                                       getattr(args, "context", None))
    except client_config.ConfigFileError as exc:
        raise UsageError(str(exc)) from exc
    try:
        ca_file = resolve_ca_file(getattr(args, "cacert", None), target.ca_file)
        return Client(",".join(target.endpoints), target.token, ca_file=ca_file,
                      on_skip=_report_skip if getattr(args, "verbose", False) else None)
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
    if args.role == "agent" and not args.node:
        raise UsageError("--role agent needs --node ID: an agent token is bound to one node")
    if args.role != "agent" and args.node:
        raise UsageError("--node is only for --role agent")
    name = args.name or args.node  # an agent token is named after its node unless told otherwise
    if not name:
        raise UsageError("--name is required (who the token is for)")
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
            token, claims = mint_token(signing_key(secret), role=args.role, name=name,
                                       now=time.time(), ttl_s=args.ttl, node=args.node,
                                       projects=args.project)
        except OrcaError as exc:  # e.g. a name the token format does not allow
            raise UsageError(exc.message) from exc
        result: dict[str, Any] = {"token": token, **_claims_dict(claims)}
    else:
        with _client(args) as client:
            scope = {"projects": args.project} if args.project else {}
            result = client.create_token(args.role, name, args.ttl, node=args.node, **scope)
    # Only the token on stdout, so `TOKEN=$(orca token create ...)` works.
    _emit(args, result, lambda: str(result["token"]), sys.stdout)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_tokens()
    rows = [[t.get("jti"), t.get("name", t.get("sub")), t.get("role"), t.get("node") or "-",
             ",".join(t.get("projects") or []) or "-",
             _fmt_time(t.get("created_at", t.get("iat"))), _fmt_time(t.get("expires_at", t.get("exp"))),
             bool(t.get("revoked"))] for t in tokens]
    _emit(args, {"tokens": tokens},
          lambda: format_table(["JTI", "NAME", "ROLE", "NODE", "PROJECTS", "ISSUED", "EXPIRES", "REVOKED"], rows),
          sys.stdout)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.revoke_token(args.jti)
    _emit(args, result, lambda: f"revoked {args.jti}", sys.stdout)
    return 0


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


EVENT_HEADERS = ["TIME", "TYPE", "SERVICE/NODE", "ACTOR", "MESSAGE"]
# Followed events are printed one line at a time, so their columns cannot be sized to the rows: fixed
# widths that fit the usual values (an ISO time, the event types, DNS-label names); longer ones push on.
_EVENT_WIDTHS = (24, 20, 16, 14)


def event_row(event: dict[str, Any]) -> list[Any]:
    """TIME TYPE SERVICE/NODE ACTOR MESSAGE of one event (the node when it is about no service)."""
    return [_fmt_time(event.get("time", event.get("timestamp"))), event.get("type"),
            event.get("service") or event.get("node"), event.get("actor"), event.get("message", event.get("detail"))]


def event_line(event: dict[str, Any]) -> str:
    """One event as a fixed-width line under `event_header()`, for `orca events -f`."""
    *cells, message = [_cell(v) for v in event_row(event)]
    return "  ".join([*(c.ljust(w) for c, w in zip(cells, _EVENT_WIDTHS, strict=True)), message]).rstrip()


def event_header() -> str:
    return "  ".join([*(h.ljust(w) for h, w in zip(EVENT_HEADERS, _EVENT_WIDTHS, strict=False)),
                      EVENT_HEADERS[-1]])


def _silence_stdout() -> None:
    """The reader of our stdout left (`orca ... | head`): send what is still buffered nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def cmd_events(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    with _client(args) as client:
        events = client.events(service=args.service, type=args.type, since=args.since, limit=args.limit)
        if args.follow:
            return _follow_events(args, client, events)
    rows = [event_row(e) for e in events]
    _emit(args, {"events": events}, lambda: format_table(EVENT_HEADERS, rows), sys.stdout)
    return 0


def _follow_events(args: argparse.Namespace, client: Client, history: list[dict[str, Any]]) -> int:
    """`events -f`: the history just read, then every new event as it is committed (one JSON object a
    line with -o json), until Ctrl-C (130) or the server ends the stream (0)."""
    as_json = args.output == "json"

    def show(event: dict[str, Any]) -> None:
        sys.stdout.write((json.dumps(event, sort_keys=True, default=str) if as_json else event_line(event)) + "\n")
        sys.stdout.flush()

    seqs = [e["seq"] for e in history if isinstance(e.get("seq"), int) and not isinstance(e.get("seq"), bool)]
    # Resume right after what was shown, so nothing committed in between is lost or shown twice. With
    # nothing shown and no --since, nothing in the kept log matches the filters: replay from the start.
    since = max(seqs) if seqs else (0 if args.since is None else None)
    stream = client.stream_events(args.service, args.type, since)
    try:
        if not as_json:
            print(event_header(), flush=True)
        for event in history:
            show(event)
        for event in stream:
            show(event)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    finally:
        stream.close()
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


def members_text(result: dict[str, Any]) -> str:
    rows = []
    for m in result.get("members", []):
        note = "" if m.get("in_raft") and m.get("listed") else (" (not in Raft yet)" if m.get("listed")
                                                                 else " (not listed)")
        contact = m.get("last_contact_s")
        rows.append([m.get("id"), m.get("raft"), m.get("api"), f"{m.get('role')}{note}",
                     "-" if contact is None else f"{contact:.2f}s ago", "-" if m.get("lag") is None else m["lag"]])
    return format_table(["ID", "RAFT", "API", "ROLE", "LAST CONTACT", "LAG"], rows)


def cmd_cluster_members(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.members()
    _emit(args, result, lambda: members_text(result), sys.stdout)
    return 0


def cmd_cluster_add_master(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.add_master(args.id, args.raft, args.master_api)
    _emit(args, result, lambda: (f"added master {args.id} (raft {args.raft}, api {args.master_api}) in "
                                 f"{result['seconds']} s"
                                 if result.get("added") else f"{args.id} is already a member"), sys.stdout)
    return 0


def cmd_cluster_remove_master(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.remove_master(args.id)
    _emit(args, result, lambda: f"removed master {args.id} ({result.get('raft')}); stop its process now",
          sys.stdout)
    return 0


def cmd_cluster_join_token(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl < 0:
        raise UsageError("--ttl must be a number of seconds (0: no expiry)")
    ttl = None if args.ttl == 0 else (86400.0 if args.ttl is None else args.ttl)
    with _client(args) as client:
        result = client.create_join_token(args.role, ttl_s=ttl, node=args.node, rotate=args.rotate)
    if result.get("rotated"):
        print(f"revoked {len(result['rotated'])} unused join token(s): {', '.join(result['rotated'])}",
              file=sys.stderr)
    # Only the token on stdout, so `orca cluster join-token worker >worker.token` works.
    _emit(args, result, lambda: str(result["token"]), sys.stdout)
    return 0


def cmd_cluster_init(args: argparse.Namespace) -> int:
    from orca.master.tls_manager import init_local_ca  # lazy: keeps `orca status` light

    fingerprint, created = init_local_ca(Path(args.data_dir))
    print(f"{'created' if created else 'kept the existing'} cluster CA {fingerprint} in "
          f"{Path(args.data_dir) / 'tls'} (the first leader records it in the replicated state)")
    return 0


def cmd_cluster_ca_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request("GET", "/api/v1/cluster/ca")
    if args.pem:
        sys.stdout.write(result["bundle"])
        return 0
    rows = [[c["fingerprint"], "yes" if c["current"] else "no (trusted until the rotation is finished)",
             _fmt_time(c.get("not_after"))] for c in result.get("cas", [])]
    _emit(args, result, lambda: f"{result['fingerprint']}\n\n"
          + format_table(["FINGERPRINT (SHA-256)", "CURRENT", "NOT AFTER"], rows), sys.stdout)
    return 0


def cmd_cluster_ca_rotate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request("POST", "/api/v1/cluster/ca/rotate", json={})
    _emit(args, result, lambda: f"new cluster CA {result['current']}; {len(result['trusted'])} CA(s) trusted until "
          "`orca cluster ca finish` (masters and nodes renew their certificates meanwhile)", sys.stdout)
    return 0


def cmd_cluster_ca_finish(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request("POST", "/api/v1/cluster/ca/finish", json={"force": True} if args.force else {})
    _emit(args, result, lambda: f"cluster CA {result['current']}; no longer trusted: "
          f"{', '.join(result.get('retired') or []) or 'none'}", sys.stdout)
    return 0


def cmd_cluster_join_tokens(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_join_tokens()
    rows = [[t.get("id"), t.get("role"), t.get("node") or "any", _fmt_time(t.get("created_at")),
             _fmt_time(t.get("expires_at")), t.get("used_by") or "-", bool(t.get("revoked"))] for t in tokens]
    _emit(args, {"join_tokens": tokens},
          lambda: format_table(["ID", "ROLE", "NODE", "CREATED", "EXPIRES", "USED BY", "REVOKED"], rows), sys.stdout)
    return 0


def cmd_cluster_revoke_join_token(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.revoke_join_token(args.id)
    _emit(args, result, lambda: f"revoked join token {args.id}", sys.stdout)
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.cluster_status()
    _emit(args, result, lambda: json.dumps(result, indent=2, sort_keys=True, default=str), sys.stdout)
    return 0


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


PS_HEADERS = ["ALLOC", "INDEX", "NODE", "VERSION", "STATUS", "HEALTH", "STARTED", "RESTARTS", "PORT", "REASON"]


def ps_rows(detail: dict[str, Any]) -> list[list[Any]]:
    return [[c.get("alloc"), c.get("index"), c.get("node"), c.get("version"), c.get("status"), c.get("health"),
             _age(c.get("started_at")), c.get("restarts"), c.get("host_port"), c.get("reason")]
            for c in detail.get("containers") or []]


def cmd_ps(args: argparse.Namespace) -> int:
    with _client(args) as client:
        detail = client.service(args.name)

    def human() -> str:
        replicas = detail.get("replicas") or {}
        head = (f"{detail.get('name', args.name)} v{_cell(detail.get('version'))} {_cell(detail.get('status'))}: "
                f"{replicas.get('running', 0)}/{replicas.get('desired', 0)} running, "
                f"{replicas.get('healthy', 0)}/{replicas.get('desired', 0)} healthy")
        if detail.get("pending_reason"):
            head += f" (pending: {detail['pending_reason']})"
        rows = ps_rows(detail)
        return head + "\n" + (format_table(PS_HEADERS, rows) if rows else "no containers")

    _emit(args, detail, human, sys.stdout)
    return 0


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


HISTORY_HEADERS = ["VERSION", "IMAGE", "DIGEST", "AT", "STATE"]


def history_rows(history: dict[str, Any]) -> list[list[Any]]:
    return [[v.get("version"), v.get("image"), v.get("digest"), v.get("at"),
             "current" if v.get("current") else ("canary" if v.get("canary") else None)]
            for v in history.get("versions") or []]


def cmd_history(args: argparse.Namespace) -> int:
    with _client(args) as client:
        history = client.history(args.name)

    def human() -> str:
        rows = history_rows(history)
        return format_table(HISTORY_HEADERS, rows) if rows else "no history"

    _emit(args, history, human, sys.stdout)
    return 0


def _secret_value(args: argparse.Namespace) -> str:
    """VALUE from the command line, else a hidden prompt on a terminal, else all of stdin (one trailing
    newline dropped, so `echo x | orca secrets set K` stores "x")."""
    if args.value is not None:
        return str(args.value)
    if sys.stdin is None:
        raise UsageError("no VALUE given and no stdin to read it from")
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {args.key}: ")
    else:
        value = sys.stdin.read()
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if value == "":
        raise UsageError("empty secret value (give VALUE or pipe it on stdin)")
    return value


def _grants_text(grants: Any) -> str:
    if not isinstance(grants, dict):
        return "admins only"
    if grants.get("all_projects"):
        return "all projects"
    return ", ".join(grants.get("projects") or []) or "admins only"


def _grants_column(grants: Any) -> str:
    """`*` all projects, `-` admins only, else the projects (names are DNS labels: never `*` or `-`)."""
    text = _grants_text(grants)
    return {"all projects": "*", "admins only": "-"}.get(text, text.replace(", ", ","))


def cmd_secrets_set(args: argparse.Namespace) -> int:
    if args.project and args.all_projects:
        raise UsageError("--project and --all-projects exclude each other")
    value = _secret_value(args)
    with _client(args) as client:
        if args.project or args.all_projects:
            result = client.set_secret(args.key, value, projects=args.project or [], all_projects=args.all_projects)
        else:
            result = client.set_secret(args.key, value)
    _emit(args, result, lambda: f"{'created' if result.get('created') else 'updated'} secret "
                                f"{result.get('key', args.key)}"
                                + (f" (granted to: {_grants_text(result['grants'])})" if "grants" in result else ""),
          sys.stdout)
    return 0


def cmd_secrets_grant(args: argparse.Namespace) -> int:
    chosen = sum((bool(args.project), args.all_projects, args.admin_only))
    if chosen != 1:
        raise UsageError("give --project P (repeatable), --all-projects or --admin-only")
    with _client(args) as client:
        result = client.grant_secret(args.key, args.project or [], args.all_projects)
    _emit(args, result, lambda: f"secret {args.key} granted to: {_grants_text(result.get('grants'))}", sys.stdout)
    return 0


def cmd_secrets_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        secrets = client.list_secrets()
    rows = [[s.get("key"), _grants_column(s.get("grants")), s.get("created_at"), s.get("updated_at")]
            for s in secrets]
    _emit(args, {"secrets": secrets},
          lambda: format_table(["KEY", "GRANTS", "CREATED", "UPDATED"], rows) if rows else "no secrets",
          sys.stdout)
    return 0


def cmd_secrets_rm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.delete_secret(args.key)
    _emit(args, result, lambda: f"deleted secret {args.key}", sys.stdout)
    return 0


# ---------------------------------------------------------------------- top


TOP_HEADERS = ["NAME", "REPLICAS", "RPS", "P95", "ERR%", "CPU%", "MEM%", "SCALING"]


def _number(value: Any, digits: int = 1, suffix: str = "") -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def scaling_mode(policy: Any) -> str:
    """`auto 2..10` for an autoscaled service, else `manual` (no policy, or one in manual mode)."""
    if isinstance(policy, dict) and policy.get("mode") == "auto":
        return f"auto {_cell(policy.get('min_replicas'))}..{_cell(policy.get('max_replicas'))}"
    return "manual"


def top_rows(snapshot: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per service of `_top_snapshot`: replicas running/desired, then the current sample (a
    dash for what is unknown: no traffic through a proxy yet, no stats from the agents yet)."""
    rows = []
    for s in snapshot:
        cur = s.get("metrics") if isinstance(s.get("metrics"), dict) else {}
        err = cur.get("error_rate")
        p95 = cur.get("p95_ms")
        rows.append([s.get("name"), f"{_cell(s.get('running'))}/{_cell(s.get('replicas'))}",
                     _number(cur.get("rps")), _number(p95, 0 if isinstance(p95, int | float) and p95 >= 10 else 1,
                                                      "ms"),
                     _number(err * 100 if isinstance(err, int | float) else None),
                     _number(cur.get("cpu_pct")), _number(cur.get("mem_pct")),
                     "-" if s.get("scaling_unknown") else scaling_mode(s.get("scaling"))])
    return rows


def _top_snapshot(client: Client, project: str | None) -> list[dict[str, Any]]:
    """Every service with its current metrics sample and scaling policy; a service whose metrics or
    policy could not be read (the leader unreachable, the service just removed) shows dashes there."""
    out = []
    for s in client.status(project):
        name = str(s.get("name"))
        item: dict[str, Any] = {"name": name, "status": s.get("status"), "replicas": s.get("replicas"),
                                "running": s.get("running_replicas"), "metrics": None, "scaling": None}
        try:
            item["metrics"] = (client.metrics(name) or {}).get("current")
        except ApiError:
            pass
        if "scaling" in s:
            item["scaling"] = s["scaling"]
        else:
            try:
                item["scaling"] = (client.get_scaling(name) or {}).get("scaling")
            except ApiError:
                item["scaling_unknown"] = True
        out.append(item)
    return out


_CLEAR = "\x1b[H\x1b[2J"


def cmd_top(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise UsageError("--interval must be a positive number of seconds")
    tty = sys.stdout.isatty()
    with _client(args) as client:
        try:
            first = True
            while True:
                snapshot = _top_snapshot(client, args.project)
                doc = {"at": time.time(), "services": snapshot}
                if args.output == "json":
                    if args.once:
                        _emit(args, doc, lambda: None, sys.stdout)
                        return 0
                    print(json.dumps(doc, sort_keys=True, default=str), flush=True)
                else:
                    table = format_table(TOP_HEADERS, top_rows(snapshot)) if snapshot else "no services"
                    if args.once:
                        print(table, flush=True)
                        return 0
                    if tty:  # redraw in place; a pipe or a file gets every table, a blank line apart
                        table = (f"{_CLEAR}orca top  {time.strftime('%H:%M:%S')}  {len(snapshot)} services  "
                                 f"every {args.interval:g}s  (Ctrl-C quits)\n\n{table}")
                    elif not first:
                        table = "\n" + table
                    print(table, flush=True)
                first = False
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        except BrokenPipeError:
            _silence_stdout()
            return 0


# ---------------------------------------------------------------------- scaling

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


# ---------------------------------------------------------------------- webhooks


WEBHOOK_HEADERS = ["ID", "REPO", "BRANCH", "SERVICE", "LAST-DELIVERY", "RESULT"]
_SECRET_KEYS = ("secret", "secret_ciphertext")


def _invocation_result(inv: dict[str, Any]) -> str:
    action = inv.get("action")
    if action == "redeployed":
        return f"redeployed v{_cell(inv.get('version'))}" if inv.get("version") is not None else "redeployed"
    if action == "ignored" and inv.get("reason"):
        return f"ignored: {inv['reason']}"
    return _cell(action)


def webhook_rows(hooks: list[dict[str, Any]], now: float | None = None) -> list[list[Any]]:
    rows = []
    for h in hooks:
        invocations = [i for i in h.get("invocations") or [] if isinstance(i, dict)]
        last = max(invocations, key=lambda i: str(i.get("at") or "")) if invocations else None
        rows.append([h.get("id"), h.get("repo"), h.get("branch"), h.get("service"),
                     _age(last.get("at"), now) if last else None, _invocation_result(last) if last else None])
    return rows


def cmd_webhooks_add(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.add_webhook(args.repo, args.service, args.branch, args.secret)
        api = client.apis[0].strip().rstrip("/")

    def human() -> str:
        return "\n".join([
            f"registered webhook {result.get('id')}: a push to {result.get('repo', args.repo)}@"
            f"{result.get('branch', args.branch)} redeploys {result.get('service', args.service)}",
            f"secret: {result.get('secret')}",
            "",
            "The secret is shown only this once. In GitHub: the repository > Settings > Webhooks > Add webhook:",
            f"  Payload URL:   {api}/api/v1/webhooks/github   (any master; it must be reachable from GitHub)",
            "  Content type:  application/json",
            "  Secret:        the secret above",
            "  Events:        just the push event",
        ])

    _emit(args, result, human, sys.stdout)
    return 0


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        hooks = [{k: v for k, v in h.items() if k not in _SECRET_KEYS} for h in client.webhooks()]
    _emit(args, {"webhooks": hooks},
          lambda: format_table(WEBHOOK_HEADERS, webhook_rows(hooks)) if hooks else "no webhooks", sys.stdout)
    return 0


def cmd_webhooks_remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.remove_webhook(args.id)
    _emit(args, result, lambda: f"removed webhook {args.id}", sys.stdout)
    return 0


# ---------------------------------------------------------------------- parser


def _global_options(parser: argparse.ArgumentParser, api: bool = True) -> None:
    # SUPPRESS: the verb's copy only overrides the top-level one when actually given.
    if api:
        parser.add_argument("--api", default=argparse.SUPPRESS,
                            help="master API URL(s), comma-separated (else env ORCA_API, else the context's "
                                 f"endpoints, else {DEFAULT_API})")
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token (else env ORCA_TOKEN, else the context's token file, else ~/.orca/token)")
    parser.add_argument("--context", default=argparse.SUPPRESS, metavar="NAME",
                        help="client context of ~/.orca/config.toml (else env ORCA_CONTEXT, else the current one)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="say on stderr which masters were skipped as unreachable")
    parser.add_argument("--cacert", default=argparse.SUPPRESS, metavar="FILE",
                        help="the cluster CA for https masters (else env ORCA_CACERT, else ~/.orca/ca.crt)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default table)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    common_no_api = argparse.ArgumentParser(add_help=False)  # for `cluster add-master`, whose --api is the new one
    _global_options(common_no_api, api=False)
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

    p = verbs.add_parser("token", parents=[common], help="create, list and revoke API tokens")
    tokens = p.add_subparsers(dest="token_verb", metavar="ACTION", required=True)
    p = verb(tokens, "create", cmd_token_create,
             "mint a token: offline with --secret-file, else by the leader (recorded, revocable)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", help="who the token is for (its `sub`); an agent token defaults to its node")
    p.add_argument("--node", metavar="ID", help="role agent only, required: the one node id the token may act for")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expiry (default: none)")
    p.add_argument("--secret-file", metavar="F", help="cluster secret file: mint offline, no API call")
    p.add_argument("--project", action="append", metavar="P",
                   help="deployer only, repeatable: the token writes only services of these projects and may "
                        "reference secrets granted to them (unscoped deployers: secrets of all projects only)")
    verb(tokens, "list", cmd_token_list, "list recorded tokens")
    p = verb(tokens, "revoke", cmd_token_revoke, "revoke a recorded token")
    p.add_argument("jti")

    p = verb(verbs, "deploy", cmd_deploy, "create or update services from a file or project directory")
    p.add_argument("-f", "--file", required=True, metavar="FILE",
                   help="JSON/TOML: {services: [...]}, [[services]], or one spec; or a directory of "
                        "services/*/service.toml")
    p.add_argument("--detach", action="store_true", help="return at once, do not wait for the rollout")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for every service to converge (default 120); exit 1 after it")

    p = verb(verbs, "status", cmd_status, "list services")
    p.add_argument("--project", help="only this project")

    p = verb(verbs, "scale", cmd_scale, "set the replica count of a service")
    p.add_argument("name")
    p.add_argument("replicas", type=int)

    p = verb(verbs, "stop", cmd_stop, "stop a service (orca stop NAME [--purge]), a project "
             "(orca stop --project P) or everything (orca stop --all, admin)")
    p.add_argument("name", nargs="?")
    p.add_argument("--purge", action="store_true",
                   help="also forget the service's config and remove its named volumes")
    p.add_argument("--project", help="stop every service of this project")
    p.add_argument("--all", action="store_true", help="stop every service of the cluster")

    p = verb(verbs, "start", cmd_start, "resume a stopped service")
    p.add_argument("name")

    p = verb(verbs, "ps", cmd_ps, "the containers of a service")
    p.add_argument("name", metavar="SERVICE")

    p = verb(verbs, "logs", cmd_logs, "the logs of every replica of a service")
    p.add_argument("name", metavar="SERVICE")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines (Ctrl-C ends)")
    p.add_argument("--tail", type=int, default=100, metavar="N", help="lines per replica (default 100)")

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

    from orca.cli_volumes import add_volume_verbs
    add_volume_verbs(verbs, verb, _client, _emit, parents=[common])
    from orca.cli_jobs import add_job_verbs
    add_job_verbs(verbs, verb, _client, load_services, UsageError)

    p = verb(verbs, "undrain", cmd_undrain, "make a drained or draining node eligible again (admin)")
    p.add_argument("node", metavar="NODE")

    p = verbs.add_parser("node", parents=[common], help="manage one worker node")
    node_verbs = p.add_subparsers(dest="node_verb", metavar="ACTION", required=True)
    p = verb(node_verbs, "rm", cmd_node_rm, "forget a down or drained node; its agent is told to shut down (admin)")
    p.add_argument("node", metavar="NODE")

    for name, handler, help_text in (
            ("promote", cmd_promote, "roll the canary out to every replica"),
            ("rollback", cmd_rollback, "drop the canary; without one, roll back to the previous version")):
        p = verb(verbs, name, handler, help_text)
        p.add_argument("name", metavar="SERVICE")
        p.add_argument("--wait", action="store_true", help="follow the rollout it starts, like deploy")
        p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                       help="with --wait: how long before exit 1 (default 120)")

    p = verb(verbs, "history", cmd_history, "the versions of a service, newest first")
    p.add_argument("name", metavar="SERVICE")

    p = verbs.add_parser("secrets", parents=[common], help="set, list and remove secrets (admin)")
    secrets = p.add_subparsers(dest="secrets_verb", metavar="ACTION", required=True)
    p = verb(secrets, "set", cmd_secrets_set, "create or replace a secret (VALUE from stdin when omitted)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", nargs="?", metavar="VALUE",
                   help="the value; better omitted (read from stdin, or a hidden prompt) so it stays out of "
                        "shell history and ps")
    p.add_argument("--project", action="append", metavar="P",
                   help="grant to this project (repeatable): its project-scoped deployers may reference it")
    p.add_argument("--all-projects", action="store_true",
                   help="grant to every project: any deployer may reference it")
    p = verb(secrets, "grant", cmd_secrets_grant, "replace a secret's grants (the value is untouched)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--project", action="append", metavar="P", help="grant to this project (repeatable)")
    p.add_argument("--all-projects", action="store_true", help="grant to every project")
    p.add_argument("--admin-only", action="store_true", help="no grants: only an admin's deploy may reference it")
    verb(secrets, "list", cmd_secrets_list,
         "list secret keys and their grants: * all projects, - admins only (values are never shown)",
         aliases=["ls"])
    p = verb(secrets, "rm", cmd_secrets_rm, "delete a secret")
    p.add_argument("key", metavar="KEY")

    p = verb(verbs, "events", cmd_events, "show the event history; -f follows new events as they happen")
    p.add_argument("--service")
    p.add_argument("--type")
    p.add_argument("--since", help="timestamp (epoch seconds or ISO-8601)")
    p.add_argument("--limit", type=int, metavar="N", help="at most the N newest (server default 100)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="then keep printing new events as they are committed (Ctrl-C ends)")

    p = verb(verbs, "top", cmd_top, "live table of services: replicas, requests/s, p95, errors, cpu, memory, "
             "scaling (Ctrl-C quits)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh period (default 2)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--project", help="only this project")

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

    p = verbs.add_parser("webhooks", parents=[common], help="GitHub webhooks: a push redeploys a service")
    hooks = p.add_subparsers(dest="webhooks_verb", metavar="ACTION", required=True)
    p = verb(hooks, "add", cmd_webhooks_add, "register a webhook; prints its secret once, to paste into GitHub")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the GitHub repository")
    p.add_argument("--service", required=True, help="the service a push redeploys (image re-pulled)")
    p.add_argument("--branch", default="main", help="only pushes to this branch (default main)")
    p.add_argument("--secret", help="16-256 characters (default: generated)")
    verb(hooks, "list", cmd_webhooks_list, "registered webhooks and their last delivery (never the secret)")
    p = verb(hooks, "remove", cmd_webhooks_remove, "remove a webhook")
    p.add_argument("id", metavar="ID")

    cli_ui.add_arguments(verb(verbs, "ui", cli_ui.cmd_ui, "open the web console in a browser, signed in"))

    p = verbs.add_parser("cluster", parents=[common], help="masters, leader and nodes")
    cluster = p.add_subparsers(dest="cluster_verb", metavar="ACTION", required=True)
    verb(cluster, "info", cmd_cluster_info, "masters, leader, term, commit index and nodes")
    verb(cluster, "leader", cmd_cluster_leader, "the current leader")
    verb(cluster, "status", cmd_cluster_status, "cluster status (Orchestry-compatible JSON)")
    verb(cluster, "members", cmd_cluster_members, "the masters: id, Raft and API address, role, last contact, lag")
    # Here --api names the new master (as `add-master ID --raft HOST:PORT --api URL` reads); the cluster
    # to talk to comes from ORCA_API or `orca --api URL cluster add-master ...`.
    help_add = "add a running master (started with the current members as its raft.peers); one change at a time"
    p = cluster.add_parser("add-master", parents=[common_no_api], help=help_add, description=help_add)
    p.set_defaults(handler=cmd_cluster_add_master)
    p.add_argument("id", metavar="ID", help="the new master's [node].id")
    p.add_argument("--raft", required=True, metavar="HOST:PORT", help="its raft.listen address")
    p.add_argument("--api", dest="master_api", required=True, metavar="URL",
                   help="its API URL ([api].advertise); the cluster is reached through ORCA_API or `orca --api`")
    p = verb(cluster, "remove-master", cmd_cluster_remove_master,
             "remove a master from the cluster (refused if the rest would lose quorum)")
    p.add_argument("id", metavar="ID")
    p = verb(cluster, "join-token", cmd_cluster_join_token,
             "mint a one-time join token an agent exchanges for its node credential (prints only the token)")
    p.add_argument("role", choices=["worker"], help="what joins: worker (an agent)")
    p.add_argument("--rotate", action="store_true", help="first revoke every unused join token")
    p.add_argument("--node", metavar="ID", help="only this node id may use it (default: any new node)")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expiry (default 86400; 0: none)")
    p = verb(cluster, "init", cmd_cluster_init,
             "make the cluster CA in a master's data directory before its first start (no API call)")
    p.add_argument("--data-dir", required=True, metavar="DIR", help="the master's [node].data_dir")
    p = verbs_ca = cluster.add_parser("ca", parents=[common], help="the cluster certificate authority")
    ca = verbs_ca.add_subparsers(dest="ca_verb", metavar="ACTION", required=True)
    p = verb(ca, "show", cmd_cluster_ca_show, "the CA's fingerprint (SHA-256), the trusted CAs; --pem: the bundle")
    p.add_argument("--pem", action="store_true", help="print the PEM bundle (what --cacert and agents trust)")
    verb(ca, "rotate", cmd_cluster_ca_rotate,
         "make a new CA current; the old one stays trusted until `orca cluster ca finish`")
    p = verb(ca, "finish", cmd_cluster_ca_finish, "end a rotation: stop trusting the previous CA(s)")
    p.add_argument("--force", action="store_true", help="even if some node has not renewed its certificate yet")
    verb(cluster, "join-tokens", cmd_cluster_join_tokens, "list join tokens: used by, revoked, expiry")
    p = verb(cluster, "revoke-join-token", cmd_cluster_revoke_join_token, "revoke an unused join token")
    p.add_argument("id", metavar="ID")

    # Verb groups in modules of their own (orca/commands/): imported here, once this module is loaded.
    from orca.commands import context as context_verbs
    from orca.commands import snapshot as snapshot_verbs

    context_verbs.add_parsers(verbs, common, verb)
    snapshot_verbs.add_parsers(verbs, common, verb)
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
    args.api = getattr(args, "api", None)  # resolved with the environment and the context by `_client`
    args.token = getattr(args, "token", None)
    args.context = getattr(args, "context", None)
    args.verbose = getattr(args, "verbose", False)
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
