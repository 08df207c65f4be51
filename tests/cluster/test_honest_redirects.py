"""Honest redirects: a master redirects only to a leader it heard from within the election timeout.

The scenario of the issue: kill the leader, let the survivors elect, kill the new leader. PySyncObj never
starts an election on a master connected to no one, so the last master keeps the dead leader as "the
leader" for ever; it used to answer every write with 307 to that dead address. Now it answers 503
CLUSTER_NOT_READY on every write route, /readyz says 503, and reads keep working from local state with
`X-Orca-Leader-Contact-Age` saying how stale they may be.
"""

from __future__ import annotations

import re
import time

import pytest

from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw
from orca.master.http import HMAC, POLICY

pytestmark = pytest.mark.cluster

BODIES = {
    "/api/v1/deploy": {"services": [{"name": "web", "image": "x"}]},
    "/api/v1/services/{name}/scale": {"replicas": 2},
    "/api/v1/tokens": {"name": "t", "role": "viewer"},
    "/api/v1/secrets": {"key": "K", "value": "v"},
    "/api/v1/webhooks": {"service": "web", "provider": "github"},
    "/api/v1/services/{name}/scaling": {"min": 1, "max": 2},
    "/api/v1/agent/register": {"node_id": "w1", "address": "http://127.0.0.1:1", "capacity": {}},
    "/api/v1/agent/heartbeat": {"node_id": "w1"},
}


def _write_routes() -> list[tuple[str, str, str]]:
    """(method, concrete path, role) of every write route the policy table lists."""
    out = []
    for (method, path), role in sorted(POLICY.items()):
        if method == "GET" or role == HMAC:
            continue
        if path == "/api/v1/agent/certificate":  # any master issues from the replicated CA: not a Raft write
            continue
        concrete = path.replace("{name}", "web").replace("{app}", "web").replace("{jti}", "j1") \
            .replace("{key}", "K").replace("{id}", "w1").replace("{n}", "0")
        concrete = re.sub(r"\{[a-z_]+\}", "x1", concrete)  # any other placeholder: a plausible id
        out.append((method, concrete, role))
    return out


def test_lone_master_answers_503_not_307_and_serves_stale_reads(cluster: LocalCluster) -> None:
    token = cluster.token()
    first = cluster.wait_leader(timeout=30, all_up=True)
    status, _, body = raw("POST", first.url + "/api/v1/deploy", token=token,
                          body={"services": [{"name": "web", "image": "x", "replicas": 0}]})
    assert status == 200, body
    cluster.kill(first)
    second = cluster.wait_leader(timeout=30, exclude=first.node_id)
    lone = next(m for m in cluster.masters if m.alive and m is not second)
    # the survivor follows the new leader: an honest 307 to a live leader
    status, headers, _ = raw("POST", lone.url + "/api/v1/services/web/scale", token=token, body={"replicas": 0})
    assert status in (307, 200), status
    cluster.kill(second)
    killed_at = time.monotonic()

    # Within the election timeout it may still redirect to `second` (it heard from it); then 503 for good.
    deadline = killed_at + 10
    while True:
        status, headers, body = raw("POST", lone.url + "/api/v1/deploy", token=token, body=BODIES["/api/v1/deploy"])
        if status == 503:
            break
        assert status == 307 and time.monotonic() < deadline, (status, body)
        time.sleep(0.02)
    to_503 = time.monotonic() - killed_at
    assert body["code"] == "CLUSTER_NOT_READY" and "leader_contact_age_s" in body["details"], body
    print(f"\nlone master: 503 {to_503:.3f} s after the leader was killed")

    agent = cluster.token("agent", "w1")
    for _ in range(3):  # and it stays honest for as long as it is alone
        for method, path, role in _write_routes():
            tok = agent if role == "agent" else token
            status, headers, body = raw(method, lone.url + path, token=tok, body=BODIES.get(
                next((k for k in BODIES if path == k.replace("{name}", "web")), ""), {}))
            assert status == 503 and body["code"] == "CLUSTER_NOT_READY", (method, path, status, body)
            assert "Location" not in headers
        status, _, body = raw("GET", lone.url + "/readyz")
        assert status == 503, body
        status, headers, body = raw("GET", lone.url + "/api/v1/status", token=token)
        assert status == 200 and any(s["name"] == "web" for s in body["services"]), body
        assert headers["X-Orca-Leader"] == ""
        age = float(headers["X-Orca-Leader-Contact-Age"])
        assert age >= time.monotonic() - killed_at - 1.0, age
        health = cluster.health(lone)
        assert health is not None and health["leader_id"] is None and health["cluster_ready"] is False, health
        time.sleep(1.0)

    # a quorum again: the lone master follows (or is) the new leader, and writes go through
    cluster.start([first])
    leader = cluster.wait_leader(timeout=30)
    status, headers, body = raw("POST", lone.url + "/api/v1/services/web/scale", token=token, body={"replicas": 0})
    if lone is not leader:
        assert status == 307 and headers["Location"].startswith(leader.url), (status, headers)
    else:
        assert status == 200, body
    status, _, _ = raw("GET", lone.url + "/readyz")
    assert status == 200
