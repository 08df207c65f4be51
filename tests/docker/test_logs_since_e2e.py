"""`orca logs --since/--timestamps` on the real engine: the master asks the agents for Docker's own time
stamps, keeps the lines from `since` on, and shows the stamps only when asked."""

from __future__ import annotations

import datetime as dt

import pytest
from e2e_helpers import IMAGE, converged, stack_fixture, wait_for

from orca.cli import main
from orca.client import Client
from orca.devcluster import LocalCluster
from orca.master.api_workers import split_stamp

pytestmark = pytest.mark.docker

stack = pytest.fixture(stack_fixture)


def _logs(client: Client, **params: object) -> list[str]:
    text = client.request("GET", "/api/v1/services/clock/logs", params={"tail": 100, **params}, raw=True)
    return [line for line in str(text).splitlines() if line]


def test_logs_since_and_timestamps(stack: tuple[LocalCluster, Client, list[str]], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cluster, client, _ = stack
    client.deploy([{"name": "clock", "image": IMAGE, "replicas": 1,
                    "command": ["sh", "-c", "echo early; sleep 3; echo late; exec sleep 1000"],
                    "resources": {"memory": "16Mi", "cpu": 0.1}}])
    wait_for(converged(client, "clock", 1), 60, "1 running", cluster)
    wait_for(lambda: any(line.endswith("] late") for line in _logs(client)), 30, "both lines")

    plain = _logs(client)
    assert [line.split("] ", 1)[1] for line in plain] == ["early", "late"]  # no stamps unless asked

    stamped = _logs(client, timestamps="true")
    whens = []
    for line in stamped:
        prefix, rest = line.split("] ", 1)
        when, stamp, text = split_stamp(rest.encode())
        assert when is not None and stamp, line  # Docker's RFC 3339 stamp right after the replica prefix
        whens.append(when)
    early, late = whens
    assert late - early >= 2.5

    middle = dt.datetime.fromtimestamp((early + late) / 2, dt.UTC).isoformat().replace("+00:00", "Z")
    assert [line.split("] ", 1)[1] for line in _logs(client, since=middle)] == ["late"]
    assert len(_logs(client, since="1h")) == 2
    assert _logs(client, since="2999-01-01T00:00:00Z") == []

    # The same through the CLI and the SDK.
    monkeypatch.setenv("ORCA_API", ",".join(m.url for m in cluster.masters))
    monkeypatch.setenv("ORCA_TOKEN", cluster.token())
    capsys.readouterr()
    assert main(["logs", "clock", "--since", middle, "--timestamps"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith(" late") and split_stamp(line.split("] ", 1)[1].encode())[0] == late
    client.stop("clock", purge=True)
