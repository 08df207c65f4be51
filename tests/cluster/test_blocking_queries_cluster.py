"""Blocking queries on real masters: a read on a follower with `?index=` of the answer it had returns once
a write through the leader is applied there (long before its wait), and at the wait when nothing changed.

Asserted on indexes and content; the only time bounds are generous ones that tell "answered because of the
write" (within 60 s) from "answered at the wait" (120 s)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from orca.client import Client
from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def test_a_blocking_read_on_a_follower_answers_after_a_write_and_otherwise_at_the_wait(
        cluster: LocalCluster) -> None:
    leader = cluster.wait_leader(all_up=True)
    follower = next(m for m in cluster.masters if m is not leader)
    token = cluster.token()
    with Client(follower.url, token, retries=10) as reader, Client(leader.url, token) as writer:
        before, index = reader.blocking_get("/api/v1/status")
        assert before == {"services": []} and isinstance(index, int)

        # Nothing changes: the answer comes at the wait, unchanged (and not before it).
        asked = time.monotonic()
        same, later = reader.blocking_get("/api/v1/status", index=index, wait_s=1.0)
        assert same == before and later is not None and later >= index
        assert time.monotonic() - asked >= 0.9

        # A write through the leader ends the follower's wait with the new state.
        out: dict[str, Any] = {}

        def block() -> None:
            out["answer"] = reader.blocking_get("/api/v1/status", index=later, wait_s=120)

        thread = threading.Thread(target=block, daemon=True)
        thread.start()
        time.sleep(0.3)  # usually in flight by now; if not, it is answered at once: the same outcome
        deployed = writer.deploy([{"name": "web", "image": "nginx:alpine", "replicas": 0}])
        assert deployed["deployed"] == ["web"]
        thread.join(60)
        assert not thread.is_alive(), "the blocking read did not end with the write"
        body, after = out["answer"]
        assert [s["name"] for s in body["services"]] == ["web"] and after is not None and after > later

        # The SDK's wait reads the same way (replicas 0: converged as soon as the follower has it).
        assert reader.wait_converged("web", 30)["name"] == "web"

        # Bad parameters: the envelope and a 400, on any master.
        for m in cluster.masters:
            status, _, err = raw("GET", m.url + "/api/v1/status?index=soon", token=token)
            assert status == 400 and err["code"] == "VALIDATION_ERROR" and err["details"]["field"] == "index"
            status, _, err = raw("GET", m.url + "/api/v1/events?index=1&wait=1h", token=token)
            assert status == 400 and err["details"]["field"] == "wait"
