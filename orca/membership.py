"""Whether a membership change keeps the cluster able to commit: the leader's check before it proposes.

Raft changes one member at a time (PySyncObj applies a change as soon as it is in the log, and refuses
a second one until the first is applied). Each step must leave a majority of the *new* configuration
able to vote and append at once, or the cluster stalls until the missing members come back:

- adding a member makes the majority larger, and the new member counts only once it has caught up: the
  healthy members of today must already be a majority of tomorrow's configuration (3 healthy of 3 may
  grow to 4; 2 healthy of 3 may not). A lone master may always grow to two: it has no quorum to lose,
  and the cluster writes again as soon as the new member has caught up;
- removing a member makes the configuration smaller: the healthy members that stay must be a majority
  of what stays (removing a dead member is exactly what this allows; removing the last healthy
  follower of a 3-node cluster with one dead is refused).

"Healthy" is the leader's view: itself, and each follower connected and no more than `max_lag` entries
behind (orca.raft.RaftNode.peer_progress).
"""

from __future__ import annotations

from collections.abc import Set

from orca.errors import Conflict

__all__ = ["majority", "check_add", "check_remove"]


def majority(size: int) -> int:
    return size // 2 + 1


def check_add(members: Set[str], healthy: Set[str], new: str) -> None:
    """Raise Conflict (code QUORUM_AT_RISK) unless adding `new` to `members` keeps a quorum."""
    if new in members:
        raise Conflict(f"{new} is already a member", {"member": new}, code="ALREADY_MEMBER")
    up = len(healthy & members)
    need = majority(len(members) + 1)
    if up < need and not (len(members) == 1 and up == 1):
        raise Conflict(f"adding a master now would lose quorum: {len(members) + 1} members need {need} healthy, "
                       f"{up} of the {len(members)} present are healthy (bring the others back first)",
                       {"members": len(members), "healthy": up, "needed": need}, code="QUORUM_AT_RISK")


def check_remove(members: Set[str], healthy: Set[str], gone: str) -> None:
    """Raise Conflict (code QUORUM_AT_RISK) unless removing `gone` from `members` keeps a quorum."""
    if gone not in members:
        raise Conflict(f"{gone} is not a member", {"member": gone}, code="NOT_MEMBER")
    rest = members - {gone}
    if not rest:
        raise Conflict("the last master cannot be removed", code="QUORUM_AT_RISK")
    up = len(healthy & rest)
    need = majority(len(rest))
    if up < need:
        raise Conflict(f"removing {gone} now would lose quorum: the {len(rest)} remaining members need {need} "
                       f"healthy, {up} are", {"members": len(rest), "healthy": up, "needed": need},
                       code="QUORUM_AT_RISK")
