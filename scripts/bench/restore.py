"""Benchmark backup and restore: save a cluster of N services (default 10,000), lose every master's data
directory, start a fresh cluster with the same secret, restore. Prints one JSON line.

A local three-master cluster (real `orca server` processes, default timing, no agents: the services stay
pending, which keeps the box's load on the control plane). `save_s` is `Client.snapshot_save()` (barrier,
pack under the state lock, compress, transfer, verify); `restore_s` is `Client.snapshot_restore()` from
the first request to the commit's answer (begin, every chunk, commit: each a replicated entry);
`all_masters_s` is from the same start until every master answers `/cluster/info` with N services;
`elections_during_restore` the term increase meanwhile (every master decodes the state in its Raft thread
when it applies the commit: on a big state that pause may outlast an election timeout).

    .venv/bin/python scripts/bench/restore.py [--services 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import box_load, emit, install_sigterm, wait_until  # noqa: E402

from orca import snapshot  # noqa: E402
from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

BATCH = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    args = parser.parse_args()
    install_sigterm()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orca-bench-restore-") as tmp, \
            LocalCluster(Path(tmp) / "c") as cluster:
        cluster.start()
        cluster.wait_leader(timeout=60, all_up=True)
        urls = [m.url for m in cluster.masters]
        token = cluster.token()
        with Client(urls, token, timeout=60) as client:
            t0 = time.monotonic()
            for start in range(0, args.services, BATCH):
                client.deploy([{"name": f"svc-{i}", "image": "orca-test/busybox", "replicas": 1,
                                "env": {"INDEX": str(i)}} for i in range(start, min(args.services, start + BATCH))])
            fill_s = time.monotonic() - t0
            t0 = time.monotonic()
            data = client.snapshot_save()
            save_s = time.monotonic() - t0
        header, _ = snapshot.parse(data)
        for m in cluster.masters:
            cluster.kill(m)
        for m in cluster.masters:
            shutil.rmtree(cluster.root / m.node_id)
        cluster.start()
        cluster.wait_leader(timeout=60, all_up=True)
        with Client(urls, token, timeout=120) as client:
            term_before = client.health().get("term")
            t0 = time.monotonic()
            result = client.snapshot_restore(data)
            restore_s = time.monotonic() - t0

            def everywhere() -> bool:
                counts = []
                for url in urls:
                    with Client([url], token, retries=0, timeout=30) as one:
                        counts.append(one.cluster_info().get("services"))
                return all(c == args.services for c in counts)
            wait_until(everywhere, 120, "every master holds the restored services")
            all_masters_s = time.monotonic() - t0
            term_after = max(int((cluster.health(m) or {}).get("term") or 0) for m in cluster.masters)
    emit({"bench": "restore", "services": args.services, "restored_services": result["counts"]["services"],
          "snapshot_bytes": len(data), "state_bytes": header["state_bytes"],
          "chunks": -(-header["body_bytes"] // (512 << 10)), "fill_s": round(fill_s, 2),
          "save_s": round(save_s, 3), "restore_s": round(restore_s, 3), "all_masters_s": round(all_masters_s, 3),
          "elections_during_restore": term_after - int(term_before or 0),
          "box": box_load(load_at_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
