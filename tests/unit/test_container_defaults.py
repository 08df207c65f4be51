"""Container defaults: what reaches `docker create` from any valid spec (and nothing privileged ever does),
and the cluster id that scopes every container an agent may touch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import protocol, spec
from orca.agent.runtime import (
    LABEL_CLUSTER,
    LABEL_NODE,
    MIN_NANO_CPUS,
    PIDS_LIMIT,
    DockerRuntime,
    RuntimeFailure,
    container_limits,
)

# What `docker create` may receive at all (run()-style arguments, as `DockerRuntime._create` takes them);
# privileged, cap_add, devices, network_mode, pid_mode,
# ipc_mode, mounts, ... are not among them, whatever the spec says. `volumes` carries only the replica's own
# named volumes and bind mounts the agent's allow-list permits (tests/unit/test_volumes.py, docker tier).
ALLOWED_CREATE_KEYS = {"image", "command", "name", "labels", "environment", "ports", "restart_policy", "init",
                       "log_config", "detach", "pids_limit", "security_opt", "privileged", "mem_limit",
                       "memswap_limit", "nano_cpus", "read_only", "tmpfs", "user", "volumes"}


def normalized(**fields: Any) -> dict[str, Any]:
    return spec.validate_service({"name": "web", "image": "img", **fields})


def test_defaults_for_a_plain_spec() -> None:
    limits = container_limits(normalized(resources={"memory": "64Mi", "cpu": 0.5}))
    assert limits == {"pids_limit": PIDS_LIMIT, "security_opt": ["no-new-privileges:true"], "privileged": False,
                      "mem_limit": 64 << 20, "memswap_limit": 64 << 20, "nano_cpus": 500_000_000}


@pytest.mark.parametrize("cpu", [1e-300, 0.0, 1e-12, float("nan"), -1.0])
def test_a_tiny_or_broken_cpu_is_never_unlimited(cpu: float) -> None:
    # A stored spec from before the MIN_CPU rule (or any bypass) still gets Docker's minimum, never 0.
    limits = container_limits({"resources": {"memory": 1 << 26, "cpu": cpu}})
    assert limits["nano_cpus"] == MIN_NANO_CPUS
    with pytest.raises(spec.InvalidSpec):
        normalized(resources={"cpu": cpu})


def test_read_only_and_user() -> None:
    limits = container_limits(normalized(read_only=True, user="1000:1000"))
    assert limits["read_only"] is True and limits["user"] == "1000:1000" and "/tmp" in limits["tmpfs"]


def test_new_fields_keep_old_digests_and_make_a_version_when_set() -> None:
    plain = normalized()
    old_style = {k: v for k, v in plain.items() if k not in ("read_only", "user")}
    assert spec.spec_digest(old_style) == spec.spec_digest(plain)
    assert spec.spec_digest(normalized(read_only=True)) != spec.spec_digest(plain)
    assert spec.spec_digest(normalized(user="app")) != spec.spec_digest(plain)


class FakeContainers:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def list(self, **kw: Any) -> list[Any]:
        return []


class FakeClient:
    def __init__(self) -> None:
        self.containers = FakeContainers()


class RecordingRuntime(DockerRuntime):
    """Records what would reach `docker create` and stops there."""

    def _create(self, kwargs: dict[str, Any]) -> str:
        self.client.containers.created.append(kwargs)
        raise RuntimeError("stop here")  # not a Docker error: the test only looks at the arguments


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=8), inner,
                                                                                     max_size=2), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.sampled_from(["privileged", "cap_add", "devices", "network_mode", "pid_mode",
                                              "ipc_mode", "volumes", "mounts", "security_opt", "user",
                                              "read_only", "resources", "command", "sysctls", "userns_mode"]),
                             json_values, max_size=4))
def test_nothing_privileged_is_reachable_from_a_spec(extra: dict[str, Any]) -> None:
    try:
        normalized_spec = normalized(**extra)
    except spec.InvalidSpec:
        return  # refused at deploy time
    client = FakeClient()
    runtime = RecordingRuntime("worker-1", client=client, cluster_id="0123456789abcdef")
    with pytest.raises(RuntimeError):
        runtime.start({"id": "a1", "service": "web", "version": 1, "spec": normalized_spec}, env={},
                      host_port=None)
    [kw] = client.containers.created
    assert set(kw) <= ALLOWED_CREATE_KEYS, set(kw) - ALLOWED_CREATE_KEYS
    assert kw["privileged"] is False and kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["pids_limit"] == PIDS_LIMIT and kw["nano_cpus"] >= MIN_NANO_CPUS
    assert kw["memswap_limit"] == kw["mem_limit"]
    assert kw["labels"][LABEL_CLUSTER] == "0123456789abcdef" and kw["labels"][LABEL_NODE] == "worker-1"


def test_without_a_cluster_id_the_runtime_touches_nothing() -> None:
    client = FakeClient()
    runtime = RecordingRuntime("worker-1", client=client)
    for call in (runtime.list, lambda: runtime.stop("a1"), lambda: runtime.restart("a1"),
                 lambda: runtime.start({"id": "a1", "service": "web", "version": 1, "spec": normalized()}, env={},
                                       host_port=None)):
        with pytest.raises(RuntimeFailure, match="cluster id"):
            call()
    assert client.containers.created == []


def test_cluster_id_is_a_stable_one_way_fingerprint() -> None:
    a, b = protocol.cluster_id_of(b"s" * 32), protocol.cluster_id_of(b"t" * 32)
    assert a == protocol.cluster_id_of(b"s" * 32) and a != b
    assert protocol.CLUSTER_ID_RE.fullmatch(a) and "s" * 8 not in a
