"""Every file in examples/ deployed the way the docs say: `orca deploy -f FILE` on a 3-master + 2-agent stack.

`examples/shop.toml` (a project: web + worker + store) is deployed in full and checked for what it shows:
the secrets reach the containers, the store runs on a node labelled zone=a with its named volume, web is
autoscaled, and a changed web runs one canary replica beside the old ones until `orca promote web`. The
other examples are deployed and must converge (a job completes); `private-image.toml` names a registry
that does not exist, so there the pull failure must be reported with a reason that holds no credential.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import stack_fixture, wait_for

from orca.client import Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REDIS = "orca-test/redis:latest"
Stack = tuple[LocalCluster, Client, list[str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
          request: pytest.FixtureRequest) -> Iterator[Stack]:
    nodes: list[str] = []
    try:
        for item in stack_fixture(tmp_path_factory.mktemp("examples"), docker_client, request):
            nodes = item[2]
            yield item
    finally:
        engine = docker.from_env()
        for node in nodes:
            for vol in engine.volumes.list(filters={"label": f"orca.node={node}"}):
                vol.remove(force=True)
        engine.close()


@pytest.fixture(scope="module")
def redis_image() -> str:
    done = subprocess.run([str(ROOT / "scripts" / "ensure-redis-image.sh")], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"could not build {REDIS}: {done.stderr[-2000:]}")
    return REDIS


def orca(cluster: LocalCluster, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, against the stack's masters."""
    env = {**os.environ, "ORCA_API": ",".join(m.url for m in cluster.masters), "ORCA_TOKEN": cluster.token()}
    env.pop("ORCA_CONTEXT", None)
    return subprocess.run([sys.executable, "-m", "orca", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def _specs(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
    return doc["services"] if "services" in doc else [doc]


def _services(path: Path) -> list[str]:
    return [s["name"] for s in _specs(path)]


def _purge(client: Client, names: list[str]) -> None:
    for name in names:
        try:
            client.stop(name, purge=True)
        except Exception:  # noqa: BLE001 - cleanup of a service the test may not have created
            pass


def _env_of(container: Any) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def _containers(nodes: list[str], service: str) -> list[Any]:
    engine = docker.from_env()
    try:
        return [c for node in nodes
                for c in engine.containers.list(filters={"label": [f"orca.node={node}", f"orca.service={service}"]})]
    finally:
        engine.close()


def _ready_at(client: Client, name: str, version: int, count: int) -> bool:
    d = client.service(name)
    on = [c for c in d["containers"] if c.get("version") == version and c.get("status") == "running"
          and c.get("health") in (None, "healthy")]
    return len(on) == count


def test_the_shop_project(stack: Stack, tmp_path: Path) -> None:
    cluster, client, nodes = stack
    names = _services(EXAMPLES / "shop.toml")
    try:
        for key in ("shop_session_key", "shop_store_password"):
            res = orca(cluster, "secrets", "set", key, f"value-of-{key}", "--project", "shop")
            assert res.returncode == 0, res.stderr
        res = orca(cluster, "deploy", "-f", "examples/shop.toml", "--timeout", "180")
        assert res.returncode == 0, res.stdout + res.stderr
        for name, count in (("store", 1), ("worker", 1), ("web", 2)):
            d = client.service(name)
            assert d["replicas"]["healthy"] == count, (name, d["replicas"])

        # The store: on the zone=a node (nodes[0]), with its own named volume, the secret in its environment.
        stores = _containers(nodes, "store")
        assert len(stores) == 1 and stores[0].labels["orca.node"] == nodes[0]
        assert _env_of(stores[0])["STORE_PASSWORD"] == "value-of-shop_store_password"
        mounts = [m for m in stores[0].attrs["Mounts"] if m.get("Type") == "volume"]
        assert [m["Destination"] for m in mounts] == ["/data"]
        webs = _containers(nodes, "web")
        assert {_env_of(c)["SESSION_KEY"] for c in webs} == {"value-of-shop_session_key"}
        # ... and the secret value is nowhere in what the API says of the service.
        assert "value-of-shop" not in json.dumps(client.service("web"))

        policy = client.get_scaling("web")
        policy = policy.get("scaling", policy)
        assert policy["mode"] == "auto" and (policy["min_replicas"], policy["max_replicas"]) == (2, 4)

        # A changed web: one canary replica of v2 beside the two of v1, then promoted.
        changed = tmp_path / "shop-v2.toml"
        changed.write_text((EXAMPLES / "shop.toml").read_text().replace('echo \\"shop $HOSTNAME\\"',
                                                                        'echo \\"shop v2 $HOSTNAME\\"'))
        assert changed.read_text() != (EXAMPLES / "shop.toml").read_text()
        res = orca(cluster, "deploy", "-f", str(changed), "--detach")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(lambda: _ready_at(client, "web", 2, 1) and _ready_at(client, "web", 1, 2), 90,
                 "one healthy canary of web v2 beside two healthy v1 replicas", cluster)
        assert (client.service("web").get("canary") or {}).get("version") == 2
        res = orca(cluster, "promote", "web")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(lambda: _ready_at(client, "web", 2, 2) and len(client.service("web")["containers"]) == 2, 120,
                 "web promoted: two healthy v2 replicas and nothing else", cluster)
    finally:
        _purge(client, names)


OTHERS = ["web.json", "caller.json", "health-checks.toml", "jobs.toml", "depends-on.toml", "redis-volume.toml"]


@pytest.mark.parametrize("example", OTHERS)
def test_each_example_converges(stack: Stack, redis_image: str, example: str) -> None:
    cluster, client, _ = stack
    specs = _specs(EXAMPLES / example)
    names = [s["name"] for s in specs]
    try:
        res = orca(cluster, "deploy", "-f", f"examples/{example}", "--timeout", "180")
        assert res.returncode == 0, res.stdout + res.stderr
        for spec in specs:
            if spec.get("kind") == "job":
                if spec.get("schedule") is None:  # a periodic job runs at its next tick, not now
                    wait_for(lambda n=spec["name"]: client.service(n)["status"] == "complete", 120,
                             f"job {spec['name']} complete", cluster)
                continue
            d = client.service(spec["name"])
            assert d["replicas"]["healthy"] == d["replicas"]["desired"], (spec["name"], d["replicas"])
    finally:
        _purge(client, names)


def test_the_private_image_example_reports_the_pull_failure_without_credentials(stack: Stack, tmp_path: Path) -> None:
    """The registry of the example does not exist; so that the pull stays on this machine (no DNS lookup,
    no traffic out), the copy deployed names a closed port on 127.0.0.1 instead of registry.example.com."""
    cluster, client, _ = stack
    names = _services(EXAMPLES / "private-image.toml")
    secret = "robot:hunter2-not-a-real-password"
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    local = tmp_path / "private-image.toml"
    local.write_text((EXAMPLES / "private-image.toml").read_text().replace("registry.example.com:5000",
                                                                           f"127.0.0.1:{closed}"))
    try:
        res = orca(cluster, "secrets", "set", "REGISTRY", secret, "--all-projects")
        assert res.returncode == 0, res.stderr
        res = orca(cluster, "deploy", "-f", str(local), "--detach")
        assert res.returncode == 0, res.stdout + res.stderr

        def pull_reported() -> bool:
            d = client.service("internal-api")
            return any("pull" in str(c.get("reason") or "") for c in d["containers"])

        wait_for(pull_reported, 90, "the pull failure of internal-api reported", cluster)
        assert "hunter2" not in json.dumps(client.service("internal-api"))
        assert all("hunter2" not in p.log.read_text() for p in cluster.agents)
    finally:
        _purge(client, names)
