"""Membership at runtime under write load, with real masters: grow 3 -> 5, shrink 5 -> 3 (removing the
leader among others), and replace a master whose data directory was deleted, at a new address.

Every acknowledged write is present exactly once afterwards (the chaos history checker), the masters
converge, and `cluster members` lists exactly the final configuration. Log compaction is set low so a
joining master catches up from the leader's snapshot, not from a full log.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from history import History, applied_counts, check, diverged
from workload import EventCounter, Writers, read_back, wait_caught_up

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster, MasterProc

pytestmark = [pytest.mark.chaos, pytest.mark.cluster]


def members(admin: Client) -> dict[str, dict]:
    return {m["id"]: m for m in admin.members()["members"]}


def add(cluster: LocalCluster, admin: Client, node_id: str, timings: dict[str, float]) -> MasterProc:
    m = cluster.launch_new_master(node_id)
    t0 = time.monotonic()
    result = admin.add_master(node_id, f"127.0.0.1:{m.raft_port}", m.url)
    assert result["added"] is True
    others = [o.url for o in cluster.masters if o.alive]
    wait_caught_up(m.url, others, timeout_s=60)
    timings[node_id] = time.monotonic() - t0
    cluster.masters.append(m)
    return m


def remove(cluster: LocalCluster, admin: Client, m: MasterProc) -> None:
    result = admin.remove_master(m.node_id)
    assert result["removed"] is True
    cluster.kill(m)
    cluster.masters.remove(m)


def wait_members(admin: Client, expected: set[str], timeout_s: float = 30.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            seen = members(admin)
        except ApiError:
            seen = {}
        ok = set(seen) == expected and all(r["in_raft"] and r["listed"] and r["connected"] for r in seen.values())
        if ok or time.monotonic() > deadline:
            assert ok, seen
            return seen
        time.sleep(0.2)


def test_grow_shrink_and_replace_under_load(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", tuning={"compaction_min_entries": 200})
    with cluster:
        cluster.start()
        cluster.wait_leader(timeout=30, all_up=True)
        urls = [m.url for m in cluster.masters]
        history = History()
        writers = Writers(urls, [cluster.token("admin", f"w-{i}") for i in range(3)], history, prefix="k",
                          rate=10.0)
        counter = EventCounter(urls, cluster.token("viewer", "events"), prefix="k")
        admin = Client(urls, cluster.token(), timeout=15.0, retries=10)
        timings: dict[str, float] = {}
        counter.start()
        writers.start()
        try:
            time.sleep(2.0)
            # 3 -> 5
            add(cluster, admin, "master-4", timings)
            add(cluster, admin, "master-5", timings)
            wait_members(admin, {"master-1", "master-2", "master-3", "master-4", "master-5"})
            # 5 -> 3: the current leader (leadership moves first) and one of the new ones
            leader = cluster.wait_leader(timeout=20)
            remove(cluster, admin, leader)
            remove(cluster, admin, cluster.by_id("master-5"))
            left = {m.node_id for m in cluster.masters}
            assert len(left) == 3
            wait_members(admin, left)
            # a refused change: with one of three down, adding would lose quorum
            victim = next(m for m in cluster.masters if m.node_id != "master-4")
            cluster.kill(victim)
            cluster.wait_leader(timeout=20)
            with pytest.raises(ApiError) as refused:
                admin.add_master("master-9", "127.0.0.1:1", "http://127.0.0.1:2")
            assert refused.value.code == "QUORUM_AT_RISK", refused.value
            # replace the dead master: its disk is gone, it comes back at a new address
            shutil.rmtree(tmp_path / "cluster" / victim.node_id)
            remove(cluster, admin, victim)
            add(cluster, admin, victim.node_id, timings)
            wait_members(admin, {m.node_id for m in cluster.masters})
            time.sleep(2.0)
        finally:
            writers.stop()
            counter.stop()
            admin.close()
        final = {m.node_id: m.url for m in cluster.masters}
        print(f"\nadd-master to caught up, s: {({k: round(v, 2) for k, v in timings.items()})}; "
              f"client errors: {writers.errors}; final members: {sorted(final)}")
        rb = read_back(final, cluster.token(), "k", timeout_s=60)
        assert rb.converged, (diverged(rb.views), rb.applied)
        verdict = check(history, applied_counts(rb.consistent, counter.counts))
        print(f"verdict: {verdict}")
        assert verdict.ok, str(verdict)
        assert verdict.acked > 50
        # the replacement caught up from a snapshot: its journal starts after the cluster's first entries
        assert (tmp_path / "cluster" / victim.node_id / "raft.dump").exists()

        # The membership survives a full restart although every config still lists the peers it was
        # started with (the originals name removed masters; none names all of today's members).
        for m in cluster.masters:
            cluster.kill(m)
        cluster.start()
        cluster.wait_leader(timeout=30, all_up=True)
        with Client(list(final.values()), cluster.token(), timeout=15.0, retries=10) as again:
            wait_members(again, set(final))
            names = {s["name"] for s in again.status(consistent=True)}
        assert {o.key for o in history.writes("ok")} <= names
