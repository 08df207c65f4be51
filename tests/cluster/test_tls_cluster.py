"""HTTPS masters with the cluster CA made by the first leader: clients verify, followers redirect over
HTTPS, `orca cluster ca show` prints the fingerprint, the CA key is stored 0600 and sealed in Raft."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orca import tls
from orca.client import ApiError, Client
from orca.devcluster import LocalCluster, http_exchange


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", tls=True)
    try:
        c.start()
        c.wait_leader(timeout=60, all_up=True)
        yield c
    finally:
        c.__exit__(None, None, None)


def _cli(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCA_API": ",".join(m.url for m in c.masters), "ORCA_TOKEN": c.token(),
           "ORCA_CACERT": c.ca_file or ""}
    return subprocess.run([sys.executable, "-m", "orca", *args], capture_output=True, text=True, env=env, timeout=60)


def test_https_api_verified_against_the_cluster_ca(tls_cluster: LocalCluster) -> None:
    c = tls_cluster
    assert c.ca_file is not None
    bundle = Path(c.ca_file).read_bytes()
    fingerprint = tls.fingerprint(bundle)
    # Every master makes its certificate from the same replicated CA (a follower adopts it within a
    # moment of applying it); the key files are private.
    def adopted() -> bool:
        paths = [c.root / m.node_id / "tls" / "ca.crt" for m in c.masters]
        return all(p.exists() and tls.fingerprint(p.read_bytes()) == fingerprint for p in paths)
    deadline = time.monotonic() + 30
    while not adopted() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert adopted()
    for m in c.masters:
        d = c.root / m.node_id / "tls"
        assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((d / "master.key").stat().st_mode) == 0o600
    # The journal holds the key sealed only.
    key_pem = (c.root / "master-1" / "tls" / "ca.key").read_bytes()
    body = key_pem.split(b"-----")[2].strip().split(b"\n")[0]
    for f in (c.root / "master-1").iterdir():
        if f.is_file():
            assert body not in f.read_bytes(), f

    shown = _cli(c, "cluster", "ca", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == fingerprint

    client = Client([m.url for m in c.masters], c.token(), ca_file=c.ca_file)
    assert client.request("POST", "/api/v1/secrets", json={"key": "K", "value": "v1"})["created"]

    leader = c.wait_leader()
    follower = next(m for m in c.masters if m is not leader)
    status, headers, _ = http_exchange("POST", follower.url + "/api/v1/secrets", token=c.token(),
                                       body={"key": "K2", "value": "x"}, cafile=c.ca_file)
    assert status == 307 and headers["Location"].startswith(leader.url + "/")

    # A client that does not trust the cluster CA gets no answer (and sends no token).
    with pytest.raises(ApiError):
        Client([m.url for m in c.masters], c.token(), retries=0).request("GET", "/api/v1/status")
    # Nor does plain HTTP reach it.
    with pytest.raises(ApiError):
        Client([m.url.replace("https://", "http://") for m in c.masters], c.token(), retries=0).status()
