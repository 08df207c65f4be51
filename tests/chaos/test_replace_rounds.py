"""Several `failover-test.sh --replace` rounds in a row: kill the leader under write load, wipe its disk,
remove it, start a new master at a new address and add it; with log compaction low, so that every new
master catches up from a snapshot sent by a leader that itself joined from one.

This is the scenario that stalled for good after 3-6 rounds before orca.raft_append (a master installing
a snapshot dropped the leader that sent it, or a resent range reversed the change that added it). The
drill's own checker judges the run: 0 acknowledged writes lost or applied twice, every round failed over
and caught up, the masters converged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.chaos, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6


def test_consecutive_replace_rounds_lose_nothing() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "failover_drill.py"), "--replace",
                           "--rounds", str(ROUNDS), "--compact-every", "200", "--clients", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr[-8000:]
    summary = json.loads(lines[-1])
    assert summary["lost"] == 0 and summary["duplicated"] == 0, summary
    assert summary["rounds_without_failover"] == 0 and summary["converged"], summary
    assert summary["acked"] > 0 and summary["replace_s"]["max"] is not None, summary
