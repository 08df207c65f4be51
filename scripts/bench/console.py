"""Benchmark the web console: first paint of the overview on a cluster of 1,000 services and 200 nodes.

Prints one JSON line. A local three-master cluster (real `orca server` processes) and 200 simulated
agents without Docker, in this process (the `FakeAgents`/`Heartbeats` of scheduler_e2e.py: each node
registers through the API and heartbeats once a second, reporting what was pushed to it as running).
One deploy of 1,000 services x 2 replicas; once `GET /api/v1/status` counts them all running, Debian's
headless Chromium (Selenium with /usr/bin/chromedriver) opens `/ui/#token=...` on a follower, cold (a
new browser profile, no cache) `--runs` times, and reads:

- `first_paint_ms`: from navigation start to the first frame drawn after the overview has the service
  list and the node list (the page records `performance.now()` in a requestAnimationFrame then);
- `fcp_ms`: the browser's own first-contentful-paint (the shell, before any data);
- `longest_task_ms`: the longest main-thread task (PerformanceObserver "longtask") over the first
  `--watch` seconds, while the overview keeps polling every 2 s: how close the page comes to freezing;
- `filter_ms`: typing one more character into the service filter until the next frame;
- `data_start_ms`, `status_fetch_ms`, `render_after_data_ms`: where the first paint went (when the page
  asked for the service list, how long that request took, and the page's own work after the data).

Also `status_bytes` and `status_ms`: the size and time of the `GET /api/v1/status` the overview polls.

    .venv/bin/python scripts/bench/console.py [--services 1000] [--nodes 200] [--replicas 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _common import box_load, emit, install_sigterm  # noqa: E402
from scheduler_e2e import FakeAgents, Heartbeats, _get, register_all  # noqa: E402

from orca.devcluster import LocalCluster  # noqa: E402

CHROMIUM = os.environ.get("ORCA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ORCA_CHROMEDRIVER", "/usr/bin/chromedriver")
PHASE_TIMEOUT_S = 300.0
DEPLOY_BATCH = 100

# Registered before any script of the page runs, so long tasks from the very start are seen.
LONGTASK_OBSERVER = """
window.__longTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
  .observe({type: 'longtask', buffered: true});
"""


def make_driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    return driver


def wait(driver: Any, script: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for: {script}")


def measure_once(url: str, token: str, watch_s: float) -> dict[str, Any]:
    driver = make_driver()
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONGTASK_OBSERVER})
        driver.get(f"{url}/ui/#token={token}")
        first = wait(driver, "return window.__orcaFirstPaint", 60)
        rows = driver.execute_script(
            "return document.querySelectorAll('[data-testid=services-table] tbody tr').length")
        # where the time went: the two data requests (server + transfer) and the page's own work after them
        parts = driver.execute_script("""
            const r = performance.getEntriesByType('resource');
            const last = (p) => r.filter(e => e.name.endsWith(p)).sort((a, b) => a.startTime - b.startTime)[0];
            const s = last('/api/v1/status'), n = last('/api/v1/cluster/nodes');
            const end = Math.max(s ? s.responseEnd : 0, n ? n.responseEnd : 0);
            return {data_start_ms: s ? s.startTime : null, status_fetch_ms: s ? s.duration : null,
                    nodes_fetch_ms: n ? n.duration : null, render_after_data_ms: window.__orcaFirstPaint - end};
        """)
        fcp = driver.execute_script(
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null")
        time.sleep(watch_s)
        longest = driver.execute_script("return Math.max(0, ...window.__longTasks)")
        filter_ms = driver.execute_async_script("""
            const done = arguments[0];
            const box = document.querySelector('[data-testid=services-table] input[type=search]');
            const t0 = performance.now();
            box.value = 'bench-09';
            box.dispatchEvent(new Event('input', {bubbles: true}));
            requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
        """)
        shown = driver.execute_script(
            "return document.querySelector('[data-testid=services-table] .count').textContent")
        return {"first_paint_ms": round(first, 1), "fcp_ms": None if fcp is None else round(fcp, 1),
                "longest_task_ms": round(longest, 1), "filter_ms": round(filter_ms, 1), "rows_in_dom": rows,
                "filter_count": shown, **{k: None if v is None else round(v, 1) for k, v in parts.items()}}
    finally:
        driver.quit()


async def deploy(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> None:
    """POST a deploy to the leader, following it (by hand: a redirect would drop the token) if it moved."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": secrets.token_hex(8)}
    for _ in range(20):
        async with session.post(url + "/api/v1/deploy", json=body, headers=headers, allow_redirects=False) as r:
            if r.status == 200:
                return
            if r.status == 307 and r.headers.get("X-Current-Leader"):
                url = r.headers["X-Current-Leader"].rstrip("/")
                continue
            if r.status != 503:
                raise RuntimeError(f"deploy: HTTP {r.status} {(await r.text())[:300]}")
        await asyncio.sleep(0.5)
    raise RuntimeError("deploy: no leader took it")


async def scenario(cluster: LocalCluster, n_nodes: int, services: int, replicas: int, runs: int,
                   watch_s: float) -> dict[str, Any]:
    leader = cluster.wait_leader(60, all_up=True)
    follower = next(m for m in cluster.masters if m is not leader)
    nodes = [f"sim-{i:04d}" for i in range(n_nodes)]
    tokens = {n: cluster.token("agent", n) for n in nodes}
    admin = cluster.token("admin", "bench")
    agents = FakeAgents(services * replicas)
    for n in nodes:
        agents.push_tokens[n] = secrets.token_urlsafe(16)
    await agents.start()
    timeout = aiohttp.ClientTimeout(total=60)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50), timeout=timeout)
    hb = Heartbeats(session, leader.url, agents, tokens)
    hb_task = asyncio.create_task(hb.run())
    out: dict[str, Any] = {}
    try:
        out["register_s"] = (await register_all(session, leader.url, agents, tokens, nodes, hb))["seconds"]
        t0 = time.monotonic()
        for start in range(0, services, DEPLOY_BATCH):
            body = {"services": [{"name": f"bench-{s:04d}", "image": "orca-test/busybox", "command": ["sleep", "1d"],
                                  "replicas": replicas, "resources": {"memory": "16Mi", "cpu": 0.01},
                                  "project": f"team-{s % 7}"}
                                 for s in range(start, min(services, start + DEPLOY_BATCH))]}
            await deploy(session, leader.url, admin, body)
        while True:
            status = await _get(session, follower.url + "/api/v1/status", admin)
            running = sum(s["running_replicas"] for s in status["services"])
            if running >= services * replicas:
                break
            if time.monotonic() - t0 > PHASE_TIMEOUT_S:
                raise TimeoutError(f"only {running}/{services * replicas} replicas running")
            await asyncio.sleep(1.0)
        out["converged_s"] = round(time.monotonic() - t0, 1)
        times = []
        size = 0
        for _ in range(5):
            t1 = time.monotonic()
            async with session.get(follower.url + "/api/v1/status", headers={"Authorization": f"Bearer {admin}"}) as r:
                size = len(await r.read())
            times.append((time.monotonic() - t1) * 1000)
        out["status_bytes"] = size
        out["status_ms"] = round(statistics.median(times), 1)
        samples = []
        for _ in range(runs):
            samples.append(await asyncio.to_thread(measure_once, follower.url, admin, watch_s))
        out["samples"] = samples
        for key in ("first_paint_ms", "fcp_ms", "longest_task_ms", "filter_ms", "data_start_ms", "status_fetch_ms",
                    "render_after_data_ms"):
            values = [s[key] for s in samples if s[key] is not None]
            out[key] = {"median": round(statistics.median(values), 1), "max": max(values)} if values else None
    finally:
        hb_task.cancel()
        await asyncio.gather(hb_task, return_exceptions=True)
        await session.close()
        await agents.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="cold page loads measured")
    ap.add_argument("--watch", type=float, default=6.0, help="seconds of polling watched for long tasks per load")
    args = ap.parse_args()
    if not 1 <= args.services <= 5000 or not 1 <= args.nodes <= 2000 or not 1 <= args.replicas <= 10 \
            or not 1 <= args.runs <= 20 or not 0 <= args.watch <= 60:
        ap.error("--services 1..5000, --nodes 1..2000, --replicas 1..10, --runs 1..20, --watch 0..60")
    install_sigterm()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orca-bench-console-") as tmp, LocalCluster(Path(tmp) / "c") as cluster:
        cluster.start()
        result = asyncio.run(scenario(cluster, args.nodes, args.services, args.replicas, args.runs, args.watch))
    emit({"bench": "console", "services": args.services, "nodes": args.nodes,
          "replicas": args.services * args.replicas, **result, "box": box_load(load0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
