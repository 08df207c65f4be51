"""Disaster recovery with real masters: save under a write load, lose every data directory, start a
fresh cluster with the same secret, restore, and find every write acknowledged before the save."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import pytest

from orca.cli import main
from orca.client import ApiError, Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster


def _spec(name: str) -> dict:
    return {"name": name, "image": "orca-test/busybox", "replicas": 1}


def test_save_under_load_lose_every_disk_restore(cluster: LocalCluster, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ORCA_API", "ORCA_TOKEN", "ORCA_CONTEXT", "ORCA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    token = cluster.token()
    urls = [m.url for m in cluster.masters]
    monkeypatch.setenv("ORCA_API", ",".join(urls))
    monkeypatch.setenv("ORCA_TOKEN", token)
    with Client(urls, token) as client:
        client.set_secret("DB_PASSWORD", "s3cret")
        recorded = client.create_token("viewer", "dashboard")
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with Client(urls, token) as writer:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    writer.deploy([_spec(f"svc-{i}")])
                except ApiError:
                    continue
                acked.append(f"svc-{i}")

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    while len(acked) < 20 and thread.is_alive():
        threading.Event().wait(0.05)
    before = list(acked)  # acknowledged before the save began
    file = tmp_path / "backup.snap"
    assert main(["snapshot", "save", str(file)]) == 0
    stop.set()
    thread.join(30)
    assert "saved" in capsys.readouterr().out
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    assert main(["snapshot", "inspect", str(file)]) == 0
    assert "(verified)" in capsys.readouterr().out

    # Every master's disk is lost; a fresh cluster starts from the same configs and secret.
    for m in cluster.masters:
        cluster.kill(m)
    for m in cluster.masters:
        shutil.rmtree(cluster.root / m.node_id)
    cluster.start()
    cluster.wait_leader(timeout=60, all_up=True)
    with Client(urls, token) as client:
        assert client.status() == []
    assert main(["snapshot", "restore", str(file)]) == 0
    assert "restored" in capsys.readouterr().out
    with Client(urls, token) as client:
        names = {s["name"] for s in client.status(consistent=True)}
        assert set(before) <= names, sorted(set(before) - names)
        assert [s["key"] for s in client.list_secrets()] == ["DB_PASSWORD"]
        assert recorded["jti"] in {t["jti"] for t in client.list_tokens()}
        client.revoke_token(recorded["jti"])  # the restored records work as records
    # The cluster is no longer empty: a second restore is refused unless forced.
    assert main(["snapshot", "restore", str(file)]) == 1
    assert "CONFLICT" in capsys.readouterr().err
    assert main(["snapshot", "restore", str(file), "--force"]) == 0


def test_restore_in_many_chunks_into_another_cluster(cluster: LocalCluster, tmp_path: Path) -> None:
    """Chunks are bounded by the restoring masters' body limit; a cluster on other addresses with the same
    secret takes the snapshot (what moving a cluster to new hosts looks like)."""
    token = cluster.token()
    with Client([m.url for m in cluster.masters], token) as client:
        for start in range(0, 300, 100):
            client.deploy([{**_spec(f"svc-{i}"), "env": {"SEED": uuid.UUID(int=i * 7919).hex * 4}}
                           for i in range(start, start + 100)])
        data = client.snapshot_save()
    other = LocalCluster(tmp_path / "other", limits={"max_body_bytes": 20_000, "rate_limit_per_minute": 6_000_000,
                                                     "rate_limit_burst": 100_000})
    shutil.copy(cluster.secret_file, other.secret_file)
    with other:
        other.start()
        other.wait_leader(timeout=60, all_up=True)
        progress: list[tuple[int, int]] = []
        with Client([m.url for m in other.masters], token) as client:
            result = client.snapshot_restore(data, on_progress=lambda sent, n: progress.append((sent, n)))
            assert result["counts"]["services"] == 300
            assert progress[-1][0] == progress[-1][1] > 1
            assert len(client.status(consistent=True)) == 300
