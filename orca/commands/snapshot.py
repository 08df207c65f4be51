"""`orca snapshot save|inspect|restore FILE`: back up the whole cluster state, and bring it back after
every master's disk is lost (see `orca.snapshot` for the file, `orca.state.ops_restore` for the restore)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orca import snapshot
from orca.client import ApiError
from orca.commands.common import UsageError, _client, _emit

__all__ = ["add_parsers", "cmd_snapshot_save", "cmd_snapshot_inspect", "cmd_snapshot_restore", "summary"]


def _read(path: str) -> tuple[bytes, dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(snapshot.MAX_STATE_BYTES + snapshot.HEADER_MAX + 1)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from exc
    try:
        header, _ = snapshot.parse(data)
    except snapshot.SnapshotError as exc:
        raise ApiError(0, "INVALID_SNAPSHOT", f"{path}: {exc}") from None
    return data, header


def _write_private(path: str, data: bytes) -> None:
    """Atomically, 0600: the file holds sealed secrets and the token records."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def summary(header: dict[str, Any]) -> str:
    counts = header.get("counts") or {}
    made = header.get("created_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(made)) if isinstance(made, int | float) else "?"
    return "\n".join([
        f"index {header['index']}, term {header['term']}, schema version {header['schema_version']}, "
        f"taken {when} on {header.get('leader') or '?'} (orca {header.get('orca_version') or '?'})",
        ", ".join(f"{v} {k}" for k, v in counts.items()),
        f"{header['body_bytes']} bytes compressed, {header['state_bytes']} bytes of state, "
        f"sha256 {header['sha256']} (verified)",
    ])


_PERIODIC = "orca-snapshot-"


def _prune(directory: Path, keep: int) -> list[str]:
    """Remove all but the `keep` newest `orca-snapshot-*.snap` of `directory` (names sort by time)."""
    files = sorted(p for p in directory.glob(f"{_PERIODIC}*.snap") if p.is_file())
    removed = files[:-keep] if keep > 0 else []
    for path in removed:
        path.unlink(missing_ok=True)
    return [str(p) for p in removed]


def cmd_snapshot_save(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.dir is None):
        raise UsageError("give either FILE or --dir DIR")
    if args.keep is not None and (args.dir is None or args.keep < 1):
        raise UsageError("--keep N (N >= 1) goes with --dir")
    with _client(args) as client:
        data = client.snapshot_save()
    header, _ = snapshot.parse(data)
    if args.dir is not None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(header["created_at"]))
        path = str(Path(args.dir) / f"{_PERIODIC}{stamp}-{header['index']}.snap")
    else:
        path = args.file
    try:
        if args.dir is not None:
            Path(args.dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(path, data)
        removed = _prune(Path(args.dir), args.keep) if args.keep else []
    except OSError as exc:
        raise UsageError(f"{exc.filename or path}: {exc.strerror or exc}") from exc
    _emit(args, {"file": path, "removed": removed, **header},
          lambda: f"saved {path}: {summary(header)}" + "".join(f"\nremoved {r}" for r in removed), sys.stdout)
    return 0


def cmd_snapshot_inspect(args: argparse.Namespace) -> int:
    _, header = _read(args.file)
    _emit(args, header, lambda: f"{args.file}: {summary(header)}", sys.stdout)
    return 0


def cmd_snapshot_restore(args: argparse.Namespace) -> int:
    data, header = _read(args.file)
    show = args.output != "json" and sys.stderr.isatty()

    def progress(sent: int, chunks: int) -> None:
        if show:
            print(f"\rrestoring: {sent}/{chunks} chunks sent", end="", file=sys.stderr, flush=True)

    with _client(args) as client:
        result = client.snapshot_restore(data, force=args.force, on_progress=progress)
    if show:
        print(file=sys.stderr)
    counts = result.get("counts") or {}
    _emit(args, result, lambda: f"restored {args.file} (index {header['index']}, term {header['term']}): "
          + ", ".join(f"{v} {k}" for k, v in counts.items()), sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("snapshot", parents=[common], help="back up and restore the whole cluster state (admin)")
    snap = p.add_subparsers(dest="snapshot_verb", metavar="ACTION", required=True)
    p = verb(snap, "save", cmd_snapshot_save, "save a consistent snapshot of the cluster state from the leader "
             "to FILE, or (for cron) to a new time-stamped file in --dir, keeping the --keep newest there")
    p.add_argument("file", metavar="FILE", nargs="?")
    p.add_argument("--dir", metavar="DIR", help="write DIR/orca-snapshot-<UTC time>-<index>.snap instead of FILE")
    p.add_argument("--keep", type=int, metavar="N", help="with --dir: remove all but the N newest snapshots there")
    p = verb(snap, "inspect", cmd_snapshot_inspect, "show what a snapshot file holds, and verify its checksum")
    p.add_argument("file", metavar="FILE")
    p = verb(snap, "restore", cmd_snapshot_restore,
             "load a snapshot into a freshly started, empty cluster (same cluster secret)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace the state of a cluster that is not empty")
