"""No tracked file holds a merge conflict marker (one reached `.ci/run` once and broke CI at its third line)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7} |>{7} )", re.M)


def test_no_tracked_file_has_a_conflict_marker() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    bad = []
    for name in filter(None, listed.split(b"\0")):
        path = ROOT / name.decode()
        if path.is_file() and MARKER.search(path.read_bytes()):
            bad.append(name.decode())
    assert not bad, f"merge conflict markers in: {bad}"
