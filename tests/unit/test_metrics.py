"""orca.metrics and the agent's /metrics (orca.agent.metrics): conventions, scrape-time families, and who
may read an agent's series (the masters' rule, with the verdict asked of a master and cached)."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orca import __version__
from orca.agent.agent import Agent
from orca.agent.api import make_agent_api
from orca.agent.metrics import TokenVerdicts
from orca.agent.runtime import FakeRuntime
from orca.metrics import LiveCollector, MasterMetrics, base_registry, build_commit
from tests.unit.test_agent_api import IMAGE, alloc, bearer, make_config, push


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_process_exposes_build_info_and_process_series() -> None:
    text = generate_latest(base_registry()).decode()
    info = families(text)["orca_build_info"]
    (sample,) = info.samples
    assert sample.name == "orca_build_info" and sample.value == 1
    assert sample.labels == {"version": __version__, "commit": build_commit(), "python": platform.python_version()}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert name in text


def test_build_commit_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    build_commit.cache_clear()
    try:
        monkeypatch.setenv("ORCA_BUILD_COMMIT", "abc123def")
        assert build_commit() == "abc123def"
    finally:
        build_commit.cache_clear()


def test_no_created_series() -> None:
    registry = CollectorRegistry()
    Counter("orca_example", "x", registry=registry).inc()
    m = MasterMetrics()
    m.api_requests.labels("/x", "GET", "200").inc()
    for text in (generate_latest(registry).decode(), m.render().decode()):
        assert "_created" not in text


def test_live_collector_reads_at_scrape_time_and_skips_a_broken_reader() -> None:
    registry = CollectorRegistry()
    live = LiveCollector()
    box = {"n": 1}
    live.counter("orca_things_total", "Things.", lambda: box["n"])
    live.gauge("orca_level", "Level.", lambda: [(("a",), 2), (("b",), 3)], ["kind"])
    live.gauge("orca_broken", "Broken.", lambda: 1 / 0)
    registry.register(live)
    box["n"] = 5
    text = generate_latest(registry).decode()
    assert "orca_things_total 5.0" in text and "# TYPE orca_things_total counter" in text
    assert 'orca_level{kind="a"} 2.0' in text and 'orca_level{kind="b"} 3.0' in text
    assert "orca_broken" not in text
    with pytest.raises(ValueError, match="_total"):
        live.counter("orca_things", "x", lambda: 0)


def test_token_verdicts_expire_and_stay_bounded() -> None:
    now = [0.0]
    v = TokenVerdicts(clock=lambda: now[0], ttl_s=10.0, max_entries=3)
    v.put("t1", 200)
    assert v.get("t1") == 200 and v.get("t2") is None
    now[0] = 10.0
    assert v.get("t1") is None
    for i in range(10):
        v.put(f"x{i}", 403)
    assert len(v._verdicts) == 3 and v.get("x9") == 403 and v.get("x0") is None
    assert all("x" not in k for k in v._verdicts)  # keyed by digest, never the token


@given(st.text(min_size=1, max_size=50))
def test_token_verdict_keys_never_hold_the_token(token: str) -> None:
    assert token not in TokenVerdicts.key(token) or len(token) < 3


class _Link:
    """Stands in for the master link's token check: the verdict a master would give, and a call count."""

    def __init__(self, verdicts: dict[str, int | None]) -> None:
        self.verdicts = verdicts
        self.calls: list[str] = []

    async def bearer_status(self, token: str) -> int | None:
        self.calls.append(token)
        return self.verdicts.get(token)


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(make_config(tmp_path), FakeRuntime("worker-1", images=[IMAGE]))


@pytest.fixture
def guarded(tmp_path: Path) -> Agent:
    config = dataclasses.replace(make_config(tmp_path), metrics_require_token=True)
    return Agent(config, FakeRuntime("worker-1", images=[IMAGE]))


# -- the agent's /metrics --------------------------------------------------------------------------------


async def test_agent_metrics_count_pushes_and_containers(aiohttp_client: Any, agent: Agent) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    assert (await client.put("/v1/allocations", json=push(1, 2, alloc("a1")), headers=bearer(agent))).status == 200
    assert (await client.put("/v1/allocations", json=push(1, 1, alloc("a1")), headers=bearer(agent))).status == 200
    assert (await client.put("/v1/allocations", json=push(1, 1), headers={"Authorization": "Bearer no"})).status == 401
    assert (await client.put("/v1/allocations", json={"term": "x"}, headers=bearer(agent))).status == 400
    await agent.reconciler.reconcile_once()
    await agent.reconciler.wait_idle()
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    fam = families(await resp.text())
    pushes = {s.labels["outcome"]: s.value for s in fam["orca_agent_pushes"].samples}
    assert pushes == {"accepted": 1, "ignored": 1, "refused": 0, "invalid": 1, "unauthorized": 1}
    containers = {s.labels["status"]: s.value for s in fam["orca_agent_containers"].samples}
    assert sum(containers.values()) == 1
    assert fam["orca_agent_engine_up"].samples[0].value == 1
    assert fam["orca_agent_desired_version"].samples[0].value == 2
    assert "orca_proxy_requests" in fam and not fam["orca_proxy_requests"].samples  # no proxy on this node


async def test_agent_metrics_can_require_a_viewer_token(aiohttp_client: Any, guarded: Agent) -> None:
    link = _Link({"viewer-token": 200, "agent-token": 403, "bad": 401, "unchecked": None})
    guarded.link = link  # type: ignore[assignment]
    client = await aiohttp_client(make_agent_api(guarded))
    for headers, status, code in (({}, 401, "UNAUTHORIZED"), ({"Authorization": "Basic x"}, 401, "UNAUTHORIZED"),
                                  ({"Authorization": "Bearer bad"}, 401, "UNAUTHORIZED"),
                                  ({"Authorization": "Bearer agent-token"}, 403, "FORBIDDEN"),
                                  ({"Authorization": "Bearer unchecked"}, 503, "CLUSTER_NOT_READY"),
                                  ({"Authorization": "Bearer " + "x" * 5000}, 401, "UNAUTHORIZED")):
        resp = await client.get("/metrics", headers=headers)
        body = await resp.json()
        assert resp.status == status and body["code"] == code, (headers.get("Authorization", "")[:20], body)
        assert "bad" not in body["error"] and "agent-token" not in body["error"]
    for _ in range(3):
        resp = await client.get("/metrics", headers={"Authorization": "Bearer viewer-token"})
        assert resp.status == 200 and "orca_agent_pushes_total" in await resp.text()
    assert link.calls.count("viewer-token") == 1  # cached
    assert link.calls.count("unchecked") == 1 and "x" * 5000 not in link.calls


async def test_agent_metrics_are_public_by_default(aiohttp_client: Any, agent: Agent) -> None:
    client = await aiohttp_client(make_agent_api(agent))
    assert (await client.get("/metrics")).status == 200
    assert (await client.post("/metrics")).status == 405
