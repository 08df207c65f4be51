"""Benchmark deploy-to-running: 20 replicas through orca vs 20 × `docker run`, 4 in parallel.

Prints one JSON line. orca: a local three-master cluster (real `orca server` processes, default timing)
and one real agent (`orca agent`, default heartbeat) on the local engine. Each orca round deploys a fresh
service of 20 replicas (`sleep 3600`, 16Mi, 0.05 CPU) and times from the deploy call to the first
`GET /services/{name}` (polled every 50 ms) that shows 20 running; then it stops and purges the service
and waits until the engine has no container of it left.

Baseline, same run, same engine: 20 × `docker run -d orca-test/busybox sleep 3600` through the CLI, 4 at
a time (the issue's baseline; the agent runs up to orca.agent.reconcile.ENGINE_PARALLEL engine operations
at once, and its containers carry init and limits the bare `docker run` does not), timed from the first
call to the last one returning (`docker run -d` returns once the container has started); then they are
removed. Rounds alternate docker, orca,
docker, orca, ... With `--with-agent-flags`, each round also times `docker run` with the settings the
agent gives its containers (init, memory/CPU limits, bounded logs), to tell the engine's cost of those
from orca's own.

Diagnosis per orca round: `engine_started_s` is when the engine says the last of the 20 containers
started (its StartedAt, same clock), measured from the deploy call; the rest of `orca_s` is reporting
(agent heartbeat -> leader's batched lease entry -> read).

Every container made here is labelled (`orca.node=<agent id>` or `orca-bench=<run id>`) and removed at
the end, also on errors.

    .venv/bin/python scripts/bench/deploy.py [--rounds 5] [--replicas 20] [--with-agent-flags]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker  # noqa: E402
from _common import box_load, emit, install_sigterm, remove_labelled, wait_until  # noqa: E402

from orca import trace  # noqa: E402
from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

IMAGE = "orca-test/busybox"
PARALLEL = 4
POLL_S = 0.05


def _started_at(engine: Any, containers: list[Any]) -> float | None:
    """Wall time (epoch s) the last of `containers` started, from the engine's StartedAt."""
    latest = None
    for c in containers:
        c.reload()
        raw = c.attrs.get("State", {}).get("StartedAt") or ""
        if not raw or raw.startswith("0001"):
            return None
        # "2024-01-01T10:00:00.123456789Z": keep microseconds for fromisoformat
        head, _, frac = raw.rstrip("Z").partition(".")
        ts = dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()
        latest = ts if latest is None else max(latest, ts)
    return latest


# What the agent asks the engine for on top of a plain `docker run` (orca.agent.runtime.DockerRuntime.start):
# an init process, memory and CPU limits, bounded json logs, no restart policy.
AGENT_FLAGS = [
    "--init",
    "--memory",
    "16m",
    "--cpus",
    "0.05",
    "--log-driver",
    "json-file",
    "--log-opt",
    "max-size=10m",
    "--log-opt",
    "max-file=3",
    "--restart",
    "no",
]


def docker_round(engine: Any, run_id: str, replicas: int, flags: list[str] | None = None,
                 command: list[str] | None = None) -> dict[str, Any]:
    label = f"orca-bench={run_id}"

    def one(_: int) -> str:
        out = subprocess.run(
            ["docker", "run", "-d", "--label", label, *(flags or []), IMAGE, *(command or ["sleep", "3600"])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"docker run failed: {out.stderr.strip()}")
        return out.stdout.strip()

    t0 = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        ids = list(pool.map(one, range(replicas)))
    elapsed = time.monotonic() - t0
    running = engine.containers.list(filters={"label": label, "status": "running"})
    if len(running) != replicas:
        raise RuntimeError(f"docker baseline: {len(running)}/{replicas} running after docker run")
    t1 = time.monotonic()
    subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120, check=True)
    wait_until(lambda: not engine.containers.list(all=True, filters={"label": label}), 60, "baseline removed")
    return {"seconds": elapsed, "cleanup_s": time.monotonic() - t1}


def orca_round(client: Client, engine: Any, node_id: str, name: str, replicas: int) -> dict[str, Any]:
    service = {
        "name": name,
        "image": IMAGE,
        "command": ["sleep", "3600"],
        "replicas": replicas,
        "resources": {"memory": "16Mi", "cpu": 0.05},
    }
    wall0, t0 = time.time(), time.monotonic()
    trace.mark("bench_begin", round=name)
    reply = client.deploy([service])
    trace.mark("bench_op_committed", round=name)
    if reply.get("deployed") != [name]:
        raise RuntimeError(f"deploy refused: {reply}")
    deadline = t0 + 120
    polls = 0
    while True:
        polls += 1
        detail = client.service(name)
        if int(detail["replicas"]["running"]) >= replicas:
            elapsed = time.monotonic() - t0
            trace.mark("bench_end", round=name)
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: {detail['replicas']} after 120 s")
        time.sleep(POLL_S)
    node_label = f"orca.node={node_id}"
    mine = engine.containers.list(filters={"label": [node_label, f"orca.service={name}"]})
    started = _started_at(engine, mine) if len(mine) == replicas else None
    t1 = time.monotonic()
    client.stop(name, purge=True)
    wait_until(
        lambda: not engine.containers.list(all=True, filters={"label": [node_label, f"orca.service={name}"]}),
        60,
        f"{name} containers removed after purge",
        period=0.2,
    )
    return {
        "seconds": elapsed,
        "engine_started_s": None if started is None else started - wall0,
        "cleanup_s": time.monotonic() - t1,
        "polls": polls,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=20)
    ap.add_argument(
        "--with-agent-flags",
        action="store_true",
        help="also time `docker run` with the agent's container settings (init, limits, logs)",
    )
    ap.add_argument("--trace", metavar="FILE", help="append every process's stage marks to FILE (orca.trace)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.replicas <= 100:
        ap.error("--rounds must be 1..20 and --replicas 1..100")
    install_sigterm()
    if args.trace:  # the cluster's processes inherit it (orca.trace); scripts/bench/trace_stages.py reads it
        os.environ["ORCA_TRACE"] = str(Path(args.trace).resolve())
        trace.open_trace(os.environ["ORCA_TRACE"])
    load0 = os.getloadavg()[0]
    run_id = uuid.uuid4().hex[:8]
    node_id = f"bench-{run_id}"
    engine = docker.from_env()
    orca: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    try:
        engine.images.get(IMAGE)
        with tempfile.TemporaryDirectory(prefix="orca-bench-deploy-") as tmp, LocalCluster(Path(tmp) / "c") as cluster:
            cluster.start()
            cluster.wait_leader(30)
            cluster.start_agent(cluster.add_agent(node_id))
            with Client([m.url for m in cluster.masters], cluster.token("admin", "bench"), timeout=15) as client:
                wait_until(
                    lambda: any(n["id"] == node_id and n["status"] == "ready" for n in client.nodes()),
                    30,
                    "the agent registered",
                    period=0.2,
                )
                for i in range(args.rounds):
                    raw.append(docker_round(engine, run_id, args.replicas))
                    orca.append(orca_round(client, engine, node_id, f"deploy-{i + 1}", args.replicas))
                    if args.with_agent_flags:
                        flagged.append(docker_round(engine, run_id, args.replicas, AGENT_FLAGS))
    finally:
        remove_labelled([f"orca.node={node_id}", f"orca-bench={run_id}"])
        engine.close()
    orca_s = [r["seconds"] for r in orca]
    raw_s = [r["seconds"] for r in raw]
    engine_s = [r["engine_started_s"] for r in orca if r["engine_started_s"] is not None]
    out: dict[str, Any] = {
        "bench": "deploy",
        "replicas": args.replicas,
        "orca_s": {"median": round(statistics.median(orca_s), 3), "samples": [round(s, 3) for s in orca_s]},
        "docker_run_s": {"median": round(statistics.median(raw_s), 3), "samples": [round(s, 3) for s in raw_s]},
        "ratio": round(statistics.median(orca_s) / statistics.median(raw_s), 3),
        # Each round's orca deploy against the baseline run just before it (issue 17: every run of 5).
        "ratio_per_round": [round(o / r, 3) for o, r in zip(orca_s, raw_s, strict=True)],
        "orca_engine_started_s": {
            "median": round(statistics.median(engine_s), 3) if engine_s else None,
            "samples": [round(s, 3) for s in engine_s],
        },
        "orca_cleanup_s": [round(r["cleanup_s"], 3) for r in orca],
        "docker_cleanup_s": [round(r["cleanup_s"], 3) for r in raw],
        "parallel": PARALLEL,
        **(
            {
                "docker_run_agent_flags_s": {
                    "median": round(statistics.median([r["seconds"] for r in flagged]), 3),
                    "samples": [round(r["seconds"], 3) for r in flagged],
                    "flags": " ".join(AGENT_FLAGS),
                }
            }
            if flagged
            else {}
        ),
        "box": box_load(load0),
    }
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
