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
import ssl
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
    scheme: str = "http"
    # What runs `orca` for this master (python arguments before `server`): tests run another code
    # version this way, e.g. a script that changes the schema and then calls `orca.cli.main`.
    launcher: list[str] = field(default_factory=lambda: ["-m", "orca"])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api_port}"


@dataclass
class AgentProc(ManagedProcess):
    node_id: str
    config: Path
    api_port: int
    status_port: int
    log: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api_port}"


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    tuning: dict[str, float] = field(default_factory=dict)
    raft_options: dict[str, Any] = field(default_factory=dict)  # extra [raft] keys, e.g. {"fsync": False}
    # Tests and benchmarks drive thousands of requests with one token from one address: lift the
    # per-client limit unless a test is about it.
    limits: dict[str, int] = field(default_factory=lambda: {"rate_limit_per_minute": 6_000_000,
                                                             "rate_limit_burst": 100_000})
    masters: list[MasterProc] = field(default_factory=list)
    agents: list[AgentProc] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    tls: bool = False  # HTTPS masters (the cluster CA is made by the first leader); agents then use mTLS
    tls_extra: str = ""  # more lines of the masters' [tls] table (e.g. cert_days = 1)
    mesh_vip_range: str | None = None  # the masters' [mesh] vip_range (tests sharing an engine use their own)

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
                                           self.root / f"{node_id}.log", "https" if self.tls else "http"))
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
                + f'[raft]\nlisten = "127.0.0.1:{me.raft_port}"\npeers = [\n{peers}\n]\n'
                + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.raft_options.items()) + "\n"
                + (f"[raft.tuning]\n{tuning}\n" if tuning else "")
                + f'[security]\ncluster_secret_file = "{self.secret_file}"\n'
                + (f"[tls]\nenabled = true\n{self.tls_extra}\n" if self.tls else "")
                + (f'[mesh]\nvip_range = "{self.mesh_vip_range}"\n\n' if self.mesh_vip_range else "")
                + ("[timing]\n" + "".join(f"{k} = {v}\n" for k, v in self.timing.items()) if self.timing else ""))

    def new_master(self, node_id: str) -> MasterProc:
        """A master to add at runtime (`orca cluster add-master`): fresh ports, the data directory
        `root/<node_id>`, and a config whose peers are the current `masters`. Neither started nor
        appended to `masters`: the caller does both once it has added it."""
        api_port, raft_port = free_ports(2)
        m = MasterProc(node_id, self.root / f"{node_id}.toml", api_port, raft_port, self.root / f"{node_id}.log",
                       "https" if self.tls else "http")
        m.config.write_text(self._config_text(m))
        return m

    def launch_new_master(self, node_id: str, attempts: int = 3, settle_s: float = 2.0) -> MasterProc:
        """`new_master` started: on a busy box another process may take a port between `free_ports` and
        the bind (the master then exits at once), so a master that is gone within `settle_s` is made again
        on other ports, up to `attempts` times."""
        for _ in range(attempts):
            m = self.new_master(node_id)
            self.start([m])
            deadline = time.monotonic() + settle_s
            while m.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            if m.alive:
                return m
        raise RuntimeError(f"{node_id} did not stay up on {attempts} sets of ports; see {self.root / node_id}.log")

    # --- agents -----------------------------------------------------------------------------------
    def add_agent(self, node_id: str, labels: dict[str, str] | None = None, port_base: int | None = None,
                  extra: str = "", token: str | None = None) -> AgentProc:
        """Write an agent config (its own free ports, host-port range and data dir) and its token file:
        `token` when given (e.g. a join token), else a token bound to `node_id`."""
        api_port, status_port = free_ports(2)
        base = port_base or 21000 + 200 * len(self.agents)
        token_file = self.root / f"{node_id}.token"
        token_file.write_text((token or self.token("agent", node_id)) + "\n")
        token_file.chmod(0o600)
        masters = ", ".join(f'"{m.url}"' for m in self.masters)
        label_text = ", ".join(f'{k} = "{v}"' for k, v in (labels or {}).items())
        agent = AgentProc(node_id, self.root / f"{node_id}.toml", api_port, status_port, self.root / f"{node_id}.log",
                          "https" if self.tls else "http")
        # TLS: a node token with ca_file (a join token pins the CA by fingerprint and needs none).
        ca_line = (f'ca_file = "{self.ca_file}"\n' if self.tls and self.ca_file and not
                   (token or "").startswith("ORCAJOIN-2-") else "")
        heartbeat = self.timing.get("agent_heartbeat_s", 1.0)
        agent.config.write_text(
            f'[agent]\nid = "{node_id}"\nmasters = [{masters}]\ntoken_file = "{token_file}"\n'
            f'listen = "127.0.0.1:{api_port}"\nadvertise = "{agent.url}"\n'
            f'status_listen = "127.0.0.1:{status_port}"\ndata_dir = "{self.root / node_id}"\n'
            f"heartbeat_s = {heartbeat}\nlabels = {{ {label_text} }}\n{ca_line}\n"
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
    def token(self, role: str = "admin", name: str = "test", node: str | None = None) -> str:
        """A token minted offline from the cluster secret; an agent token is bound to `node`
        (default: its name)."""
        from orca.auth import mint_token, signing_key
        key = signing_key(self.secret_file.read_bytes().strip())
        if role == "agent" and node is None:
            node = name
        return mint_token(key, role=role, name=name, now=time.time(), node=node)[0]

    @property
    def ca_file(self) -> str | None:
        """HTTPS clusters: `root/ca.crt`, refreshed with the cluster's CA bundle as the masters publish it
        (`GET /api/v1/cluster/ca`, fetched unverified: a test harness on loopback), None before a
        leader made the CA. Before that, masters answer with a provisional certificate of their own."""
        if not self.tls:
            return None
        path = self.root / "ca.crt"
        for m in self.masters:
            try:
                with urllib.request.urlopen(m.url + "/api/v1/cluster/ca", timeout=3,
                                            context=_unverified()) as resp:
                    doc = json.loads(resp.read())
            except (OSError, ValueError, urllib.error.URLError):
                continue
            if doc.get("fingerprint") and doc.get("bundle"):
                if not path.exists() or path.read_text() != doc["bundle"]:
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(doc["bundle"])
                    tmp.replace(path)
                return str(path)
        return str(path) if path.exists() else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """What the harness checks health with: liveness only (no token is sent), so unverified; the
        cluster CA is what clients with tokens verify against (`ca_file`)."""
        return _unverified() if self.tls else None

    def health(self, m: MasterProc, timeout: float = 3.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(m.url + "/api/v1/health", timeout=timeout,
                                        context=self.ssl_context()) as resp:
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
                                      for m in self.masters if m.alive)) and (not self.tls or self.ca_file):
                return leader  # an HTTPS cluster also has its CA by then
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout} s; logs in {self.root}")

    def by_id(self, node_id: str) -> MasterProc:
        return next(m for m in self.masters if m.node_id == node_id)


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def http_exchange(method: str, url: str, *, token: str | None = None, body: Any = None,
        headers: dict[str, str] | None = None, timeout: float = 10.0,
        cafile: str | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP exchange without following redirects, so tests see 307s and envelopes as they are;
    an https URL is verified against `cafile` (the cluster CA)."""

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
    handlers: list[Any] = [NoRedirect]
    if cafile is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    opener = urllib.request.build_opener(*handlers)
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
