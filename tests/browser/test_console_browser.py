"""The web console in a real browser against a real cluster (3 masters, 2 agents, Docker).

In file order, on one cluster: sign in and watch a deploy converge without reloading; scale from the
console and see the containers change on the engine; logs follow; a viewer sees no action controls and
a forged action is refused (403); kill the leader (even the master the console was loaded from) and
keep working. Screenshots of the overview and a service page land in test-artifacts/console/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from console_helpers import Stack, shot, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.docker]

HTTPD = ["sh", "-c", "mkdir -p /www && echo hello from $HOSTNAME > /www/index.html && exec httpd -f -vv -p 8080 "
         "-h /www"]
RES = {"memory": "16Mi", "cpu": 0.05}
UI_TIMEOUT = 60


def by_testid(driver: Any, testid: str) -> list[Any]:
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def text_of(driver: Any, testid: str) -> str:
    found = by_testid(driver, testid)
    return found[0].text if found else ""


def open_console(driver: Any, base: str, token: str | None, route: str = "#/") -> None:
    driver.get(f"{base}/ui/" + (f"#token={token}" if token else route))
    if token and route != "#/":
        wait_for(lambda: by_testid(driver, "overview"), UI_TIMEOUT, "the overview")
        driver.execute_script("location.hash = arguments[0]", route)


def fetch_from_page(driver: Any, method: str, url: str, token: str, body: Any) -> dict[str, Any]:
    """A request made by page script, as a forged console action would be."""
    return driver.execute_async_script("""
        const [method, url, token, body, done] = arguments;
        fetch(url, {method, headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
                    body: JSON.stringify(body), redirect: 'follow'})
          .then(async r => done({status: r.status, body: await r.json()}))
          .catch(e => done({status: 0, body: String(e)}));
    """, method, url, token, body)


def test_sign_in_then_watch_a_deploy_converge(stack: Stack, browser: Any) -> None:
    base = stack.cluster.masters[0].url
    open_console(browser, base, None)
    wait_for(lambda: by_testid(browser, "signin"), UI_TIMEOUT, "the sign-in form")
    by_testid(browser, "token-input")[0].send_keys("not-a-token")
    by_testid(browser, "signin-button")[0].click()
    wait_for(lambda: "refused" in text_of(browser, "signin-error"), UI_TIMEOUT, "a bad token refused")
    by_testid(browser, "token-input")[0].send_keys(stack.cluster.token("admin", "alice"))
    by_testid(browser, "signin-button")[0].click()
    wait_for(lambda: by_testid(browser, "overview"), UI_TIMEOUT, "the overview after sign-in")
    assert "alice" in text_of(browser, "who") and "admin" in text_of(browser, "who")
    # the token stays in this tab's sessionStorage only, and the address bar never shows it
    assert browser.execute_script("return Object.keys(localStorage).length") == 0
    assert "token" not in browser.current_url
    wait_for(lambda: text_of(browser, "stat-nodes") == "2/2", UI_TIMEOUT, "both nodes ready on the overview")
    browser.execute_script("window.__notReloaded = true")

    stack.client.deploy([
        {"name": "web", "image": "orca-test/busybox", "command": HTTPD, "port": 8080, "health": "/",
         "replicas": 2, "resources": RES},
        {"name": "api", "image": "orca-test/busybox", "command": HTTPD, "port": 8080, "health": "/",
         "replicas": 1, "resources": RES, "project": "shop"},
        {"name": "reports", "image": "orca-test/busybox", "command": HTTPD, "replicas": 1,
         "resources": {"memory": "100Ti", "cpu": 0.05}, "project": "shop"},
    ])
    wait_for(lambda: text_of(browser, "replicas-web") == "2/2" and text_of(browser, "healthy-web") == "2",
             120, "web converged to 2/2 healthy on the overview")
    wait_for(lambda: text_of(browser, "healthy-api") == "1", 120, "api healthy on the overview")
    # a replica that fits nowhere: the reason is shown in words, as the scheduler gives it
    reason = wait_for(lambda: text_of(browser, "reason-reports"), UI_TIMEOUT, "the pending reason of reports")
    assert "100 TiB" in reason and " " in reason, reason
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"
    events = [e.text for e in by_testid(browser, "event")]
    assert any("service deployed" in e for e in events), events
    # the masters' cards: one leader, every master healthy
    wait_for(lambda: "leader" in text_of(browser, "masters") and text_of(browser, "masters").count("healthy") == 3,
             UI_TIMEOUT, "three healthy masters, one leader")
    # a new version rolls out; the overview follows it to the end, still without a reload
    web_v2 = {"name": "web", "image": "orca-test/busybox", "command": HTTPD, "port": 8080, "health": "/",
              "replicas": 2, "resources": RES, "env": {"RELEASE": "2"}}
    stack.client.deploy([web_v2])
    wait_for(lambda: text_of(browser, "version-web") == "v2", UI_TIMEOUT, "web v2 on the overview")
    wait_for(lambda: text_of(browser, "rollout-web") == "done" and text_of(browser, "healthy-web") == "2", 120,
             "the v2 rollout done, 2 healthy")
    wait_for(lambda: len(stack.containers("web")) == 2, 120, "the v1 containers gone")
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"
    first_paint = browser.execute_script("return window.__orcaFirstPaint")
    assert isinstance(first_paint, int | float)
    browser.set_window_size(1440, 1400)  # the whole overview, nodes included
    wait_for(lambda: by_testid(browser, "nodes-table"), UI_TIMEOUT, "the nodes table")
    shot(browser, "overview")


def test_scale_from_the_console_changes_the_containers(stack: Stack, browser: Any) -> None:
    open_console(browser, stack.cluster.masters[1].url, stack.cluster.token("deployer", "dora"), "#/services/web")
    wait_for(lambda: text_of(browser, "svc-replicas") == "2/2 running", UI_TIMEOUT, "the web service page")
    assert len(stack.containers("web")) == 2
    field = by_testid(browser, "scale-input")[0]
    field.clear()
    field.send_keys("3")
    by_testid(browser, "scale")[0].click()
    wait_for(lambda: len(stack.containers("web")) == 3, 120, "a third web container on the engine")
    wait_for(lambda: text_of(browser, "svc-replicas") == "3/3 running", 120, "3/3 running on the service page")
    wait_for(lambda: len(by_testid(browser, "replica")) == 3, UI_TIMEOUT, "three replica rows")

    # scaling down asks first; cancelling changes nothing, confirming stops one container
    field = by_testid(browser, "scale-input")[0]
    field.clear()
    field.send_keys("2")
    by_testid(browser, "scale")[0].click()
    wait_for(lambda: by_testid(browser, "scale-dialog")[0].is_displayed(), UI_TIMEOUT, "the confirmation dialog")
    by_testid(browser, "scale-confirm")[0].click()
    wait_for(lambda: len(stack.containers("web")) == 2, 120, "back to two web containers on the engine")
    wait_for(lambda: text_of(browser, "svc-replicas") == "2/2 running", 120, "2/2 running on the service page")
    wait_for(lambda: browser.execute_script(
        "return document.querySelectorAll('[data-testid=chart-cpu] canvas').length") > 0, UI_TIMEOUT, "the charts")
    wait_for(lambda: "[web." in text_of(browser, "logs"), UI_TIMEOUT, "log lines of web")
    shot(browser, "service-web")

    # rollback asks first, then runs v1's spec again as v3; the version history says what changed
    by_testid(browser, "rollback")[0].click()
    wait_for(lambda: by_testid(browser, "rollback-dialog")[0].is_displayed(), UI_TIMEOUT, "the confirmation dialog")
    by_testid(browser, "rollback-confirm")[0].click()
    wait_for(lambda: "spec of v1" in text_of(browser, "action-done"), UI_TIMEOUT, "the rollback acknowledged")
    assert stack.client.service("web")["version"] == 3
    wait_for(lambda: "v3current" in text_of(browser, "versions-card").replace(" ", "").replace("\n", ""),
             UI_TIMEOUT, "v3 current in the version history")
    assert "env" in text_of(browser, "versions-card")
    wait_for(lambda: text_of(browser, "svc-replicas") == "2/2 running" and len(stack.containers("web")) == 2
             and stack.client.service("web")["replicas"]["healthy"] == 2, 120, "web settled on v3")


def test_logs_follow(stack: Stack, browser: Any) -> None:
    open_console(browser, stack.cluster.masters[2].url, stack.cluster.token("viewer", "vic"), "#/services/web")
    wait_for(lambda: "[web." in text_of(browser, "logs"), UI_TIMEOUT, "the first log lines")
    marker = f"follow-{uuid.uuid4().hex[:8]}"
    port = next(c["host_port"] for c in stack.client.service("web")["containers"] if c["host_port"])
    with pytest.raises(urllib.error.HTTPError) as not_found:  # any request is logged; this one is a 404
        urllib.request.urlopen(f"http://127.0.0.1:{port}/{marker}", timeout=5)
    assert not_found.value.code == 404
    wait_for(lambda: marker in text_of(browser, "logs"), UI_TIMEOUT, "the new request's log line, without reloading")


def test_a_viewer_sees_no_actions_and_a_forged_action_is_refused(stack: Stack, browser: Any) -> None:
    base = stack.cluster.masters[0].url
    viewer = stack.cluster.token("viewer", "vera")
    # the link `orca ui --print` gives signs in, even pasted into a tab already on the sign-in page
    done = subprocess.run([sys.executable, "-m", "orca", "--api", base, "ui", "--print"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "ORCA_TOKEN": viewer})
    assert done.returncode == 0, done.stderr
    browser.get(f"{base}/ui/")
    wait_for(lambda: by_testid(browser, "signin"), UI_TIMEOUT, "the sign-in form")
    browser.get(done.stdout.strip())
    wait_for(lambda: by_testid(browser, "overview"), UI_TIMEOUT, "the overview, signed in by the link")
    assert "vera" in text_of(browser, "who") and "token" not in browser.current_url
    browser.execute_script("location.hash = arguments[0]", "#/services/web")
    wait_for(lambda: text_of(browser, "svc-replicas") == "2/2 running", UI_TIMEOUT, "the web service page")
    assert by_testid(browser, "viewer-note") and not by_testid(browser, "actions")
    assert browser.execute_script("return document.querySelectorAll('[data-action]').length") == 0
    browser.execute_script("location.hash = arguments[0]", f"#/nodes/{stack.nodes[0]}")
    wait_for(lambda: by_testid(browser, "node-page"), UI_TIMEOUT, "the node page")
    assert browser.execute_script("return document.querySelectorAll('[data-action]').length") == 0

    leader = stack.cluster.wait_leader(timeout=30).url
    forged = fetch_from_page(browser, "POST", f"{leader}/api/v1/services/web/scale", viewer, {"replicas": 5})
    assert forged["status"] == 403, forged
    assert forged["body"]["code"] == "FORBIDDEN"
    drained = fetch_from_page(browser, "POST", f"{leader}/api/v1/cluster/nodes/{stack.nodes[0]}/drain", viewer, {})
    assert drained["status"] == 403, drained
    assert stack.client.service("web")["replicas"]["desired"] == 2
    assert stack.client.node(stack.nodes[0])["eligibility"] == "eligible"


def test_drain_and_undrain_a_node_from_its_page(stack: Stack, browser: Any) -> None:
    node = stack.nodes[1]
    open_console(browser, stack.cluster.masters[0].url, stack.cluster.token("admin", "ada"), f"#/nodes/{node}")
    wait_for(lambda: by_testid(browser, "drain"), UI_TIMEOUT, "the drain button")
    by_testid(browser, "drain")[0].click()
    wait_for(lambda: by_testid(browser, "drain-dialog")[0].is_displayed(), UI_TIMEOUT, "the confirmation dialog")
    by_testid(browser, "drain-confirm")[0].click()
    wait_for(lambda: stack.client.node(node)["drain"] is not None, UI_TIMEOUT, "the drain committed")
    wait_for(lambda: by_testid(browser, "drain-card") and by_testid(browser, "undrain"), UI_TIMEOUT,
             "drain progress and the undrain button on the page")
    wait_for(lambda: not [c for c in stack.containers("web") if c.labels.get("orca.node") == node], 120,
             "web's replicas moved off the drained node")
    shot(browser, "node-drained")
    by_testid(browser, "undrain")[0].click()
    wait_for(lambda: stack.client.node(node)["eligibility"] == "eligible", UI_TIMEOUT, "the node eligible again")
    wait_for(lambda: by_testid(browser, "drain"), UI_TIMEOUT, "the drain button back")
    wait_for(lambda: len(stack.containers("web")) == 2 and stack.client.service("web")["replicas"]["healthy"] == 2,
             120, "web settled on two healthy replicas")


def test_kill_the_leader_and_keep_working(stack: Stack, browser: Any) -> None:
    leader = stack.cluster.wait_leader(timeout=30, all_up=True)
    # load the console from the leader itself: when it dies, the page's own origin is gone too
    open_console(browser, leader.url, stack.cluster.token("admin", "ops"), "#/services/web")
    wait_for(lambda: text_of(browser, "svc-replicas") == "2/2 running", UI_TIMEOUT, "the web service page")
    wait_for(lambda: text_of(browser, "leader") == leader.node_id, UI_TIMEOUT, "the leader in the top bar")
    browser.execute_script("window.__notReloaded = true")

    stack.cluster.kill(leader)
    new = stack.cluster.wait_leader(timeout=60, exclude=leader.node_id)
    wait_for(lambda: leader.node_id in text_of(browser, "banner") or new.node_id in text_of(browser, "banner"),
             UI_TIMEOUT, "a banner about the failover")
    wait_for(lambda: text_of(browser, "connected-to") != f"via {leader.node_id}", UI_TIMEOUT,
             "the console reading from another master")
    field = by_testid(browser, "scale-input")[0]
    field.clear()
    field.send_keys("3")
    by_testid(browser, "scale")[0].click()
    wait_for(lambda: len(stack.containers("web")) == 3, 120, "the scale after the failover reached the engine")
    wait_for(lambda: text_of(browser, "svc-replicas") == "3/3 running", 120, "3/3 running after the failover")
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"
    shot(browser, "after-failover")
    print(json.dumps({"old_leader": leader.node_id, "new_leader": new.node_id}))
