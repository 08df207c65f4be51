"""`orca server --config FILE`: wires config, Raft, leadership and the API together. Nothing else."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from orca import auth
from orca.config import ConfigError, MasterConfig, load_master_config
from orca.master import views
from orca.master.api import MasterApi, MasterInfo
from orca.master.api_traffic import TrafficEndpoints
from orca.master.api_webhooks import WebhookEndpoints
from orca.master.api_workers import WorkerEndpoints
from orca.master.control import ControlPlane
from orca.master.http import ApiRunner
from orca.master.leadership import Leadership
from orca.master.secrets import SecretBox
from orca.metrics import MasterMetrics
from orca.raft import RaftNode, RaftSettings

__all__ = ["run_server", "serve"]

log = logging.getLogger("orca.master")


def raft_settings(cfg: MasterConfig) -> RaftSettings:
    t = cfg.tuning
    return RaftSettings(
        node_id=cfg.node_id, listen=cfg.raft_listen, peers={p.raft: p.id for p in cfg.peers},
        data_dir=cfg.data_dir, password=auth.raft_password(cfg.cluster_secret),
        election_min_s=t.election_min_s, election_max_s=t.election_max_s, heartbeat_s=t.heartbeat_s,
        leader_fallback_s=t.leader_fallback_s, write_timeout_s=t.write_timeout_s,
        compaction_min_entries=t.compaction_min_entries, compaction_min_s=t.compaction_min_s)


async def serve(cfg: MasterConfig, stop: asyncio.Event) -> None:
    """Run one master until `stop` is set."""
    loop = asyncio.get_running_loop()
    leadership_box: list[Leadership] = []
    raft = RaftNode(raft_settings(cfg), loop, on_role_change=lambda leads: leadership_box[0].on_role_change(leads))
    # Renewals are committed once per heartbeat interval: twice the TTL leaves room for a slow commit.
    views.configure(stale_after_s=2 * cfg.node_lease_ttl_s)
    metrics = MasterMetrics()
    secrets = SecretBox(cfg.cluster_secret)
    control = ControlPlane(raft, secrets, metrics, cfg.agent_heartbeat_s, cfg.node_lease_ttl_s)
    leadership = Leadership(raft, control.components)
    leadership_box.append(leadership)
    info = MasterInfo(
        node_id=cfg.node_id,
        api_urls={cfg.node_id: cfg.api_advertise, **{p.id: p.api for p in cfg.peers}},
        raft_addrs={p.id: p.raft for p in cfg.peers},
        signing_key=auth.signing_key(cfg.cluster_secret),
        max_body_bytes=cfg.limits.max_body_bytes, rate_limit_per_minute=cfg.limits.rate_limit_per_minute,
        rate_limit_burst=cfg.limits.rate_limit_burst)
    api = MasterApi(raft, leadership, info, metrics,
                    extra_components={"scheduler": control.scheduler_health,
                                      "dispatcher": control.dispatcher_health})
    workers = WorkerEndpoints(api, control.book, secrets, cfg.agent_heartbeat_s, cfg.node_lease_ttl_s,
                              traffic=control.traffic)
    api.extra_routes.append(workers.add_routes)
    api.extra_routes.append(WebhookEndpoints(api, secrets).add_routes)
    api.extra_routes.append(TrafficEndpoints(api, control.traffic, control.autoscaler.last_decisions).add_routes)
    app = api.build_app()
    runner = ApiRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = cfg.host_port("api")
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("master %s: API on %s, Raft on %s, peers %s", cfg.node_id, cfg.api_listen, cfg.raft_listen,
             ", ".join(p.id for p in cfg.peers))
    try:
        await stop.wait()
    finally:
        leadership.stop()
        await runner.cleanup()
        raft.destroy()


def run_server(config_path: str) -> int:
    """Entry point of `orca server`; exit 2 on a bad config (one line naming file and key)."""
    try:
        cfg = load_master_config(config_path)
    except ConfigError as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {cfg.node_id} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    try:
        asyncio.run(main())
    except OSError as err:
        print(f"orca: cannot listen: {err}", file=sys.stderr)
        return 1
    return 0
