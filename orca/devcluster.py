"""A local cluster of real master processes on free 127.0.0.1 ports, in a directory of its own.

Used by the cluster tests, the benchmarks and the failover drill, so they all exercise the same
`orca server` an operator runs. Every process is reaped by `stop()` (also on error paths: use it as a
context manager).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LocalCluster", "ManagedProcess", "MasterProc", "AgentProc", "free_ports", "http_exchange"]


def free_ports(n: int) -> list[int]:
    """Ports the kernel just handed out; bound and released together so they are distinct."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class ManagedProcess:
    """A child process this harness started (None until started); `alive` while it runs."""

    proc: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class MasterProc(ManagedProcess):
    node_id: str
    config: Path
    api_port: int
    raft_port: int
    log: Path
    # What runs `orca` for this master (python arguments before `server`): tests run another code
    # version this way, e.g. a script that changes the schema and then calls `orca.cli.main`.
    launcher: list[str] = field(default_factory=lambda: ["-m", "orca"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class AgentProc(ManagedProcess):
    node_id: str
    config: Path
    api_port: int
    status_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    tuning: dict[str, float] = field(default_factory=dict)
    # Tests and benchmarks drive thousands of requests with one token from one address: lift the
    # per-client limit unless a test is about it.
    limits: dict[str, int] = field(default_factory=lambda: {"rate_limit_per_minute": 6_000_000,
                                                             "rate_limit_burst": 100_000})
    masters: list[MasterProc] = field(default_factory=list)
    agents: list[AgentProc] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret_file = self.root / "cluster.secret"
        if not self.secret_file.exists():
            self.secret_file.write_text(secrets.token_hex(32) + "\n")
            self.secret_file.chmod(0o600)
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            node_id = f"master-{i + 1}"
            self.masters.append(MasterProc(node_id, self.root / f"{node_id}.toml", ports[2 * i], ports[2 * i + 1],
                                           self.root / f"{node_id}.log"))
        for m in self.masters:
            m.config.write_text(self._config_text(m))

    def _config_text(self, me: MasterProc) -> str:
        peers = ",\n".join(
            f'  {{ id = "{p.node_id}", raft = "127.0.0.1:{p.raft_port}", api = "{p.url}" }}'
            for p in self.masters if p is not me)
        tuning = "".join(f"{k} = {v}\n" for k, v in self.tuning.items())
        limits = "".join(f"{k} = {v}\n" for k, v in self.limits.items())
        return (f'[node]\nid = "{me.node_id}"\ndata_dir = "{self.root / me.node_id}"\n\n'
                f'[api]\nlisten = "127.0.0.1:{me.api_port}"\nadvertise = "{me.url}"\n\n'
                + (f"[api.limits]\n{limits}\n" if limits else "")
                + f'[raft]\nlisten = "127.0.0.1:{me.raft_port}"\npeers = [\n{peers}\n]\n\n'
                + (f"[raft.tuning]\n{tuning}\n" if tuning else "")
                + f'[security]\ncluster_secret_file = "{self.secret_file}"\n'
                + ("[timing]\n" + "".join(f"{k} = {v}\n" for k, v in self.timing.items()) if self.timing else ""))

    # --- agents -----------------------------------------------------------------------------------
    def add_agent(self, node_id: str, labels: dict[str, str] | None = None, port_base: int | None = None,
                  extra: str = "") -> AgentProc:
        """Write an agent config (its own free ports, host-port range and data dir) and a join token."""
        api_port, status_port = free_ports(2)
        base = port_base or 21000 + 200 * len(self.agents)
        token_file = self.root / f"{node_id}.token"
        token_file.write_text(self.token("agent", node_id) + "\n")
        token_file.chmod(0o600)
        masters = ", ".join(f'"{m.url}"' for m in self.masters)
        label_text = ", ".join(f'{k} = "{v}"' for k, v in (labels or {}).items())
        agent = AgentProc(node_id, self.root / f"{node_id}.toml", api_port, status_port, self.root / f"{node_id}.log")
        heartbeat = self.timing.get("agent_heartbeat_s", 1.0)
        agent.config.write_text(
            f'[agent]\nid = "{node_id}"\nmasters = [{masters}]\ntoken_file = "{token_file}"\n'
            f'listen = "127.0.0.1:{api_port}"\nadvertise = "http://127.0.0.1:{api_port}"\n'
            f'status_listen = "127.0.0.1:{status_port}"\ndata_dir = "{self.root / node_id}"\n'
            f"heartbeat_s = {heartbeat}\nlabels = {{ {label_text} }}\n\n"
            f'[agent.docker]\npublish_address = "127.0.0.1"\nhost_port_range = "{base}-{base + 199}"\n{extra}')
        self.agents.append(agent)
        return agent

    def start_agent(self, agent: AgentProc) -> None:
        if agent.alive:
            return
        log = open(agent.log, "ab")  # noqa: SIM115 - handed to the child
        agent.proc = subprocess.Popen([sys.executable, "-m", "orca", "agent", "--config", str(agent.config)],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()

    # --- processes --------------------------------------------------------------------------------
    def start(self, which: list[MasterProc] | None = None) -> None:
        for m in which or self.masters:
            if m.alive:
                continue
            log = open(m.log, "ab")  # noqa: SIM115 - handed to the child, closed when we reap it
            m.proc = subprocess.Popen([sys.executable, *m.launcher, "server", "--config", str(m.config)],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
            log.close()

    def kill(self, m: MasterProc | AgentProc, sig: int = signal.SIGKILL) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(5)

    def stop(self) -> None:
        for proc in [*self.agents, *self.masters]:
            self.kill(proc, signal.SIGTERM)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in [*self.agents, *self.masters]:
            self.kill(proc, signal.SIGKILL)

    # --- queries ----------------------------------------------------------------------------------
    def token(self, role: str = "admin", name: str = "test") -> str:
        from orca.auth import mint_token, signing_key
        key = signing_key(self.secret_file.read_bytes().strip())
        return mint_token(key, role=role, name=name, now=time.time())[0]

    def health(self, m: MasterProc, timeout: float = 3.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(m.url + "/api/v1/health", timeout=timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def leader(self) -> MasterProc | None:
        """The master that says it leads and that the live others agree on (None if no agreement)."""
        views = {m.node_id: self.health(m) for m in self.masters if m.alive}
        leaders = {v.get("leader_id") for v in views.values() if v is not None}  # None: not agreed yet
        claimed = [m for m in self.masters if (views.get(m.node_id) or {}).get("is_leader")]
        if len(leaders) == 1 and len(claimed) == 1 and claimed[0].node_id in leaders:
            return claimed[0]
        return None

    def wait_leader(self, timeout: float = 20.0, exclude: str | None = None, all_up: bool = False) -> MasterProc:
        """The agreed leader; with `all_up`, also wait until every running master answers and agrees
        (a master still starting on a loaded box does not answer yet, and does not count otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader.node_id != exclude and (
                    not all_up or all((self.health(m) or {}).get("leader_id") == leader.node_id
                                      for m in self.masters if m.alive)):
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout} s; logs in {self.root}")

    def by_id(self, node_id: str) -> MasterProc:
        return next(m for m in self.masters if m.node_id == node_id)


def http_exchange(method: str, url: str, *, token: str | None = None, body: Any = None,
        headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """One HTTP exchange without following redirects, so tests see 307s and envelopes as they are."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, hdrs, payload = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, payload = e.code, dict(e.headers), e.read()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors="replace")
    return status, hdrs, parsed
