"""Node identity against real masters: an agent token acts for its own node only, and join tokens are
single use, rotatable and revocable. Every refusal answers the JSON envelope and changes nothing: the
leader's applied index and a digest of nodes, tokens, join tokens and events stay the same."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from orca import auth
from orca.client import Client
from orca.devcluster import LocalCluster, MasterProc
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster

CAPACITY = {"memory": 1 << 30, "cpu": 1.0}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # A long lease: no node goes down on its own while the test watches the state stand still.
    c = LocalCluster(tmp_path_factory.mktemp("identity"), timing={"node_lease_ttl_s": 600.0})
    try:
        c.start()
        c.wait_leader(timeout=60, all_up=True)
        yield c
    finally:
        c.__exit__(None, None, None)


def register_body(node: str, address: str, push_token: str = "p" * 32) -> dict[str, Any]:
    return {"node_id": node, "address": address, "capacity": CAPACITY, "push_token": push_token}


def heartbeat_body(node: str, seq: int = 1) -> dict[str, Any]:
    return {"node_id": node, "seq": seq, "allocations": [], "applied": {"term": 0, "version": 0}}


def snapshot(leader: MasterProc, admin: str) -> tuple[str, str]:
    """(applied index, digest of what a refused request could have touched), read on the leader."""
    parts = []
    index = ""
    for path in ("/api/v1/cluster/nodes", "/api/v1/tokens", "/api/v1/cluster/join-tokens",
                 "/api/v1/events?limit=1000"):
        # Not ?consistent=true: its barrier is an entry of its own. The leader applies what it commits.
        status, headers, body = raw("GET", leader.url + path, token=admin)
        assert status == 200, body
        parts.append(body)
        index += headers["X-Orca-Applied-Index"] + " "
    return index, hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def settled(leader: MasterProc, admin: str, timeout: float = 30.0) -> tuple[str, str]:
    """Wait until the leader commits nothing more (a pending lease renewal lands), then snapshot."""
    deadline = time.monotonic() + timeout
    last = snapshot(leader, admin)
    while time.monotonic() < deadline:
        time.sleep(1.5)  # more than one lease-commit interval
        now = snapshot(leader, admin)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the state kept changing for {timeout} s")


def refused(response: tuple[int, dict[str, str], Any], status: int, code: str) -> dict[str, Any]:
    got, _, body = response
    assert got == status, (got, body)
    assert isinstance(body, dict) and body["code"] == code and body["error"] and "timestamp" in body, body
    return body


def test_a_token_of_worker_a_cannot_act_as_worker_b(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    admin = cluster.token()
    with Client([leader.url], admin) as client:
        token_a = client.create_token("agent", node="worker-a")["token"]
        assert auth.verify_token(auth.signing_key(cluster.secret_file.read_bytes().strip()), token_a).node == "worker-a"
    token_b = cluster.token("agent", "worker-b")  # minted offline, as bootstrap-cluster.sh does
    url = leader.url
    for node, token in (("worker-a", token_a), ("worker-b", token_b)):
        status, _, body = raw("POST", url + "/api/v1/agent/register", token=token,
                              body=register_body(node, f"http://127.0.0.1:1/{node}"))
        assert status == 200 and body["node_id"] == node, body
        assert raw("POST", url + "/api/v1/agent/heartbeat", token=token, body=heartbeat_body(node))[0] == 200
    before = settled(leader, admin)

    attacks = [
        # Re-register worker-b at an address the holder of worker-a's token controls.
        ("POST", "/api/v1/agent/register", register_body("worker-b", "http://127.0.0.1:2/evil", "e" * 32)),
        ("POST", "/api/v1/agent/register", register_body("worker-z", "http://127.0.0.1:2/fake")),  # a fake node
        ("POST", "/api/v1/agent/heartbeat", heartbeat_body("worker-b", 99)),
        ("POST", "/api/v1/agent/heartbeat", heartbeat_body("worker-z")),
    ]
    for method, path, body in attacks:
        err = refused(raw(method, url + path, token=token_a, body=body), 403, "FORBIDDEN")
        assert err["details"] == {"node": body["node_id"], "token_node": "worker-a"}
    # Logs are a viewer's read; an agent token reads nothing (worker-b's replicas' logs included).
    refused(raw("GET", url + "/api/v1/services/anything/logs", token=token_a), 403, "FORBIDDEN")
    refused(raw("GET", url + "/api/v1/services/anything/logs/stream", token=token_a), 403, "FORBIDDEN")
    # An agent token from before node identity (no node claim) is refused outright.
    key = auth.signing_key(cluster.secret_file.read_bytes().strip())
    unbound = jwt.encode({"sub": "old", "role": "agent", "jti": "old1", "iat": int(time.time())}, key,
                         algorithm="HS256")
    body = refused(raw("POST", url + "/api/v1/agent/register", token=unbound,
                       body=register_body("worker-b", "http://127.0.0.1:2/evil")), 401, "UNAUTHORIZED")
    assert "--node" in body["error"]
    refused(raw("POST", url + "/api/v1/agent/heartbeat", token=unbound, body=heartbeat_body("worker-b")),
            401, "UNAUTHORIZED")
    # Humans are not agents: an admin token cannot register a node either.
    refused(raw("POST", url + "/api/v1/agent/register", token=admin,
                body=register_body("worker-b", "http://127.0.0.1:2/evil")), 403, "FORBIDDEN")

    # Nothing was committed and no heartbeat was recorded: a recorded one would be committed as a
    # lease renewal within an interval, so watch a few of them.
    for _ in range(3):
        assert snapshot(leader, admin) == before
        time.sleep(1.0)
    nodes = {n["id"]: n for n in raw("GET", url + "/api/v1/cluster/nodes", token=admin)[2]["nodes"]}
    assert nodes["worker-b"]["address"] == "http://127.0.0.1:1/worker-b" and "worker-z" not in nodes

    # Its own credential still works (the refusals did not lock it out).
    assert raw("POST", url + "/api/v1/agent/heartbeat", token=token_b, body=heartbeat_body("worker-b", 2))[0] == 200


def exchange(url: str, token: str, node: str, nonce: str | None = None) -> tuple[int, dict[str, str], Any]:
    return raw("POST", url + "/api/v1/agent/join", token=token,
               body={"node_id": node, "nonce": nonce or secrets.token_urlsafe(32)})


def test_join_tokens_are_single_use_rotatable_and_revocable(cluster: LocalCluster, tmp_path: Path) -> None:
    leader = cluster.wait_leader()
    url = leader.url
    admin = cluster.token()
    client = Client([url], admin)
    first = client.create_join_token()
    assert first["token"].startswith("ORCAJOIN-1-") and first["expires_at"] and first["used_by"] is None

    # The exchange: a credential bound to the node, that registers it.
    nonce = secrets.token_urlsafe(32)
    status, _, got = exchange(url, first["token"], "worker-c", nonce)
    assert status == 201, got
    key = auth.signing_key(cluster.secret_file.read_bytes().strip())
    claims = auth.verify_token(key, got["token"])
    assert (claims.role, claims.node, claims.jti) == ("agent", "worker-c", got["jti"])
    assert raw("POST", url + "/api/v1/agent/register", token=got["token"],
               body=register_body("worker-c", "http://127.0.0.1:1/c"))[0] == 200
    # A lost answer: the same agent (same nonce) gets the same credential back, nothing new.
    status, _, again = exchange(url, first["token"], "worker-c", nonce)
    assert status == 200 and again["jti"] == got["jti"]

    before = settled(leader, admin)
    refused(exchange(url, first["token"], "worker-d"), 401, "UNAUTHORIZED")          # used
    refused(exchange(url, first["token"], "worker-c"), 401, "UNAUTHORIZED")          # used, without the nonce
    refused(exchange(url, "ORCAJOIN-1-" + "0" * 16 + "-" + "0" * 64, "worker-d"), 401, "UNAUTHORIZED")
    refused(exchange(url, "garbage", "worker-d"), 401, "UNAUTHORIZED")
    refused(exchange(url, admin, "worker-d"), 401, "UNAUTHORIZED")                    # a JWT is not a join token
    refused(raw("POST", url + "/api/v1/agent/join", body={"node_id": "worker-d", "nonce": "n" * 32}),
            401, "UNAUTHORIZED")
    assert snapshot(leader, admin) == before
    spare = client.create_join_token()
    after_spare = settled(leader, admin)
    refused(exchange(url, spare["token"], "worker-a"), 409, "CONFLICT")              # an existing node
    refused(exchange(url, spare["token"], "Bad_Node"), 400, "VALIDATION_ERROR")
    refused(raw("POST", url + "/api/v1/agent/join", token=spare["token"], body={"node_id": "worker-d"}),
            400, "VALIDATION_ERROR")                                                  # no nonce
    assert snapshot(leader, admin) == after_spare
    assert before != after_spare

    # Rotation revokes every unused token; a revoked one is refused.
    rotated = client.create_join_token(rotate=True)
    assert spare["id"] in rotated["rotated"]
    refused(exchange(url, spare["token"], "worker-d"), 401, "UNAUTHORIZED")
    pinned = client.create_join_token(node="worker-e")
    refused(exchange(url, pinned["token"], "worker-f"), 403, "FORBIDDEN")             # made for worker-e
    assert exchange(url, pinned["token"], "worker-e")[0] == 201
    revoked = client.create_join_token()
    client.revoke_join_token(revoked["id"])
    refused(exchange(url, revoked["token"], "worker-d"), 401, "UNAUTHORIZED")
    assert exchange(url, rotated["token"], "worker-d")[0] == 201

    listed = {t["id"]: t for t in client.list_join_tokens()}
    assert listed[first["id"]]["used_by"] == "worker-c" and listed[rotated["id"]]["used_by"] == "worker-d"
    assert listed[spare["id"]]["revoked"] and listed[revoked["id"]]["revoked"]
    assert all("token" not in t for t in listed.values())  # never shown again
    nodes = {t["node"] for t in client.list_tokens() if t.get("role") == "agent"}
    assert {"worker-a", "worker-c", "worker-d", "worker-e"} <= nodes

    # Only admins mint join tokens; a follower redirects the exchange to the leader.
    refused(raw("POST", url + "/api/v1/cluster/join-tokens", token=cluster.token("deployer", "dev"), body={}),
            403, "FORBIDDEN")
    follower = next(m for m in cluster.masters if m is not leader)
    assert exchange(follower.url, client.create_join_token()["token"], "worker-g")[0] == 307
    client.close()
