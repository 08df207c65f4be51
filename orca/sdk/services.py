"""Services and projects: deploy, read, scale, stop, version history, traffic figures and scaling policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from orca.sdk.errors import field
from orca.sdk.transport import Transport

__all__ = ["ServicesMixin"]


class ServicesMixin(Transport):
    """The service calls of a client."""

    def health(self) -> dict[str, Any]:
        """This master's view: role, leader, term, readiness (no token needed)."""
        return self.request("GET", "/api/v1/health")

    def deploy(self, services: list[dict[str, Any]], idempotency_key: str | None = None) -> dict[str, Any]:
        """Create or update services -> `{"deployed": [names], "errors": [{"service", "error"}]}`."""
        return self.request("POST", "/api/v1/deploy", json={"services": list(services)},
                            idempotency_key=idempotency_key)

    def status(self, project: str | None = None, *, consistent: bool = False) -> list[dict[str, Any]]:
        """One summary row per service, optionally of one project."""
        response = self.request("GET", "/api/v1/status", params={"project": project}, consistent=consistent)
        return field(response, "services")

    def service(self, name: str, *, consistent: bool = False) -> dict[str, Any]:
        """Spec, version, replica counts, containers and recent events of one service."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}", consistent=consistent)

    def scale(self, name: str, replicas: int, idempotency_key: str | None = None) -> dict[str, Any]:
        """-> `{name, previous_replicas, replicas}`."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/scale",
                            json={"replicas": int(replicas)}, idempotency_key=idempotency_key)

    def stop(self, name: str, purge: bool = False, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop a service; its config is kept unless `purge`."""
        return self.request("DELETE", f"/api/v1/services/{quote(name, safe='')}",
                            params={"purge": True} if purge else None, idempotency_key=idempotency_key)

    def start(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Resume a stopped service."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/start",
                            idempotency_key=idempotency_key)

    def stop_project(self, project: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop every service of one project."""
        return self.request("DELETE", f"/api/v1/projects/{quote(project, safe='')}",
                            idempotency_key=idempotency_key)

    def stop_all(self, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop every service of the cluster (admin)."""
        return self.request("POST", "/api/v1/stop", idempotency_key=idempotency_key)

    def events(self, service: str | None = None, type: str | None = None, since: float | str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
        """The event history, oldest first as the server orders it, filtered server-side."""
        params = {"service": service, "type": type, "since": since, "limit": limit}
        return field(self.request("GET", "/api/v1/events", params=params), "events")


    def promote(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Make the canary the current version, rolled out to every replica -> `{"name", "version"}`;
        `CONFLICT` (409) when there is no canary."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/promote",
                            idempotency_key=idempotency_key)

    def rollback(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Drop the canary, or without one roll to the previous version's spec (as a new version)
        -> `{"name", "version", "dropped_canary"?, "spec_of"?}`; `CONFLICT` (409) with nothing to go back to."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/rollback",
                            idempotency_key=idempotency_key)

    def history(self, name: str) -> dict[str, Any]:
        """-> `{"name", "version", "versions": [{"version", "digest", "image", "at", "current", "canary"}]}`,
        newest first."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}/history")

    def metrics(self, name: str, history: int = 0) -> dict[str, Any]:
        """The service's traffic and resource figures, aggregated by the leader (any master answers)
        -> `{"service", "current": sample | None, "history": [sample, ...], "autoscaler": {...} | None,
        "source"}`; a sample is `{"at", "replicas", "rps", "error_rate", "p95_ms", "active", "cpu_pct",
        "mem_pct", "replicas_rps"}` (`error_rate` a fraction; the others None when unknown). `history`
        (0..1800) asks for that many past samples too."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}/metrics",
                            params={"history": int(history) if history else None})

    def get_scaling(self, name: str) -> dict[str, Any]:
        """-> `{"name", "replicas", "scaling": policy | None}`; the policy has every field (`mode`,
        `min_replicas`, `max_replicas`, `target_rps_per_replica`, `max_p95_latency_ms`, `max_cpu_percent`,
        `max_memory_percent`, `scale_out_threshold_pct`, `scale_in_threshold_pct`, `window_seconds`,
        `cooldown_seconds`)."""
        return self.request("GET", f"/api/v1/services/{quote(name, safe='')}/scaling")

    def set_scaling(self, name: str, policy: Mapping[str, Any] | None,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Replace the autoscaling policy (fields left out take the defaults; the server validates), or
        remove it with None -> `{"name", "scaling"}` (the normalized policy)."""
        return self.request("PUT", f"/api/v1/services/{quote(name, safe='')}/scaling",
                            json={"scaling": None if policy is None else dict(policy)},
                            idempotency_key=idempotency_key)

    def run_job(self, name: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Start a new run of a job (`kind = "job"`) -> `{"name", "run"}`."""
        return self.request("POST", f"/api/v1/services/{quote(name, safe='')}/run", idempotency_key=idempotency_key)

