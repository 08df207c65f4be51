"""Client contexts (`~/.orca/config.toml`), endpoint order, discovery and `orca context` (fake masters)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca import cli
from orca.cli import main
from orca.sdk.config import DEFAULT_API, ClientConfig, ConfigFileError, resolve
from orca.sdk.transport import Endpoints
from tests.unit.test_client import FakeMaster, _client, _refused_url, masters  # noqa: F401 - fixture

URLS = ["http://127.0.0.1:6880", "http://127.0.0.1:6882", "http://127.0.0.1:6884"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ORCA_API", "ORCA_TOKEN", "ORCA_CONTEXT", "ORCA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _write_context(tmp_path: Path, endpoints: list[str], token: str = "ctx-token", name: str = "local") -> Path:
    token_file = tmp_path / f"{name}.token"
    token_file.write_text(token + "\n")
    cfg = ClientConfig.load()
    cfg.set(name, endpoints, str(token_file))
    cfg.current = cfg.current or name
    cfg.save()
    return cfg.path


# ---------------------------------------------------------------------- the file


def test_config_round_trips_private_and_atomic(tmp_path: Path) -> None:
    path = _write_context(tmp_path, URLS)
    assert path == tmp_path / "home" / ".orca" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    cfg = ClientConfig.load()
    ctx = cfg.context()
    assert cfg.current == "local" and ctx is not None
    assert (ctx.endpoints, ctx.token(), ctx.ca_file) == (URLS, "ctx-token", "")
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left


@pytest.mark.parametrize("text, message", [
    ("current = 3\n", "current"),
    ("[contexts.a]\nendpoints = 'x'\n", "endpoints"),
    ("[contexts.a]\nendpoints = ['ftp://x']\n", "not an http"),
    ("[contexts.a]\nendpoint = []\n", "unknown key 'endpoint'"),
    ("[contexts.'a b']\nendpoints = []\n", "context name"),
    ("[contexts.a]\ntoken_file = 1\n", "token_file"),
    ("not toml", "invalid TOML"),
])
def test_malformed_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "home" / ".orca" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        ClientConfig.load()


@given(st.lists(st.sampled_from(URLS + ["http://h:1", "https://x.example:443"]), min_size=1, max_size=8))
def test_set_keeps_order_without_duplicates(urls: list[str]) -> None:
    cfg = ClientConfig(Path("/nonexistent/config.toml"))
    ctx = cfg.set("c", urls)
    assert ctx.endpoints == list(dict.fromkeys(urls))


# ---------------------------------------------------------------------- what wins


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve().endpoints == [DEFAULT_API] and resolve().token is None
    home = tmp_path / "home" / ".orca"
    home.mkdir(parents=True)
    (home / "token").write_text("home-token\n")
    assert resolve().token == "home-token"
    _write_context(tmp_path, URLS)
    target = resolve()
    assert (target.endpoints, target.token, target.context, target.endpoints_from) == (
        URLS, "ctx-token", "local", "context")
    monkeypatch.setenv("ORCA_API", "http://env:1")
    monkeypatch.setenv("ORCA_TOKEN", "env-token")
    target = resolve()
    assert (target.endpoints, target.token, target.endpoints_from) == (["http://env:1"], "env-token", "env")
    target = resolve("http://flag:1,http://flag:2", "flag-token")
    assert (target.endpoints, target.token, target.endpoints_from) == (
        ["http://flag:1", "http://flag:2"], "flag-token", "flag")


def test_named_context_and_a_broken_file_only_matter_when_used(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _write_context(tmp_path, URLS)
    _write_context(tmp_path, ["http://other:1"], token="other-token", name="other")
    assert resolve(context="other").endpoints == ["http://other:1"]
    monkeypatch.setenv("ORCA_CONTEXT", "other")
    assert resolve().token == "other-token"
    with pytest.raises(ConfigFileError, match="no context 'nope'"):
        resolve(context="nope")
    (tmp_path / "home" / ".orca" / "config.toml").write_text("broken = [")
    monkeypatch.delenv("ORCA_CONTEXT")
    assert resolve("http://a:1", "t").endpoints == ["http://a:1"]  # explicit: the file is not read
    with pytest.raises(ConfigFileError):
        resolve()


# ---------------------------------------------------------------------- endpoint order


def test_a_master_marked_down_goes_last_for_a_while() -> None:
    skipped: list[str] = []
    ends = Endpoints(URLS, on_skip=lambda url, err: skipped.append(url), down_s=60)
    assert ends.order([None, URLS[1]]) == [URLS[1], URLS[0], URLS[2]]
    ends.mark_down(URLS[0], ConnectionRefusedError())
    assert ends.order() == [URLS[1], URLS[2], URLS[0]] and skipped == [URLS[0]]
    ends.mark_up(URLS[0])
    assert ends.order() == URLS
    ends.down_s = 0
    ends.mark_down(URLS[2], ConnectionRefusedError())
    assert ends.order() == URLS  # the penalty is over


def test_client_skips_a_refused_master_once(masters: Callable[[], FakeMaster]) -> None:  # noqa: F811
    live = masters()
    live.handler = lambda seen: (200, {}, {"services": []})
    dead = _refused_url()
    skipped: list[str] = []
    with _client([dead, live.url], on_skip=lambda url, err: skipped.append(url)) as client:
        for _ in range(5):
            assert client.status() == []
    assert skipped == [dead]  # tried once, then the live master first
    assert len(live.seen) == 5


def test_discover_learns_the_members(masters: Callable[[], FakeMaster]) -> None:  # noqa: F811
    a, b = masters(), masters()
    info = {"masters": [{"id": "m1", "api_url": a.url + "/"}, {"id": "m2", "api_url": b.url},
                        {"id": "bad", "api_url": "javascript:x"}, "junk"]}
    a.handler = lambda seen: (200, {}, info)
    with _client(a.url) as client:
        assert client.discover() == [a.url, b.url]
        assert client.apis == [a.url, b.url]


# ---------------------------------------------------------------------- orca context


def test_context_set_discovers_and_every_verb_uses_it(masters: Callable[[], FakeMaster],  # noqa: F811
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = masters(), masters(), masters()
    seen_tokens: list[str] = []

    def answer(seen):  # type: ignore[no-untyped-def]
        seen_tokens.append(seen.headers.get("Authorization", ""))
        if seen.path.startswith("/api/v1/cluster/info"):
            return 200, {}, {"masters": [{"api_url": m.url} for m in (a, b, c)]}
        return 200, {}, {"services": []}

    for m in (a, b, c):
        m.handler = answer
    token_file = tmp_path / "admin.token"
    token_file.write_text("admin-tok\n")
    assert main(["context", "set", "prod", "--api", b.url, "--token-file", str(token_file)]) == 0
    assert capsys.readouterr().out.strip() == f"context prod: {b.url}, {a.url}, {c.url} (current)"
    doc = ClientConfig.load()
    assert doc.current == "prod" and doc.contexts["prod"].endpoints == [b.url, a.url, c.url]
    assert main(["context", "list", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["contexts"]["prod"]["token_file"] == str(token_file)
    # b dies: the CLI goes on with the others, and says so with -v.
    b.handler = lambda seen: (503, {}, {"error": "x", "code": "CLUSTER_NOT_READY"})
    assert main(["status", "-v"]) == 0
    assert seen_tokens[-1] == "Bearer admin-tok"
    assert main(["context", "use", "nope"]) == 2
    assert main(["context", "rm", "prod"]) == 0
    assert ClientConfig.load().current == ""


def test_context_set_saves_the_urls_as_given_when_the_cluster_is_down(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "Client", cli.Client)
    dead = _refused_url()
    assert main(["context", "set", "x", "--api", dead, "--use"]) == 0
    captured = capsys.readouterr()
    assert "could not ask the cluster" in captured.err
    assert ClientConfig.load().contexts["x"].endpoints == [dead]
    assert main(["context", "refresh"]) == 1


def test_a_master_that_never_accepts_costs_one_connect_timeout(masters: Callable[[], FakeMaster]) -> None:  # noqa: F811
    """A listening socket whose accept queue is full drops SYNs, like a host that is gone: the client gives
    up after `connect_timeout` (not the 10 s read timeout) and the next master answers."""
    import socket

    live = masters()
    live.handler = lambda seen: (200, {}, {"services": []})
    hole = socket.socket()
    fillers: list[socket.socket] = []
    try:
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        for _ in range(4):  # fill the accept queue (never accepted)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(hole.getsockname())
            fillers.append(s)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        skipped: list[tuple[str, str]] = []
        with _client([url, live.url], connect_timeout=0.3, timeout=30,
                     on_skip=lambda u, err: skipped.append((u, type(err).__name__))) as client:
            assert client.status() == []
        assert skipped and skipped[0][0] == url
    finally:
        for s in fillers:
            s.close()
        hole.close()
