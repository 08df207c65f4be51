"""The cluster CA and certificates (orca.tls), the CA ops, and the TLS config rules."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import tls
from orca.config import ConfigError, load_master_config
from orca.state import ops_ca
from orca.state.machine import apply, encode_entry, new_state

NOW = time.time()


def _leaf(tmp: Path, name: str, ca: tuple[bytes, bytes], ident: tls.Identity,
          names: list[str] | None = None) -> tuple[str, str]:
    key = tls.new_key()
    cert = tls.issue(ca[0], ca[1], tls.public_key(key), ident, names or [], NOW)
    (tmp / f"{name}.crt").write_bytes(cert)
    (tmp / f"{name}.key").write_bytes(key)
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


def test_ca_and_leaf_round_trip() -> None:
    ca = tls.new_ca(NOW)
    fp = tls.fingerprint(ca[1])
    assert tls.valid_fingerprint(fp) and tls.split_bundle(ca[1] + ca[1]) == [ca[1].strip() + b"\n"] * 2
    key = tls.new_key()
    csr = tls.make_csr(key, tls.Identity("node", "n1"))
    cert = tls.issue(ca[0], ca[1], tls.csr_public_key(csr.decode()), tls.Identity("node", "n1"),
                     ["10.0.0.5", "worker-a"], NOW, days=90)
    assert tls.identity_of(cert) == tls.Identity("node", "n1")
    assert tls.issued_by(cert, ca[1]) and not tls.issued_by(cert, tls.new_ca(NOW)[1])
    info = tls.cert_info(cert)
    assert 89 * 86400 < info["not_after"] - NOW < 91 * 86400
    assert not tls.needs_renewal(cert, ca[1], NOW)
    assert tls.needs_renewal(cert, ca[1], NOW + 61 * 86400)  # past two thirds of 90 days
    assert tls.needs_renewal(cert, tls.new_ca(NOW)[1], NOW)  # another CA: issue again


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=80))
def test_garbage_csr_is_a_tls_error(text: str) -> None:
    with pytest.raises(tls.TlsError):
        tls.csr_public_key(text)


def test_bad_identities_are_refused() -> None:
    ca = tls.new_ca(NOW)
    pub = tls.public_key(tls.new_key())
    for ident in (tls.Identity("admin", "x"), tls.Identity("node", "UPPER"), tls.Identity("node", "")):
        with pytest.raises(tls.TlsError):
            tls.issue(ca[0], ca[1], pub, ident, [], NOW)


def test_mutual_tls_and_swap_without_restart(tmp_path: Path) -> None:
    """The listener's context is replaced in place: a rotated CA is trusted at once, a retired one no more."""
    old, new = tls.new_ca(NOW), tls.new_ca(NOW)
    srv_old = _leaf(tmp_path, "srv-old", old, tls.Identity("master", "m1"), ["127.0.0.1"])
    srv_new = _leaf(tmp_path, "srv-new", new, tls.Identity("master", "m1"), ["127.0.0.1"])
    cli_old = _leaf(tmp_path, "cli-old", old, tls.Identity("node", "n1"))
    cli_new = _leaf(tmp_path, "cli-new", new, tls.Identity("node", "n2"))

    async def who(request: web.Request) -> web.Response:
        der = request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        ident = tls.identity_of(der)
        return web.json_response({"id": ident.id if ident else None})

    async def main() -> list[Any]:
        app = web.Application()
        app.router.add_get("/", who)
        runner = web.AppRunner(app)
        await runner.setup()
        swap = tls.SwappableContext(tls.server_context(b"", b"", old[1], files=srv_old))
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=swap.outer)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        async def get(trust: bytes, files: tuple[str, str] | None) -> Any:
            try:
                async with aiohttp.ClientSession() as s, \
                        s.get(f"https://127.0.0.1:{port}/", ssl=tls.client_context(trust, files)) as r:
                    return (await r.json())["id"]
            except aiohttp.ClientError as err:
                return type(err).__name__
        out = [await get(old[1], cli_old), await get(old[1], None), await get(new[1], cli_new)]
        swap.swap(tls.server_context(b"", b"", new[1] + old[1], files=srv_new))
        out += [await get(new[1], cli_new), await get(new[1], cli_old)]
        swap.swap(tls.server_context(b"", b"", new[1], files=srv_new))
        out += [await get(new[1], cli_old)]
        await runner.cleanup()
        return out

    got = asyncio.run(main())
    assert got[0] == "n1" and got[1] is None and got[2].endswith("Error")
    assert got[3] == "n2" and got[4] == "n1"  # overlap: both CAs trusted
    assert got[5].endswith("Error")  # the old CA retired: its node certificate no longer accepted


def _ca_args(ca: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"fingerprint": tls.fingerprint(ca[1]), "cert_pem": ca[1].decode(), "key_sealed": "sealed",
            "not_after": NOW + 1}


def test_ca_ops_first_wins_rotate_and_retire() -> None:
    s = new_state()
    a, b = tls.new_ca(NOW), tls.new_ca(NOW)
    first = apply(s, encode_entry("ca_init", _ca_args(a), now=NOW))
    assert first["ok"] and ops_ca.ca_table(s)["current"] == tls.fingerprint(a[1])
    again = apply(s, encode_entry("ca_init", _ca_args(b), now=NOW))
    assert again["error"]["code"] == "CONFLICT" and ops_ca.ca_table(s)["current"] == tls.fingerprint(a[1])
    rotated = apply(s, encode_entry("ca_rotate", _ca_args(b), now=NOW))["result"]
    assert rotated["current"] == tls.fingerprint(b[1]) and len(rotated["trusted"]) == 2
    stale = apply(s, encode_entry("ca_retire", {"current": tls.fingerprint(a[1])}, now=NOW))
    assert stale["error"]["code"] == "CONFLICT"
    done = apply(s, encode_entry("ca_retire", {}, now=NOW))["result"]
    assert done["retired"] == [tls.fingerprint(a[1])] and done["trusted"] == [tls.fingerprint(b[1])]
    assert "sealed" not in str(s["events"])


def _master(tmp: Path, listen: str, extra: str = "") -> Path:
    (tmp / "secret").write_text("x" * 32)
    cfg = tmp / "m.toml"
    cfg.write_text(f'[node]\nid = "m1"\ndata_dir = "{tmp}/d"\n[api]\nlisten = "{listen}"\n'
                   f'[raft]\nlisten = "127.0.0.1:7001"\npeers = []\n'
                   f'[security]\ncluster_secret_file = "{tmp}/secret"\n{extra}')
    return cfg


def test_non_loopback_refuses_plain_http_unless_insecure(tmp_path: Path) -> None:
    cfg = load_master_config(_master(tmp_path, "10.1.2.3:6880"))
    assert cfg.tls and cfg.api_advertise == "https://10.1.2.3:6880"
    with pytest.raises(ConfigError, match="refusing plain HTTP"):
        load_master_config(_master(tmp_path, "10.1.2.3:6880", "[tls]\nenabled = false\n"))
    insecure = load_master_config(_master(tmp_path, "0.0.0.0:6880", "insecure_http = true\n"))
    assert not insecure.tls and insecure.insecure_http
    loop = load_master_config(_master(tmp_path, "127.0.0.1:6880"))
    assert not loop.tls and loop.api_advertise == "http://127.0.0.1:6880"
    on = load_master_config(_master(tmp_path, "127.0.0.1:6880", "[tls]\nenabled = true\ncert_days = 7\n"))
    assert on.tls and on.cert_days == 7 and on.api_advertise.startswith("https://")
    with pytest.raises(ConfigError, match="https://"):
        load_master_config(_write(tmp_path, '[api]\nlisten = "10.1.2.3:6880"\nadvertise = "http://x:1"\n'))


def _write(tmp: Path, api: str) -> Path:
    (tmp / "secret").write_text("x" * 32)
    cfg = tmp / "m2.toml"
    cfg.write_text(f'[node]\nid = "m1"\ndata_dir = "{tmp}/d"\n{api}'
                   f'[raft]\nlisten = "127.0.0.1:7001"\npeers = []\n'
                   f'[security]\ncluster_secret_file = "{tmp}/secret"\n')
    return cfg


def test_orca_join_token_flag_keeps_the_token_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orca import cli
    from orca.agent import main as agent_main

    seen: dict[str, Any] = {}

    def fake_run_join(masters: list[str], token_file: str, **kw: Any) -> int:
        seen.update(masters=masters, token_file=token_file, **kw)
        return 0
    monkeypatch.setattr(agent_main, "run_join", fake_run_join)
    token = "ORCAJOIN-2-" + "a" * 64 + "-" + "0" * 16 + "-" + "1" * 64
    assert cli.main(["join", "--token", token, "--id", "w1", "--data-dir", str(tmp_path / "w1"),
                     "--cacert", "/ca.crt", "https://10.0.0.1:6880"]) == 0
    path = Path(seen["token_file"])
    assert path.read_text().strip() == token and path.stat().st_mode & 0o777 == 0o600
    assert seen["masters"] == ["https://10.0.0.1:6880"] and seen["ca_file"] == "/ca.crt"
    assert cli.main(["join", "https://10.0.0.1:6880"]) == 2  # neither --token nor --token-file


def test_agent_config_tls_rules(tmp_path: Path) -> None:
    from orca.config import load_agent_config

    (tmp_path / "t").write_text("ORCAJOIN-2-" + "a" * 64 + "-" + "0" * 16 + "-" + "1" * 64)

    def agent(extra: str) -> Path:
        p = tmp_path / "a.toml"
        p.write_text(f'[agent]\nid = "w1"\ntoken_file = "{tmp_path}/t"\ndata_dir = "{tmp_path}/d"\n{extra}')
        return p
    on = load_agent_config(agent('masters = ["https://10.0.0.1:6880"]\nlisten = "10.0.0.5:6890"\n'))
    assert on.tls and on.advertise == "https://10.0.0.5:6890"
    with pytest.raises(ConfigError, match="refusing"):
        load_agent_config(agent('masters = ["http://10.0.0.1:6880"]\nlisten = "10.0.0.5:6890"\n'))
    off = load_agent_config(agent('masters = ["http://10.0.0.1:6880"]\nlisten = "10.0.0.5:6890"\n'
                                  "insecure_http = true\n"))
    assert not off.tls and off.insecure_http
    with pytest.raises(ConfigError, match="mix"):
        load_agent_config(agent('masters = ["http://10.0.0.1:6880", "https://10.0.0.2:6880"]\n'))


def test_cluster_init_makes_a_private_ca_once(tmp_path: Path) -> None:
    from orca.master.tls_manager import init_local_ca, local_ca

    fp, created = init_local_ca(tmp_path)
    assert created and tls.valid_fingerprint(fp)
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert init_local_ca(tmp_path) == (fp, False)  # never replaced
    found = local_ca(tmp_path)
    assert found is not None and tls.fingerprint(found[1]) == fp


def test_node_tls_pins_by_fingerprint_and_renews(tmp_path: Path) -> None:
    from orca.agent.node_tls import NodeTls

    ca, other = tls.new_ca(NOW), tls.new_ca(NOW)
    node = NodeTls("w1", tmp_path, ["10.0.0.5"])
    assert node.trust() is None and not node.ready()
    # A bundle without the pinned CA is refused (a wrong master, or someone in between).
    assert "does not match" in (node.pin(other[1].decode(), tls.fingerprint(ca[1])) or "")
    assert node.trust() is None
    assert node.pin((other[1] + ca[1]).decode(), tls.fingerprint(ca[1])) is None
    assert node.trusted_fingerprints() == {tls.fingerprint(ca[1]), tls.fingerprint(other[1])}
    # The key stays here; the certificate comes back for it.
    csr = node.csr()
    assert (tmp_path / "tls" / "node.key").stat().st_mode & 0o777 == 0o600
    cert = tls.issue(ca[0], ca[1], tls.csr_public_key(csr), tls.Identity("node", "w1"), [], NOW - 70 * 86400)
    assert "no certificate for node" in (node.accept({"certificate": tls.issue(
        ca[0], ca[1], tls.csr_public_key(csr), tls.Identity("node", "w2"), [], NOW).decode()}) or "")
    assert node.accept({"certificate": cert.decode()}) is None and node.ready()
    assert node.wants_renewal(tls.fingerprint(ca[1]), NOW)  # 70 of 90 days: past two thirds
    fresh = tls.issue(ca[0], ca[1], tls.csr_public_key(csr), tls.Identity("node", "w1"), [], NOW)
    assert node.accept({"certificate": fresh.decode()}) is None
    assert not node.wants_renewal(tls.fingerprint(ca[1]), NOW)
    assert node.wants_renewal(tls.fingerprint(other[1]), NOW)  # the signing CA changed: renew from it
    # Expired while the agent was off: not used (the agent asks for a new one with its token).
    dead = tls.issue(ca[0], ca[1], tls.csr_public_key(csr), tls.Identity("node", "w1"), [], NOW - 100 * 86400)
    (tmp_path / "tls" / "node.crt").write_bytes(dead)
    assert node.cert() is None and not node.ready()
