"""Raft's append-entries rules on PySyncObj (orca.raft_append): the follower's plan against a reference
model of Raft §5.3 (hypothesis), the leader's next-index rule, and orca's real `_SyncObj` fed the message
sequences that undid membership upstream (a resent range after a snapshot; a snapshot written before
its sender was added; a large entry whose last chunk is announced one chunk early)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pysyncobj.pickle as upstream_pickle
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.node import TCPNode

from orca.raft import _SyncObj
from orca.raft_append import leader_next_index, plan_append

MEMBERSHIP = 2  # pysyncobj.syncobj._COMMAND_TYPE.MEMBERSHIP
REGULAR = 0


def _log(prev: int, terms: list[int], tag: bytes = b"c") -> list[tuple[bytes, int, int]]:
    return [(tag + b"%d" % (prev + 1 + i), prev + 1 + i, t) for i, t in enumerate(terms)]


def _raft_reference(prev: int, local: list[int], new: list[int]) -> tuple[list[int], int]:
    """Raft §5.3 rules 3-4 on term lists (local and new start at prev + 1): the resulting local terms."""
    out = list(local)
    for i, t in enumerate(new):
        if i < len(out) and out[i] != t:
            del out[i:]
        if i >= len(out):
            out.append(t)
    return out, prev + len(new)


@given(st.integers(min_value=1, max_value=50), st.lists(st.integers(1, 4), max_size=12),
       st.lists(st.integers(1, 4), max_size=12))
def test_plan_matches_raft(prev: int, local_terms: list[int], new_terms: list[int]) -> None:
    new_terms.sort()  # a leader's entries have non-decreasing terms
    local = _log(prev, local_terms, b"old")
    new = _log(prev, new_terms, b"new")
    plan = plan_append(prev, local[:len(new)], new)
    result = list(local)
    if plan.truncate_from is not None:
        del result[plan.truncate_from - prev - 1:]
    result.extend(plan.append)
    expected, match = _raft_reference(prev, local_terms, new_terms)
    assert [e[2] for e in result] == expected
    assert [e[1] for e in result] == list(range(prev + 1, prev + 1 + len(result)))
    assert plan.match_index == match
    if plan.truncate_from is None:
        assert result[:len(local)] == local  # nothing held was deleted: no reversal of membership either


def test_a_resent_range_keeps_everything() -> None:
    local = _log(5, [2, 2, 2, 2])
    plan = plan_append(5, local[:2], local[:2])
    assert (plan.truncate_from, plan.append, plan.match_index) == (None, [], 7)


@given(st.none() | st.integers(1, 100), st.integers(1, 100), st.booleans(), st.booleans())
def test_leader_next_index(before: int | None, answered: int, success: bool, reset: bool) -> None:
    got = leader_next_index(before, answered, success, reset)
    if before is None:
        assert got == answered
    elif reset:
        assert got == min(before, answered)
    elif success:
        assert got == max(before, answered)
    else:
        assert got == before


def test_upstream_internals_we_rely_on_exist() -> None:
    for name in ("__onMessageReceived", "__updateClusterConfiguration", "__doChangeCluster",
                 "__parseChangeClusterRequest", "__deleteEntriesFrom", "__getEntries", "__sendNextNodeIdx",
                 "__onLeaderChanged", "__setCurrentTerm", "__setState", "__generateRaftTimeout",
                 "__getCurrentLogIndex", "__loadDumpFile"):
        assert callable(getattr(SyncObj, "_SyncObj" + name, None)), name


# --- orca's real _SyncObj, driven by hand ------------------------------------------------------------

class _Counter(SyncObjConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @replicated
    def add(self, n: int) -> int:
        self.value += n
        return self.value


class _Wire:
    """Stands in for the transport: records what the follower sends and which peers it keeps."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.dropped: list[str] = []
        self.added: list[str] = []

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        self.sent.append((node.id, message))
        return True

    def addNode(self, node: Any) -> None:  # noqa: N802 - upstream's name
        self.added.append(node.id)

    def dropNode(self, node: Any) -> None:  # noqa: N802 - upstream's name
        self.dropped.append(node.id)

    ready = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("set"):  # setOn...Callback: nothing arrives but what the test hands over
            return lambda *args: None
        raise AttributeError(name)


LEADER = "127.0.0.1:7002"
ME = "127.0.0.1:7001"


@pytest.fixture
def follower() -> Iterator[tuple[Any, _Wire]]:
    conf = SyncObjConf(autoTick=False, dynamicMembershipChange=True, appendEntriesUseBatch=False)
    wire = _Wire()  # no socket: messages are handed to the node by the test
    node = _SyncObj(ME, [LEADER, "127.0.0.1:7003"], conf=conf, consumers=[_Counter()], durable=False,
                    transport=wire)
    yield node, wire


def _member(kind: str, addr: str) -> bytes:
    return bytes([MEMBERSHIP]) + upstream_pickle.dumps([kind, addr, TCPNode(addr)])


def _ae(term: int, prev: tuple[int, int], entries: list[Any], commit: int = 0) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "prevLogIdx": prev[0], "prevLogTerm": prev[1],
            "entries": entries, "commit_index": commit}


def _peers(node: Any) -> set[str]:
    return {n.id for n in node.otherNodes}


def test_a_resent_range_keeps_the_membership_change_and_acknowledges_only_what_it_vouches(follower: Any) -> None:
    node, wire = follower
    leader = TCPNode(LEADER)
    noop = bytes([1])
    entries = [(noop, 2, 1), (_member("add", "127.0.0.1:7004"), 3, 1), (noop, 4, 1), (noop, 5, 1)]
    node._SyncObj__onMessageReceived(leader, _ae(1, (1, 0), entries, commit=3))
    assert "127.0.0.1:7004" in _peers(node)
    assert wire.sent[-1][1] == {"type": "next_node_idx", "next_node_idx": 6, "reset": False, "success": True}
    assert node.raftCommitIndex == 3
    # The same range again from its start (the leader's next index went back): upstream deleted 2..5,
    # reversed the add (dropping 7004) and logged "truncating already-applied log entries".
    node._SyncObj__onMessageReceived(leader, _ae(1, (1, 0), entries[:2], commit=5))
    assert "127.0.0.1:7004" in _peers(node) and "127.0.0.1:7004" not in wire.dropped
    assert [e[1] for e in node._SyncObj__raftLog[:]] == [1, 2, 3, 4, 5]
    assert wire.sent[-1][1]["next_node_idx"] == 4  # vouches for 2..3 only
    assert node.raftCommitIndex == 3                # not past what the message vouched for
    assert node.appends_resent == 2 and node.appends_truncated == 0


def test_a_conflicting_tail_is_cut_and_its_membership_change_reversed(follower: Any) -> None:
    node, wire = follower
    leader = TCPNode(LEADER)
    noop = bytes([1])
    node._SyncObj__onMessageReceived(leader, _ae(1, (1, 0), [(noop, 2, 1), (_member("add", "127.0.0.1:7004"), 3, 1)]))
    assert "127.0.0.1:7004" in _peers(node)
    node._SyncObj__onMessageReceived(TCPNode("127.0.0.1:7003"), _ae(2, (2, 1), [(noop, 3, 2)]))
    assert "127.0.0.1:7004" not in _peers(node)
    assert [(e[1], e[2]) for e in node._SyncObj__raftLog[:]] == [(1, 0), (2, 1), (3, 2)]
    assert node.appends_truncated == 1


def test_a_large_entry_whose_finish_comes_one_chunk_early(follower: Any) -> None:
    node, wire = follower
    leader = TCPNode(LEADER)
    entry = (bytes([REGULAR]) + b"x" * 100, 2, 1)
    data = upstream_pickle.dumps(entry)
    cut = len(data) - 5
    base = {"type": "append_entries", "term": 1, "prevLogIdx": 1, "prevLogTerm": 0, "commit_index": 0}
    node._SyncObj__onMessageReceived(leader, {**base, "transmission": "start", "data": data[:10]})
    node._SyncObj__onMessageReceived(leader, {**base, "transmission": "finish", "data": data[10:cut]})
    assert node._SyncObj__getCurrentLogIndex() == 1
    node._SyncObj__onMessageReceived(leader, {**base, "transmission": "finish", "data": data[cut:]})
    assert node._SyncObj__raftLog[-1] == entry


def test_a_snapshot_keeps_its_sender_among_the_members(follower: Any) -> None:
    node, wire = follower
    node._SyncObj__raftLeader = TCPNode(LEADER)
    # The dump was written before the leader was added: its member list names others.
    node._SyncObj__updateClusterConfiguration(["127.0.0.1:7003", "127.0.0.1:7009"])
    assert _peers(node) == {"127.0.0.1:7003", "127.0.0.1:7009", LEADER}
    assert LEADER not in wire.dropped
    node._SyncObj__raftLeader = None  # at a restart the stored list is taken as it is
    node._SyncObj__updateClusterConfiguration(["127.0.0.1:7003"])
    assert _peers(node) == {"127.0.0.1:7003"}
