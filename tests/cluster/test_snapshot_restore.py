"""Disaster recovery with real masters: save under a write load, lose every data directory, start a
fresh cluster with the same secret, restore, and find every write acknowledged before the save."""

from __future__ import annotations

import shutil
import threading
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
