"""`orca snapshot save|inspect|restore` against a stand-in client: files, verification, rotation, exits."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from orca import snapshot
from orca.cli import main
from orca.commands import snapshot as snapshot_cmds
from orca.state.machine import new_state


def _data(index: int = 7) -> bytes:
    state = new_state()
    state["services"]["web"] = {"name": "web"}
    return snapshot.encode(state, index=index, term=2, schema_version=1, created_at=1_700_000_000.0 + index,
                           orca_version="t", leader="m1")


class FakeClient:
    def __init__(self) -> None:
        self.saves = 0
        self.restored: list[tuple[bytes, bool]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def snapshot_save(self) -> bytes:
        self.saves += 1
        return _data(self.saves)

    def snapshot_restore(self, data: bytes, force: bool = False, on_progress: Any = None) -> dict[str, Any]:
        self.restored.append((data, force))
        return {"restored": True, "index": 7, "term": 2, "counts": {"services": 1}}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(snapshot_cmds, "_client", lambda args: client)
    return client


def test_save_inspect_restore(fake: FakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "b.snap"
    assert main(["snapshot", "save", str(file)]) == 0
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert capsys.readouterr().out.startswith(f"saved {file}: index 1, term 2, schema version 1")
    assert main(["snapshot", "inspect", str(file), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["services"] == 1
    assert main(["snapshot", "restore", str(file), "--force"]) == 0
    assert fake.restored == [(file.read_bytes(), True)]
    assert "restored" in capsys.readouterr().out


def test_a_damaged_file_is_refused_before_any_request(fake: FakeClient, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "b.snap"
    file.write_bytes(_data()[:-3])
    assert main(["snapshot", "restore", str(file)]) == 1
    assert "truncated" in capsys.readouterr().err and fake.restored == []
    assert main(["snapshot", "inspect", str(tmp_path / "missing.snap")]) == 2


def test_save_to_a_directory_keeps_the_newest(fake: FakeClient, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    backups = tmp_path / "backups"
    for _ in range(4):
        assert main(["snapshot", "save", "--dir", str(backups), "--keep", "2"]) == 0
    names = sorted(p.name for p in backups.iterdir())
    assert names == ["orca-snapshot-20231114T221323Z-3.snap", "orca-snapshot-20231114T221324Z-4.snap"]
    assert "removed" in capsys.readouterr().out
    for argv in (["snapshot", "save"], ["snapshot", "save", "x", "--dir", str(backups)],
                 ["snapshot", "save", "x", "--keep", "2"]):
        assert main(argv) == 2
