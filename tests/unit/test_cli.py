"""orca.cli: parsing, deploy-file loading, tables, exit codes and offline token minting.

The cluster is replaced by a fake `Client` (monkeypatched into orca.cli): these tests are about what
the CLI does with answers and errors; the HTTP behaviour is tested in test_client.py.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import types
from collections.abc import Iterator
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

    def __init__(self, api: str, token: str | None = None, **kw: Any) -> None:
        FakeClient.api, FakeClient.token = api, token
        self.apis = api.split(",")

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            FakeClient.calls.append((name, args + tuple(kw.values())))
            reply = FakeClient.replies[name]
            if isinstance(reply, BaseException):
                raise reply
            if callable(reply):  # a function stands in for the method itself
                return reply(*args, **kw)
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
    assert main(["deploy", "-f", str(f), "--detach"]) == 0
    assert [c[0] for c in fake.calls] == ["deploy", "deploy"]  # --detach: no waiting


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
    assert fake.calls == [("create_token", ("deployer", "ci", None, None))]


def test_agent_tokens_are_bound_to_a_node(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["create_token"] = {"token": "eyJ.a.b", "jti": "j2", "name": "worker-2", "role": "agent"}
    assert main(["token", "create", "--role", "agent", "--node", "worker-2"]) == 0
    assert capsys.readouterr().out == "eyJ.a.b\n"
    assert fake.calls == [("create_token", ("agent", "worker-2", None, "worker-2"))]
    assert main(["token", "create", "--role", "agent", "--name", "w"]) == 2
    assert "--node" in capsys.readouterr().err
    assert main(["token", "create", "--role", "viewer", "--name", "v", "--node", "worker-2"]) == 2
    assert main(["token", "create", "--role", "viewer"]) == 2
    assert len(fake.calls) == 1


def test_join_token_verbs(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["create_join_token"] = {"token": "ORCAJOIN-1-x-y", "id": "x", "rotated": ["old"]}
    assert main(["cluster", "join-token", "worker", "--rotate", "--node", "worker-3"]) == 0
    out = capsys.readouterr()
    assert out.out == "ORCAJOIN-1-x-y\n" and "old" in out.err
    assert main(["cluster", "join-token", "worker", "--ttl", "0"]) == 0
    fake.replies["list_join_tokens"] = [{"id": "x", "role": "worker", "node": None, "used_by": "worker-3",
                                         "revoked": False}]
    assert main(["cluster", "join-tokens"]) == 0
    assert "worker-3" in capsys.readouterr().out
    fake.replies["revoke_join_token"] = {"id": "x", "revoked": True}
    assert main(["cluster", "revoke-join-token", "x"]) == 0
    assert main(["cluster", "join-token", "manager"]) == 2
    assert fake.calls == [("create_join_token", ("worker", 86400.0, "worker-3", True)),
                          ("create_join_token", ("worker", None, None, False)),
                          ("list_join_tokens", ()), ("revoke_join_token", ("x",))]


def test_unreachable_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real Client against a closed port: one line on stderr, exit 1, no traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cli, "Client", lambda api, token, **kw: Client(api, token, retries=0, **kw))
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

    assert main(["token", "create", "--secret-file", str(secret), "--role", "agent", "--node", "w1",
                 "--ttl", "3600", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    claims = auth.verify_token(auth.signing_key(("ab" * 32).encode()), doc["token"])
    assert (claims.role, claims.jti, doc["jti"]) == ("agent", doc["jti"], claims.jti)
    assert (claims.node, claims.sub, doc["node"]) == ("w1", "w1", "w1")
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
    assert capsys.readouterr().out.splitlines()[1].split() == ["j1", "ops", "admin", "-", "-", "2024-01-01T00:00:00Z",
                                                               "-", "no"]
    assert main(["events", "--service", "web", "--limit", "5"]) == 0
    assert "web scaled 1 -> 3" in capsys.readouterr().out
    assert fake.calls[-1] == ("events", ("web", None, None, 5))
    assert main(["cluster", "leader"]) == 0
    assert capsys.readouterr().out.strip() == "leader: m2  api: http://127.0.0.1:6882  term: 7"


# ---------------------------------------------------------------------- agent and join


@pytest.fixture
def agent_main(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """A stand-in orca.agent.main: the CLI imports it lazily, so a fake module in sys.modules is used."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    module = types.ModuleType("orca.agent.main")
    module.run_agent = lambda *a, **kw: calls.append(("run_agent", a, kw)) or 0  # type: ignore[attr-defined]
    module.run_join = lambda *a, **kw: calls.append(("run_join", a, kw)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "orca.agent.main", module)
    return calls


def test_agent_verb(agent_main: list[Any]) -> None:
    assert main(["agent", "--config", "worker.toml"]) == 0
    assert agent_main == [("run_agent", ("worker.toml",), {})]
    assert main(["agent"]) == 2  # --config is required


def test_join_passes_only_given_options(agent_main: list[Any]) -> None:
    assert main(["join", "http://m1:6880", "http://m2:6882", "--token-file", "w.token"]) == 3
    assert agent_main[-1] == ("run_join", (["http://m1:6880", "http://m2:6882"], "w.token"), {})
    assert main(["join", "http://m1:6880", "--token-file", "w.token", "--id", "w1", "--listen", "0.0.0.0:6890",
                 "--status-listen", "127.0.0.1:9101", "--data-dir", "/var/orca", "--label", "zone=a",
                 "--label", "disk = ssd"]) == 3
    assert agent_main[-1] == ("run_join", (["http://m1:6880"], "w.token"), {
        "agent_id": "w1", "listen": "0.0.0.0:6890", "status_listen": "127.0.0.1:9101", "data_dir": "/var/orca",
        "labels": {"zone": "a", "disk": "ssd"}})


@pytest.mark.parametrize("argv", [
    ["join", "--token-file", "w.token"], ["join", "http://m1:6880"],
    ["join", "http://m1:6880", "--token-file", "w.token", "--label", "zone"],
    ["join", "http://m1:6880", "--token-file", "w.token", "--label", "=a"],
])
def test_join_usage_errors(argv: list[str], agent_main: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert agent_main == [] and "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------- deploy waits


def _detail(name: str, running: int, healthy: int, desired: int = 3, pending: str | None = None,
            containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"name": name, "version": 1, "status": "running", "pending_reason": pending,
            "replicas": {"desired": desired, "running": running, "healthy": healthy},
            "containers": containers if containers is not None else []}


def test_deploy_waits_and_prints_progress(fake: type[FakeClient], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text(json.dumps({"services": [{"name": "web", "image": "x"}, {"name": "api", "image": "y"}]}))
    fake.replies["deploy"] = {"deployed": ["web", "api"], "errors": [], "versions": {"web": 3, "api": 1}}
    timeouts: list[float] = []
    expected: list[Any] = []

    def wait_converged(name: str, timeout_s: float, on_progress: Any, expect_version: Any = None) -> dict[str, Any]:
        timeouts.append(timeout_s)
        expected.append(expect_version)
        if name == "web":
            on_progress(_detail("web", 0, 0, pending="no eligible node with 512 MiB free"))
            on_progress(_detail("web", 1, 0))
        on_progress(_detail(name, 3, 3))
        return _detail(name, 3, 3)

    fake.replies["wait_converged"] = wait_converged
    assert main(["deploy", "-f", str(f), "--timeout", "30"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "deployed web", "deployed api",
        "web: 0/3 running, 0/3 healthy (pending: no eligible node with 512 MiB free)",
        "web: 1/3 running, 0/3 healthy", "web: 3/3 running, 3/3 healthy", "web: converged",
        "api: 3/3 running, 3/3 healthy", "api: converged"]
    assert [c[0] for c in fake.calls] == ["deploy", "wait_converged", "wait_converged"]
    assert 29 < timeouts[0] <= 30 and timeouts[1] <= timeouts[0]  # one deadline for all of them
    assert expected == [3, 1]  # each waits for the version its deploy made

    # -o json: stdout holds only the deploy result, progress goes to stderr.
    assert main(["deploy", "-f", str(f), "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"deployed": ["web", "api"], "errors": [], "versions": {"web": 3, "api": 1}}
    assert "web: converged" in err


def test_deploy_timeout_exits_1_naming_the_service(fake: type[FakeClient], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text(json.dumps({"services": [{"name": "web", "image": "x"}, {"name": "api", "image": "y"}]}))
    fake.replies["deploy"] = {"deployed": ["web", "api"], "errors": []}
    stuck = _detail("web", 1, 1, pending="no eligible node with 512 MiB free", containers=[
        {"alloc": "a1", "index": 0, "node": "w1", "version": 1, "status": "running", "health": "healthy"},
        {"alloc": "a2", "index": 1, "node": "w2", "version": 1, "status": "failed", "health": None,
         "reason": "pull failed: manifest unknown"}])
    fake.replies["wait_converged"] = ApiError(0, "TIMEOUT", "web did not converge within 5 s", stuck, stuck)
    fake.replies["service"] = _detail("api", 0, 0, desired=1, pending="starting")
    assert main(["deploy", "-f", str(f), "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "error: web did not converge within 5 s" in err
    assert "pending: no eligible node with 512 MiB free" in err
    assert "web.1 on w2 (v1): failed, health -: pull failed: manifest unknown" in err
    assert "web.0" not in err  # running and healthy: nothing to say
    assert "error: api has not converged either: api: 0/1 running, 0/1 healthy (pending: starting)" in err
    assert "Traceback" not in err

    fake.replies["wait_converged"] = ApiError(0, "FAILED", "every replica of web v1 failed: bad image", stuck)
    assert main(["deploy", "-f", str(f)]) == 1
    assert "error: every replica of web v1 failed: bad image" in capsys.readouterr().err

    # Other errors of the wait are the usual one-liner.
    fake.replies["wait_converged"] = ApiError(403, "FORBIDDEN", "role viewer may not read")
    assert main(["deploy", "-f", str(f)]) == 1
    assert capsys.readouterr().err.strip() == "error: role viewer may not read (FORBIDDEN)"
    assert main(["deploy", "-f", str(f), "--timeout", "0"]) == 2


def test_deploy_ctrl_c_while_waiting(fake: type[FakeClient], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text('{"name": "web", "image": "x"}')
    fake.replies["deploy"] = {"deployed": ["web"], "errors": []}
    fake.replies["wait_converged"] = KeyboardInterrupt()
    assert main(["deploy", "-f", str(f)]) == 130
    assert "goes on in the cluster" in capsys.readouterr().err


def test_progress_line_mid_rollout() -> None:
    detail = _detail("web", 3, 2, containers=[
        {"alloc": "a", "index": 0, "version": 1, "status": "running"},
        {"alloc": "b", "index": 0, "version": 2, "status": "running"},
        {"alloc": "c", "index": 1, "version": 2, "status": "running"}])
    detail["version"] = 2
    assert cli.progress_line(detail) == "web: 3/3 running, 2/3 healthy, 2/3 at v2 (1 older to retire)"


# ---------------------------------------------------------------------- ps, logs, nodes, secrets


SERVICE_DETAIL = {
    "name": "web", "version": 2, "status": "degraded", "pending_reason": "no eligible node with 512 MiB free",
    "replicas": {"desired": 3, "running": 2, "healthy": 1},
    "containers": [
        {"id": "c0ffee", "alloc": "a1b2", "node": "w1", "index": 0, "version": 2, "status": "running",
         "health": "healthy", "started_at": "2024-01-01T00:00:00Z", "restarts": 0, "reason": None,
         "host_port": 20001},
        {"id": "dead", "alloc": "c3d4", "node": "w2", "index": 1, "version": 2, "status": "running",
         "health": "unhealthy", "started_at": None, "restarts": 2, "reason": "health check failed 3 times",
         "host_port": 20002},
        {"id": None, "alloc": "e5f6", "node": "w1", "index": 2, "version": 2, "status": "pending", "health": None,
         "started_at": None, "restarts": 0, "reason": None, "host_port": None}],
}


def test_ps_table_and_json(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["service"] = SERVICE_DETAIL
    assert main(["ps", "web"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("web v2 degraded: 2/3 running, 1/3 healthy "
                        "(pending: no eligible node with 512 MiB free)")
    assert lines[1].split() == cli.PS_HEADERS
    assert lines[2].split()[:6] == ["a1b2", "0", "w1", "2", "running", "healthy"]
    assert lines[2].split()[-3:] == ["0", "20001", "-"] and lines[2].split()[7] == "ago"
    assert lines[3].split()[:7] == ["c3d4", "1", "w2", "2", "running", "unhealthy", "-"]
    assert lines[3].split(None, 9)[7:] == ["2", "20002", "health check failed 3 times"]
    assert lines[4].split() == ["e5f6", "2", "w1", "2", "pending", "-", "-", "0", "-", "-"]
    assert fake.calls == [("service", ("web",))]
    assert main(["ps", "web", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == SERVICE_DETAIL
    fake.replies["service"] = {**SERVICE_DETAIL, "containers": [], "pending_reason": None}
    assert main(["ps", "web"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "no containers"
    fake.replies["service"] = ApiError(404, "SERVICE_NOT_FOUND", "service 'web' not found")
    assert main(["ps", "web"]) == 1
    assert main(["ps"]) == 2


def test_logs_prints_each_line_and_passes_options(fake: type[FakeClient],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    printed_before: list[str] = []

    def logs(name: str, tail: int, follow: bool) -> Iterator[str]:
        yield "[web.0 a1] one"
        printed_before.append(capsys.readouterr().out)  # what was on stdout before the second line
        yield "[web.1 b2] two"

    fake.replies["logs"] = logs
    assert main(["logs", "web", "-f", "--tail", "5"]) == 0
    assert printed_before == ["[web.0 a1] one\n"]  # written (and flushed) before the next line came
    assert capsys.readouterr().out == "[web.1 b2] two\n"
    assert fake.calls == [("logs", ("web", 5, True))]
    assert main(["logs", "web"]) == 0
    assert fake.calls[-1] == ("logs", ("web", 100, False))
    assert main(["logs", "web", "--tail", "-1"]) == 2
    assert main(["logs", "web", "--tail", "x"]) == 2


def test_logs_ctrl_c_exits_130_quietly(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    closed: list[bool] = []

    def logs(name: str, tail: int, follow: bool) -> Iterator[str]:
        try:
            yield "[web.0 a1] one"
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    fake.replies["logs"] = logs
    assert main(["logs", "web", "-f"]) == 130
    out, err = capsys.readouterr()
    assert out == "[web.0 a1] one\n" and err == "" and closed == [True]


def test_logs_error_before_any_line(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    def logs(name: str, tail: int, follow: bool) -> Iterator[str]:
        raise ApiError(404, "SERVICE_NOT_FOUND", "service 'nope' not found")
        yield ""  # pragma: no cover

    fake.replies["logs"] = logs
    assert main(["logs", "nope"]) == 1
    assert capsys.readouterr().err.strip() == "error: service 'nope' not found (SERVICE_NOT_FOUND)"


NODES = [
    {"id": "w1", "address": "http://127.0.0.1:6890", "status": "ready", "status_reason": None,
     "eligibility": "eligible", "labels": {"zone": "a", "disk": "ssd"},
     "capacity": {"memory": 4 << 30, "cpu": 2.0}, "allocated": {"memory": 512 << 20, "cpu": 0.5},
     "allocations": 2, "last_heartbeat": "2024-01-01T00:00:00Z", "drain": None},
    {"id": "w2", "address": "http://127.0.0.1:6892", "status": "down", "status_reason": "lease expired",
     "eligibility": "draining", "labels": {}, "capacity": {"memory": 3758096384, "cpu": 1},
     "allocated": {"memory": 0, "cpu": 0}, "allocations": 0, "last_heartbeat": None,
     "drain": {"deadline": "x", "remaining": 3, "migrated": 1, "failed": 0}},
]


def test_nodes_table(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["nodes"] = NODES
    assert main(["nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == cli.NODE_HEADERS
    row1 = lines[1].split()
    assert row1[:6] == ["w1", "ready", "eligible", "2", "512MiB/4GiB", "0.5/2"]
    assert row1[-1] == "disk=ssd,zone=a" and row1[-2] == "ago"
    assert lines[2].split() == ["w2", "down", "(lease", "expired)", "draining", "(3", "left)", "0", "0/3.5GiB",
                                "0/1", "-", "-"]
    assert main(["nodes", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": NODES}
    fake.replies["nodes"] = []
    assert main(["nodes"]) == 0
    assert capsys.readouterr().out.strip() == "no nodes"


def test_one_node(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["node"] = {**NODES[0], "allocation_list": [
        {"id": "a1b2", "service": "web", "version": 2, "index": 0, "status": "running", "health": "healthy"},
        {"id": "c3d4", "service": "api", "version": 1, "index": 0, "status": "pending", "health": None}]}
    assert main(["nodes", "w1"]) == 0
    out = capsys.readouterr().out
    assert fake.calls == [("node", ("w1",))]
    assert "address:        http://127.0.0.1:6890" in out and "memory:         512MiB/4GiB" in out
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["ALLOC", "SERVICE", "INDEX", "VERSION", "STATUS", "HEALTH"]
    assert table[2].split() == ["c3d4", "api", "0", "1", "pending", "-"]
    fake.replies["node"] = ApiError(404, "NODE_NOT_FOUND", "node 'zz' not found")
    assert main(["nodes", "zz"]) == 1
    assert "(NODE_NOT_FOUND)" in capsys.readouterr().err


def test_human_bytes_and_age() -> None:
    assert [cli.human_bytes(n) for n in (0, 1 << 20, 512 << 20, 1 << 30, 1610612736, None)] == [
        "0", "1MiB", "512MiB", "1GiB", "1.5GiB", "-"]
    now = 1_700_000_000.0
    assert cli._age(now - 4, now) == "4s ago" and cli._age(now - 3 * 3600 - 5, now) == "3h ago"
    assert cli._age("2023-11-14T22:12:20Z", now) == "1m ago"
    assert cli._age("not a time") == "not a time" and cli._age(None) is None


def test_secrets_set_reads_stdin_and_never_echoes(fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["set_secret"] = {"key": "DB_PASS", "created": True}
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cr3t value\n"))
    assert main(["secrets", "set", "DB_PASS"]) == 0
    out, err = capsys.readouterr()
    assert fake.calls == [("set_secret", ("DB_PASS", "s3cr3t value"))]  # one trailing newline dropped
    assert out == "created secret DB_PASS\n" and "s3cr3t" not in out + err

    fake.replies["set_secret"] = {"key": "DB_PASS", "created": False}
    monkeypatch.setattr(sys, "stdin", io.StringIO("multi\nline\n\n"))
    assert main(["secrets", "set", "DB_PASS"]) == 0
    assert fake.calls[-1] == ("set_secret", ("DB_PASS", "multi\nline\n"))
    assert capsys.readouterr().out == "updated secret DB_PASS\n"

    assert main(["secrets", "set", "DB_PASS", "inline"]) == 0
    assert fake.calls[-1] == ("set_secret", ("DB_PASS", "inline"))
    assert "inline" not in capsys.readouterr().out

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["secrets", "set", "DB_PASS"]) == 2
    assert "empty secret value" in capsys.readouterr().err
    assert len(fake.calls) == 3


def test_secrets_set_prompts_without_echo_on_a_terminal(fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: prompts.append(prompt) or "typed")
    fake.replies["set_secret"] = {"key": "K", "created": True}
    assert main(["secrets", "set", "K"]) == 0
    assert prompts == ["value of K: "] and fake.calls == [("set_secret", ("K", "typed"))]


def test_secrets_set_with_grants_and_grant(fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["set_secret"] = {"key": "K", "created": True, "grants": {"all_projects": False,
                                                                          "projects": ["a", "b"]}}
    assert main(["secrets", "set", "K", "v", "--project", "a", "--project", "b"]) == 0
    assert fake.calls[-1] == ("set_secret", ("K", "v", ["a", "b"], False))
    assert capsys.readouterr().out == "created secret K (granted to: a, b)\n"
    assert main(["secrets", "set", "K", "v", "--all-projects"]) == 0
    assert fake.calls[-1] == ("set_secret", ("K", "v", [], True))
    assert main(["secrets", "set", "K", "v", "--all-projects", "--project", "a"]) == 2
    fake.replies["grant_secret"] = {"key": "K", "grants": {"all_projects": False, "projects": []}}
    assert main(["secrets", "grant", "K", "--admin-only"]) == 0
    assert fake.calls[-1] == ("grant_secret", ("K", [], False))
    assert capsys.readouterr().out.endswith("secret K granted to: admins only\n")
    assert main(["secrets", "grant", "K"]) == 2
    assert main(["secrets", "grant", "K", "--admin-only", "--all-projects"]) == 2


def test_secrets_list_and_rm(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["list_secrets"] = [
        {"key": "DB_PASS", "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-02T00:00:00.000Z"},
        {"key": "API", "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-02T00:00:00.000Z",
         "grants": {"all_projects": False, "projects": ["shop", "web"]}},
        {"key": "LOG", "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-02T00:00:00.000Z",
         "grants": {"all_projects": True, "projects": []}}]
    fake.replies["delete_secret"] = {"key": "DB_PASS", "deleted": True}
    assert main(["secrets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "GRANTS", "CREATED", "UPDATED"]
    assert lines[1].split() == ["DB_PASS", "-", "2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z"]
    assert [ln.split()[:2] for ln in lines[2:]] == [["API", "shop,web"], ["LOG", "*"]]
    assert main(["secrets", "rm", "DB_PASS"]) == 0
    assert capsys.readouterr().out == "deleted secret DB_PASS\n"
    assert fake.calls == [("list_secrets", ()), ("delete_secret", ("DB_PASS",))]
    assert main(["secrets", "ls", "-o", "json"]) == 0 and '"grants"' in capsys.readouterr().out
    fake.replies["list_secrets"] = ApiError(403, "FORBIDDEN", "admin role required")
    assert main(["secrets", "list"]) == 1
    assert main(["secrets"]) == 2


# ---------------------------------------------------------------------- durations, drain, undrain, node rm


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1m30s", 90), ("2.5m", 150),
    (" 0 ", 0), ("0s", 0), ("5M", 300)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "s", "-5", "5x", "5mm", "1d", "5 m", "1s5m", "h1", "1.5.2s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        cli.parse_duration(text)


def test_fmt_duration() -> None:
    assert [cli.fmt_duration(s) for s in (0, 0.2, 45, 250, 300, 3725, -3)] == [
        "0s", "1s", "45s", "4m10s", "5m", "1h2m5s", "0s"]


def _drain_node(remaining: int, migrated: int, failed: int = 0, complete: bool = False,
                eligibility: str = "draining", deadline: Any = "2030-01-01T00:04:10Z") -> dict[str, Any]:
    return {"id": "worker-1", "status": "ready", "eligibility": eligibility, "drain": {
        "deadline": deadline, "started_at": "2030-01-01T00:00:00Z", "force": False, "remaining": remaining,
        "migrated": migrated, "failed": failed, "complete": complete, "completed_at": None}}


NOW_2030 = 1893456000.0  # 2030-01-01T00:00:00Z


def test_drain_line() -> None:
    assert cli.drain_line(_drain_node(3, 2), now=NOW_2030) == (
        "worker-1: draining, 3 remaining, 2 migrated, 0 failed, deadline in 4m10s")
    assert cli.drain_line(_drain_node(1, 2), now=NOW_2030 + 300) == (
        "worker-1: draining, 1 remaining, 2 migrated, 0 failed, deadline passed, stopping the rest")
    assert cli.drain_line(_drain_node(0, 4, 1, complete=True, eligibility="ineligible"), now=NOW_2030) == (
        "worker-1: drained, 0 remaining, 4 migrated, 1 failed")
    down = {**_drain_node(2, 0, deadline=None), "status": "down"}
    assert cli.drain_line(down) == "worker-1: draining, 2 remaining, 0 migrated, 0 failed, node down"


def test_drain_parses(fake: type[FakeClient]) -> None:
    parser = build_parser()
    args = parser.parse_args(["drain", "worker-1"])
    assert (args.node, args.deadline, args.force, args.detach, args.timeout, args.handler) == (
        "worker-1", 300.0, False, False, None, cli.cmd_drain)
    args = parser.parse_args(["drain", "worker-1", "--deadline", "90s", "--force", "--detach", "--timeout", "1h"])
    assert (args.deadline, args.force, args.detach, args.timeout) == (90.0, True, True, 3600.0)


@pytest.mark.parametrize("argv", [
    ["drain"], ["drain", "w1", "--deadline", "5x"], ["drain", "w1", "--deadline", "-1"],
    ["drain", "w1", "--deadline", ""], ["drain", "w1", "--deadline", "25h"], ["drain", "w1", "--timeout", "0"],
    ["drain", "w1", "--timeout", "soon"], ["undrain"], ["node"], ["node", "rm"], ["node", "del", "w1"],
    ["promote"], ["rollback"], ["history"], ["promote", "web", "--wait", "--timeout", "0"],
])
def test_new_verbs_usage_errors_exit_2(argv: list[str], fake: type[FakeClient],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies.update(drain={}, wait_drained={}, promote={}, undrain={})
    assert main(argv) == 2
    assert fake.calls == [] and "Traceback" not in capsys.readouterr().err


def test_drain_prints_progress_until_complete(fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.time, "time", lambda: NOW_2030)
    fake.replies["drain"] = {"node_id": "worker-1", "eligibility": "draining", "drain": {}}
    waited: list[float] = []

    def wait_drained(node: str, timeout_s: float, on_progress: Any) -> dict[str, Any]:
        waited.append(timeout_s)
        for step in (_drain_node(3, 2), _drain_node(1, 4), _drain_node(0, 5, complete=True,
                                                                          eligibility="ineligible")):
            on_progress(step)
        return _drain_node(0, 5, complete=True, eligibility="ineligible")

    fake.replies["wait_drained"] = wait_drained
    assert main(["drain", "worker-1", "--deadline", "5m"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "draining worker-1 (deadline 5m)",
        "worker-1: draining, 3 remaining, 2 migrated, 0 failed, deadline in 4m10s",
        "worker-1: draining, 1 remaining, 4 migrated, 0 failed, deadline in 4m10s",
        "worker-1: drained, 0 remaining, 5 migrated, 0 failed",
        "worker-1: drain complete: 5 migrated, 0 stopped at the deadline; now ineligible"]
    assert fake.calls[0] == ("drain", ("worker-1", 300, False))
    assert isinstance(fake.calls[0][1][1], int)  # whole seconds go out as an integer
    assert waited == [360]  # deadline + 60 s

    assert main(["drain", "worker-1", "--deadline", "90", "--force", "--timeout", "10m", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == fake.replies["drain"]  # stdout: only the response; progress on stderr
    assert "worker-1: drained" in err and "drain complete" in err
    assert fake.calls[-2] == ("drain", ("worker-1", 90, True)) and waited[-1] == 600


def test_drain_detach_and_timeout(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["drain"] = {"node_id": "w1", "eligibility": "draining", "drain": {}}
    assert main(["drain", "w1", "--detach", "--deadline", "1h30m", "--force"]) == 0
    assert capsys.readouterr().out == "draining w1 (deadline 1h30m, force)\n"
    assert [c[0] for c in fake.calls] == ["drain"] and fake.calls[0][1][1] == 5400

    stuck = _drain_node(2, 1)
    fake.replies["wait_drained"] = ApiError(0, "TIMEOUT", "node w1 did not finish draining within 360 s "
                                            "(2 remaining, 1 migrated, 0 failed)", stuck, stuck)
    assert main(["drain", "w1"]) == 1
    err = capsys.readouterr().err
    assert "error: node w1 did not finish draining within 360 s (2 remaining, 1 migrated, 0 failed)" in err
    assert "the drain goes on in the cluster" in err and "Traceback" not in err

    fake.replies["wait_drained"] = ApiError(0, "NOT_DRAINING", "node w1 is not draining (eligibility eligible)")
    assert main(["drain", "w1"]) == 1
    assert "(NOT_DRAINING)" in capsys.readouterr().err
    fake.replies["wait_drained"] = KeyboardInterrupt()
    assert main(["drain", "w1"]) == 130
    fake.replies["drain"] = ApiError(403, "FORBIDDEN", "admin role required")
    assert main(["drain", "w1"]) == 1
    assert capsys.readouterr().err.strip().endswith("error: admin role required (FORBIDDEN)")


def test_undrain_and_node_rm(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["undrain"] = {"node_id": "w1", "eligibility": "eligible"}
    fake.replies["remove_node"] = {"node_id": "w1", "removed": True}
    assert main(["undrain", "w1"]) == 0
    assert capsys.readouterr().out == "w1: eligible again (replicas already moved stay where they are)\n"
    assert main(["node", "rm", "w1"]) == 0
    assert capsys.readouterr().out == "removed node w1 (its agent is told to shut down)\n"
    assert main(["node", "rm", "w1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"node_id": "w1", "removed": True}
    assert fake.calls == [("undrain", ("w1",)), ("remove_node", ("w1",)), ("remove_node", ("w1",))]
    fake.replies["remove_node"] = ApiError(409, "CONFLICT", "node w1 is ready and not drained: drain it first, "
                                                           "or stop its agent")
    assert main(["node", "rm", "w1"]) == 1
    assert capsys.readouterr().err.strip() == ("error: node w1 is ready and not drained: drain it first, or stop "
                                               "its agent (CONFLICT)")


def test_nodes_table_shows_a_finished_drain(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["nodes"] = [{**NODES[0], "eligibility": "ineligible", **{
        "drain": _drain_node(0, 2, complete=True)["drain"]}}]
    assert main(["nodes"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[2:4] == ["ineligible", "(drained)"]
    fake.replies["node"] = {**NODES[0], "eligibility": "draining", "drain": _drain_node(3, 2)["drain"]}
    assert main(["nodes", "w1"]) == 0
    assert "drain:          3 remaining, 2 migrated, 0 failed, deadline" in capsys.readouterr().out


# ---------------------------------------------------------------------- promote, rollback, history


def test_promote_and_rollback(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["promote"] = {"name": "web", "version": 3}
    assert main(["promote", "web"]) == 0
    assert capsys.readouterr().out == "promoted web: v3 rolls out to every replica\n"
    fake.replies["rollback"] = {"name": "web", "version": 2, "dropped_canary": 3}
    assert main(["rollback", "web"]) == 0
    assert capsys.readouterr().out == "web: dropped canary v3; v2 stays current\n"
    fake.replies["rollback"] = {"name": "web", "version": 5, "spec_of": 3}
    assert main(["rollback", "web"]) == 0
    assert capsys.readouterr().out == "rolled back web: v5 (spec of v3) rolls out\n"
    assert main(["rollback", "web", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "web", "version": 5, "spec_of": 3}
    assert fake.calls == [("promote", ("web",)), ("rollback", ("web",)), ("rollback", ("web",)),
                          ("rollback", ("web",))]
    fake.replies["promote"] = ApiError(409, "CONFLICT", "web has no canary to promote")
    assert main(["promote", "web"]) == 1
    assert capsys.readouterr().err.strip() == "error: web has no canary to promote (CONFLICT)"
    fake.replies["rollback"] = ApiError(409, "CONFLICT", "web has no previous version to roll back to")
    assert main(["rollback", "web"]) == 1
    assert "(CONFLICT)" in capsys.readouterr().err


def test_promote_and_rollback_wait(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["promote"] = {"name": "web", "version": 3}
    expected: list[Any] = []

    def wait_converged(name: str, timeout_s: float, on_progress: Any, expect_version: Any = None) -> Any:
        expected.append((name, timeout_s <= 30, expect_version))
        on_progress(_rollout_detail(3, [2, 3], "rolling"))
        return _rollout_detail(3, [3, 3], "done")

    fake.replies["wait_converged"] = wait_converged
    assert main(["promote", "web", "--wait", "--timeout", "30"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "promoted web: v3 rolls out to every replica", "web: rolling to v3: 1/2 on v3 (1 healthy), 1 on older versions",
        "web: converged"]
    assert expected == [("web", True, 3)]
    fake.replies["rollback"] = {"name": "web", "version": 5, "spec_of": 3}
    fake.replies["wait_converged"] = ApiError(0, "ROLLOUT_HALTED", "web: rollout of v5 halted: x", {}, {})
    assert main(["rollback", "web", "--wait"]) == 1
    assert "error: web: rollout of v5 halted: x" in capsys.readouterr().err


HISTORY = {"name": "web", "version": 4, "versions": [
    {"version": 5, "digest": "e5e5e5e5e5e5e5e5", "image": "web:3", "at": "2024-01-03T00:00:00.000Z",
     "current": False, "canary": True},
    {"version": 4, "digest": "a1a1a1a1a1a1a1a1", "image": "web:2", "at": "2024-01-02T00:00:00.000Z",
     "current": True, "canary": False},
    {"version": 3, "digest": "b2b2b2b2b2b2b2b2", "image": "web:1", "at": "2024-01-01T00:00:00.000Z",
     "current": False, "canary": False}]}


def test_history_table(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["history"] = HISTORY
    assert main(["history", "web"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["VERSION", "IMAGE", "DIGEST", "AT", "STATE"],
        ["5", "web:3", "e5e5e5e5e5e5e5e5", "2024-01-03T00:00:00.000Z", "canary"],
        ["4", "web:2", "a1a1a1a1a1a1a1a1", "2024-01-02T00:00:00.000Z", "current"],
        ["3", "web:1", "b2b2b2b2b2b2b2b2", "2024-01-01T00:00:00.000Z", "-"]]
    assert fake.calls == [("history", ("web",))]
    assert main(["history", "web", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == HISTORY
    fake.replies["history"] = {"name": "web", "version": 1, "versions": []}
    assert main(["history", "web"]) == 0
    assert capsys.readouterr().out == "no history\n"
    fake.replies["history"] = ApiError(404, "SERVICE_NOT_FOUND", "service 'web' not found")
    assert main(["history", "web"]) == 1


# ---------------------------------------------------------------------- deploy: rollout progress and failures


def _rollout_detail(version: int, versions: list[int], state: str | None, healthy: int | None = None,
                    reverted_from: int | None = None, canary: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = [{"alloc": f"a{i}", "index": i, "node": "w1", "version": v, "status": "running",
                   "health": "healthy" if healthy is None or i < healthy else "starting"}
                  for i, v in enumerate(versions)]
    rollout = None if state is None else {"version": version, "from": version - 1, "state": state,
                                          "reason": "deploy", "reverted_from": reverted_from}
    desired = len(versions) - (canary or {}).get("replicas", 0)
    return {"name": "web", "version": version, "status": "running", "pending_reason": None,
            "replicas": {"desired": desired, "running": len(versions), "healthy": len(versions)},
            "containers": containers, "rollout": rollout, "canary": canary, "events": []}


def test_progress_line_rolling_reverting_and_canary() -> None:
    assert cli.progress_line(_rollout_detail(3, [2, 2, 3, 3], "rolling")) == (
        "web: rolling to v3: 2/4 on v3 (2 healthy), 2 on older versions")
    assert cli.progress_line(_rollout_detail(3, [3, 3, 2, 3], "rolling", healthy=2)) == (
        "web: rolling to v3: 3/4 on v3 (2 healthy), 1 on older versions")
    assert cli.progress_line(_rollout_detail(4, [3, 4], "rolling", reverted_from=3)) == (
        "web: reverting to v4 (v3 halted): 1/2 on v4 (1 healthy), 1 on older versions")
    canary = {"version": 5, "digest": "d", "replicas": 1, "started_at": None}
    assert cli.progress_line(_rollout_detail(4, [4, 4, 5], "done", canary=canary, healthy=2)) == (
        "web: canary v5: 1/1 on v5 (0 healthy) beside 2/2 on v4 (2 healthy)")
    # Done (or no rollout at all): the plain counts.
    assert cli.progress_line(_rollout_detail(3, [3, 3], "done")) == "web: 2/2 running, 2/2 healthy"


def test_deploy_shows_rollout_progress(fake: type[FakeClient], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text('{"name": "web", "image": "web:3", "replicas": 2}')
    fake.replies["deploy"] = {"deployed": ["web"], "errors": [], "versions": {"web": 3}}

    def wait_converged(name: str, timeout_s: float, on_progress: Any, expect_version: Any = None) -> Any:
        assert expect_version == 3
        for versions in ([2, 2], [2, 3], [3, 3]):
            on_progress(_rollout_detail(3, versions, "rolling"))
        return _rollout_detail(3, [3, 3], "done")

    fake.replies["wait_converged"] = wait_converged
    assert main(["deploy", "-f", str(f)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "deployed web", "web: rolling to v3: 0/2 on v3 (0 healthy), 2 on older versions",
        "web: rolling to v3: 1/2 on v3 (1 healthy), 1 on older versions",
        "web: rolling to v3: 2/2 on v3 (2 healthy), 0 on older versions", "web: converged"]


def test_deploy_of_a_canary_says_how_to_go_on(fake: type[FakeClient], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text('{"name": "web", "image": "web:3", "replicas": 2, "canary": 1}')
    fake.replies["deploy"] = {"deployed": ["web"], "errors": [], "versions": {"web": 5}}
    canary = {"version": 5, "digest": "d", "replicas": 1, "started_at": None}
    fake.replies["wait_converged"] = lambda *a, **kw: _rollout_detail(4, [4, 4, 5], "done", canary=canary)
    assert main(["deploy", "-f", str(f)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "web: canary v5 running beside v4: `orca promote web` rolls it out, `orca rollback web` drops it")


def test_deploy_exits_1_when_the_rollout_halts_or_reverts(fake: type[FakeClient], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "app.json"
    f.write_text(json.dumps({"services": [{"name": "web", "image": "x"}, {"name": "api", "image": "y"}]}))
    fake.replies["deploy"] = {"deployed": ["web", "api"], "errors": [], "versions": {"web": 3, "api": 1}}
    fake.replies["service"] = _detail("api", 3, 3, containers=[
        {"version": 1, "status": "running", "health": "healthy"} for _ in range(3)])
    halted = _rollout_detail(3, [2, 3], "halted", healthy=1)
    halted["containers"][1].update(status="running", health="unhealthy", reason="health check failed 3 times")
    fake.replies["wait_converged"] = ApiError(
        0, "ROLLOUT_HALTED", "web: rollout of v3 halted: replica a1 on w1: not healthy within 60 s", halted, halted)
    assert main(["deploy", "-f", str(f)]) == 1
    out, err = capsys.readouterr()
    assert "web: converged" not in out
    assert "error: web: rollout of v3 halted: replica a1 on w1: not healthy within 60 s" in err
    assert "web.1 on w1 (v3): running, health unhealthy: health check failed 3 times" in err
    assert "the old replicas serving" in err and "orca rollback web" in err
    assert "api has not converged" not in err  # converged: nothing to say about it

    reverted = _rollout_detail(4, [2, 4], "done", reverted_from=3)
    fake.replies["wait_converged"] = ApiError(
        0, "ROLLOUT_REVERTED", "web: rollout of v3 halted: replica x on worker-1: crash loop (exit 1); "
        "auto-reverted to v4 (spec of v2)", reverted, reverted)
    assert main(["deploy", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == ("error: web: rollout of v3 halted: replica x on worker-1: crash loop (exit 1); "
                                   "auto-reverted to v4 (spec of v2)")
    assert "rolling the previous spec back in" in err and "orca history web" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- events -f


EVENTS = [
    {"seq": 3, "time": "2024-01-01T00:00:00.000Z", "type": "service_scaled", "service": "web", "node": None,
     "actor": "ops", "message": "web scaled 1 -> 3"},
    {"seq": 5, "time": "2024-01-01T00:00:01.000Z", "type": "node_down", "service": None, "node": "w1",
     "actor": "leader", "message": "w1 missed its lease"},
]


def test_events_table_shows_the_node_when_no_service(fake: type[FakeClient],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["events"] = EVENTS
    assert main(["events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "SERVICE/NODE", "ACTOR", "MESSAGE"]
    assert lines[2].split(None, 4) == ["2024-01-01T00:00:01.000Z", "node_down", "w1", "leader", "w1 missed its lease"]
    assert main(["events", "--limit", "0"]) == 2


def test_events_follow_prints_history_then_the_stream(fake: type[FakeClient],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["events"] = EVENTS
    streamed = [{"seq": 6, "time": "2024-01-01T00:00:02.000Z", "type": "autoscale", "service": "web",
                 "actor": "autoscaler", "message": "web 3 -> 4: rps 180/150"}]
    printed_before: list[str] = []

    def stream_events(service: Any, type_: Any, since: Any) -> Iterator[dict[str, Any]]:
        printed_before.append(capsys.readouterr().out)  # the history is out before the stream is read
        yield from streamed

    fake.replies["stream_events"] = stream_events
    assert main(["events", "-f", "--service", "web", "--limit", "10"]) == 0
    lines = printed_before[0].splitlines() + capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "SERVICE/NODE", "ACTOR", "MESSAGE"]
    assert [line.split(None, 4) for line in lines[1:]] == [
        ["2024-01-01T00:00:00.000Z", "service_scaled", "web", "ops", "web scaled 1 -> 3"],
        ["2024-01-01T00:00:01.000Z", "node_down", "w1", "leader", "w1 missed its lease"],
        ["2024-01-01T00:00:02.000Z", "autoscale", "web", "autoscaler", "web 3 -> 4: rps 180/150"]]
    assert lines[1].index("service_scaled") == lines[0].index("TYPE")  # fixed columns under the header
    # Resumes right after the newest event shown.
    assert fake.calls == [("events", ("web", None, None, 10)), ("stream_events", ("web", None, 5))]

    fake.replies["stream_events"] = lambda *a: (e for e in streamed)
    assert main(["events", "-f", "-o", "json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [3, 5, 6]
    # Nothing matched: nothing in the kept log matches, so replay from the start; with --since, from now.
    fake.replies["events"] = []
    assert main(["events", "-f", "--type", "autoscale"]) == 0
    assert fake.calls[-1] == ("stream_events", (None, "autoscale", 0))
    assert main(["events", "-f", "--since", "2024-01-01T00:00:00Z"]) == 0
    assert fake.calls[-1] == ("stream_events", (None, None, None))


def test_events_follow_ctrl_c_and_errors(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["events"] = []
    closed: list[bool] = []

    def stream_events(*args: Any) -> Iterator[dict[str, Any]]:
        try:
            yield EVENTS[0]
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    fake.replies["stream_events"] = stream_events
    assert main(["events", "-f"]) == 130
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and err == "" and closed == [True]

    def broken(*args: Any) -> Iterator[dict[str, Any]]:
        yield EVENTS[0]
        raise ApiError(0, "STREAM_BROKEN", "stream ended early: connection reset")

    fake.replies["stream_events"] = broken
    assert main(["events", "-f"]) == 1
    assert capsys.readouterr().err.strip() == "error: stream ended early: connection reset (STREAM_BROKEN)"


# ---------------------------------------------------------------------- top


STATUS = [{"name": "web", "status": "running", "replicas": 3, "running_replicas": 2},
          {"name": "api", "status": "running", "replicas": 1, "running_replicas": 1}]
SAMPLE = {"at": 1.0, "replicas": 2, "rps": 123.456, "error_rate": 0.0125, "p95_ms": 42.0, "active": 4,
          "cpu_pct": 35.25, "mem_pct": 61.0, "replicas_rps": {}}
AUTO = {"mode": "auto", "min_replicas": 2, "max_replicas": 10, "target_rps_per_replica": 50.0,
        "max_p95_latency_ms": 250.0, "max_cpu_percent": 80.0, "max_memory_percent": 85.0,
        "scale_out_threshold_pct": 80.0, "scale_in_threshold_pct": 30.0, "window_seconds": 60.0,
        "cooldown_seconds": 120.0}


def _top_fake(fake: type[FakeClient]) -> None:
    def metrics(name: str) -> dict[str, Any]:
        if name == "api":
            raise ApiError(503, "CLUSTER_NOT_READY", "no leader")
        return {"service": name, "current": SAMPLE, "history": [], "autoscaler": None, "source": "m1"}

    fake.replies.update(status=STATUS, metrics=metrics,
                        get_scaling=lambda name: {"name": name, "replicas": 3,
                                                  "scaling": AUTO if name == "web" else None})


def test_top_once(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    _top_fake(fake)
    assert main(["top", "--once"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert [line.split() for line in out.splitlines()] == [
        ["NAME", "REPLICAS", "RPS", "P95", "ERR%", "CPU%", "MEM%", "SCALING"],
        ["web", "2/3", "123.5", "42ms", "1.2", "35.2", "61.0", "auto", "2..10"],
        ["api", "1/1", "-", "-", "-", "-", "-", "manual"]]  # metrics unavailable: dashes, not a failure
    assert fake.calls == [("status", (None,)), ("metrics", ("web",)), ("get_scaling", ("web",)),
                          ("metrics", ("api",)), ("get_scaling", ("api",))]
    assert main(["top", "--once", "-o", "json", "--project", "shop"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["services"][0] == {"name": "web", "status": "running", "replicas": 3, "running": 2,
                                  "metrics": SAMPLE, "scaling": AUTO}
    assert fake.calls[-5] == ("status", ("shop",))
    fake.replies["status"] = []
    assert main(["top", "--once"]) == 0
    assert capsys.readouterr().out == "no services\n"


def test_top_rows_use_a_policy_in_the_status_and_small_latencies() -> None:
    rows = cli.top_rows([{"name": "w", "replicas": 1, "running": 0, "scaling": {**AUTO, "mode": "manual"},
                          "metrics": {**SAMPLE, "p95_ms": 2.5, "cpu_pct": None}},
                         {"name": "x", "replicas": 0, "running": 0, "scaling_unknown": True, "metrics": None}])
    assert rows == [["w", "0/1", "123.5", "2.5ms", "1.2", "-", "61.0", "manual"],
                    ["x", "0/0", "-", "-", "-", "-", "-", "-"]]


def test_top_refreshes_until_ctrl_c(fake: type[FakeClient], capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _top_fake(fake)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    assert main(["top", "--interval", "0.5"]) == 0  # Ctrl-C is how top ends: exit 0, nothing on stderr
    out, err = capsys.readouterr()
    assert err == "" and sleeps == [0.5, 0.5]
    assert "\x1b" not in out  # not a terminal: every table, a blank line apart
    tables = out.split("\n\n")
    assert len(tables) == 2 and all(t.startswith("NAME") for t in tables)

    sleeps.clear()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["top"]) == 0
    out = capsys.readouterr().out
    assert out.count("\x1b[H\x1b[2J") == 2 and out.startswith("\x1b[H\x1b[2Jorca top ")
    assert "2 services  every 2s  (Ctrl-C quits)" in out and sleeps == [2.0, 2.0]
    assert main(["top", "--interval", "0"]) == 2


# ---------------------------------------------------------------------- scaling


def test_scaling_get(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["get_scaling"] = {"name": "web", "replicas": 3, "scaling": AUTO}
    assert main(["scaling", "get", "web"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "web: auto 2..10, 3 replicas now"
    assert lines[1].split() == ["SETTING", "VALUE", "FLAG"]
    assert lines[2].split() == ["mode", "auto", "--mode"]
    assert lines[4].split() == ["max_replicas", "10", "--max"]
    assert lines[-1].split() == ["cooldown_seconds", "120", "--cooldown"] and len(lines) == 13
    assert main(["scaling", "get", "web", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == fake.replies["get_scaling"]
    fake.replies["get_scaling"] = {"name": "web", "replicas": 1, "scaling": None}
    assert main(["scaling", "get", "web"]) == 0
    assert capsys.readouterr().out.startswith("web: no scaling policy: manual, 1 replicas now")
    assert fake.calls == [("get_scaling", ("web",))] * 3


def test_scaling_set_merges_into_the_current_policy(fake: type[FakeClient],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["get_scaling"] = {"name": "web", "replicas": 3, "scaling": AUTO}
    fake.replies["set_scaling"] = lambda name, policy: {"name": name, "scaling": policy}
    assert main(["scaling", "set", "web", "--max", "20", "--target-rps", "75.5", "--window", "2m",
                 "--max-p95-ms", "300", "--max-cpu", "70", "--max-mem", "90", "--out-pct", "85",
                 "--in-pct", "25", "--cooldown", "30s", "--min", "3"]) == 0
    merged = {**AUTO, "max_replicas": 20, "min_replicas": 3, "target_rps_per_replica": 75.5, "window_seconds": 120,
              "max_p95_latency_ms": 300, "max_cpu_percent": 70, "max_memory_percent": 90,
              "scale_out_threshold_pct": 85, "scale_in_threshold_pct": 25, "cooldown_seconds": 30}
    assert fake.calls == [("get_scaling", ("web",)), ("set_scaling", ("web", merged))]
    assert capsys.readouterr().out.splitlines()[0] == "web: auto 3..20"

    fake.calls.clear()
    fake.replies["get_scaling"] = {"name": "web", "replicas": 1, "scaling": None}  # no policy yet: defaults
    assert main(["scaling", "set", "web", "--mode", "auto", "--max", "5"]) == 0
    assert fake.calls[-1] == ("set_scaling", ("web", {"mode": "auto", "max_replicas": 5}))
    assert capsys.readouterr().out.startswith("web: auto ")
    assert main(["scaling", "set", "web", "--mode", "manual", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "web", "scaling": {"mode": "manual"}}

    fake.replies["set_scaling"] = ApiError(400, "VALIDATION_ERROR",
                                           "scaling.max_replicas: must be at least scaling.min_replicas (3), got 2")
    assert main(["scaling", "set", "web", "--max", "2"]) == 1
    assert "must be at least scaling.min_replicas" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["scaling", "set", "web"], ["scaling", "set", "web", "--mode", "sometimes"],
    ["scaling", "set", "web", "--min", "x"],
    ["scaling", "set", "web", "--window", "soon"], ["scaling"], ["scaling", "get"], ["scaling", "off"],
    ["webhooks", "add", "--service", "web"], ["webhooks", "add", "--repo", "a/b"], ["webhooks", "remove"],
    ["top", "--interval", "fast"],
])
def test_traffic_verbs_usage_errors_exit_2(argv: list[str], fake: type[FakeClient],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert fake.calls == []


def test_scaling_off(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["set_scaling"] = {"name": "web", "scaling": None}
    assert main(["scaling", "off", "web"]) == 0
    assert capsys.readouterr().out.startswith("web: scaling policy removed")
    assert fake.calls == [("set_scaling", ("web", None))]


# ---------------------------------------------------------------------- webhooks


HOOKS = [
    {"id": "abc123", "repo": "acme/shop", "service": "web", "branch": "main", "created_at": "2024-01-01T00:00:00Z",
     "created_by": "ops", "secret": "must-never-show", "invocations": [
         {"delivery": "abc123:d2", "event": "push", "ref": "refs/heads/main", "at": "2024-01-01T00:10:00.000Z",
          "action": "redeployed", "reason": None, "version": 4},
         {"delivery": "abc123:d1", "event": "push", "ref": "refs/heads/dev", "at": "2024-01-01T00:05:00.000Z",
          "action": "ignored", "reason": "ref 'refs/heads/dev' is not refs/heads/main", "version": None}]},
    {"id": "def456", "repo": "acme/api", "service": "api", "branch": "prod", "created_at": "2024-01-01T00:00:00Z",
     "created_by": "ops", "invocations": []},
]


def test_webhooks_add_shows_the_secret_once_with_what_to_paste(fake: type[FakeClient],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["add_webhook"] = {"id": "abc123", "repo": "acme/shop", "service": "web", "branch": "main",
                                   "secret": "0123456789abcdef0123"}
    assert main(["webhooks", "add", "--repo", "acme/shop", "--service", "web",
                 "--api", "https://orca.example.com/,http://m2:6880"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["registered webhook abc123: a push to acme/shop@main redeploys web",
                                    "secret: 0123456789abcdef0123"]
    assert "Payload URL:   https://orca.example.com/api/v1/webhooks/github" in out
    assert "shown only this once" in out and "application/json" in out
    assert main(["webhooks", "add", "--repo", "acme/shop", "--service", "web", "--branch", "prod",
                 "--secret", "s" * 20, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["secret"] == "0123456789abcdef0123"
    assert fake.calls == [("add_webhook", ("acme/shop", "web", "main", None)),
                          ("add_webhook", ("acme/shop", "web", "prod", "s" * 20))]


def test_webhooks_list_and_remove(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["webhooks"] = HOOKS
    assert main(["webhooks", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "REPO", "BRANCH", "SERVICE", "LAST-DELIVERY", "RESULT"]
    assert lines[1].split()[:4] == ["abc123", "acme/shop", "main", "web"]
    assert lines[1].split()[-3:] == ["ago", "redeployed", "v4"]
    assert lines[2].split() == ["def456", "acme/api", "prod", "api", "-", "-"]
    assert "must-never-show" not in out
    assert main(["webhooks", "list", "-o", "json"]) == 0
    out = capsys.readouterr().out
    assert "must-never-show" not in out and json.loads(out)["webhooks"][0]["invocations"][1]["version"] is None
    fake.replies["webhooks"] = []
    assert main(["webhooks", "list"]) == 0
    assert capsys.readouterr().out == "no webhooks\n"

    fake.replies["remove_webhook"] = {"id": "abc123", "removed": True}
    assert main(["webhooks", "remove", "abc123"]) == 0
    assert capsys.readouterr().out == "removed webhook abc123\n"
    fake.replies["remove_webhook"] = ApiError(404, "NOT_FOUND", "webhook 'nope' not found")
    assert main(["webhooks", "remove", "nope"]) == 1
    assert capsys.readouterr().err.strip() == "error: webhook 'nope' not found (NOT_FOUND)"
    assert fake.calls[-2:] == [("remove_webhook", ("abc123",)), ("remove_webhook", ("nope",))]


def test_webhook_rows_last_delivery_and_result() -> None:
    now = cli._epoch("2024-01-01T00:15:00Z")
    rows = cli.webhook_rows(HOOKS, now=now)
    assert rows[0][4:] == ["5m ago", "redeployed v4"]
    only_ignored = [{**HOOKS[0], "invocations": HOOKS[0]["invocations"][1:]}]
    assert cli.webhook_rows(only_ignored, now=now)[0][4:] == [
        "10m ago", "ignored: ref 'refs/heads/dev' is not refs/heads/main"]
    ping = [{**HOOKS[0], "invocations": [{"at": "2024-01-01T00:14:00Z", "action": "pong", "event": "ping"}]}]
    assert cli.webhook_rows(ping, now=now)[0][4:] == ["1m ago", "pong"]
