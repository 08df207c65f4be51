"""Rolling upgrades with two adjacent schema versions of real masters (the next version is
tests/support/next_schema_master.py: one more op, written as schema version N+1).

- One master at a time (followers first, the leader last), writes go on and nothing diverges.
- A master still on version N that meets a version N+1 entry stops applying, says why in its log and
  answers 503; the cluster goes on; upgraded, it replays its journal and agrees with the others.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster, MasterProc
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster

NEXT = ["tests/support/next_schema_master.py"]


def _spec(name: str) -> dict:
    return {"name": name, "image": "orca-test/busybox", "replicas": 1}


def _restart(cluster: LocalCluster, m: MasterProc, launcher: list[str]) -> None:
    cluster.kill(m, signal.SIGTERM)
    m.launcher = launcher
    cluster.start([m])


def _until(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _get(url: str, token: str | None = None) -> tuple[int, object]:
    """(status, body), or (0, None) while the master is not listening (restarting)."""
    try:
        status, _, body = raw("GET", url, token=token)
    except OSError:
        return 0, None
    return status, body


def _services(m: MasterProc, token: str) -> set[str] | None:
    status, body = _get(m.url + "/api/v1/status", token)
    return {s["name"] for s in body["services"]} if status == 200 else None  # type: ignore[index]


def test_one_master_at_a_time(cluster: LocalCluster) -> None:
    token = cluster.token()
    urls = [m.url for m in cluster.masters]
    leader = cluster.wait_leader()
    order = [m for m in cluster.masters if m is not leader] + [leader]
    with Client(urls, token) as client:
        for step, m in enumerate(order):
            _restart(cluster, m, NEXT)
            cluster.wait_leader(timeout=60, all_up=True)
            _until(lambda m=m: (cluster.health(m) or {}).get("cluster_ready"))
            client.deploy([_spec(f"svc-{step}")])  # writes go on at every step
        status, _, body = raw("POST", client.leader + "/api/v1/x-annotate", token=token,
                              body={"key": "owner", "value": "team-a"})
        assert status == 200, body
        names = {f"svc-{i}" for i in range(3)}
        for m in cluster.masters:
            _until(lambda m=m: _services(m, token) == names)
            _until(lambda m=m: _get(m.url + "/api/v1/x-annotations", token)[1] == {
                "annotations": {"owner": "team-a"}})


def test_an_old_master_stops_instead_of_diverging(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "mixed") as cluster:
        old = cluster.masters[2]
        for m in cluster.masters[:2]:
            m.launcher = NEXT
        cluster.start()
        token = cluster.token()
        # The new op must be written by an upgraded leader: move leadership off the old master.
        for _ in range(10):
            leader = cluster.wait_leader(timeout=60, all_up=True)
            if leader is not old:
                break
            _restart(cluster, old, old.launcher)
        assert leader is not old
        with Client([m.url for m in cluster.masters], token) as client:
            client.deploy([_spec("before")])
            _until(lambda: _services(old, token) == {"before"})
            status, _, body = raw("POST", leader.url + "/api/v1/x-annotate", token=token,
                                  body={"key": "owner", "value": "team-a"})
            assert status == 200, body
            # The old master stops applying and says so; it answers 503 to reads and to /readyz.
            _until(lambda: _get(old.url + "/readyz")[0] == 503)
            status, _, body = raw("GET", old.url + "/api/v1/status", token=token)
            assert status == 503 and body["code"] == "CLUSTER_NOT_READY" and "stopped applying" in body["error"]
            assert (cluster.health(old) or {}).get("halted", {}).get("op") == "annotate"
            assert "STOPPED APPLYING the replicated log" in old.log.read_text()
            # The cluster goes on (the old master still counts for the quorum); clients skip it.
            client.deploy([_spec("during")])
            assert {s["name"] for s in client.status(consistent=True)} == {"before", "during"}
            # Upgraded and restarted, it replays its journal and agrees with the others.
            _restart(cluster, old, NEXT)
            _until(lambda: _services(old, token) == {"before", "during"})
            _until(lambda: _get(old.url + "/api/v1/x-annotations", token)[1] == {
                "annotations": {"owner": "team-a"}})
            try:
                client.deploy([_spec("after")])
            except ApiError as exc:  # pragma: no cover - a failure message worth having
                raise AssertionError(f"write after the upgrade failed: {exc}") from exc
            _until(lambda: _services(old, token) == {"before", "during", "after"})
