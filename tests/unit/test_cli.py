"""orca.cli: parsing, deploy-file loading, tables, exit codes and offline token minting.

The cluster is replaced by a fake `Client` (monkeypatched into orca.cli): these tests are about what
the CLI does with answers and errors; the HTTP behaviour is tested in test_client.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from orca import cli
from orca.cli import build_parser, format_table, load_services, main, resolve_token, status_rows
from orca.client import ApiError, Client

# ---------------------------------------------------------------------- parsing


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's real ~/.orca/token or ORCA_* variables leak into a test."""
    monkeypatch.delenv("ORCA_API", raising=False)
    monkeypatch.delenv("ORCA_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_global_options_before_or_after_the_verb() -> None:
    parser = build_parser()
    a = parser.parse_args(["--api", "http://a:1", "-o", "json", "status", "--project", "p"])
    b = parser.parse_args(["status", "--project", "p", "--api", "http://a:1", "-o", "json"])
    for args in (a, b):
        assert (args.api, args.output, args.project, args.handler) == ("http://a:1", "json", "p", cli.cmd_status)


def test_nested_verbs_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["token", "create", "--role", "agent", "--name", "w1", "--ttl", "60"])
    assert (args.role, args.name, args.ttl, args.secret_file) == ("agent", "w1", 60.0, None)
    assert parser.parse_args(["cluster", "info"]).handler is cli.cmd_cluster_info
    assert parser.parse_args(["scale", "web", "3"]).replicas == 3
    args = parser.parse_args(["stop", "web", "--purge"])
    assert (args.name, args.purge, args.project, args.all) == ("web", True, None, False)


@pytest.mark.parametrize("argv", [
    [], ["token"], ["token", "create", "--role", "root", "--name", "x"], ["scale", "web", "many"],
    ["stop"], ["stop", "web", "--project", "p"], ["stop", "--project", "p", "--purge"],
    ["scale", "web", "-1"], ["status", "-o", "yaml"], ["status", "--api", "127.0.0.1:6880"],
    ["deploy", "-f", "/nonexistent/x.json"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "stop" in capsys.readouterr().out


def test_token_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_token(None) is None
    token_file = tmp_path / "home" / ".orca" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("from-file\n")
    assert resolve_token(None) == "from-file"
    monkeypatch.setenv("ORCA_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    assert resolve_token("from-flag") == "from-flag"


# ---------------------------------------------------------------------- deploy files


def test_load_json_services_list_and_single(tmp_path: Path) -> None:
    f = tmp_path / "app.json"
    f.write_text(json.dumps({"services": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}))
    assert [s["name"] for s in load_services(f)] == ["a", "b"]
    f.write_text(json.dumps({"name": "solo", "image": "x", "replicas": 2}))
    assert load_services(f) == [{"name": "solo", "image": "x", "replicas": 2}]


def test_load_toml_array_and_single(tmp_path: Path) -> None:
    f = tmp_path / "app.toml"
    f.write_text('[[services]]\nname = "a"\nimage = "x"\n[services.env]\nK = "v"\n\n'
                 '[[services]]\nname = "b"\nimage = "y"\n')
    assert load_services(f) == [{"name": "a", "image": "x", "env": {"K": "v"}}, {"name": "b", "image": "y"}]
    f.write_text('name = "solo"\nimage = "x"\n[resources]\nmemory = "64Mi"\n')
    assert load_services(f) == [{"name": "solo", "image": "x", "resources": {"memory": "64Mi"}}]


def test_load_directory_of_service_tomls(tmp_path: Path) -> None:
    for name, body in [("web", 'image = "nginx"\nreplicas = 2\n'), ("api", 'name = "api-v2"\nimage = "app"\n')]:
        d = tmp_path / "services" / name
        d.mkdir(parents=True)
        (d / "service.toml").write_text(body)
    (tmp_path / "services" / "notes").mkdir()  # no service.toml: ignored
    specs = load_services(tmp_path)
    # Sorted by folder, and a file without a name takes its folder's.
    assert specs == [{"name": "api-v2", "image": "app"}, {"image": "nginx", "replicas": 2, "name": "web"}]
    assert load_services(tmp_path / "services") == specs


@pytest.mark.parametrize("name,content", [
    ("bad.json", "{not json"), ("bad.toml", "name = "), ("empty.json", '{"services": []}'),
    ("scalar.json", "42"), ("list.json", '{"services": {"a": 1}}'), ("items.json", '{"services": [1]}'),
])
def test_bad_deploy_files(tmp_path: Path, name: str, content: str) -> None:
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(cli.UsageError, match=name):
        load_services(f)


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(cli.UsageError, match="service.toml"):
        load_services(tmp_path)


# ---------------------------------------------------------------------- tables


def test_format_table_aligns_and_fills_blanks() -> None:
    out = format_table(["NAME", "N", "OK"], [["web", 10, True], ["a-long-name", None, False]])
    assert out.splitlines() == [
        "NAME         N   OK",
        "web          10  yes",
        "a-long-name  -   no",
    ]


def test_status_table() -> None:
    rows = status_rows([{"name": "web", "project": "shop", "status": "pending", "replicas": 3,
                         "running_replicas": 0, "healthy_replicas": 0, "image": "nginx:1", "version": 2,
                         "pending_reason": "no nodes"}])
    out = format_table(cli.STATUS_HEADERS, rows).splitlines()
    assert out[0].split() == ["NAME", "PROJECT", "STATUS", "REPLICAS", "HEALTHY", "IMAGE", "VERSION", "PENDING"]
    assert out[1].split(None, 7) == ["web", "shop", "pending", "0/3", "0", "nginx:1", "2", "no nodes"]


def test_cluster_info_text() -> None:
    text = cli.cluster_info_text({
        "masters": [{"id": "m1", "api_url": "http://127.0.0.1:6880", "state": "leader", "healthy": True,
                     "last_contact": 0.0}],
        "leader": "m1", "term": 4, "commit_index": 17, "nodes": []})
    assert "http://127.0.0.1:6880" in text and "leader: m1  term: 4  commit index: 17" in text


# ---------------------------------------------------------------------- verbs against a fake client


class FakeClient:
    """Stands in for orca.client.Client; records calls, answers from `replies` or raises ApiErrors."""

    calls: list[tuple[str, tuple[Any, ...]]] = []
    replies: dict[str, Any] = {}
    api: str | None = None
    token: str | None = None

    def __init__(self, api: str, token: str | None = None) -> None:
        FakeClient.api, FakeClient.token = api, token

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            FakeClient.calls.append((name, args + tuple(kw.values())))
            reply = FakeClient.replies[name]
            if isinstance(reply, Exception):
                raise reply
            return reply
        return call


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.calls, FakeClient.replies = [], {}
    monkeypatch.setattr(cli, "Client", FakeClient)
    return FakeClient


def test_status_verb_table_and_json(fake: type[FakeClient], capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCA_API", "http://a:1,http://b:2")
    monkeypatch.setenv("ORCA_TOKEN", "t0k")
    fake.replies["status"] = [{"name": "web", "replicas": 1, "running_replicas": 1}]
    assert main(["status"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("web")
    assert (fake.api, fake.token) == ("http://a:1,http://b:2", "t0k")
    assert main(["status", "-o", "json", "--project", "p"]) == 0
    assert json.loads(capsys.readouterr().out) == {"services": fake.replies["status"]}
    assert fake.calls[-1] == ("status", ("p",))


def test_api_error_prints_message_and_code(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["scale"] = ApiError(404, "SERVICE_NOT_FOUND", "Service 'x' not found")
    assert main(["scale", "x", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: Service 'x' not found (SERVICE_NOT_FOUND)"
    assert captured.out == ""


def test_deploy_reports_and_fails_on_errors(fake: type[FakeClient], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text(json.dumps({"services": [{"name": "a", "image": "x"}, {"name": "B!", "image": "y"}]}))
    fake.replies["deploy"] = {"deployed": ["a"], "errors": [{"service": "B!", "error": "name: not a DNS label"}]}
    assert main(["deploy", "-f", str(f), "--detach"]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "deployed a" and "error: B!: name: not a DNS label" in err
    assert fake.calls == [("deploy", ([{"name": "a", "image": "x"}, {"name": "B!", "image": "y"}],))]
    fake.replies["deploy"] = {"deployed": ["a"], "errors": []}
    assert main(["deploy", "-f", str(f)]) == 0


def test_deploy_nothing_valid_shows_each_error(fake: type[FakeClient], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text('{"name": "a"}')
    fake.replies["deploy"] = ApiError(400, "INVALID_SPEC", "no valid service",
                                      {"errors": [{"service": "a", "error": "image: required"}]})
    assert main(["deploy", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert "error: no valid service (INVALID_SPEC)" in err and "error: a: image: required" in err


def test_stop_variants(fake: type[FakeClient]) -> None:
    fake.replies.update(stop={}, stop_project={}, stop_all={})
    assert main(["stop", "web", "--purge"]) == 0
    assert main(["stop", "--project", "shop"]) == 0
    assert main(["stop", "--all"]) == 0
    assert fake.calls == [("stop", ("web", True)), ("stop_project", ("shop",)), ("stop_all", ())]


def test_online_token_create_prints_only_the_token(fake: type[FakeClient],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["create_token"] = {"token": "eyJ.x.y", "jti": "j1", "name": "ci", "role": "deployer"}
    assert main(["token", "create", "--role", "deployer", "--name", "ci"]) == 0
    assert capsys.readouterr().out == "eyJ.x.y\n"
    assert fake.calls == [("create_token", ("deployer", "ci", None))]


def test_unreachable_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real Client against a closed port: one line on stderr, exit 1, no traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cli, "Client", lambda api, token: Client(api, token, retries=0))
    assert main(["--api", f"http://127.0.0.1:{port}", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no master answered") and err.rstrip().endswith("(UNREACHABLE)")
    assert "Traceback" not in err


# ---------------------------------------------------------------------- offline tokens


def test_offline_token_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = pytest.importorskip("orca.auth")
    secret = tmp_path / "cluster.secret"
    secret.write_text("  " + "ab" * 32 + "\n")  # surrounding whitespace is not part of the secret
    assert main(["token", "create", "--secret-file", str(secret), "--role", "admin", "--name", "ops"]) == 0
    token = capsys.readouterr().out.strip()
    claims = auth.verify_token(auth.signing_key(("ab" * 32).encode()), token)
    assert (claims.sub, claims.role, claims.exp) == ("ops", "admin", None)

    assert main(["token", "create", "--secret-file", str(secret), "--role", "agent", "--name", "w1",
                 "--ttl", "3600", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    claims = auth.verify_token(auth.signing_key(("ab" * 32).encode()), doc["token"])
    assert (claims.role, claims.jti, doc["jti"]) == ("agent", doc["jti"], claims.jti)
    assert claims.exp is not None and claims.exp - claims.iat in (3600, 3601)


def test_offline_token_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("orca.auth")
    secret = tmp_path / "cluster.secret"
    secret.write_text("s3cret")
    base = ["token", "create", "--secret-file", str(secret), "--role", "admin"]
    assert main([*base, "--name", "has space"]) == 2
    assert main([*base, "--name", "ok", "--ttl", "0"]) == 2
    assert main(["token", "create", "--secret-file", str(tmp_path / "missing"), "--role", "admin",
                 "--name", "ok"]) == 2
    secret.write_text("\n")
    assert main([*base, "--name", "ok"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_read_verbs_render(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies.update(
        list_tokens=[{"jti": "j1", "name": "ops", "role": "admin", "created_at": "2024-01-01T00:00:00Z",
                      "expires_at": None, "revoked": False}],
        events=[{"time": "2024-01-01T00:00:00Z", "type": "service_scaled", "service": "web", "actor": "ops",
                 "message": "web scaled 1 -> 3"}],
        cluster_leader={"leader_id": "m2", "leader_url": "http://127.0.0.1:6882", "term": 7},
    )
    assert main(["token", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["j1", "ops", "admin", "2024-01-01T00:00:00Z",
                                                               "-", "no"]
    assert main(["events", "--service", "web", "--limit", "5"]) == 0
    assert "web scaled 1 -> 3" in capsys.readouterr().out
    assert fake.calls[-1] == ("events", ("web", None, None, 5))
    assert main(["cluster", "leader"]) == 0
    assert capsys.readouterr().out.strip() == "leader: m2  api: http://127.0.0.1:6882  term: 7"
