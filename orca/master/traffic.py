"""Traffic on the leader: the ingress route table it pushes, and the per-service metrics it aggregates.

Route table: every agent gets the whole table (its proxy forwards to replicas on any node). Only healthy
replicas of services that have a `domain`, are running and are not `internal` are endpoints; canary
replicas are flagged so the proxies give them their `canary_weight`.

Metrics: heartbeats carry cumulative proxy counters per service (and per replica) and container cpu/mem.
The leader keeps, in memory only (metrics are observations, not decisions: they are not worth a Raft
entry, and a new leader rebuilds them within a window), the last report per node, and every
`sample_s` turns the deltas into one sample per service: requests/s, error rate, p95 latency from the
histogram deltas, active connections, cpu % and memory %. Samples are kept for `keep_s`.

Memory follows traffic, not the number of services: a service with nothing to report (no request, no
open connection, no container stats) gives "quiet" samples that differ only in their time and replica
count, and a run of them is kept as one record (`SampleRing`). At 10,000 mostly idle services an hour of
samples every 2 s was 18 million objects; it is now one record per service and per change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from orca.protocol import (
    LATENCY_BUCKETS_MS,
    ProtocolError,
    validate_container_stats,
    validate_proxy_stats,
)

__all__ = ["route_table", "TrafficBook", "TrafficCollector", "ServiceSample", "SampleRing", "percentile_from_buckets"]


def route_table(state: dict[str, Any]) -> dict[str, Any]:
    nodes = state["nodes"]
    table: dict[str, Any] = {}
    for name, svc in sorted(state["services"].items()):
        spec = svc["spec"]
        domain = spec.get("domain")
        if not domain or spec.get("internal") or svc["state"] != "running" or not spec.get("port"):
            continue
        canary_version = (svc.get("canary") or {}).get("version")
        endpoints = []
        for alloc in sorted(state["allocations"].values(), key=lambda a: a["id"]):
            observed = alloc.get("observed") or {}
            node = nodes.get(alloc["node"]) or {}
            if (alloc["service"] != name or alloc["desired"] not in ("run", "migrate") or node.get("status") != "ready"
                    or observed.get("status") != "running" or observed.get("health") not in (None, "healthy")
                    or not observed.get("host_port")):
                continue
            endpoints.append({"alloc": alloc["id"], "address": f"{node.get('publish_address', '127.0.0.1')}:"
                              f"{observed['host_port']}", "canary": alloc["version"] == canary_version})
        # The canary's weight is in the canary version's spec (the service's `spec` is the stable one).
        canary_spec = next((h["spec"] for h in svc.get("history", ()) if h["version"] == canary_version), None) \
            if canary_version is not None else None
        weight = (canary_spec or {}).get("canary_weight", spec.get("canary_weight"))
        table[domain] = {"service": name, "strategy": None, "canary_weight": weight, "endpoints": endpoints}
    return table


def running_replicas(state: dict[str, Any]) -> dict[str, int]:
    """service -> its live allocations (desired run or migrate) that report running, in one scan.

    Counted per service inside the loop over services, this was services x allocations (3 x 10^8 steps at
    10,000 services) under the state lock every sample: seconds in which no entry could apply.
    """
    out: dict[str, int] = {}
    for a in state["allocations"].values():
        if a["desired"] in ("run", "migrate") and (a.get("observed") or {}).get("status") == "running":
            out[a["service"]] = out.get(a["service"], 0) + 1
    return out


def percentile_from_buckets(counts: list[int], q: float) -> float | None:
    """The q-quantile (0..1) in ms from per-bucket (non-cumulative) counts; the bucket's upper bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return float(LATENCY_BUCKETS_MS[i]) if i < len(LATENCY_BUCKETS_MS) else float(LATENCY_BUCKETS_MS[-1]) * 2
    return float(LATENCY_BUCKETS_MS[-1]) * 2


@dataclass(frozen=True)
class ServiceSample:
    at: float
    replicas: int
    rps: float
    error_rate: float
    p95_ms: float | None
    active: int
    cpu_pct: float | None
    mem_pct: float | None
    replica_rps: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "replicas": self.replicas, "rps": round(self.rps, 3),
                "error_rate": round(self.error_rate, 4), "p95_ms": self.p95_ms, "active": self.active,
                "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 2),
                "mem_pct": None if self.mem_pct is None else round(self.mem_pct, 2),
                "replicas_rps": {k: round(v, 3) for k, v in self.replica_rps.items()}}


def _is_quiet(sample: ServiceSample) -> bool:
    """Nothing observed but the time and the replica count: the only kind of sample a run can stand for."""
    return (sample.rps == 0 and sample.error_rate == 0 and sample.p95_ms is None and sample.active == 0
            and sample.cpu_pct is None and sample.mem_pct is None and not sample.replica_rps)


@dataclass(slots=True)
class _QuietRun:
    """`count` consecutive quiet samples with the same replica count, from `first_at` to `last_at`."""

    first_at: float
    last_at: float
    count: int
    replicas: int

    def at(self, i: int) -> float:
        """The time of the run's i-th sample: evenly spaced between the first and the last (the sampling
        period, give or take the loop's jitter, which a run does not keep)."""
        if self.count <= 1:
            return self.last_at
        return self.first_at + (self.last_at - self.first_at) * i / (self.count - 1)

    def sample(self, i: int) -> ServiceSample:
        return ServiceSample(at=self.at(i), replicas=self.replicas, rps=0.0, error_rate=0.0, p95_ms=None, active=0,
                             cpu_pct=None, mem_pct=None)


class SampleRing:
    """The last `maxlen` samples of one service, with runs of quiet samples kept as one record each.

    Reads give the same samples a plain `deque(maxlen=...)` of ServiceSample would, except that the times of
    a quiet run are spread evenly between its first and last sample.
    """

    __slots__ = ("maxlen", "_items", "_len")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = max(1, maxlen)
        # A list, not a deque: a deque takes a 64-slot block (~600 bytes) however few it holds, and nearly
        # every ring holds one or two records. Dropping from the front is a memmove of at most `maxlen`.
        self._items: list[ServiceSample | _QuietRun] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def records(self) -> int:
        """How many objects hold the samples (what the memory goes with)."""
        return len(self._items)

    def append(self, sample: ServiceSample) -> None:
        if _is_quiet(sample):
            self.append_quiet(sample.at, sample.replicas)
            return
        self._items.append(sample)
        self._grown()

    def append_quiet(self, at: float, replicas: int) -> None:
        """`append` of a quiet sample, without making it."""
        last = self._items[-1] if self._items else None
        if isinstance(last, _QuietRun) and last.replicas == replicas:
            last.last_at = at
            last.count += 1
        else:
            self._items.append(_QuietRun(at, at, 1, replicas))
        self._grown()

    def _grown(self) -> None:
        self._len += 1
        while self._len > self.maxlen:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        first = self._items[0]
        self._len -= 1
        if isinstance(first, _QuietRun) and first.count > 1:
            first.first_at = first.at(1)
            first.count -= 1
        else:
            del self._items[0]

    def last(self) -> ServiceSample | None:
        if not self._items:
            return None
        item = self._items[-1]
        return item.sample(item.count - 1) if isinstance(item, _QuietRun) else item

    def tail(self, n: int) -> list[ServiceSample]:
        """The last `n` samples, oldest first; only the records that hold them are expanded."""
        out: list[ServiceSample] = []
        for item in reversed(self._items):
            if len(out) >= n:
                break
            if isinstance(item, _QuietRun):
                for i in range(item.count - 1, -1, -1):
                    if len(out) >= n:
                        break
                    out.append(item.sample(i))
            else:
                out.append(item)
        out.reverse()
        return out


class TrafficBook:
    """Latest per-node cumulative proxy counters and container stats, turned into samples per service."""

    def __init__(self, sample_s: float = 2.0, keep_s: float = 3600.0) -> None:
        self.sample_s = sample_s
        self.keep = int(keep_s / sample_s)
        self.proxy: dict[str, dict[str, Any]] = {}      # node -> service -> ProxyStats (cumulative)
        self.stats: dict[str, dict[str, Any]] = {}      # node -> alloc -> {"cpu_pct", "mem_pct"}
        self._previous: dict[str, dict[str, Any]] = {}  # node -> service -> ProxyStats at the last sample
        self.samples: dict[str, SampleRing] = {}
        self.requests_total: dict[str, int] = {}        # service -> requests seen by this leader (for Prometheus)
        self.buckets_total: dict[str, list[int]] = {}
        self.latency_sum_ms: dict[str, float] = {}
        self.errors_total: dict[str, int] = {}          # service -> 5xx answers among them
        self.last_sample_at = 0.0
        self.rejected: dict[str, str] = {}             # node -> why its last maps were refused
        self._running_at: tuple[int | None, dict[str, int]] | None = None  # (layout generation, running_replicas)

    def clear(self) -> None:
        self.proxy.clear()
        self.stats.clear()
        self._previous.clear()
        self._running_at = None

    def record(self, node_id: str, heartbeat: dict[str, Any]) -> None:
        """Keep a node's latest counters, re-validated here (orca.protocol) whatever path they came by:
        a node whose maps are malformed loses its own samples, never anyone else's."""
        try:
            proxy = validate_proxy_stats(heartbeat.get("proxy"))
            stats = validate_container_stats(heartbeat.get("stats"))
        except ProtocolError as err:
            self.proxy.pop(node_id, None)
            self.stats.pop(node_id, None)
            self.rejected[node_id] = str(err)
            return
        self.rejected.pop(node_id, None)
        if proxy:
            self.proxy[node_id] = proxy
        if stats:
            self.stats[node_id] = stats

    def sample(self, state: dict[str, Any], now: float | None = None, generation: int | None = None) -> None:
        """Turn counter deltas since the last call into one sample per running service.

        Runs under the state lock every `sample_s`: at 10,000 services the cost is what a quiet service
        costs. `generation` (orca.raft.ReplicatedState.layout_generation) lets the running-replica counts,
        one scan of every allocation, be reused while the allocations have not changed.
        """
        now = time.time() if now is None else now
        elapsed = now - self.last_sample_at if self.last_sample_at else 0.0
        self.last_sample_at = now
        nb = len(LATENCY_BUCKETS_MS) + 1
        per_service: dict[str, dict[str, Any]] = {}
        for node_id, services in list(self.proxy.items()):
            try:
                contribution = _node_contribution(services, self._previous.get(node_id, {}), nb)
            except Exception as exc:  # noqa: BLE001 - one node's bad counters must not stop everyone's samples
                self.proxy.pop(node_id, None)
                self.rejected[node_id] = f"unreadable counters: {type(exc).__name__}"
                continue
            for name, part in contribution.items():
                agg = per_service.setdefault(name, {"req": 0, "err": 0, "active": 0, "buckets": [0] * nb,
                                                    "sum": 0.0, "replicas": {}})
                for k in ("req", "err", "active", "sum"):
                    agg[k] += part[k]
                agg["buckets"] = [a + b for a, b in zip(agg["buckets"], part["buckets"], strict=True)]
                for alloc_id, n in part["replicas"].items():
                    agg["replicas"][alloc_id] = agg["replicas"].get(alloc_id, 0) + n
        self._previous = {node: {svc: dict(s) for svc, s in services.items()} for node, services in self.proxy.items()}
        alloc_service = {a["id"]: a["service"] for a in state["allocations"].values()} if self.stats else {}
        usage: dict[str, list[tuple[float, float]]] = {}
        for node_id, node_stats in list(self.stats.items()):
            try:
                mine = [(alloc_service[a], float(st["cpu_pct"]), float(st.get("mem_pct") or 0.0))
                        for a, st in node_stats.items() if a in alloc_service and st.get("cpu_pct") is not None]
            except Exception as exc:  # noqa: BLE001 - as above: isolate the node
                self.stats.pop(node_id, None)
                self.rejected[node_id] = f"unreadable stats: {type(exc).__name__}"
                continue
            for name, cpu, mem in mine:
                usage.setdefault(name, []).append((cpu, mem))
        if generation is None or self._running_at is None or self._running_at[0] != generation:
            self._running_at = (generation, running_replicas(state))
        running_of = self._running_at[1]
        for name, svc in state["services"].items():
            if svc["state"] != "running":
                continue
            agg = per_service.get(name)
            running = running_of.get(name, 0)
            use = usage.get(name) or []
            if agg is None and not use:  # quiet: the common case at 10,000 services, kept cheap
                if elapsed > 0:
                    ring = self.samples.get(name)
                    if ring is None:
                        ring = self.samples[name] = SampleRing(self.keep)
                    ring.append_quiet(now, running)
                continue
            def rate(n: float) -> float:
                return n / elapsed if elapsed > 0 else 0.0
            sample = ServiceSample(
                at=now, replicas=running, rps=rate(agg["req"]) if agg else 0.0,
                error_rate=(agg["err"] / agg["req"]) if agg and agg["req"] else 0.0,
                p95_ms=percentile_from_buckets(agg["buckets"], 0.95) if agg else None,
                active=agg["active"] if agg else 0,
                cpu_pct=sum(u[0] for u in use) / len(use) if use else None,
                mem_pct=sum(u[1] for u in use) / len(use) if use else None,
                replica_rps={k: rate(v) for k, v in (agg or {}).get("replicas", {}).items()})
            if elapsed > 0:
                ring = self.samples.get(name)
                if ring is None:
                    ring = self.samples[name] = SampleRing(self.keep)
                ring.append(sample)
            if agg:
                self.requests_total[name] = self.requests_total.get(name, 0) + agg["req"]
                self.errors_total[name] = self.errors_total.get(name, 0) + agg["err"]
                totals = self.buckets_total.setdefault(name, [0] * nb)
                for i, n in enumerate(agg["buckets"]):
                    totals[i] += n
                self.latency_sum_ms[name] = self.latency_sum_ms.get(name, 0.0) + agg["sum"]
        # Per-service series exist only for services in the state: a purged service's series go with it,
        # so /metrics holds at most (services x series per service), never a name from a heartbeat.
        for table in (self.samples, self.requests_total, self.errors_total, self.buckets_total, self.latency_sum_ms):
            for name in [n for n in table if n not in state["services"]]:
                del table[name]

    def history(self, name: str, n: int) -> list[ServiceSample]:
        ring = self.samples.get(name)
        return ring.tail(n) if ring is not None and n > 0 else []

    def current(self, name: str) -> ServiceSample | None:
        ring = self.samples.get(name)
        return ring.last() if ring is not None else None


def _node_contribution(services: dict[str, Any], before: dict[str, Any], nb: int) -> dict[str, dict[str, Any]]:
    """One node's counter deltas since the last sample, per service (raises on malformed counters)."""
    out: dict[str, dict[str, Any]] = {}
    for name, stats in services.items():
        agg = out[name] = {"req": 0, "err": 0, "active": 0, "buckets": [0] * nb, "sum": 0.0, "replicas": {}}
        prev = before.get(name) or {}
        d_req = max(0, int(stats.get("requests", 0)) - int(prev.get("requests", 0)))
        if d_req == 0 and int(stats.get("requests", 0)) < int(prev.get("requests", 0)):
            d_req = int(stats.get("requests", 0))  # the agent restarted: counters began again
        agg["req"] += d_req
        agg["err"] += max(0, int(stats.get("errors", 0)) - int(prev.get("errors", 0)))
        agg["active"] += int(stats.get("active", 0))
        agg["sum"] += max(0.0, float(stats.get("latency_sum_ms", 0.0)) - float(prev.get("latency_sum_ms", 0.0)))
        # Buckets arrive cumulative (Prometheus style, protocol.ProxyStats): the per-bucket delta
        # is the difference of consecutive cumulative deltas.
        now_b, prev_b = list(stats.get("latency_buckets") or []), list(prev.get("latency_buckets") or [])
        below = 0
        for i in range(min(nb, len(now_b))):
            upto = max(0, int(now_b[i]) - (int(prev_b[i]) if i < len(prev_b) else 0))
            agg["buckets"][i] += max(0, upto - below)
            below = upto
        for alloc_id, rep in (stats.get("replicas") or {}).items():
            prev_rep = (prev.get("replicas") or {}).get(alloc_id) or {}
            agg["replicas"][alloc_id] = agg["replicas"].get(alloc_id, 0) + max(
                0, int(rep.get("requests", 0)) - int(prev_rep.get("requests", 0)))
    return out


class TrafficCollector:
    """Prometheus view of the leader's per-service traffic (empty on followers: they aggregate nothing)."""

    def __init__(self, book: TrafficBook) -> None:
        self.book = book

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily("orca_service_requests", "Requests the ingress proxies forwarded to a "
                                       "service (as reported to this leader).", labels=["service"])
        errors = CounterMetricFamily("orca_service_request_errors", "Of those, the requests answered 5xx or not "
                                     "at all.", labels=["service"])
        latency = HistogramMetricFamily("orca_service_request_duration_seconds", "Proxied request latency.",
                                        labels=["service"])
        cpu = GaugeMetricFamily("orca_service_cpu_usage_ratio", "Mean CPU use of a service's running replicas, "
                                "as a fraction of one CPU (1 = one full CPU).", labels=["service"])
        mem = GaugeMetricFamily("orca_service_memory_usage_ratio", "Mean memory use of a service's running "
                                "replicas, as a fraction of their limit (0..1).", labels=["service"])
        # No requests-per-second gauge: rate(orca_service_requests_total[1m]) is the Prometheus way, and the
        # autoscaler and console keep computing their own rate from the samples (ServiceSample.rps).
        for name, total in sorted(self.book.requests_total.items()):
            requests.add_metric([name], total)
            errors.add_metric([name], self.book.errors_total.get(name, 0))
            counts = self.book.buckets_total.get(name) or []
            cumulative, buckets = 0, []
            for bound, n in zip([*LATENCY_BUCKETS_MS, float("inf")], counts, strict=False):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound / 1000.0), cumulative))
            latency.add_metric([name], buckets, self.book.latency_sum_ms.get(name, 0.0) / 1000.0)
        for name in sorted(self.book.samples):
            current = self.book.current(name)
            if current is None:
                continue
            if current.cpu_pct is not None:
                cpu.add_metric([name], current.cpu_pct / 100.0)
            if current.mem_pct is not None:
                mem.add_metric([name], current.mem_pct / 100.0)
        yield from (requests, errors, latency, cpu, mem)
