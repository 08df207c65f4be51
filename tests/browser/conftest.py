"""Fixtures of the browser tier: Debian's headless Chromium driven by Selenium, and a real cluster.

The browser is `/usr/bin/chromium` through `/usr/bin/chromedriver` (the Debian packages `chromium` and
`chromium-driver`; `.ci/run` installs them); Selenium is told both paths, so nothing is downloaded at
run time. The cluster is three real `orca server` processes and two real agents on the local Docker
engine, shared by the tests of a module (they run in file order; the one that kills the leader last).

Without Chromium or Docker the tier is skipped with a message, except under CI=true or
ORCA_REQUIRE_BROWSER=1, where that is a failure. Screenshots go to `test-artifacts/console/` at the
repository root (git-ignored), named by test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from console_helpers import CHROMEDRIVER, CHROMIUM, IMAGE, Stack, _unavailable, make_driver, shot, wait_for

from orca.devcluster import LocalCluster


@pytest.fixture(scope="session")
def chromium() -> None:
    if os.environ.get("ORCA_SKIP_BROWSER") == "1":
        pytest.skip("ORCA_SKIP_BROWSER=1: browser tier skipped")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        _unavailable(f"no {', '.join(missing)}: apt-get install chromium chromium-driver (.ci/run does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    if os.environ.get("ORCA_SKIP_DOCKER") == "1":
        pytest.skip("ORCA_SKIP_DOCKER=1: the browser tier needs Docker")
    import docker

    try:
        client = docker.from_env()
        client.info()
        client.images.get(IMAGE + ":latest")
    except Exception as exc:  # any failure means the same: no usable engine or image
        _unavailable(f"no Docker engine with {IMAGE} ({exc}); run scripts/ensure-docker.sh")
    yield client
    client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, engine: Any, chromium: None) -> Iterator[Stack]:
    run = uuid.uuid4().hex[:6]
    nodes = [f"ui{run}-a", f"ui{run}-b"]
    cluster = LocalCluster(tmp_path_factory.mktemp("console") / "c",
                           timing={"agent_heartbeat_s": 0.5, "node_lease_ttl_s": 3.0})
    try:
        cluster.start()
        cluster.wait_leader(timeout=60, all_up=True)
        for i, node in enumerate(nodes):
            cluster.start_agent(cluster.add_agent(node, labels={"zone": "ab"[i]}))
        s = Stack(cluster, nodes, engine)
        wait_for(lambda: len([n for n in s.client.nodes() if n["status"] == "ready"]) == 2, 60, "agents ready")
        yield s
    finally:
        cluster.__exit__(None, None, None)
        for node in nodes:
            for c in engine.containers.list(all=True, filters={"label": f"orca.node={node}"}):
                c.remove(force=True)


@pytest.fixture
def browser(chromium: None, request: pytest.FixtureRequest) -> Iterator[Any]:
    driver = make_driver()
    try:
        yield driver
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            shot(driver, f"FAILED-{request.node.name}")
            for entry in driver.get_log("browser")[-30:]:
                print("browser:", entry)
            print("page:", driver.execute_script(
                "return [document.readyState, location.href.split('#')[0], performance.getEntriesByType('resource')"
                ".map(e => `${e.name} ${e.responseStatus} ${Math.round(e.duration)}ms`)]"))
        driver.quit()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
