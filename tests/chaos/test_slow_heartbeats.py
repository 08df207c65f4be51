"""No false node loss on a slow link, and a real loss still seen fast on it.

Runs `scripts/bench/heartbeat_delay.py` (real masters, a real agent, everything the agent sends delayed
0-1 s by a relay; see its docstring for why not netem) for 20 s and reads its JSON line: the node must
never leave `ready` and no `node_down` event may exist; after the SIGKILL of the agent the node must be
marked down (the leader's probe through the same slow link finds it gone). No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.chaos, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]


def test_delayed_heartbeats_mark_nothing_lost() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts/bench/heartbeat_delay.py"), "--seconds", "20"],
                         capture_output=True, text=True, timeout=180, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["delayed_chunks"] > 10, line  # the agent's traffic really went through the delay line
    assert line["not_ready_samples"] == 0 and line["node_down_events"] == 0, line
    assert line["met"] is True and line["loss_detected_s"] is not None, line
