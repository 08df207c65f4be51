"""Nemesis: SIGKILL of all three masters at once under write load, then a restart.

Only the journals and dumps remain; everything acknowledged before (and during, once the writers'
retries reach the restarted cluster) is present exactly once, and consistent reads never go backwards
across the restart.
"""

from __future__ import annotations

import time

import pytest
from history import History, applied_counts, check, diverged
from workload import EventCounter, Writers, read_back

from orca.devcluster import LocalCluster

pytestmark = [pytest.mark.chaos, pytest.mark.cluster]


def test_full_cluster_kill_and_restart_keeps_every_acknowledged_write(cluster: LocalCluster) -> None:
    urls = [m.url for m in cluster.masters]
    history = History()
    writers = Writers(urls, [cluster.token("admin", f"chaos-{i}") for i in range(3)], history, prefix="r",
                      rate=20.0, write_deadline_s=30.0)
    counter = EventCounter(urls, cluster.token("viewer", "events"), prefix="r")
    counter.start()
    writers.start()
    try:
        time.sleep(3.0)
        acked_before = len(history.writes("ok"))
        for m in cluster.masters:
            cluster.kill(m)
        killed_at = time.monotonic()
        cluster.start()
        cluster.wait_leader(timeout=30)
        back_s = time.monotonic() - killed_at
        time.sleep(2.0)
    finally:
        writers.stop()
        counter.stop()
    print(f"\n{acked_before} writes acknowledged before the kill; leader again {back_s:.3f} s after it; "
          f"client errors {writers.errors}; event gaps {counter.gaps}")

    rb = read_back({m.node_id: m.url for m in cluster.masters}, cluster.token(), "r")
    assert rb.converged, (diverged(rb.views), rb.applied)
    assert diverged({"consistent": {s["name"]: int(s["version"]) for s in rb.consistent}, **rb.views}) == []
    verdict = check(history, applied_counts(rb.consistent, counter.counts))
    print(f"verdict: {verdict}")
    assert verdict.ok, str(verdict)
    # The deploy events were seen for every acknowledged write: the double-apply check had its input.
    assert counter.gaps == 0 and {o.key for o in history.writes("ok")} <= set(counter.counts)
    assert acked_before > 20 and verdict.acked > acked_before
