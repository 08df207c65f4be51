"""The route policy is fail closed: every registered route has an entry, and nothing else does."""

from __future__ import annotations

from typing import Any

from orca.master.api import MasterApi, MasterInfo
from orca.master.api_edge import EdgeEndpoints
from orca.master.api_jobs import JobEndpoints
from orca.master.api_join import JoinEndpoints
from orca.master.api_members import MemberEndpoints
from orca.master.api_porter import PorterStatus
from orca.master.api_secrets import SecretEndpoints
from orca.master.api_snapshot import ROUTES as SNAPSHOT_ROUTES
from orca.master.api_snapshot import SnapshotEndpoints
from orca.master.api_tls import TlsEndpoints
from orca.master.api_traffic import TrafficEndpoints
from orca.master.api_volumes import VolumeEndpoints
from orca.master.api_webhooks import WebhookEndpoints
from orca.master.api_workers import WorkerEndpoints
from orca.master.compat_orchestry_routes import add_orchestry_routes
from orca.master.console import Console
from orca.master.http import HMAC, JOIN, POLICY, PUBLIC
from orca.master.leases import HeartbeatBook
from orca.master.secrets import SecretBox
from orca.master.traffic import TrafficBook


def build() -> Any:
    info = MasterInfo(node_id="m1", api_urls={"m1": "http://127.0.0.1:1"}, raft_addrs={}, signing_key=b"k" * 32,
                      max_body_bytes=1024)
    api = MasterApi(raft=None, leadership=None, info=info)  # type: ignore[arg-type] - routes only
    workers = WorkerEndpoints(api, HeartbeatBook(), SecretBox(b"s" * 32), 1.0, 5.0)
    api.extra_routes.append(workers.add_routes)
    api.extra_routes.append(SecretEndpoints(api, SecretBox(b"s" * 32)).add_routes)
    api.extra_routes.append(WebhookEndpoints(api, SecretBox(b"s" * 32)).add_routes)
    traffic = TrafficEndpoints(api, TrafficBook(), {})
    api.extra_routes.append(traffic.add_routes)
    add_orchestry_routes(api, traffic, api_listen=("127.0.0.1", 1), raft_listen=("127.0.0.1", 2),
                         election_timeout_s=1.0)
    api.extra_routes.append(JoinEndpoints(api).add_routes)
    api.extra_routes.append(MemberEndpoints(api).add_routes)
    api.extra_routes.append(TlsEndpoints(api, None).add_routes)
    api.extra_routes.append(PorterStatus(api).add_routes)
    api.extra_routes.append(EdgeEndpoints(api, HeartbeatBook()).add_routes)
    api.extra_routes.append(SnapshotEndpoints(api).add_routes)
    api.extra_routes.append(VolumeEndpoints(api).add_routes)
    api.extra_routes.append(JobEndpoints(api).add_routes)
    api.extra_routes.append(Console(info.api_urls.values()).add_routes)
    return api, api.build_app()


def test_every_route_has_a_policy_and_every_policy_a_route() -> None:
    api, app = build()
    assert api.routes_without_policy(app) == []
    registered = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    assert set(POLICY) == registered
    assert all(POLICY[route] == need for route, need in SNAPSHOT_ROUTES.items())


# Orchestry's probes (orca.master.compat_orchestry_system), public as Orchestry documents them
ORCHESTRY_PROBES = {"/health", "/cluster/leader", "/cluster/health"}


def test_orchestry_probes_are_public_and_its_app_routes_are_not() -> None:
    assert {p for (m, p), need in POLICY.items() if need == PUBLIC} >= ORCHESTRY_PROBES
    assert all(need in ("viewer", "deployer") for (m, p), need in POLICY.items() if p.startswith("/api/v1/apps"))


def test_only_probes_and_public_status_are_unauthenticated() -> None:
    public = {path for (method, path), need in POLICY.items() if need == PUBLIC} - ORCHESTRY_PROBES
    assert {p for (m, p), need in POLICY.items() if need == HMAC} == {"/api/v1/webhooks/github"}
    assert {p for (m, p), need in POLICY.items() if need == JOIN} == {"/api/v1/agent/join"}
    assert public == {"/livez", "/readyz", "/healthz", "/metrics", "/api/v1/health", "/api/v1/status/{component}",
                      "/api/v1/cluster/leader", "/api/v1/cluster/health", "/api/v2/status/{subsystem}",
                      "/api/v1/cluster/ca",  # CA certificates are public: clients pin them by fingerprint
                      "/ui/", "/ui/{path}", "/api/v1/openapi.json"}  # the web console's static files
    assert all(need in ("admin", "agent", JOIN) for (m, p), need in POLICY.items()
               if p.startswith(("/api/v1/tokens", "/api/v1/secrets", "/api/v1/agent", "/api/v1/stop",
                                "/api/v1/cluster/join-tokens", "/api/v1/edge")))


def test_secret_box_round_trips_and_refuses_other_keys() -> None:
    box, other = SecretBox(b"a" * 32), SecretBox(b"b" * 32)
    sealed = box.seal("hunter2")
    assert "hunter2" not in sealed and box.open(sealed) == "hunter2"
    assert other.open(sealed) is None and box.open("garbage") is None
