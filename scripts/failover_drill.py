"""The failover drill: kill -9 the leader N times under write load and prove nothing was lost or doubled.

    .venv/bin/python scripts/failover_drill.py [--rounds N] [--cluster-dir DIR] [--clients 4] [--rate R]
    (or scripts/failover-test.sh with the same arguments)

Without --cluster-dir it builds its own three-master cluster (real `orca server` processes, default
tuning) on free 127.0.0.1 ports in a temporary directory, and removes it at the end (--keep keeps it;
on failure the tail of every master's log is printed first).

With --cluster-dir DIR it drills the masters whose configs are DIR/*.toml (files with an [agent] table
are skipped), running from the repository root as `scripts/bootstrap-cluster.sh` does, so relative
paths in the configs mean the same. A master is found running through its pid file: the first of
DIR/<node id>.pid, DIR/<config name>.pid and <data_dir>/../<node id>.pid (where bootstrap-cluster.sh
writes it) that names a live `orca server`; a master without one is started by the drill. Killed
masters are restarted by the drill (pid file rewritten, log appended to <node id>.log beside it) and
keep running afterwards; masters the drill had to start are stopped at the end, so the cluster is left
as it was found. The admin token is minted from the configs' cluster secret, one per client (the rate
limiter keys on the token); the default rate there (--rate 6 per client) stays under the default limit
of 600 requests per minute. The drill's services (replicas 0, so nothing runs) are stopped at the end
and stay in the state as `stopped` in projects `drill<run id><client>`.

Load: `--clients` writer threads, each deploying a new service per write with an Idempotency-Key and
retrying it with the same key until acknowledged (tests/chaos/workload.py: the same workload as the
chaos tests, whose checker, tests/chaos/history.py, judges the result). Each round: wait for an agreed
leader, let writes flow `--settle` seconds, SIGKILL the leader, measure kill -> first write acknowledged
by another master, restart the killed master and wait until it has caught up. At the end every master
is read back (local reads once they agree on the applied index, plus one consistent read).

With --replace (temporary cluster only) each round replaces the leader instead of restarting it, as an
operator replaces a master whose host died: SIGKILL it, delete its data directory, `orca cluster
remove-master` it, start a new master with the same id at new ports (empty disk, a config listing the
current members as peers) and `orca cluster add-master` it; the round ends once it has caught up from
the leader's snapshot. `replace_s` is add-master request -> caught up.

Output: one line per round, then one JSON line:
  {"rounds", "acked", "lost", "duplicated", "failover_s": {"median", "max"}, "spurious_elections", ...}
`duplicated` counts services applied more than once (a version above 1 — each retry carries its attempt
number, so a retry applied instead of replayed makes version 2 — or more than one deploy event).
`spurious_elections` counts term increases beyond one per forced kill (terms from /api/v1/health).
Exit status 1 if anything was lost or duplicated, a round did not fail over within 10 s, the masters did
not converge, or the checker found another violation; 2 on bad arguments or configs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "chaos")]

from history import History, applied_counts, check  # noqa: E402
from workload import EventCounter, Writers, first_ack_after, health, read_back, wait_caught_up  # noqa: E402

from orca.auth import mint_token, signing_key  # noqa: E402
from orca.client import ApiError, Client  # noqa: E402
from orca.config import ConfigError, load_master_config  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402

FAILOVER_LIMIT_S = 10.0


class OwnCluster:
    """A LocalCluster in a temporary directory."""

    def __init__(self, keep: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="orca-drill-"))
        self.keep = keep
        self.cluster = LocalCluster(self.dir / "cluster")
        self.urls = {m.node_id: m.url for m in self.cluster.masters}
        self.logs = {m.node_id: m.log for m in self.cluster.masters}

    def start_all(self) -> None:
        self.cluster.start()

    def kill(self, node_id: str) -> None:
        self.cluster.kill(self.cluster.by_id(node_id))

    def start(self, node_id: str) -> None:
        self.cluster.start([self.cluster.by_id(node_id)])

    def token(self, role: str, name: str) -> str:
        return self.cluster.token(role, name)

    def replace(self, node_id: str, admin: Client) -> str:
        """Replace the (dead) master `node_id` by a new one at new ports with an empty data directory;
        returns its URL once `add-master` is committed (it may still be catching up)."""
        old = self.cluster.by_id(node_id)
        self.cluster.kill(old)
        shutil.rmtree(self.cluster.root / node_id, ignore_errors=True)
        admin.remove_master(node_id)
        self.cluster.masters.remove(old)
        new = self.cluster.launch_new_master(node_id)
        admin.add_master(node_id, f"127.0.0.1:{new.raft_port}", new.url)
        self.cluster.masters.append(new)
        self.urls[node_id] = new.url
        return new.url

    def close(self, failed: bool) -> None:
        self.cluster.__exit__(None, None, None)
        if self.keep:
            print(f"drill: cluster directory kept: {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _alive_server(pid: int) -> bool:
    """A live (not zombie) process whose command line is an `orca server`: not a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and "orca" in cmdline and " server" in cmdline


class ConfigCluster:
    """The masters of DIR/*.toml (see the module docstring for pid files and what is left running)."""

    def __init__(self, directory: Path) -> None:
        self.configs: dict[str, Any] = {}
        self.pid_files: dict[str, Path] = {}
        self.pids: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for path in sorted(directory.glob("*.toml")):
            with open(path, "rb") as f:
                try:
                    if "agent" in tomllib.load(f):
                        continue
                except tomllib.TOMLDecodeError as exc:
                    raise ConfigError(f"{path}: {exc}") from None
            cfg = load_master_config(path)
            self.configs[cfg.node_id] = cfg
            candidates = [directory / f"{cfg.node_id}.pid", directory / f"{path.stem}.pid",
                          cfg.data_dir.parent / f"{cfg.node_id}.pid"]
            found = next((p for p in candidates if p.exists()), candidates[0])
            self.pid_files[cfg.node_id] = found
            pid = self._read_pid(found)
            if pid is not None:
                self.pids[cfg.node_id] = pid
        if len(self.configs) < 3:
            raise ConfigError(f"{directory}: {len(self.configs)} master config(s) in *.toml; the drill needs 3 or more")
        self.originally_running = set(self.pids)
        self.urls = {n: c.api_advertise for n, c in self.configs.items()}
        self.logs = {n: self.pid_files[n].with_name(f"{n}.log") for n in self.configs}
        secret = next(iter(self.configs.values())).cluster_secret
        self.key = signing_key(secret)

    @staticmethod
    def _read_pid(path: Path) -> int | None:
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive_server(pid) else None

    def start_all(self) -> None:
        for node_id in self.configs:
            if node_id not in self.pids:
                self.start(node_id)

    def start(self, node_id: str) -> None:
        with open(self.logs[node_id], "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "orca", "server", "--config", self.configs[node_id].path],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[node_id] = proc
        self.pids[node_id] = proc.pid
        self.pid_files[node_id].write_text(f"{proc.pid}\n")

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        pid = self.pids.pop(node_id, None)
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        proc = self.procs.pop(node_id, None)
        deadline = time.monotonic() + 10
        if proc is not None:
            proc.wait(10)
        else:  # not our child: its parent (or init) reaps it; wait until it is gone or a zombie
            while _alive_server(pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    def token(self, role: str, name: str) -> str:
        return mint_token(self.key, role=role, name=name, now=time.time())[0]

    def close(self, failed: bool) -> None:
        for node_id in list(self.pids):
            if node_id not in self.originally_running:
                self.kill(node_id, signal.SIGTERM)
                self.pid_files[node_id].unlink(missing_ok=True)


def wait_leader(urls: dict[str, str], timeout: float = 30.0, exclude: str | None = None) -> tuple[str, int]:
    """(leader id, term) once every master that answers agrees on one leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = {n: health(u, timeout=0.5) for n, u in urls.items()}
        answered = [v for v in views.values() if v is not None]
        claimed = [n for n, v in views.items() if v and v.get("is_leader")]
        if len(claimed) == 1 and claimed[0] != exclude and all(v.get("leader_id") == claimed[0] for v in answered):
            return claimed[0], max(int(v.get("term", 0)) for v in answered)
        time.sleep(0.05)
    raise TimeoutError(f"no agreed leader within {timeout:g} s")


def max_term(urls: dict[str, str]) -> int:
    return max((int(h.get("term", 0)) for u in urls.values() if (h := health(u)) is not None), default=0)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="failover-test.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="leader kills (default 20)")
    p.add_argument("--cluster-dir", type=Path, help="drill the masters of DIR/*.toml instead of a temporary cluster")
    p.add_argument("--clients", type=int, default=4, help="writer threads (default 4)")
    p.add_argument("--rate", type=float, help="writes per second per client (default 20; 6 with --cluster-dir)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of writes before each kill (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    p.add_argument("--replace", action="store_true",
                   help="replace the killed leader (wiped disk, new address) instead of restarting it")
    p.add_argument("--restore", action="store_true",
                   help="then a disaster-recovery round: save a snapshot under load, wipe every master's data "
                        "directory, restore into the fresh cluster, check every write acknowledged before the save")
    args = p.parse_args(argv)
    if args.replace and args.cluster_dir is not None:
        p.error("--replace runs on the drill's own temporary cluster only (it rewrites configs and deletes disks)")
    if args.restore and args.cluster_dir is not None:
        p.error("--restore wipes the masters' data directories: only on the drill's own cluster")
    if args.rounds < 1 or args.clients < 1 or (args.rate is not None and args.rate <= 0):
        p.error("--rounds, --clients and --rate must be positive")
    if args.cluster_dir is not None and not args.cluster_dir.is_dir():
        p.error(f"--cluster-dir {args.cluster_dir}: not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cluster: OwnCluster | ConfigCluster = (ConfigCluster(args.cluster_dir.resolve()) if args.cluster_dir
                                               else OwnCluster(args.keep))
    except ConfigError as exc:
        print(f"drill: {exc}", file=sys.stderr)
        return 2
    rate = args.rate or (6.0 if args.cluster_dir else 20.0)
    failed = True
    try:
        try:
            summary = drill(cluster, args.rounds, args.clients, rate, args.settle, replace=args.replace)
            if args.restore and isinstance(cluster, OwnCluster):
                summary["restore"] = restore_round(cluster, args.clients, rate, args.settle)
                summary["passed"] = summary["passed"] and summary["restore"]["lost"] == 0
        except TimeoutError as exc:  # no leader at all: the logs below say why
            print(f"drill: {exc}", file=sys.stderr)
            return 1
        failed = not summary.pop("passed")
        print(json.dumps(summary), flush=True)
        return 1 if failed else 0
    finally:
        if failed:
            for node_id, log in cluster.logs.items():
                print(f"--- {node_id}: {log} (last lines)\n{tail(log)}", file=sys.stderr)
        cluster.close(failed)


@dataclass
class Round:
    old: str
    new: str
    failover_s: float | None      # kill -> first write acknowledged by another master; None: not within 10 s
    elected_s: float | None       # kill -> a survivor's /health says it leads (polled)
    errors: dict[str, int]        # failed client attempts during the failover, by code
    term_before: int
    term_elected: int
    term_after: int               # once the killed master is back and caught up
    replace_s: float | None = None  # --replace: add-master request -> the new master caught up

    def line(self, r: int, rounds: int) -> str:
        failover = (f"failover {self.failover_s:.3f} s" if self.failover_s is not None
                    else f"NO WRITE ACKNOWLEDGED within {FAILOVER_LIMIT_S:g} s")
        elected = f"{self.elected_s:.3f} s" if self.elected_s is not None else "?"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        # Split votes raise the term before the new leader wins; a rejoining master that deposes a
        # working leader raises it after. Both are beyond the one election a kill needs.
        extra = max(0, self.term_after - self.term_before - 1)
        replaced = f", replaced in {self.replace_s:.2f} s" if self.replace_s is not None else ""
        return (f"round {r}/{rounds}: leader {self.old} -> {self.new}, {failover} (elected after {elected}){replaced}, "
                f"client errors: {errors}, term {self.term_before} -> {self.term_elected} at election"
                + (f", {self.term_after} after the rejoin" if self.term_after != self.term_elected else "")
                + (f" ({extra} spurious)" if extra else ""))


def kill_leader_round(cluster: OwnCluster | ConfigCluster, history: History, round_errors: dict[str, int],
                      settle: float, replace: Replacer | None = None) -> Round:
    """Kill the leader under load, measure the failover, restart (or with `replace`, replace) the killed
    master and wait for it."""
    urls = cluster.urls
    old, term_before = wait_leader(urls, timeout=30)
    time.sleep(settle)
    term_before = max(term_before, max_term(urls))
    round_errors.clear()
    killed_at = time.monotonic()
    cluster.kill(old)
    survivors = {n: u for n, u in urls.items() if n != old}
    elected_s = acked = None
    while time.monotonic() - killed_at < FAILOVER_LIMIT_S:
        if elected_s is None and any((h or {}).get("is_leader") for h in map(health, survivors.values())):
            elected_s = time.monotonic() - killed_at
        acked = first_ack_after(history, killed_at, not_from=urls[old])
        if acked is not None:
            break
        time.sleep(0.01)
    errors = dict(round_errors)
    try:
        new, term_elected = wait_leader(survivors, timeout=10)
    except TimeoutError:
        new, term_elected = "none", max_term(survivors)
    replace_s = None
    if replace is not None and isinstance(cluster, OwnCluster):
        t0 = time.monotonic()
        replace.add(cluster.replace(old, replace.admin))
        try:
            wait_caught_up(urls[old], list(survivors.values()), timeout_s=60)
            replace_s = time.monotonic() - t0
        except TimeoutError as exc:
            print(f"drill: {exc}", file=sys.stderr)
    else:
        cluster.start(old)
        try:
            wait_caught_up(urls[old], list(survivors.values()), timeout_s=60)
        except TimeoutError as exc:
            print(f"drill: {exc}", file=sys.stderr)
    _, term_after = wait_leader(urls, timeout=30)
    return Round(old, new, None if acked is None else acked - killed_at, elected_s, errors, term_before,
                 term_elected, max(term_after, max_term(urls)), replace_s)


@dataclass
class Replacer:
    """What a replace round needs besides the cluster: an admin client, and the load to tell about the
    new master's URL."""

    admin: Client
    writers: Writers
    counter: EventCounter

    def add(self, url: str) -> None:
        if url not in self.admin.apis:
            self.admin.apis.append(url)
        self.writers.add_url(url)
        self.counter.add_url(url)


def drill(cluster: OwnCluster | ConfigCluster, rounds: int, clients: int, rate: float,
          settle: float, replace: bool = False) -> dict[str, Any]:
    urls = cluster.urls
    cluster.start_all()
    _, term_start = wait_leader(urls, timeout=30)
    prefix = f"drill{uuid.uuid4().hex[:6]}"
    history = History()
    round_errors: dict[str, int] = {}
    writers = Writers(list(urls.values()), [cluster.token("admin", f"drill-{i}") for i in range(clients)],
                      history, prefix=prefix, rate=rate,
                      on_error=lambda _p, code: round_errors.__setitem__(code, round_errors.get(code, 0) + 1))
    counter = EventCounter(list(urls.values()), cluster.token("viewer", "drill-events"), prefix)
    done: list[Round] = []
    replacer = (Replacer(Client(list(urls.values()), cluster.token("admin", "drill-replace"), timeout=15.0,
                                retries=10), writers, counter) if replace else None)
    counter.start()
    writers.start()
    try:
        for r in range(1, rounds + 1):
            done.append(kill_leader_round(cluster, history, round_errors, settle, replacer))
            print(done[-1].line(r, rounds), flush=True)
        time.sleep(settle)
    finally:
        writers.stop()
        counter.stop()
        if replacer is not None:
            replacer.admin.close()
    # Over the whole run, so that an election between rounds counts too.
    spurious = max(0, max_term(urls) - term_start - rounds)
    failovers = [d.failover_s for d in done if d.failover_s is not None]
    late_rounds = sum(1 for d in done if d.failover_s is None)

    token = cluster.token("admin", "drill-readback")
    rb = read_back(urls, token, prefix, timeout_s=60)
    consistent = {s["name"]: int(s["version"]) for s in rb.consistent}
    verdict = check(history, applied_counts(rb.consistent, counter.counts))
    acked_keys = {o.key for o in history.writes("ok")}
    lost = set(verdict.lost)
    for view in rb.views.values():
        lost |= acked_keys - set(view)
    if len(rb.views) < len(urls):
        print(f"drill: only {sorted(rb.views)} answered the read-back", file=sys.stderr)
    if not rb.converged:
        print(f"drill: masters did not converge within 60 s: applied {rb.applied}", file=sys.stderr)
    if verdict.phantoms or verdict.backwards_reads or verdict.stale_reads:
        print(f"drill: checker: {verdict}", file=sys.stderr)
    if isinstance(cluster, ConfigCluster):
        _stop_projects(list(urls.values()), token, [f"{prefix}{c}" for c in range(clients)])
    passed = (not lost and not verdict.duplicated and late_rounds == 0 and rb.converged
              and verdict.ok and set(consistent) >= acked_keys)
    replaced = [d.replace_s for d in done if d.replace_s is not None]
    if replace:
        passed = passed and len(replaced) == rounds
    return {"rounds": rounds, "mode": "replace" if replace else "restart", "acked": verdict.acked,
            "lost": len(lost), "duplicated": len(verdict.duplicated),
            "failover_s": {"median": round(statistics.median(failovers), 3) if failovers else None,
                           "max": round(max(failovers), 3) if failovers else None},
            "spurious_elections": spurious, "unknown": verdict.unknown, "rounds_without_failover": late_rounds,
            "converged": rb.converged, "consistent_reads_checked": verdict.reads, "event_gaps": counter.gaps,
            "client_errors": dict(sorted(writers.errors.items())),
            **({"replace_s": {"median": round(statistics.median(replaced), 3) if replaced else None,
                              "max": round(max(replaced), 3) if replaced else None}} if replace else {}),
            "passed": passed}


def restore_round(cluster: OwnCluster, clients: int, rate: float, settle: float) -> dict[str, Any]:
    """Save under load, lose every master's data directory, restore into the fresh cluster (same secret),
    and check that every write acknowledged before the save (this round's and the drill's) is back."""
    urls = cluster.urls
    token = cluster.token("admin", "drill-restore")
    history = History()
    prefix = f"restore{uuid.uuid4().hex[:6]}"
    writers = Writers(list(urls.values()), [cluster.token("admin", f"drill-r{i}") for i in range(clients)],
                      history, prefix=prefix, rate=rate)
    writers.start()
    try:
        time.sleep(settle)
        with Client(list(urls.values()), token, timeout=30) as client:
            before = {s["name"] for s in client.status(consistent=True)}  # every earlier acknowledged write
            saved_at = time.monotonic()
            data = client.snapshot_save()
            save_s = time.monotonic() - saved_at
    finally:
        writers.stop()
    acked = before | {o.key for o in history.writes("ok") if o.complete is not None and o.complete <= saved_at}
    for node_id in urls:
        cluster.kill(node_id)
    for m in cluster.cluster.masters:
        shutil.rmtree(cluster.cluster.root / m.node_id, ignore_errors=True)
    cluster.start_all()
    wait_leader(urls, timeout=60)
    with Client(list(urls.values()), token, timeout=60) as client:
        started = time.monotonic()
        client.snapshot_restore(data)
        restore_s = time.monotonic() - started
        names = {s["name"] for s in client.status(consistent=True)}
    lost = sorted(acked - names)
    print(f"restore: saved {len(data)} bytes in {save_s:.3f} s under load, every data directory wiped, "
          f"restored in {restore_s:.3f} s: {len(acked)} acknowledged writes checked, {len(lost)} lost", flush=True)
    return {"acked_before_save": len(acked), "lost": len(lost), "save_s": round(save_s, 3),
            "restore_s": round(restore_s, 3), "snapshot_bytes": len(data)}


def _stop_projects(urls: list[str], token: str, projects: list[str]) -> None:
    with Client(urls, token, timeout=10.0, retries=5) as client:
        for project in projects:
            try:
                client.stop_project(project)
            except ApiError as err:
                print(f"drill: could not stop project {project}: {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
