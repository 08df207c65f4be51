"""The web console on real masters: every master serves it, answers CORS for its peers only, and
`orca ui` hands out a signed-in link after checking the token against the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _orca(cluster: LocalCluster, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCA_TOKEN": token, "HOME": str(cluster.root)}
    return subprocess.run([sys.executable, "-m", "orca", *args], capture_output=True, text=True, timeout=60, env=env)


def test_every_master_serves_the_console_and_answers_cors_for_its_peers(cluster: LocalCluster) -> None:
    for m in cluster.masters:
        status, headers, body = _get(m.url + "/ui/")
        assert status == 200 and b'<div id="app">' in body
        assert "script-src 'self' 'sha256-" in headers["Content-Security-Policy"]
    a, b = cluster.masters[0], cluster.masters[1]
    pre = {"Origin": a.url, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"}
    status, headers, _ = _get(b.url + "/api/v1/services/x/scale", pre, method="OPTIONS")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == a.url
    status, headers, _ = _get(b.url + "/api/v1/services/x/scale", {**pre, "Origin": "http://elsewhere.test"},
                              method="OPTIONS")
    assert status == 403 and headers.get("Access-Control-Allow-Origin") is None
    status, headers, _ = _get(b.url + "/api/v1/health", {"Origin": a.url})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == a.url


def test_orca_ui_prints_a_signed_in_link_only_for_a_token_the_cluster_takes(cluster: LocalCluster) -> None:
    token = cluster.token("viewer", "vi")
    apis = ",".join(m.url for m in cluster.masters)
    done = _orca(cluster, "--api", apis, "ui", "--print", token=token)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link == f"{cluster.masters[0].url}/ui/#token={token}"
    # the fragment never reaches the server: the page itself is the same public file
    assert _get(link.split("#")[0])[0] == 200

    bad = _orca(cluster, "--api", apis, "ui", "--print", token=token[:-4] + "AAAA")
    assert bad.returncode == 1 and "UNAUTHORIZED" in bad.stderr and "#token=" not in bad.stdout
    none = _orca(cluster, "--api", apis, "ui", "--print", token="")
    assert none.returncode == 2 and "no token" in none.stderr


async def test_a_browsers_metrics_stream_on_a_follower_reaches_the_leader(cluster: LocalCluster) -> None:
    """The token of a browser's stream is in ?access_token=; a follower must pass it on to the leader
    (it once sent an empty Authorization, and the stream said "missing bearer token")."""
    import aiohttp

    from orca.client import Client

    admin = cluster.token()
    Client([m.url for m in cluster.masters], admin).deploy([{"name": "web", "image": "orca-test/busybox"}])
    leader = cluster.wait_leader(30)
    follower = next(m for m in cluster.masters if m is not leader)
    url = f"{follower.url}/api/v1/services/web/metrics/stream?access_token={cluster.token('viewer', 'v')}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        try:
            msg = await ws.receive(timeout=4)  # a sample, or nothing yet: both fine; an error is not
        except TimeoutError:
            return
        assert msg.type == aiohttp.WSMsgType.TEXT and "error" not in msg.json(), msg.data
