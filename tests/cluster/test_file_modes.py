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


def test_master_files_are_private_and_loose_ones_are_tightened_at_start(cluster: LocalCluster) -> None:
    with Client([m.url for m in cluster.masters], cluster.token("admin", "root")) as admin:
        admin.set_secret("DB_PASS", "v")
    m1 = cluster.masters[0]
    data = cluster.root / m1.node_id
    journal = wait_for(lambda: [p for p in data.iterdir() if p.name.startswith("raft.journal")], 20, "a journal")
    assert mode(data) == 0o700 and all(mode(p) == 0o600 for p in journal), [(p, oct(mode(p))) for p in journal]

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
