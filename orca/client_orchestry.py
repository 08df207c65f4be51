"""The Orchestry SDK's methods (`register_app`, `start_app`, `get_app_status`, ...) on `orca.Client`.

Mixed into `orca.client.Client`: same retries, leader redirects, idempotency keys and TLS as every
other call. Names and arguments follow the Orchestry Python SDK; answers are the documented JSON.
"""

from __future__ import annotations

import json as _json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

__all__ = ["OrchestryMixin"]


class _Requester(Protocol):
    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                idempotency_key: str | None = None, consistent: bool = False, raw: bool = False) -> Any: ...

    def _ws_messages(self, target: str) -> Iterator[str | bytes]: ...


def _app(name: str) -> str:
    return f"/api/v1/apps/{quote(name, safe='')}"


def _options(**values: Any) -> dict[str, Any] | None:
    body = {k: v for k, v in values.items() if v is not None}
    return body or None


class OrchestryMixin:
    """Orchestry's application API; see README "Orchestry" for how apps map onto services."""

    def register_app(self: _Requester, spec: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Register an App document (`apiVersion`, `kind`, `metadata`, `spec`, `scaling`); it runs nothing yet."""
        return self.request("POST", "/api/v1/apps/register", json=dict(spec), idempotency_key=idempotency_key)

    def start_app(self: _Requester, name: str, replicas: int | None = None, *, wait: bool | None = None,
                  timeout: float | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"{_app(name)}/start", json=_options(replicas=replicas, wait=wait,
                                                                        timeout=timeout),
                            idempotency_key=idempotency_key)

    def stop_app(self: _Requester, name: str, *, force: bool | None = None, timeout: float | None = None,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"{_app(name)}/stop", json=_options(force=force, timeout=timeout),
                            idempotency_key=idempotency_key)

    def scale_app(self: _Requester, name: str, replicas: int, *, wait: bool | None = None,
                  timeout: float | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"{_app(name)}/scale",
                            json=_options(replicas=int(replicas), wait=wait, timeout=timeout),
                            idempotency_key=idempotency_key)

    def delete_app(self: _Requester, name: str, *, force: bool = False, keep_data: bool = False,
                   idempotency_key: str | None = None) -> dict[str, Any]:
        """Remove the app and its containers -> `{containers_removed, volumes_removed}`."""
        return self.request("DELETE", _app(name), params={"force": str(force).lower(),
                                                          "keep_data": str(keep_data).lower()},
                            idempotency_key=idempotency_key)

    def get_app_status(self: _Requester, name: str) -> dict[str, Any]:
        return self.request("GET", _app(name))

    def list_apps(self: _Requester, status: str | None = None, format: str | None = None) -> dict[str, Any]:
        return self.request("GET", "/api/v1/apps", params={"status": status, "format": format})

    def get_app_spec(self: _Requester, name: str) -> dict[str, Any]:
        return self.request("GET", f"{_app(name)}/spec")

    def get_app_metrics(self: _Requester, name: str, history: int | None = None,
                        interval: str | None = None) -> dict[str, Any]:
        return self.request("GET", f"{_app(name)}/metrics", params={"history": history, "interval": interval})

    def get_app_events(self: _Requester, name: str, type: str | None = None, since: str | None = None,
                       limit: int | None = None) -> dict[str, Any]:
        return self.request("GET", f"{_app(name)}/events", params={"type": type, "since": since, "limit": limit})

    def get_app_logs(self: _Requester, name: str, container: str | None = None, tail: int | None = None,
                     since: str | None = None) -> dict[str, Any]:
        return self.request("GET", f"{_app(name)}/logs",
                            params={"container": container, "tail": tail, "since": since})

    def get_scaling_policy(self: _Requester, name: str) -> dict[str, Any]:
        return self.request("GET", f"{_app(name)}/scaling")

    def update_scaling_policy(self: _Requester, name: str, policy: Mapping[str, Any],
                              idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("PUT", f"{_app(name)}/scaling", json=dict(policy), idempotency_key=idempotency_key)

    def get_app_health(self: _Requester, name: str) -> dict[str, Any]:
        return self.request("GET", f"{_app(name)}/health")

    def trigger_health_check(self: _Requester, name: str) -> dict[str, Any]:
        return self.request("POST", f"{_app(name)}/health/check")

    def get_system_health(self: _Requester) -> dict[str, Any]:
        return self.request("GET", "/health")

    def get_system_metrics(self: _Requester) -> dict[str, Any]:
        return self.request("GET", "/api/v1/metrics")

    def get_config(self: _Requester) -> dict[str, Any]:
        return self.request("GET", "/api/v1/config")

    def update_config(self: _Requester, config: Mapping[str, Any]) -> dict[str, Any]:
        """Always refused (409 CONFIG_READ_ONLY, naming where each section is set): see README."""
        return self.request("PUT", "/api/v1/config", json=dict(config))

    def get_cluster_status(self: _Requester) -> dict[str, Any]:
        return self.request("GET", "/cluster/status")

    def get_cluster_leader(self: _Requester) -> dict[str, Any]:
        return self.request("GET", "/cluster/leader")

    def get_cluster_health(self: _Requester) -> dict[str, Any]:
        return self.request("GET", "/cluster/health")

    def stream_app_logs(self: _Requester, name: str, tail: int | None = None) -> Iterator[dict[str, Any]]:
        """`{timestamp, container, level, message}` per line, from `/api/v1/apps/{app}/logs/stream`."""
        query = f"?{urlencode({'tail': int(tail)})}" if tail is not None else ""
        for message in self._ws_messages(f"{_app(name)}/logs/stream{query}"):
            yield _json.loads(message)

    def stream_app_metrics(self: _Requester, name: str) -> Iterator[dict[str, Any]]:
        for message in self._ws_messages(f"{_app(name)}/metrics/stream"):
            yield _json.loads(message)
