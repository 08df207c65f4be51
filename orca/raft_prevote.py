"""PreVote and leader-contact tracking for PySyncObj: a master that cannot reach a quorum does not bump
its term, and every master knows how long ago it last heard from the leader.

Why: PySyncObj starts an election (term + 1) whenever its election timeout passes while it is connected
to anyone. A master cut off by a partition keeps TCP links that look connected until keepalive gives up,
so it campaigned every 0.2-0.5 s and came back with a term ~18 higher, which then deposed the healthy
leader. With PreVote (Raft thesis §9.6, as etcd and hashicorp/raft do it) the timeout first sends
`orca_prevote` to the peers; only when a majority (counting itself) answers "I would vote for you" does
the real election start. A peer grants only if

- it is not the leader, and has not heard from a leader for `quiet_s` (the minimum election timeout
  less one heartbeat period: a follower of a live leader hears from it every heartbeat), and
- the candidate's log is at least as up to date as its own (the Raft vote rule).

A grant also postpones the granting master's own election deadline by one election timeout, as a real
vote does in PySyncObj, so that two followers whose timers run out together do not both campaign.

Terms are not compared: the real election settles those, and comparing them can deadlock two live
masters (one with the higher term, the other with the longer log).

Leader contact: each `append_entries` from the current leader stamps `last_leader_contact` (monotonic),
which `orca.raft` uses to redirect only to a leader heard from within the election timeout.

Wire: two new message types on the existing (authenticated) transport. A master without this code
ignores them (PySyncObj dispatches on `type` and drops unknown ones) and never answers, so during a
rolling upgrade a new master can only win an election with another new master's grant; the old ones
elect as before. Upgrade all masters one at a time as usual.

The methods below use PySyncObj 0.3.17's name-mangled attributes (`_SyncObj__...`); tests pin them.
"""

from __future__ import annotations

from typing import Any

from pysyncobj.monotonic import monotonic as monotonic_time

__all__ = ["PreVoteMixin", "grant_prevote", "PREVOTE", "PREVOTE_RESPONSE"]

PREVOTE = "orca_prevote"
PREVOTE_RESPONSE = "orca_prevote_response"
_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2  # pysyncobj.syncobj._RAFT_STATE


def grant_prevote(*, candidate_last_term: int, candidate_last_index: int, my_last_term: int,
                  my_last_index: int, i_lead: bool, leader_contact_age: float | None, quiet_s: float) -> bool:
    """Whether to tell a would-be candidate that it could win our vote (see the module docstring).

    `leader_contact_age` is None when this master knows no leader right now.
    """
    if i_lead:
        return False
    if leader_contact_age is not None and leader_contact_age < quiet_s:
        return False
    return (candidate_last_term, candidate_last_index) >= (my_last_term, my_last_index)


def majority(votes: int, cluster_size: int) -> bool:
    return votes > cluster_size / 2


class PreVoteMixin:
    """Mixed into orca's `SyncObj` subclass, before `SyncObj` in the bases. Call `_prevote_init()` before
    `SyncObj.__init__` (the tick thread starts inside it)."""

    def _prevote_init(self) -> None:
        self.last_leader_contact: float | None = None
        self.prevote_rounds = 0
        self.prevote_denied = 0
        self._prevote_round = 0
        self._prevote_grants: set[Any] = set()
        self._prevote_passed = False

    # --- helpers over PySyncObj's private state ---------------------------------------------------
    def _state(self) -> int:
        return self._SyncObj__raftState

    def _last_log(self) -> tuple[int, int]:
        last = self._SyncObj__raftLog[-1]
        return int(last[2]), int(last[1])  # (term, index)

    def quiet_s(self) -> float:
        conf = self._SyncObj__conf
        return max(0.0, conf.raftMinTimeout - conf.appendEntriesPeriod)

    def leader_contact_age(self) -> float | None:
        """Seconds since the current leader was last heard from: 0 on the leader itself, None when no
        leader is known (or it was never heard from)."""
        if self._state() == _LEADER:
            return 0.0
        if self._SyncObj__raftLeader is None or self.last_leader_contact is None:
            return None
        return max(0.0, monotonic_time() - self.last_leader_contact)

    def since_leader_contact(self) -> float | None:
        """Seconds since any leader was last heard from (0 on the leader, None if never): unlike
        `leader_contact_age` it survives losing the leader, so it bounds how stale local state may be."""
        if self._state() == _LEADER:
            return 0.0
        if self.last_leader_contact is None:
            return None
        return max(0.0, monotonic_time() - self.last_leader_contact)

    # --- tick thread ------------------------------------------------------------------------------
    def _prevote_gate(self) -> None:
        """Run before PySyncObj's tick: where it would start an election, start a pre-vote round instead
        (postponing its election deadline); once a round won, let the next tick elect."""
        if self._prevote_passed:
            self._prevote_passed = False
            return
        if self._state() not in (_FOLLOWER, _CANDIDATE) or self._SyncObj__selfNode is None:
            return
        if self._SyncObj__transferInProgress:  # leader-requested: elect at once
            return
        now = monotonic_time()
        if self._SyncObj__raftElectionDeadline >= now or not self._SyncObj__connectedToAnyone():
            return
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._prevote_round += 1
        self.prevote_rounds += 1
        self._prevote_grants = set()
        last_term, last_index = self._last_log()
        message = {"type": PREVOTE, "round": self._prevote_round, "last_log_term": last_term,
                   "last_log_index": last_index}
        others = self._SyncObj__otherNodes
        for node in others:
            self._SyncObj__transport.send(node, message)
        self._prevote_check()

    def _prevote_check(self) -> None:
        if majority(1 + len(self._prevote_grants), 1 + len(self._SyncObj__otherNodes)):
            self._prevote_passed = True
            self._SyncObj__raftElectionDeadline = 0

    def _prevote_message(self, node: Any, message: dict[str, Any]) -> bool:
        """Handle our own message types (True when `message` was one of them)."""
        kind = message.get("type")
        if kind == PREVOTE:
            last_term, last_index = self._last_log()
            try:
                granted = grant_prevote(
                    candidate_last_term=int(message["last_log_term"]),
                    candidate_last_index=int(message["last_log_index"]),
                    my_last_term=last_term, my_last_index=last_index, i_lead=self._state() == _LEADER,
                    leader_contact_age=self.leader_contact_age(), quiet_s=self.quiet_s())
            except (KeyError, TypeError, ValueError):
                return True
            if granted:
                # As a real vote does, a grant holds back our own campaign for one election timeout: two
                # followers whose timers ran out together would otherwise both pass pre-vote and split
                # the real vote (measured: 3 of 12 failovers took a second round without this).
                self._SyncObj__raftElectionDeadline = max(
                    self._SyncObj__raftElectionDeadline, monotonic_time() + self._SyncObj__generateRaftTimeout())
            self._SyncObj__transport.send(node, {"type": PREVOTE_RESPONSE, "round": message.get("round"),
                                                 "granted": granted})
            return True
        if kind == PREVOTE_RESPONSE:
            if message.get("round") != self._prevote_round or self._state() == _LEADER:
                return True
            if message.get("granted") is True:
                self._prevote_grants.add(node)
                self._prevote_check()
            else:
                self.prevote_denied += 1
            return True
        return False

    def _note_leader_contact(self, node: Any, message: dict[str, Any]) -> None:
        """After PySyncObj handled `message`: stamp the time if it came from the leader it follows."""
        if message.get("type") == "append_entries" and node is not None \
                and node == self._SyncObj__raftLeader:
            self.last_leader_contact = monotonic_time()
