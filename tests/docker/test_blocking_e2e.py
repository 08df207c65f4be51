"""`wait_converged` on the real engine reads by blocking queries: the agents' reports (committed by the
leader every heartbeat) wake it, a rolling update is followed to its end, and the reads after the first
carry the index of the answer before them (asserted on the calls, not on timing)."""

from __future__ import annotations

import pytest
from e2e_helpers import HTTPD, IMAGE, stack_fixture

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.docker

stack = pytest.fixture(stack_fixture)


def test_wait_converged_follows_a_deploy_and_an_update_by_blocking_reads(
        stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, _nodes = stack
    spec = {"name": "blk", "image": IMAGE, "command": HTTPD, "replicas": 2, "port": 8080,
            "resources": {"memory": "16Mi", "cpu": 0.05}}
    version = client.deploy([spec])["versions"]["blk"]
    seen: list[tuple[int, int, int]] = []
    reads: list[int | None] = []
    blocking_get = client.blocking_get

    def recorded(path: str, params: object = None, **kw: object) -> tuple[object, int | None]:
        reads.append(kw.get("index"))  # type: ignore[arg-type]
        return blocking_get(path, params, **kw)  # type: ignore[arg-type]

    client.blocking_get = recorded  # type: ignore[method-assign]

    def progress(detail: dict) -> None:
        seen.append((detail["version"], detail["replicas"]["running"], detail["replicas"]["healthy"]))

    detail = client.wait_converged("blk", 120, progress, expect_version=version)
    assert detail["replicas"] == {"desired": 2, "running": 2, "healthy": 2}
    assert seen[-1] == (version, 2, 2) and len(seen) >= 2  # woken by the reports, not only at the end
    assert reads[0] is None and any(i is not None for i in reads[1:])
    new = client.deploy([{**spec, "env": {"V": "2"}}])["versions"]["blk"]
    detail = client.wait_converged("blk", 120, expect_version=new)
    assert detail["version"] == new and all(c["version"] == new for c in detail["containers"])
