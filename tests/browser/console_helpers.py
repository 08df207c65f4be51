"""Helpers of the browser tier (a module of its own so tests can import them; fixtures are in conftest)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orca.client import Client
from orca.devcluster import LocalCluster

CHROMIUM = os.environ.get("ORCA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ORCA_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
IMAGE = "orca-test/busybox"


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("ORCA_REQUIRE_BROWSER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def make_driver(width: int = 1440, height: int = 1000) -> Any:
    """A fresh headless Chromium (its own profile, so its own sessionStorage)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


class Stack:
    def __init__(self, cluster: LocalCluster, nodes: list[str], engine: Any) -> None:
        self.cluster = cluster
        self.nodes = nodes
        self.engine = engine
        self.client = Client([m.url for m in cluster.masters], cluster.token(), timeout=15)

    def containers(self, service: str) -> list[Any]:
        out = []
        for node in self.nodes:
            out += self.engine.containers.list(filters={"label": [f"orca.node={node}", f"orca.service={service}"]})
        return out


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` until it returns something true; errors count as not yet (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as err:  # noqa: BLE001 - keep polling through transient errors
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

