"""Offline restore with real masters (`orca snapshot restore --offline FILE --config MASTER.toml`): a cluster
whose every Raft file is unusable (here: garbage journals, so no master can start) is stopped, each data
directory is restored from a snapshot file, the masters start, elect, serve every write acknowledged
before the save, and take new writes. Also the refusals: a running master, a used data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orca.cli import main
from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster


def test_offline_restore_brings_back_a_cluster_that_cannot_start(cluster: LocalCluster, tmp_path: Path,
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
        for i in range(30):
            client.deploy([{"name": f"svc-{i}", "image": "orca-test/busybox", "replicas": 1}])
        client.set_secret("DB_PASSWORD", "s3cret")
    file = tmp_path / "backup.snap"
    assert main(["snapshot", "save", str(file)]) == 0
    capsys.readouterr()

    first = cluster.masters[0]
    # Refused while the master runs, and without --config.
    assert main(["snapshot", "restore", "--offline", str(file), "--config", str(first.config)]) == 1
    assert "stop the master first" in capsys.readouterr().err
    assert main(["snapshot", "restore", "--offline", str(file)]) == 2
    capsys.readouterr()

    for m in cluster.masters:
        cluster.kill(m)
    for m in cluster.masters:  # every journal is garbage: the cluster cannot come back by itself
        (cluster.root / m.node_id / "raft.journal").write_bytes(b"\x00garbage" * 1000)

    assert main(["snapshot", "restore", "--offline", str(file), "--config", str(first.config)]) == 1
    assert "pass --force" in capsys.readouterr().err
    for m in cluster.masters:
        assert main(["-o", "json", "snapshot", "restore", "--offline", str(file), "--config", str(m.config),
                     "--force"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["counts"]["services"] == 30 and result["moved_aside"]
        assert (Path(result["moved_aside"]) / "raft.journal").exists()
        assert sorted(result["members"]) == sorted(f"127.0.0.1:{o.raft_port}" for o in cluster.masters)

    cluster.start()
    cluster.wait_leader(timeout=60, all_up=True)
    with Client(urls, token) as client:
        names = {s["name"] for s in client.status(consistent=True)}
        assert names == {f"svc-{i}" for i in range(30)}
        assert [s["key"] for s in client.list_secrets()] == ["DB_PASSWORD"]
        client.deploy([{"name": "after", "image": "orca-test/busybox", "replicas": 1}])
        assert "after" in {s["name"] for s in client.status(consistent=True)}
