"""`scripts/bootstrap-cluster.sh` from nothing: one command, as a newcomer runs it.

The root test copies the repository's files (no .venv, no data/) and runs the script in a network
namespace of its own (its fixed ports 6880-6890, 8080 and 9100 cannot meet another cluster on this box)
with a fresh HOME, an empty environment and no Docker engine at DOCKER_HOST: a socket path that does not
exist. The script must see that and run its Docker installer (ORCA_ENSURE_DOCKER: here a stand-in that
links the path to the real engine's socket, so the engine other tests use is never stopped or started),
build .venv, start three masters and worker-1, and end with worker-1 ready and the client context
written into the fresh HOME.

pip cannot reach an index from the namespace: it installs from a wheelhouse of the distributions this
test suite runs with (`tests/support/wheelhouse.py`) plus the build backend pyproject.toml names, fetched
beforehand with pip's own configuration (the test skips when that fails).

The non-root test runs the same copy as `nobody` without Docker: the script must change nothing and
print the exact commands to run (worker-1 runs the service mesh, so first of all: run it as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from wheelhouse import build_wheelhouse  # noqa: E402

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534


def _copy_repo(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, never ignored ones)."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True, timeout=60).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree but still tracked
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def _docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("not root: `ip netns` needs CAP_NET_ADMIN")
    if shutil.which("ip") is None:
        pytest.skip("`ip` is not installed (apt-get install iproute2)")
    name = f"orca-bs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=20)
        yield name
    finally:
        # Whatever the script left running there (it should have stopped everything) goes with the namespace.
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=20).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    out = tmp_path / "wheels"
    build_wheelhouse(out)
    # The build backend of pyproject.toml is not installed in the environment (pip used it in an
    # isolated build environment): fetch it with pip's own configuration, here, before the namespace.
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                          "-d", str(out), "setuptools>=70.1"], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"cannot fetch the build backend setuptools for the offline install: {res.stderr.strip()[-300:]}")
    return out


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": BASE_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def _run_in(ns: str, repo: Path, env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           "scripts/bootstrap-cluster.sh", *args],
                          cwd=repo, capture_output=True, text=True, timeout=timeout)


def test_bootstrap_as_root_from_nothing(tmp_path: Path, netns: str, wheelhouse: Path, docker_client: Any) -> None:
    repo = _copy_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir()
    sock_dir = tmp_path / "docker"
    sock_dir.mkdir()
    marker = tmp_path / "ensure-docker.called"
    fake = tmp_path / "fake-ensure-docker.sh"
    fake.write_text("#!/bin/sh\n"
                    "# Stands in for scripts/ensure-docker.sh: the engine 'appears' at DOCKER_HOST.\n"
                    f"echo called >>{marker}\n"
                    f"ln -sf {_docker_socket()} {sock_dir}/docker.sock\n")
    fake.chmod(0o755)
    env = _env(home, DOCKER_HOST=f"unix://{sock_dir}/docker.sock", ORCA_ENSURE_DOCKER=str(fake),
               PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))

    started = False
    try:
        res = _run_in(netns, repo, env, timeout=900)
        started = True
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert marker.read_text().count("called") == 1, out[-2000:]
        assert str(fake) in res.stderr
        assert "worker-1 ready" in res.stdout, out[-4000:]
        assert "orca: master-1 master-2 master-3 running; leader master-" in res.stdout
        assert (repo / ".venv" / "bin" / "orca").exists()
        for name in ("cluster.secret", "admin.token", "worker-1.token"):
            assert (repo / "data" / name).stat().st_mode & 0o777 == 0o600, name
        config = (home / ".orca" / "config.toml").read_text()
        assert 'current = "local"' in config and "http://127.0.0.1:6880" in config
        assert (home / ".orca" / "token").read_text() == (repo / "data" / "admin.token").read_text()

        status = _run_in(netns, repo, env, "--status", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "worker-1" in status.stdout and "node=ready" in status.stdout, status.stdout
    finally:
        if started:
            stop = _run_in(netns, repo, env, "--stop", timeout=120)
            assert stop.returncode == 0, stop.stdout + stop.stderr


def test_bootstrap_as_another_user_says_what_to_run() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the script as nobody")
    # Not under pytest's tmp_path: that lies in a directory only root may enter.
    with tempfile.TemporaryDirectory(prefix="orca-bootstrap-") as tmp:
        base = Path(tmp)
        repo = _copy_repo(base / "repo")
        home = base / "home"
        home.mkdir()
        for path in (base, home, repo, *repo.rglob("*")):
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        env = _env(home, DOCKER_HOST=f"unix://{base}/no-such-docker.sock")
        res = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                              "env", "-i", *(f"{k}={v}" for k, v in env.items()), "scripts/bootstrap-cluster.sh"],
                             cwd=repo, capture_output=True, text=True, timeout=120)
        assert res.returncode == 1, res.stdout + res.stderr
        lines = [line.strip() for line in res.stderr.splitlines()]
        assert any(line.startswith("sudo scripts/ensure-docker.sh") for line in lines), res.stderr
        # worker-1 runs the service mesh (cluster/agent1.toml), which needs root: the script says so first.
        assert lines.index("sudo scripts/bootstrap-cluster.sh") > 0, res.stderr
        assert "Nothing was started." in res.stderr
        assert not (repo / "data").exists() and not (repo / ".venv").exists()
