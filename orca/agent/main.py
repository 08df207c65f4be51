"""`orca agent --config FILE` and `orca join URL... --token-file F`: wire config, runtime, agent and APIs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from orca import logging_setup
from orca.agent.agent import Agent
from orca.agent.api import make_agent_api, make_status_api
from orca.agent.runtime import DockerRuntime, Runtime
from orca.config import AgentConfig, ConfigError, load_agent_config, parse_host_port
from orca.filemodes import FileModeError, private_umask, secure_paths

__all__ = ["run_agent", "run_join", "join_config", "serve"]

log = logging.getLogger("orca.agent")

# `orca join` flags -> where they live in an agent config file.
_JOIN_KEYS = {
    "agent_id": ("agent", "id"), "id": ("agent", "id"), "listen": ("agent", "listen"),
    "advertise": ("agent", "advertise"), "status_listen": ("agent", "status_listen"),
    "data_dir": ("agent", "data_dir"), "labels": ("agent", "labels"), "heartbeat_s": ("agent", "heartbeat_s"),
    "publish_address": ("docker", "publish_address"), "host_port_range": ("docker", "host_port_range"),
    "memory": ("resources", "memory"), "memory_bytes": ("resources", "memory"), "cpu": ("resources", "cpu"),
    "ca_file": ("agent", "ca_file"),
}


async def serve(config: AgentConfig, runtime: Runtime | None = None) -> int:
    """Run one agent until SIGTERM/SIGINT (containers keep running) or a `shutdown` directive."""
    if runtime is None:
        runtime = DockerRuntime(config.agent_id, config.publish_address)
        runtime.bind_paths, runtime.bind_paths_rw = config.bind_paths, config.bind_paths_rw
    agent = Agent(config, runtime)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, agent.stop)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
            pass
    runners: list[web.AppRunner] = []
    if config.tls:
        # The agent API listens with this node's certificate: trust and certificate come first.
        stopping = asyncio.Event()
        waiter = asyncio.create_task(agent._stop.wait())
        waiter.add_done_callback(lambda _: stopping.set())
        ready = await agent.link.prepare_tls(stopping)
        waiter.cancel()
        if not ready:
            await agent.link.close()
            return 0
    elif config.insecure_http:
        log.warning("agent.insecure_http = true: the agent API on %s is plain HTTP; pushed secret values cross "
                    "the network in clear", config.listen)
    try:
        for app, listen in ((make_agent_api(agent), config.listen), (make_status_api(agent), config.status_listen)):
            # A short shutdown timeout: a `follow` log stream must not hold the agent's exit for a minute.
            access = (logging.getLogger(logging_setup.API_ACCESS_LOGGER)
                      if listen == config.listen and config.log.access_log else None)
            runner = web.AppRunner(app, access_log=access, access_log_class=logging_setup.ApiAccessLogger,
                                   handle_signals=False, shutdown_timeout=2.0)
            await runner.setup()
            runners.append(runner)
            host, port = parse_host_port(listen)
            server = agent.link.tls.server if listen == config.listen and config.tls else None
            await web.TCPSite(runner, host, port, reuse_address=True,
                              ssl_context=server.outer if server is not None else None).start()
        if agent.proxy is not None:
            await agent.proxy.start()
        if agent.mesh is not None:
            await agent.mesh.start()
        log.info("agent %s: API on %s (advertised %s), status on %s, ingress proxy %s, masters %s", config.agent_id,
                 config.listen, config.advertise, config.status_listen,
                 config.proxy.listen if config.proxy is not None else "off", ", ".join(config.masters))
        return await agent.run()
    finally:
        if agent.mesh is not None:
            await agent.mesh.stop()
        if agent.proxy is not None:
            await agent.proxy.stop()  # in-flight requests get drain_timeout_s
        for runner in reversed(runners):
            await runner.cleanup()


def _run(config: AgentConfig, log_level: str | None = None, log_format: str | None = None,
         access_log: bool | None = None) -> int:
    """Logging (flags over ORCA_LOG_* over `[agent.log]`), private paths, then serve until stopped."""
    try:
        settings = logging_setup.resolve(config.log, level=log_level, fmt=log_format, access_log=access_log)
    except ValueError as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2
    logging_setup.configure(settings, config.agent_id)
    config = dataclasses.replace(config, log=settings)
    # The data directory holds the push token and the last desired set with plain secret values.
    private_umask()
    try:
        secure_paths([config.data_dir], [config.token_file])
    except (FileModeError, OSError) as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config))
    except OSError as err:
        print(f"orca: cannot listen: {err}", file=sys.stderr)
        return 1


def run_agent(config_path: str, *, log_level: str | None = None, log_format: str | None = None,
              access_log: bool | None = None) -> int:
    """Entry point of `orca agent --config FILE`; 2 on a bad config (one line naming file and key)."""
    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2
    return _run(config, log_level, log_format, access_log)


def run_join(masters: list[str], token_file: str, *, log_level: str | None = None, log_format: str | None = None,
             access_log: bool | None = None, **overrides: Any) -> int:
    """Entry point of `orca join URL... --token-file F [--id ID] [--listen ..] [--data-dir ..] ...`."""
    try:
        config = join_config(masters, token_file, **overrides)
    except ConfigError as err:
        print(f"orca: {err}", file=sys.stderr)
        return 2
    return _run(config, log_level, log_format, access_log)


def _default_id() -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:63]
    return name or "worker"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string without \\u escapes of astral characters is a valid TOML basic string.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot express {value!r} in TOML")


def join_config(masters: list[str], token_file: str, **overrides: Any) -> AgentConfig:
    """Build the AgentConfig `orca join` means, validated by exactly the rules of a config file.

    Unset overrides (None) take the file defaults; the id defaults to the host name and the data
    directory to `./data/<id>`. Labels may be a dict or "k=v" strings. A bad value raises ConfigError
    naming the flag (e.g. `orca join: --listen: expected 'host:port', got 'x'`).
    """
    tables: dict[str, dict[str, Any]] = {"agent": {}, "docker": {}, "resources": {}}
    for key, value in overrides.items():
        if key not in _JOIN_KEYS:
            raise TypeError(f"unknown join option {key!r}")
        if value is None:
            continue
        table, name = _JOIN_KEYS[key]
        if key == "labels" and not isinstance(value, dict):
            pairs = [str(item).partition("=") for item in value]
            bad = next((k for k, sep, _ in pairs if not sep or not k), None)
            if bad is not None:
                raise ConfigError("orca join", "--label", f"expected KEY=VALUE, got {bad!r}")
            value = {k: v for k, _, v in pairs}
        if key == "host_port_range" and isinstance(value, list | tuple):
            value = f"{value[0]}-{value[1]}"
        tables[table][name] = value
    agent = tables["agent"]
    agent.setdefault("id", _default_id())
    agent.setdefault("data_dir", f"./data/{agent['id']}")
    agent["masters"] = list(masters)
    agent["token_file"] = str(token_file)

    lines = ["[agent]"] + [f"{k} = {_toml(v)}" for k, v in agent.items()]
    for table in ("docker", "resources"):
        if tables[table]:
            lines += [f"[agent.{table}]"] + [f"{k} = {_toml(v)}" for k, v in tables[table].items()]
    with tempfile.TemporaryDirectory(prefix="orca-join-") as tmp:
        path = Path(tmp) / "agent.toml"
        path.write_text("\n".join(lines) + "\n")
        try:
            config = load_agent_config(path)
        except ConfigError as err:
            raise ConfigError("orca join", _flag(err.key), err.problem) from None
    return dataclasses.replace(config, path="orca join")


def _flag(key: str | None) -> str | None:
    """`agent.docker.host_port_range` -> `--host-port-range`; `agent.masters[1]` -> `masters[1]`."""
    if key is None:
        return None
    if key.startswith("agent.labels"):
        return "--label"
    last = key.split(".")[-1]
    if last.startswith("masters"):
        return last
    return "--" + last.replace("_", "-")
