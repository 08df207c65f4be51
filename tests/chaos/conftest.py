"""Fixtures of the chaos tier: a local cluster to kill, and three masters in network namespaces to cut.

`cluster`: three real `orca server` processes on free 127.0.0.1 ports (orca.devcluster), reaped after
the test. `netns_cluster`: `NetnsCluster`, three masters each in its own `ip netns` with a veth into a
bridge the fixture creates, on a /24 of 10.77.0.0/16 that no interface or route of the host uses yet
(chosen at random, so a concurrent run elsewhere on the box does not collide). Everything it made —
processes, iptables rules, namespaces, veths, the bridge — is removed in a `finally`, even when the
test fails. It needs root, iproute2 and iptables; without them it skips saying which one is missing,
except under CI=true (or ORCA_REQUIRE_NETNS=1), where that is a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netns import remove_network
from workload import health

from orca.devcluster import LocalCluster, ManagedProcess

RAFT_PORT = 6881
API_PORT = 6880


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster")
    try:
        c.start()
        c.wait_leader(timeout=30)
        yield c
    finally:
        c.__exit__(None, None, None)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=20, check=check)


@dataclass
class NsMaster(ManagedProcess):
    node_id: str
    netns: str
    address: str
    config: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{API_PORT}"


@dataclass
class NetnsCluster:
    """Three masters, one per network namespace, all bridged; see the module docstring.

    `partition(m)` cuts `m` off from every other master in both directions (iptables DROP inside `m`'s
    namespace), while the test process, on the bridge address, still reaches every API. `heal(m)`
    removes those rules.
    """

    root: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    masters: list[NsMaster] = field(default_factory=list)
    subnet: str = ""
    bridge: str = ""
    _forward_rule: list[str] | None = None
    _made_ns: list[str] = field(default_factory=list)
    _made_links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.bridge = f"orbr{self.tag}"
        self.secret_file = self.root / "cluster.secret"
        self.secret_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex + "\n")
        self.secret_file.chmod(0o600)

    # --- network ----------------------------------------------------------------------------------
    def _free_subnet(self) -> str:
        used = _run("ip", "-4", "route", "show", "table", "all").stdout + _run("ip", "-4", "addr").stdout
        candidates = list(range(100, 250))
        random.shuffle(candidates)
        for n in candidates:
            if f"10.77.{n}." not in used:
                return f"10.77.{n}"
        raise RuntimeError("no free 10.77.x.0/24 left")

    def setup_network(self) -> None:
        self.subnet = self._free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._made_links.append(self.bridge)
        _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # dockerd sets FORWARD to DROP with bridge-nf-call-iptables=1: bridged traffic between the
        # namespaces would be dropped without this rule.
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        _run("iptables", "-I", *rule)
        self._forward_rule = rule
        for i in range(3):
            ns, veth = f"orca-{self.tag}-{i + 1}", f"orv{self.tag}{i + 1}"
            _run("ip", "netns", "add", ns)
            self._made_ns.append(ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._made_links.append(veth)
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.subnet}.{i + 1}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            node_id = f"master-{i + 1}"
            self.masters.append(NsMaster(node_id, ns, f"{self.subnet}.{i + 1}", self.root / f"{node_id}.toml",
                                         self.root / f"{node_id}.log"))
        for m in self.masters:
            m.config.write_text(self._config_text(m))

    def _config_text(self, me: NsMaster) -> str:
        peers = ",\n".join(f'  {{ id = "{p.node_id}", raft = "{p.address}:{RAFT_PORT}", api = "{p.url}" }}'
                           for p in self.masters if p is not me)
        return (f'[node]\nid = "{me.node_id}"\ndata_dir = "{self.root / me.node_id}"\n\n'
                f'[api]\nlisten = "{me.address}:{API_PORT}"\nadvertise = "{me.url}"\n\n'
                f"[api.limits]\nrate_limit_per_minute = 6000000\nrate_limit_burst = 100000\n\n"
                f'[raft]\nlisten = "{me.address}:{RAFT_PORT}"\npeers = [\n{peers}\n]\n\n'
                f'[security]\ncluster_secret_file = "{self.secret_file}"\n'
                # These tests are about partitions, not transport security: plain HTTP inside the test's
                # own namespaces, on purpose (tests/chaos/test_three_hosts.py runs the same layout with TLS).
                'insecure_http = true\n')

    def partition(self, m: NsMaster) -> None:
        for peer in self.masters:
            if peer is not m:
                _run("ip", "netns", "exec", m.netns, "iptables", "-I", "INPUT", "-s", peer.address, "-j", "DROP")
                _run("ip", "netns", "exec", m.netns, "iptables", "-I", "OUTPUT", "-d", peer.address, "-j", "DROP")

    def heal(self, m: NsMaster) -> None:
        # The namespace is ours alone: flushing its filter chains removes exactly the partition.
        _run("ip", "netns", "exec", m.netns, "iptables", "-F", "INPUT")
        _run("ip", "netns", "exec", m.netns, "iptables", "-F", "OUTPUT")

    # --- processes --------------------------------------------------------------------------------
    def start(self, which: list[NsMaster] | None = None) -> None:
        for m in which or self.masters:
            if m.alive:
                continue
            with open(m.log, "ab") as log:
                m.proc = subprocess.Popen(
                    ["ip", "netns", "exec", m.netns, sys.executable, "-m", "orca", "server", "--config",
                     str(m.config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self, m: NsMaster, sig: int = signal.SIGKILL) -> None:
        # `ip netns exec` execs the command: the pid is the master itself.
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(5)

    def token(self, role: str = "admin", name: str = "test") -> str:
        from orca.auth import mint_token, signing_key
        return mint_token(signing_key(self.secret_file.read_bytes().strip()), role=role, name=name,
                          now=time.time(), node=name if role == "agent" else None)[0]

    def leader(self) -> NsMaster | None:
        """The master that says it leads, agreed on by every master that answers."""
        views = {m.node_id: health(m.url) for m in self.masters if m.alive}
        answered = [v for v in views.values() if v is not None]
        claimed = [m for m in self.masters if (views.get(m.node_id) or {}).get("is_leader")]
        if len(claimed) == 1 and answered and all(v.get("leader_id") == claimed[0].node_id for v in answered):
            return claimed[0]
        return None

    def wait_leader(self, timeout: float = 30.0, among: list[NsMaster] | None = None) -> NsMaster:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if among is None:
                leader = self.leader()
                if leader is not None:
                    return leader
            else:
                views = {m.node_id: health(m.url, timeout=0.5) for m in among}
                claimed = [m for m in among if (views[m.node_id] or {}).get("is_leader")]
                if len(claimed) == 1 and all((v or {}).get("leader_id") == claimed[0].node_id
                                             for v in views.values()):
                    return claimed[0]
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout} s; logs in {self.root}")

    # --- clean-up ---------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Remove everything this harness made; returns what could not be removed (should be empty)."""
        problems: list[str] = []
        for m in self.masters:
            try:
                self.kill(m)
            except Exception as exc:  # keep going: the network must be removed whatever happened
                problems.append(f"kill {m.node_id}: {exc}")
        problems += remove_network(self._forward_rule, self._made_ns, self._made_links)
        self._forward_rule = None
        self._made_ns.clear()
        self._made_links.clear()
        return problems


def _netns_unavailable(reason: str) -> None:
    message = f"network namespaces unavailable: {reason}"
    if os.environ.get("CI") == "true" or os.environ.get("ORCA_REQUIRE_NETNS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    if os.geteuid() != 0:
        _netns_unavailable("not root (ip netns and iptables need CAP_NET_ADMIN)")
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            _netns_unavailable(f"`{tool}` is not installed (apt-get install iproute2 iptables)")
    harness = NetnsCluster(tmp_path / "netns")
    problems: list[str] = []
    try:
        try:
            harness.setup_network()
        except subprocess.CalledProcessError as exc:
            problems = harness.teardown()
            _netns_unavailable(f"`{' '.join(exc.cmd)}` failed: {(exc.stderr or '').strip()}")
        harness.start()
        harness.wait_leader(timeout=30)
        yield harness
    finally:
        problems += harness.teardown()
    assert not problems, f"clean-up left things behind: {problems}"

