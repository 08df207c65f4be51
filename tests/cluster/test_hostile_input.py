"""Hostile input against real masters: every refusal is a 4xx with the envelope, and one node's garbage
heartbeats (2**64 integers, strings where numbers belong, deep JSON) never stop the other nodes' leases."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster

GOOD = ("good-1", "good-2")


def envelope(status: int, body: Any, want: int) -> None:
    assert status == want, (status, body)
    assert isinstance(body, dict) and set(body) >= {"error", "code", "details", "timestamp"}, body


def register(url: str, token: str, node_id: str) -> None:
    status, _, body = raw("POST", url + "/api/v1/agent/register", token=token, body={
        "node_id": node_id, "address": "http://127.0.0.1:9", "labels": {}, "capacity": {"memory": 2**30, "cpu": 1},
        "push_token": "p" * 32, "agent_version": "test"})
    assert status == 200, body


def heartbeat(url: str, token: str, node_id: str, seq: int, extra: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, _, body = raw("POST", url + "/api/v1/agent/heartbeat", token=token, body={
        "node_id": node_id, "seq": seq, "allocations": [], "applied": {"term": 0, "version": 0}, **(extra or {})})
    return status, body


def last_heartbeats(url: str, token: str) -> dict[str, str | None]:
    status, _, body = raw("GET", url + "/api/v1/cluster/nodes", token=token)
    assert status == 200, body
    return {n["id"]: n["last_heartbeat"] for n in body["nodes"]}


def chunked_post(url: str, path: str, token: str, chunks: int, size: int) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for _ in range(chunks):
                conn.send(f"{size:x}\r\n".encode() + b" " * size + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: read its answer
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_garbage_heartbeats_are_400_and_other_leases_keep_renewing(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    admin = cluster.token()
    agents = {node_id: cluster.token("agent", node_id) for node_id in (*GOOD, "evil")}
    for node_id in (*GOOD, "evil"):
        register(leader.url, agents[node_id], node_id)
    garbage = [
        {"seq": 2**64}, {"applied": {"term": 2**64, "version": 1}},
        {"allocations": [{"alloc": "a", "service": "s", "version": 2**64, "status": "running"}]},
        {"stats": {"a": {"cpu_pct": "high", "mem_pct": 1}}}, {"proxy": {"web": {"requests": "many"}}},
        {"proxy": {"web": {"requests": 2**64}}}, {"stats": {"a": {"cpu_pct": 1e308}}},
        {"allocations": [{"alloc": "a", "service": "s", "version": 1, "status": "running", "restarts": 2**64}]},
    ]
    seen: dict[str, list[str | None]] = {n: [] for n in GOOD}
    deadline = time.monotonic() + 60
    seq = 0
    while time.monotonic() < deadline and min(len(set(v)) for v in seen.values()) < 4:
        seq += 1
        for node_id in GOOD:
            status, body = heartbeat(leader.url, agents[node_id], node_id, seq)
            assert status == 200, body
        for bad in garbage:
            status, body = heartbeat(leader.url, agents["evil"], "evil", seq, bad)
            envelope(status, body, 400)
        status, _, body = raw("POST", leader.url + "/api/v1/agent/heartbeat", token=agents["evil"],
                              body=b"[" * 30_000 + b"]" * 30_000)
        envelope(status, body, 400)
        time.sleep(0.3)
        for node_id, at in last_heartbeats(leader.url, admin).items():
            if node_id in seen:
                seen[node_id].append(at)
    # Each good node's lease was committed again and again while the evil node sent garbage.
    assert all(len(set(v)) >= 4 for v in seen.values()), seen
    assert cluster.wait_leader().node_id == leader.node_id


def test_every_input_failure_is_a_4xx_with_the_envelope(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    admin = cluster.token()
    for query in ("since=" + "5" * 5000, "since=%D9%A3", "since=%C2%B2", "limit=" + "9" * 5000, "limit=%D9%A3"):
        status, _, body = raw("GET", leader.url + "/api/v1/events?" + query, token=admin)
        envelope(status, body, 400)
    for path, body in (("/api/v1/deploy", b'{"services": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                       ("/api/v1/tokens", {"role": "viewer", "name": "x", "ttl_s": 1e30}),
                       ("/api/v1/tokens", {"role": "viewer", "name": "x", "ttl_s": 2**64}),
                       ("/api/v1/services/web/scale", {"replicas": 2**64}),
                       ("/api/v1/cluster/nodes/x/drain", {"deadline_s": 1e400})):
        status, _, answer = raw("POST", leader.url + path, token=admin, body=body)
        assert 400 <= status < 500, (path, status, answer)
        envelope(status, answer, status)
    status, body = chunked_post(leader.url, "/api/v1/deploy", admin, chunks=64, size=32 * 1024)
    envelope(status, body, 413)
    status, body = chunked_post(leader.url, "/api/v1/agent/heartbeat", cluster.token("agent", "a"), chunks=4,
                                size=32 * 1024)
    envelope(status, body, 413)
    for m in cluster.masters:  # and nobody fell over
        assert cluster.health(m) is not None
