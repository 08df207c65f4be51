"""`orca.trace`: off it writes nothing; on, one JSON line per mark, appended by every writer."""

from __future__ import annotations

import json
from pathlib import Path

from orca import trace


def test_marks_are_json_lines_only_while_a_file_is_open(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    trace.open_trace(None)
    trace.mark("ignored")
    assert not trace.enabled() and not path.exists()
    try:
        trace.open_trace(str(path))
        trace.mark("push_sent", node="n1", allocs=3)
        trace.mark("started", alloc="a1")
    finally:
        trace.open_trace(None)
    trace.mark("after")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [rec["stage"] for rec in lines] == ["push_sent", "started"]
    assert lines[0]["node"] == "n1" and lines[0]["allocs"] == 3 and lines[0]["t"] > 0
    assert path.stat().st_mode & 0o777 == 0o600
