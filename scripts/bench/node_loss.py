"""Benchmark node loss: SIGKILL of an agent -> its replicas running on the surviving node.

Prints one JSON line. A local three-master cluster (real `orca server` processes) and two real agents
(`orca agent`) sharing the local engine, all at default timing (heartbeat 1 s; after 1.5 s of silence the
leader probes the agent, and a refused probe marks the node down at once; lease TTL 5 s otherwise). Each
round deploys a fresh service of 6 replicas (`sleep 3600`, 16Mi, 0.05 CPU), waits until it runs 3 + 3,
SIGKILLs one agent (alternating) and polls every 100 ms, from the kill:

- `down_detected_s`: the killed node shows `down` in `GET /cluster/nodes` (probe refused, committed);
- `placed_s`: the service lists 6 containers, all on the surviving node (replacements committed);
- `rescheduled_s`: ... and all 6 of them running (the survivor started them and reported it).

Then the killed agent is restarted and the round waits until it is ready again and has stopped the
replicas that were moved away (`rejoin_reconciled_s`, from its restart); the service is purged.

The killed agent's containers are left to run while it is gone (as on a real host whose agent died), so
each round's figures include no engine cleanup. Every container made here carries `orca.node=<one of
the two agents>` and is removed at the end, also on errors.

No baseline can run here (no Swarm or Nomad on this box): the figures quoted in issue 3 are reported.

    .venv/bin/python scripts/bench/node_loss.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker  # noqa: E402
from _common import box_load, emit, install_sigterm, median_stats, remove_labelled, wait_until  # noqa: E402

from orca import trace  # noqa: E402
from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

IMAGE = "orca-test/busybox"
REPLICAS = 6
POLL_S = 0.1
LEASE_TTL_S = 5  # the default timing.node_lease_ttl_s the cluster runs with
BASELINE_NOTE = "Swarm ~15 s, Nomad >= 20 s (issue 3)"


def _containers(engine: Any, node_id: str, service: str) -> list[Any]:
    return engine.containers.list(filters={"label": [f"orca.node={node_id}", f"orca.service={service}"]})


def one_round(cluster: LocalCluster, client: Client, engine: Any, nodes: list[str], i: int) -> dict[str, Any]:
    name = f"loss-{i + 1}"
    victim_index = i % 2
    victim, survivor = nodes[victim_index], nodes[1 - victim_index]
    agent = cluster.agents[victim_index]
    client.deploy(
        [
            {
                "name": name,
                "image": IMAGE,
                "command": ["sleep", "3600"],
                "replicas": REPLICAS,
                "resources": {"memory": "16Mi", "cpu": 0.05},
            }
        ]
    )

    def spread() -> bool:
        d = client.service(name)
        per_node = Counter(c["node"] for c in d["containers"])
        return d["replicas"]["running"] == REPLICAS and per_node == {victim: 3, survivor: 3}

    wait_until(spread, 60, f"{name}: 3 + 3 running", period=0.2)

    wall_kill, t_kill = time.time(), time.monotonic()
    trace.mark("bench_begin", round=name)
    cluster.kill(agent)  # SIGKILL, then reap; its containers keep running, unknown to the cluster
    down = placed = rescheduled = None
    deadline = t_kill + 60
    while rescheduled is None or down is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: not rescheduled within 60 s of the kill (down={down}, placed={placed})")
        now = time.monotonic()
        if down is None and {n["id"]: n["status"] for n in client.nodes()}.get(victim) == "down":
            down = now - t_kill
        d = client.service(name)
        on_survivor = len(d["containers"]) == REPLICAS and all(c["node"] == survivor for c in d["containers"])
        if placed is None and on_survivor:
            placed = now - t_kill
        if rescheduled is None and on_survivor and d["replicas"]["running"] == REPLICAS:
            rescheduled = now - t_kill
            trace.mark("bench_end", round=name)
        time.sleep(POLL_S)

    breakdown = _breakdown(client, engine, name, victim, survivor, wall_kill)
    t_back = time.monotonic()
    cluster.start_agent(agent)
    wait_until(
        lambda: (
            {n["id"]: n["status"] for n in client.nodes()}.get(victim) == "ready"
            and not _containers(engine, victim, name)
        ),
        60,
        f"{victim} back and reconciled",
        period=0.2,
    )
    reconciled = time.monotonic() - t_back
    kept = len(_containers(engine, survivor, name))
    client.stop(name, purge=True)
    wait_until(
        lambda: not _containers(engine, victim, name) and not _containers(engine, survivor, name),
        60,
        f"{name} purged",
        period=0.2,
    )
    return {
        "killed": victim,
        "down_detected_s": down,
        "placed_s": placed,
        "rescheduled_s": rescheduled,
        "rejoin_reconciled_s": reconciled,
        "survivor_containers": kept,
        **breakdown,
    }


def _iso_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _breakdown(
    client: Client, engine: Any, name: str, victim: str, survivor: str, wall_kill: float
) -> dict[str, float | None]:
    """Where the time went, from the kill (wall clock, one box): the leader's `node_down` and
    `replicas_placed` events (stamped by the leader when it proposed them) and the engine's StartedAt of
    the replacements; what follows the last one is reporting (agent heartbeat -> batched lease entry)."""
    down = next((e for e in reversed(client.events(type="node_down", limit=1000)) if e.get("node") == victim), None)
    placed = next(
        (
            e
            for e in reversed(client.events(service=name, type="replicas_placed", limit=1000))
            if survivor in e.get("message", "") and _iso_ts(e["time"]) > wall_kill
        ),
        None,
    )
    started: float | None = None
    for c in _containers(engine, survivor, name):
        raw = (c.attrs.get("State") or {}).get("StartedAt") or ""
        if raw and not raw.startswith("0001"):
            head, _, frac = raw.rstrip("Z").partition(".")
            ts = dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()
            if ts > wall_kill:
                started = ts if started is None else max(started, ts)
    return {
        "down_event_s": None if down is None else _iso_ts(down["time"]) - wall_kill,
        "placed_event_s": None if placed is None else _iso_ts(placed["time"]) - wall_kill,
        "engine_started_s": None if started is None else started - wall_kill,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trace", metavar="FILE", help="append every process's stage marks to FILE (orca.trace)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20:
        ap.error("--rounds must be 1..20")
    install_sigterm()
    if args.trace:  # the cluster's processes inherit it (orca.trace); scripts/bench/trace_stages.py reads it
        os.environ["ORCA_TRACE"] = str(Path(args.trace).resolve())
        trace.open_trace(os.environ["ORCA_TRACE"])
    load0 = os.getloadavg()[0]
    run_id = uuid.uuid4().hex[:6]
    nodes = [f"loss{run_id}-a", f"loss{run_id}-b"]
    engine = docker.from_env()
    rounds: list[dict[str, Any]] = []
    try:
        engine.images.get(IMAGE)
        with (
            tempfile.TemporaryDirectory(prefix="orca-bench-nodeloss-") as tmp,
            LocalCluster(Path(tmp) / "c") as cluster,
        ):
            cluster.start()
            cluster.wait_leader(30)
            t_started = time.monotonic()
            for node in nodes:
                cluster.start_agent(cluster.add_agent(node))
            with Client([m.url for m in cluster.masters], cluster.token("admin", "bench"), timeout=15) as client:
                wait_until(
                    lambda: sum(1 for n in client.nodes() if n["id"] in nodes and n["status"] == "ready") == 2,
                    30,
                    "both agents registered",
                    period=0.2,
                )
                # A new leader grants every node one full lease TTL of grace before it declares any down (it
                # was not listening to heartbeats before): the rounds time node loss in a settled cluster,
                # not within the TTL after an election (the first round of a fresh cluster used to be).
                time.sleep(max(0.0, LEASE_TTL_S - (time.monotonic() - t_started)))
                for i in range(args.rounds):
                    rounds.append(one_round(cluster, client, engine, nodes, i))
    finally:
        remove_labelled([f"orca.node={n}" for n in nodes])
        engine.close()
    out: dict[str, Any] = {
        "bench": "node_loss",
        "replicas": REPLICAS,
        "lease_ttl_s": LEASE_TTL_S,
        "heartbeat_s": 1,
        "rescheduled_s": median_stats([r["rescheduled_s"] for r in rounds]),
        "down_detected_s": median_stats([r["down_detected_s"] for r in rounds]),
        "placed_s": median_stats([r["placed_s"] for r in rounds]),
        "rejoin_reconciled_s": median_stats([r["rejoin_reconciled_s"] for r in rounds]),
        # From the leader's events and the engine, per round (see _breakdown).
        "breakdown": {
            k: [None if r[k] is None else round(r[k], 3) for r in rounds]
            for k in ("down_event_s", "placed_event_s", "engine_started_s")
        },
        "killed": [r["killed"][-1] for r in rounds],
        "baseline": {"note": BASELINE_NOTE},
        "box": box_load(load0),
    }
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
