"""A rolling update under ~200 requests/s through both agents' ingress proxies (real HAProxy, real Docker)
loses no request.

3 masters and 2 agents (orca.devcluster) on the local engine, each agent with its proxy on 127.0.0.1;
4 replicas of orca-test/web (scripts/ensure-web-image.sh: a keep-alive HTTP server) spread over both
nodes. While a paced load of 100 requests/s goes through each proxy, the service is updated replica by
replica: every replacement changes the route table of both proxies (a replica added, then one drained
and removed, on either node): about 8 changes per proxy under load, applied to the running HAProxy
through its runtime API. No request may fail: a removed replica gets no new request once the change is
live (milliseconds after the push), one in flight finishes (the stopping agent drains its proxy;
elsewhere the request is milliseconds long), and a connection refused by a replica that is already gone
is retried on another. Bounded: the update must end within 120 s.

Needs Docker: without an engine it skips, except under CI=true or ORCA_REQUIRE_DOCKER=1 (a failure).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docker"))  # the docker tier's helpers
from e2e_helpers import ProxyStack, converged, proxy_stack_fixture, wait_for  # noqa: E402
from test_traffic_e2e import Load, hostnames, routed  # noqa: E402

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
RATE_PER_PROXY = 100.0
UPDATE_DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyStack]:
    if os.environ.get("ORCA_SKIP_DOCKER") == "1":
        pytest.skip("ORCA_SKIP_DOCKER=1: needs Docker")
    try:
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        if os.environ.get("CI") == "true" or os.environ.get("ORCA_REQUIRE_DOCKER") == "1":
            pytest.fail("no Docker engine answers (scripts/ensure-docker.sh)", pytrace=False)
        pytest.skip("no Docker engine answers (scripts/ensure-docker.sh)")
    built = subprocess.run([str(ROOT / "scripts" / "ensure-web-image.sh")], capture_output=True, text=True,
                           timeout=600)
    if built.returncode != 0:
        pytest.fail(f"scripts/ensure-web-image.sh failed:\n{built.stderr[-2000:]}")
    yield from proxy_stack_fixture(tmp_path_factory, None)


def spec(version: str) -> dict[str, Any]:
    return {"name": "roll", "image": "orca-test/web", "port": 8080, "health": "/", "domain": "roll.orca.test",
            "replicas": 4, "resources": {"memory": "32Mi", "cpu": 0.2}, "env": {"VERSION": version},
            "update": {"min_healthy_s": 0.5}}


def test_rolling_update_at_200_requests_per_second_drops_nothing(stack: ProxyStack) -> None:
    cluster, client, nodes, proxies = stack
    host = "roll.orca.test"
    client.deploy([spec("1")])
    wait_for(converged(client, "roll", 4), 90, "4 healthy replicas", cluster)
    old = hostnames(client, "roll")
    for proxy in proxies:
        wait_for(lambda proxy=proxy: routed(proxy, host, old, tries=16), 20, f"{proxy} routes to 4", cluster)
    spread = {c["node"] for c in client.service("roll")["containers"]}
    loads = [Load(proxy, host, concurrency=6, rate=RATE_PER_PROXY, duration=UPDATE_DEADLINE_S + 30).start()
             for proxy in proxies]
    started = time.monotonic()
    try:
        wait_for(lambda: all(load.done >= 200 for load in loads), 30, "load running")
        before = sum(load.done for load in loads)
        client.deploy([spec("2")])

        def rolled() -> bool:
            return converged(client, "roll", 4)() and not (hostnames(client, "roll") & old)
        wait_for(rolled, UPDATE_DEADLINE_S, "rolled to 4 new replicas", cluster)
        new = hostnames(client, "roll")
        for proxy in proxies:
            wait_for(lambda proxy=proxy: routed(proxy, host, new, tries=16), 20, "routes to the new ones", cluster)
        during = sum(load.done for load in loads) - before
        time.sleep(2.0)  # a little load after the last change too
    finally:
        for load in loads:
            load.stop()
        for load in loads:
            load.join()
    elapsed = time.monotonic() - started
    total = sum(load.total for load in loads)
    failures = [f for load in loads for f in load.failures]
    print(f"rolling update over nodes {sorted(spread)}: {total} requests in {elapsed:.1f} s "
          f"({total / elapsed:.0f}/s), {during} during the update, {len(failures)} failed {failures[:5]}")
    assert during >= 500, during  # the load really ran through the update
    assert not failures, failures[:10]
    assert all(set(load.bodies) >= new for load in loads)  # both proxies reached every new replica
