"""Per-stage timings of the rounds in an `orca.trace` file (written with a bench's `--trace FILE`).

For every round (`bench_begin` .. `bench_end`, marked by the bench), one line per stage and node: how
many marks, and the first and last of them in seconds from the round's start, in order of first mark.
Reading it top to bottom follows a deploy or a drain through the leader (decided, plan_committed,
push_sent), the agents (push_received, start_begin, started, hb_sent, stop_begin, stopped) and back
(hb_changed, reports_committed, drain_complete).

    .venv/bin/python scripts/bench/trace_stages.py FILE [--round NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def rounds(lines: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    out: list[tuple[str, list[dict[str, Any]]]] = []
    begin: dict[str, Any] | None = None
    for rec in sorted(lines, key=lambda r: r["t"]):
        if rec["stage"] == "bench_begin":
            begin = rec
        elif rec["stage"] == "bench_end" and begin is not None:
            window = [r for r in lines if begin["t"] <= r["t"] <= rec["t"]]
            out.append((str(begin.get("round")), sorted(window, key=lambda r: r["t"])))
            begin = None
    return out


def table(window: list[dict[str, Any]]) -> list[str]:
    t0 = window[0]["t"]
    groups: dict[tuple[str, str], list[float]] = {}
    for rec in window:
        if rec["stage"] in ("bench_begin", "reconcile_pass"):
            continue
        key = (rec["stage"], str(rec.get("node") or f"pid {rec.get('pid')}"))
        groups.setdefault(key, []).append(rec["t"] - t0)
    rows = sorted(groups.items(), key=lambda kv: kv[1][0])
    return [f"  {stage:<20} {node:<28} n={len(ts):<3} first {ts[0]:7.3f}  last {ts[-1]:7.3f}"
            for (stage, node), ts in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--round", help="only this round")
    args = ap.parse_args()
    lines = []
    for raw in Path(args.file).read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    for name, window in rounds(lines):
        if args.round and name != args.round:
            continue
        print(f"{name}: {window[-1]['t'] - window[0]['t']:.3f} s")
        print("\n".join(table(window)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
