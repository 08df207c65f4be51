"""Offline restore: write a snapshot file into a stopped master's data directory, for a cluster that
cannot start (`orca snapshot restore --offline FILE --config MASTER.toml`).

The online restore (`orca snapshot restore FILE`) needs a running, empty cluster with a leader. When the
masters do not start at all (a corrupt journal, a lost disk on a majority, a state that halts them),
every master is stopped, and this is run once per master, with the same file and that master's config:

- it verifies the file (magic, header, checksum, schema version: `orca.snapshot`) and builds the state
  the online restore would install (`orca.state.ops_restore.restored_state`: the fence base above the
  lost cluster's terms, its lineage, `restored_from`; the member list is left empty, so that the first
  membership change seeds it from the configs again);
- it refuses when something answers on the master's Raft port (the master still runs), and, unless
  `force`, when the data directory already holds a Raft log or dump; with `force` those files are
  moved aside into `DATA_DIR/pre-restore-<UTC time>/`, never deleted;
- it writes `raft.dump`, PySyncObj's own full-dump file (written with PySyncObj's own `Serializer`, so
  the format is upstream's), holding the state as applied at index 2 of term 0, and the Raft members
  of the config (itself and `raft.peers`).

Started on these directories, the masters begin where every master is at index 2 with the same state,
elect a leader at term 1 and go on. Every master must be restored this way before any of them starts:
a master started with an empty directory next to restored ones could, with another empty one, elect a
leader whose log lacks the restored entry and make the restored ones drop it (their state would stay).
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

from pysyncobj.node import TCPNode
from pysyncobj.serializer import SERIALIZER_STATE, Serializer

from orca import snapshot
from orca.config import MasterConfig
from orca.errors import Conflict, Invalid
from orca.state import ops_restore
from orca.state.machine import new_state

__all__ = ["restore_offline", "RAFT_FILES", "OfflineRestoreError"]

RAFT_FILES = ("raft.journal", "raft.journal.meta", "raft.dump")
_NO_OP = bytes([1])  # pysyncobj.syncobj._COMMAND_TYPE.NO_OP
_FIRST, _LAST = (_NO_OP, 1, 0), (_NO_OP, 2, 0)  # the log a restored master starts from: (command, index, term)


class OfflineRestoreError(Conflict):
    """The restore was refused (a running master, a data directory in use)."""


def _listening(host_port: tuple[str, int], timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(host_port, timeout=timeout):
            return True
    except OSError:
        return False


def _members(config: MasterConfig) -> list[str]:
    return [config.raft_listen, *(p.raft for p in config.peers)]


def restore_offline(data: bytes, config: MasterConfig, *, force: bool = False,
                    now: float | None = None) -> dict[str, Any]:
    """Write the snapshot `data` into `config`'s data directory (see the module docstring). Returns what
    was done: the file's header fields, `data_dir`, `members`, `moved_aside` (a directory or None)."""
    now = time.time() if now is None else now
    try:
        header, body = snapshot.parse(data)
        restored = snapshot.decode_body(body, header["state_bytes"])
    except snapshot.SnapshotError as exc:
        raise Invalid(f"restore refused: {exc}") from None
    fresh = new_state()
    state = ops_restore.restored_state(restored, header, leader=fresh["leader"], masters={}, lineage=None, now=now)

    if _listening(config.host_port("raft")):
        raise OfflineRestoreError(f"something answers on {config.raft_listen}, the Raft port of {config.node_id}: "
                                  "stop the master first (an offline restore rewrites its data directory)",
                                  {"raft": config.raft_listen})
    data_dir = Path(config.data_dir)
    present = [name for name in RAFT_FILES if (data_dir / name).exists()]
    moved: Path | None = None
    if present and not force:
        raise OfflineRestoreError(f"{data_dir} holds a Raft log ({', '.join(present)}): pass --force to move it "
                                  "aside (into pre-restore-<time>/ there) and restore", {"data_dir": str(data_dir)})
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if present:
        moved = data_dir / time.strftime("pre-restore-%Y%m%dT%H%M%SZ", time.gmtime(now))
        moved.mkdir(mode=0o700, exist_ok=True)
        for name in present:
            shutil.move(str(data_dir / name), str(moved / name))

    members = _members(config)
    dump = data_dir / "raft.dump"
    writer = Serializer(str(dump), 2 ** 16, False, None, None, None)
    # PySyncObj's dump: ([SyncObj's own fields, then each consumer's], last entry, the one before it, the
    # Raft members); orca's one consumer (orca.raft.ReplicatedState) serializes {"state": state}.
    writer.serialize(([{}, {"state": state}], _LAST, _FIRST, {TCPNode(m) for m in members}), _LAST[1])
    result, _ = writer.checkSerializing()
    if result != SERIALIZER_STATE.SUCCESS:
        raise OfflineRestoreError(f"could not write {dump}", {"data_dir": str(data_dir)})
    dump.chmod(0o600)
    return {**header, "data_dir": str(data_dir), "members": members,
            "moved_aside": str(moved) if moved is not None else None, "counts": snapshot.counts(state)}
