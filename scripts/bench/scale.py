"""Benchmark the scale goal: 10,000 services, 1,000 simulated agents, 30,000 allocations.

The same run as scheduler_e2e.py (real three-master cluster, 1,000 simulated agents heartbeating every
second through the API, no Docker), at 10,000 services of 3 replicas, then:
- `leader_rss_mb`: the leader's RSS once everything runs (goal ≤ 200 MB);
- `steady.cpu_pct.leader`: the leader's CPU at steady state, heartbeats only (goal < 100 %: one core);
- `status_pages`: two clients walk `GET /api/v1/status?limit=100` (following next_cursor) for 20 s while
  the agents heartbeat: per-page p99 (goal ≤ 50 ms).
Prints one JSON line (bench "scale").

    .venv/bin/python scripts/bench/scale.py [--services 10000] [--replicas 3] [--nodes 1000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scheduler_e2e  # noqa: E402

DEFAULTS = ["--nodes", "1000", "--services", "10000", "--replicas", "3", "--steady", "10", "--page-seconds", "20"]

if __name__ == "__main__":
    sys.argv = [sys.argv[0], *DEFAULTS, *sys.argv[1:], "--bench-name", "scale"]  # later flags win
    raise SystemExit(scheduler_e2e.main())
