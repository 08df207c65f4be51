"""The CLI with a client context reaches the cluster through any master: kill -9 master-1 (leader or not)
and every verb that talks to the cluster still answers, skipping the dead master."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orca.cli import main
from orca.devcluster import LocalCluster
from orca.sdk.config import ClientConfig

pytestmark = pytest.mark.cluster


def test_every_verb_answers_with_master_1_dead(cluster: LocalCluster, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ORCA_API", "ORCA_TOKEN", "ORCA_CONTEXT", "ORCA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    token_file = tmp_path / "admin.token"
    token_file.write_text(cluster.token() + "\n")
    m1 = cluster.by_id("master-1")
    # One URL is enough: the context learns the other masters from /cluster/info.
    assert main(["context", "set", "test", "--api", m1.url, "--token-file", str(token_file)]) == 0
    assert ClientConfig.load().contexts["test"].endpoints == [m.url for m in cluster.masters]
    spec_file = tmp_path / "svc.json"
    spec_file.write_text(json.dumps({"name": "web", "image": "orca-test/busybox", "replicas": 1}))
    assert main(["deploy", "--detach", "-f", str(spec_file)]) == 0
    capsys.readouterr()

    cluster.kill(m1)  # SIGKILL
    commands = [
        ["status"], ["ps", "web"], ["history", "web"], ["events", "--limit", "5"], ["nodes"],
        ["cluster", "info"], ["cluster", "leader"], ["cluster", "status"], ["token", "list"],
        ["secrets", "set", "DB_PASSWORD", "s3cret"], ["secrets", "list"], ["webhooks", "list"],
        ["scaling", "get", "web"], ["top", "--once"], ["scale", "web", "2"],
        ["deploy", "--detach", "-f", str(spec_file)], ["stop", "web"], ["start", "web"],
        ["logs", "web", "--tail", "1"], ["secrets", "rm", "DB_PASSWORD"], ["context", "refresh"],
    ]
    for argv in commands:
        rc = main([*argv, "-v"])
        captured = capsys.readouterr()
        assert rc == 0, (argv, captured.err)
        if argv[0] != "context":
            assert f"skipped {m1.url}" in captured.err, (argv, captured.err)
        assert "Traceback" not in captured.err
