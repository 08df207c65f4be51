"""Helpers shared by the Raft benchmarks: percentiles, CPU sampling, one JSON line, and a small cluster of
raw PySyncObj processes (`raw_pysyncobj_node.py`) configured exactly like orca's masters.

Every process started here is reaped by `RawCluster.close()` (use it as a context manager), and
`install_sigterm()` turns SIGTERM/SIGHUP into SystemExit so those `finally` blocks run on a kill too.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from orca.devcluster import free_ports  # noqa: E402

__all__ = [
    "ROOT",
    "RawCluster",
    "RawNode",
    "box_load",
    "cpu_seconds",
    "emit",
    "install_sigterm",
    "percentile",
    "summarize",
    "free_ports",
    "median_stats",
    "remove_labelled",
    "rss_mb",
    "wait_until",
]

NODE_SCRIPT = Path(__file__).resolve().parent / "raw_pysyncobj_node.py"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def summarize(latencies_s: list[float], ok: int, errors: int, seconds: float) -> dict[str, Any]:
    lat = sorted(latencies_s)
    return {
        "writes_per_s": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": _ms(percentile(lat, 50)),
        "p99_ms": _ms(percentile(lat, 99)),
        "errors": errors,
        "writes": ok,
    }


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process (all its threads) from /proc, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def box_load(load_at_start: float) -> dict[str, Any]:
    """How busy the machine was: 1-min load average at start and end, CPU count, CPU pressure (avg60 %).

    The figures of a run on a shared box are only comparable with its own baseline; this says how shared.
    """
    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "loadavg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        out["cpu_pressure_some_avg60"] = float(some[2].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def median_stats(samples: list[float], ndigits: int = 3) -> dict[str, Any]:
    """{"median", "max", "samples"} of a list of seconds (None figures when it is empty)."""
    import statistics

    return {
        "median": round(statistics.median(samples), ndigits) if samples else None,
        "max": round(max(samples), ndigits) if samples else None,
        "samples": [round(s, ndigits) for s in samples],
    }


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB (VmRSS from /proc), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    return None


def wait_until(predicate: Any, timeout: float, what: str, period: float = 0.05) -> Any:
    """Poll `predicate()` every `period` s until it returns something truthy (returned); exceptions count
    as "not yet". TimeoutError naming `what` (and the last value or error) after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(period)


def remove_labelled(labels: list[str], timeout: float = 60.0) -> int:
    """Force-remove every container (running or not) carrying any of `labels` ("key=value"); returns how
    many were removed. Uses the docker SDK; a missing engine or SDK removes nothing."""
    try:
        import docker  # type: ignore[import-untyped]
        import docker.errors  # type: ignore[import-untyped]
    except ImportError:
        return 0
    removed = 0
    try:
        engine = docker.from_env(timeout=int(timeout))
    except Exception:  # noqa: BLE001 - no engine: nothing of ours can be running there
        return 0
    try:
        for label in labels:
            for c in engine.containers.list(all=True, filters={"label": label}):
                try:
                    c.remove(force=True)
                    removed += 1
                except docker.errors.NotFound:
                    pass
    finally:
        engine.close()
    return removed


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(", ", ": ")), flush=True)


def install_sigterm() -> None:
    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


# --- raw PySyncObj cluster -------------------------------------------------------------------------


class RawNode:
    """One `raw_pysyncobj_node.py` process, driven by JSON lines on stdin/stdout."""

    def __init__(
        self,
        index: int,
        addr: str,
        peers: list[str],
        data_dir: Path,
        password: str,
        log: Path,
        extra_args: list[str] | None = None,
    ) -> None:
        self.index = index
        self.addr = addr
        self.peers = peers
        self.data_dir = data_dir
        self.password = password
        self.log = log
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        self._lines = queue.Queue()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(NODE_SCRIPT),
                    "--self",
                    self.addr,
                    "--peers",
                    ",".join(self.peers),
                    "--dir",
                    str(self.data_dir),
                    *self.extra_args,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "RAW_SYNCOBJ_PASSWORD": self.password},
            )
        threading.Thread(target=self._reader, args=(self.proc, self._lines), daemon=True).start()

    @staticmethod
    def _reader(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def call(self, cmd: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send one command, wait for its one-line JSON reply."""
        with self._lock:
            if not self.alive or self.proc is None or self.proc.stdin is None:
                raise RuntimeError(f"raw node {self.addr} is not running (log {self.log})")
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"raw node {self.addr}: no reply to {cmd['cmd']} within {timeout} s")
                try:
                    line = self._lines.get(timeout=left)
                except queue.Empty:
                    continue
                if line is None:
                    raise RuntimeError(f"raw node {self.addr} exited (log {self.log})")
                line = line.strip()
                if line.startswith("{"):
                    return json.loads(line)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


class RawCluster:
    """Three (or `size`) raw PySyncObj processes on free 127.0.0.1 ports, with journals under `root`."""

    def __init__(self, root: Path, size: int = 3, extra_args: list[str] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(32)
        addrs = [f"127.0.0.1:{p}" for p in free_ports(size)]
        self.nodes = [
            RawNode(
                i,
                a,
                [p for p in addrs if p != a],
                root / f"raw-{i + 1}",
                password,
                root / f"raw-{i + 1}.log",
                extra_args,
            )
            for i, a in enumerate(addrs)
        ]

    def __enter__(self) -> RawCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def close(self) -> None:
        for n in self.nodes:
            n.kill()

    def status(self) -> dict[int, dict[str, Any]]:
        out = {}
        for n in self.nodes:
            if n.alive:
                try:
                    out[n.index] = n.call({"cmd": "status"}, timeout=2.0)
                except (TimeoutError, RuntimeError):
                    pass
        return out

    def leader(self) -> RawNode | None:
        """The node that leads and that every live node (ready) agrees on."""
        views = self.status()
        claimed = [self.nodes[i] for i, v in views.items() if v.get("is_leader")]
        leaders = {v.get("leader") for v in views.values()}
        if len(claimed) == 1 and leaders == {claimed[0].addr} and all(v.get("ready") for v in views.values()):
            return claimed[0]
        return None

    def wait_leader(self, timeout: float = 20.0) -> RawNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"raw PySyncObj cluster: no leader within {timeout} s")
