"""Private paths: loose data directories and secret files are tightened with a warning; an untightenable one
stops the start; symbolic links are never followed; the umask makes new files owner-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orca import filemodes
from orca.filemodes import FileModeError, private_umask, secure_paths


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_loose_paths_are_tightened_with_a_warning_and_private_ones_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "raft.journal").write_text("j")
    (data / "raft.journal").chmod(0o644)
    (data / "raft.dump").write_text("d")
    (data / "raft.dump").chmod(0o400)  # already private (and read-only): untouched
    (data / "sub").mkdir()
    (data / "sub").chmod(0o777)
    secret = tmp_path / "cluster.secret"
    secret.write_text("s" * 64)
    secret.chmod(0o664)
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data / "link").symlink_to(outside)
    warnings = secure_paths([data], [secret])
    assert (mode(data), mode(data / "raft.journal"), mode(data / "raft.dump"), mode(data / "sub"), mode(secret)) == (
        0o700, 0o600, 0o400, 0o700, 0o600)
    assert mode(outside) == 0o644  # the link was not followed
    assert len(warnings) == 4 and all("tightened" in w for w in warnings)
    assert any(str(data / "raft.journal") in w and "0644" in w for w in warnings)
    assert secure_paths([data], [secret]) == []  # idempotent: nothing more to say


def test_a_missing_data_dir_is_created_private_and_a_missing_secret_file_ignored(tmp_path: Path) -> None:
    assert secure_paths([tmp_path / "new" / "data"], [tmp_path / "nope"]) == []
    assert mode(tmp_path / "new" / "data") & 0o077 == 0


def test_a_path_that_cannot_be_tightened_stops_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("t")
    secret.chmod(0o644)

    def refuse(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(filemodes.os, "chmod", refuse)
    with pytest.raises(FileModeError, match=r"token has mode 0644 and cannot be made 0600"):
        secure_paths([], [secret])


def test_private_umask_makes_new_files_owner_only(tmp_path: Path) -> None:
    previous = private_umask()
    try:
        (tmp_path / "f").write_text("x")
        (tmp_path / "d").mkdir()
    finally:
        os.umask(previous)
    assert mode(tmp_path / "f") == 0o600 and mode(tmp_path / "d") == 0o700
