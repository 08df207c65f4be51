"""Edges of the cluster core: a leader cut off from its followers, rate limits, bad configs, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def test_leader_cut_off_from_followers_answers_503_and_never_acknowledges(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    followers = [m for m in cluster.masters if m is not leader]
    token = cluster.token()
    for f in followers:
        f.proc.send_signal(signal.SIGSTOP)  # frozen: TCP stays up, nothing answers (like a partition)
    try:
        started = time.monotonic()
        status, _, body = raw("POST", leader.url + "/api/v1/deploy", token=token,
                              body={"services": [{"name": "cutoff", "image": "x"}]}, timeout=15)
        elapsed = time.monotonic() - started
        assert status == 503 and body["code"] == "CLUSTER_NOT_READY", body
        assert elapsed < 5.0, elapsed  # bounded by write_timeout_s, never a hang
    finally:
        for f in followers:
            f.proc.send_signal(signal.SIGCONT)
    cluster.wait_leader(timeout=15)
    time.sleep(0.5)
    status, _, body = raw("GET", cluster.wait_leader().url + "/api/v1/status?consistent=true", token=token)
    assert status == 200
    # The write was never acknowledged; whether it eventually applied is unknown to the client by design,
    # but it must not have been reported as a success (checked above).


def test_rate_limit_answers_429_with_retry_after_and_headers(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "rl", limits={"rate_limit_per_minute": 60, "rate_limit_burst": 3}) as c:
        c.start()
        leader = c.wait_leader(timeout=30)
        token = c.token()
        results = [raw("GET", leader.url + "/api/v1/status", token=token) for _ in range(4)]
        assert [r[0] for r in results] == [200, 200, 200, 429]
        # the headers describe the bucket: its size (the burst), what is left, when it is full (epoch seconds)
        assert results[0][1]["X-RateLimit-Limit"] == "3" and results[0][1]["X-RateLimit-Remaining"] == "2"
        assert time.time() - 1 <= int(results[0][1]["X-RateLimit-Reset"]) <= time.time() + 10
        assert results[0][1]["X-RateLimit-Rate"] == "60/min"
        status, headers, body = results[3]
        assert body["code"] == "RATE_LIMIT_EXCEEDED" and int(headers["Retry-After"]) >= 1
        # another token has its own bucket; probes are never limited
        assert raw("GET", leader.url + "/api/v1/status", token=c.token("viewer", "other"))[0] == 200
        assert all(raw("GET", leader.url + "/livez")[0] == 200 for _ in range(5))


@pytest.mark.parametrize("mutation, key", [
    (lambda t: t.replace('id = "master-1"', 'id = "Master_1"'), "node.id"),
    (lambda t: t.replace("[api]", "[api]\nlisten_typo = 1"), "api.listen_typo"),
    (lambda t: t.replace("cluster.secret", "missing.secret"), "security.cluster_secret_file"),
])
def test_server_with_bad_config_exits_2_naming_file_and_key(tmp_path: Path, mutation, key: str) -> None:
    c = LocalCluster(tmp_path / "bad")
    cfg = c.masters[0].config
    cfg.write_text(mutation(cfg.read_text()))
    proc = subprocess.run([sys.executable, "-m", "orca", "server", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cfg) in lines[0] and key in lines[0], proc.stderr


def test_cli_against_a_real_cluster_follows_redirects(cluster: LocalCluster, tmp_path: Path) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    env = {**os.environ, "ORCA_API": follower.url, "ORCA_TOKEN": cluster.token(), "HOME": str(tmp_path)}

    def orca(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orca", *args], capture_output=True, text=True, env=env,
                              timeout=60)

    spec = tmp_path / "web.json"
    spec.write_text(json.dumps({"services": [{"name": "web", "image": "orca-test/busybox", "replicas": 2}]}))
    deployed = orca("deploy", "-f", str(spec), "--detach")
    assert deployed.returncode == 0, deployed.stderr
    assert orca("scale", "web", "3").returncode == 0
    status = orca("-o", "json", "status")
    assert status.returncode == 0, status.stderr
    assert [(s["name"], s["replicas"]) for s in json.loads(status.stdout)["services"]] == [("web", 3)]
    table = orca("status")
    assert "web" in table.stdout and "no nodes" in table.stdout
    missing = orca("scale", "ghost", "1")
    assert missing.returncode == 1 and "SERVICE_NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr
    leader_out = orca("cluster", "leader")
    assert leader_out.returncode == 0 and leader.node_id in leader_out.stdout
    minted = subprocess.run([sys.executable, "-m", "orca", "token", "create", "--secret-file",
                             str(cluster.secret_file), "--role", "viewer", "--name", "cli"],
                            capture_output=True, text=True, timeout=30)
    assert minted.returncode == 0 and minted.stdout.count(".") == 2
    viewer = subprocess.run([sys.executable, "-m", "orca", "scale", "web", "1"], capture_output=True, text=True,
                            env={**env, "ORCA_TOKEN": minted.stdout.strip()}, timeout=30)
    assert viewer.returncode == 1 and "FORBIDDEN" in viewer.stderr


def test_metrics_exposition_passes_promtool(cluster: LocalCluster) -> None:
    """`promtool check metrics` (Debian package prometheus) accepts /metrics."""
    import shutil
    if shutil.which("promtool") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: .ci/run installs the Debian package prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    leader = cluster.wait_leader()
    raw("GET", leader.url + "/api/v1/status", token=cluster.token())
    text = raw("GET", leader.url + "/metrics")[2]
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert check.returncode == 0, (check.stdout.decode(), check.stderr.decode())
