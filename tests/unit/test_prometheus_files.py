"""The shipped Prometheus alert rules and Grafana dashboard: valid for promtool, unit-tested, and using only
series that orca exposes (docs/metrics.md, itself held against real scrapes by tests/cluster/test_observability)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "docs" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "orca.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
# Series every orca process has besides its own (prometheus_client's collectors) and Prometheus' own `up`.
STANDARD = {"up", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
            "process_max_fds", "process_start_time_seconds", "process_virtual_memory_bytes"}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "le"}
_FUNCTIONS = {"max", "min", "sum", "count", "avg", "rate", "increase", "histogram_quantile", "label_values",
              "irate", "delta", "abs", "absent", "topk", "bottomk", "quantile"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: .ci/run installs the Debian package prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def documented() -> dict[str, str]:
    """name -> type from the tables of docs/metrics.md."""
    rows = re.findall(r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \|", METRICS_DOC.read_text(), re.MULTILINE)
    return dict(rows)


def series_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers outside strings and label matchers)."""
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b", stripped))
    return {n for n in names if n not in _PROMQL_WORDS and n not in _FUNCTIONS}


def known_series() -> set[str]:
    out = set(STANDARD)
    for name, kind in documented().items():
        out.add(name)
        if kind == "histogram":
            out |= {name + "_bucket", name + "_sum", name + "_count"}
    return out


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_metrics_doc_parses_into_a_plausible_table() -> None:
    names = documented()
    assert len(names) >= 40
    for name, kind in names.items():
        assert name.startswith("orca_")
        assert name.endswith("_total") == (kind == "counter"), name
        assert "percent" not in name and "per_second" not in name, name


def test_alert_rules_pass_promtool_check_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "WARNING" not in (out.stdout + out.stderr).upper()


def test_alert_rules_pass_their_unit_tests() -> None:
    out = subprocess.run([promtool(), "test", "rules", ALERTS_TEST.name], capture_output=True, text=True,
                         timeout=120, cwd=ALERTS_TEST.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_cover_the_promised_conditions_and_use_only_real_series() -> None:
    text = ALERTS.read_text()
    for alert in ("OrcaNoLeader", "OrcaQuorumLost", "OrcaNodeDown", "OrcaReplicasBelowDesired", "OrcaRolloutHalted"):
        assert f"alert: {alert}\n" in text
    exprs = re.findall(r"^\s+expr: (.+)$", text, re.MULTILINE)
    assert exprs
    unknown = {n for e in exprs for n in series_names(e)} - known_series()
    assert not unknown, unknown


def test_dashboard_is_valid_grafana_json_with_real_series() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Cluster", "Services", "Nodes"]
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    exprs = dashboard_exprs()
    variables = [v["query"]["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    used = {n for e in exprs for n in series_names(e)}
    used |= {m.group(1) for v in variables if (m := re.search(r"label_values\((\w+),", v))}
    unknown = used - known_series()
    assert not unknown, unknown
    # every documented orca series family appears somewhere on the dashboard or in the alerts, except these
    # few kept for debugging
    debug_only = {"orca_raft_term", "orca_raft_applied_index", "orca_allocations", "orca_services",
                  "orca_agent_desired_term", "orca_agent_desired_version", "orca_agent_replicas_health",
                  "orca_agent_health_restarts_total", "orca_agent_last_heartbeat_timestamp_seconds"}
    everything = " ".join(exprs) + ALERTS.read_text()
    missing = {n for n in documented() if n not in everything} - debug_only
    assert not missing, missing


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (as recording rules; the $variables sit inside label strings)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"orca_dashboard:panel_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
