"""The version of the replicated data's schema: of every log entry and of every snapshot.

Raise `SCHEMA_VERSION` by one whenever an entry's meaning changes in a way an older master would apply
differently (a new op, a new argument an op acts on, a new table a snapshot must carry). A master meets
an entry or snapshot of a newer version only in the middle of a rolling upgrade; it then stops applying
instead of diverging (see `orca.raft.ReplicatedState` and the README's "Upgrading the masters").
Entries without a version were written before versions existed: version 1. Code is read as
`schema.SCHEMA_VERSION` (not imported by name) so that tests can run two adjacent versions side by side.
"""

from __future__ import annotations

from typing import Any

from orca.errors import NotReady

__all__ = ["SCHEMA_VERSION", "OP_VERSIONS", "entry_version", "Unsupported"]

SCHEMA_VERSION = 2  # 2: the replicated member list (orca.state.ops_members) and Dory's decommission
# op -> the schema version in which it (or its current meaning) appeared; absent means 1. An entry is
# written with its op's version, not SCHEMA_VERSION: a new leader that writes only ops the old masters
# know does not stop them, so a rolling upgrade stops nothing until the first entry that needs it.
OP_VERSIONS: dict[str, int] = {
    "masters_seed": 2, "master_add": 2, "master_remove": 2,  # the member list (orca.state.ops_members)
    "decommission_node": 2,  # Dory's decommission (orca.master.api_edge)
}


def entry_version(op: str) -> int:
    return OP_VERSIONS.get(op, 1)


class Unsupported(NotReady):
    """Raised by an op that meets data of a newer schema than this code knows (a restored snapshot). Its
    value carries `halt`, as for an entry of a newer version: the master stops applying (503, so clients
    try another master)."""

    def __init__(self, reason: str, index: int, op: str) -> None:
        super().__init__(f"this master stopped applying the log at index {index}: {reason}; upgrade it to the "
                         "version the other masters run", {"index": index})
        self.halt = {"index": index, "op": op, "version": None, "reason": reason}

    def as_value(self) -> dict[str, Any]:
        return {**super().as_value(), "halt": dict(self.halt)}
