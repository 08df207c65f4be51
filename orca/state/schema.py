"""The version of the replicated data's schema: of every log entry and of every snapshot.

Raise `SCHEMA_VERSION` by one whenever an entry's meaning changes in a way an older master would apply
differently (a new op, a new argument an op acts on, a new table a snapshot must carry). A master meets
an entry or snapshot of a newer version only in the middle of a rolling upgrade; it then stops applying
instead of diverging (see `orca.raft.ReplicatedState` and the README's "Upgrading the masters").
Entries without a version were written before versions existed: version 1.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "OLDEST_SUPPORTED"]

SCHEMA_VERSION = 1
OLDEST_SUPPORTED = 1  # entries of every version from here to SCHEMA_VERSION apply; ops are only added
