"""Traffic endpoints through real masters: scaling policy, metrics from any master, live event streams."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from orca.client import Client
from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def test_scaling_policy_get_put_validate_and_manual_override(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    token = cluster.token("deployer", "dev")
    with Client([m.url for m in cluster.masters], token) as client:
        client.deploy([{"name": "web", "image": "orca-test/busybox"}])
    url = leader.url + "/api/v1/services/web/scaling"
    status, _, body = raw("PUT", url, token=token, body={"mode": "auto", "min_replicas": 1, "max_replicas": 4})
    assert status == 200 and body["scaling"]["mode"] == "auto" and body["scaling"]["window_seconds"] == 60
    status, _, body = raw("PUT", url, token=token, body={"mode": "auto", "min_replicas": 5, "max_replicas": 2})
    assert status == 400 and body["code"] == "INVALID_SPEC" and "scaling" in body["error"]
    status, _, body = raw("PUT", url, token=token, body={"mode": "auto", "bogus": 1})
    assert status == 400 and "bogus" in body["error"]
    status, _, body = raw("GET", url + "?consistent=true", token=token)
    assert status == 200 and body["scaling"]["max_replicas"] == 4
    # a manual scale switches the service to manual until the policy is set again
    status, _, body = raw("POST", leader.url + "/api/v1/services/web/scale", token=token, body={"replicas": 3})
    assert status == 200 and body["scaling_mode"] == "manual"
    assert raw("GET", url + "?consistent=true", token=token)[2]["scaling"]["mode"] == "manual"
    assert raw("PUT", url, token=token, body={"scaling": None})[2]["scaling"] is None
    assert raw("PUT", url, token=cluster.token("viewer", "v"), body={"mode": "manual"})[0] == 403


def test_metrics_answer_from_any_master(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    token = cluster.token()
    with Client([leader.url], token) as client:
        client.deploy([{"name": "api", "image": "orca-test/busybox"}])
    time.sleep(0.5)
    status, _, body = raw("GET", follower.url + "/api/v1/services/api/metrics?history=5", token=token)
    assert status == 200 and body["service"] == "api" and body["source"] == leader.node_id
    assert raw("GET", follower.url + "/api/v1/services/ghost/metrics", token=token)[0] == 404
    assert raw("GET", leader.url + "/api/v1/services/api/metrics?history=x", token=token)[0] == 400
    text = raw("GET", leader.url + "/metrics")[2]
    assert "orca_nodes" in text and "orca_allocations" in text


def test_event_stream_delivers_within_a_second_from_a_follower(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    token = cluster.token()

    async def run() -> float:
        async with aiohttp.ClientSession() as session:
            unauthorized = await session.get(follower.url + "/api/v1/events/stream")
            assert unauthorized.status == 401
            ws_url = follower.url.replace("http", "ws") + f"/api/v1/events/stream?access_token={token}"
            async with session.ws_connect(ws_url) as ws:
                started = time.monotonic()
                await asyncio.to_thread(lambda: Client([leader.url], token).deploy(
                    [{"name": "streamed", "image": "orca-test/busybox"}]))
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    event = json.loads(msg.data)
                    if event.get("service") == "streamed":
                        return time.monotonic() - started
    assert asyncio.run(run()) < 1.5
