"""No term inflation: a master cut off from the others does not bump its term (PreVote, orca.raft_prevote).

Ten times: partition one follower (iptables DROP both ways in its namespace) for longer than several
election timeouts, then heal it. Without PreVote the cut-off master campaigned every 0.2-0.5 s while its
dead TCP links still looked connected, came back with a higher term, and deposed the healthy leader.
Here the leader and the term stay the same throughout, the healed master follows again and catches up,
and while it is cut off it answers writes with 503 (it heard from no leader), not 307.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from workload import health, http_json

if TYPE_CHECKING:
    from conftest import NetnsCluster

pytestmark = [pytest.mark.chaos]

CYCLES = 10
CUT_S = 3.0  # six to fifteen election timeouts (0.2-0.5 s)


def _wait_follows(nc: NetnsCluster, url: str, leader_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = health(url)
        if h is not None and h.get("leader_id") == leader_id and h.get("lag") == 0:
            return h
        time.sleep(0.1)
    raise AssertionError(f"{url} does not follow {leader_id} again within {timeout} s; logs in {nc.root}")


def test_partition_heal_cycles_leave_term_and_leader_unchanged(netns_cluster: NetnsCluster) -> None:
    nc = netns_cluster
    leader = nc.wait_leader(timeout=30)
    token = nc.token()
    follower = next(m for m in nc.masters if m is not leader)
    for m in nc.masters:
        _wait_follows(nc, m.url, leader.node_id)
    term = health(leader.url)["term"]
    answers: dict[int, int] = {}
    for cycle in range(CYCLES):
        nc.partition(follower)
        try:
            cut_until = time.monotonic() + CUT_S
            while time.monotonic() < cut_until:
                status, _, body = http_json("POST", follower.url + "/api/v1/deploy", token=token,
                                            body={"services": [{"name": f"p{cycle}", "image": "x", "replicas": 0}]})
                answers[status] = answers.get(status, 0) + 1
                lh = health(leader.url)
                assert lh is not None and lh["is_leader"] and lh["term"] == term, (cycle, lh)
                time.sleep(0.2)
            fh = health(follower.url)
            assert fh is not None and fh["term"] == term, f"cycle {cycle}: the cut-off master bumped its term: {fh}"
            assert fh["leader_id"] is None, fh
        finally:
            nc.heal(follower)
        h = _wait_follows(nc, follower.url, leader.node_id)
        assert h["term"] == term, (cycle, h)
    # the leader never changed, and writes were never redirected to where they could not go
    for m in nc.masters:
        h = health(m.url)
        assert h["term"] == term and h["leader_id"] == leader.node_id, h
    status, _, body = http_json("POST", leader.url + "/api/v1/deploy", token=token,
                                body={"services": [{"name": "after", "image": "x", "replicas": 0}]})
    assert status == 200, body
    print(f"\n{CYCLES} partition/heal cycles: term stayed {term}, leader {leader.node_id}; "
          f"writes to the cut-off master answered {answers}")
    assert answers.get(503, 0) > 0
