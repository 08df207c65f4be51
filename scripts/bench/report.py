"""Turn the JSON lines of `scripts/bench/run-all.sh` into `docs/benchmarks.md`.

    report.py --collect-meta META.json [--load-start L] [--load-end L] [--started-at T] [--invocation CMD]
    report.py --jsonl RUN.jsonl [--meta META.json] --out docs/benchmarks.md

Every figure is printed next to the baseline its benchmark measured in the same run, with the machine
(which is stated, not assumed: a shared 2-core box here), the date, the command to reproduce, and a
Goals table that compares the figures to the goals of issues 2, 3, 5, 6, 10, 12, 15 and 17.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# --- machine ---------------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def collect_meta(args: argparse.Namespace) -> dict[str, Any]:
    mem_kb = None
    cpu_model = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    etcd = _run(["etcd", "--version"])
    return {
        "started_at": args.started_at,
        "finished_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gib": None if mem_kb is None else round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "pysyncobj": _version("pysyncobj"),
        "aiohttp": _version("aiohttp"),
        "docker": _run(["docker", "version", "--format", "{{.Server.Version}}"]),
        "etcd": None if etcd is None else etcd.splitlines()[0].replace("etcd Version: ", ""),
        "load_start": args.load_start,
        "load_end": args.load_end if args.load_end is not None else round(os.getloadavg()[0], 2),
        "invocation": args.invocation,
        "quick": bool(int(args.quick)),
        "git": _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


# --- helpers ---------------------------------------------------------------------------------------


def g(d: Any, path: str, default: Any = None) -> Any:
    """d["a"]["b"]... for "a.b...", `default` when any step is missing."""
    for part in path.split("."):
        if isinstance(d, dict) and part in d:
            d = d[part]
        else:
            return default
    return d


def f(v: Any, unit: str = "", nd: int | None = None) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if nd is not None:
            s = f"{v:,.{nd}f}"
        elif isinstance(v, int) or float(v).is_integer() and abs(v) >= 100:
            s = f"{int(v):,}"
        else:
            s = f"{v:,.3g}" if abs(v) < 100 else f"{v:,.1f}"
        return s + unit
    return str(v) + unit


def ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return out + [""]


def command_of(rec: dict[str, Any]) -> str:
    cmd = g(rec, "_run.command", "")
    py = str(ROOT / ".venv/bin/python")
    return cmd.replace(py, ".venv/bin/python")


# --- sections --------------------------------------------------------------------------------------


def sec_raft_writes(r: dict[str, Any], etcd: dict[str, Any] | None) -> list[str]:
    o, raw = r.get("orca", {}), r.get("raw_pysyncobj", {})
    rows = [
        ["orca API (3 masters, via HTTP to the leader)", f(o.get("writes_per_s")), f(o.get("p50_ms"), " ms"),
         f(o.get("p99_ms"), " ms"), f(o.get("errors")), "1.00"],
        ["baseline: raw PySyncObj, same SyncObjConf (no HTTP)", f(raw.get("writes_per_s")), f(raw.get("p50_ms"), " ms"),
         f(raw.get("p99_ms"), " ms"), f(raw.get("errors")), f(ratio(raw.get("writes_per_s"), o.get("writes_per_s")), "×", 2)],
    ]
    same_run = r.get("etcd")  # raft_writes.py runs etcd itself, alternating rounds with orca
    ew = same_run or (g(etcd, "writes") if etcd else None)
    high = r.get("orca_high")
    if high:
        rows.append([f"orca API at {high.get('clients')} clients", f(high.get("writes_per_s")),
                     f(high.get("p50_ms"), " ms"), f(high.get("p99_ms"), " ms"), f(high.get("errors")),
                     f(ratio(high.get("writes_per_s"), o.get("writes_per_s")), "×", 2)])
    if ew:
        rows.append([f"baseline: etcd {g(etcd, 'etcd_version', '')} 3 members, HTTP/JSON gateway, same client shape"
                     + (", same run (alternating rounds)" if same_run else ""),
                     f(ew.get("writes_per_s")), f(ew.get("p50_ms"), " ms"), f(ew.get("p99_ms"), " ms"),
                     f(ew.get("errors")), f(ratio(ew.get("writes_per_s"), o.get("writes_per_s")), "×", 2)])
    out = [f"{r.get('clients')} concurrent keep-alive clients, {f(r.get('seconds'))} s measured "
           f"(`POST /api/v1/services/bench/scale` with an Idempotency-Key, straight to the leader).", ""]
    out += table(["system", "writes/s", "p50", "p99", "errors", "writes/s vs orca"], rows)
    out.append(f"orca / raw PySyncObj: **{f(r.get('ratio'), '', 3)}**"
               + (f"; orca / etcd: **{f(ratio(o.get('writes_per_s'), ew.get('writes_per_s')), '', 3)}**" if ew else "")
               + f". CPU during the window (% of one core): orca {o.get('cpu_pct')}, raw {raw.get('cpu_pct')}"
               + (f", etcd {ew.get('cpu_pct')}" if ew and ew.get("cpu_pct") else "") + ".")
    out.append("")
    sweep = r.get("sweep")
    if sweep:
        out.append("**How API write latency grows with clients** (orca only, shorter windows, same cluster):")
        out.append("")
        out += table(["clients", "writes/s", "p50", "p99", "errors", "leader CPU %"],
                     [[c, f(s.get("writes_per_s")), f(s.get("p50_ms"), " ms"), f(s.get("p99_ms"), " ms"),
                       f(s.get("errors")), f(g(s, "cpu_pct.leader"))] for c, s in sweep.items()])
    return out


def sec_failover(r: dict[str, Any], etcd: dict[str, Any] | None) -> list[str]:
    rows = [["orca (SDK write via any master)", f(g(r, "failover_s.median"), " s"), f(g(r, "failover_s.max"), " s"),
             f(r.get("missed")), " ".join(f(s) for s in r.get("samples", []))]]
    if r.get("elected_s"):
        rows.append(["orca: a survivor reports itself leader (health poll)", f(g(r, "elected_s.median"), " s"),
                     f(g(r, "elected_s.max"), " s"), "", " ".join(f(s) for s in r.get("elected_samples", []))])
    for key, label in (("raw_pysyncobj", "baseline: raw PySyncObj, orca's SyncObjConf"),
                       ("raw_pysyncobj_conn_timeout_1e6_retry_0.1",
                        "diagnosis: raw PySyncObj, connectionTimeout 1e6, connectionRetryTime 0.1")):
        b = (r.get("baseline") or {}).get(key)  # not g(): the key has a dot in it
        if b:
            missed = b.get("missed", sum(1 for s in b.get("samples", []) if s is None))
            rows.append([label, f(g(b, "failover_s.median"), " s"), f(g(b, "failover_s.max"), " s"),
                         f(missed), " ".join(f(s) for s in b.get("samples", []))])
    ef = g(etcd, "failover") if etcd else None
    if ef:
        rows.append([f"baseline: etcd {g(etcd, 'etcd_version', '')} (defaults: heartbeat 100 ms, election 1 s)",
                     f(g(ef, "failover_s.median"), " s"), f(g(ef, "failover_s.max"), " s"), f(ef.get("missed")),
                     " ".join(f(s) for s in ef.get("samples", []))])
    out = [f"kill -9 of the leader under a write load -> first acknowledged write sent after the kill; "
           f"{r.get('rounds')} rounds (the killed member restarted between rounds).", ""]
    out += table(["system", "median", "max", "missed (>10 s)", "samples (s)"], rows)
    out.append(f"Spurious elections (term change while a killed master rejoined or a follower restarted): "
               f"**{f(r.get('spurious_elections'))}**; leader term increase per forced failover: "
               f"{r.get('failover_term_increase')}; rejoin: {r.get('rejoin_term_increase')}; follower restarts: "
               f"{r.get('follower_restart_term_increase')}. Writes {f(r.get('writes'))}, write errors "
               f"{f(r.get('write_errors'))}, replicas converged: {f(g(r, 'replicas_converged.converged'))}.")
    for key, raw in (r.get("baseline") or {}).items():
        if isinstance(raw, dict):
            out.append(f"`{key}`: spurious elections {f(raw.get('spurious_elections'))}, term increase per "
                       f"failover {raw.get('failover_term_increase')}.")
    if g(r, "baseline.note"):
        out.append(f"Note from the benchmark: {g(r, 'baseline.note')}.")
    out.append("")
    return out


def sec_scheduler(r: dict[str, Any]) -> list[str]:
    b = r.get("baseline", {})
    out = table(["what", "replicas", "nodes", "seconds", "placements/s"], [
        ["orca `compute_plan` (best pass)", f(r.get("replicas")), f(r.get("nodes")), f(r.get("seconds")),
         f(r.get("placements_per_s"))],
        [f"baseline: {b.get('what')}", f(b.get("replicas")), f(b.get("nodes")), f(b.get("seconds")),
         f(b.get("placements_per_s"))],
    ])
    sc = r.get("scaling") or {}
    if sc:
        out.append("**Scheduler time by cluster size** (10,000 replicas, 100 services, best pass):")
        out.append("")
        out += table(["nodes", "seconds", "placements/s"],
                     [[f(int(n)), f(s), f(round(10000 / s) if s else None)] for n, s in sc.items()])
    return out


def sec_scheduler_e2e(r: dict[str, Any]) -> list[str]:
    b = r.get("baseline", {})
    out = [f"{f(r.get('nodes'))} simulated agents (heartbeating every second through the API), one deploy of "
           f"{f(r.get('replicas'))} replicas to a real three-master cluster.", ""]
    out += table(["figure", "value", "baseline (same run)"], [
        ["deploy call returned", f(r.get("deploy_call_s"), " s"), ""],
        ["all placements committed", f(r.get("committed_s"), " s"), ""],
        ["placements/s committed", f(r.get("placements_per_s_committed")),
         f"pure `compute_plan`: {f(b.get('placements_per_s'))}/s ({f(b.get('seconds'))} s)"],
        ["all replicas dispatched to agents", f(r.get("dispatched_s"), " s"), ""],
        ["placements/s dispatched", f(r.get("placements_per_s_dispatched")), ""],
        ["all replicas reported running", f(r.get("reported_running_s"), " s"), ""],
        ["**leader RSS** (everything running)", f(r.get("leader_rss_mb"), " MB"), ""],
        ["all masters' RSS", ", ".join(f"{k} {v} MB" for k, v in (r.get("all_master_rss_mb") or {}).items()), ""],
        ["steady state: heartbeats/s", f(g(r, "steady.heartbeats_per_s")), ""],
        ["steady state: CPU %", str(g(r, "steady.cpu_pct")), ""],
        ["leader term change during the run", f(r.get("term_change")), ""],
        ["dispatcher pushes / failures", f"{f(g(r, 'dispatcher.pushes'))} / {f(g(r, 'dispatcher.push_failures'))}", ""],
    ])
    return out


def sec_deploy(r: dict[str, Any]) -> list[str]:
    rows = [
        [f"orca: deploy {r.get('replicas')} replicas -> all running", f(g(r, "orca_s.median"), " s"),
         " ".join(f(s) for s in g(r, "orca_s.samples", []))],
        [f"baseline: {r.get('replicas')} × `docker run -d`, {r.get('parallel')} in parallel",
         f(g(r, "docker_run_s.median"), " s"), " ".join(f(s) for s in g(r, "docker_run_s.samples", []))],
        ["orca: engine says the last container started", f(g(r, "orca_engine_started_s.median"), " s"),
         " ".join(f(s) for s in g(r, "orca_engine_started_s.samples", []))],
    ]
    out = table(["what", "median", "samples (s)"], rows)
    out.append(f"orca / docker run: **{f(r.get('ratio'), '×', 2)}**.")
    out.append("")
    return out


def sec_node_loss(r: dict[str, Any]) -> list[str]:
    rows = [[k, f(g(r, f"{k}.median"), " s"), f(g(r, f"{k}.max"), " s"), " ".join(f(s) for s in g(r, f"{k}.samples", []))]
            for k in ("down_detected_s", "placed_s", "rescheduled_s", "rejoin_reconciled_s")]
    out = [f"SIGKILL of one of two agents; {r.get('replicas')} replicas; heartbeat {r.get('heartbeat_s')} s, "
           f"node lease TTL {r.get('lease_ttl_s')} s (defaults). `rescheduled_s` is the figure.", ""]
    out += table(["phase (from the kill)", "median", "max", "samples"], rows)
    out.append(f"Baseline: {g(r, 'baseline.note')}")
    out.append("")
    return out


def sec_proxy(r: dict[str, Any]) -> list[str]:
    d, p = r.get("direct", {}), r.get("proxy", {})
    pd, pp = g(r, "paced.direct", {}), g(r, "paced.proxy", {})
    out = [f"{r.get('connections')} connections, upstream {r.get('upstream')}, {f(r.get('seconds'))} s per target "
           f"in {r.get('rounds')} alternating rounds.", ""]
    out += table(["target", "requests/s", "p50", "p99", "errors"], [
        ["baseline: straight to the replica", f(d.get("rps")), f(d.get("p50_ms"), " ms"), f(d.get("p99_ms"), " ms"), f(d.get("errors"))],
        ["through orca's ingress proxy", f(p.get("rps")), f(p.get("p50_ms"), " ms"), f(p.get("p99_ms"), " ms"), f(p.get("errors"))],
        [f"paced at {f(g(r, 'paced.rate'))}/s: direct", f(pd.get("rps")), f(pd.get("p50_ms"), " ms"), f(pd.get("p99_ms"), " ms"), f(pd.get("errors"))],
        [f"paced at {f(g(r, 'paced.rate'))}/s: proxy", f(pp.get("rps")), f(pp.get("p50_ms"), " ms"), f(pp.get("p99_ms"), " ms"), f(pp.get("errors"))],
    ])
    out.append(f"proxy / direct requests/s: **{f(r.get('ratio_rps'), '×', 2)}**; p99 added at saturation "
               f"**{f(r.get('p99_added_ms'), ' ms')}**, paced p50/p99 added {f(g(r, 'paced.p50_added_ms'), ' ms')} / "
               f"{f(g(r, 'paced.p99_added_ms'), ' ms')}; proxy CPU {f(p.get('proxy_cpu_us_per_req'), ' µs')}/request.")
    out.append("")
    return out


def sec_mesh(r: dict[str, Any]) -> list[str]:
    h, b, c = r.get("http", {}), r.get("tcp_bytes", {}), r.get("tcp_connections", {})
    out = [f"{r.get('connections')} connections, HTTP upstream {r.get('upstream')}, TCP upstream an asyncio echo "
           f"server; {f(r.get('seconds'))} s per target and measure in {r.get('rounds')} alternating rounds; "
           "mesh / direct is the median of the rounds' ratios.", ""]
    out += table(["measure", "straight to the replica", "through the mesh", "mesh / direct"], [
        ["HTTP requests/s", f(g(h, "direct.rps")), f(g(h, "mesh.rps")), f(h.get("ratio_rps"), "×", 2)],
        ["HTTP p99", f(g(h, "direct.p99_ms"), " ms"), f(g(h, "mesh.p99_ms"), " ms"), ""],
        ["TCP MB/s (64 KiB echoes)", f(g(b, "direct.mb_s")), f(g(b, "mesh.mb_s")), f(b.get("ratio"), "×", 2)],
        ["TCP connections/s", f(g(c, "direct.conn_s")), f(g(c, "mesh.conn_s")), f(c.get("ratio"), "×", 2)],
    ])
    out.append("")
    return out


def sec_ingress(r: dict[str, Any]) -> list[str]:
    """Issue 12: the ingress on HAProxy, two upstreams, and the route-change latency."""
    out: list[str] = []
    for kind, what in (("busybox", "busybox httpd (a new connection per request)"),
                       ("web", "orca-test/web (Go's HTTP/1.1 server, keep-alive)")):
        rec = r.get(kind)
        if not isinstance(rec, dict):
            continue
        out.append(f"Upstream {what}:")
        out.append("")
        out += [line.replace("orca's ingress proxy", "the ingress (HAProxy)") for line in sec_proxy(rec)]
    rc = r.get("route_change") or {}
    out.append(f"Route changes ({f(rc.get('changes'))}: a replica added, then removed, alternately) under "
               f"{f(rc.get('load_rps'))} requests/s: live (HAProxy's new worker serving) after "
               f"{f(g(rc, 'settled_ms.p50'), ' ms')} median, {f(g(rc, 'settled_ms.max'), ' ms')} at most; the added "
               f"replica's first answer after {f(g(rc, 'first_seen_ms.p50'), ' ms')} median "
               f"({f(g(rc, 'first_seen_ms.max'), ' ms')} max); {f(rc.get('failed'))} of {f(rc.get('requests'))} "
               "requests failed.")
    out.append("")
    return out


def sec_drain(r: dict[str, Any]) -> list[str]:
    out = [f"Drain of a node running {r.get('replicas')} replicas (max_parallel {r.get('max_parallel')}) until all run "
           "on the other node, vs the engine starting the same number of containers.", ""]
    out += table(["what", "median", "samples (s)"], [
        ["orca: drain -> all replicas running elsewhere", f(g(r, "drain_s.median"), " s"),
         " ".join(f(s) for s in g(r, "drain_s.samples", []))],
        [f"baseline: {r.get('replicas')} × `docker run -d`, 4 in parallel", f(g(r, "docker_run_s.median"), " s"),
         " ".join(f(s) for s in g(r, "docker_run_s.samples", []))],
    ])
    out.append(f"drain / docker run: **{f(r.get('ratio'), '×', 2)}**; fewest running during each drain: "
               f"{r.get('min_running_during_drain')} (of {r.get('replicas')}); moved: {r.get('moved_to_other_node')}.")
    out.append("")
    return out


def sec_durability(r: dict[str, Any]) -> list[str]:
    out = [f"Raft writes ({r.get('clients')} clients, {r.get('seconds')} s per run, modes alternated) with `raft.fsync = "
           "true` (journal flushed on a majority before a write is acknowledged, the default) and `false` (PySyncObj "
           f"as shipped), fresh cluster per run, data on {r.get('filesystem')}.", ""]
    rows = []
    for mode, label in (("fsync", "fsync = true"), ("nofsync", "fsync = false")):
        m = r.get(mode) or {}
        fl = m.get("flush_syscalls") or {}
        rows.append([label, f(m.get("writes_per_s"), "/s"), f(m.get("p50_ms"), " ms"), f(m.get("p99_ms"), " ms"),
                     m.get("errors"), f(g(fl, "leader.per_write")), f(g(fl, "follower.per_write"))])
    out += table(["mode", "writes", "p50", "p99", "errors", "flush syscalls per write, leader",
                  "follower"], rows)
    out.append(f"fsync / no fsync throughput: **{f(r.get('fsync_throughput_ratio'), '×', 2)}**. Without fsync an "
               "acknowledged entry may stay only in the page cache for up to "
               f"{f(r.get('dirty_expire_s'), ' s')} (`vm.dirty_expire_centisecs`).")
    out.append("")
    return out


def sec_add_master(r: dict[str, Any]) -> list[str]:
    out = [f"A fresh master (empty disk) added with `orca cluster add-master` to three masters holding "
           f"{f(r.get('services'))} services, log compaction low so it catches up from the leader's snapshot; "
           f"{r.get('rounds')} round(s). Baseline: a follower restarted with its disk (kill -9, start).", ""]
    out += table(["what", "median", "max"], [
        ["add-master request -> committed", f(g(r, "commit_s.median"), " s"), f(g(r, "commit_s.max"), " s")],
        ["add-master request -> new master caught up", f(g(r, "caught_up_s.median"), " s"),
         f(g(r, "caught_up_s.max"), " s")],
        ["baseline: follower restart -> caught up (includes process start)",
         f(g(r, "baseline.restart_caught_up_s.median"), " s"), f(g(r, "baseline.restart_caught_up_s.max"), " s")],
    ])
    out.append("")
    return out


def sec_restore(r: dict[str, Any]) -> list[str]:
    out = [f"Backup and restore of {f(r.get('services'))} services (three masters, default timing, no agents): "
           f"a {f(r.get('snapshot_bytes'))}-byte snapshot file ({f(r.get('state_bytes'))} bytes of state, "
           f"{f(r.get('chunks'))} chunks). Online: every data directory deleted, a fresh cluster started, `orca snapshot "
           "restore`. Offline (`--offline`, a cluster that cannot start): every master stopped, the file written into "
           "each data directory, the masters started.", ""]
    out += table(["what", "time"], [
        ["save (barrier, pack, compress, transfer, verify)", f(r.get("save_s"), " s")],
        ["online restore: first request -> committed", f(r.get("restore_s"), " s")],
        ["online restore: first request -> every master holds the services", f(r.get("all_masters_s"), " s")],
        ["offline restore: write three data directories", f(r.get("offline_write_s"), " s")],
        ["offline restore: start -> every master holds the services", f(r.get("offline_all_masters_s"), " s")],
        ["baseline: filling the cluster through the API", f(r.get("fill_s"), " s")],
    ])
    out.append(f"Restored services: {f(r.get('restored_services'))}; elections during the online restore: "
               f"{f(r.get('elections_during_restore'))}.")
    out.append("")
    return out


def sec_generic(r: dict[str, Any]) -> list[str]:
    """A benchmark this report has no section for: its top-level figures as they are."""
    rows = [[k, f"`{json.dumps(v)}`"] for k, v in r.items() if k not in ("bench", "_run", "box")]
    return table(["field", "value"], rows)


def sec_etcd(r: dict[str, Any]) -> list[str]:
    if r.get("skipped"):
        return [f"Skipped: {r['skipped']}", ""]
    w, fo = r.get("writes", {}), r.get("failover", {})
    out = [f"etcd {r.get('etcd_version')}, 3 members on 127.0.0.1, {r.get('config')}. Writes: {r.get('clients')} "
           f"keep-alive connections (aiohttp) `POST /v3/kv/put` to the leader for {f(r.get('seconds'))} s. "
           f"Failover: kill -9 the leader, first acknowledged put through any survivor, {fo.get('rounds')} rounds.", ""]
    out += table(["figure", "value"], [
        ["writes/s", f(w.get("writes_per_s"))], ["p50 / p99", f"{f(w.get('p50_ms'), ' ms')} / {f(w.get('p99_ms'), ' ms')}"],
        ["errors", f(w.get("errors"))], ["CPU % (leader, client)", str(w.get("cpu_pct"))],
        ["failover median / max", f"{f(g(fo, 'failover_s.median'), ' s')} / {f(g(fo, 'failover_s.max'), ' s')}"],
        ["failover samples", " ".join(f(s) for s in fo.get("samples", []))],
    ])
    return out


# --- goals -----------------------------------------------------------------------------------------


def goals(by: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(issue: str, goal: str, value: Any, ok: bool | None, note: str = "") -> None:
        verdict = "not measured" if ok is None else ("**met**" if ok else "**missed**")
        rows.append([issue, goal, value, verdict, note])

    rw, fo, et = by.get("raft_writes", {}), by.get("failover", {}), by.get("etcd_baseline", {})
    med, mx = g(fo, "failover_s.median"), g(fo, "failover_s.max")
    add("2", "Failover median ≤ 0.5 s", f(med, " s"), None if med is None else med <= 0.5,
        f"{f(fo.get('rounds'))} leader kills (failover.py)")
    sp = fo.get("spurious_elections")
    stable = [g(rw, "orca.leader_stable")] + [s.get("leader_stable") for s in (rw.get("sweep") or {}).values()]
    stable_ok = all(x is True for x in stable if x is not None) if any(x is not None for x in stable) else None
    ok = None if sp is None else (sp == 0 and stable_ok is not False)
    add("2", "No spurious leader change during a write load", f"{f(sp)} spurious elections; leader stable through "
        f"the write benches: {f(stable_ok)}", ok,
        "failover.py rejoins/follower restarts and the raft_writes windows (several short loads, not one 60 s load)")
    ow, ew = g(rw, "orca.writes_per_s"), g(rw, "etcd.writes_per_s", g(et, "writes.writes_per_s"))
    rr = ratio(ow, ew)
    add("2", "API writes/s ≥ 0.8× 3-member etcd, same client, same run",
        f"{f(ow)}/s vs etcd {f(ew)}/s = {f(rr, '×', 2)}" if rr is not None else f"{f(ow)}/s (etcd: n/a)",
        None if rr is None else rr >= 0.8, f"32 clients; raw PySyncObj {f(g(rw, 'raw_pysyncobj.writes_per_s'))}/s")
    add("2", "Bad input: 4xx with the envelope, never 5xx", "—", None, "covered by the test suite, not a benchmark")
    r17, p17, sc = rw.get("ratio_etcd"), rw.get("p50_vs_etcd"), rw.get("scaling")
    add("17", "API writes at 32 clients ≥ 1.0× 3-member etcd 3.4 (same run), p50 ≤ etcd's",
        f"{f(ow)}/s vs etcd {f(g(rw, 'etcd.writes_per_s'))}/s = {f(r17, '×', 2)}; p50 {f(g(rw, 'orca.p50_ms'), ' ms')} "
        f"vs {f(g(rw, 'etcd.p50_ms'), ' ms')}", None if r17 is None or p17 is None else (r17 >= 1.0 and p17 <= 1.0),
        f"medians of {len(g(rw, 'orca.rounds', []))} alternating rounds (raft_writes.py)")
    add("17", "API writes keep rising from 32 to 128 clients (≥ 1.2×)",
        f"{f(g(rw, 'orca_high.writes_per_s'))}/s at {f(g(rw, 'orca_high.clients'))} clients vs {f(ow)}/s = "
        f"{f(sc, '×', 2)}", None if sc is None else sc >= 1.2)
    tl = by.get("tls_api", {})
    add("11", "API writes with TLS ≥ 0.85× plain HTTP (same run)",
        f"{f(g(tl, 'tls.writes_per_s'))}/s vs {f(g(tl, 'plain.writes_per_s'))}/s = {f(tl.get('ratio'), '×', 2)}",
        None if tl.get("ratio") is None else tl["ratio"] >= 0.85, "tls_api.py, alternating rounds")
    dp = by.get("deploy", {})
    add("3", "Deploy 20 replicas to running ≤ 1.3× the raw engine", f"{f(g(dp, 'orca_s.median'), ' s')} vs "
        f"{f(g(dp, 'docker_run_s.median'), ' s')} = {f(dp.get('ratio'), '×', 2)}",
        None if dp.get("ratio") is None else dp["ratio"] <= 1.3)
    dr = by.get("drain", {})
    mins, reps, par = dr.get("min_running_during_drain"), dr.get("replicas"), dr.get("max_parallel")
    floor_ok = None if not mins or reps is None or par is None or None in mins else min(mins) >= reps - par
    add("4", "Zero moments below N - max_parallel during drain", f"fewest running {mins} of {f(reps)} "
        f"(floor {f(None if reps is None or par is None else reps - par)})", floor_ok,
        "drain.py samples every 100 ms; rolling updates are not benchmarked here")
    add("4", "Drain of 10 replicas ≤ 2× starting 10 containers on the engine",
        f"{f(g(dr, 'drain_s.median'), ' s')} vs {f(g(dr, 'docker_run_s.median'), ' s')} = {f(dr.get('ratio'), '×', 2)}",
        None if dr.get("ratio") is None else dr["ratio"] <= 2, f"max_parallel {f(par)}, min_healthy_s "
        f"{f(dr.get('min_healthy_s'))}; per round {dr.get('ratio_per_round')}")
    for also in dr.get("also") or []:
        add("17", f"Drain of 10 replicas at max_parallel {also.get('max_parallel')} (reported, no goal)",
            f"{f(g(also, 'drain_s.median'), ' s')} = {f(also.get('ratio'), '×', 2)} the engine", None,
            f"fewest running {also.get('min_running_during_drain')}")
    dps = [r for r in (dp.get("ratio_per_round") or []) if r is not None]
    add("17", "Deploy 20 replicas to running ≤ 1.2× raw docker (4 in parallel), every run",
        f"per round {dps}" if dps else f(dp.get("ratio"), "×", 2),
        None if not dps else max(dps) <= 1.2, f"{len(dps)} rounds")
    hb = by.get("heartbeat_delay", {})
    add("17", "No node marked lost while its heartbeats are delayed 0-1 s",
        f"{f(hb.get('not_ready_samples'))} moments not ready, {f(hb.get('node_down_events'))} node_down in "
        f"{f(hb.get('seconds'))} s", hb.get("met"), "delay made by a relay in user space: this kernel has no netem")
    nl = by.get("node_loss", {})
    nm, nx = g(nl, "rescheduled_s.median"), g(nl, "rescheduled_s.max")
    add("3", "Node loss -> replicas running elsewhere ≤ 8 s", f"median {f(nm, ' s')}, max {f(nx, ' s')}",
        None if nm is None else nm <= 8, "Swarm ~15 s, Nomad ≥ 20 s (issue 3; no Swarm/Nomad here)")
    add("17", "Node loss -> replicas running elsewhere ≤ 4 s at defaults", f"median {f(nm, ' s')}, max {f(nx, ' s')}",
        None if nx is None else nx <= 4, "SIGKILL of the agent: the leader's probe finds it gone after 1.5 s of silence")
    sc = by.get("scheduler", {})
    add("3", "Scheduler ≥ 20,000 placements/s pure", f(sc.get("placements_per_s"), "/s"),
        None if sc.get("placements_per_s") is None else sc["placements_per_s"] >= 20000,
        f"naive scan baseline {f(g(sc, 'baseline.placements_per_s'))}/s")
    se = by.get("scheduler_e2e", {})
    pc = se.get("placements_per_s_committed")
    add("3", "Scheduler ≥ 4,000 placements/s committed end to end", f(pc, "/s"),
        None if pc is None else pc >= 4000, f"{f(se.get('nodes'))} nodes / {f(se.get('replicas'))} replicas; Nomad C1M 3,750/s")
    add("5", "20 leader kills: 0 lost, 0 duplicated", "—", None,
        "lost/duplicated are checked by scripts/failover-test.sh (the drill), not by these benchmarks")
    add("5", "Failover median ≤ 0.5 s, max ≤ 2 s", f"median {f(med, ' s')}, max {f(mx, ' s')}",
        None if med is None or mx is None else (med <= 0.5 and mx <= 2), f"{f(fo.get('rounds'))} kills (not 20; the drill does 20)")
    add("5", "Partition: minority acknowledges nothing, majority writable ≤ 2 s", "—", None, "chaos suite (tests/chaos/)")
    rss = se.get("leader_rss_mb")
    full_size = (se.get("nodes") or 0) >= 1000 and (se.get("replicas") or 0) >= 10000
    add("5", "Master RSS ≤ 150 MB at 1,000 nodes / 10,000 allocations", f(rss, " MB"),
        None if rss is None or not full_size else rss <= 150, f"{f(se.get('nodes'))} nodes / {f(se.get('replicas'))} allocations")
    me = by.get("mesh", {})
    for key, label, field in (("http", "HTTP requests/s", "ratio_rps"), ("tcp_bytes", "TCP bytes/s", "ratio"),
                              ("tcp_connections", "TCP connections/s", "ratio")):
        value = g(me, f"{key}.{field}")
        add("12", f"Mesh ≥ 0.8× direct, {label}", f(value, "×", 2), None if value is None else value >= 0.8,
            f"{f(me.get('connections'))} connections, service to service through the agent's mesh (nftables DNAT)")
    px = by.get("proxy", {})
    pr, pa = px.get("ratio_rps"), px.get("p99_added_ms")
    add("6", "Proxy ≥ 0.7× direct requests/s at 32 connections", f(pr, "×", 2), None if pr is None else pr >= 0.7,
        f"{f(g(px, 'proxy.rps'))} vs {f(g(px, 'direct.rps'))} req/s")
    pp = g(px, "paced.p99_added_ms")
    add("6", "Proxy p99 added ≤ 2 ms at 32 connections", f"{f(pa, ' ms')} saturated; paced {f(pp, ' ms')}",
        None if pa is None else (pa <= 2 and (pp is None or pp <= 2)),
        "met only if both are ≤ 2 ms: saturated p99 is mostly queueing (a negative figure means the direct run "
        "had the worse tail), the paced run shows the latency the proxy itself adds")
    add("6", "Autoscaler reacts within one window", "—", None, "tests, not a benchmark")
    bq = by.get("blocking", {})
    nm = g(bq, "notice_ms.median")
    add("15", "A watcher sees a write ≤ 50 ms (median) after its acknowledgement", f"median {f(nm, ' ms')}, "
        f"p90 {f(g(bq, 'notice_ms.p90'), ' ms')}", None if nm is None else nm <= 50,
        "blocking queries on a follower (blocking.py); the 0.5 s polling before: 250 ms on average")
    du = by.get("durability", {})
    dr_ratio = du.get("fsync_throughput_ratio")
    add("10", "fsync cost measured in the same run (fsync is the default)", f"fsync / no fsync throughput "
        f"{f(dr_ratio, '×', 2)}: {f(g(du, 'fsync.writes_per_s'))}/s vs {f(g(du, 'nofsync.writes_per_s'))}/s",
        None if dr_ratio is None else True, "a measurement, no target (durability.py)")
    am = by.get("add_master", {})
    cu = g(am, "caught_up_s.median")
    add("10", "add-master time measured", f"caught up in {f(cu, ' s')} (median) with {f(am.get('services'))} services; "
        f"follower restart {f(g(am, 'baseline.restart_caught_up_s.median'), ' s')}", None if cu is None else True,
        "a measurement, no target (add_master.py)")
    rs = by.get("restore", {})
    full = (rs.get("services") or 0) >= 10000
    ok = None if rs.get("restore_s") is None or not full else rs.get("restored_services") == rs.get("services")
    add("10", "Restore time for 10,000 services measured, nothing missing",
        f"online {f(rs.get('all_masters_s'), ' s')}, offline {f(rs.get('offline_all_masters_s'), ' s')} for "
        f"{f(rs.get('restored_services'))} of {f(rs.get('services'))} services", ok,
        "to every master holding them (restore.py)")
    ig = by.get("ingress", {})
    for kind in ("busybox", "web"):
        times, sat, paced = g(ig, f"{kind}.ratio_rps"), g(ig, f"{kind}.p99_added_ms"), g(ig, f"{kind}.paced.p99_added_ms")
        add("12", f"Ingress ≥ 0.9× direct requests/s at 32 connections ({kind})", f(times, "×", 2),
            None if times is None else times >= 0.9, f"{f(g(ig, f'{kind}.proxy.rps'))} vs {f(g(ig, f'{kind}.direct.rps'))} req/s")
        add("12", f"Ingress p99 added ≤ 1 ms paced, ≤ 5 ms saturated ({kind})",
            f"{f(paced, ' ms')} paced; {f(sat, ' ms')} saturated",
            None if paced is None or sat is None else (paced <= 1 and sat <= 5))
    live = g(ig, "route_change.settled_ms.max")
    add("12", "Route change live ≤ 1 s after the push", f"max {f(live, ' ms')}", None if live is None else live <= 1000,
        f"median {f(g(ig, 'route_change.settled_ms.p50'), ' ms')}; {f(g(ig, 'route_change.failed'))} failed requests")
    sl = by.get("scale", {})
    at_scale = (sl.get("services") or 0) >= 10000 and (sl.get("nodes") or 0) >= 1000
    size = f"{f(sl.get('services'))} services / {f(sl.get('replicas'))} allocations / {f(sl.get('nodes'))} agents"
    srss = sl.get("leader_rss_mb")
    add("17", "Leader RSS ≤ 200 MB at 10,000 services, 30,000 allocations, 1,000 agents", f(srss, " MB"),
        None if srss is None or not at_scale else srss <= 200, size)
    pg = g(sl, "status_pages.p99_ms")
    add("17", "GET /api/v1/status page of 100: p99 ≤ 50 ms while agents heartbeat every second",
        f"p99 {f(pg, ' ms')}, p50 {f(g(sl, 'status_pages.p50_ms'), ' ms')}",
        None if pg is None or not at_scale else pg <= 50, size)
    lc = g(sl, "steady.cpu_pct.leader")
    add("17", "Leader below one core at steady state", f"{f(lc, ' %')} of one core, "
        f"{f(g(sl, 'steady.heartbeats_per_s'))} heartbeats/s", None if lc is None or not at_scale else lc < 100, size)
    return sorted(rows, key=lambda row: int(row[0]))  # stable: by issue, in the order above


# --- document --------------------------------------------------------------------------------------

SECTIONS = [
    ("raft_writes", "Raft writes through the API", "raft_writes.py"),
    ("failover", "Failover (kill -9 of the leader)", "failover.py"),
    ("scheduler", "Scheduler, pure", "scheduler.py"),
    ("scheduler_e2e", "Scheduler end to end (simulated agents) and master RSS", "scheduler_e2e.py"),
    ("deploy", "Deploy to running", "deploy.py"),
    ("node_loss", "Node loss", "node_loss.py"),
    ("proxy", "Ingress proxy", "proxy.py"),
    ("ingress", "Ingress on HAProxy (issue 12)", "ingress.py"),
    ("drain", "Node drain", "drain.py"),
    ("etcd_baseline", "etcd baseline", "etcd_baseline.py"),
    ("tls_api", "API writes: TLS against plain HTTP", "tls_api.py"),
    ("durability", "Durable acknowledgements (fsync cost)", "durability.py"),
    ("add_master", "Adding a master at runtime", "add_master.py"),
    ("blocking", "Blocking queries: a watcher on a follower", "blocking.py"),
    ("restore", "Backup and restore", "restore.py"),
    ("mesh", "Service mesh (service to service)", "mesh.py"),
    ("scale", "Scale: 10,000 services", "scale.py"),
]


def code_summary(records: list[dict[str, Any]]) -> str:
    """Which commit (and how many uncommitted files under orca/) each benchmark ran on."""
    groups: dict[str, list[str]] = {}
    for r in records:
        run = r.get("_run") or {}
        if "commit" not in run:
            continue
        dirty = run.get("uncommitted_orca_files") or []
        key = f"`{run['commit']}`" + (f" + uncommitted {', '.join(dirty)}" if dirty else "")
        groups.setdefault(key, []).append(str(r.get("bench")))
    if not groups:
        return "n/a"
    if len(groups) == 1:
        return next(iter(groups)) + " (all benchmarks)"
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + " — **the code changed during the run**"


def render(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    by = {r.get("bench"): r for r in records if not r.get("error")}
    failed = [r for r in records if r.get("error")]
    etcd = by.get("etcd_baseline")
    if etcd and etcd.get("skipped"):
        etcd = None
    L: list[str] = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Generated by `scripts/bench/run-all.sh` (JSON lines -> `scripts/bench/report.py`); do not edit by hand. "
             "Every figure sits next to a baseline measured **in the same run on the same machine**: "
             "compare them with each other, not with figures from another box.")
    L.append("")
    if meta.get("note"):
        L.append(f"> {meta['note']}")
        L.append("")
    if meta.get("quick"):
        L.append("> **This is a `--quick` smoke run**: shortened durations and rounds; the figures are indicative only.")
        L.append("")
    load_s, load_e = meta.get("load_start"), meta.get("load_end")
    L.append("## Machine and run")
    L.append("")
    L += table(["", ""], [
        ["date (UTC)", f"{meta.get('started_at')} → {meta.get('finished_at')}"],
        ["commit (HEAD when the report was written)", f"`{meta.get('git')}`"],
        ["code under test, per benchmark", code_summary(records)],
        ["CPUs (nproc)", f"{meta.get('nproc')} ({meta.get('cpu_model')})"],
        ["RAM", f"{meta.get('ram_gib')} GiB"],
        ["kernel / OS", f"{meta.get('kernel')} / {meta.get('os')}"],
        ["Python", meta.get("python")],
        ["pysyncobj / aiohttp", f"{meta.get('pysyncobj')} / {meta.get('aiohttp')}"],
        ["Docker engine", meta.get("docker") or "n/a"],
        ["etcd", meta.get("etcd") or "not installed"],
        ["load average (1 min) at start / end", f"{load_s} / {load_e}"],
    ])
    L.append(f"**This is a shared 2-core box** ({meta.get('nproc')} CPUs, other engineers' jobs running: the 1-minute "
             f"load average was {load_s} at the start and {load_e} at the end, i.e. more runnable work than cores). "
             "The benchmarks ran one at a time, but the load generator, the three masters (and the baseline's three "
             "processes) always share the same two cores, so absolute figures are low and noisy; the ratios to "
             "the same-run baselines are the meaningful part. Each benchmark's own load/CPU-pressure readings are "
             "in its JSON line below.")
    L.append("")
    L.append("Reproduce (from the repository root, with the venv and Docker image `orca-test/busybox`; "
             "`apt-get install etcd-server etcd-client` for the etcd baseline):")
    L.append("")
    L.append("```sh")
    L.append(meta.get("invocation") or "scripts/bench/run-all.sh")
    L.append("```")
    L.append("")
    L.append("## Goals")
    L.append("")
    L += table(["issue", "goal", "this run", "verdict", "notes"], goals(by))
    if failed:
        L.append("## Benchmarks that failed in this run")
        L.append("")
        for r in failed:
            L.append(f"- `{r.get('bench')}`: {r.get('error')} (`{command_of(r)}`)")
            for line in r.get("stderr_tail") or []:
                L.append(f"  - `{line[:300]}`")
        L.append("")
    renderers = {
        "raft_writes": lambda r: sec_raft_writes(r, etcd),
        "failover": lambda r: sec_failover(r, etcd),
        "scheduler": sec_scheduler,
        "scheduler_e2e": sec_scheduler_e2e,
        "scale": sec_scheduler_e2e,
        "deploy": sec_deploy,
        "node_loss": sec_node_loss,
        "proxy": sec_proxy,
        "ingress": sec_ingress,
        "etcd_baseline": sec_etcd,
        "drain": sec_drain,
        "durability": sec_durability,
        "add_master": sec_add_master,
        "restore": sec_restore,
        "mesh": sec_mesh,
    }
    known = {name for name, _, _ in SECTIONS}
    extra = [(str(r.get("bench")), f"{r.get('bench')}", f"{r.get('bench')}.py") for r in records
             if r.get("bench") not in known and not r.get("error")]
    for name, title, _script in SECTIONS + extra:
        r = by.get(name)
        if r is None:
            continue
        L.append(f"## {title}")
        L.append("")
        try:
            L += renderers.get(name, sec_generic)(r)
        except Exception as exc:  # noqa: BLE001 - a shape change must not lose the rest of the report
            L.append(f"(could not render: {exc!r}; see the JSON line below)")
            L.append("")
        box = r.get("box")
        L.append(f"Reproduce: `{command_of(r)}` — wall time {f(g(r, '_run.wall_s'), ' s')}"
                 + (f"; load during it {box.get('loadavg_1m')}" if isinstance(box, dict) and box.get("loadavg_1m") else "")
                 + ".")
        L.append("")
    L.append("## Raw results")
    L.append("")
    L.append("One JSON line per benchmark, as printed (plus `_run`: the command, exit status and wall time).")
    L.append("")
    L.append("<details><summary>JSON lines</summary>")
    L.append("")
    L.append("```json")
    for r in records:
        L.append(json.dumps(r, separators=(", ", ": ")))
    L.append("```")
    L.append("")
    L.append("</details>")
    L.append("")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collect-meta", type=Path, help="write the machine description to this file and exit")
    ap.add_argument("--load-start", type=float)
    ap.add_argument("--load-end", type=float)
    ap.add_argument("--started-at")
    ap.add_argument("--invocation", default="scripts/bench/run-all.sh")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--jsonl", type=Path)
    ap.add_argument("--meta", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    if args.collect_meta:
        args.collect_meta.write_text(json.dumps(collect_meta(args)))
        return 0
    if not args.jsonl:
        ap.error("--jsonl or --collect-meta")
    records = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip().startswith("{")]
    meta = json.loads(args.meta.read_text()) if args.meta and args.meta.exists() else collect_meta(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(records, meta))
    print(f"report: {len(records)} benchmarks -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
