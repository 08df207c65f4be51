"""Raft's append-entries rules for PySyncObj 0.3.17, where upstream's differ in ways that undo membership.

Three upstream behaviours, found with `scripts/failover-test.sh --replace` (kill the leader, wipe its disk,
replace it at a new address, under write load: the cluster stalled for good after 3-6 rounds, the new
master logging "truncating already-applied log entries" and then refusing the leader's connection as
"names no configured peer"):

1. **The leader moves a follower's next index backwards on success.** It pipelines: every tick it sends
   the entries from `nextIndex` on and advances `nextIndex` at once. Upstream then sets `nextIndex` to
   the index the follower's answer names, which for any answer but the latest is *behind* what was
   already sent, so the same range goes out again (constantly under load; and always right after a
   snapshot, whose answer names the snapshot's index while the entries after it are already on their
   way). Raft never lowers `nextIndex` on success (`leader_next_index`).

2. **A follower truncates entries it already holds.** Upstream deletes every entry after `prevLogIdx`
   whenever there are any, then appends the message's entries, and first *reverses* each membership
   change among the deleted ones. On a resent range (1.) that drops entries the follower had applied and
   acknowledged, and reverses membership changes that are not re-applied until their entries come
   again. Raft (§5.3) deletes only from the first entry that conflicts (same index, other term) and
   never entries after the ones the message carries (`plan_append`; `AppendMixin._append_entries`).
   A reversal is also not the inverse of a change that was a no-op (adding a node it already had,
   e.g. from its config): reversing it removed a member that was there before.

3. **Installing a snapshot drops the leader that sent it.** The snapshot carries the member list of
   whoever wrote that dump file, when it was written; a leader sends the dump it has on disk, which for
   a master that itself joined from a snapshot was written by an earlier leader, before this one was
   added. The follower took that list, dropped the sender (its transport then refuses the leader's
   connection) and never received the later entries that add it. The sender leads the current term,
   so it is a member: it is kept (`AppendMixin._SyncObj__updateClusterConfiguration`), and the entries
   after the snapshot settle the list as everywhere else.

With (3.) a replaced master stopped following the leader after loading the snapshot; with (1.) and
(2.) the resent range after the snapshot reversed the membership change that added the leader, with the
same result. Together: 0 stalls in the drill (see the docs and tests/chaos/test_grow_shrink_replace.py).

The mixin uses PySyncObj 0.3.17's name-mangled attributes (`_SyncObj__...`); tests pin them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pysyncobj.pickle as upstream_pickle
from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as monotonic_time

__all__ = ["AppendMixin", "AppendPlan", "plan_append", "leader_next_index"]

log = logging.getLogger("orca.raft")

Entry = Sequence[Any]  # PySyncObj's (command: bytes, index: int, term: int)
_FOLLOWER = 0  # pysyncobj.syncobj._RAFT_STATE.FOLLOWER


@dataclass(frozen=True)
class AppendPlan:
    """What a follower does with the entries of an append whose `prevLogIdx` matched.

    `truncate_from`: delete the local entries from this index on (a conflict), or None;
    `append`: the message's entries to append (those not already held);
    `match_index`: the last index the message vouches for (`prevLogIdx` + its entries): the follower
    answers success up to there, and may commit no further.
    """

    truncate_from: int | None
    append: list[Entry]
    match_index: int


def plan_append(prev_index: int, local_after: Sequence[Entry], new: Sequence[Entry]) -> AppendPlan:
    """Raft §5.3 receiver rules 3 and 4, given the local entries right after `prev_index` (`local_after[i]`
    is at index prev_index + 1 + i; as many as the message carries, fewer where the log ends) and the
    message's entries `new` (contiguous from prev_index + 1).

    An entry already held with the same term is skipped (same index and term: the same entry, Raft's Log
    Matching property); from the first one that differs in term, the local log is cut and the rest is
    appended. Entries past the message's last are never touched."""
    i = 0
    while i < len(new) and i < len(local_after) and local_after[i][2] == new[i][2]:
        i += 1
    truncate = prev_index + 1 + i if i < len(new) and i < len(local_after) else None
    return AppendPlan(truncate, list(new[i:]), prev_index + len(new))


def leader_next_index(before: int | None, answered: int, success: bool, reset: bool) -> int:
    """The leader's next index for a follower after its `next_node_idx` answer (upstream sets it to
    `answered` in both cases): a success never moves it backwards (the entries after are already on
    their way; pipelining); a reset (a rejection) never moves it forwards (several rejections of
    in-flight batches arrive, and the last one must not skip the back-off to where the logs agree)."""
    if before is None:
        return answered
    if reset:
        return min(before, answered)
    if success:
        return max(before, answered)
    return before


class AppendMixin:
    """Mixed into orca's `SyncObj` subclass, before `SyncObj`. Its `_SyncObj__onMessageReceived`
    override calls `_append_entries` first and `_leader_answer` around upstream's handler."""

    def _append_init(self) -> None:
        """Before `SyncObj.__init__`: attributes made later would go into PySyncObj's dump of the node."""
        self.appends_resent = 0      # entries received again and kept (no truncation): for tests and status
        self.appends_truncated = 0   # entries deleted for a real conflict

    def _append_entries(self, node: Any, message: dict[str, Any]) -> bool:
        """A follower's handling of a regular `append_entries` (True when handled here; False leaves it to
        upstream: other messages, an older term, snapshot chunks, the chunks of a large entry before the
        last). Mirrors upstream's bookkeeping (leader, term, election deadline, commit index) and replaces
        its truncation with `plan_append`."""
        if message.get("type") != "append_entries" or "prevLogIdx" not in message:
            return False
        term = message.get("term")
        if not isinstance(term, int) or term < self._SyncObj__raftCurrentTerm:
            return False
        transmission = message.get("transmission")
        new = message.get("entries", [])
        if transmission is not None:
            if transmission != "finish":
                return False  # 'start'/'process' only gather bytes: upstream's path is fine
            data = self._SyncObj__recvTransmission + message["data"]
            try:
                new = [upstream_pickle.loads(data)]
            except Exception:
                # Upstream marks the last chunk by the command's length, not the pickled entry's: when the
                # pickle overhead crosses a chunk boundary a 'finish' arrives one chunk early. Keep
                # gathering; the next 'finish' completes it.
                self._SyncObj__recvTransmission = data
                self._SyncObj__sendNextNodeIdx(node, success=False, reset=False)
                return True
            self._SyncObj__recvTransmission = ""
        prev_index, prev_term = message["prevLogIdx"], message["prevLogTerm"]
        if not isinstance(prev_index, int) or not isinstance(new, list):
            return False

        # --- upstream's bookkeeping for a message of the current leader ---------------------------
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__transferInProgress = False
        if not self._SyncObj__transferInProgress:
            self._SyncObj__raftElectionDeadline = monotonic_time() + self._SyncObj__generateRaftTimeout()
        if self._SyncObj__raftLeader != node:
            self._SyncObj__onLeaderChanged()
        self._SyncObj__raftLeader = node
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(_FOLLOWER)
        leader_commit = message["commit_index"]
        self._SyncObj__leaderCommitIndex = leader_commit

        # --- Raft §5.3 ---------------------------------------------------------------------------
        prev = self._SyncObj__getEntries(prev_index, 1)
        if not prev:
            self._SyncObj__sendNextNodeIdx(node, success=False, reset=True)
            return True
        if prev[0][2] != prev_term:
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=prev_index, success=False, reset=True)
            return True
        plan = plan_append(prev_index, self._SyncObj__getEntries(prev_index + 1, len(new)), new)
        self.appends_resent += len(new) - len(plan.append)
        dynamic = self._SyncObj__conf.dynamicMembershipChange
        if plan.truncate_from is not None:
            doomed = self._SyncObj__getEntries(plan.truncate_from)
            self.appends_truncated += len(doomed)
            if dynamic:
                for entry in reversed(doomed):
                    change = self._SyncObj__parseChangeClusterRequest(entry[0])
                    if change is not None:
                        self._SyncObj__doChangeCluster(change, reverse=True)
            if plan.truncate_from <= self._SyncObj__raftLastApplied:
                log.critical("truncating already-applied log entries from index %d (last applied: %d): a conflict "
                             "with the leader's log", plan.truncate_from, self._SyncObj__raftLastApplied)
            self._SyncObj__deleteEntriesFrom(plan.truncate_from)
        for entry in plan.append:
            self._SyncObj__raftLog.add(*entry)
        if dynamic:
            for entry in plan.append:
                change = self._SyncObj__parseChangeClusterRequest(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change)
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=plan.match_index + 1, success=True)

        # Commit: never past what this message vouched for (a tail after it may be stale), and never
        # past the log's end after a truncation.
        last = self._SyncObj__getCurrentLogIndex()
        if self._SyncObj__raftCommitIndex > last:
            self._SyncObj__raftCommitIndex = last
        if leader_commit > self._SyncObj__raftCommitIndex:
            self._SyncObj__raftCommitIndex = max(self._SyncObj__raftCommitIndex,
                                                 min(leader_commit, plan.match_index, last))
        self._SyncObj__raftLog.setRaftCommitIndex(self._SyncObj__raftCommitIndex)
        return True

    def _leader_answer(self, node: Any, message: dict[str, Any], before: int | None) -> None:
        """After upstream handled a `next_node_idx` answer on the leader: correct the next index it set
        (`leader_next_index`)."""
        after = self._SyncObj__raftNextIndex.get(node)
        if after is None or before is None:
            return
        fixed = leader_next_index(before, after, bool(message.get("success")), bool(message.get("reset")))
        if fixed != after:
            self._SyncObj__raftNextIndex[node] = fixed

    def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:  # noqa: N802, N803 - upstream's names
        """Installing a snapshot sets the members to the list stored in it; keep the leader that sent it
        (see (3.) in the module docstring). At a restart (no leader yet) the list is taken as is."""
        leader = self._SyncObj__raftLeader
        nodes = list(newNodes)
        if leader is not None and leader != self._SyncObj__selfNode and leader not in nodes \
                and not any(getattr(n, "id", n) == leader.id for n in nodes):
            nodes.append(leader)
        SyncObj._SyncObj__updateClusterConfiguration(self, nodes)
