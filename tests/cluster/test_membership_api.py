"""The membership routes on real masters: roles, validation envelopes, refusals, and what a follower says.

The full grow/shrink/replace scenario under load is in tests/chaos/test_grow_shrink_replace.py.
"""

from __future__ import annotations

import time

import pytest

from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster

PATH = "/api/v1/cluster/members"


def test_members_routes_validate_and_refuse(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader(all_up=True)
    follower = next(m for m in cluster.masters if m is not leader)
    admin, viewer = cluster.token(), cluster.token("viewer", "v")

    status, _, body = raw("GET", leader.url + PATH, token=viewer)
    assert status == 200
    rows = {r["id"]: r for r in body["members"]}
    assert set(rows) == {"master-1", "master-2", "master-3"}
    assert rows[leader.node_id]["role"] == "leader"
    assert all(r["in_raft"] and r["connected"] and r["lag"] is not None for r in rows.values())
    assert all(r["raft"].startswith("127.0.0.1:") and r["api"].startswith("http://") for r in rows.values())

    status, headers, _ = raw("GET", follower.url + PATH, token=viewer)
    assert status == 307 and headers["Location"].startswith(leader.url)

    status, _, _ = raw("GET", leader.url + PATH)
    assert status == 401
    for method, path in (("POST", PATH), ("DELETE", PATH + "/master-1")):
        status, _, body = raw(method, leader.url + path, token=viewer, body={})
        assert status == 403, (method, body)

    bad_bodies = [
        {"id": "m4", "raft": "127.0.0.1:1"},                                   # no api
        {"id": "m4", "raft": "nope", "api": "http://127.0.0.1:2"},
        {"id": "m4", "raft": "127.0.0.1:99999", "api": "http://127.0.0.1:2"},
        {"id": "m 4", "raft": "127.0.0.1:1", "api": "http://127.0.0.1:2"},
        {"id": "m4", "raft": "127.0.0.1:1", "api": "ftp://x"},
        {"id": "m4", "raft": "127.0.0.1:1", "api": "http://127.0.0.1:2", "extra": 1},
        {"id": ["x"], "raft": 5, "api": None},
        {"id": "m4", "raft": "0.0.0.0:7000", "api": "http://127.0.0.1:2"},        # a wildcard
        {"id": "m4", "raft": "127.0.0.1:1", "api": "https://127.0.0.1:2"},        # https in a plain cluster
    ]
    for bad in bad_bodies:
        status, _, body = raw("POST", leader.url + PATH, token=admin, body=bad)
        assert status == 400 and body["code"] == "VALIDATION_ERROR", (bad, status, body)
    status, _, body = raw("POST", leader.url + PATH, token=admin, body=b"[1, 2")
    assert status == 400, body

    status, _, body = raw("DELETE", leader.url + PATH + "/nobody", token=admin)
    assert status == 404 and body["code"] == "NOT_FOUND"
    # an existing id with other addresses, and another member's Raft address
    other = rows[follower.node_id]
    status, _, body = raw("POST", leader.url + PATH, token=admin,
                          body={"id": follower.node_id, "raft": "127.0.0.1:1", "api": other["api"]})
    assert status == 409, body
    # re-adding a member as it is changes nothing
    status, _, body = raw("POST", leader.url + PATH, token=admin,
                          body={"id": follower.node_id, "raft": other["raft"], "api": other["api"]})
    assert status == 200 and body["added"] is False, body

    # one master down: adding would need 3 healthy of 4, removing a live one 2 of 2
    cluster.kill(follower)
    third = next(m for m in cluster.masters if m is not leader and m is not follower)
    status, _, body = raw("POST", leader.url + PATH, token=admin,
                          body={"id": "m4", "raft": "127.0.0.1:1", "api": "http://127.0.0.1:2"})
    assert status == 409 and body["code"] == "QUORUM_AT_RISK", body
    assert "lose quorum" in body["error"]
    status, _, body = raw("DELETE", leader.url + PATH + "/" + third.node_id, token=admin)
    assert status == 409 and body["code"] == "QUORUM_AT_RISK", body
    status, _, body = raw("GET", leader.url + PATH, token=viewer)
    rows = {r["id"]: r for r in body["members"]}
    assert rows[follower.node_id]["role"] == "unreachable" and rows[follower.node_id]["connected"] is False


def test_a_master_added_to_a_tls_cluster_serves_with_the_cluster_ca(tmp_path) -> None:  # noqa: ANN001
    """The new master's certificate comes from the replicated CA once it has joined (its API listens only
    then), verifies for its advertised name, and the others list and redirect to its https URL."""
    c = LocalCluster(tmp_path / "cluster", tls=True)
    with c:
        c.start()
        leader = c.wait_leader(timeout=60, all_up=True)
        ca = c.ca_file
        assert ca is not None
        new = c.new_master("master-4")
        assert new.url.startswith("https://")
        c.start([new])
        status, _, body = raw("POST", leader.url + PATH, token=c.token(), cafile=ca,
                              body={"id": "master-4", "raft": f"127.0.0.1:{new.raft_port}", "api": new.url})
        assert status == 200 and body["added"] is True, body
        deadline = time.monotonic() + 60
        while True:
            try:
                status, headers, body = raw("GET", new.url + PATH, token=c.token("viewer", "v"), cafile=ca)
                break
            except OSError:  # not listening yet, or still on a certificate the CA did not sign
                assert time.monotonic() < deadline, "the new master never served with the cluster CA"
                time.sleep(0.2)
        assert status == 307 and headers["Location"].startswith(leader.url), (status, headers)
        status, _, body = raw("GET", leader.url + PATH, token=c.token("viewer", "v"), cafile=ca)
        rows = {r["id"]: r for r in body["members"]}
        assert rows["master-4"]["api"] == new.url and rows["master-4"]["role"] == "follower"
        status, _, info = raw("GET", leader.url + "/api/v1/cluster/info", token=c.token("viewer", "v"), cafile=ca)
        assert {m["id"]: m["api_url"] for m in info["masters"]}["master-4"] == new.url
