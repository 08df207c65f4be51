"""Benchmark blocking queries: how soon a watcher on a follower sees a write made through the leader.

A local three-master cluster (real `orca server` processes, default timing). Each round a thread on a
follower sends `GET /api/v1/services/web?index=<its last index>&wait=60s`; once it has been sent, the
main thread scales `web` through the leader and notes when the leader acknowledged; the watcher notes
when its answer (showing the new replica count) arrived. `notice_ms` is the time from the acknowledgement
to that answer: what a watcher waits on top of the write itself. The same figure for the 0.5 s polling the
SDK used before is 250 ms on average (half the interval), plus a request. Prints one JSON line.

    .venv/bin/python scripts/bench/blocking.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import box_load, emit, install_sigterm, percentile  # noqa: E402

from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

SETTLE_S = 0.05  # after sending the watch, before the write: lets it reach the follower (not measured)


def _watch(watcher: Client, path: str, index: int | None, want: int, out: dict[str, Any]) -> None:
    """Blocking reads from `index` until the detail shows `want` replicas (another change is asked again)."""
    while True:
        out["asked"] += 1
        body, got = watcher.blocking_get(path, index=index, wait_s=60)
        if body["replicas"]["desired"] == want:
            out["at"], out["index"] = time.perf_counter(), got
            return
        index = got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    install_sigterm()
    load_at_start = os.getloadavg()[0]
    notice: list[float] = []
    requests_per_round: list[int] = []
    with tempfile.TemporaryDirectory(prefix="orca-bench-blocking-") as tmp, \
            LocalCluster(Path(tmp) / "c") as cluster:
        cluster.start()
        leader = cluster.wait_leader(timeout=60, all_up=True)
        follower = next(m for m in cluster.masters if m is not leader)
        token = cluster.token()
        with Client(leader.url, token, timeout=30) as writer, Client(follower.url, token, timeout=30) as watcher:
            writer.deploy([{"name": "web", "image": "orca-test/busybox", "replicas": 0}])
            path = "/api/v1/services/web"
            for _ in range(200):  # bounded: the follower applies the deploy within a few heartbeats
                try:
                    _, index = watcher.blocking_get(path)
                    break
                except Exception:  # noqa: BLE001 - not there yet
                    time.sleep(0.05)
            for n in range(1, args.rounds + 1):
                out: dict[str, Any] = {"asked": 0}
                thread = threading.Thread(target=_watch, args=(watcher, path, index, n % 3, out), daemon=True)
                thread.start()
                time.sleep(SETTLE_S)
                writer.scale("web", n % 3)
                acked = time.perf_counter()
                thread.join(90)
                if "at" not in out:
                    raise SystemExit("a watch did not end within 90 s")
                notice.append(max(0.0, out["at"] - acked))
                requests_per_round.append(out["asked"])
                index = out["index"]
    lat = sorted(notice)
    emit({"bench": "blocking", "rounds": args.rounds,
          "notice_ms": {"median": round(statistics.median(lat) * 1000, 1),
                        "p90": round((percentile(lat, 90) or 0) * 1000, 1),
                        "max": round(lat[-1] * 1000, 1)},
          "polling_mean_ms": 250.0, "requests_per_round": round(statistics.mean(requests_per_round), 2),
          "box": box_load(load_at_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
