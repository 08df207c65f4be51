"""Three real masters on 127.0.0.1: election, redirects, readiness, durability, idempotency, auth."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import jwt
import pytest

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def spec(name: str, **extra: object) -> dict:
    return {"name": name, "image": "orca-test/busybox", "replicas": 1, **extra}


def test_one_leader_that_every_master_agrees_on(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    deadline = time.monotonic() + 15  # a loaded box may be slow to answer; every master must, eventually
    views = [cluster.health(m) for m in cluster.masters]
    while not all(v is not None and v["cluster_ready"] for v in views) and time.monotonic() < deadline:
        time.sleep(0.2)
        views = [cluster.health(m) for m in cluster.masters]
    assert all(v is not None for v in views), views
    assert {v["leader_id"] for v in views} == {leader.node_id}
    assert sum(v["is_leader"] for v in views) == 1
    assert all(v["cluster_size"] == 3 and v["cluster_ready"] for v in views)
    for m in cluster.masters:
        status, _, body = raw("GET", m.url + "/readyz")
        assert status == 200, body
        assert raw("GET", m.url + "/livez")[0] == 200
    status, _, body = raw("GET", leader.url + "/api/v1/status/raft")
    assert status == 200 and body["status"] in ("up", "degraded") and body["detail"]["state"] == "leader"


def test_follower_redirects_writes_with_exact_location(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    token = cluster.token()
    status, headers, body = raw("POST", follower.url + "/api/v1/services/web/scale?x=1&y=two", token=token,
                                body={"replicas": 2})
    assert status == 307
    assert headers["Location"] == leader.url + "/api/v1/services/web/scale?x=1&y=two"
    assert headers["X-Current-Leader"] == leader.url
    assert body["code"] == "NOT_LEADER" and body["leader"] == leader.url
    assert set(body) >= {"error", "code", "details", "timestamp"}
    # The SDK follows the redirect itself; a follower then serves the read from its applied state.
    with Client([follower.url], token) as client:
        assert client.deploy([spec("web")])["deployed"] == ["web"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, headers, body = raw("GET", follower.url + "/api/v1/status", token=token)
        if body["services"]:
            break
        time.sleep(0.05)
    assert [s["name"] for s in body["services"]] == ["web"]
    assert headers["X-Orca-Leader"] == leader.url and int(headers["X-Orca-Applied-Index"]) > 0
    assert body["services"][0]["pending_reason"] == "no nodes"
    # consistent reads go to the leader
    status, headers, _ = raw("GET", follower.url + "/api/v1/status?consistent=true", token=token)
    assert status == 307 and headers["Location"] == leader.url + "/api/v1/status?consistent=true"
    status, _, body = raw("GET", leader.url + "/api/v1/status?consistent=true", token=token)
    assert status == 200 and [s["name"] for s in body["services"]] == ["web"]


def test_lone_master_answers_cluster_not_ready(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "lone") as c:
        lone = c.masters[0]
        c.start([lone])
        deadline = time.monotonic() + 20
        while c.health(lone) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # several election timeouts: it must still have no leader
        token = c.token()
        status, _, body = raw("POST", lone.url + "/api/v1/deploy", token=token, body={"services": [spec("x")]})
        assert status == 503 and body["code"] == "CLUSTER_NOT_READY"
        assert raw("GET", lone.url + "/readyz")[0] == 503
        status, _, body = raw("GET", lone.url + "/api/v1/cluster/leader")
        assert status == 503 and body["code"] == "CLUSTER_NOT_READY"
        assert c.health(lone)["cluster_ready"] is False


def _write_load(urls: list[str], token: str, stop: threading.Event, acked: list[str], errors: list[str],
                tag: str) -> None:
    with Client(urls, token, timeout=5.0, retries=40) as client:
        i = 0
        while not stop.is_set() and i < 400:
            name = f"{tag}-{i}"
            try:
                client.deploy([spec(name)], idempotency_key=f"load-{name}")
                acked.append(name)
            except ApiError as err:  # an unknown outcome: not counted as acknowledged
                errors.append(f"{name}: {err}")
            i += 1


def test_leader_kill_under_write_load_loses_no_acknowledged_write(cluster: LocalCluster) -> None:
    token = cluster.token()
    urls = [m.url for m in cluster.masters]
    stop = threading.Event()
    acked: list[str] = []
    errors: list[str] = []
    writers = [threading.Thread(target=_write_load, args=(urls, token, stop, acked, errors, f"w{t}"))
               for t in range(4)]
    for w in writers:
        w.start()
    try:
        time.sleep(1.0)
        old = cluster.wait_leader()
        before_kill = len(acked)
        cluster.kill(old)
        new = cluster.wait_leader(timeout=10, exclude=old.node_id)
        time.sleep(1.5)
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    assert before_kill > 0 and len(acked) > before_kill, (before_kill, len(acked), errors[:5])
    # The new leader takes writes.
    with Client([new.url], token) as client:
        assert client.deploy([spec("after-failover")])["deployed"] == ["after-failover"]
        names = {s["name"] for s in client.status(consistent=True)}
    assert set(acked) <= names, sorted(set(acked) - names)[:10]
    # The killed master comes back and converges to the same state.
    cluster.start([old])
    _wait_same_services(cluster, token, names | {"after-failover"})


def _wait_same_services(cluster: LocalCluster, token: str, expected: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        for m in cluster.masters:
            try:
                status, _, body = raw("GET", m.url + "/api/v1/status", token=token, timeout=2)
            except OSError:  # still starting
                status, body = 0, None
            seen[m.node_id] = {s["name"] for s in body["services"]} if status == 200 else set()
        if all(expected <= names for names in seen.values()):
            return
        time.sleep(0.2)
    pytest.fail(f"masters did not converge: missing {({k: sorted(expected - v)[:5] for k, v in seen.items()})}")


def test_full_stop_and_start_recovers_everything(cluster: LocalCluster) -> None:
    token = cluster.token()
    with Client([m.url for m in cluster.masters], token) as client:
        for i in range(30):
            client.deploy([spec(f"svc-{i}", replicas=i % 4)])
        client.scale("svc-3", 7)
        client.stop("svc-4")
        created = client.create_token("viewer", "keeper")
        client.revoke_token(created["jti"])
        expected = {s["name"]: (s["replicas"], s["status"]) for s in client.status(consistent=True)}
    for m in cluster.masters:
        cluster.kill(m)  # SIGKILL all three: only the journal and the dump remain
    cluster.start()
    leader = cluster.wait_leader(timeout=30)
    with Client([leader.url], token) as client:
        got = {s["name"]: (s["replicas"], s["status"]) for s in client.status(consistent=True)}
        tokens = {t["jti"]: t for t in client.list_tokens()}
    assert got == expected
    assert expected["svc-3"] == (7, "pending") and expected["svc-4"][1] == "stopped"
    assert tokens[created["jti"]]["revoked"] is True
    # the revoked token is refused after the restart too
    status, _, body = raw("GET", leader.url + "/api/v1/status", token=created["token"])
    assert status == 401 and body["code"] == "UNAUTHORIZED"


def test_idempotency_key_across_failover_applies_once(cluster: LocalCluster) -> None:
    token = cluster.token()
    leader = cluster.wait_leader()
    key = uuid.uuid4().hex
    status, _, first = raw("POST", leader.url + "/api/v1/deploy", token=token,
                           headers={"Idempotency-Key": key}, body={"services": [spec("once")]})
    assert status == 200 and first["deployed"] == ["once"]
    cluster.kill(leader)
    new = cluster.wait_leader(timeout=10, exclude=leader.node_id)
    status, _, again = raw("POST", new.url + "/api/v1/deploy", token=token, headers={"Idempotency-Key": key},
                           body={"services": [spec("once")]})
    assert status == 200 and again["replayed"] is True and again["deployed"] == first["deployed"]
    assert again["versions"] == first["versions"]
    status, _, body = raw("GET", new.url + "/api/v1/events?service=once", token=token)
    assert [e["type"] for e in body["events"]] == ["service_deployed"]


def test_bad_input_gets_4xx_envelope_and_changes_nothing(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    token = cluster.token()
    deployer = cluster.token("deployer", "dev")
    viewer = cluster.token("viewer", "eve")
    url = leader.url
    assert raw("POST", url + "/api/v1/deploy", token=token, body={"services": [spec("keep")]})[0] == 200
    _, _, before = raw("GET", url + "/api/v1/status?consistent=true", token=token)
    cases = [
        ("POST", "/api/v1/deploy", token, b"{not json", 400, "VALIDATION_ERROR"),
        ("POST", "/api/v1/deploy", token, {"services": []}, 400, "INVALID_SPEC"),
        ("POST", "/api/v1/deploy", token, {"services": [{"name": "x", "imgae": "y"}]}, 400, "INVALID_SPEC"),
        ("POST", "/api/v1/deploy", token, [1, 2], 400, "VALIDATION_ERROR"),
        ("POST", "/api/v1/services/keep/scale", token, {"replicas": -1}, 400, "VALIDATION_ERROR"),
        ("POST", "/api/v1/services/keep/scale", token, {"replicas": "3"}, 400, "VALIDATION_ERROR"),
        ("POST", "/api/v1/services/keep/scale", token, {"replicas": 2, "x": 1}, 400, "VALIDATION_ERROR"),
        ("POST", "/api/v1/services/ghost/scale", token, {"replicas": 2}, 404, "SERVICE_NOT_FOUND"),
        ("DELETE", "/api/v1/services/ghost", token, None, 404, "SERVICE_NOT_FOUND"),
        ("GET", "/api/v1/services/ghost", token, None, 404, "SERVICE_NOT_FOUND"),
        ("POST", "/api/v1/tokens", token, {"role": "root", "name": "x"}, 400, "VALIDATION_ERROR"),
        ("GET", "/api/v1/events?limit=abc", token, None, 400, "VALIDATION_ERROR"),
        ("POST", "/api/v1/deploy", None, {"services": [spec("x")]}, 401, "UNAUTHORIZED"),
        ("POST", "/api/v1/deploy", "not.a.jwt", {"services": [spec("x")]}, 401, "UNAUTHORIZED"),
        ("POST", "/api/v1/deploy", viewer, {"services": [spec("x")]}, 403, "FORBIDDEN"),
        ("POST", "/api/v1/stop", deployer, None, 403, "FORBIDDEN"),
        ("GET", "/api/v1/tokens", deployer, None, 403, "FORBIDDEN"),
        ("PUT", "/api/v1/deploy", token, {}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/nothing-here", token, None, 404, "NOT_FOUND"),
        ("POST", "/api/v1/deploy", token, b"x" * (2 * 1024 * 1024), 413, "PAYLOAD_TOO_LARGE"),
    ]
    for method, path, tok, body, want_status, want_code in cases:
        status, headers, got = raw(method, url + path, token=tok, body=body)
        assert (status, got["code"]) == (want_status, want_code), (method, path, status, got)
        assert set(got) >= {"error", "code", "details", "timestamp"}
        assert "Traceback" not in str(got)
        if status == 405:
            assert "POST" in headers["Allow"]
    _, _, after = raw("GET", url + "/api/v1/status?consistent=true", token=token)
    assert after == before


def test_tokens_forged_expired_and_revoked_are_refused(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    admin = cluster.token()
    none_alg = jwt.encode({"sub": "x", "role": "admin", "jti": "j", "iat": int(time.time())}, key=None,
                          algorithm="none")
    wrong_key = jwt.encode({"sub": "x", "role": "admin", "jti": "j", "iat": int(time.time())},
                           "another-secret-entirely-32-bytes!!", algorithm="HS256")
    with Client([leader.url], admin) as client:
        short = client.create_token("viewer", "short", ttl_s=1)
        revoked = client.create_token("deployer", "gone")
        kept = client.create_token("viewer", "kept")
        client.revoke_token(revoked["jti"])
        assert {t["name"] for t in client.list_tokens()} >= {"short", "gone", "kept"}
    time.sleep(2.1)
    for tok in (none_alg, wrong_key, short["token"], revoked["token"]):
        status, _, body = raw("GET", leader.url + "/api/v1/status", token=tok)
        assert status == 401 and body["code"] == "UNAUTHORIZED", body
    assert raw("GET", leader.url + "/api/v1/status", token=kept["token"])[0] == 200
    assert "token" not in str(raw("GET", leader.url + "/api/v1/tokens", token=admin)[2]["tokens"][0].keys())


def test_metrics_expose_raft_and_api_figures(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    raw("GET", leader.url + "/api/v1/status", token=cluster.token())
    with Client([leader.url], cluster.token()) as client:
        client.deploy([spec("m")])
    import urllib.request
    text = urllib.request.urlopen(leader.url + "/metrics", timeout=5).read().decode()
    for name in ("orca_raft_term", "orca_raft_is_leader 1.0", "orca_raft_commit_index",
                 "orca_raft_applied_index", "orca_raft_leader_changes", "orca_api_requests_total",
                 "orca_api_request_duration_seconds_bucket", 'route="/api/v1/deploy"'):
        assert name in text, name
