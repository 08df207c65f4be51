"""GET /api/v1/status in pages on a real master: limit + cursor walk every service once, in name order;
bad paging parameters get the 400 envelope."""

from __future__ import annotations

import pytest

from orca.client import Client
from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def test_paging_walks_every_service_once(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader(all_up=True)
    token = cluster.token()
    names = [f"svc-{i:02d}" for i in range(23)]
    with Client(leader.url, token) as client:
        client.deploy([{"name": n, "image": "img", "replicas": 0} for n in reversed(names)])
        seen: list[str] = []
        cursor = ""
        for _ in range(10):
            body = client.request("GET", "/api/v1/status", params={"limit": 5, "cursor": cursor})
            assert len(body["services"]) <= 5
            seen += [s["name"] for s in body["services"]]
            if body["next_cursor"] is None:
                break
            cursor = body["next_cursor"]
        assert seen == names
        assert "next_cursor" not in client.request("GET", "/api/v1/status")  # unpaged: the answer as before
    for query in ("limit=0", "limit=1001", "limit=x", "cursor=" + "a" * 300):
        status, _, body = raw("GET", f"{leader.url}/api/v1/status?{query}", token=token)
        assert status == 400 and body["code"] in ("VALIDATION_ERROR", "BAD_REQUEST"), (query, status, body)
