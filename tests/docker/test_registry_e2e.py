"""Private registry pulls on a real stack: a password-protected registry (Debian's docker-registry, run on
127.0.0.1 from its .deb, no internet) holds an image the engine does not have; a service with
`registry_auth = "${secrets.REGISTRY}"` pulls and runs it, one without credentials fails with the
registry's refusal, and the password appears in no API answer, event or agent log."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import IMAGE, stack_fixture, wait_for

from orca.client import Client
from orca.devcluster import LocalCluster

PASSWORD = f"pw-{uuid.uuid4().hex}"
RES = {"memory": "16Mi", "cpu": 0.05}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`127.0.0.1:PORT` of a registry requiring user `bob` and PASSWORD, holding `orca/private:1`."""
    root = tmp_path_factory.mktemp("registry")
    got = subprocess.run(["apt-get", "download", "-q", "docker-registry"], cwd=root, capture_output=True,
                         text=True, timeout=300, check=False)
    debs = list(root.glob("docker-registry_*.deb"))
    if not debs:
        pytest.fail(f"apt-get download docker-registry failed: {got.stderr[-500:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root / "pkg")], check=True, timeout=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as crypt_mod
        hashed = crypt_mod.crypt(PASSWORD, crypt_mod.mksalt(crypt_mod.METHOD_BLOWFISH))
    (root / "htpasswd").write_text(f"bob:{hashed}\n")
    port = _free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: orca-test\n    path: {root / 'htpasswd'}\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - the child's output, closed below
    proc = subprocess.Popen([str(root / "pkg/usr/bin/docker-registry"), "serve", str(root / "config.yml")],
                            stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    engine = docker.from_env()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        image = engine.images.get(f"{IMAGE}:latest")
        image.tag(f"{address}/orca/private", "1")
        out = engine.api.push(f"{address}/orca/private", "1", stream=True, decode=True,
                              auth_config={"username": "bob", "password": PASSWORD})
        errors = [m for m in out if isinstance(m, dict) and m.get("error")]
        assert not errors, errors
        engine.images.remove(f"{address}/orca/private:1")  # the engine must pull it back through orca
        yield address
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for tag in (f"{address}/orca/private:1",):
            try:
                engine.images.remove(tag)
            except docker.errors.ImageNotFound:
                pass
        engine.close()
        shutil.rmtree(root / "data", ignore_errors=True)


@pytest.fixture
def stack(tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest,
          ) -> Iterator[tuple[LocalCluster, Client, list[str]]]:
    yield from stack_fixture(tmp_path, docker_client, request)


def test_private_image_pulled_with_registry_auth_and_the_password_never_shown(
        registry: str, stack: tuple[LocalCluster, Client, list[str]]) -> None:
    cluster, client, _ = stack
    image = f"{registry}/orca/private:1"
    client.request("POST", "/api/v1/secrets", json={"key": "REGISTRY", "value": f"bob:{PASSWORD}"})
    client.deploy([{"name": "noauth", "image": image, "command": ["sleep", "1000"], "resources": RES}])
    wait_for(lambda: any("unauthorized" in (c.get("reason") or "").lower() or "no basic auth" in
                         (c.get("reason") or "").lower() for c in client.service("noauth")["containers"]),
             60, "pull refused without credentials", cluster)
    client.deploy([{"name": "private", "image": image, "command": ["sleep", "1000"], "resources": RES,
                    "registry_auth": "${secrets.REGISTRY}"}])
    wait_for(lambda: [c["status"] for c in client.service("private")["containers"]] == ["running"], 90,
             "private image pulled and running", cluster)
    seen = [repr(client.service("private")), repr(client.service("noauth")), repr(client.events(limit=500)),
            repr(client.status())]
    seen += [a.log.read_text(errors="replace") for a in cluster.agents]
    seen += [m.log.read_text(errors="replace") for m in cluster.masters]
    assert not [s for s in seen if PASSWORD in s]
