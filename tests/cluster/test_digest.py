"""`GET /api/v1/cluster/digest`: admin only, and equal on every master once they applied the same entries."""

from __future__ import annotations

import time

import pytest

from orca.devcluster import LocalCluster, http_exchange

pytestmark = pytest.mark.cluster


def test_masters_agree_on_the_digest_and_only_admins_may_ask(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader(timeout=60, all_up=True)
    admin = cluster.token("admin")
    status, _, body = http_exchange("POST", leader.url + "/api/v1/deploy", token=admin,
                                    body={"services": [{"name": "web", "image": "busybox"}]})
    assert status == 200, body
    assert http_exchange("GET", leader.url + "/api/v1/cluster/digest", token=cluster.token("deployer"))[0] == 403
    assert http_exchange("GET", leader.url + "/api/v1/cluster/digest")[0] == 401
    deadline = time.monotonic() + 30
    while True:
        views = [http_exchange("GET", m.url + "/api/v1/cluster/digest", token=admin)[2] for m in cluster.masters]
        same_index = len({v["applied_index"] for v in views}) == 1
        if same_index and len({v["digest"] for v in views}) == 1:
            break
        assert time.monotonic() < deadline, f"masters never agreed: {views}"
        time.sleep(0.2)
    assert len(views[0]["digest"]) == 64
