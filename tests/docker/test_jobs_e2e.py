"""Jobs on a real stack: `orca run` runs a job to completion once (logs and exit code, never restarted), a
failing job gives up after its attempts with its exit code, and a periodic job runs exactly once per tick
across a leader killed at the scheduled second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import IMAGE, stack_fixture, wait_for

from orca.client import Client
from orca.devcluster import LocalCluster

RES = {"memory": "16Mi", "cpu": 0.05}


@pytest.fixture
def stack(tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest,
          ) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    yield from stack_fixture(tmp_path, docker_client, request)


def orca_run(cluster: LocalCluster, spec: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "ORCA_API": ",".join(m.url for m in cluster.masters), "ORCA_TOKEN": cluster.token()}
    return subprocess.run([sys.executable, "-m", "orca", "run", "-f", str(path), "--timeout", "120"],
                          capture_output=True, text=True, timeout=180, env=env, check=False)


def test_orca_run_completes_once_and_a_failing_job_gives_up_with_its_code(
        stack: tuple[LocalCluster, Client, list[str]], tmp_path: Path) -> None:
    cluster, client, _ = stack
    job = {"name": "hello", "image": IMAGE, "kind": "job", "resources": RES,
           "command": ["sh", "-c", "echo hello from the job; sleep 1; echo done"]}
    done = orca_run(cluster, job, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "hello from the job" in done.stdout and "done" in done.stdout
    assert "complete (exit code 0)" in done.stderr
    time.sleep(4)  # a completed job is never restarted
    detail = client.service("hello")
    assert detail["status"] == "complete"
    [c] = detail["containers"]
    assert (c["status"], c["restarts"], c["exit_code"]) == ("complete", 0, 0)

    again = orca_run(cluster, job, tmp_path)  # unchanged spec: a new run
    assert again.returncode == 0, again.stderr
    detail = client.service("hello")
    assert detail["job"]["run"] == 1 and len(detail["containers"]) == 1

    failing = {"name": "broken", "image": IMAGE, "kind": "job", "resources": RES, "max_attempts": 2,
               "command": ["sh", "-c", "echo trying; exit 7"]}
    failed = orca_run(cluster, failing, tmp_path)
    assert failed.returncode == 7, failed.stderr
    assert "trying" in failed.stdout and "failed (exit code 7)" in failed.stderr
    [c] = client.service("broken")["containers"]
    assert c["status"] == "dead" and "gave up after 2 runs" in c["reason"]


def runs_of(client: Client, name: str) -> list[dict[str, Any]]:
    return [e for e in client.events(service=name, limit=200) if e["type"] == "job_run"]


def test_periodic_job_runs_once_per_tick_across_a_leader_kill_at_the_scheduled_second(
        stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, _ = stack
    now = time.time()
    if 60 - now % 60 < 15:  # leave time to deploy before the next minute
        time.sleep(60 - now % 60 + 1)
    client.deploy([{"name": "tick", "image": IMAGE, "kind": "job", "schedule": "* * * * *", "resources": RES,
                    "command": ["sh", "-c", "echo tick; sleep 2"]}])
    assert client.service("tick")["status"] == "waiting"
    boundary = (time.time() // 60 + 1) * 60
    time.sleep(max(0.0, boundary - time.time()))
    old = cluster.wait_leader()
    cluster.kill(old)  # at the scheduled second: it may or may not have committed the tick
    cluster.wait_leader(timeout=30, exclude=old.node_id)
    wait_for(lambda: len(runs_of(client, "tick")) >= 1, 60, "the tick's run", cluster)
    wait_for(lambda: client.service("tick")["status"] == "complete", 60, "run 1 complete", cluster)
    first = runs_of(client, "tick")
    assert len(first) == 1, first
    assert f"schedule tick {boundary:.0f}" in first[0]["message"]
    cluster.start([old])  # back as a follower; the next tick runs once too
    next_boundary = boundary + 60
    wait_for(lambda: time.time() > next_boundary + 5 and len(runs_of(client, "tick")) >= 2, 90, "second tick",
             cluster)
    time.sleep(3)
    runs = runs_of(client, "tick")
    assert len(runs) == 2, runs
    assert f"schedule tick {next_boundary:.0f}" in runs[-1]["message"]
    assert client.service("tick")["job"]["run"] == 2
