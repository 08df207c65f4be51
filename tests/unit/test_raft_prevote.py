"""PreVote (orca.raft_prevote): the grant rule exhaustively, and three real in-process PySyncObj members
(orca's `_SyncObj`, the guarded transport, 127.0.0.1) with one of them cut off by dropping every message
to and from it while its TCP links stay up, which is what an iptables DROP looks like until keepalive
gives up."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated

from orca.devcluster import free_ports
from orca.raft import _SyncObj
from orca.raft_prevote import grant_prevote, majority
from orca.raft_transport import GuardedTransport, TransportLimits

terms = st.integers(min_value=0, max_value=10**6)


@given(terms, terms, terms, terms, st.booleans(), st.none() | st.floats(min_value=0, max_value=100),
       st.floats(min_value=0, max_value=10))
def test_grant_rule(c_term: int, c_idx: int, my_term: int, my_idx: int, i_lead: bool, age: float | None,
                    quiet: float) -> None:
    granted = grant_prevote(candidate_last_term=c_term, candidate_last_index=c_idx, my_last_term=my_term,
                            my_last_index=my_idx, i_lead=i_lead, leader_contact_age=age, quiet_s=quiet)
    up_to_date = c_term > my_term or (c_term == my_term and c_idx >= my_idx)
    leader_alive = i_lead or (age is not None and age < quiet)
    assert granted == (up_to_date and not leader_alive)


def test_majority() -> None:
    assert [majority(v, 3) for v in range(4)] == [False, False, True, True]
    assert [majority(v, 5) for v in range(6)] == [False, False, False, True, True, True]
    assert majority(1, 1)


class _Counter(SyncObjConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @replicated
    def add(self, n: int) -> int:
        self.value += n
        return self.value


class _NoPreVote(_SyncObj):
    """Upstream's election behaviour, as the control case."""

    def _prevote_gate(self) -> None:
        return


@pytest.fixture(params=[True, False], ids=["prevote", "upstream"])
def trio(request: pytest.FixtureRequest) -> Iterator[tuple[list[SyncObj], list[str], set[str], bool]]:
    cls = _SyncObj if request.param else _NoPreVote
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    cut: set[str] = set()
    nodes: list[SyncObj] = []
    for me in addrs:
        conf = SyncObjConf(password="pw", bindAddress=me, appendEntriesUseBatch=False, raftMinTimeout=0.2,
                           raftMaxTimeout=0.5, appendEntriesPeriod=0.05, connectionTimeout=1e6,
                           connectionRetryTime=0.1, leaderFallbackTimeout=1.0)
        counter = _Counter()
        node = cls(me, [a for a in addrs if a != me], conf=conf, consumers=[counter],
                   transportClass=functools.partial(GuardedTransport, limits=TransportLimits()))
        node.test_counter = counter
        transport = node._SyncObj__transport
        upstream_send = transport.send

        def send(to: Any, message: Any, me: str = me, upstream_send: Any = upstream_send) -> bool:
            if me in cut or to.address in cut:
                return True  # dropped on the wire; the link looks fine
            return upstream_send(to, message)

        transport.send = send
        nodes.append(node)
    try:
        _wait(lambda: _leader(nodes) is not None and all(n._getLeader() is not None for n in nodes), 20)
        yield nodes, addrs, cut, request.param
    finally:
        for n in nodes:
            n.destroy()


def _leader(nodes: list[SyncObj]) -> SyncObj | None:
    leaders = [n for n in nodes if n._isLeader()]
    return leaders[0] if len(leaders) == 1 else None


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_a_cut_off_follower_keeps_its_term(trio: Any) -> None:
    nodes, addrs, cut, prevote = trio
    leader = _leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    term = leader.raftCurrentTerm
    cut.add(follower.selfNode.address)
    time.sleep(3.0)  # six to fifteen election timeouts
    if not prevote:  # the control: upstream campaigns into the void and inflates its term
        assert follower.raftCurrentTerm > term + 2
        return
    assert follower.raftCurrentTerm == term and follower.prevote_rounds >= 3
    assert leader._isLeader() and leader.raftCurrentTerm == term
    assert follower.leader_contact_age() is None or follower.leader_contact_age() > 2.0
    cut.clear()
    _wait(lambda: follower.leader_contact_age() is not None and follower.leader_contact_age() < 0.5, 10)
    assert leader._isLeader() and {n.raftCurrentTerm for n in nodes} == {term}


def test_prevote_still_elects_when_the_leader_dies(trio: Any) -> None:
    nodes, addrs, cut, prevote = trio
    leader = _leader(nodes)
    term = leader.raftCurrentTerm
    cut.add(leader.selfNode.address)  # the leader goes silent (as if killed; its links stay up)
    started = time.monotonic()
    others = [n for n in nodes if n is not leader]
    _wait(lambda: any(n._isLeader() for n in others), 10)
    new = next(n for n in others if n._isLeader())
    assert new.raftCurrentTerm > term
    print(f"\n{'prevote' if prevote else 'upstream'}: new leader {time.monotonic() - started:.3f} s "
          f"after the old one went silent")
    done = threading.Event()
    new.test_counter.add(1, callback=lambda *_: done.set())
    assert done.wait(5)
