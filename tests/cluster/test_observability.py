"""Metrics and logs of real processes: three `orca server` masters and one `orca agent` (no Docker needed:
the agent serves its API and reports the engine as down).

- both expositions pass `promtool check metrics` with no warning, and their `orca_*` families, types and
  labels are exactly docs/metrics.md's tables;
- an agent with `agent.metrics_require_token` takes a viewer token (checked with a master), refuses none,
  a bad one and an agent token;
- with debug level, JSON format and access logs on (through ORCA_LOG_* in the environment), every log
  line is a JSON object, the access log is there, and no token, secret value or cluster secret is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orca.client import Client
from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
SECRET_VALUE = "pa55-VALUE-never-in-logs-7f3a9c"


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    env = {"ORCA_LOG_LEVEL": "debug", "ORCA_LOG_FORMAT": "json", "ORCA_ACCESS_LOG": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        c = LocalCluster(tmp_path_factory.mktemp("observed") / "cluster")
        try:
            c.start()
            c.wait_leader(timeout=60, all_up=True)
            agent = c.add_agent("worker-1")
            agent.config.write_text(agent.config.read_text().replace("[agent]\n", "[agent]\nmetrics_require_token = "
                                                                     "true\n", 1))
            c.start_agent(agent)
            yield c
        finally:
            c.__exit__(None, None, None)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: .ci/run installs the Debian package prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def doc_tables() -> dict[str, dict[str, tuple[str, tuple[str, ...]]]]:
    """section -> name -> (type, labels) from docs/metrics.md."""
    out: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}
    section = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        m = re.match(r"\| `([a-z_]+)` \| (counter|gauge|histogram) \| ([^|]*)\|", line)
        if m:
            labels = tuple(sorted(re.findall(r"`([a-z_]+)`", m.group(3))))
            out.setdefault(section, {})[m.group(1)] = (m.group(2), labels)
    return out


def scrape(url: str, token: str | None = None, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, body = raw("GET", url, token=token)
        except OSError:
            status, body = 0, ""
        if status == 200:
            return body
        assert time.monotonic() < deadline, (url, status, body)
        time.sleep(0.5)


def exposed(text: str) -> dict[str, tuple[str, tuple[str, ...] | None]]:
    """orca_* family -> (type, label names seen, or None without samples), named as documented."""
    out: dict[str, tuple[str, tuple[str, ...] | None]] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("orca_"):
            continue
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        out[name] = (fam.type, tuple(sorted(labels)) if fam.samples else None)
    return out


def check_against_doc(text: str, sections: tuple[str, ...]) -> None:
    tables = doc_tables()
    want = {n: v for s in sections for n, v in tables[s].items()}
    got = exposed(text)
    assert set(got) == set(want), {"undocumented": set(got) - set(want), "missing": set(want) - set(got)}
    for name, (kind, labels) in got.items():
        assert kind == want[name][0], name
        if labels is not None:
            assert labels == want[name][1], (name, labels, want[name][1])


def run_promtool(text: str) -> None:
    out = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", (out.stdout, out.stderr)


def test_expositions_pass_promtool_and_match_the_docs(observed: LocalCluster) -> None:
    leader = observed.wait_leader()
    admin = observed.token()
    with Client([leader.url], admin) as client:
        client.deploy([{"name": "web", "image": "orca-test/busybox", "replicas": 2}])
    agent = observed.agents[0]
    viewer = observed.token("viewer", "prometheus")
    master_text = scrape(leader.url + "/metrics")
    # the agent's first scrape waits until it registered and answers
    agent_text = scrape(agent.url + "/metrics", token=viewer)
    for text in (master_text, agent_text):
        run_promtool(text)
        assert "_created" not in text and "orca_build_info{" in text and "process_cpu_seconds_total" in text
    check_against_doc(master_text, ("Every process", "Masters"))
    check_against_doc(agent_text, ("Every process", "Agents"))
    assert 'orca_service_replicas_desired{service="web"} 2.0' in master_text
    assert "orca_raft_leader_changes_total" in master_text and "orca_dispatch_pushes_total" in master_text
    # followers answer too, and agree on the cluster objects
    for m in observed.masters:
        assert 'orca_service_replicas_desired{service="web"} 2.0' in scrape(m.url + "/metrics")


def test_agent_metrics_take_a_viewer_token_checked_by_a_master(observed: LocalCluster) -> None:
    agent = observed.agents[0]
    scrape(agent.url + "/metrics", token=observed.token("viewer", "prometheus"))
    status, _, body = raw("GET", agent.url + "/metrics")
    assert status == 401 and body["code"] == "UNAUTHORIZED"
    status, _, body = raw("GET", agent.url + "/metrics", token="not-a-token")
    assert status == 401 and body["code"] == "UNAUTHORIZED"
    status, _, body = raw("GET", agent.url + "/metrics", token=observed.token("agent", "worker-1"))
    assert status == 403 and body["code"] == "FORBIDDEN"
    for role in ("deployer", "admin"):
        assert raw("GET", agent.url + "/metrics", token=observed.token(role, "p"))[0] == 200


def test_json_logs_with_access_lines_and_no_secrets(observed: LocalCluster) -> None:
    leader = observed.wait_leader()
    admin = observed.token()
    viewer = observed.token("viewer", "prometheus")
    with Client([leader.url], admin) as client:
        client.set_secret("db_password", SECRET_VALUE)
        minted = client.create_token("viewer", "grafana")["token"]
        join = client.create_join_token()["token"]
    raw("GET", leader.url + "/api/v1/status?token=" + admin, token=admin)  # even a token in a query string
    raw("GET", leader.url + "/api/v1/status", token="Bearer-lookalike." + SECRET_VALUE)
    scrape(observed.agents[0].url + "/metrics", token=viewer)
    processes = [*observed.masters, *observed.agents]
    for p in processes:  # stop them so that every line is flushed
        if p.alive:
            p.proc.send_signal(signal.SIGTERM)
    for p in processes:
        if p.proc is not None:
            p.proc.wait(timeout=30)
    secrets = {"admin token": admin, "viewer token": viewer, "minted token": minted, "join token": join,
               "secret value": SECRET_VALUE,
               "cluster secret": observed.secret_file.read_text().strip()}
    access = 0
    for p in processes:
        text = p.log.read_text()
        for what, value in secrets.items():
            assert value not in text, f"{what} in {p.log.name}"
        for line in text.splitlines():
            if not line.strip():
                continue
            record = json.loads(line)  # every line a JSON object
            assert {"time", "level", "logger", "message", "node"} <= set(record), line
            if record["logger"] == "orca.access.api":
                access += 1
                assert "?" not in record["path"] and record["status"] >= 100
    assert access > 0
