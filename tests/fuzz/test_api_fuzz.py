"""API fuzz tier: >= 50,000 requests generated from the served OpenAPI document against a real
3-master cluster, from every caller (no token, a forged token, viewer, deployer, admin, agent).

Passes when no answer is >= 500 (or missing), every 4xx carries the error envelope, and no refused
request changed the replicated state (leader's digest before == after). How requests are made and
checked: `tests/fuzz/fuzzer.py`.

    ORCA_FUZZ_REQUESTS   generated requests to send (default 50000)
    ORCA_FUZZ_SECONDS    time budget; the test fails if the count is not reached by then (default 1500)
    ORCA_FUZZ_SEED       seed of the generation (default: DEFAULT_SEED, reproducible; `random` draws one, printed)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orca.auth import mint_token
from orca.devcluster import LocalCluster, http_exchange
from tests.fuzz.fuzzer import Fuzzer, Targets, make_round

pytestmark = pytest.mark.fuzz

TARGET = int(os.environ.get("ORCA_FUZZ_REQUESTS", "50000"))
BUDGET_S = float(os.environ.get("ORCA_FUZZ_SECONDS", "1500"))
ROUND_CASES = 500          # generated per round; each is sent by every caller
NEGATIVE_SHARE = 0.15
# Requests that pass auth with a write method may change the state: small batches, so that when the digest
# moves only a few refused requests need sending again alone. Everything else goes in large batches.
BATCH, RISKY_BATCH = 64, 8
ROLES = ("viewer", "deployer", "admin", "agent")


# The seed CI runs with; it found the non-ASCII chunk-number 500 when it was random.
DEFAULT_SEED = 1885715803

def _seed(c: LocalCluster, leader: str, admin: str, agent: str) -> Targets:
    """Objects for the generated names to hit (again each round: the fuzzer may have removed them)."""
    def call(method: str, path: str, body: Any = None, token: str = admin) -> Any:
        status, _, out = http_exchange(method, leader + path, token=token, body=body)
        assert status < 500, (method, path, status, out)
        return out

    call("POST", "/api/v1/deploy", {"services": [
        {"name": "fuzz-web", "project": "fuzz", "image": "busybox", "replicas": 1, "port": 80},
        {"name": "fuzz-api", "project": "fuzz", "image": "busybox", "replicas": 2, "canary": 1,
         "scaling": {"mode": "manual"}}]})
    call("POST", "/api/v1/services/fuzz-web/start")
    call("POST", "/api/v1/agent/register", {"node_id": "fuzz-node", "address": "http://127.0.0.1:9",
                                            "capacity": {"memory": 2**30, "cpu": 2.0}, "push_token": "p" * 32},
         token=agent)
    call("POST", "/api/v1/secrets", {"key": "FUZZ_KEY", "value": "not-a-real-secret"})
    hooks = [h["id"] for h in call("GET", "/api/v1/webhooks")["webhooks"] if h["repo"] == "fuzz/repo"]
    if not hooks:
        hooks = [call("POST", "/api/v1/webhooks", {"repo": "fuzz/repo", "service": "fuzz-web",
                                                   "secret": "s" * 32})["id"]]
    return Targets(
        by_param={"name": ["fuzz-web", "fuzz-api", "fuzz"], "id": ["fuzz-node", *hooks], "key": ["FUZZ_KEY"],
                  "component": ["raft", "scheduler", "dispatcher"]},
        by_field={"node_id": ["fuzz-node"], "service": ["fuzz-web", "fuzz-api"], "name": ["fuzz-web", "fuzz-api"],
                  "key": ["FUZZ_KEY"], "repo": ["fuzz/repo"]})


def test_generated_requests_never_5xx_always_envelope_and_refusals_change_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A fixed default keeps CI reproducible (a red run names its seed and reruns the same requests);
    # ORCA_FUZZ_SEED=random explores new seeds, any number replays one.
    raw_seed = os.environ.get("ORCA_FUZZ_SEED") or str(DEFAULT_SEED)
    seed = random.SystemRandom().randrange(2**32) if raw_seed == "random" else int(raw_seed)
    # The tier is about input handling, not elections: without fsync and with wider election timeouts a
    # disk or CPU stall of this shared box (a 200 ms journal flush was seen) does not move the leader, which
    # would turn in-flight writes and `?consistent=true` reads into honest 503s.
    with LocalCluster(tmp_path / "cluster", timing={"agent_heartbeat_s": 1.0, "node_lease_ttl_s": 3600.0},
                      raft_options={"fsync": False},
                      tuning={"election_min_s": 1.0, "election_max_s": 2.0, "leader_fallback_s": 4.0}) as c:
        c.start()
        leader = c.wait_leader(timeout=60, all_up=True).url
        # the agent token is named (and, where agent tokens are bound to a node, bound to) the seeded node
        tokens = {role: c.token(role, "fuzz-node" if role == "agent" else f"fuzz-{role}") for role in ROLES}
        tokens["forged"] = mint_token(b"not the cluster's key" * 2, role="admin", name="forged", now=time.time())[0]
        docs = [http_exchange("GET", m.url + "/api/v1/openapi.json")[2] for m in c.masters]
        assert all(d == docs[0] for d in docs), "every master serves the same document"
        started = time.monotonic()
        rng = random.Random(seed)

        async def run() -> Fuzzer:
            connector = aiohttp.TCPConnector(limit=64, force_close=False)
            async with aiohttp.ClientSession(connector=connector) as session:
                roles = {f"{m.upper()} {p}": op["x-orca-role"] for p, item in docs[0]["paths"].items()
                         for m, op in item.items()}
                fuzzer = Fuzzer(session, [m.url for m in c.masters], tokens, leader, tokens["admin"], rng, roles)
                targets = await asyncio.to_thread(_seed, c, fuzzer.leader, tokens["admin"], tokens["agent"])
                # spawn, not fork: this process runs threads (the event loop's executor)
                pool = multiprocessing.get_context("spawn").Pool(1)
                try:
                    def next_round(k: int) -> Any:
                        return pool.apply_async(make_round, (docs[0], ROUND_CASES, seed + k, NEGATIVE_SHARE, targets))
                    round_no = 0
                    upcoming = next_round(round_no)
                    while fuzzer.report.sent < TARGET and time.monotonic() - started < BUDGET_S:
                        t0 = time.monotonic()
                        items = await asyncio.to_thread(upcoming.get, BUDGET_S)
                        fuzzer.report.seconds["waiting for generation"] += time.monotonic() - t0
                        round_no += 1
                        upcoming = next_round(round_no)   # generated while this round is sent
                        await fuzzer.quiet()
                        risky = [it for it in items if fuzzer.may_mutate(*it)]
                        safe = [it for it in items if not fuzzer.may_mutate(*it)]
                        batches = [safe[i:i + BATCH] for i in range(0, len(safe), BATCH)] + \
                            [risky[i:i + RISKY_BATCH] for i in range(0, len(risky), RISKY_BATCH)]
                        rng.shuffle(batches)
                        for batch in batches:
                            await fuzzer.batch(batch)
                            if time.monotonic() - started > BUDGET_S:
                                break
                        targets = await asyncio.to_thread(_seed, c, fuzzer.leader, tokens["admin"],
                                                          tokens["agent"])
                finally:
                    pool.terminate()  # the round generated ahead is not needed
                    pool.join()
                return fuzzer

        fuzzer = asyncio.run(run())
        elapsed = time.monotonic() - started
        r = fuzzer.report
        with capsys.disabled():
            print(f"\nAPI fuzz (seed {seed}): {r.sent} generated requests in {elapsed:.0f} s "
                  f"({r.sent / max(elapsed, 1e-9):.0f}/s) to {len(c.masters)} masters; "
                  f"{r.resent} refused requests re-sent to attribute {r.batches_moved} digest moves; "
                  f"{r.digests} digests; {r.refused_verified} refusals verified unchanged; {r.quiet_waits} waits "
                  "for a quiet cluster")
            print("  seconds: " + json.dumps({k: round(v, 1) for k, v in r.seconds.items()}))
            print("  statuses: " + json.dumps(dict(sorted(r.statuses.items()))))
            print(f"  operations covered: {len(r.per_op)}; per caller: " + json.dumps(dict(r.per_caller)))
        assert not r.failures, f"{len(r.failures)} failures (seed {seed}), first ones:\n" + "\n".join(r.failures[:20])
        assert r.sent >= TARGET, f"only {r.sent} of {TARGET} requests within {BUDGET_S:.0f} s (seed {seed})"
        documented = {f"{m.upper()} {p}" for p, item in docs[0]["paths"].items() for m in item}
        assert documented <= set(r.per_op), f"operations never fuzzed: {sorted(documented - set(r.per_op))}"
