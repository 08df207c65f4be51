"""Strict TOML configuration for masters and agents.

A loader either returns a fully validated, frozen config or raises `ConfigError`: a process never
starts with a half-valid config. The error is one line naming the file and the dotted key at fault, so
`orca server` can print it and exit with status 2:

    cluster/node1.toml: raft.peers[1].api: expected an http(s) URL, got 'foo'

Array items are numbered from 0. Every table is closed: an unknown key (usually a typo that would
otherwise silently fall back to a default) is an error too.

Relative paths (`data_dir`, `cluster_secret_file`, `token_file`) are resolved against the current
working directory at load time, NOT against the config file's directory: the configs in `cluster/` say
`./data/...` and are meant to be used from the repository root, like every other orca command. The
loaded configs hold absolute paths, so a later `chdir` changes nothing.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from orca.mesh import DEFAULT_VIP_RANGE
from orca.mesh import parse_range as parse_vip_range

__all__ = [
    "ConfigError", "Peer", "RaftTuning", "ApiLimits", "MasterConfig", "AgentConfig", "ProxyConfig", "MeshConfig",
    "PROXY_STRATEGIES",
    "load_master_config", "load_agent_config", "parse_host_port", "parse_memory",
]


class ConfigError(Exception):
    """A config file that cannot be used as it is; `str()` is the one line shown to the operator.

    `path` is the file as the operator named it, `key` the dotted key at fault (None when the file as a
    whole is unreadable or not TOML), `problem` what is wrong with it.
    """

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        # Keep the parts in args (not one formatted string) so the exception pickles and compares.
        super().__init__(path, key, problem)
        self.path = path
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        line = f"{self.path}: {self.key}: {self.problem}" if self.key else f"{self.path}: {self.problem}"
        # One line is the contract: callers print it as is after "error: ".
        return line.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class Peer:
    """Another master: its Raft address (for PySyncObj) and its API URL (for 307s and agents)."""

    id: str
    raft: str  # "host:port"
    api: str  # "http://host:port", no trailing slash, so `api + path` is always right


@dataclass(frozen=True)
class RaftTuning:
    """Optional `[raft.tuning]`. Defaults were measured on this machine: with them a kill -9
    of the leader costs ~0.3 s to the next commit, against ~2 s with PySyncObj's own defaults."""

    election_min_s: float = 0.2
    election_max_s: float = 0.5
    heartbeat_s: float = 0.05
    # How long a leader cut off from its followers still believes it leads (PySyncObj's default is
    # 30 s of accepting writes it can never commit); about 2x election_max_s.
    leader_fallback_s: float = 1.0
    # A write not committed within this bound answers 503 CLUSTER_NOT_READY (its outcome is unknown,
    # hence Idempotency-Key).
    write_timeout_s: float = 3.0
    compaction_min_entries: int = 5000
    compaction_min_s: float = 300.0


@dataclass(frozen=True)
class ApiLimits:
    """Optional `[api.limits]`: what one client may ask of a master's API."""

    max_body_bytes: int = 1048576
    rate_limit_per_minute: int = 600  # per client address + token, sliding window
    rate_limit_burst: int = 100


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogSettings:
    """`[log]` (master) or `[agent.log]` (agent); flags and environment override it (orca.logging_setup)."""

    level: str = "info"  # debug | info | warning | error
    format: str = "text"  # text | json (one object per line)
    access_log: bool = False  # one line per API request (method, path without query, status, bytes, seconds)
    proxy_access_log: bool = False  # agents: one line per request through the node's ingress proxy


@dataclass(frozen=True)
class MasterConfig:
    """A master's validated config. Paths are absolute; URLs have no trailing slash."""

    path: str  # the file it came from, as named by the operator
    node_id: str  # [node].id, ^[a-z0-9-]{1,63}$
    data_dir: Path  # [node].data_dir: Raft journal and snapshot
    api_listen: str  # [api].listen "host:port"
    api_advertise: str  # [api].advertise, default "http://" + api_listen
    limits: ApiLimits
    raft_listen: str  # [raft].listen "host:port"
    peers: tuple[Peer, ...]  # [raft].peers; ids unique and != node_id
    tuning: RaftTuning
    cluster_secret_file: Path  # [security].cluster_secret_file
    # The file's content, stripped, >= 16 bytes; kept out of repr so logging a config leaks nothing.
    cluster_secret: bytes = field(repr=False)
    agent_heartbeat_s: float = 1.0  # [timing]
    node_lease_ttl_s: float = 5.0  # [timing]; > agent_heartbeat_s
    # [security]: /metrics answers only a bearer token of role viewer or above (Prometheus sends one)
    metrics_require_token: bool = False
    # [raft].allow_from: networks, besides the peers' own addresses, whose connections the Raft port accepts
    raft_allow_from: tuple[str, ...] = ()
    # [raft].fsync: acknowledge a write only once its entry is on disk on a majority (power-loss safe)
    raft_fsync: bool = True
    # [tls].enabled: HTTPS on the API, mutual TLS to agents. Default: on unless api.listen is loopback.
    tls: bool = False
    cert_days: int = 90  # [tls].cert_days: lifetime of the certificates this master issues
    insecure_http: bool = False  # [security].insecure_http: plain HTTP on a non-loopback address, on purpose
    mesh_vip_range: str = DEFAULT_VIP_RANGE  # [mesh].vip_range: where services' mesh VIPs come from (orca.mesh)
    log: LogSettings = field(default_factory=LogSettings)  # [log]: level, format, access_log

    def host_port(self, which: Literal["api", "raft"]) -> tuple[str, int]:
        """The (host, port) to bind for the API or the Raft transport (IPv6 hosts without brackets)."""
        if which == "api":
            return parse_host_port(self.api_listen)
        if which == "raft":
            return parse_host_port(self.raft_listen)
        raise ValueError(f"which must be 'api' or 'raft', got {which!r}")


PROXY_STRATEGIES = ("round_robin", "least_conn")


@dataclass(frozen=True)
class ProxyConfig:
    """Optional `[agent.proxy]`: the agent's ingress proxy (off when the table is absent)."""

    listen: str = "127.0.0.1:8080"
    strategy: str = "round_robin"  # the default; a route's own `strategy` overrides it
    idle_timeout_s: float = 60.0  # a client's idle keep-alive connection is closed after this
    request_timeout_s: float = 30.0  # an upstream silent for this long (no header, no body byte) -> 504
    upstream_connect_timeout_s: float = 2.0  # connecting to a replica; a refused or slow one is retried elsewhere
    drain_timeout_s: float = 10.0  # a removed replica's in-flight requests get this long before it is stopped
    # This node's replicas at their container's address (skipping Docker's port mapping and docker-proxy);
    # false: at their published port (a host that cannot reach its containers' addresses: rootless Docker).
    local_by_address: bool = True


@dataclass(frozen=True)
class MeshConfig:
    """Optional `[agent.mesh]`: the service mesh on this node (orca.agent.mesh; off when the table is
    absent: it needs CAP_NET_ADMIN, for the VIPs it adds to `lo`)."""

    # Each project's Docker network on this node takes a free /24 of this pool (not Docker's own pools,
    # which a busy engine exhausts after about 30 networks).
    subnet_pool: str = "10.214.0.0/16"


# kw_only: the documented field order puts required fields (data_dir) after defaulted ones.
@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """An agent's validated config. Paths are absolute; URLs have no trailing slash."""

    path: str
    agent_id: str  # [agent].id
    masters: tuple[str, ...]  # master API URLs, at least one
    token_file: Path
    token: str = field(repr=False)  # the token file's content, stripped; out of repr like the secret
    listen: str = "127.0.0.1:6890"  # agent API: the leader pushes desired state here
    advertise: str = ""  # the loader fills in "http://" + listen when absent
    status_listen: str = "127.0.0.1:9100"  # NodeReport API, unauthenticated, hence loopback only
    data_dir: Path
    labels: dict[str, str] = field(default_factory=dict)
    publish_address: str = "127.0.0.1"  # [agent.docker]: container host ports bind here
    host_port_range: tuple[int, int] = (20000, 20999)  # [agent.docker], inclusive
    memory_bytes: int | None = None  # [agent.resources].memory; None = what the engine reports
    cpu: float | None = None  # [agent.resources].cpu; None = what the engine reports
    heartbeat_s: float = 1.0  # [agent].heartbeat_s
    proxy: ProxyConfig | None = None  # [agent.proxy]; None: no ingress proxy on this node
    mesh: MeshConfig | None = None  # [agent.mesh]; None: no service mesh on this node
    # [agent].ca_file: the cluster CA bundle (not needed with a version-2 join token, which pins it)
    ca_file: Path | None = None
    insecure_http: bool = False  # [agent].insecure_http: plain HTTP on a non-loopback agent API, on purpose
    # [agent].metrics_require_token: /metrics answers only a bearer token of role viewer or above
    metrics_require_token: bool = False
    log: LogSettings = field(default_factory=LogSettings)  # [agent.log]: level, format, access logs

    @property
    def tls(self) -> bool:
        """Mutual TLS with the masters: on when they are https."""
        return any(m.startswith("https://") for m in self.masters)
    # [agent.docker]: host directories a spec's bind mounts may come from (orca.volumes.bind_refusal):
    # bind_paths read-only only, bind_paths_rw also writable. Empty: no bind mounts on this node.
    bind_paths: tuple[str, ...] = ()
    bind_paths_rw: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------
# Value parsers (shared with the CLI and the spec validation, hence public and raising ValueError)

_ID_RE = re.compile(r"[a-z0-9-]{1,63}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9_])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_MEMORY_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?")
_MEMORY_UNITS = {
    None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _valid_host(host: str) -> bool:
    return _valid_ip(host) or bool(_HOSTNAME_RE.fullmatch(host))


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_valid_ip(host) and ipaddress.ip_address(host).is_loopback)


def parse_host_port(value: str) -> tuple[str, int]:
    """Split "host:port" (or "[v6]:port") into a host ready for bind() and a port in 1..65535.

    An empty host is refused rather than read as "all interfaces": binding 0.0.0.0 must be written out.
    """
    bad = ValueError(f"expected 'host:port', got {value!r}")
    if not isinstance(value, str):
        raise bad
    if value.startswith("["):
        host, sep, port_s = value[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
    else:
        host, sep, port_s = value.rpartition(":")
        if ":" in host or not _valid_host(host):  # an IPv6 address needs its brackets
            raise bad
    if not sep or not _PORT_RE.fullmatch(port_s):
        raise bad
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {value!r}")
    return host, port


def _parse_url(value: str) -> str:
    """An http(s) base URL ("http://host[:port]") normalised without a trailing slash.

    Paths, queries and credentials are refused: callers append "/api/v1/..." to it, and a 307 Location
    is built as advertise URL + the request's own path.
    """
    bad = ValueError(f"expected an http(s) URL, got {value!r}")
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise bad
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or not _valid_host(parts.hostname):
        raise bad
    try:
        port = parts.port
    except ValueError:
        raise bad from None
    if port == 0 or parts.username is not None or parts.password is not None:
        raise bad
    if parts.path not in ("", "/") or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"expected an http(s) URL without path, query or fragment, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}"


def parse_memory(value: str | int) -> int:
    """Bytes from "512Mi" / "4Gi" / "1G" / "1.5Gi" / 1024 (binary Ki..Ti, decimal K..T, plain bytes).

    Suffixes are case-sensitive and there is no "m": Docker reads it as megabytes and Kubernetes as
    milli, so it would mean whatever the reader assumed. Zero is refused (it is never what was meant).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a memory size like '512Mi', got {value!r}")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and (m := _MEMORY_RE.fullmatch(value.strip())):
        number, unit = m.groups()
        if unit is None and "." in number:
            raise ValueError(f"a plain byte count must be whole, got {value!r}")
        try:
            amount = int(Decimal(number) * _MEMORY_UNITS[unit])
        except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
            raise ValueError(f"expected a memory size like '512Mi', got {value!r}") from None
    else:
        raise ValueError(f"expected a memory size like '512Mi', got {value!r}")
    if amount <= 0:
        raise ValueError(f"memory must be positive, got {value!r}")
    return amount


def _parse_port_range(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", value)
    if not m:
        raise ValueError(f"expected 'LOW-HIGH' like '20000-20999', got {value!r}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"expected 1 <= LOW <= HIGH <= 65535, got {value!r}")
    return lo, hi


# ---------------------------------------------------------------------------------------------------
# Reading tables

_REQUIRED: Any = object()  # sentinel default: the key must be present


def _describe(value: Any) -> str:
    """How a wrong value is shown in an error: its TOML type and a short repr, on one line."""
    kinds = [(bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
             (list, "array"), (dict, "table")]
    kind = next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)
    if isinstance(value, dict | list):
        return f"an {kind}" if kind == "array" else f"a {kind}"
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


class _Table:
    """One TOML table being read. It knows its dotted name (for error messages) and refuses any key
    outside `allowed` as soon as it is opened, so a typo is reported as such and not as the "missing
    key" it caused."""

    def __init__(self, file: str, name: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
        self.file = file
        self.name = name
        self.data = data
        allowed = sorted(allowed)
        for key in data:  # in file order, so the first mistake in the file is the one reported
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                raise self.error(key, "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))

    def dotted(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.dotted(key), problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str, default: Any) -> tuple[bool, Any]:
        if key in self.data:
            return True, self.data[key]
        if default is _REQUIRED:
            raise self.error(key, "missing required key")
        return False, default

    def table(self, key: str, allowed: Iterable[str], required: bool = True) -> _Table:
        if required and key not in self.data:
            raise self.error(key, "missing required table")
        present, value = self._raw(key, {})
        if present and not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_describe(value)}")
        return _Table(self.file, self.dotted(key), value, allowed)

    def array(self, key: str, default: Any = _REQUIRED) -> list[Any]:
        present, value = self._raw(key, default)
        if present and not isinstance(value, list):
            raise self.error(key, f"expected an array, got {_describe(value)}")
        return value

    def string(self, key: str, default: Any = _REQUIRED) -> str:
        present, value = self._raw(key, default)
        if present:
            if not isinstance(value, str):
                raise self.error(key, f"expected a string, got {_describe(value)}")
            if not value.strip():
                raise self.error(key, "must not be empty")
        return value

    def ident(self, key: str) -> str:
        value = self.string(key)
        if not _ID_RE.fullmatch(value):
            raise self.error(key, f"expected an id matching [a-z0-9-]{{1,63}}, got {value!r}")
        return value

    def host_port(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.string(key, default)
        try:
            parse_host_port(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        return value

    def url(self, key: str, default: Any = _REQUIRED) -> str:
        present = self.has(key)
        value = self.string(key, default)
        if not present:
            return value
        try:
            return _parse_url(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def path(self, key: str) -> Path:
        # Against the working directory, on purpose: see the module docstring.
        return Path(os.path.abspath(Path(self.string(key)).expanduser()))

    def positive_float(self, key: str, default: Any = _REQUIRED) -> float:
        present, value = self._raw(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {_describe(value)}")
        if not math.isfinite(value) or value <= 0:
            raise self.error(key, f"expected a positive number, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        present, value = self._raw(key, default)
        if present and not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_describe(value)}")
        return bool(value)

    def positive_int(self, key: str, default: Any = _REQUIRED) -> int:
        present, value = self._raw(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_describe(value)}")
        if value <= 0:
            raise self.error(key, f"expected a positive integer, got {value!r}")
        return value

    def file_content(self, key: str, file: Path) -> bytes:
        """The stripped content of a secret file named by `key`; unreadable or empty is an error."""
        try:
            content = file.read_bytes().strip()
        except OSError as exc:
            raise self.error(key, f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
        if not content:
            raise self.error(key, f"file {str(file)!r} is empty")
        return content


def _read_toml(path: str | Path) -> tuple[str, dict[str, Any]]:
    shown = str(path)
    try:
        with open(path, "rb") as f:
            return shown, tomllib.load(f)
    except OSError as exc:
        raise ConfigError(shown, None, f"cannot read config: {exc.strerror or exc}") from None
    except ValueError as exc:  # TOMLDecodeError, or bytes that are not UTF-8
        raise ConfigError(shown, None, f"invalid TOML: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# Masters


def _load_peers(raft: _Table, node_id: str, raft_listen: str) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    for i, item in enumerate(raft.array("peers")):
        name = f"{raft.dotted('peers')}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(raft.file, name, f"expected a table {{id, raft, api}}, got {_describe(item)}")
        t = _Table(raft.file, name, item, ("id", "raft", "api"))
        peer = Peer(id=t.ident("id"), raft=t.host_port("raft"), api=t.url("api"))
        if peer.id == node_id:
            raise t.error("id", f"{peer.id!r} is this node's own id (node.id); list only the others")
        if any(p.id == peer.id for p in peers):
            raise t.error("id", f"duplicate peer id {peer.id!r}")
        if peer.raft == raft_listen or any(p.raft == peer.raft for p in peers):
            raise t.error("raft", f"duplicate Raft address {peer.raft!r}")
        peers.append(peer)
    return tuple(peers)


def _load_allow_from(raft: _Table) -> tuple[str, ...]:
    """`[raft].allow_from`: addresses or CIDR networks (for a peer whose connections come from an address
    other than its configured Raft address: NAT, several interfaces)."""
    out: list[str] = []
    for i, item in enumerate(raft.array("allow_from", [])):
        try:
            if not isinstance(item, str):
                raise TypeError
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except (TypeError, ValueError):
            raise ConfigError(raft.file, f"{raft.dotted('allow_from')}[{i}]",
                              f"expected an IP address or CIDR network such as \"10.0.0.0/24\", got "
                              f"{_describe(item)}") from None
    return tuple(out)


def _load_tuning(raft: _Table) -> RaftTuning:
    t = raft.table("tuning", RaftTuning.__dataclass_fields__, required=False)
    d = RaftTuning()
    tuning = RaftTuning(
        election_min_s=t.positive_float("election_min_s", d.election_min_s),
        election_max_s=t.positive_float("election_max_s", d.election_max_s),
        heartbeat_s=t.positive_float("heartbeat_s", d.heartbeat_s),
        leader_fallback_s=t.positive_float("leader_fallback_s", d.leader_fallback_s),
        write_timeout_s=t.positive_float("write_timeout_s", d.write_timeout_s),
        compaction_min_entries=t.positive_int("compaction_min_entries", d.compaction_min_entries),
        compaction_min_s=t.positive_float("compaction_min_s", d.compaction_min_s),
    )
    # Followers must hear several heartbeats per election timeout, or a healthy leader gets deposed.
    if tuning.election_min_s <= 3 * tuning.heartbeat_s:
        raise t.error("election_min_s", f"must be > 3 * heartbeat_s ({3 * tuning.heartbeat_s:g}), "
                                        f"got {tuning.election_min_s:g}")
    # PySyncObj draws the timeout uniformly from [min, max]: an empty range makes split votes likely.
    if tuning.election_max_s <= tuning.election_min_s:
        raise t.error("election_max_s", f"must be > election_min_s ({tuning.election_min_s:g}), "
                                        f"got {tuning.election_max_s:g}")
    return tuning


def load_master_config(path: str | Path) -> MasterConfig:
    """Read and validate a master's config; raises ConfigError (one line: file, dotted key, problem)."""
    file, data = _read_toml(path)
    doc = _Table(file, "", data, ("node", "api", "raft", "security", "timing", "tls", "log", "mesh"))

    node = doc.table("node", ("id", "data_dir"))
    node_id = node.ident("id")
    data_dir = node.path("data_dir")

    api = doc.table("api", ("listen", "advertise", "limits"))
    api_listen = api.host_port("listen")
    tls_table = doc.table("tls", ("enabled", "cert_days"), required=False)
    security = doc.table("security", ("cluster_secret_file", "insecure_http", "metrics_require_token"))
    insecure = security.boolean("insecure_http", False)
    loopback = _is_loopback(parse_host_port(api_listen)[0])
    tls_on = tls_table.boolean("enabled", not loopback and not insecure)
    if not tls_on and not loopback and not insecure:
        raise tls_table.error("enabled", f"api.listen {api_listen!r} is not a loopback address: refusing plain "
                                         "HTTP (admin tokens and secrets would cross the network in clear); "
                                         "enable TLS or set security.insecure_http = true")
    cert_days = tls_table.positive_int("cert_days", MasterConfig.cert_days)
    api_advertise = api.url("advertise", ("https://" if tls_on else "http://") + api_listen)
    if tls_on and not api_advertise.startswith("https://"):
        raise api.error("advertise", f"TLS is on: expected an https:// URL, got {api_advertise!r}")
    lim = api.table("limits", ApiLimits.__dataclass_fields__, required=False)
    d_lim = ApiLimits()
    limits = ApiLimits(
        max_body_bytes=lim.positive_int("max_body_bytes", d_lim.max_body_bytes),
        rate_limit_per_minute=lim.positive_int("rate_limit_per_minute", d_lim.rate_limit_per_minute),
        rate_limit_burst=lim.positive_int("rate_limit_burst", d_lim.rate_limit_burst),
    )

    raft = doc.table("raft", ("listen", "peers", "tuning", "allow_from", "fsync"))
    raft_listen = raft.host_port("listen")
    if raft_listen == api_listen:
        raise raft.error("listen", f"same address as api.listen ({api_listen!r})")
    peers = _load_peers(raft, node_id, raft_listen)
    tuning = _load_tuning(raft)
    allow_from = _load_allow_from(raft)
    fsync = raft.boolean("fsync", True)

    secret_file = security.path("cluster_secret_file")
    secret = security.file_content("cluster_secret_file", secret_file)
    if len(secret) < 16:  # it keys both the Raft transport and every JWT
        raise security.error("cluster_secret_file",
                             f"secret in {str(secret_file)!r} is {len(secret)} bytes, need at least 16")
    metrics_require_token = security.boolean("metrics_require_token", MasterConfig.metrics_require_token)

    timing = doc.table("timing", ("agent_heartbeat_s", "node_lease_ttl_s"), required=False)
    heartbeat = timing.positive_float("agent_heartbeat_s", MasterConfig.agent_heartbeat_s)
    ttl = timing.positive_float("node_lease_ttl_s", MasterConfig.node_lease_ttl_s)
    if ttl <= heartbeat:  # else every node flaps down between two heartbeats
        raise timing.error("node_lease_ttl_s", f"must be > agent_heartbeat_s ({heartbeat:g}), got {ttl:g}")

    mesh_table = doc.table("mesh", ("vip_range",), required=False)
    vip_range = mesh_table.string("vip_range", DEFAULT_VIP_RANGE)
    try:
        parse_vip_range(vip_range)
    except ValueError as exc:
        raise mesh_table.error("vip_range", f"{exc} (got {vip_range!r})") from None

    return MasterConfig(
        path=file, node_id=node_id, data_dir=data_dir, api_listen=api_listen,
        api_advertise=api_advertise, limits=limits, raft_listen=raft_listen, peers=peers,
        tuning=tuning, cluster_secret_file=secret_file, cluster_secret=secret,
        agent_heartbeat_s=heartbeat, node_lease_ttl_s=ttl, metrics_require_token=metrics_require_token,
        raft_allow_from=allow_from, raft_fsync=fsync, tls=tls_on, cert_days=cert_days, insecure_http=insecure,
        mesh_vip_range=vip_range,
        log=_load_log(doc, agent=False),
    )


def _load_log(parent: _Table, agent: bool) -> LogSettings:
    """`[log]` of a master or `[agent.log]` of an agent (optional; `proxy_access_log` on agents only)."""
    keys = ("level", "format", "access_log", *(("proxy_access_log",) if agent else ()))
    t = parent.table("log", keys, required=False)
    d = LogSettings()
    level = t.string("level", d.level).lower()
    if level not in LOG_LEVELS:
        raise t.error("level", f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    fmt = t.string("format", d.format).lower()
    if fmt not in LOG_FORMATS:
        raise t.error("format", f"expected one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    return LogSettings(level=level, format=fmt, access_log=t.boolean("access_log", d.access_log),
                       proxy_access_log=t.boolean("proxy_access_log", d.proxy_access_log) if agent else False)


# ---------------------------------------------------------------------------------------------------
# Agents

_AGENT_KEYS = ("id", "masters", "token_file", "listen", "advertise", "status_listen", "data_dir",
               "labels", "heartbeat_s", "docker", "resources", "proxy", "ca_file", "insecure_http",
               "metrics_require_token", "log", "mesh")


def _load_mesh(agent: _Table) -> MeshConfig | None:
    """`[agent.mesh]`, or None when absent."""
    if not agent.has("mesh"):
        return None
    t = agent.table("mesh", MeshConfig.__dataclass_fields__)
    pool = t.string("subnet_pool", MeshConfig.subnet_pool)
    try:
        net = ipaddress.ip_network(pool, strict=True)
    except ValueError as exc:
        raise t.error("subnet_pool", f"expected an IPv4 network such as '10.214.0.0/16': {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 24:
        raise t.error("subnet_pool", f"expected an IPv4 network of /24 or larger, got {pool!r}")
    return MeshConfig(subnet_pool=pool)


def _load_proxy(agent: _Table, taken: dict[str, str]) -> ProxyConfig | None:
    """`[agent.proxy]`, or None when absent. `taken` maps the agent's other listen addresses to their keys."""
    if not agent.has("proxy"):
        return None
    t = agent.table("proxy", ProxyConfig.__dataclass_fields__)
    d = ProxyConfig()
    listen = t.host_port("listen", d.listen)
    if listen in taken:
        raise t.error("listen", f"same address as {taken[listen]} ({listen!r})")
    strategy = t.string("strategy", d.strategy)
    if strategy not in PROXY_STRATEGIES:
        raise t.error("strategy", f"expected one of {', '.join(PROXY_STRATEGIES)}, got {strategy!r}")
    return ProxyConfig(
        listen=listen, strategy=strategy,
        idle_timeout_s=t.positive_float("idle_timeout_s", d.idle_timeout_s),
        request_timeout_s=t.positive_float("request_timeout_s", d.request_timeout_s),
        upstream_connect_timeout_s=t.positive_float("upstream_connect_timeout_s", d.upstream_connect_timeout_s),
        drain_timeout_s=t.positive_float("drain_timeout_s", d.drain_timeout_s),
        local_by_address=t.boolean("local_by_address", d.local_by_address),
    )


def _check_token_node(agent: _Table, token: str, agent_id: str) -> None:
    """Refuse at start-up an agent token that no master would accept for this node: one without a
    node claim (minted before node identity) or bound to another node. Join tokens and anything
    that is not a JWT pass: the masters decide."""
    from orca.auth import peek_claims  # not at the top: loading a master config needs no JWT library

    claims = peek_claims(token)
    if claims is None or claims.get("role") != "agent":
        return
    node = claims.get("node")
    if node is None:
        raise agent.error("token_file", "the agent token is not bound to a node (minted before node identity): "
                                        f"mint one with `orca token create --role agent --node {agent_id}` "
                                        "or use a join token (`orca cluster join-token worker`)")
    if node != agent_id:
        raise agent.error("token_file", f"the agent token is bound to node {node!r}, not to this agent ({agent_id!r})")


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent's config; raises ConfigError (one line: file, dotted key, problem)."""
    file, data = _read_toml(path)
    doc = _Table(file, "", data, ("agent",))
    agent = doc.table("agent", _AGENT_KEYS)
    agent_id = agent.ident("id")

    masters: list[str] = []
    raw_masters = agent.array("masters")
    if not raw_masters:
        raise agent.error("masters", "expected at least one master API URL")
    for i, raw in enumerate(raw_masters):
        key = f"masters[{i}]"
        if not isinstance(raw, str):
            raise agent.error(key, f"expected an http(s) URL, got {_describe(raw)}")
        try:
            url = _parse_url(raw)
        except ValueError as exc:
            raise agent.error(key, str(exc)) from None
        if url in masters:
            raise agent.error(key, f"duplicate master URL {url!r}")
        masters.append(url)

    token_file = agent.path("token_file")
    try:
        token = agent.file_content("token_file", token_file).decode("utf-8")
    except UnicodeDecodeError:
        raise agent.error("token_file", f"file {str(token_file)!r} is not UTF-8 text") from None
    if any(c.isspace() for c in token):  # it goes into an Authorization header as is
        raise agent.error("token_file", f"file {str(token_file)!r} has whitespace inside the token")
    _check_token_node(agent, token, agent_id)

    listen = agent.host_port("listen", AgentConfig.listen)
    tls_on = any(m.startswith("https://") for m in masters)
    if len({m.split(":")[0] for m in masters}) > 1:
        raise agent.error("masters", "mix of http:// and https:// masters: a cluster runs TLS or not")
    insecure = agent.boolean("insecure_http", False)
    if not tls_on and not insecure and not _is_loopback(parse_host_port(listen)[0]):
        raise agent.error("listen", f"{listen!r} is not a loopback address and the masters are plain http://: "
                                    "refusing (pushes carry secret values); use https:// masters or set "
                                    "agent.insecure_http = true")
    ca_file = agent.path("ca_file") if agent.has("ca_file") else None
    advertise = agent.url("advertise", ("https://" if tls_on else "http://") + listen)
    if tls_on and not advertise.startswith("https://"):
        raise agent.error("advertise", f"the masters are https://: expected an https:// URL, got {advertise!r}")
    status_listen = agent.host_port("status_listen", AgentConfig.status_listen)
    status_host, _ = parse_host_port(status_listen)
    # The status API has no authentication: it must never face the network.
    if not _is_loopback(status_host):
        raise agent.error("status_listen", f"must be a loopback address, got {status_listen!r}")
    if status_listen == listen:
        raise agent.error("status_listen", f"same address as agent.listen ({listen!r})")
    data_dir = agent.path("data_dir")

    labels: dict[str, str] = {}
    if agent.has("labels"):
        raw_labels = agent.data["labels"]
        if not isinstance(raw_labels, dict):
            raise agent.error("labels", f"expected a table of strings, got {_describe(raw_labels)}")
        for k, v in raw_labels.items():
            if not isinstance(v, str):
                raise agent.error(f"labels.{k}", f"expected a string, got {_describe(v)}")
            labels[k] = v
    heartbeat = agent.positive_float("heartbeat_s", AgentConfig.heartbeat_s)

    docker = agent.table("docker", ("publish_address", "host_port_range", "bind_paths", "bind_paths_rw"),
                         required=False)
    bind_lists: dict[str, tuple[str, ...]] = {}
    for key in ("bind_paths", "bind_paths_rw"):
        entries = docker.array(key, [])
        for i, entry in enumerate(entries):
            if not isinstance(entry, str) or not entry.startswith("/") or entry.rstrip("/") == "" \
                    or ".." in entry.split("/") or ":" in entry:
                raise docker.error(f"{key}[{i}]", f"expected an absolute host directory other than '/', "
                                                  f"got {_describe(entry)}")
        bind_lists[key] = tuple(os.path.normpath(e) for e in entries)
    publish = docker.string("publish_address", AgentConfig.publish_address)
    if not _valid_ip(publish):  # Docker's HostIp takes an address, not a name
        raise docker.error("publish_address", f"expected an IP address, got {publish!r}")
    port_range = AgentConfig.host_port_range
    if docker.has("host_port_range"):
        try:
            port_range = _parse_port_range(docker.string("host_port_range"))
        except ValueError as exc:
            raise docker.error("host_port_range", str(exc)) from None

    resources = agent.table("resources", ("memory", "cpu"), required=False)
    memory: int | None = None
    if resources.has("memory"):
        raw_memory = resources.data["memory"]
        if isinstance(raw_memory, bool) or not isinstance(raw_memory, str | int):
            raise resources.error("memory", f"expected a size like '4Gi', got {_describe(raw_memory)}")
        try:
            memory = parse_memory(raw_memory)
        except ValueError as exc:
            raise resources.error("memory", str(exc)) from None
    cpu = resources.positive_float("cpu", None)
    proxy = _load_proxy(agent, {listen: "agent.listen", status_listen: "agent.status_listen"})
    mesh = _load_mesh(agent)

    return AgentConfig(
        path=file, agent_id=agent_id, masters=tuple(masters), token_file=token_file, token=token,
        listen=listen, advertise=advertise, status_listen=status_listen, data_dir=data_dir,
        labels=labels, publish_address=publish, host_port_range=port_range, memory_bytes=memory,
        cpu=cpu, heartbeat_s=heartbeat, proxy=proxy, mesh=mesh, ca_file=ca_file, insecure_http=insecure,
        metrics_require_token=agent.boolean("metrics_require_token", AgentConfig.metrics_require_token),
        log=_load_log(agent, agent=True),
        bind_paths=bind_lists["bind_paths"], bind_paths_rw=bind_lists["bind_paths_rw"],
    )

