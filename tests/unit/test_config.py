"""orca.config: the shipped configs load, every kind of mistake is one line naming file and key."""

from __future__ import annotations

import dataclasses
import pickle
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import orca.config as config
from orca.config import (
    AgentConfig,
    ApiLimits,
    ConfigError,
    LogSettings,
    MasterConfig,
    MeshConfig,
    Peer,
    ProxyConfig,
    RaftTuning,
    load_agent_config,
    load_master_config,
    parse_host_port,
    parse_memory,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = b"0123456789abcdef0123456789abcdef"
# payload {"role": "agent", "node": "worker-1"}
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYWdlbnQiLCJub2RlIjoid29ya2VyLTEifQ.c2ln"

PEERS = """peers = [
  { id = "master-2", raft = "127.0.0.1:6883", api = "http://127.0.0.1:6882" },
  { id = "master-3", raft = "127.0.0.1:6885", api = "http://127.0.0.1:6884" },
]
"""

MASTER = f"""
[node]
id = "master-1"
data_dir = "./data/master-1"

[api]
listen = "127.0.0.1:6880"

[raft]
listen = "127.0.0.1:6881"
{PEERS}
[security]
cluster_secret_file = "./data/cluster.secret"
"""

AGENT = """
[agent]
id = "worker-1"
masters = ["http://127.0.0.1:6880", "http://127.0.0.1:6882"]
token_file = "./data/worker-1.token"
data_dir = "./data/worker-1"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding ./data/cluster.secret and ./data/worker-1.token, as at the repo root."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cluster.secret").write_bytes(SECRET + b"\n")
    (tmp_path / "data" / "worker-1.token").write_text(TOKEN + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(directory: Path, text: str, name: str = "conf.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def config_error(load: Callable[[Path], Any], path: Path) -> str:
    """The one-line message `load(path)` fails with."""
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    return message


# --- the shipped files -------------------------------------------------------------------------------


def test_cluster_masters_load_and_agree(workdir: Path) -> None:
    nodes = {n: load_master_config(REPO / "cluster" / f"node{n}.toml") for n in (1, 2, 3)}
    for n, cfg in nodes.items():
        assert cfg.node_id == f"master-{n}"
        assert cfg.host_port("api") == ("127.0.0.1", 6878 + 2 * n)
        assert cfg.host_port("raft") == ("127.0.0.1", 6879 + 2 * n)
        assert cfg.api_advertise == f"http://127.0.0.1:{6878 + 2 * n}"
        assert cfg.data_dir == workdir / "data" / f"master-{n}"
        assert cfg.cluster_secret_file == workdir / "data" / "cluster.secret"
        assert cfg.cluster_secret == SECRET
        # Each lists exactly the two others, as they describe themselves.
        others = {Peer(o.node_id, o.raft_listen, o.api_advertise) for m, o in nodes.items() if m != n}
        assert set(cfg.peers) == others and len(cfg.peers) == 2


def test_cluster_agent_loads(workdir: Path) -> None:
    cfg = load_agent_config(REPO / "cluster" / "agent1.toml")
    assert cfg.agent_id == "worker-1"
    assert cfg.masters == ("http://127.0.0.1:6880", "http://127.0.0.1:6882", "http://127.0.0.1:6884")
    assert cfg.token_file == workdir / "data" / "worker-1.token"
    assert cfg.token == TOKEN
    assert (cfg.listen, cfg.advertise, cfg.status_listen) == (
        "127.0.0.1:6890", "http://127.0.0.1:6890", "127.0.0.1:9100")
    assert cfg.data_dir == workdir / "data" / "worker-1"
    assert cfg.labels == {"zone": "a"}
    assert cfg.publish_address == "127.0.0.1"
    assert cfg.host_port_range == (20000, 20999)


def _flatten(table: dict[str, Any], prefix: str = "", leaves: tuple[str, ...] = ("peers", "labels")) -> set[str]:
    keys: set[str] = set()
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key not in leaves:
            keys |= _flatten(value, dotted + ".", leaves)
        else:
            keys.add(dotted)
    return keys


def _example_agent_block() -> str:
    text = (REPO / "config.example.toml").read_text()
    block = text.split("# AGENT-EXAMPLE-BEGIN\n", 1)[1].split("# AGENT-EXAMPLE-END", 1)[0]
    return "".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in block.splitlines(True))


def test_example_is_a_master_config_documenting_every_key_with_its_default(workdir: Path) -> None:
    path = REPO / "config.example.toml"
    cfg = load_master_config(path)
    assert cfg.limits == ApiLimits()
    assert cfg.tuning == RaftTuning()
    assert (cfg.agent_heartbeat_s, cfg.node_lease_ttl_s) == (1.0, 5.0)
    assert cfg.api_advertise == "http://" + cfg.api_listen
    assert cfg.metrics_require_token is False and cfg.log == LogSettings()
    documented = _flatten(tomllib.loads(path.read_text()))
    expected = {"node.id", "node.data_dir", "api.listen", "api.advertise", "raft.listen", "raft.peers",
                "raft.allow_from", "raft.fsync",
                "security.cluster_secret_file", "security.metrics_require_token", "timing.agent_heartbeat_s",
                "timing.node_lease_ttl_s",
                "security.insecure_http", "tls.enabled", "tls.cert_days", "log.level", "log.format", "log.access_log",
                "mesh.vip_range"}
    expected |= {f"api.limits.{f.name}" for f in dataclasses.fields(ApiLimits)}
    expected |= {f"raft.tuning.{f.name}" for f in dataclasses.fields(RaftTuning)}
    assert documented == expected


def test_example_agent_part_loads_and_documents_every_key(workdir: Path) -> None:
    block = _example_agent_block()
    cfg = load_agent_config(write(workdir, block, "agent.toml"))
    defaults = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
    for name in ("listen", "status_listen", "publish_address", "host_port_range", "heartbeat_s"):
        assert getattr(cfg, name) == defaults[name], name
    assert cfg.advertise == "http://" + cfg.listen
    assert cfg.memory_bytes == 4 * 2**30 and cfg.cpu == 2.0
    assert _flatten(tomllib.loads(block)) == {
        "agent.id", "agent.masters", "agent.token_file", "agent.listen", "agent.advertise",
        "agent.status_listen", "agent.data_dir", "agent.labels", "agent.heartbeat_s",
        "agent.docker.publish_address", "agent.docker.host_port_range",
        "agent.docker.bind_paths", "agent.docker.bind_paths_rw",
        "agent.resources.memory", "agent.resources.cpu", "agent.ca_file", "agent.insecure_http",
        "agent.metrics_require_token",
    } | {f"agent.proxy.{f.name}" for f in dataclasses.fields(ProxyConfig)} \
        | {f"agent.log.{f.name}" for f in dataclasses.fields(LogSettings)} \
        | {f"agent.mesh.{f.name}" for f in dataclasses.fields(MeshConfig)}
    assert cfg.proxy == ProxyConfig()  # the documented values are the defaults
    assert cfg.mesh == MeshConfig()
    assert cfg.log == LogSettings() and cfg.metrics_require_token is False
    assert (cfg.bind_paths, cfg.bind_paths_rw) == (("/srv/orca-config",), ("/srv/orca-exports",))


# --- defaults and path resolution ---------------------------------------------------------------------


def test_master_defaults_and_paths_relative_to_cwd_not_to_the_file(workdir: Path) -> None:
    (workdir / "conf").mkdir()
    path = write(workdir / "conf", MASTER)
    cfg = load_master_config(str(path))
    assert isinstance(cfg, MasterConfig)
    assert cfg.path == str(path)
    assert cfg.data_dir == workdir / "data" / "master-1"  # not workdir/conf/data/...
    assert cfg.cluster_secret_file.is_absolute()
    assert cfg.api_advertise == "http://127.0.0.1:6880"
    assert cfg.limits == ApiLimits() and cfg.tuning == RaftTuning()
    assert (cfg.agent_heartbeat_s, cfg.node_lease_ttl_s) == (1.0, 5.0)
    assert cfg.peers[0] == Peer("master-2", "127.0.0.1:6883", "http://127.0.0.1:6882")


def test_agent_defaults(workdir: Path) -> None:
    (workdir / "conf").mkdir()
    cfg = load_agent_config(write(workdir / "conf", AGENT))
    assert cfg.listen == "127.0.0.1:6890" and cfg.advertise == "http://127.0.0.1:6890"
    assert cfg.status_listen == "127.0.0.1:9100"
    assert cfg.data_dir == workdir / "data" / "worker-1"
    assert cfg.labels == {} and cfg.heartbeat_s == 1.0
    assert cfg.publish_address == "127.0.0.1" and cfg.host_port_range == (20000, 20999)
    assert cfg.memory_bytes is None and cfg.cpu is None
    assert cfg.proxy is None  # off unless [agent.proxy] is there


def test_agent_mesh(workdir: Path) -> None:
    assert load_agent_config(write(workdir, AGENT)).mesh is None  # off unless [agent.mesh] is there
    assert load_agent_config(write(workdir, AGENT + "[agent.mesh]\n")).mesh == MeshConfig()
    cfg = load_agent_config(write(workdir, AGENT + '[agent.mesh]\nsubnet_pool = "10.9.0.0/20"\n'))
    assert cfg.mesh == MeshConfig(subnet_pool="10.9.0.0/20")
    for bad in ("10.9.0.1/20", "10.9.0.0/25", "fd00::/64", "pool"):
        with pytest.raises(ConfigError, match="agent.mesh.subnet_pool"):
            load_agent_config(write(workdir, AGENT + f'[agent.mesh]\nsubnet_pool = "{bad}"\n'))


def test_agent_proxy(workdir: Path) -> None:
    cfg = load_agent_config(write(workdir, AGENT + "[agent.proxy]\n"))
    assert cfg.proxy == ProxyConfig(listen="127.0.0.1:8080", strategy="round_robin", idle_timeout_s=60.0,
                                    request_timeout_s=30.0, upstream_connect_timeout_s=2.0, drain_timeout_s=10.0)
    text = AGENT + ('[agent.proxy]\nlisten = "0.0.0.0:80"\nstrategy = "least_conn"\nidle_timeout_s = 5\n'
                    "request_timeout_s = 1.5\nupstream_connect_timeout_s = 0.5\ndrain_timeout_s = 3\n")
    cfg = load_agent_config(write(workdir, text))
    assert cfg.proxy == ProxyConfig(listen="0.0.0.0:80", strategy="least_conn", idle_timeout_s=5.0,
                                    request_timeout_s=1.5, upstream_connect_timeout_s=0.5, drain_timeout_s=3.0)
    assert isinstance(cfg.proxy.idle_timeout_s, float)


def test_overrides_are_normalised(workdir: Path) -> None:
    text = MASTER.replace('listen = "127.0.0.1:6880"', 'listen = "[::1]:6880"\nadvertise = "https://m1.example:8443/"')
    text += "[raft.tuning]\nheartbeat_s = 0.1\nelection_min_s = 1\nelection_max_s = 2\n"
    text += "[api.limits]\nmax_body_bytes = 65536\n[timing]\nagent_heartbeat_s = 2\nnode_lease_ttl_s = 10\n"
    cfg = load_master_config(write(workdir, text))
    assert cfg.host_port("api") == ("::1", 6880)
    assert cfg.api_advertise == "https://m1.example:8443"  # trailing slash dropped
    assert cfg.tuning == RaftTuning(election_min_s=1.0, election_max_s=2.0, heartbeat_s=0.1)
    assert isinstance(cfg.tuning.election_min_s, float)
    assert cfg.limits == ApiLimits(max_body_bytes=65536)
    assert (cfg.agent_heartbeat_s, cfg.node_lease_ttl_s) == (2.0, 10.0)


def test_single_master_may_have_no_peers(workdir: Path) -> None:
    assert load_master_config(write(workdir, MASTER.replace(PEERS, "peers = []\n"))).peers == ()


# --- master errors ------------------------------------------------------------------------------------

MASTER_ERRORS = [
    # (old, new, dotted key, fragment of the problem)
    ('id = "master-1"\n', "", "node.id", "missing required key"),
    ('[security]\ncluster_secret_file = "./data/cluster.secret"\n', "", "security", "missing required table"),
    ('id = "master-1"', "id = 5", "node.id", "expected a string, got integer 5"),
    ('id = "master-1"', 'id = "Master_1"', "node.id", "expected an id matching [a-z0-9-]{1,63}"),
    ('id = "master-1"', 'id = "' + "a" * 64 + '"', "node.id", "expected an id"),
    ('id = "master-1"', 'id = ""', "node.id", "must not be empty"),
    ('[node]\nid = "master-1"\ndata_dir = "./data/master-1"\n', "node = 5\n", "node",
     "expected a table, got integer 5"),
    ("data_dir =", "datadir =", "node.datadir", "unknown key (did you mean 'data_dir'?)"),
    ("[security]", "[extra]\n[security]", "extra", "unknown key"),
    ('api = "http://127.0.0.1:6884" }', 'api = "http://127.0.0.1:6884", port = 1 }', "raft.peers[1].port",
     "unknown key"),
    ('api = "http://127.0.0.1:6884"', 'api = "foo"', "raft.peers[1].api", "expected an http(s) URL, got 'foo'"),
    ('api = "http://127.0.0.1:6884"', 'api = "ftp://127.0.0.1:6884"', "raft.peers[1].api", "expected an http"),
    ('api = "http://127.0.0.1:6884"', 'api = "http://127.0.0.1:6884/api"', "raft.peers[1].api", "without path"),
    ('api = "http://127.0.0.1:6884"', 'api = "http://127.0.0.1:99999"', "raft.peers[1].api", "expected an http"),
    ('api = "http://127.0.0.1:6884"', 'api = "http://u:p@127.0.0.1:6884"', "raft.peers[1].api", "expected"),
    ('raft = "127.0.0.1:6883"', 'raft = "127.0.0.1"', "raft.peers[0].raft", "expected 'host:port'"),
    ('raft = "127.0.0.1:6883"', 'raft = "127.0.0.1:6881"', "raft.peers[0].raft", "duplicate Raft address"),
    ('id = "master-3"', 'id = "master-2"', "raft.peers[1].id", "duplicate peer id 'master-2'"),
    ('id = "master-3"', 'id = "master-1"', "raft.peers[1].id", "this node's own id"),
    (PEERS, 'peers = "master-2"\n', "raft.peers", "expected an array, got string 'master-2'"),
    (PEERS, 'peers = ["master-2"]\n', "raft.peers[0]", "expected a table"),
    (PEERS, "", "raft.peers", "missing required key"),
    ('listen = "127.0.0.1:6880"', 'listen = "127.0.0.1"', "api.listen", "expected 'host:port', got '127.0.0.1'"),
    ('listen = "127.0.0.1:6880"', 'listen = ":6880"', "api.listen", "expected 'host:port'"),
    ('listen = "127.0.0.1:6880"', 'listen = "127.0.0.1:70000"', "api.listen", "1..65535"),
    ('listen = "127.0.0.1:6880"', 'listen = "127.0.0.1:6881"', "raft.listen", "same address as api.listen"),
    ('listen = "127.0.0.1:6880"', 'listen = "127.0.0.1:6880"\nadvertise = "127.0.0.1:6880"', "api.advertise",
     "expected an http(s) URL, got '127.0.0.1:6880'"),
    ("[security]", "[api.limits]\nmax_body_bytes = 1.5\n[security]", "api.limits.max_body_bytes",
     "expected an integer, got float 1.5"),
    ("[security]", "[api.limits]\nrate_limit_burst = 0\n[security]", "api.limits.rate_limit_burst",
     "expected a positive integer"),
    ("[security]", "[api.limits]\nrate_limit = 5\n[security]", "api.limits.rate_limit", "unknown key"),
    ("[security]", "[raft.tuning]\nelection_min = 0.3\n[security]", "raft.tuning.election_min", "unknown key"),
    ("[security]", "[raft.tuning]\nelection_min_s = 0.1\n[security]", "raft.tuning.election_min_s",
     "must be > 3 * heartbeat_s (0.15)"),
    ("[security]", "[raft.tuning]\nelection_max_s = 0.2\n[security]", "raft.tuning.election_max_s",
     "must be > election_min_s (0.2)"),
    ("[security]", "[raft.tuning]\nheartbeat_s = -0.05\n[security]", "raft.tuning.heartbeat_s",
     "expected a positive number"),
    ("[security]", "[raft.tuning]\nwrite_timeout_s = inf\n[security]", "raft.tuning.write_timeout_s",
     "expected a positive number"),
    ("[security]", '[raft.tuning]\nwrite_timeout_s = "3"\n[security]', "raft.tuning.write_timeout_s",
     "expected a number, got string '3'"),
    ("[security]", "[timing]\nagent_heartbeat_s = true\n[security]", "timing.agent_heartbeat_s",
     "expected a number, got boolean True"),
    ("[security]", "[timing]\nnode_lease_ttl_s = 1.0\n[security]", "timing.node_lease_ttl_s",
     "must be > agent_heartbeat_s (1)"),
    ('"./data/cluster.secret"', '"./data/missing.secret"', "security.cluster_secret_file", "cannot read"),
    ('"./data/cluster.secret"', '"./data"', "security.cluster_secret_file", "cannot read"),
    ('"./data/cluster.secret"', '"./data/empty.secret"', "security.cluster_secret_file", "is empty"),
    ('"./data/cluster.secret"', '"./data/short.secret"', "security.cluster_secret_file",
     "is 15 bytes, need at least 16"),
    ('"./data/cluster.secret"', '""', "security.cluster_secret_file", "must not be empty"),
]


@pytest.mark.parametrize(("old", "new", "key", "fragment"), MASTER_ERRORS)
def test_master_errors_name_file_and_key(workdir: Path, old: str, new: str, key: str, fragment: str) -> None:
    (workdir / "data" / "empty.secret").write_bytes(b" \n\n")
    (workdir / "data" / "short.secret").write_bytes(b"  " + b"x" * 15 + b"\n")
    assert old in MASTER
    path = write(workdir, MASTER.replace(old, new, 1))
    message = config_error(load_master_config, path)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message, message


def test_the_documented_example_message(workdir: Path) -> None:
    path = write(workdir, MASTER.replace('api = "http://127.0.0.1:6884"', 'api = "foo"'))
    assert config_error(load_master_config, path) == f"{path}: raft.peers[1].api: expected an http(s) URL, got 'foo'"


def test_unreadable_or_invalid_file(workdir: Path) -> None:
    missing = workdir / "nope.toml"
    assert "cannot read config" in config_error(load_master_config, missing)
    assert "invalid TOML" in config_error(load_master_config, write(workdir, "[node\nid = 1\n"))
    bad_utf8 = workdir / "latin1.toml"
    bad_utf8.write_bytes(b'[node]\nid = "\xe9"\n')
    assert "invalid TOML" in config_error(load_agent_config, bad_utf8)
    assert config_error(load_master_config, write(workdir, "")).endswith(": node: missing required table")


def test_an_agent_file_is_not_a_master_config(workdir: Path) -> None:
    path = write(workdir, AGENT)
    assert config_error(load_master_config, path).startswith(f"{path}: agent: unknown key")
    path = write(workdir, MASTER, "m.toml")
    assert config_error(load_agent_config, path).startswith(f"{path}: node: unknown key")


# --- agent errors -------------------------------------------------------------------------------------

AGENT_ERRORS = [
    ('id = "worker-1"\n', "", "agent.id", "missing required key"),
    ('id = "worker-1"', 'id = "worker 1"', "agent.id", "expected an id"),
    ('data_dir = "./data/worker-1"\n', "", "agent.data_dir", "missing required key"),
    ('masters = ["http://127.0.0.1:6880", "http://127.0.0.1:6882"]', "masters = []", "agent.masters",
     "at least one"),
    ('masters = ["http://127.0.0.1:6880", "http://127.0.0.1:6882"]', 'masters = "http://127.0.0.1:6880"',
     "agent.masters", "expected an array"),
    ('"http://127.0.0.1:6882"', '"x"', "agent.masters[1]", "expected an http(s) URL, got 'x'"),
    ('"http://127.0.0.1:6882"', "6882", "agent.masters[1]", "expected an http(s) URL, got integer 6882"),
    ('"http://127.0.0.1:6882"', '"http://127.0.0.1:6880/"', "agent.masters[1]", "duplicate master URL"),
    ('"./data/worker-1.token"', '"./data/none.token"', "agent.token_file", "cannot read"),
    ('"./data/worker-1.token"', '"./data/empty.token"', "agent.token_file", "is empty"),
    ('"./data/worker-1.token"', '"./data/two.token"', "agent.token_file", "whitespace"),
    ('"./data/worker-1.token"', '"./data/binary.token"', "agent.token_file", "not UTF-8"),
    ('"./data/worker-1.token"', '"./data/unbound.token"', "agent.token_file", "not bound to a node"),
    ('"./data/worker-1.token"', '"./data/other-node.token"', "agent.token_file", "bound to node 'worker-2'"),
    ("[agent]", "[agent]\nlisten = \"127.0.0.1\"", "agent.listen", "expected 'host:port'"),
    ("[agent]", '[agent]\nadvertise = "localhost"', "agent.advertise", "expected an http(s) URL"),
    ("[agent]", '[agent]\nstatus_listen = "0.0.0.0:9100"', "agent.status_listen", "loopback"),
    ("[agent]", '[agent]\nstatus_listen = "127.0.0.1:6890"', "agent.status_listen", "same address"),
    ("[agent]", "[agent]\nlabels = { zone = 1 }", "agent.labels.zone", "expected a string, got integer 1"),
    ("[agent]", '[agent]\nlabels = ["a"]', "agent.labels", "expected a table"),
    ("[agent]", '[agent]\nheartbeat_s = "1"', "agent.heartbeat_s", "expected a number"),
    ("[agent]", "[agent]\nheartbeat = 1", "agent.heartbeat", "unknown key (did you mean 'heartbeat_s'?)"),
    ("[agent]", "[node]\n[agent]", "node", "unknown key"),
    ("[agent]", '[agent.docker]\nhost_port_range = "20999-20000"\n[agent]', "agent.docker.host_port_range",
     "LOW <= HIGH"),
    ("[agent]", '[agent.docker]\nhost_port_range = "0-10"\n[agent]', "agent.docker.host_port_range", "1 <="),
    ("[agent]", '[agent.docker]\nhost_port_range = "20000"\n[agent]', "agent.docker.host_port_range",
     "expected 'LOW-HIGH'"),
    ("[agent]", "[agent.docker]\nhost_port_range = [1, 2]\n[agent]", "agent.docker.host_port_range",
     "expected a string"),
    ("[agent]", '[agent.docker]\npublish_address = "localhost"\n[agent]', "agent.docker.publish_address",
     "expected an IP address"),
    ("[agent]", '[agent.docker]\npublish = "127.0.0.1"\n[agent]', "agent.docker.publish", "unknown key"),
    ("[agent]", '[agent.docker]\nbind_paths = "/srv"\n[agent]', "agent.docker.bind_paths", "expected an array"),
    ("[agent]", '[agent.docker]\nbind_paths = ["srv"]\n[agent]', "agent.docker.bind_paths[0]", "absolute"),
    ("[agent]", '[agent.docker]\nbind_paths_rw = ["/"]\n[agent]', "agent.docker.bind_paths_rw[0]", "other than"),
    ("[agent]", '[agent.docker]\nbind_paths = ["/a/../b"]\n[agent]', "agent.docker.bind_paths[0]", "absolute"),
    ("[agent]", '[agent.docker]\nbind_paths = ["/a", 1]\n[agent]', "agent.docker.bind_paths[1]", "absolute"),
    (AGENT, "agent = 1\n", "agent", "expected a table, got integer 1"),
    ("[agent]", '[agent.resources]\nmemory = "4GB"\n[agent]', "agent.resources.memory",
     "expected a memory size like '512Mi', got '4GB'"),
    ("[agent]", "[agent.resources]\nmemory = 0\n[agent]", "agent.resources.memory", "must be positive"),
    ("[agent]", "[agent.resources]\nmemory = true\n[agent]", "agent.resources.memory", "got boolean True"),
    ("[agent]", "[agent.resources]\ncpu = 0\n[agent]", "agent.resources.cpu", "expected a positive number"),
    ("[agent]", "[agent.resources]\ncpus = 2\n[agent]", "agent.resources.cpus", "did you mean 'cpu'?"),
    ("[agent]", "[agent.proxy]\nlisten = 8080\n[agent]", "agent.proxy.listen", "expected a string"),
    ("[agent]", '[agent.proxy]\nlisten = "8080"\n[agent]', "agent.proxy.listen", "expected 'host:port'"),
    ("[agent]", '[agent.proxy]\nlisten = "127.0.0.1:6890"\n[agent]', "agent.proxy.listen",
     "same address as agent.listen"),
    ("[agent]", '[agent.proxy]\nlisten = "127.0.0.1:9100"\n[agent]', "agent.proxy.listen",
     "same address as agent.status_listen"),
    ("[agent]", '[agent.proxy]\nstrategy = "random"\n[agent]', "agent.proxy.strategy",
     "expected one of round_robin, least_conn, got 'random'"),
    ("[agent]", "[agent.proxy]\nidle_timeout_s = 0\n[agent]", "agent.proxy.idle_timeout_s",
     "expected a positive number"),
    ("[agent]", '[agent.proxy]\nrequest_timeout_s = "30"\n[agent]', "agent.proxy.request_timeout_s",
     "expected a number"),
    ("[agent]", "[agent.proxy]\nupstream_connect_timeout_s = -1\n[agent]",
     "agent.proxy.upstream_connect_timeout_s", "expected a positive number"),
    ("[agent]", "[agent.proxy]\ndrain_timeout_s = true\n[agent]", "agent.proxy.drain_timeout_s",
     "expected a number, got boolean"),
    ("[agent]", "[agent.proxy]\ndrain_timeout = 5\n[agent]", "agent.proxy.drain_timeout",
     "unknown key (did you mean 'drain_timeout_s'?)"),
    ("[agent]", "[agent]\nproxy = true", "agent.proxy", "expected a table, got boolean"),
]


@pytest.mark.parametrize(("old", "new", "key", "fragment"), AGENT_ERRORS)
def test_agent_errors_name_file_and_key(workdir: Path, old: str, new: str, key: str, fragment: str) -> None:
    (workdir / "data" / "empty.token").write_text("\n")
    (workdir / "data" / "two.token").write_text("abc\ndef\n")
    (workdir / "data" / "binary.token").write_bytes(b"\xff\xfe")
    (workdir / "data" / "unbound.token").write_text("eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYWdlbnQifQ.c2ln")
    (workdir / "data" / "other-node.token").write_text(
        "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYWdlbnQiLCJub2RlIjoid29ya2VyLTIifQ.c2ln")
    assert old in AGENT
    path = write(workdir, AGENT.replace(old, new, 1))
    message = config_error(load_agent_config, path)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message, message


def test_agent_resources_and_labels(workdir: Path) -> None:
    text = AGENT + 'labels = { zone = "a", "disk.type" = "ssd" }\n'
    text += '[agent.resources]\nmemory = "512Mi"\ncpu = 2\n[agent.docker]\nhost_port_range = "30000 - 30009"\n'
    cfg = load_agent_config(write(workdir, text))
    assert cfg.labels == {"zone": "a", "disk.type": "ssd"}
    assert cfg.memory_bytes == 536870912 and cfg.cpu == 2.0 and isinstance(cfg.cpu, float)
    assert cfg.host_port_range == (30000, 30009)


# --- value parsers and the error type -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:6880", ("127.0.0.1", 6880)),
    ("localhost:1", ("localhost", 1)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("master-1.example:80", ("master-1.example", 80)),
    ("[::1]:6881", ("::1", 6881)),
])
def test_parse_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


@pytest.mark.parametrize("value", [
    "", "6880", ":6880", "host:", "host:0", "host:65536", "host:12a", "::1:6880", "[::1]6880",
    "[nothost]:80", "ho st:80", "-host:80", "host:+80", "127.0.0.1:６８８０", 6880,
])
def test_parse_host_port_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_host_port(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("512Mi", 536870912), ("4Gi", 4 * 2**30), ("1Ki", 1024), ("1Ti", 2**40), ("1G", 10**9),
    ("2K", 2000), ("3M", 3 * 10**6), ("1T", 10**12), ("1.5Gi", 3 * 2**29), ("1024", 1024), (4096, 4096),
])
def test_parse_memory(value: str | int, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["", "4GB", "512m", "1.5", "-1Mi", "Gi", "0", 0, -5, True, 1.5, "1 Gi"])
def test_parse_memory_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory(value)


def test_config_error_is_one_line_and_pickles() -> None:
    err = ConfigError("a.toml", "node.id", "bad\nvalue")
    assert str(err) == "a.toml: node.id: bad value"
    assert str(ConfigError("a.toml", None, "invalid TOML")) == "a.toml: invalid TOML"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.key, again.problem) == ("a.toml", "node.id", "bad\nvalue")


def test_host_port_rejects_other_names(workdir: Path) -> None:
    cfg = load_master_config(write(workdir, MASTER))
    with pytest.raises(ValueError):
        cfg.host_port("agent")  # type: ignore[arg-type]


def test_secrets_stay_out_of_repr(workdir: Path) -> None:
    assert SECRET.decode() not in repr(load_master_config(write(workdir, MASTER)))
    assert TOKEN not in repr(load_agent_config(write(workdir, AGENT, "agent.toml")))


def test_configs_are_frozen(workdir: Path) -> None:
    cfg = load_master_config(write(workdir, MASTER))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.node_id = "other"  # type: ignore[misc]


def test_public_surface() -> None:
    for name in config.__all__:
        assert hasattr(config, name), name


def test_raft_allow_from_takes_addresses_and_networks(workdir: Path) -> None:
    text = MASTER.replace("[security]", 'allow_from = ["10.1.2.3", "10.9.0.0/16", "fd00::/8"]\n\n[security]')
    assert load_master_config(write(workdir, text)).raft_allow_from == ("10.1.2.3/32", "10.9.0.0/16", "fd00::/8")
    assert load_master_config(write(workdir, MASTER)).raft_allow_from == ()
    for bad in ('["10.0.0.0/33"]', '["example.com"]', "[5]", '"10.0.0.0/8"'):
        with pytest.raises(ConfigError, match="allow_from"):
            load_master_config(write(workdir, MASTER.replace("[security]", f"allow_from = {bad}\n\n[security]")))


def test_raft_fsync_defaults_on_and_takes_a_boolean(workdir: Path) -> None:
    assert load_master_config(write(workdir, MASTER)).raft_fsync is True
    off = MASTER.replace("[security]", "fsync = false\n\n[security]")
    assert load_master_config(write(workdir, off)).raft_fsync is False
    with pytest.raises(ConfigError, match="fsync"):
        load_master_config(write(workdir, MASTER.replace("[security]", 'fsync = "no"\n\n[security]')))
