"""The CLI habits people bring from kubectl, Nomad and Docker: `-o wide|yaml`, `-q`, `--yes` before
destructive verbs, `--since` as a time on events and logs, `logs --timestamps`, `orca version`, shell
completion, and errors that end with what to do next. The cluster is a fake client (tests/unit/test_cli)
except for the master's log filter, which runs against a real aiohttp agent on 127.0.0.1."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from aiohttp import web

from orca import __version__
from orca.cli import main
from orca.client import ApiError
from orca.commands.common import next_step
from orca.master.api_workers import log_lines, split_stamp
from tests.unit.test_cli import FakeClient, fake  # noqa: F401 - fixture
from tests.unit.test_client import FakeMaster, _client, masters  # noqa: F401 - fixture

SERVICES = [{"name": "web", "project": "shop", "status": "running", "replicas": 2, "running_replicas": 2,
             "healthy_replicas": 2, "image": "nginx", "version": 3, "domain": "web.example", "rollout": None,
             "updated_at": "2024-01-01T00:00:00Z"},
            {"name": "db", "project": "shop", "status": "running", "replicas": 1, "running_replicas": 1,
             "healthy_replicas": 1, "image": "redis", "version": 1, "kind": "service"}]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------------- -o and -q


def test_quiet_prints_only_ids(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    fake.replies["status"] = SERVICES
    assert main(["status", "-q"]) == 0
    assert capsys.readouterr().out == "web\ndb\n"
    fake.replies["nodes"] = [{"id": "worker-1"}, {"id": "worker-2"}]
    assert main(["nodes", "-q"]) == 0
    assert capsys.readouterr().out == "worker-1\nworker-2\n"
    fake.replies["service"] = {"name": "web", "containers": [{"alloc": "a1"}, {"alloc": "b2"}]}
    assert main(["ps", "web", "-q"]) == 0
    assert capsys.readouterr().out == "a1\nb2\n"
    fake.replies["events"] = [{"seq": 7, "type": "service_deployed"}, {"seq": 9, "type": "service_scaled"}]
    assert main(["events", "-q"]) == 0
    assert capsys.readouterr().out == "7\n9\n"
    fake.replies["list_secrets"] = [{"key": "DB_PASS"}]
    assert main(["secrets", "ls", "-q"]) == 0
    assert capsys.readouterr().out == "DB_PASS\n"
    fake.replies["request"] = {"volumes": [{"node": "worker-1", "name": "orca-db-0-data-1"}], "errors": []}
    assert main(["volumes", "ls", "-q"]) == 0
    assert capsys.readouterr().out == "orca-db-0-data-1\n"


def test_wide_adds_columns_and_yaml_is_the_data(fake: type[FakeClient],  # noqa: F811
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["status"] = SERVICES
    assert main(["status"]) == 0
    narrow = capsys.readouterr().out.splitlines()
    assert main(["status", "-o", "wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert "DOMAIN" not in narrow[0] and wide[0].split()[-4:] == ["KIND", "DOMAIN", "ROLLOUT", "UPDATED"]
    assert "web.example" in wide[1] and len(wide) == len(narrow) == 3
    assert main(["status", "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"services": SERVICES}
    assert main(["-o", "yaml", "status"]) == 0  # a global option, before or after the verb
    assert yaml.safe_load(capsys.readouterr().out) == {"services": SERVICES}
    fake.replies["nodes"] = [{"id": "worker-1", "status": "ready", "address": "http://127.0.0.1:6891",
                              "agent_version": "0.1.0"}]
    assert main(["nodes", "-o", "wide"]) == 0
    out = capsys.readouterr().out
    assert "AGENT-VERSION" in out and "http://127.0.0.1:6891" in out


def test_yaml_follow_is_a_stream_of_documents(fake: type[FakeClient],  # noqa: F811
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["events"] = [{"seq": 1, "type": "a"}]
    def stream(*args: Any) -> Iterator[dict[str, Any]]:
        yield {"seq": 2, "type": "b"}

    fake.replies["stream_events"] = stream
    assert main(["events", "-f", "-o", "yaml"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == [{"seq": 1, "type": "a"}, {"seq": 2, "type": "b"}]


# ---------------------------------------------------------------------- --yes


@pytest.mark.parametrize("argv,method", [
    (["stop", "--all"], "stop_all"), (["stop", "--project", "shop"], "stop_project"),
    (["stop", "web", "--purge"], "stop"), (["drain", "worker-1", "--detach"], "drain"),
    (["node", "rm", "worker-1"], "remove_node"), (["secrets", "rm", "K"], "delete_secret"),
    (["webhooks", "remove", "w1"], "remove_webhook"), (["cluster", "remove-master", "master-3"], "remove_master"),
    (["token", "revoke", "j1"], "revoke_token"), (["volumes", "rm", "worker-1", "db"], "request"),
])
def test_destructive_verbs_need_yes_without_a_terminal(argv: list[str], method: str, fake: type[FakeClient],  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake.replies[method] = {}
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a pipe: no one to ask
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "add --yes to confirm" in err and fake.calls == []
    assert main([*argv, "--yes"]) == 0
    assert fake.calls and fake.calls[0][0] == method


def test_a_terminal_is_asked_and_no_means_nothing_changes(fake: type[FakeClient],  # noqa: F811
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake.replies["stop_all"] = {"stopped": ["web"]}
    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    assert main(["stop", "--all"]) == 1
    err = capsys.readouterr().err
    assert "this will stop every service of the cluster. Continue? [y/N]" in err and "aborted" in err
    assert fake.calls == []
    monkeypatch.setattr(sys, "stdin", Tty("y\n"))
    assert main(["stop", "--all"]) == 0
    assert fake.calls == [("stop_all", ())]


def test_plain_stop_and_restore_into_an_empty_cluster_do_not_ask(fake: type[FakeClient],  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    fake.replies["stop"] = {}
    assert main(["stop", "web"]) == 0  # `orca start web` undoes it


# ---------------------------------------------------------------------- --since, --timestamps


def test_events_since_is_a_time_and_since_seq_a_cursor(fake: type[FakeClient],  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["events"] = []
    for since in ("10m", "1h", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00+01:00", "2026-12-01T10:00:00"):
        assert main(["events", "--since", since]) == 0
        assert fake.calls[-1] == ("events", (None, None, since, None))
    assert main(["events", "--since-seq", "1200"]) == 0
    assert fake.calls[-1] == ("events", (None, None, 1200, None))
    calls = len(fake.calls)
    for bad in (["--since", "1796119200"], ["--since", "yesterday"], ["--since", "10x"],
                ["--since", "1h", "--since-seq", "3"], ["--since-seq", "x"]):
        assert main(["events", *bad]) == 2
    assert len(fake.calls) == calls
    err = capsys.readouterr().err
    assert "for an event sequence number use --since-seq" in err


def test_logs_since_and_timestamps_reach_the_client(fake: type[FakeClient]) -> None:  # noqa: F811
    seen: list[dict[str, Any]] = []

    def logs(name: str, **kw: Any) -> Iterator[str]:
        seen.append(kw)
        yield "[web.0 a1] 2026-12-01T10:00:00.5Z up"

    fake.replies["logs"] = logs
    assert main(["logs", "web", "--since", "10m", "--timestamps"]) == 0
    assert seen[-1] == {"tail": 10000, "follow": False, "since": "10m", "timestamps": True}
    assert main(["logs", "web", "--since", "2026-12-01T10:00:00Z", "--tail", "5", "-f"]) == 0
    assert seen[-1] == {"tail": 5, "follow": True, "since": "2026-12-01T10:00:00Z"}
    assert main(["logs", "web"]) == 0
    assert seen[-1] == {"tail": 100, "follow": False}  # nothing new asked of an older SDK or cluster
    assert main(["logs", "web", "--since", "soon"]) == 2


def test_sdk_logs_sends_since_and_timestamps(masters: Callable[[], FakeMaster]) -> None:  # noqa: F811
    m = masters()
    m.handler = lambda seen: (200, {"Content-Type": "text/plain; charset=utf-8"}, iter([b"[web.0 a1] x\n"]))
    with _client(m.url) as client:
        assert list(client.logs("web", tail=7, since="2026-12-01T10:00:00+01:00", timestamps=True)) == ["[web.0 a1] x"]
        assert list(client.logs("web")) == ["[web.0 a1] x"]
    assert m.seen[0].path == ("/api/v1/services/web/logs?tail=7&follow=false&since=2026-12-01T10%3A00%3A00%2B01%3A00"
                              "&timestamps=true")
    assert m.seen[1].path == "/api/v1/services/web/logs?tail=100&follow=false"


def test_split_stamp_reads_dockers_rfc3339_nano() -> None:
    when, stamp, rest = split_stamp(b"2026-12-01T10:00:00.123456789Z hello world\n")
    assert when == pytest.approx(1796119200.123456) and stamp == b"2026-12-01T10:00:00.123456789Z "
    assert rest == b"hello world\n"
    assert split_stamp(b"2026-12-01T11:00:00+01:00 x")[0] == 1796119200.0
    for line in (b"(logs unavailable: HTTP 500)\n", b"2026-13-01T10:00:00Z bad month", b"", b"10:00 x"):
        assert split_stamp(line) == (None, b"", line)


class _Raft:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def read(self, fn: Any) -> Any:
        return fn(self.state)


async def test_master_filters_agent_lines_by_time(aiohttp_server: Any) -> None:
    """log_lines against a real agent endpoint on 127.0.0.1: asks for stamps only when needed, drops the
    lines before `since`, and keeps the stamps only with `timestamps`."""
    asked: list[str] = []

    async def agent_logs(request: web.Request) -> web.Response:
        asked.append(request.query_string)
        if request.query.get("timestamps") == "1":
            body = (b"2026-12-01T09:00:00.000000001Z old\n2026-12-01T10:00:00.5Z new\n"
                    b"(an unstamped note)\n")
        else:
            body = b"old\nnew\n"
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/v1/logs/{alloc}", agent_logs)
    server = await aiohttp_server(app)
    state = {"services": {"web": {}}, "nodes": {"n1": {"address": str(server.make_url("")).rstrip("/"),
                                                       "push_token": "p"}},
             "allocations": {"a1": {"id": "a1", "service": "web", "desired": "run", "node": "n1", "index": 0}}}
    raft = _Raft(state)

    async def collect(**kw: Any) -> list[bytes]:
        return [line async for line in log_lines(raft, "web", 100, False, **kw)]

    assert await collect() == [b"[web.0 a1] old\n", b"[web.0 a1] new\n"]
    assert "timestamps" not in asked[-1]
    since = 1796119200.0  # 2026-12-01T10:00:00Z
    assert await collect(since=since) == [b"[web.0 a1] new\n", b"[web.0 a1] (an unstamped note)\n"]
    assert "timestamps=1" in asked[-1]
    assert await collect(since=since, timestamps=True) == [b"[web.0 a1] 2026-12-01T10:00:00.5Z new\n",
                                                           b"[web.0 a1] (an unstamped note)\n"]
    assert (await collect(timestamps=True))[0] == b"[web.0 a1] 2026-12-01T09:00:00.000000001Z old\n"


# ---------------------------------------------------------------------- server/agent/join log flags


def test_log_flags_reach_the_server_agent_and_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """--log-level/--log-format/--access-log go to orca.logging_setup (flags over ORCA_LOG_* over [log]);
    not given, they are left out so the environment and the config decide."""
    from orca.agent import main as agent_main
    from orca.master import main as master_main

    seen: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(master_main, "run_server", lambda path, **kw: seen.append((path, kw)) or 0)
    monkeypatch.setattr(agent_main, "run_agent", lambda path, **kw: seen.append((path, kw)) or 0)
    monkeypatch.setattr(agent_main, "run_join", lambda _masters, token, **kw: seen.append((token, kw)) or 0)
    assert main(["server", "--config", "m.toml", "--log-level", "DEBUG", "--log-format", "json", "--access-log"]) == 0
    assert seen[-1] == ("m.toml", {"log_level": "debug", "log_format": "json", "access_log": True})
    assert main(["agent", "--config", "a.toml", "--no-access-log"]) == 0
    assert seen[-1] == ("a.toml", {"access_log": False})
    assert main(["join", "http://127.0.0.1:6880", "--token-file", "t", "--log-level", "warning"]) == 0
    assert seen[-1] == ("t", {"log_level": "warning"})
    assert main(["server", "--config", "m.toml", "--log-format", "xml"]) == 2


# ---------------------------------------------------------------------- version, completion, hints


def test_version_shows_client_and_server(fake: type[FakeClient],  # noqa: F811
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["request"] = {"version": "9.9.9", "node_id": "master-2", "schema_version": 7, "status": "healthy"}
    assert main(["version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"client: orca {__version__} (Python ")
    assert out[1].startswith("server: orca 9.9.9 on master-2 at ") and "(state schema 7, healthy)" in out[1]
    assert fake.calls == [("request", ("GET", "/api/v1/health"))]
    assert main(["version", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["client"]["version"] == __version__ and doc["server"]["version"] == "9.9.9"
    assert main(["--version"]) == 0
    assert "server: orca 9.9.9" in capsys.readouterr().out
    calls = len(fake.calls)
    assert main(["version", "--client"]) == 0
    assert len(fake.calls) == calls and "server" not in capsys.readouterr().out


def test_version_without_a_cluster(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    fake.replies["request"] = ApiError(0, "UNREACHABLE", "no master answered at http://127.0.0.1:1")
    assert main(["--version"]) == 0  # the client's version is still news
    assert "server: unknown: no master answered" in capsys.readouterr().out
    assert main(["version"]) == 1
    assert "hint: is a master running there?" in capsys.readouterr().err


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_know_the_verbs_and_flags(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("drain", "completion", "--since-seq", "--timestamps", "remove-master", "wide"):
        assert word in script, word
    binary = shutil.which(shell)
    if binary:  # the shell itself finds no syntax error in it
        proc = subprocess.run([binary, "-n"], input=script, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_errors_end_with_what_to_do(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    fake.replies["status"] = ApiError(401, "UNAUTHORIZED", "missing bearer token")
    assert main(["status"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: missing bearer token (UNAUTHORIZED)"
    assert err[1].startswith("hint: set ORCA_TOKEN, pass --token, or point a context at a token file")
    for code in ("UNAUTHORIZED", "FORBIDDEN", "UNREACHABLE", "CLUSTER_NOT_READY", "RATE_LIMIT_EXCEEDED",
                 "SERVICE_NOT_FOUND", "NODE_NOT_FOUND", "VALIDATION_ERROR"):
        assert next_step(code), code
    assert next_step("CONFLICT") is None  # the message says it all
