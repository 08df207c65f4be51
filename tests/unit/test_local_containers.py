"""orca.agent.local_containers: this node's containers from the engine's rows, and the ingress's servers
rewritten to reach them at their container's address (pure; the real HAProxy side is in test_proxy)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orca.agent import haproxy_config as hc
from orca.agent.local_containers import LocalContainer, local_containers, network_prefix, reach_locally

PREFIX = network_prefix("0123456789abcdef")


def _row(alloc: str | None, networks: dict[str, str], *, node: str = "n1", state: str = "running",
         ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"State": state, "Labels": ({"orca.alloc": alloc} if alloc else {}) | {"orca.node": node},
            "NetworkSettings": {"Networks": {n: {"IPAddress": a} for n, a in networks.items()}},
            "Ports": ports if ports is not None else [{"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 20001,
                                                      "Type": "tcp"}]}


def test_addresses_on_the_mesh_network_first_then_the_default_bridge() -> None:
    assert PREFIX == "orca-0123456789ab-"
    rows = [_row("a1", {"bridge": "172.17.0.5", f"{PREFIX}n1-p": "10.214.0.2"}),   # both: the mesh one
            _row("a2", {"bridge": "172.17.0.6"}),                                 # no mesh: the default bridge
            _row("a3", {"my-net": "172.30.0.2"}),                                 # a network orca did not make
            _row("a4", {"bridge": ""}),                                           # no address (yet)
            _row("a5", {"bridge": "172.17.0.7"}, state="exited"),
            _row("a6", {"bridge": "172.17.0.8"}, node="n2"),                      # another node's
            _row(None, {"bridge": "172.17.0.9"}),                                 # not an allocation
            _row("a7", {"bridge": "127.0.0.1"}),
            _row("a8", {"bridge": "172.17.0.10"}, ports=[
                {"PrivatePort": 53, "PublicPort": 20053, "Type": "udp"}, {"PrivatePort": 80, "PublicPort": 20080},
                {"PrivatePort": 81}, {"PrivatePort": True, "PublicPort": 20081}, "junk"])]
    got = local_containers(rows, PREFIX, "n1", default_bridge=True)
    assert got == {"a1": LocalContainer("10.214.0.2", ((20001, 8080),)),
                   "a2": LocalContainer("172.17.0.6", ((20001, 8080),)),
                   "a8": LocalContainer("172.17.0.10", ((20080, 80),))}
    assert local_containers(rows, PREFIX, "n1") == {"a1": LocalContainer("10.214.0.2", ((20001, 8080),))}
    assert set(local_containers(rows, PREFIX, default_bridge=True)) == {"a1", "a2", "a6", "a8"}
    assert got["a1"].container_port(20001) == 8080 and got["a1"].container_port(20002) is None


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30))
def test_malformed_rows_never_raise(raw: Any) -> None:
    base = {"State": "running", "Labels": {"orca.alloc": "a1"}}
    for rows in (raw, [raw], [{**base, "NetworkSettings": raw}], [{**base, "NetworkSettings": {"Networks": raw}}],
                 [{**base, "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}}, "Ports": raw}]):
        for found in local_containers(rows, PREFIX, default_bridge=True).values():
            assert isinstance(found.address, str)


def _routes(*servers: tuple[str, str]) -> list[hc.RouteSpec]:
    table = {"web.example.com": {"service": "web", "endpoints": [{"alloc": a, "address": addr} for a, addr in servers]}}
    return hc.route_specs(table, "round_robin")[0]


def test_local_servers_by_container_address_remote_by_published_port_unknown_fall_back() -> None:
    routes = _routes(("l1", "127.0.0.1:20001"), ("r1", "10.0.0.2:20001"), ("new", "127.0.0.1:20003"),
                     ("re", "127.0.0.1:20004"))
    local = {"l1": LocalContainer("172.17.0.5", ((20001, 8080),)),
             "re": LocalContainer("172.17.0.9", ((20099, 8080),)),   # recreated with another host port
             "gone": LocalContainer("172.17.0.7", ((20007, 8080),))}
    assert reach_locally(routes, {}) is routes
    [route] = reach_locally(routes, local)
    assert [(s.alloc, s.address) for s in route.servers] == [
        ("l1", "172.17.0.5:8080"),      # this node's: its container's address and port
        ("r1", "10.0.0.2:20001"),       # another node's: publish address and host port
        ("new", "127.0.0.1:20003"),     # just started, not listed yet: its published port
        ("re", "127.0.0.1:20004")]      # not the container the leader means: its published port
    text = hc.render([route], listen="127.0.0.1:8080", log_target="/dev/null", idle_timeout_s=60,
                     request_timeout_s=30, connect_timeout_s=2, drain_timeout_s=10)
    assert f"    server l1 172.17.0.5:8080 weight 1 {hc.SERVER_CHECK}" in text
    assert f"    server r1 10.0.0.2:20001 weight 1 {hc.SERVER_CHECK}" in text
    # Learning the address later is a runtime change (`set server ... addr`), not a reload.
    _, before = hc.split_servers(hc.render(routes, listen="127.0.0.1:8080", log_target="/dev/null",
                                           idle_timeout_s=60, request_timeout_s=30, connect_timeout_s=2,
                                           drain_timeout_s=10))
    plan = hc.runtime_commands(before, {}, hc.split_servers(text)[1])
    assert plan == (["set server svc_web/l1 addr 172.17.0.5 port 8080"], {})
