"""Route table and per-service traffic aggregation on the leader (pure pieces)."""

from __future__ import annotations

from typing import Any

from orca.master.traffic import TrafficBook, percentile_from_buckets, route_table
from orca.protocol import LATENCY_BUCKETS_MS


def state_with(allocs: list[dict[str, Any]], **svc_extra: Any) -> dict[str, Any]:
    spec = {"domain": "web.example", "port": 8080, "internal": False, **svc_extra.pop("spec", {})}
    return {
        "services": {"web": {"name": "web", "state": "running", "spec": spec, "canary": svc_extra.get("canary")}},
        "nodes": {"n1": {"id": "n1", "status": "ready", "publish_address": "127.0.0.1"},
                  "n2": {"id": "n2", "status": "down", "publish_address": "127.0.0.2"}},
        "allocations": {a["id"]: a for a in allocs},
    }


def alloc(id_: str, node: str = "n1", status: str = "running", health: str | None = "healthy", port: int = 20001,
          version: int = 1, desired: str = "run") -> dict[str, Any]:
    return {"id": id_, "service": "web", "node": node, "version": version, "desired": desired,
            "observed": {"status": status, "health": health, "host_port": port}}


def test_route_table_has_only_healthy_running_replicas_on_ready_nodes() -> None:
    state = state_with([alloc("a"), alloc("b", health="unhealthy"), alloc("c", node="n2"),
                        alloc("d", status="exited"), alloc("e", desired="stop"), alloc("f", health=None, port=20002),
                        alloc("g", desired="migrate", port=20003)])
    table = route_table(state)
    assert list(table) == ["web.example"]
    assert [e["alloc"] for e in table["web.example"]["endpoints"]] == ["a", "f", "g"]
    assert table["web.example"]["endpoints"][0]["address"] == "127.0.0.1:20001"


def test_internal_stopped_or_portless_services_are_not_routed_and_canaries_are_flagged() -> None:
    assert route_table(state_with([alloc("a")], spec={"internal": True})) == {}
    assert route_table(state_with([alloc("a")], spec={"port": None})) == {}
    state = state_with([alloc("a"), alloc("b", version=2, port=20009)], canary={"version": 2})
    state["services"]["web"]["history"] = [{"version": 1, "spec": {}}, {"version": 2, "spec": {"canary_weight": 0.25}}]
    route = route_table(state)["web.example"]
    assert [e["canary"] for e in route["endpoints"]] == [False, True] and route["canary_weight"] == 0.25


def test_percentile_from_buckets() -> None:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    assert percentile_from_buckets(counts, 0.95) is None
    counts[3] = 95  # <= 10 ms
    counts[6] = 5   # <= 100 ms
    assert percentile_from_buckets(counts, 0.95) == 10.0
    assert percentile_from_buckets(counts, 0.99) == 100.0


def stats(requests: int, errors: int = 0, buckets: list[int] | None = None) -> dict[str, Any]:
    b = buckets or [0] * (len(LATENCY_BUCKETS_MS) + 1)
    return {"requests": requests, "errors": errors, "active": 2, "latency_buckets": b, "latency_sum_ms": 0.0,
            "replicas": {"a": {"requests": requests}}}


def test_samples_are_rates_from_counter_deltas_across_nodes_and_agent_restarts() -> None:
    book = TrafficBook(sample_s=2.0)
    state = state_with([alloc("a")])
    book.record("n1", {"proxy": {"web": stats(100)}, "stats": {"a": {"cpu_pct": 40.0, "mem_pct": 10.0}}})
    book.sample(state, now=100.0)  # first sample: a baseline, no rate yet
    b = [0] * 2 + [40] * (len(LATENCY_BUCKETS_MS) - 1)  # cumulative: 40 requests took <= 5 ms
    book.record("n1", {"proxy": {"web": stats(140, errors=4, buckets=b)}})
    book.record("n2", {"proxy": {"web": stats(60)}})  # a new node: its whole counter is new traffic
    book.sample(state, now=102.0)
    current = book.current("web")
    assert current is not None and current.rps == (40 + 60) / 2.0
    assert current.error_rate == 4 / 100 and current.p95_ms == 5.0 and current.cpu_pct == 40.0
    book.record("n1", {"proxy": {"web": stats(10)}})  # the agent restarted: counters began again
    book.sample(state, now=104.0)
    assert book.current("web").rps == 10 / 2.0
    assert book.requests_total["web"] == 100 + 100 + 10  # counted from each agent's start
    assert len(book.history("web", 10)) == 2


def test_series_exist_only_for_services_in_the_state() -> None:
    """/metrics cardinality: bounded by the services in the state, whatever names heartbeats carry."""
    from prometheus_client import CollectorRegistry, generate_latest

    from orca.master.traffic import TrafficCollector

    book = TrafficBook(sample_s=2.0)
    state = state_with([alloc("a")])
    for now, n in ((100.0, 10), (102.0, 20)):
        book.record("n1", {"proxy": {"web": stats(n), **{f"ghost-{i}": stats(n) for i in range(50)}}})
        book.sample(state, now=now)
    registry = CollectorRegistry()
    registry.register(TrafficCollector(book))
    text = generate_latest(registry).decode()
    assert 'service="web"' in text and "ghost" not in text
    del state["services"]["web"]  # purged: its series go too
    book.sample(state, now=104.0)
    assert 'service="web"' not in generate_latest(registry).decode()
    assert not (book.requests_total or book.buckets_total or book.latency_sum_ms or book.samples)
