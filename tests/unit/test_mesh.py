"""The service mesh's pure parts: VIP allocation (and its apply), the leader's table, the agent's parsing
and HAProxy rendering, the DNS answers, the spec and config fields."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import mesh, spec
from orca.agent import mesh_config as mc
from orca.agent.mesh import Mesh, lo_label, mesh_addresses, network_name, upstream_dns
from orca.agent.mesh_dns import answer, resolve
from orca.agent.proxy import haproxy_binary
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
    assert table == {"resolver": "10.213.0.1", "services": {
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


def test_render_binds_vips_in_the_services_mode_with_source_acls() -> None:
    _, services, _ = mc.parse_table(_table(
        web=_svc("10.213.0.3"), store=_svc("10.213.0.2", 7000, protocol="tcp", allow_from=["q"]),
        lonely={**_svc("10.213.0.4"), "project": "nobody"}, open=_svc("10.213.0.5", allow_from=["*"])))
    networks = {"p": ("10.214.0.0/24", "10.214.1.0/24"), "q": ("10.214.2.0/24",), "r": ("10.214.3.0/24",)}
    text = mc.render(services, networks, ready_listen="127.0.0.1:9")
    web = text.split("frontend mesh_web")[1].split("backend")[0]
    assert "mode http" in web and "bind 10.213.0.3:80" in web
    assert "acl allowed src 10.214.0.0/24 10.214.1.0/24\n" in web
    store = text.split("frontend mesh_store")[1].split("backend")[0]
    assert "mode tcp" in store and "acl allowed src 10.214.0.0/24 10.214.1.0/24 10.214.2.0/24\n" in store
    assert "option splice-request\n" in store and "option splice-response\n" in store and "splice" not in web
    lonely = text.split("frontend mesh_lonely")[1].split("backend")[0]
    assert "tcp-request connection reject\n" in lonely and "allowed" not in lonely
    assert "10.214.3.0/24" in text.split("frontend mesh_open")[1].split("backend")[0]
    assert "server a1 10.0.0.1:20001 weight 1 check" in text
    assert mc.render(services, networks, ready_listen="127.0.0.1:9") == text


def test_haproxy_accepts_the_rendered_mesh_config(tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("haproxy is not installed")
    _, services, _ = mc.parse_table(_table(web=_svc("10.213.0.3"), store=_svc("10.213.0.2", 7000, protocol="tcp"),
                                           empty={**_svc("10.213.0.4"), "endpoints": []}))
    cfg = tmp_path / "mesh.cfg"
    cfg.write_text(mc.render(services, {"p": tuple(f"10.214.{i}.0/24" for i in range(40))},
                             ready_listen="127.0.0.1:9", stats_socket=str(tmp_path / "s.sock")))
    out = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr


def _row(alloc: str | None, networks: dict[str, str], state: str = "running") -> dict[str, Any]:
    return {"State": state, "Labels": {"orca.alloc": alloc} if alloc else {},
            "NetworkSettings": {"Networks": {n: {"IPAddress": a} for n, a in networks.items()}}}


def test_local_addresses_are_this_nodes_project_network_addresses() -> None:
    prefix = "orca-0123456789ab-n1-"
    rows = [_row("a1", {"bridge": "172.17.0.5", f"{prefix}p": "10.214.0.2"}),
            _row("a2", {"bridge": "172.17.0.6"}),                      # started before the mesh: host port
            _row("a3", {f"{prefix}p": "10.214.0.3"}, state="exited"),
            _row(None, {f"{prefix}p": "10.214.0.4"}),                  # not an allocation
            _row("a5", {f"{prefix}q": ""}),                            # no address (yet)
            _row("a6", {"orca-0123456789ab-n2-p": "10.214.1.2"}),      # another node's network
            _row("a7", {f"{prefix}p": "127.0.0.1"})]
    assert mc.local_addresses(rows, prefix) == {"a1": "10.214.0.2"}


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
    text = mc.render(local, {"p": ("10.214.0.0/24",)}, ready_listen="127.0.0.1:9")
    assert "server a1 10.214.0.2:7000 weight 1 check" in text and "server a2 10.0.0.2:20002 weight 1" in text


def test_mesh_lists_its_nodes_running_replicas_for_their_addresses(tmp_path: Path) -> None:
    asked: list[dict[str, Any]] = []

    class Api:
        def containers(self, **kw: Any) -> list[dict[str, Any]]:
            asked.append(kw)
            return [_row("a1", {"orca-0123456789ab-n1-p": "10.214.0.2"}),
                    _row("a2", {"orca-0123456789ab-n1x-p": "10.214.9.2"})]

    class Runtime(_Runtime):
        client = type("Client", (), {"api": Api()})()

    m = Mesh(MeshConfig(), node_id="n1", run_dir=tmp_path, runtime=Runtime())
    assert m._list_local() == {"a1": "10.214.0.2"}
    assert asked == [{"filters": {"label": ["orca.cluster=0123456789abcdef", "orca.node=n1"], "status": "running"}}]
    m.set_table(_table(web=_svc("10.213.0.3", endpoints=[{"alloc": "a1", "address": "10.0.0.1:20001"}])))
    m.local = m._list_local()
    assert "server a1 10.214.0.2:80 weight 1 check" in m.proxy.render()


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


def test_a_replica_change_alone_goes_through_the_runtime_api() -> None:
    from orca.agent import haproxy_config as hc

    def text(*endpoints: tuple[str, str]) -> str:
        _, services, _ = mc.parse_table(_table(store=_svc("10.213.0.2", 7000, protocol="tcp", endpoints=[
            {"alloc": a, "address": addr} for a, addr in endpoints])))
        return mc.render(services, {"p": ("10.214.0.0/24",)}, ready_listen="127.0.0.1:9")

    before, after = text(("a1", "10.0.0.1:20001")), text(("a2", "10.0.0.3:20007"))
    (skel_before, live), (skel_after, wanted) = hc.split_servers(before), hc.split_servers(after)
    assert skel_before == skel_after  # same skeleton: no reload needed
    plan = hc.runtime_commands(live, {}, wanted)
    assert plan is not None
    commands, parked = plan
    assert commands[0] == "set server mesh_store/a1 state maint" and parked == {("mesh_store", "a1"): "10.0.0.1:20001"}
    assert any(c.startswith("add server mesh_store/a2 10.0.0.3:20007 weight 1 check") for c in commands)


class _TableOnly:
    """What MeshProxy reads from its Mesh."""

    def __init__(self, services: list[mc.MeshService]) -> None:
        self.services = services
        self.networks = {"p": ("127.0.0.0/8",)}
        self.local: dict[str, str] = {}


async def _echo_server() -> tuple[Any, int]:
    async def handle(reader: Any, writer: Any) -> None:
        writer.write(b"echo " + await reader.readline())
        await writer.drain()
        writer.close()
    import asyncio
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_the_mesh_haproxy_serves_tcp_and_takes_a_new_replica_without_a_new_worker(tmp_path: Path) -> None:
    import asyncio

    from orca.agent.mesh import MeshProxy
    from orca.devcluster import free_ports

    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed")
    (s1, p1), (s2, p2) = await _echo_server(), await _echo_server()
    port = free_ports(1)[0]
    mesh = _TableOnly([mc.MeshService("store", "p", "127.0.0.1", port, "tcp", (), (("a1", f"127.0.0.1:{p1}"),))])
    proxy = MeshProxy(mesh, tmp_path / "mesh")  # type: ignore[arg-type]

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        try:
            return await asyncio.wait_for(reader.read(100), 5)
        finally:
            writer.close()
    try:
        await proxy.start()
        proxy.refresh()
        assert await proxy.settled()
        assert await ask() == b"echo ping\n"
        workers = await proxy._workers()
        mesh.services = [mc.MeshService("store", "p", "127.0.0.1", port, "tcp", (), (("a2", f"127.0.0.1:{p2}"),))]
        s1.close()
        proxy.refresh()
        assert await proxy.settled()
        assert await proxy._workers() == workers  # the runtime API, not a reload
        for _ in range(50):  # a1 is in maintenance at once; a2 serves once its first check passed
            with contextlib.suppress(OSError, TimeoutError):
                if await ask() == b"echo ping\n":
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the new replica never answered")
    finally:
        await proxy.stop()
        s2.close()
