"""The service mesh's pure parts: VIP allocation (and its apply), the leader's table, the agent's parsing
and nftables rendering (checked by the kernel in a throwaway network namespace when run as root), the DNS
answers, the spec and config fields."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import mesh, spec
from orca.agent import mesh_config as mc
from orca.agent import mesh_nft as nft
from orca.agent.mesh import Mesh, lo_label, mesh_addresses, network_name, upstream_dns
from orca.agent.mesh_dns import answer, resolve
from orca.config import ConfigError, MeshConfig, load_master_config
from orca.errors import InvalidSpec
from orca.master.mesh_table import mesh_table
from orca.state.machine import apply, encode_entry, new_state

# --- VIPs -------------------------------------------------------------------------------------------------


def test_allocation_skips_network_resolver_broadcast_and_used() -> None:
    assert mesh.resolver_address("10.213.0.0/16") == "10.213.0.1"
    assert mesh.allocate_vip("10.213.0.0/16", set()) == "10.213.0.2"
    assert mesh.allocate_vip("10.213.0.0/16", {"10.213.0.2", "10.213.0.4"}) == "10.213.0.3"
    assert mesh.allocate_vip("10.9.9.0/29", {f"10.9.9.{i}" for i in range(2, 7)}) is None  # .7 is broadcast
    assert mesh.allocate_vip("10.9.9.0/29", {"10.1.1.1", "junk"}) == "10.9.9.2"  # outside / malformed: ignored


@pytest.mark.parametrize("bad", ["10.213.0.1/16", "127.0.0.0/8", "10.0.0.0/30", "fe80::/64", "nope", "224.0.0.0/8"])
def test_bad_ranges_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        mesh.parse_range(bad)


@settings(max_examples=200)
@given(prefix=st.integers(24, 29), taken=st.sets(st.integers(0, 255), max_size=80))
def test_allocation_is_the_lowest_free_host(prefix: int, taken: set[int]) -> None:
    net = ipaddress.IPv4Network(f"10.50.7.0/{prefix}")
    used = {str(net.network_address + i) for i in taken if i < net.num_addresses}
    got = mesh.allocate_vip(str(net), used)
    free = [str(a) for a in list(net.hosts())[1:] if str(a) not in used]
    assert got == (free[0] if free else None)
    assert mesh.allocate_vip(str(net), used) == got  # deterministic


def _entry(op: str, args: dict[str, Any], now: float = 1000.0) -> bytes:
    return encode_entry(op, args, now=now, key=None, actor="t")


def _deploy(*specs: dict[str, Any], vip_range: str | None = None) -> dict[str, Any]:
    items = []
    for raw in specs:
        s = spec.validate_service({"image": "img:1", **raw})
        items.append({"name": s["name"], "spec": s, "digest": spec.spec_digest(s)})
    return {"services": items, **({"vip_range": vip_range} if vip_range else {})}


def test_apply_gives_each_service_a_stable_vip_from_the_ops_range() -> None:
    states = [new_state(), new_state()]
    for s in states:  # two masters applying the same log agree
        apply(s, _entry("deploy", _deploy({"name": "a"}, {"name": "b"}, vip_range="10.9.0.0/24")), 1)
        apply(s, _entry("deploy", _deploy({"name": "a", "replicas": 3}, {"name": "c"}, vip_range="10.9.0.0/24")), 2)
    assert states[0]["services"] == states[1]["services"]
    vips = {n: states[0]["services"][n]["vip"] for n in "abc"}
    assert vips == {"a": "10.9.0.2", "b": "10.9.0.3", "c": "10.9.0.4"}
    s = states[0]
    apply(s, _entry("purge_service", {"name": "b"}), 3)
    apply(s, _entry("deploy", _deploy({"name": "d"})), 4)  # no range in the op: the default one
    assert s["services"]["d"]["vip"] == "10.213.0.2"
    apply(s, _entry("deploy", _deploy({"name": "e"}, vip_range="not a range")), 5)
    assert s["services"]["e"]["vip"] == "10.213.0.3"


def test_a_service_from_before_the_mesh_gets_its_vip_at_its_next_deploy() -> None:
    s = new_state()
    apply(s, _entry("deploy", _deploy({"name": "old"})), 1)
    del s["services"]["old"]["vip"]
    apply(s, _entry("deploy", _deploy({"name": "old"}, vip_range="10.9.0.0/24")), 2)
    assert s["services"]["old"]["vip"] == "10.9.0.2"


# --- spec ---------------------------------------------------------------------------------------------------


def test_protocol_and_allow_from_in_the_spec() -> None:
    plain = spec.validate_service({"name": "a", "image": "i", "port": 80})
    assert "protocol" not in plain and "allow_from" not in plain  # defaults leave old digests alone
    tcp = spec.validate_service({"name": "a", "image": "i", "port": 6379, "protocol": "tcp",
                                 "allow_from": ["web", "*", "web"]})
    assert tcp["protocol"] == "tcp" and tcp["allow_from"] == ["*", "web"]
    assert spec.validate_service({"name": "a", "image": "i", "port": 80, "protocol": "http"}) == plain
    for raw, field in (({"protocol": "udp", "port": 1}, "protocol"), ({"protocol": "tcp"}, "protocol"),
                       ({"protocol": "tcp", "port": 1, "domain": "a.example.com"}, "domain"),
                       ({"allow_from": "web"}, "allow_from"), ({"allow_from": ["Bad!"]}, "allow_from[0]"),
                       ({"allow_from": [f"p{i}" for i in range(65)]}, "allow_from")):
        with pytest.raises(InvalidSpec) as exc:
            spec.validate_service({"name": "a", "image": "i", **raw})
        assert exc.value.details["field"] == field, (raw, exc.value)


def test_master_config_mesh_range(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x" * 32)
    base = (f'[node]\nid = "m1"\ndata_dir = "{tmp_path}"\n[api]\nlisten = "127.0.0.1:1"\n'
            f'[raft]\nlisten = "127.0.0.1:2"\npeers = []\n[security]\ncluster_secret_file = "{tmp_path / "secret"}"\n')
    cfg = tmp_path / "m.toml"
    cfg.write_text(base)
    assert load_master_config(cfg).mesh_vip_range == mesh.DEFAULT_VIP_RANGE
    cfg.write_text(base + '[mesh]\nvip_range = "10.9.0.0/24"\n')
    assert load_master_config(cfg).mesh_vip_range == "10.9.0.0/24"
    cfg.write_text(base + '[mesh]\nvip_range = "10.9.0.1/24"\n')
    with pytest.raises(ConfigError, match="mesh.vip_range"):
        load_master_config(cfg)


# --- the leader's table ---------------------------------------------------------------------------------------


def test_mesh_table_lists_healthy_replicas_of_services_with_a_port_and_vip() -> None:
    state = {
        "nodes": {"n1": {"status": "ready", "publish_address": "10.0.0.1"}, "n2": {"status": "down"}},
        "services": {
            "store": {"state": "running", "project": "p", "vip": "10.213.0.2",
                      "spec": {"port": 7000, "protocol": "tcp", "allow_from": ["q"], "internal": True}},
            "web": {"state": "running", "project": "p", "vip": "10.213.0.3", "spec": {"port": 80}},
            "worker": {"state": "running", "project": "p", "vip": "10.213.0.4", "spec": {"port": None}},
            "stopped": {"state": "stopped", "project": "p", "vip": "10.213.0.5", "spec": {"port": 80}},
        },
        "allocations": {
            "a1": {"id": "a1", "service": "store", "node": "n1", "desired": "run",
                   "observed": {"status": "running", "health": "healthy", "host_port": 20001}},
            "a2": {"id": "a2", "service": "store", "node": "n2", "desired": "run",
                   "observed": {"status": "running", "health": "healthy", "host_port": 20002}},
            "a3": {"id": "a3", "service": "web", "node": "n1", "desired": "run",
                   "observed": {"status": "running", "health": "unhealthy", "host_port": 20003}},
        },
    }
    table = mesh_table(state, "10.213.0.0/16")
    assert table == {"resolver": "10.213.0.1", "vip_range": "10.213.0.0/16", "services": {
        "store": {"project": "p", "vip": "10.213.0.2", "port": 7000, "protocol": "tcp", "allow_from": ["q"],
                  "endpoints": [{"alloc": "a1", "address": "10.0.0.1:20001"}]},
        "web": {"project": "p", "vip": "10.213.0.3", "port": 80, "protocol": "http", "allow_from": [],
                "endpoints": []}}}


# --- the agent: parsing and rendering ---------------------------------------------------------------------------


def _table(**services: dict[str, Any]) -> dict[str, Any]:
    return {"resolver": "10.213.0.1", "services": services}


def _svc(vip: str, port: int = 80, **kw: Any) -> dict[str, Any]:
    return {"project": "p", "vip": vip, "port": port, "protocol": "http", "allow_from": [],
            "endpoints": [{"alloc": "a1", "address": "10.0.0.1:20001"}], **kw}


def test_parse_table_skips_bad_entries_and_duplicate_binds() -> None:
    resolver, services, warnings = mc.parse_table(_table(
        web=_svc("10.213.0.3"), dup=_svc("10.213.0.3"), loop=_svc("127.0.0.1"), Bad=_svc("10.213.0.9"),
        udp=_svc("10.213.0.5", protocol="udp"), port=_svc("10.213.0.6", port=0),
        ep=_svc("10.213.0.7", endpoints=[{"alloc": "x y", "address": "h:1"}]),
        v6=_svc("10.213.0.8", endpoints=[{"alloc": "a9", "address": "::1:20000"}])))
    assert resolver == "10.213.0.1"
    assert [s.name for s in services] == ["dup", "v6"]  # `dup` sorts first and takes the bind; `web` loses it
    assert services[1].endpoints == (("a9", "[::1]:20000"),)
    assert len(warnings) == 6, warnings
    assert mc.parse_table({}) == (None, [], [])
    assert mc.parse_table({"resolver": "nope"})[1] == []


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30))
def test_parse_table_never_raises(raw: Any) -> None:
    for table in (raw, {"resolver": "10.213.0.1", "services": raw}, _table(s=raw)):
        mc.parse_table(table)


NETWORKS = {"p": ("10.214.0.0/24", "10.214.1.0/24"), "q": ("10.214.2.0/24",), "r": ("10.214.3.0/24",)}
TABLE = "orca_mesh_0123456789ab_n1"


def _block(text: str, head: str) -> str:
    """The lines of the set, map or chain `head` ("set allowed") in a rendered table."""
    return text.split(f"    {head} {{\n", 1)[1].split("\n    }", 1)[0]


def test_render_dnats_each_vip_to_its_replicas_and_checks_the_source() -> None:
    _, services, _ = mc.parse_table(_table(
        web=_svc("10.213.0.3", endpoints=[{"alloc": "a1", "address": "10.0.0.1:20001"},
                                          {"alloc": "a2", "address": "10.0.0.2:20002"}]),
        store=_svc("10.213.0.2", 7000, protocol="tcp", allow_from=["q"]),
        lonely={**_svc("10.213.0.4"), "project": "nobody"}, open=_svc("10.213.0.5", allow_from=["*"]),
        empty=_svc("10.213.0.6", endpoints=[]),
        loop=_svc("10.213.0.7", endpoints=[{"alloc": "a3", "address": "127.0.0.1:20003"},
                                           {"alloc": "a4", "address": "10.0.0.4:20004"}]),
        onlyloop=_svc("10.213.0.8", endpoints=[{"alloc": "a5", "address": "127.0.0.1:20005"}])))
    text = nft.render(TABLE, services, NETWORKS)
    assert text.splitlines()[1:4] == [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    names = [s.name for s in services]  # sorted: empty, lonely, loop, onlyloop, open, store, web
    chain = {name: f"svc_{i}" for i, name in enumerate(names)}
    web = _block(text, f"chain {chain['web']}")
    assert 'comment "web"' in web and "dnat to numgen random mod 2 map { 0 : 10.0.0.1 . 20001, " \
        "1 : 10.0.0.2 . 20002 }" in web
    allowed = _block(text, "set allowed")
    for element in ("10.213.0.3 . 80 . 10.214.0.0/24", "10.213.0.3 . 80 . 10.214.1.0/24",
                    "10.213.0.2 . 7000 . 10.214.2.0/24", "10.213.0.5 . 80 . 10.214.3.0/24"):
        assert element in allowed
    assert "10.213.0.3 . 80 . 10.214.2.0/24" not in allowed and "10.213.0.4 . 80" not in allowed  # nobody's
    assert "flags interval" in allowed
    assert "10.213.0.4 . 80" in _block(text, "set services")  # served, so checked: nobody may connect
    to_in, to_out = _block(text, "map to_in"), _block(text, "map to_out")
    assert f"10.213.0.3 . 80 : goto {chain['web']}" in to_in and f"10.213.0.3 . 80 : goto {chain['web']}" in to_out
    # No replica: reset, both ways. Loopback replicas: the host only (a bridge cannot reach 127.0.0.0/8).
    assert "10.213.0.6 . 80" in _block(text, "set closed_in") and "10.213.0.6 . 80" in _block(text, "set closed_out")
    assert "10.213.0.6" not in to_in and "10.213.0.6" not in to_out
    assert "127.0.0.1" not in _block(text, f"chain {chain['loop']}")
    assert "mod 2" in _block(text, f"chain {chain['loop']}_host")
    assert f"10.213.0.7 . 80 : goto {chain['loop']}_host" in to_out
    assert "10.213.0.8 . 80" in _block(text, "set closed_in") and "10.213.0.8" not in _block(text, "set closed_out")
    assert "10.213.0.8" not in to_in and f"10.213.0.8 . 80 : goto {chain['onlyloop']}_host" in to_out
    assert "ct state new ip daddr . tcp dport @services ip daddr . tcp dport . ip saddr != @allowed " \
        "reject with tcp reset" in text
    assert 'oifname != "lo" ct status dnat ct original ip daddr @vips masquerade' in text
    assert nft.render(TABLE, services, NETWORKS) == text


def test_render_of_nothing_is_an_empty_but_whole_table() -> None:
    text = nft.render(TABLE, [], {})
    assert "elements" not in text and "chain dnat_in" in text and "chain svc_" not in text


def test_table_names_and_the_forward_rule() -> None:
    assert nft.table_name("0123456789abcdef", "node-1") == "orca_mesh_0123456789ab_node-1"
    for cluster, node in (("x y", "n1"), ("abc", "N1"), ("abc", ""), ("abc", "n;1"), ("", "n1")):
        with pytest.raises(ValueError):
            nft.table_name(cluster, node)
    rule = nft.forward_rule("10.213.0.0/16", TABLE)
    assert rule == ["-m", "conntrack", "--ctstate", "DNAT", "--ctorigdst", "10.213.0.0/16",
                    "-m", "comment", "--comment", TABLE, "-j", "ACCEPT"]
    assert nft.delete_script(TABLE) == f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"


def test_vip_range_from_the_table_or_around_the_vips() -> None:
    _, services, _ = mc.parse_table(_table(a=_svc("10.213.0.2"), b=_svc("10.213.1.9")))
    assert mc.vip_range_of({"vip_range": "10.213.0.0/16"}, "10.213.0.1", services) == "10.213.0.0/16"
    assert mc.vip_range_of({}, "10.213.0.1", services) == "10.213.0.0/23"  # a leader from before
    assert mc.vip_range_of({"vip_range": "10.99.0.0/16"}, "10.213.0.1", []) == "10.213.0.1/32"  # not its resolver
    assert mc.vip_range_of({"vip_range": "junk"}, "10.213.0.1", services) == "10.213.0.0/23"
    assert mc.vip_range_of({}, None, services) is None


_addr = st.builds(lambda a, b: f"10.{a}.{b}.{a % 7 + 1}", st.integers(0, 255), st.integers(0, 255))
_endpoint = st.one_of(
    st.builds(lambda a, p: f"{a}:{p}", _addr, st.integers(1, 65535)),
    st.builds(lambda p: f"127.0.0.1:{p}", st.integers(1, 65535)))


@st.composite
def _services(draw: Any) -> list[mc.MeshService]:
    out = []
    binds: set[tuple[str, int]] = set()
    for i in range(draw(st.integers(0, 12))):
        vip, port = f"10.213.{draw(st.integers(0, 3))}.{draw(st.integers(2, 254))}", draw(st.integers(1, 65535))
        if (vip, port) in binds:
            continue
        binds.add((vip, port))
        endpoints = draw(st.lists(_endpoint, max_size=5, unique=True))
        protocol = draw(st.sampled_from(["http", "tcp"]))
        out.append(mc.MeshService(f"s{i}", draw(st.sampled_from("pqr")), vip, port, protocol,
                                  tuple(draw(st.lists(st.sampled_from(["p", "q", "*"]), max_size=2, unique=True))),
                                  tuple((f"a{j}", e) for j, e in enumerate(endpoints))))
    return out


@settings(max_examples=150, deadline=None)
@given(_services())
def test_rendered_table_serves_every_service_exactly_as_its_replicas_allow(services: list[mc.MeshService]) -> None:
    text = nft.render(TABLE, services, NETWORKS)
    assert text == nft.render(TABLE, list(services), dict(NETWORKS))
    keys = re.compile(r"[0-9.]+ \. [0-9]+(?: \. [0-9./]+)?")
    served, closed_in, closed_out, allowed = (set(keys.findall(_block(text, f"set {name}")))
                                              for name in ("services", "closed_in", "closed_out", "allowed"))
    goto = re.compile(r"([0-9.]+ \. [0-9]+) : goto (svc_[0-9a-z_]+)")
    to_in, to_out = (dict(goto.findall(_block(text, f"map {name}"))) for name in ("to_in", "to_out"))
    assert served == {f"{s.vip} . {s.port}" for s in services}
    chains = set(re.findall(r"^    chain (svc_[0-9a-z_]+) \{", text, re.M))
    assert set(to_in.values()) | set(to_out.values()) == chains  # every chain is reached, every goto has one
    for i, svc in enumerate(services):
        key = f"{svc.vip} . {svc.port}"
        inside = [e for _, e in svc.endpoints if not e.startswith("127.")]
        assert (to_in.get(key) == f"svc_{i}") == bool(inside) and (key in closed_in) == (not inside)
        assert (key in to_out) == bool(svc.endpoints) and (key in closed_out) == (not svc.endpoints)
        if inside:
            body = _block(text, f"chain svc_{i}")
            assert f"mod {len(inside)} map" in body and "127.0.0.1" not in body
        if svc.endpoints:
            body = _block(text, f"chain {to_out[key]}")
            assert f"mod {len(svc.endpoints)} map" in body
            assert all(f"{e.rsplit(':', 1)[0]} . {e.rsplit(':', 1)[1]}" in body for _, e in svc.endpoints)
        projects = set(NETWORKS) if "*" in svc.allow_from else {svc.project, *svc.allow_from}
        for project, cidrs in NETWORKS.items():
            for cidr in cidrs:
                assert (f"{key} . {cidr}" in allowed) == (project in projects)


def _unshare() -> list[str] | None:
    """A command prefix that runs in a new, empty network namespace (None: not root, or no tools)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nft"):
        return None
    return ["unshare", "--net", "--"]


@settings(max_examples=25, deadline=None)
@given(_services())
def test_the_kernel_takes_the_rendered_table_and_its_replacement(services: list[mc.MeshService]) -> None:
    prefix = _unshare()
    if prefix is None:
        pytest.skip("needs root, unshare and nft (a throwaway network namespace)")
    first = nft.render(TABLE, services, NETWORKS)
    second = nft.render(TABLE, services[::-1][:3], {"p": ("10.214.9.0/24",)})
    script = (f"nft -f /dev/stdin <<'EOF1'\n{first}EOF1\nnft -f /dev/stdin <<'EOF2'\n{second}EOF2\n"
              f"nft list table ip {TABLE} >/dev/null\nnft -f /dev/stdin <<'EOF3'\n{nft.delete_script(TABLE)}EOF3\n"
              f"nft -f /dev/stdin <<'EOF4'\n{nft.delete_script(TABLE)}EOF4\nnft list tables")
    out = subprocess.run([*prefix, "sh", "-ec", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
    assert TABLE not in out.stdout  # deleted, and deleting again is fine


def _row(alloc: str | None, networks: dict[str, str], state: str = "running", node: str = "") -> dict[str, Any]:
    return {"State": state, "Labels": ({"orca.alloc": alloc} if alloc else {}) | ({"orca.node": node} if node else {}),
            "NetworkSettings": {"Networks": {n: {"IPAddress": a} for n, a in networks.items()}}}


def test_local_addresses_are_the_clusters_project_network_addresses() -> None:
    prefix = "orca-0123456789ab-"
    rows = [_row("a1", {"bridge": "172.17.0.5", f"{prefix}p": "10.214.0.2"}),
            _row("a2", {"bridge": "172.17.0.6"}),                      # started before the mesh: host port
            _row("a3", {f"{prefix}p": "10.214.0.3"}, state="exited"),
            _row(None, {f"{prefix}p": "10.214.0.4"}),                  # not an allocation
            _row("a5", {f"{prefix}q": ""}),                            # no address (yet)
            _row("a6", {"orca-0123456789ab-n2-p": "10.214.1.2"}),      # another node's, same engine
            _row("a7", {f"{prefix}p": "127.0.0.1"}),
            _row("a8", {"orca-ffffffffffff-n1-p": "10.214.5.2"})]      # another cluster's
    assert mc.local_addresses(rows, prefix) == {"a1": "10.214.0.2", "a6": "10.214.1.2"}
    rows[0]["Labels"]["orca.node"] = "n1"
    assert mc.local_addresses(rows, prefix, "n1") == {"a1": "10.214.0.2"}


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30))
def test_local_addresses_never_raise(raw: Any) -> None:
    for rows in (raw, [raw], [{"State": "running", "Labels": {"orca.alloc": "a1"}, "NetworkSettings": raw}],
                 [{"State": "running", "Labels": {"orca.alloc": "a1"}, "NetworkSettings": {"Networks": raw}}]):
        mc.local_addresses(rows, "")


def test_local_replicas_are_reached_at_their_container_address_and_port() -> None:
    _, services, _ = mc.parse_table(_table(
        store=_svc("10.213.0.2", 7000, protocol="tcp", endpoints=[
            {"alloc": "a1", "address": "10.0.0.1:20001"}, {"alloc": "a2", "address": "10.0.0.2:20002"}]),
        web=_svc("10.213.0.3")))
    assert mc.with_local_endpoints(services, {}) is services
    local = mc.with_local_endpoints(services, {"a1": "10.214.0.2", "zz": "10.214.0.9"})
    assert local[0].endpoints == (("a1", "10.214.0.2:7000"), ("a2", "10.0.0.2:20002"))  # a2: another node's
    assert local[1].endpoints == (("a1", "10.214.0.2:80"),)
    # Another node's replica on this engine: its container address only instead of a loopback publish address.
    _, services, _ = mc.parse_table(_table(store=_svc("10.213.0.2", 7000, endpoints=[
        {"alloc": "a1", "address": "127.0.0.1:20001"}, {"alloc": "a2", "address": "10.0.0.2:20002"},
        {"alloc": "a3", "address": "[::1]:20003"}])))
    engine = {"a1": "10.214.1.2", "a2": "10.214.1.3", "a3": "10.214.1.4"}
    assert mc.with_local_endpoints(services, {}, engine)[0].endpoints == (
        ("a1", "10.214.1.2:7000"), ("a2", "10.0.0.2:20002"), ("a3", "10.214.1.4:7000"))
    assert not mc.is_loopback_endpoint("10.0.0.1:80") and not mc.is_loopback_endpoint("junk")
    text = nft.render(TABLE, local, {"p": ("10.214.0.0/24",)})
    assert "0 : 10.214.0.2 . 7000, 1 : 10.0.0.2 . 20002 }" in text


def test_mesh_lists_the_clusters_running_replicas_on_its_engine_for_their_addresses(tmp_path: Path) -> None:
    asked: list[dict[str, Any]] = []

    class Api:
        def containers(self, **kw: Any) -> list[dict[str, Any]]:
            asked.append(kw)
            return [_row("a1", {"orca-0123456789ab-n1-p": "10.214.0.2"}, node="n1"),
                    _row("a2", {"orca-0123456789ab-n2-p": "10.214.9.2"}, node="n2"),
                    _row("a3", {"orca-99-n1-p": "10.214.8.2"})]

    class Runtime(_Runtime):
        client = type("Client", (), {"api": Api()})()

    m = Mesh(MeshConfig(), node_id="n1", run_dir=tmp_path, runtime=Runtime())
    assert m._list_local() == ({"a1": "10.214.0.2"}, {"a1": "10.214.0.2", "a2": "10.214.9.2"})
    assert asked == [{"filters": {"label": ["orca.cluster=0123456789abcdef"], "status": "running"}}]
    m.set_table(_table(web=_svc("10.213.0.3", endpoints=[{"alloc": "a1", "address": "10.0.0.1:20001"}])))
    m.local, m.engine = m._list_local()
    assert "map { 0 : 10.214.0.2 . 80 }" in m.render() and "table ip orca_mesh_0123456789ab_n1 {" in m.render()


# --- DNS ----------------------------------------------------------------------------------------------------------

NAMES = {("p", "store"): "10.213.0.2", ("q", "api"): "10.213.0.3"}


def _ask(name: str, project: str | None, qtype: str = "A") -> DNSRecord:
    reply = answer(DNSRecord.question(name, qtype).pack(), project, NAMES)
    assert reply is not None
    return DNSRecord.parse(reply)


def test_dns_answers_names_of_the_askers_project_and_name_dot_project() -> None:
    r = _ask("store", "p")
    assert r.header.rcode == RCODE.NOERROR and [str(a.rdata) for a in r.rr] == ["10.213.0.2"]
    assert r.rr[0].ttl == 5
    assert [str(a.rdata) for a in _ask("API.q.", "p").rr] == ["10.213.0.3"]
    assert [str(a.rdata) for a in _ask("store.p", None).rr] == ["10.213.0.2"]
    empty = _ask("store", "p", "AAAA")
    assert empty.header.rcode == RCODE.NOERROR and not empty.rr
    for name, project in (("api", "p"), ("store", None), ("store.q", "p"), ("example.com", "p"), ("a.b.c", "p")):
        assert _ask(name, project).header.rcode == RCODE.SERVFAIL, name  # the next server may know it


def test_dns_drops_what_is_not_one_query() -> None:
    assert answer(b"", "p", NAMES) is None
    assert answer(b"\x00" * 600, "p", NAMES) is None
    response = DNSRecord.question("store").reply().pack()
    assert answer(response, "p", NAMES) is None


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_dns_never_raises_on_garbage(data: bytes) -> None:
    out = answer(data, "p", NAMES)
    assert out is None or len(out) < 1024


@given(st.sampled_from(["store", "store.p", "api.q", "nope", "x.y.z", ""]), st.sampled_from(["p", "q", None]))
def test_resolve_matches_the_rules(name: str, project: str | None) -> None:
    got = resolve(NAMES, project, name)
    labels = name.split(".")
    if len(labels) == 1:
        assert got == (NAMES.get((project, name)) if project else None)
    elif len(labels) == 2:
        assert got == NAMES.get((labels[1], labels[0]))
    else:
        assert got is None


def test_dns_qtype_any_gets_the_a_record() -> None:
    assert [QTYPE[a.rtype] for a in _ask("store", "p", "ANY").rr] == ["A"]


# --- the agent's mesh manager (no engine) ---------------------------------------------------------------------


def test_mesh_addresses_are_found_by_their_label() -> None:
    out = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
           "1: lo    inet 10.213.0.1/32 scope global lo:om0123456789\\       valid_lft forever\n"
           "1: lo    inet 10.213.0.2/32 scope global lo:om0123456789\\       valid_lft forever\n"
           "1: lo    inet 10.213.0.3/32 scope global lo:om9999999999\\       valid_lft forever\n"
           "1: lo    inet 10.213.0.4/24 scope global lo:om0123456789\\       valid_lft forever\n")
    assert mesh_addresses(out, lo_label("0123456789abcdef")) == {"10.213.0.1", "10.213.0.2"}
    assert len(lo_label("0123456789abcdef")) <= 15  # an interface label's limit


def test_upstream_dns_skips_loopback_servers(tmp_path: Path) -> None:
    stub = tmp_path / "resolv.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    real = tmp_path / "real.conf"
    real.write_text("# systemd\nnameserver 192.0.2.1\nnameserver ::1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n")
    assert upstream_dns((str(stub), str(real))) == ["192.0.2.1", "192.0.2.2"]
    assert upstream_dns((str(stub), str(tmp_path / "missing"))) == []


class _Runtime:
    cluster_id = "0123456789abcdef"
    client = None


def test_mesh_knows_projects_by_source_network_and_waits_for_a_table(tmp_path: Path) -> None:
    m = Mesh(MeshConfig(), node_id="n1", run_dir=tmp_path, runtime=_Runtime())
    assert m.container_network({"spec": {"project": "p"}}) is None  # no table yet: Docker's default bridge
    m._subnets = [(ipaddress.IPv4Network("10.214.0.0/24"), "p"), (ipaddress.IPv4Network("10.214.1.0/24"), "q")]
    assert m.project_of("10.214.1.9") == "q" and m.project_of("10.214.2.1") is None
    assert m.project_of("not an address") is None
    m.set_table(_table(web=_svc("10.213.0.3"), bad=_svc("127.0.0.1")))
    assert m.resolver == "10.213.0.1" and [s.name for s in m.services] == ["web"]
    assert network_name("0123456789abcdef", "n1", "p") == "orca-0123456789ab-n1-p"
