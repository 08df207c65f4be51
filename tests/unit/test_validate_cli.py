"""`orca validate -f FILE`: a deploy file checked against the published schema and the spec rules, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orca.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token, no master: validate must not need either."""
    for var in ("ORCA_API", "ORCA_TOKEN", "ORCA_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCA_API", "http://127.0.0.1:9")  # the discard port: any request would fail


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").iterdir()
                                           if p.suffix in (".json", ".toml")))
def test_every_example_is_valid(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(ROOT / "examples" / example)]) == 0
    assert "valid" in capsys.readouterr().out


def test_every_problem_is_listed_with_its_service_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[services]]\nname = "web"\nimage = "x"\nreplicas = 5000\nimgae = "typo"\n'
                   'env = { TOKEN = 12345678 }\n\n'
                   '[[services]]\nname = "api"\nimage = "x"\nreplicas = 1\ncanary = 2\n')
    assert main(["validate", "-f", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "web: replicas: must be at most 1000" in err
    assert "'imgae' was unexpected" in err
    assert "web: env.TOKEN: expected string" in err
    assert "api: canary: must be at most replicas (1), got 2" in err  # a rule only the validator knows
    assert "12345678" not in err  # an env value is never echoed
    assert "docs/spec.md" in err


def test_json_output_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "web.json"
    good.write_text(json.dumps({"name": "web", "image": "x"}))
    assert main(["validate", "-f", str(good), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(good), "services": 1, "valid": True, "problems": []}
    broken = tmp_path / "broken.toml"
    broken.write_text("[[services]\n")
    assert main(["validate", "-f", str(broken)]) == 2
    assert main(["validate", "-f", str(tmp_path / "missing.toml")]) == 2


def test_the_schema_it_prints_is_the_published_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((ROOT / "docs" / "spec.schema.json").read_text())


def test_a_file_is_needed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 2
    assert "-f FILE" in capsys.readouterr().err
