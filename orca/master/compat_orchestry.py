"""Orchestry's application API (`/api/v1/apps/...`) served over orca's services.

An app is an orca service (see `compat_orchestry_model` for the field mapping); every write goes
through `MasterApi.write`, so project scopes, secret grants, idempotency keys and leader redirects
apply exactly as on orca's own routes. Registering makes the service with 0 replicas and stops it;
starting re-deploys its stored spec with the wanted replica count (one write that both sets the count
and starts it, without touching the scaling mode); scaling is orca's `scale` op.

`wait: true` on start and scale answers once the replicas run (bounded by `timeout` seconds); while
such a wait runs, another scale of the same app is `409 SCALING_IN_PROGRESS` (so is one during a
rolling update). A wait that sees the scheduler unable to place the replicas for lack of capacity
answers `503 INSUFFICIENT_RESOURCES` (the replicas stay wanted; they start when capacity appears).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orca import bounds, spec
from orca.errors import Invalid, OrcaError
from orca.master import compat_orchestry_model as model
from orca.master import views
from orca.master.http import json_response, read_json

if TYPE_CHECKING:
    from orca.master.api import MasterApi
    from orca.master.api_traffic import TrafficEndpoints

__all__ = ["OrchestryApps", "orchestry_errors", "DerivedRequest"]

Handler = Callable[..., Awaitable[web.StreamResponse]]

# The agent's health checker (orca.agent.health): one probe a second, one second each.
HEALTH_PERIOD_S = 1
HEALTH_TIMEOUT_S = 1
FAILURES_BEFORE_RESTART = 3  # orca.agent.health's (a unit test keeps them equal; the master imports no agent code)
WAIT_DEFAULT_S = 60
# A wait answers INSUFFICIENT_RESOURCES once the scheduler has said "no capacity" this long (a node may be
# registering or a replica stopping; one pass of the scheduler is not a verdict).
NO_CAPACITY_FOR_S = 2.0
WAIT_MAX_S = 600
_POLL_S = 0.25
# The scheduler's reasons (orca.scheduler) that mean "not enough capacity", as opposed to "still starting".
_NO_CAPACITY = re.compile(r"free|overcommitted|no nodes|no ready and eligible node")


def orchestry_errors(fn: Handler) -> Handler:
    """Answer a handler's errors with Orchestry's codes and envelope (`error` title, `details` sentence)."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: web.Request) -> web.StreamResponse:
        try:
            return await fn(self, request)
        except OrcaError as err:
            raise model.to_orchestry_error(err, request.match_info.get("app")) from None
    return wrapper


class DerivedRequest:
    """The request as `MasterApi.write` sees it for the second write of one call: same claims, and the
    Idempotency-Key (if any) suffixed, so a retried call replays both writes and not the first twice."""

    def __init__(self, request: web.Request, suffix: str) -> None:
        self._request = request
        key = request.headers.get("Idempotency-Key")
        self.headers = {"Idempotency-Key": f"{key}:{suffix}"} if key else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._request.get(key, default)


def _bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise Invalid(f"{name}: expected true or false", {"field": name})
    return value


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("1", "0", "true", "false", "yes", "no", ""):
        raise Invalid(f"{name}: expected true or false", {"field": name})
    return raw in ("1", "true", "yes")


def _options(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise Invalid(f"unknown field {str(key)[:64]!r}; expected one of {', '.join(sorted(allowed))}",
                          {"field": str(key)[:64]})


def _replicas(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= spec.MAX_REPLICAS:
        raise Invalid(f"replicas: expected an integer from 0 to {spec.MAX_REPLICAS}", {"field": "replicas"})
    return value


def _timeout(body: dict[str, Any]) -> float:
    raw = body.get("timeout", WAIT_DEFAULT_S)
    return bounds.bounded_number(raw, "timeout", 1.0, float(WAIT_MAX_S))


def _service(state: dict[str, Any], name: str) -> dict[str, Any]:
    svc = state["services"].get(name)
    if svc is None:
        raise model.AppNotFound(model.TITLES["APP_NOT_FOUND"], f"Application '{name}' does not exist")  # type: ignore[arg-type]
    return svc


class OrchestryApps:
    """The `/api/v1/apps` routes; metrics come from the leader's traffic book (via `TrafficEndpoints`)."""

    def __init__(self, api: MasterApi, traffic: TrafficEndpoints) -> None:
        self.api = api
        self.traffic = traffic
        self.scaling: set[str] = set()  # apps with a `wait` in progress on this master

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/apps/register", self.register)
        r.add_get("/api/v1/apps", self.list_apps)
        r.add_get("/api/v1/apps/{app}", self.status)
        r.add_delete("/api/v1/apps/{app}", self.delete)
        r.add_post("/api/v1/apps/{app}/start", self.start)
        r.add_post("/api/v1/apps/{app}/stop", self.stop)
        r.add_post("/api/v1/apps/{app}/scale", self.scale)
        r.add_get("/api/v1/apps/{app}/spec", self.get_spec)
        r.add_get("/api/v1/apps/{app}/metrics", self.metrics)
        r.add_get("/api/v1/apps/{app}/events", self.events)
        r.add_get("/api/v1/apps/{app}/scaling", self.get_scaling)
        r.add_put("/api/v1/apps/{app}/scaling", self.put_scaling)
        r.add_get("/api/v1/apps/{app}/health", self.health)
        r.add_post("/api/v1/apps/{app}/health/check", self.health_check)

    def _read(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        return self.api.raft.read(fn)

    async def _consistent(self, request: web.Request) -> None:
        """`?consistent=true`, as on orca's reads: served by the leader after a barrier (linearizable)."""
        if request.query.get("consistent", "").lower() in ("1", "true", "yes"):
            self.api._require_leader()
            await self.api.raft.barrier()

    def _is_replay(self, request: web.Request) -> bool:
        """True when this request's Idempotency-Key was applied before (scoped per principal, as
        `MasterApi.write` scopes it): the client is retrying a call whose answer it lost."""
        key = request.headers.get("Idempotency-Key")
        if not key:
            return False
        claims = request.get("claims")
        scoped = f"{(claims.sub if claims else None) or '-'}:{key}"
        return bool(self._read(lambda s: scoped in s["idempotency"]))

    # --- lifecycle --------------------------------------------------------------------------------
    @orchestry_errors
    async def register(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        body = await read_json(request)
        svc_spec = model.service_spec(body)
        name = svc_spec["name"]
        # A retry of a register that was applied (same Idempotency-Key) replays it rather than conflict.
        if not self._is_replay(request) and self._read(lambda s: name in s["services"]):
            raise model.AppAlreadyExists(model.TITLES["APP_ALREADY_EXISTS"],
                                         f"Application '{name}' is already registered")  # type: ignore[arg-type]
        await self.api.write(request, "deploy", {"services": [
            {"name": name, "spec": svc_spec, "digest": spec.spec_digest(svc_spec)}]})
        await self.api.write(DerivedRequest(request, "stop"), "stop_service", {"name": name})  # type: ignore[arg-type]
        return json_response({"message": "Application registered successfully", "app_name": name,
                              "status": "registered"}, status=201)

    @orchestry_errors
    async def start(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        name = request.match_info["app"]
        body = await read_json(request)
        _options(body, frozenset({"replicas", "wait", "timeout"}))
        wait, timeout = _bool_field(body, "wait"), _timeout(body)
        svc = self._read(lambda s: _snapshot(_service(s, name)))
        if "replicas" in body:
            replicas = _replicas(body["replicas"])
        elif svc["replicas"] > 0:
            replicas = svc["replicas"]
        else:
            replicas = int((svc["spec"].get("scaling") or {}).get("min_replicas") or 1)
        new_spec = spec.validate_service({**svc["spec"], "replicas": replicas})
        started = time.monotonic()
        with self._claim(name, wait):
            await self.api.write(request, "deploy", {"services": [
                {"name": name, "spec": new_spec, "digest": spec.spec_digest(new_spec)}]})
            out = {"message": "Application started successfully", "app_name": name, "replicas": replicas,
                   "status": "running"}
            if wait:
                out.update(await self._wait(name, replicas, timeout, started))
        return json_response(out)

    @orchestry_errors
    async def stop(self, request: web.Request) -> web.Response:
        name = request.match_info["app"]
        body = await read_json(request)
        _options(body, frozenset({"force", "timeout"}))
        _bool_field(body, "force")  # orca stops every replica with its own grace period either way
        if "timeout" in body:
            _timeout(body)
        await self.api.write(request, "stop_service", {"name": name})
        return json_response({"message": "Application stopped successfully", "app_name": name,
                              "status": "stopped"})

    @orchestry_errors
    async def scale(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        name = request.match_info["app"]
        body = await read_json(request)
        _options(body, frozenset({"replicas", "wait", "timeout"}))
        if "replicas" not in body:
            raise Invalid("replicas: required", {"field": "replicas"})
        replicas = _replicas(body["replicas"])
        wait, timeout = _bool_field(body, "wait"), _timeout(body)
        rolling = self._read(lambda s: ((_service(s, name).get("rollout") or {}).get("state") == "rolling"))
        if name in self.scaling or rolling:
            raise model.ScalingInProgress(model.TITLES["SCALING_IN_PROGRESS"],
                                          f"Application '{name}' is already "  # type: ignore[arg-type]
                                          + ("rolling out a new version" if rolling else "being scaled"))
        started = time.monotonic()
        with self._claim(name, wait):
            result = await self.api.write(request, "scale", {"name": name, "replicas": replicas})
            out: dict[str, Any] = {"message": "Application scaled successfully", "app_name": name,
                                   "previous_replicas": result["previous_replicas"], "current_replicas": replicas}
            if wait:
                out.update(await self._wait(name, replicas, timeout, started))
        out["scaling_time"] = round(time.monotonic() - started, 3)
        return json_response(out)

    @contextlib.contextmanager
    def _claim(self, name: str, wait: bool) -> Iterator[None]:
        """Mark a waited scale (or start) of `name` as in progress from before its write until its answer."""
        if not wait:
            yield
            return
        self.scaling.add(name)
        try:
            yield
        finally:
            self.scaling.discard(name)

    async def _wait(self, name: str, replicas: int, timeout: float, started: float) -> dict[str, Any]:
        """Poll the applied state until `replicas` run; bounded by `timeout` (and by that, in count)."""
        deadline = started + timeout
        short_since: float | None = None  # when the scheduler first said capacity is short
        while True:
            running, reason = self._read(functools.partial(_progress, name=name))
            if running == replicas:
                return {"current_replicas": running, "timed_out": False}
            short = bool(reason and _NO_CAPACITY.search(reason))
            short_since = (short_since or time.monotonic()) if short else None
            if short_since is not None and time.monotonic() - short_since >= NO_CAPACITY_FOR_S:
                raise model.InsufficientResources(
                    model.TITLES["INSUFFICIENT_RESOURCES"],
                    f"{running} of {replicas} replicas of '{name}' run: {reason}")  # type: ignore[arg-type]
            if time.monotonic() >= deadline:
                return {"current_replicas": running, "timed_out": True}
            await asyncio.sleep(_POLL_S)

    @orchestry_errors
    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["app"]
        _bool_query(request, "force")  # no confirmation step over an API: accepted, nothing to skip
        _bool_query(request, "keep_data")  # orca services have no volumes: nothing to keep or remove
        self.api._require_leader()
        containers = self._read(lambda s: sum(1 for a in s["allocations"].values() if a.get("service") == name
                                              and a.get("desired") in ("run", "migrate")))
        await self.api.write(request, "purge_service", {"name": name})
        return json_response({"message": "Application removed successfully", "app_name": name,
                              "containers_removed": containers, "volumes_removed": 0})

    # --- information ------------------------------------------------------------------------------
    @orchestry_errors
    async def status(self, request: web.Request) -> web.Response:
        await self._consistent(request)
        name = request.match_info["app"]
        detail, nodes, last_scaled = self._read(lambda s: (
            views.service_detail(s, _service(s, name)), _node_hosts(s), _last_scaled(s, name)))
        current = (await self._metrics(request, name, 0))["current"] or {}
        containers = []
        for i, c in enumerate(detail["containers"]):
            containers.append({"id": c["id"], "name": _container_name(name, c, i), "ip": nodes.get(c["node"]),
                               "port": c["host_port"], "status": c["status"], "health": _health_of(c),
                               "started_at": views.iso(c["started_at"]) if isinstance(c["started_at"], float)
                               else c["started_at"]})
        body = {"name": name, "status": model.app_status(detail["status"], detail["replicas"]["desired"]),
                "replicas": {"current": detail["replicas"]["running"], "desired": detail["replicas"]["desired"],
                             "healthy": detail["replicas"]["healthy"]},
                "metrics": _metric_fields(current), "created_at": detail["created_at"],
                "updated_at": detail["updated_at"], "last_scaled_at": last_scaled, "containers": containers}
        return json_response(body)

    @orchestry_errors
    async def list_apps(self, request: web.Request) -> web.Response:
        await self._consistent(request)
        wanted = request.query.get("status") or None
        if wanted is not None and wanted not in ("running", "stopped", "error", "pending"):
            raise Invalid("status: expected running, stopped, error or pending", {"field": "status"})
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "summary"):
            raise Invalid("format: expected json or summary", {"field": "format"})

        def rows(state: dict[str, Any]) -> list[dict[str, Any]]:
            out = []
            for row in views.status_list(state, None):
                svc = state["services"][row["name"]]
                out.append({"name": row["name"], "status": model.app_status(row["status"], row["replicas"]),
                            "replicas": {"current": row["running_replicas"], "desired": row["replicas"]},
                            "image": row["image"], "created_at": views.iso(svc.get("created_at"))})
            return out
        apps = self._read(rows)
        counts = {k: sum(1 for a in apps if a["status"] == k) for k in ("running", "stopped", "error")}
        if wanted is not None:
            apps = [a for a in apps if a["status"] == wanted]
        if fmt == "summary":
            apps = [{"name": a["name"], "status": a["status"]} for a in apps]
        return json_response({"apps": apps, "total": len(apps), **counts})

    @orchestry_errors
    async def get_spec(self, request: web.Request) -> web.Response:
        await self._consistent(request)
        name = request.match_info["app"]
        return json_response(model.app_spec(self._read(lambda s: dict(_service(s, name)["spec"]))))

    async def _metrics(self, request: web.Request, name: str, history: int) -> dict[str, Any]:
        """orca's own metrics body for the service, from the leader's traffic book (fetched if a follower)."""
        if self.api.raft.is_leader:
            return self.traffic.metrics_body(name, history)
        try:
            return await self.traffic._from_leader(request, f"/api/v1/services/{name}/metrics?history={history}")
        except OrcaError:
            return {"current": None, "history": []}

    @orchestry_errors
    async def metrics(self, request: web.Request) -> web.Response:
        name = request.match_info["app"]
        history = bounds.query_int(request.query.get("history"), "history", 10, 0, 1800)
        interval = model.parse_interval(request.query["interval"]) if request.query.get("interval") else None
        healthy, total = self._read(lambda s: _healthy_total(s, _service(s, name)))
        body = await self._metrics(request, name, 1800 if interval else history)
        current = body.get("current") or {}
        samples = body.get("history") or []
        if interval is not None:
            samples = _every(samples, interval, history)
        return json_response({
            "app_name": name, "timestamp": views.iso(current.get("at") or time.time()),
            "current": {**_metric_fields(current), "healthy_replicas": healthy, "total_replicas": total},
            "history": [{"timestamp": views.iso(s.get("at")), **{k: v for k, v in _metric_fields(s).items()
                                                               if k != "active_connections"}} for s in samples]})

    @orchestry_errors
    async def events(self, request: web.Request) -> web.Response:
        await self._consistent(request)
        name = request.match_info["app"]
        q = request.query
        category = q.get("type") or None
        if category is not None and category not in model.EVENT_CATEGORIES:
            raise Invalid(f"type: expected one of {', '.join(model.EVENT_CATEGORIES)}", {"field": "type"})
        limit = bounds.query_int(q.get("limit"), "limit", 100, 1, 1000)
        since_seq, since_time = None, None
        if q.get("since"):
            if q["since"].isascii() and q["since"].isdigit():
                since_seq = bounds.query_int(q["since"], "since", 0, 0, bounds.MAX_INT)
            else:
                since_time = model.parse_since(q["since"], time.time())

        def select(state: dict[str, Any]) -> list[dict[str, Any]]:
            _service(state, name)
            return views.events_query(state, service=name, type_=None, since_seq=since_seq,
                                      since_time=since_time, limit=len(state["events"]) or 1)
        matching = [e for e in self._read(select)
                    if category is None or model.event_category(e["type"]) == category]
        matching.reverse()  # newest first, as the document lists them
        page = matching[:limit]
        return json_response({"app_name": name, "events": [
            {"id": e["seq"], "type": model.event_category(e["type"]), "message": e["message"],
             "timestamp": e["time"], "details": model.event_details(e["type"], e.get("details") or {}),
             "orca_type": e["type"]} for e in page],
            "total": len(matching), "has_more": len(matching) > len(page)})

    # --- scaling ----------------------------------------------------------------------------------
    @orchestry_errors
    async def get_scaling(self, request: web.Request) -> web.Response:
        await self._consistent(request)
        name = request.match_info["app"]
        policy, last = self._read(lambda s: (_service(s, name)["spec"].get("scaling"), _last_scaling(s, name)))
        mode, fields = model.policy_view(policy)
        return json_response({"app_name": name, "mode": mode, "policy": fields, "last_scaling_event": last})

    @orchestry_errors
    async def put_scaling(self, request: web.Request) -> web.Response:
        self.api._require_leader()
        name = request.match_info["app"]
        body = await read_json(request)
        current = self._read(lambda s: _service(s, name)["spec"].get("scaling"))
        new = model.policy_from_body(body, current)
        await self.api.write(request, "set_scaling", {"name": name, "scaling": new})
        _, before = model.policy_view(current)
        _, after = model.policy_view(new)
        # the replica bounds always (as the document shows them), and whatever else changed
        changed = ["min_replicas", "max_replicas", *sorted(k for k in after if before.get(k) != after[k]
                                                           and k not in ("min_replicas", "max_replicas"))]
        return json_response({"message": "Scaling policy updated successfully", "app_name": name,
                              "previous_policy": {k: before[k] for k in changed},
                              "new_policy": {k: after[k] for k in changed}})

    # --- health -----------------------------------------------------------------------------------
    def _health(self, name: str) -> dict[str, Any]:
        def body(state: dict[str, Any]) -> dict[str, Any]:
            svc = _service(state, name)
            detail = views.service_detail(state, svc)
            check = svc["spec"].get("health")  # orca's check is a path; the agent sets the rest
            threshold = FAILURES_BEFORE_RESTART
            renewed = {nid: n.get("renewed_at") for nid, n in state["nodes"].items()}
            containers = []
            for i, c in enumerate(detail["containers"]):
                health = _health_of(c)
                entry = {"id": c["id"], "name": _container_name(name, c, i), "health": health,
                         "last_check": views.iso(renewed.get(c["node"])),
                         # the agent marks a replica unhealthy after `threshold` failures in a row
                         "consecutive_failures": 0 if health == "healthy" else threshold,
                         "response_time_ms": None}
                if health != "healthy":
                    entry["last_error"] = c["reason"]
                containers.append(entry)
            return {"svc": svc, "containers": containers, "check": check, "threshold": threshold}
        return self._read(body)

    @orchestry_errors
    async def health(self, request: web.Request) -> web.Response:
        await self._consistent(request)
        name = request.match_info["app"]
        h = self._health(name)
        healthy = sum(1 for c in h["containers"] if c["health"] == "healthy")
        total = len(h["containers"])
        overall = "healthy" if healthy == total else ("unhealthy" if healthy == 0 else "degraded")
        check = h["check"]
        config = None if not check else {
            "path": check, "port": h["svc"]["spec"].get("port"), "protocol": "HTTP",
            "period_seconds": HEALTH_PERIOD_S, "timeout_seconds": HEALTH_TIMEOUT_S,
            "failure_threshold": h["threshold"]}
        return json_response({"app_name": name, "overall_health": overall, "healthy_replicas": healthy,
                              "total_replicas": total, "containers": h["containers"],
                              "health_check_config": config})

    @orchestry_errors
    async def health_check(self, request: web.Request) -> web.Response:
        # A POST, hence a write in Orchestry's model: served by the leader (307 / 503 elsewhere), like all.
        self.api._require_leader()
        name = request.match_info["app"]
        containers = self._health(name)["containers"]
        healthy = sum(1 for c in containers if c["health"] == "healthy")
        return json_response({"message": "Health check triggered", "app_name": name,
                              "containers_checked": len(containers), "healthy": healthy,
                              "unhealthy": len(containers) - healthy})


# --- pure helpers over the applied state ---------------------------------------------------------------

def _health_of(container: dict[str, Any]) -> str:
    """A running replica without a health check counts as healthy (as orca's own counts do)."""
    return str(container["health"] or ("healthy" if container["status"] == "running" else "unknown"))


def _snapshot(svc: dict[str, Any]) -> dict[str, Any]:
    return {"replicas": svc["replicas"], "spec": dict(svc["spec"])}


def _progress(state: dict[str, Any], name: str) -> tuple[int, str | None]:
    svc = _service(state, name)
    summary = views.service_summary(state, svc)
    return summary["running_replicas"], summary["pending_reason"]


def _healthy_total(state: dict[str, Any], svc: dict[str, Any]) -> tuple[int, int]:
    summary = views.service_summary(state, svc)
    return summary["healthy_replicas"], summary["running_replicas"]


def _node_hosts(state: dict[str, Any]) -> dict[str, str | None]:
    """Where each node publishes its replicas' ports (its `publish_address`, else its agent's host)."""
    out: dict[str, str | None] = {}
    for nid, node in state["nodes"].items():
        address = str(node.get("address") or "")
        host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]") if address else None
        out[nid] = node.get("publish_address") or host or None
    return out


def _container_name(app: str, container: dict[str, Any], position: int) -> str:
    index = container.get("index")
    return f"{app}-{(index if isinstance(index, int) else position) + 1}"


def _last_scaled(state: dict[str, Any], name: str) -> str | None:
    for event in reversed(state["events"]):
        if event.get("service") == name and event["type"] in ("service_scaled", "autoscaled"):
            return views.iso(event["time"])
    return None


def _last_scaling(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    for event in reversed(state["events"]):
        if event.get("service") == name and event["type"] in ("service_scaled", "autoscaled"):
            d = event.get("details") or {}
            previous, new = d.get("previous"), d.get("replicas")
            action = "scale_out" if isinstance(previous, int) and isinstance(new, int) and new > previous \
                else "scale_in"
            return {"timestamp": views.iso(event["time"]), "action": action, "from_replicas": previous,
                    "to_replicas": new, "reason": d.get("reason") or ("manual" if event["type"] == "service_scaled"
                                                                     else event["message"])}
    return None


def _num(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _metric_fields(sample: dict[str, Any]) -> dict[str, Any]:
    """orca's sample (`cpu_pct`, `p95_ms`, ...) in Orchestry's names; None where nothing was measured."""
    return {"cpu_percent": sample.get("cpu_pct"), "memory_percent": sample.get("mem_pct"),
            "rps": sample.get("rps"), "latency_p95_ms": sample.get("p95_ms"),
            "active_connections": sample.get("active")}


def _every(samples: list[dict[str, Any]], interval: float, count: int) -> list[dict[str, Any]]:
    """Newest-last samples thinned to one per `interval` seconds, the newest `count` of them."""
    out: list[dict[str, Any]] = []
    next_at: float | None = None
    for sample in reversed(samples):
        at = float(sample.get("at") or 0.0)
        if next_at is None or at <= next_at:
            out.append(sample)
            next_at = at - interval
            if len(out) >= count:
                break
    return list(reversed(out))
