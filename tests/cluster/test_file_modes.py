"""Private files on real processes: a master's Raft journal and data directory are created owner-only, and
loose modes left by an older version (or an operator) are tightened at the next start, with a warning."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def compacting(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Three masters that compact their log (write `raft.dump`) after a few entries and a second."""
    c = LocalCluster(tmp_path / "cluster", tuning={"compaction_min_entries": 20, "compaction_min_s": 1.0})
    try:
        c.start()
        c.wait_leader(timeout=60, all_up=True)
        yield c
    finally:
        c.__exit__(None, None, None)


def test_master_files_are_private_and_loose_ones_are_tightened_at_start(compacting: LocalCluster) -> None:
    cluster = compacting
    m1 = cluster.masters[0]
    data = cluster.root / m1.node_id
    with Client([m.url for m in cluster.masters], cluster.token("admin", "root")) as admin:
        deadline = time.monotonic() + 30
        i = 0
        while not (data / "raft.dump").exists() and time.monotonic() < deadline:
            admin.set_secret(f"K{i % 50}", "v")
            i += 1
            time.sleep(0.05)
    assert (data / "raft.dump").exists(), "no compaction within 30 s"
    files = [p for p in data.iterdir() if p.name.startswith("raft.")]
    assert {p.name for p in files} >= {"raft.journal", "raft.dump"}
    assert mode(data) == 0o700 and all(mode(p) == 0o600 for p in files), [(p.name, oct(mode(p))) for p in files]

    cluster.kill(m1)
    data.chmod(0o755)
    for p in data.iterdir():
        p.chmod(0o644)
    cluster.secret_file.chmod(0o644)
    cluster.start([m1])
    wait_for(lambda: cluster.health(m1), 30, "master-1 back")
    assert mode(data) == 0o700 and mode(cluster.secret_file) == 0o600
    assert all(mode(p) == 0o600 for p in data.iterdir() if p.is_file())
    log = m1.log.read_text()
    assert "readable by others: tightened" in log and str(cluster.secret_file) in log


def test_agent_data_dir_and_token_file_are_tightened_at_start(cluster: LocalCluster) -> None:
    agent = cluster.add_agent("worker-modes")
    data = cluster.root / agent.node_id
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "desired.json").write_text("{}")
    (data / "desired.json").chmod(0o644)
    token_file = cluster.root / f"{agent.node_id}.token"
    token_file.chmod(0o644)
    cluster.start_agent(agent)
    try:
        wait_for(lambda: mode(data) == 0o700 and mode(token_file) == 0o600, 20, "the agent's start-up check")
        assert mode(data / "desired.json") == 0o600
        wait_for(lambda: "tightened" in agent.log.read_text(), 10, "the warning")
    finally:
        cluster.kill(agent)
