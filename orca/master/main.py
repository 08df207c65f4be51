"""`orca server --config FILE`: wires config, Raft, leadership and the API together. Nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys

from aiohttp import web

from orca import auth, eventloop, logging_setup, protocol, tls
from orca.config import ConfigError, MasterConfig, load_master_config
from orca.filemodes import FileModeError, private_umask, secure_paths
from orca.heap_trim import HeapTrimmer
from orca.master import views
from orca.master.api import MasterApi, MasterInfo
from orca.master.api_edge import EdgeEndpoints
from orca.master.api_jobs import JobEndpoints
from orca.master.api_join import JoinEndpoints
from orca.master.api_members import MemberEndpoints
from orca.master.api_porter import PorterStatus
from orca.master.api_secrets import SecretEndpoints
from orca.master.api_snapshot import SnapshotEndpoints
from orca.master.api_tls import TlsEndpoints
from orca.master.api_traffic import TrafficEndpoints
from orca.master.api_volumes import VolumeEndpoints
from orca.master.api_webhooks import WebhookEndpoints
from orca.master.api_workers import WorkerEndpoints
from orca.master.compat_orchestry_routes import add_orchestry_routes
from orca.master.console import Console
from orca.master.control import ControlPlane
from orca.master.http import ApiRunner
from orca.master.leadership import Leadership
from orca.master.secrets import SecretBox
from orca.master.tls_manager import MasterTls
from orca.metrics import MasterMetrics
from orca.raft import RaftNode, RaftSettings
from orca.raft_transport import TransportLimits

__all__ = ["run_server", "serve"]

log = logging.getLogger("orca.master")


def raft_settings(cfg: MasterConfig) -> RaftSettings:
    t = cfg.tuning
    return RaftSettings(
        node_id=cfg.node_id, listen=cfg.raft_listen, peers={p.raft: p.id for p in cfg.peers},
        data_dir=cfg.data_dir, password=auth.raft_password(cfg.cluster_secret),
        election_min_s=t.election_min_s, election_max_s=t.election_max_s, heartbeat_s=t.heartbeat_s,
        leader_fallback_s=t.leader_fallback_s, write_timeout_s=t.write_timeout_s,
        compaction_min_entries=t.compaction_min_entries, compaction_min_s=t.compaction_min_s,
        transport=TransportLimits(allow_from=cfg.raft_allow_from), fsync=cfg.raft_fsync)


async def serve(cfg: MasterConfig, stop: asyncio.Event) -> None:
    """Run one master until `stop` is set."""
    loop = asyncio.get_running_loop()
    leadership_box: list[Leadership] = []
    raft = RaftNode(raft_settings(cfg), loop, on_role_change=lambda leads: leadership_box[0].on_role_change(leads))
    # Renewals are committed once per heartbeat interval: twice the TTL leaves room for a slow commit.
    views.configure(stale_after_s=2 * cfg.node_lease_ttl_s)
    metrics = MasterMetrics()
    secrets = SecretBox(cfg.cluster_secret)
    control = ControlPlane(raft, secrets, metrics, cfg.agent_heartbeat_s, cfg.node_lease_ttl_s,
                           mesh_vip_range=cfg.mesh_vip_range)
    leadership = Leadership(raft, control.components)
    leadership_box.append(leadership)
    info = MasterInfo(
        node_id=cfg.node_id,
        api_urls={cfg.node_id: cfg.api_advertise, **{p.id: p.api for p in cfg.peers}},
        raft_addrs={p.id: p.raft for p in cfg.peers},
        signing_key=auth.signing_key(cfg.cluster_secret),
        max_body_bytes=cfg.limits.max_body_bytes, rate_limit_per_minute=cfg.limits.rate_limit_per_minute,
        rate_limit_burst=cfg.limits.rate_limit_burst, cluster_id=protocol.cluster_id_of(cfg.cluster_secret),
        metrics_require_token=cfg.metrics_require_token, mesh_vip_range=cfg.mesh_vip_range)
    api = MasterApi(raft, leadership, info, metrics,
                    extra_components={"leases": control.leases_health, "scheduler": control.scheduler_health,
                                      "dispatcher": control.dispatcher_health})
    workers = WorkerEndpoints(api, control.book, secrets, cfg.agent_heartbeat_s, cfg.node_lease_ttl_s,
                              traffic=control.traffic)
    api.extra_routes.append(workers.add_routes)
    api.extra_routes.append(JoinEndpoints(api).add_routes)
    api.extra_routes.append(PorterStatus(api).add_routes)
    api.extra_routes.append(EdgeEndpoints(api, control.book).add_routes)
    api.extra_routes.append(MemberEndpoints(api).add_routes)
    api.extra_routes.append(SecretEndpoints(api, secrets).add_routes)
    api.extra_routes.append(VolumeEndpoints(api).add_routes)
    api.extra_routes.append(JobEndpoints(api).add_routes)
    api.extra_routes.append(WebhookEndpoints(api, secrets).add_routes)
    traffic_routes = TrafficEndpoints(api, control.traffic, control.autoscaler.last_decisions)
    api.extra_routes.append(traffic_routes.add_routes)
    add_orchestry_routes(api, traffic_routes, api_listen=cfg.host_port("api"), raft_listen=cfg.host_port("raft"),
                         election_timeout_s=cfg.tuning.election_max_s)
    master_tls = None
    if cfg.tls:
        master_tls = MasterTls(raft, secrets, cfg.node_id, cfg.data_dir, master_names(cfg), cfg.cert_days)
        master_tls.install()
        api.tls = master_tls
    elif cfg.insecure_http:
        log.warning("security.insecure_http = true: the API on %s is plain HTTP; admin tokens and secret values "
                    "cross the network in clear", cfg.api_listen)
    tls_routes = TlsEndpoints(api, master_tls)
    api.extra_routes.append(tls_routes.add_routes)
    workers.tls_routes = tls_routes
    api.extra_routes.append(SnapshotEndpoints(api).add_routes)
    api.extra_routes.append(Console(info.api_urls.values()).add_routes)
    app = api.build_app()
    # The access log is off unless asked for (`[log].access_log`, --access-log): one line per request.
    access = logging.getLogger(logging_setup.API_ACCESS_LOGGER) if cfg.log.access_log else None
    runner = ApiRunner(app, access_log=access, access_log_class=logging_setup.ApiAccessLogger, handle_signals=False)
    await runner.setup()
    upkeep = asyncio.create_task(master_tls.run(stop)) if master_tls is not None else None
    # The heap's holes after a burst (a deploy, a new term) go back to the system (orca.heap_trim).
    trimmer = asyncio.create_task(HeapTrimmer(lambda: raft.store.layout_generation, period_s=0.5).run(stop))
    try:
        if master_tls is not None:
            # The listener needs this master's certificate, hence the CA from the replicated state.
            ready = asyncio.create_task(master_tls.ready.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopping.cancel()
        if not stop.is_set():
            host, port = cfg.host_port("api")
            ssl_ctx = master_tls.server.outer if master_tls is not None and master_tls.server else None
            site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_ctx)
            await site.start()
            log.info("master %s: API on %s (%s), Raft on %s, peers %s", cfg.node_id, cfg.api_listen,
                     "HTTPS" if ssl_ctx else "plain HTTP", cfg.raft_listen, ", ".join(p.id for p in cfg.peers))
            await stop.wait()
    finally:
        if upkeep is not None:
            upkeep.cancel()
        trimmer.cancel()
        leadership.stop()
        await runner.cleanup()
        raft.destroy()


def master_names(cfg: MasterConfig) -> list[str]:
    """The names a master's certificate holds: its advertised host, its listen host (unless a wildcard)
    and its id."""
    names = tls.names_for_url(cfg.api_advertise)
    host, _ = cfg.host_port("api")
    if host not in ("0.0.0.0", "::"):
        names.append(host)
    return [*dict.fromkeys([*names, cfg.node_id])]


RAFT_FRIENDLY_SWITCH_S = 0.0005


def run_server(config_path: str, *, log_level: str | None = None, log_format: str | None = None,
               access_log: bool | None = None) -> int:
    """Entry point of `orca server`; exit 2 on a bad config (one line naming file and key), a bad log
    setting (flag or ORCA_LOG_* environment) or a private path that cannot be made private (`orca.filemodes`).
    The log flags override the environment, which overrides the config's `[log]` (orca.logging_setup)."""
    private_umask()  # before anything is created: the Raft journal and dump hold credentials
    # The Raft thread does little work but many blocking calls (poll, send, recv), each of which gives up
    # the GIL and must win it back; with the default 5 ms switch interval, every one of them waits up to
    # 5 ms behind the event loop's long pure-Python passes (a scheduling pass at 10,000 services), which
    # delays the leader's heartbeats to its followers past their election timeout (0.2-0.5 s).
    sys.setswitchinterval(RAFT_FRIENDLY_SWITCH_S)
    try:
        cfg = load_master_config(config_path)
        settings = logging_setup.resolve(cfg.log, level=log_level, fmt=log_format, access_log=access_log)
    except (ConfigError, ValueError) as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2
    logging_setup.configure(settings, cfg.node_id)
    cfg = dataclasses.replace(cfg, log=settings)
    try:
        secure_paths([cfg.data_dir], [cfg.cluster_secret_file])
    except (FileModeError, OSError) as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    try:
        eventloop.run(main())
    except OSError as err:
        print(f"orca: cannot listen: {err}", file=sys.stderr)
        return 1
    return 0
