"""Benchmark node drain: 10 replicas moved off a node vs 10 × `docker run` (4 in parallel), same run.

Prints one JSON line. Three masters and two agents on the local engine (default timing). Each round
deploys 10 replicas with only agent A running, starts agent B, then drains A and times from the drain
call to the drain being complete (every replica running on B, A ineligible and running no orca
container). While it drains, the service's running containers are sampled every 100 ms: the issue's
promise is "never below N" (start-before-stop). Then A is made eligible again, the service purged.
The rounds run at `--max-parallel` (default 10: the drain replaces as many replicas at once as the
service allows) and again at `--also-max-parallel` (default 2), interleaved with the baseline.

Baseline, same run: 10 × `docker run -d orca-test/busybox <COMMAND>`, 4 at a time (the engine's time to
start 10 containers). The replicas run COMMAND, a shell that exits on SIGTERM as a service does (`sleep`
as PID 1 ignores it, and every stop would measure the kill timeout). Goal (issues 4, 17): drain ≤ 2 ×
the baseline, running never below N.

    .venv/bin/python scripts/bench/drain.py [--rounds 3] [--replicas 10] [--max-parallel 10]
        [--also-max-parallel 2] [--min-healthy 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker  # noqa: E402
from _common import box_load, emit, install_sigterm, remove_labelled, wait_until  # noqa: E402
from deploy import docker_round  # noqa: E402

from orca import trace  # noqa: E402
from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

IMAGE = "orca-test/busybox"


def running_on(engine: Any, nodes: list[str], service: str) -> int:
    return sum(len(engine.containers.list(sparse=True,  # sparse: no inspect of a container that just went
                                          filters={"label": [f"orca.node={n}", f"orca.service={service}"]}))
               for n in nodes)


# A replica that exits on SIGTERM, as services do: `sleep` as PID 1 ignores SIGTERM and would make every
# stop wait out the kill timeout, which measures the timeout, not orca. The baseline runs the same command.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def drain_round(cluster: LocalCluster, client: Client, engine: Any, nodes: list[str], name: str,
                replicas: int, max_parallel: int, min_healthy_s: float) -> dict[str, Any]:
    a, b = cluster.agents
    cluster.kill(b)  # only A runs while the replicas are placed
    wait_until(lambda: {n["id"]: n["status"] for n in client.nodes()}.get(nodes[1]) != "ready", 20,
               "agent B marked down", period=0.2)
    client.deploy([{"name": name, "image": IMAGE, "command": COMMAND, "replicas": replicas,
                    "resources": {"memory": "16Mi", "cpu": 0.05},
                    "update": {"max_parallel": max_parallel, "min_healthy_s": min_healthy_s}}])
    wait_until(lambda: client.service(name)["replicas"]["running"] == replicas, 120, "replicas on A", period=0.2)
    cluster.start_agent(b)
    wait_until(lambda: {n["id"]: n["status"] for n in client.nodes()}.get(nodes[1]) == "ready", 30,
               "agent B back", period=0.2)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(running_on(engine, nodes, name))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    trace.mark("bench_begin", round=name)
    try:
        client.drain(nodes[0], deadline_s=300)
        trace.mark("bench_op_committed", round=name)
        wait_until(lambda: client.node(nodes[0])["eligibility"] == "ineligible", 300, "drain complete", period=0.05)
        elapsed = time.monotonic() - t0
        trace.mark("bench_end", round=name)
    finally:
        stop.set()
        sampler.join(5)
    moved = running_on(engine, [nodes[1]], name)
    client.undrain(nodes[0])
    client.stop(name, purge=True)
    wait_until(lambda: running_on(engine, nodes, name) == 0, 60, "purged", period=0.2)
    return {"seconds": elapsed, "min_running": min(samples) if samples else None, "moved": moved,
            "migrated": client.node(nodes[0])["drain"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--max-parallel", type=int, default=10, help="the service's update.max_parallel")
    ap.add_argument("--also-max-parallel", type=int, default=2,
                    help="rounds with this max_parallel too, reported under `also` (0: none)")
    ap.add_argument("--min-healthy", type=float, default=1.0, help="the service's update.min_healthy_s")
    ap.add_argument("--trace", metavar="FILE", help="append every process's stage marks to FILE (orca.trace)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 10 or not 1 <= args.replicas <= 50:
        ap.error("--rounds must be 1..10 and --replicas 1..50")
    install_sigterm()
    if args.trace:  # the cluster's processes inherit it (orca.trace); scripts/bench/trace_stages.py reads it
        os.environ["ORCA_TRACE"] = str(Path(args.trace).resolve())
        trace.open_trace(os.environ["ORCA_TRACE"])
    load0 = os.getloadavg()[0]
    run_id = uuid.uuid4().hex[:8]
    nodes = [f"drain-{run_id}-a", f"drain-{run_id}-b"]
    engine = docker.from_env()
    settings = [args.max_parallel, *([args.also_max_parallel] if args.also_max_parallel else [])]
    rounds: dict[int, list[dict[str, Any]]] = {mp: [] for mp in settings}
    raw: list[dict[str, Any]] = []
    try:
        engine.images.get(IMAGE)
        with tempfile.TemporaryDirectory(prefix="orca-bench-drain-") as tmp, LocalCluster(Path(tmp) / "c") as cluster:
            cluster.start()
            cluster.wait_leader(30)
            for node in nodes:
                cluster.start_agent(cluster.add_agent(node))
            with Client([m.url for m in cluster.masters], cluster.token("admin", "bench"), timeout=15) as client:
                wait_until(lambda: sum(n["status"] == "ready" for n in client.nodes()) == 2, 30, "agents", period=0.2)
                for i in range(args.rounds):  # interleaved: the baseline and both settings see the same box
                    raw.append(docker_round(engine, run_id, args.replicas, command=COMMAND))
                    for mp in settings:
                        rounds[mp].append(drain_round(cluster, client, engine, nodes, f"drain-{i + 1}-{mp}",
                                                      args.replicas, mp, args.min_healthy))
    finally:
        remove_labelled([*(f"orca.node={n}" for n in nodes), f"orca-bench={run_id}"])
        engine.close()
    raw_s = [r["seconds"] for r in raw]

    def figures(mp: int) -> dict[str, Any]:
        drain_s = [r["seconds"] for r in rounds[mp]]
        return {"max_parallel": mp,
                "drain_s": {"median": round(statistics.median(drain_s), 3), "samples": [round(s, 3) for s in drain_s]},
                "ratio": round(statistics.median(drain_s) / statistics.median(raw_s), 3),
                "ratio_per_round": [round(d / r, 3) for d, r in zip(drain_s, raw_s, strict=True)],
                "min_running_during_drain": [r["min_running"] for r in rounds[mp]],
                "moved_to_other_node": [r["moved"] for r in rounds[mp]]}
    emit({"bench": "drain", "replicas": args.replicas, **figures(args.max_parallel), "min_healthy_s": args.min_healthy,
          "docker_run_s": {"median": round(statistics.median(raw_s), 3), "samples": [round(s, 3) for s in raw_s]},
          "also": [figures(mp) for mp in settings[1:]],
          "command": COMMAND,
          "goal": "drain <= 2x docker_run; running never below replicas (start-before-stop)",
          "box": box_load(load0)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
