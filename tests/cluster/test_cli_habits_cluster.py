"""The CLI habits against real masters: `orca version` names the master that answered and its version,
`events --since` is a time the server filters on (and `--since-seq` its cursor), `-o yaml`/`-q` show the
real data, and a missing token ends with what to set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orca import __version__
from orca.cli import main
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster


def test_cli_habits_against_real_masters(cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ORCA_API", "ORCA_TOKEN", "ORCA_CONTEXT", "ORCA_CONFIG", "ORCA_CACERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.orca/token to fall back on
    api = cluster.masters[0].url
    monkeypatch.setenv("ORCA_API", api)

    # No token anywhere: the refusal says what to set.
    assert main(["status"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("(UNAUTHORIZED)") and err[1].startswith("hint: set ORCA_TOKEN")

    # The version needs no token: /api/v1/health is public.
    assert main(["version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"client: orca {__version__}")
    assert out[1].startswith(f"server: orca {__version__} on master-1 at {api}")

    monkeypatch.setenv("ORCA_TOKEN", cluster.token())
    spec = tmp_path / "web.json"
    spec.write_text(json.dumps({"name": "web", "image": "orca-test/busybox", "replicas": 1}))
    assert main(["deploy", "--detach", "-f", str(spec)]) == 0
    capsys.readouterr()
    assert main(["status", "-q"]) == 0
    assert capsys.readouterr().out == "web\n"
    assert main(["status", "-o", "yaml"]) == 0
    assert [s["name"] for s in yaml.safe_load(capsys.readouterr().out)["services"]] == ["web"]

    # --since is a time: the deploy just happened, so it is within the last hour and not in the future.
    assert main(["events", "--since", "1h", "--type", "service_deployed", "-o", "json"]) == 0
    recent = json.loads(capsys.readouterr().out)["events"]
    assert [e["service"] for e in recent] == ["web"]
    assert main(["events", "--since", "2999-01-01T00:00:00Z", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == []
    seq = recent[0]["seq"]
    assert main(["events", "--since-seq", str(seq), "-q"]) == 0
    assert all(int(s) > seq for s in capsys.readouterr().out.split())
    assert main(["events", "--since", str(seq)]) == 2  # bare digits: a usage error pointing at --since-seq
    assert "--since-seq" in capsys.readouterr().err
