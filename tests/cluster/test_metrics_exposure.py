"""`/metrics` exposure on real masters: public by default; with `security.metrics_require_token` only a bearer
token of role viewer or above gets the series (as Prometheus sends it: `Authorization: Bearer`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def test_metrics_are_public_by_default(cluster: LocalCluster) -> None:
    for m in cluster.masters:
        status, headers, body = raw("GET", m.url + "/metrics")
        assert status == 200 and "orca_raft_term" in body and headers["Content-Type"].startswith("text/plain")


def test_metrics_can_require_a_viewer_token(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster")
    try:
        for m in c.masters:
            text = m.config.read_text()
            assert "[security]\n" in text
            m.config.write_text(text.replace("[security]\n", "[security]\nmetrics_require_token = true\n"))
        c.start()
        c.wait_leader(timeout=60, all_up=True)
        for m in c.masters:
            status, _, body = raw("GET", m.url + "/metrics")
            assert status == 401 and body["code"] == "UNAUTHORIZED"
            status, _, body = raw("GET", m.url + "/metrics", token="not-a-token")
            assert status == 401 and body["code"] == "UNAUTHORIZED"
            status, _, body = raw("GET", m.url + "/metrics", token=c.token("agent", "worker-1"))
            assert status == 403 and body["code"] == "FORBIDDEN"
            for role in ("viewer", "deployer", "admin"):
                status, _, body = raw("GET", m.url + "/metrics", token=c.token(role, "prometheus"))
                assert status == 200 and "orca_raft_term" in body, (role, status)
            # the probes stay public
            assert raw("GET", m.url + "/readyz")[0] == 200
    finally:
        c.__exit__(None, None, None)
