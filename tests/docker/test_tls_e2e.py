"""TLS on every link, end to end on one engine: HTTPS masters with the cluster CA the first leader
made; one agent joins with a version-2 join token (it pins the CA by fingerprint: nothing else is
copied), another with a node token and `ca_file`; a capture on loopback while a secret is pushed
shows no token and no secret value in clear; mutual TLS both ways (a node's certificate cannot
speak for another node, nor call an agent API); then `orca cluster ca rotate` with an overlap: every
certificate moves to the new CA while the nodes stay ready and a deploy still converges, and the old
CA is retired."""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orca import tls
from orca.client import ApiError, Client
from orca.devcluster import LocalCluster
from tests.docker.e2e_helpers import HTTPD, IMAGE, converged, wait_for
from tests.packet_capture import Capture, capture_available

pytestmark = pytest.mark.docker


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    run = uuid.uuid4().hex[:6]
    nodes = [f"t{run}-a", f"t{run}-b"]
    cluster = LocalCluster(tmp_path / "c", tls=True, timing={"agent_heartbeat_s": 0.5, "node_lease_ttl_s": 3.0})
    engine = docker.from_env()
    try:
        cluster.start()
        cluster.wait_leader(timeout=30, all_up=True)
        client = Client([m.url for m in cluster.masters], cluster.token(), timeout=15, ca_file=cluster.ca_file)
        join = client.create_join_token(node=nodes[0])["token"]
        assert join.startswith("ORCAJOIN-2-" + tls.fingerprint(Path(cluster.ca_file or "").read_bytes()))
        cluster.start_agent(cluster.add_agent(nodes[0], token=join))
        cluster.start_agent(cluster.add_agent(nodes[1]))
        wait_for(lambda: len([n for n in client.nodes() if n["status"] == "ready"]) == 2, 60, "agents ready", cluster)
        yield cluster, client, nodes
    finally:
        cluster.__exit__(None, None, None)
        for node in nodes:
            for c in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
                c.remove(force=True)
        engine.close()


def _post(url: str, body: Any, token: str, ctx: ssl.SSLContext) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_mutual_tls_join_v2_and_ca_rotation(tls_stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, nodes = tls_stack
    a_dir, b_dir = (cluster.root / n / "tls" for n in nodes)
    assert not (cluster.root / f"{nodes[0]}.toml").read_text().count("ca_file")  # pinned from the token
    for d in (a_dir, b_dir):
        assert oct((d / "node.key").stat().st_mode & 0o777) == "0o600"
    # Every byte on loopback while a secret is set and pushed to both agents with the deploy: the
    # admin token, the agent tokens and the secret value never appear in clear.
    secret_value = "s3cret-" + uuid.uuid4().hex
    with contextlib.ExitStack() as stack:
        cap = stack.enter_context(Capture("lo")) if capture_available() else None
        client.set_secret("DB_PASSWORD", secret_value)
        client.deploy([{"name": "web", "image": IMAGE, "command": HTTPD, "replicas": 2,
                        "env": {"PASSWORD": "${secret:DB_PASSWORD}"}, "resources": {"memory": "32Mi"}}])
        wait_for(converged(client, "web", 2), 60, "web converged", cluster)
    if cap is not None:
        seen = cap.bytes()
        assert len(seen) > 10_000, "the capture saw (almost) nothing"
        assert secret_value.encode() not in seen
        for token in (cluster.token(), (cluster.root / f"{nodes[1]}.token").read_text().strip(),
                      (cluster.root / nodes[0] / "node.token").read_text().strip()):
            assert token.split(".")[1].encode() not in seen  # the claims part of a JWT, never in clear

    # Node b's certificate cannot heartbeat for node a (403), even with a's own token.
    leader = cluster.wait_leader()
    b_ctx = tls.client_context(Path(cluster.ca_file or "").read_bytes(),
                               (str(b_dir / "node.crt"), str(b_dir / "node.key")))
    beat = {"node_id": nodes[0], "seq": 1, "allocations": [], "applied": {"term": 0, "version": 0}, "stats": {}}
    assert _post(leader.url + "/api/v1/agent/heartbeat", beat, cluster.token("agent", nodes[0]), b_ctx) == 403
    # ...nor call an agent API: only masters push.
    push = urllib.request.Request(cluster.agents[0].url + "/v1/allocations", method="PUT", data=b"{}",
                                  headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(push, context=b_ctx, timeout=10)
    assert info.value.code == 403
    # Without a client certificate: no push (403), but a scraper that trusts the CA reads /metrics.
    ca_only = tls.client_context(Path(cluster.ca_file or "").read_bytes())
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(push, context=ca_only, timeout=10)
    assert info.value.code == 403
    with urllib.request.urlopen(cluster.agents[0].url + "/metrics", context=ca_only, timeout=10) as resp:
        assert resp.status == 200 and b"orca_agent_pushes_total" in resp.read()

    # Rotation with overlap: both CAs trusted, then everything re-issued from the new one.
    old = tls.fingerprint(Path(cluster.ca_file or "").read_bytes())
    rotated = client.request("POST", "/api/v1/cluster/ca/rotate", json={"overlap_s": 4})
    new = rotated["current"]
    assert new != old and set(rotated["trusted"]) == {old, new}
    with pytest.raises(ApiError) as refused:
        client.request("POST", "/api/v1/cluster/ca/finish", json={})
    assert refused.value.status == 409  # the overlap has not elapsed

    def renewed() -> bool:
        cas = [c for c in tls.split_bundle((a_dir / "ca.crt").read_bytes())]
        new_ca = next((c for c in cas if tls.fingerprint(c) == new), None)
        return new_ca is not None and all(tls.issued_by((d / "node.crt").read_bytes(), new_ca) for d in (a_dir, b_dir))
    wait_for(renewed, 60, "node certificates renewed from the new CA", cluster)
    wait_for(lambda: client.request("POST", "/api/v1/cluster/ca/finish", json={})["retired"] == [old], 60,
             "old CA retired", cluster)
    assert [n["status"] for n in client.nodes()] == ["ready", "ready"]

    # Still one cluster: a client that trusts the new CA only, a scale that converges.
    new_only = cluster.root / "new-ca.crt"
    new_only.write_text(client.request("GET", "/api/v1/cluster/ca")["bundle"])
    assert tls.fingerprint(new_only.read_bytes()) == new
    fresh = Client([m.url for m in cluster.masters], cluster.token(), ca_file=str(new_only))
    fresh.scale("web", 3)
    wait_for(converged(fresh, "web", 3), 60, "web scaled after the rotation", cluster)
    wait_for(lambda: all(n["status"] == "ready" for n in fresh.nodes()), 30, "nodes ready", cluster)

    # The joined agent restarts: its key, certificate, CA and credential are reused (the join token is
    # spent), and it heartbeats again.
    agent_a = cluster.agents[0]
    cert_before = (a_dir / "node.crt").read_bytes()
    cluster.kill(agent_a, signal.SIGTERM)
    cluster.start_agent(agent_a)
    wait_for(lambda: "registered as" in agent_a.log.read_text().split("agent stopping")[-1], 30,
             "joined agent registered again", cluster)
    wait_for(lambda: all(n["status"] == "ready" for n in fresh.nodes()), 30, "nodes ready after restart", cluster)
    assert (a_dir / "node.crt").read_bytes() == cert_before
