"""Leader-only work starts in one place and stops in one place (Nomad's establish/revokeLeadership).

On gaining leadership the new leader first commits `leader_elected` with its term. Once that entry is
applied the leader's local state holds every entry of earlier terms (Raft's leader completeness plus
in-order apply), so it is caught up, and the committed term fences what it does next. Only then are the
components enabled. On losing leadership they are disabled at once, before anything else runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Protocol

from orca.errors import OrcaError
from orca.raft import RaftNode

__all__ = ["LeaderComponent", "Leadership"]

log = logging.getLogger("orca.leader")


class LeaderComponent(Protocol):
    """A leader-only loop (scheduler, dispatcher, lease monitor, drainer)."""

    name: str

    def enable(self, term: int) -> None: ...

    def disable(self) -> None: ...


class Leadership:
    """Reacts to `RaftNode` role changes on the event loop.

    `established_term` is the term whose `leader_elected` entry this node committed, or None while it is
    not an established leader; components see it in `enable(term)` and use it to fence their work.
    """

    def __init__(self, raft: RaftNode, components: list[LeaderComponent] | None = None) -> None:
        self.raft = raft
        self.components: list[LeaderComponent] = list(components or [])
        self.established_term: int | None = None
        self._establishing: asyncio.Task[None] | None = None

    def on_role_change(self, is_leader: bool) -> None:
        if is_leader and self.established_term is not None and self.raft.term != self.established_term:
            self._revoke()  # lost and regained leadership between two callbacks: a new term, start over
        if is_leader and self.established_term is None and self._establishing is None:
            self._establishing = asyncio.get_running_loop().create_task(self._establish())
        elif not is_leader:
            self._revoke()

    async def _establish(self) -> None:
        term = self.raft.term
        try:
            for attempt in range(50):
                if not self.raft.is_leader or self.raft.term != term:
                    return
                try:
                    await self.raft.propose("leader_elected", {"term": term, "node": self.raft.settings.node_id})
                    break
                except OrcaError as err:
                    log.info("establishing leadership (term %s, attempt %s): %s", term, attempt + 1, err)
                    await asyncio.sleep(0.1)
            else:
                return
            if not self.raft.is_leader or self.raft.term != term:
                return
            self.established_term = term
            log.info("established leadership for term %s", term)
            await self._ensure_lineage()
            for component in self.components:
                component.enable(term)
        finally:
            self._establishing = None

    async def _ensure_lineage(self) -> None:
        """The first leader of a cluster names it (agents fence on the name; see ops_restore)."""
        if self.raft.read(lambda s: s.get("lineage")):
            return
        try:
            await self.raft.propose("set_lineage", {"lineage": uuid.uuid4().hex})
        except OrcaError as err:
            log.warning("could not name the cluster (the next leader will): %s", err)

    def _revoke(self) -> None:
        if self._establishing is not None:
            self._establishing.cancel()
            self._establishing = None
        if self.established_term is None:
            return
        log.info("leadership of term %s lost; stopping leader work", self.established_term)
        self.established_term = None
        for component in reversed(self.components):
            component.disable()

    def stop(self) -> None:
        self._revoke()

    def restart(self) -> None:
        """Stop the leader work and establish it again, as after an election: used when the state was
        replaced under it (a snapshot restored), so every component starts from the new state and the
        lease monitor grants every node a full TTL of grace before declaring it down."""
        if self.raft.is_leader:
            self._revoke()
            self.on_role_change(True)
