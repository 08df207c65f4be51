"""Benchmark `orca cluster add-master`: how long a fresh master takes to join a cluster holding N services,
against the baseline of the same run: a follower restarted with its disk (kill -9, start, caught up).

A local three-master cluster (real `orca server` processes, default timing) is filled with `--services`
services (replicas 0) in batches, with log compaction set low (`compaction_min_entries = 50`) so that
the joining master catches up from the leader's snapshot, as it does in a cluster that ran for a while.
Each round starts a fourth master with an empty data directory (a config listing the three as peers),
then times `add_master()` from the request to its answer (`commit_s`: the member list entry and the Raft
change both committed) and to the new master having applied the leader's commit index (`caught_up_s`);
it is then removed, stopped and its directory deleted. The baseline round kills -9 a follower, starts it
again and times it to caught up (`restart_caught_up_s`). Prints one JSON line with medians.

    .venv/bin/python scripts/bench/add_master.py [--services 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "chaos"))

from _common import box_load, emit, install_sigterm  # noqa: E402
from workload import wait_caught_up  # noqa: E402

from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

BATCH = 20


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"median": round(statistics.median(values), 3) if values else None,
            "max": round(max(values), 3) if values else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    install_sigterm()
    load_at_start = os.getloadavg()[0]
    commit, caught_up, restart = [], [], []
    with tempfile.TemporaryDirectory(prefix="orca-bench-add-master-") as tmp, \
            LocalCluster(Path(tmp) / "c", tuning={"compaction_min_entries": 50}) as cluster:
        cluster.start()
        cluster.wait_leader(timeout=60, all_up=True)
        urls = [m.url for m in cluster.masters]
        with Client(urls, cluster.token(), timeout=60, retries=10) as client:
            for start in range(0, args.services, BATCH):
                client.deploy([{"name": f"svc-{i}", "image": "orca-test/busybox", "replicas": 0,
                                "env": {"INDEX": str(i)}} for i in range(start, min(args.services, start + BATCH))])
            for r in range(args.rounds):
                m = cluster.launch_new_master(f"extra-{r}")  # up and listening, as an operator's would be
                t0 = time.monotonic()
                client.add_master(m.node_id, f"127.0.0.1:{m.raft_port}", m.url)
                commit.append(time.monotonic() - t0)
                wait_caught_up(m.url, [o.url for o in cluster.masters], timeout_s=120)
                caught_up.append(time.monotonic() - t0)
                client.remove_master(m.node_id)
                cluster.kill(m)
                shutil.rmtree(cluster.root / m.node_id, ignore_errors=True)

                leader = cluster.wait_leader(timeout=30)
                follower = next(o for o in cluster.masters if o is not leader)
                cluster.kill(follower)
                t0 = time.monotonic()
                cluster.start([follower])
                wait_caught_up(follower.url, [o.url for o in cluster.masters if o is not follower], timeout_s=120)
                restart.append(time.monotonic() - t0)
    emit({"bench": "add_master", "services": args.services, "rounds": args.rounds,
          "commit_s": _stats(commit), "caught_up_s": _stats(caught_up),
          "baseline": {"restart_caught_up_s": _stats(restart)}, "box": box_load(load_at_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
