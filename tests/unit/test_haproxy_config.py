"""Rendering the ingress HAProxy config from a route table (orca.agent.haproxy_config): pure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca.agent import haproxy_config as hc
from orca.agent.proxy import haproxy_binary


def table(endpoints: list[tuple[str, str, bool]], **route: Any) -> dict[str, Any]:
    eps = [{"alloc": a, "address": addr, "canary": c} for a, addr, c in endpoints]
    return {"web.example.com": {"service": "web", "strategy": None, "canary_weight": None, "endpoints": eps, **route}}


def render(specs: list[hc.RouteSpec], **kw: Any) -> str:
    return hc.render(specs, listen="127.0.0.1:8080", log_target="/run/log.sock", idle_timeout_s=60,
                     request_timeout_s=30, connect_timeout_s=2, drain_timeout_s=10, **kw)


def test_specs_group_domains_by_service_and_skip_bad_routes() -> None:
    routes = {**table([("a1", "127.0.0.1:20001", False), ("a1", "127.0.0.1:20001", False)]),
              "www.example.com.": {"service": "web", "endpoints": []},  # the first route of a service wins
              "bad.example.com": {"service": "bad", "endpoints": [{"alloc": "z"}]},
              "worse.example.com": {"service": "w", "strategy": "random", "endpoints": []},
              "evil.example.com": {"service": "x y", "endpoints": []},
              "bad host": {"service": "ok", "endpoints": []},
              "inj.example.com": {"service": "i", "endpoints": [{"alloc": "a\nserver", "address": "1.2.3.4:1"}]},
              "v6.example.com": {"service": "v6", "endpoints": [{"alloc": "v", "address": "::1:20000"}]}}
    specs, warnings = hc.route_specs(routes, "least_conn")
    by = {s.service: s for s in specs}
    assert set(by) == {"web", "v6"} and len(warnings) == 5
    assert by["web"].domains == ("web.example.com", "www.example.com")
    assert by["web"].strategy == "least_conn" and [s.alloc for s in by["web"].servers] == ["a1"]
    assert by["v6"].servers[0].address == "[::1]:20000"
    specs, _ = hc.route_specs(routes, "round_robin", fenced={"a1"})
    assert {s.service: s for s in specs}["web"].servers == ()


def test_render_has_routes_weights_and_envelopes() -> None:
    specs, _ = hc.route_specs(table([("s1", "127.0.0.1:1", False), ("c1", "127.0.0.1:2", True)],
                                    canary_weight=0.2, strategy="least_conn"), "round_robin")
    text = render(specs, lua_file="/run/hop.lua")
    assert "backend svc_web" in text and "balance leastconn" in text
    assert "server s1 127.0.0.1:1 weight 256 " in text and "server c1 127.0.0.1:2 weight 64 " in text
    assert ('http-error status 503 content-type application/json string "{\\"error\\": {\\"code\\":'
            ' \\"NO_HEALTHY_REPLICA\\", \\"message\\": \\"no healthy replica for web\\"') in text
    for status, body in hc.error_bodies("web").items():  # each one is orca's envelope
        assert json.loads(body)["error"]["details"] == {"service": "web"} and f"status {status} " in text
    assert "use_backend svc_web if { var(txn.host) -m str web.example.com }" in text
    assert "lua-load /run/hop.lua" in text and "log /run/log.sock len 1024" in text
    assert render(specs, lua_file="/run/hop.lua") == text  # deterministic: the agent reloads on a change only
    assert "unless known" not in render([])  # no route: every host is a 404


def test_many_domains_stay_under_haproxys_words_per_line() -> None:
    routes = {f"d{i}.example.com": {"service": "web", "endpoints": []} for i in range(100)}
    specs, _ = hc.route_specs(routes, "round_robin")
    assert max(len(line.split()) for line in render(specs).splitlines()) < 64


@given(st.integers(0, 6), st.integers(0, 6), st.one_of(st.none(), st.floats(0, 1)))
def test_weights_give_the_canaries_their_share(n_stable: int, n_canary: int, weight: float | None) -> None:
    servers = tuple(hc.ServerSpec(f"s{i}", "127.0.0.1:1", False) for i in range(n_stable)) + tuple(
        hc.ServerSpec(f"c{i}", "127.0.0.1:1", True) for i in range(n_canary))
    weights = hc.server_weights(servers, weight)
    assert len(weights) == len(servers) and all(0 <= w <= hc.WEIGHT_SCALE for w in weights)
    if not n_stable or not n_canary:
        assert set(weights) <= {1}
        return
    canary = sum(w for w, s in zip(weights, servers, strict=True) if s.canary)
    share = canary / sum(weights)
    want = n_canary / len(servers) if weight is None else weight
    # Integer weights (at most 256): each server's share is off by under 1/256 of the total at most.
    assert abs(share - want) <= len(servers) / hc.WEIGHT_SCALE + 0.005


@pytest.mark.skipif(haproxy_binary() is None, reason="HAProxy not installed")
def test_haproxy_accepts_the_rendered_config(tmp_path: Path) -> None:
    specs, _ = hc.route_specs({**table([("s1", "127.0.0.1:1", False), ("c1", "[::1]:2", True)], canary_weight=0.5),
                               "api.example.com": {"service": "api", "endpoints": []}}, "round_robin")
    lua = tmp_path / "hop.lua"
    lua.write_text(hc.HOP_LUA)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(specs, lua_file=str(lua)))
    out = subprocess.run([str(haproxy_binary()), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr


def test_split_servers_reads_back_what_render_wrote() -> None:
    specs, _ = hc.route_specs({**table([("s1", "127.0.0.1:1", False), ("c1", "[::1]:2", True)], canary_weight=0.25),
                               "api.example.com": {"service": "api", "endpoints": []}}, "round_robin")
    skeleton, servers = hc.split_servers(render(specs))
    assert servers == {"svc_api": {}, "svc_web": {"s1": ("127.0.0.1:1", 256), "c1": ("[::1]:2", 85)}}
    assert hc.SERVER_LINE not in skeleton and "backend svc_web" in skeleton
    other, _ = hc.route_specs(table([("s2", "127.0.0.1:3", False)]), "round_robin")
    assert hc.split_servers(render(other))[0] != skeleton  # api is gone: not a runtime change


def test_runtime_commands_examples() -> None:
    live = {"svc_web": {"a": ("127.0.0.1:1", 1), "b": ("127.0.0.1:2", 1)}}
    commands, parked = hc.runtime_commands(live, {}, {"svc_web": {"b": ("127.0.0.1:2", 3),
                                                                  "c": ("127.0.0.1:3", 1)}}) or ([], {})
    assert commands == ["set server svc_web/a state maint", "set weight svc_web/b 3",
                        f"add server svc_web/c 127.0.0.1:3 weight 1 {hc.SERVER_CHECK}",
                        "enable health svc_web/c", "enable server svc_web/c"]
    assert parked == {("svc_web", "a"): "127.0.0.1:1"}
    # Moved (a local replica now at its container's address): `set server addr`; to a host name: a reload.
    assert hc.runtime_commands(live, {}, {"svc_web": {"a": ("172.17.0.5:8080", 1)}}) == (
        ["set server svc_web/b state maint", "set server svc_web/a addr 172.17.0.5 port 8080"],
        {("svc_web", "b"): "127.0.0.1:2"})
    assert hc.runtime_commands(live, {}, {"svc_web": {"a": ("[::1]:9", 1), "b": ("127.0.0.1:2", 1)}}) == (
        ["set server svc_web/a addr ::1 port 9"], {})
    assert hc.runtime_commands(live, {}, {"svc_web": {"a": ("node2.example:9", 1)}}) is None
    assert hc.runtime_commands(live, {}, {"svc_api": {}}) is None  # another backend
    # Parked and wanted again: made ready (moved first when its address changed meanwhile).
    assert hc.runtime_commands({"svc_web": {}}, parked, {"svc_web": {"a": ("127.0.0.1:1", 2)}}) == (
        ["set weight svc_web/a 2", "set server svc_web/a state ready"], {})
    assert hc.runtime_commands({"svc_web": {}}, parked, {"svc_web": {"a": ("127.0.0.1:5", 1)}}) == (
        ["set server svc_web/a addr 127.0.0.1 port 5", "set weight svc_web/a 1", "set server svc_web/a state ready"],
        {})
    assert hc.runtime_commands({"svc_web": {}}, parked, {"svc_web": {"a": ("db.example:5", 1)}}) is None
    assert hc.runtime_reply_ok("set server svc_web/a addr 127.0.0.1 port 5",
                               "IP changed from '127.0.0.1' to '127.0.0.1', port changed from '1' to '5' by 'x'")
    assert not hc.runtime_reply_ok("set server svc_web/a addr 127.0.0.1 port 5", "No such server.")
    assert hc.runtime_reply_ok("set weight svc_web/a 2", "") and not hc.runtime_reply_ok("del server x/y", "busy")
    many = {"svc_web": {f"s{i}": ("127.0.0.1:1", 1) for i in range(hc.RUNTIME_MAX_COMMANDS)}}
    assert hc.runtime_commands({"svc_web": {}}, {}, many) is None  # a reload is cheaper


servers_st = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]),
                             st.tuples(st.sampled_from(["127.0.0.1:1", "127.0.0.1:2", "172.17.0.2:80"]),
                                       st.integers(0, 256)),
                             max_size=5)


@given(st.dictionaries(st.sampled_from(["svc_x", "svc_y"]), st.tuples(servers_st, servers_st), max_size=2),
       st.dictionaries(st.tuples(st.sampled_from(["svc_x", "svc_y"]), st.sampled_from(["d", "e"])),
                       st.sampled_from(["127.0.0.1:1", "127.0.0.1:2"])))
def test_runtime_commands_reach_the_wanted_servers(pairs: dict[str, Any], parked: dict[tuple[str, str], str]) -> None:
    """Played on a model of HAProxy's servers, the commands give exactly `wanted`; what they take out is
    parked (in maintenance), never deleted while it may have requests in flight."""
    live = {b: dict(have) for b, (have, _) in pairs.items()}
    wanted = {b: dict(want) for b, (_, want) in pairs.items()}
    parked = {(b, n): addr for (b, n), addr in parked.items() if b in live and n not in live[b]}
    plan = hc.runtime_commands(live, parked, wanted)
    if plan is None:
        return
    commands, new_parked = plan
    model = {b: {n: [addr, w, "ready"] for n, (addr, w) in servers.items()} for b, servers in live.items()}
    for (b, n), addr in parked.items():
        model[b][n] = [addr, 0, "maint"]
    for command in commands:
        words = command.split()
        backend, name = words[2].split("/") if words[0] in ("set", "enable", "add") and words[1] in (
            "server", "weight", "health") else (None, None)
        if words[:2] == ["add", "server"]:
            assert name not in model[backend]  # HAProxy refuses a duplicate name
            model[backend][name] = [words[3], int(words[5]), "maint"]  # added servers start in maintenance
        elif words[:2] == ["enable", "server"]:
            model[backend][name][2] = "ready"
        elif words[:2] == ["set", "weight"]:
            model[backend][name][1] = int(words[3])
        elif words[:2] == ["set", "server"] and words[3] == "addr":
            model[backend][name][0] = f"{words[4]}:{words[6]}"
        elif words[:2] == ["set", "server"] and words[3:5] == ["state", "maint"]:
            model[backend][name][2] = "maint"
        elif words[:2] == ["set", "server"] and words[3:5] == ["state", "ready"]:
            model[backend][name][2] = "ready"
    ready = {b: {n: (v[0], v[1]) for n, v in servers.items() if v[2] == "ready"} for b, servers in model.items()}
    assert ready == wanted
    assert new_parked == {(b, n): v[0] for b, servers in model.items() for n, v in servers.items() if v[2] == "maint"}
