"""The agent's Prometheus series (`GET /metrics` on the agent API port) and who may read them.

What an agent knows that no master does: its containers as the engine runs them, the pushes it accepted
or refused, its health checks, its heartbeats and its ingress proxy's traffic. Everything is read at
scrape time from the objects that keep it (the reconciler, the health monitor, the master link, the
proxy's `stats()`, the same interface the heartbeat uses), so the agent keeps no second copy of it.

Access follows the masters' rule (`security.metrics_require_token` there, `agent.metrics_require_token`
here): public by default; when required, a bearer token of role viewer or above. An agent holds no token
key, so it asks a master (`GET /api/v1/cluster/info`, a viewer read) whether the token is good and keeps
the answer for `VERDICT_TTL_S`, keyed by the token's SHA-256 (never the token), at most
`MAX_VERDICTS` entries; verifications run one at a time, so a flood of made-up tokens costs the masters
one request at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest
from prometheus_client.core import HistogramMetricFamily

from orca.metrics import LiveCollector, base_registry
from orca.protocol import LATENCY_BUCKETS_MS

if TYPE_CHECKING:
    from orca.agent.agent import Agent

__all__ = ["AgentMetrics", "TokenVerdicts", "VERDICT_TTL_S", "MAX_VERDICTS"]

VERDICT_TTL_S = 30.0
MAX_VERDICTS = 256
PUSH_OUTCOMES = ("accepted", "ignored", "refused", "invalid", "unauthorized")


class _ProxyLatency:
    """The proxy's per-service latency histogram (cumulative buckets in ms, as ProxyStats carries them)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def describe(self) -> list[Any]:
        return [HistogramMetricFamily("orca_proxy_request_duration_seconds", "Ingress proxy request latency "
                                      "on this node (to the last response byte).", labels=["service"])]

    def collect(self) -> Any:
        family = self.describe()[0]
        for name, stats in sorted(_proxy_stats(self.agent).items()):
            cumulative = list(stats.get("latency_buckets") or [])
            bounds = [str(b / 1000.0) for b in LATENCY_BUCKETS_MS] + ["+Inf"]
            if len(cumulative) != len(bounds):
                continue
            family.add_metric([name], list(zip(bounds, cumulative, strict=True)),
                              float(stats.get("latency_sum_ms", 0.0)) / 1000.0)
        yield family


def _proxy_stats(agent: Agent) -> dict[str, dict[str, Any]]:
    proxy = agent.proxy
    return proxy.stats(max_replicas=0) if proxy is not None else {}


class AgentMetrics:
    """The agent's registry. `push(outcome)` is counted by the agent API; the rest is read at scrape."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.pushes: dict[str, int] = dict.fromkeys(PUSH_OUTCOMES, 0)
        self.registry = base_registry()
        live = LiveCollector()
        rec = agent.reconciler

        def containers() -> list[tuple[tuple[str], int]]:
            counts: dict[str, int] = {"running": 0}
            for st in list(rec.states.values()):
                counts[st.status] = counts.get(st.status, 0) + 1
            return [((k,), v) for k, v in sorted(counts.items())]

        def health() -> list[tuple[tuple[str], int]]:
            counts = {"starting": 0, "healthy": 0, "unhealthy": 0}
            for st in list(rec.states.values()):
                if st.has_health and st.status == "running" and st.health in counts:
                    counts[st.health] += 1
            return [((k,), v) for k, v in counts.items()]

        live.gauge("orca_agent_containers", "Replicas this agent manages, by status (pending, running, "
                   "failed, ...).", containers, ["status"])
        live.gauge("orca_agent_replicas_health", "Running replicas with a health check, by health.", health,
                   ["health"])
        live.counter("orca_agent_container_restarts_total", "Containers this agent restarted (exits under the "
                     "restart policy and failed health checks).", lambda: rec.restarts_total)
        live.gauge("orca_agent_engine_up", "1 when the container engine answered the last reconcile pass.",
                   lambda: 0 if rec.engine_error else 1)
        live.counter("orca_agent_pushes_total", "Desired-state pushes received from the leader, by outcome "
                     "(accepted, ignored: an older version, refused: a stale leader, invalid, unauthorized).",
                     lambda: [((k,), v) for k, v in self.pushes.items()], ["outcome"])
        live.gauge("orca_agent_desired_term", "Raft term of the last accepted push.", lambda: agent.store.term)
        live.gauge("orca_agent_desired_version", "Version of the last accepted push.", lambda: agent.store.version)
        live.counter("orca_agent_health_checks_total", "Health checks run, by kind (http, tcp, exec) and result.",
                     lambda: [(k, v) for k, v in sorted(agent.health.results.items())], ["kind", "result"])
        live.counter("orca_agent_health_restarts_total", "Containers restarted because their health check "
                     "failed `retries` times in a row.", lambda: agent.health.restarts_total)
        live.counter("orca_agent_heartbeats_total", "Heartbeat rounds to the masters, by outcome (ok, failed).",
                     lambda: [((k,), agent.link.heartbeats.get(k, 0)) for k in ("ok", "failed")], ["outcome"])
        live.gauge("orca_agent_last_heartbeat_timestamp_seconds", "Unix time of the last heartbeat a master "
                   "answered (0: none yet).", lambda: agent.link.last_sync or 0.0)
        live.counter("orca_proxy_requests_total", "Requests the ingress proxy on this node forwarded, by service.",
                     lambda: [((k,), s.get("requests", 0)) for k, s in sorted(_proxy_stats(agent).items())],
                     ["service"])
        live.counter("orca_proxy_request_errors_total", "Of those, requests answered 5xx or not at all.",
                     lambda: [((k,), s.get("errors", 0)) for k, s in sorted(_proxy_stats(agent).items())],
                     ["service"])
        live.gauge("orca_proxy_active_requests", "Requests in flight through the ingress proxy, by service.",
                   lambda: [((k,), s.get("active", 0)) for k, s in sorted(_proxy_stats(agent).items())],
                   ["service"])
        self.registry.register(live)
        self.registry.register(_ProxyLatency(agent))

    def push(self, outcome: str) -> None:
        if outcome in self.pushes:
            self.pushes[outcome] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TokenVerdicts:
    """Bounded, expiring cache of "may this bearer read metrics?" answers from the masters."""

    def __init__(self, clock: Any = time.monotonic, ttl_s: float = VERDICT_TTL_S,
                 max_entries: int = MAX_VERDICTS) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._verdicts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.lock = asyncio.Lock()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, token: str) -> int | None:
        """The HTTP status a master gave this token (200, 401, 403) while fresh, else None."""
        k = self.key(token)
        hit = self._verdicts.get(k)
        if hit is None:
            return None
        if self.clock() >= hit[0]:
            del self._verdicts[k]
            return None
        return hit[1]

    def put(self, token: str, status: int) -> None:
        k = self.key(token)
        self._verdicts.pop(k, None)
        self._verdicts[k] = (self.clock() + self.ttl_s, status)
        while len(self._verdicts) > self.max_entries:
            self._verdicts.popitem(last=False)
