"""The container runtime behind the agent: one small protocol, the Docker engine, and an in-memory fake.

The agent's reconcile loop compares the desired allocations with `Runtime.list()` and calls
`start` / `stop` / `restart`; it never talks to Docker itself. That keeps the loop testable with
`FakeRuntime`, while `tests/docker/` exercises `DockerRuntime` against a real engine.

Contract shared by both implementations:
- A node only sees and touches containers labelled `orca.cluster == cluster_id` AND `orca.node ==
  node_id`: several agents may share one engine (as the tests do), even agents of two clusters that
  use the same node id, and an agent must never stop another node's or another cluster's replicas.
  The cluster id comes from the masters at registration (orca.protocol.cluster_id_of) and is kept in
  the agent's data dir; until it is known, `DockerRuntime` refuses to list or touch anything.
  Upgrade path: a container made before cluster labels existed (`orca.node` only) is adopted when
  `adopt_legacy(alloc_id)` says this node is told to run that allocation (allocation ids are random, so
  another cluster's never match), and from then on until it is stopped; it is replaced by a labelled
  one at the next rolling update.
- Every container runs with the defaults below (`CONTAINER_DEFAULTS`): a cpu limit of at least
  `orca.spec.MIN_CPU`, a pids limit, `no-new-privileges`, swap equal to the memory limit, and nothing
  privileged (no capabilities added, no devices, no host namespaces: a spec cannot ask for them).
- Containers are identified by allocation id (label `orca.alloc`), not by Docker id, so an agent that
  restarts re-adopts what is running instead of starting duplicates.
- `start` is idempotent: a running container for the allocation is returned as is; a dead one is
  removed and replaced. `start` never pulls: `ensure_image` does, so that a slow or failing pull is a
  separate, reportable step the agent can back off from rather than retry inside every start.
- Every engine error surfaces as `RuntimeFailure` with a short, human `reason` the agent reports in
  its heartbeat ("image not found: x", "port 20001 already allocated", ...). Calls are blocking: the
  agent runs them in a worker thread.
"""

from __future__ import annotations

import itertools
import logging
import math
import os.path
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig

from orca import volumes

try:  # containers.create's own conversion of run()-style arguments (private, hence the fallback)
    from docker.models.containers import _create_container_args
except ImportError:  # pragma: no cover - a docker SDK without it: the public, slower path
    _create_container_args = None

log = logging.getLogger("orca.agent.runtime")

__all__ = ["ContainerState", "Runtime", "RuntimeFailure", "DockerRuntime", "FakeRuntime", "container_name",
           "container_limits", "CONTAINER_DEFAULTS", "PIDS_LIMIT", "LABEL_CLUSTER"]

LABEL_SERVICE = "orca.service"
LABEL_ALLOC = "orca.alloc"
LABEL_VERSION = "orca.version"
LABEL_NODE = "orca.node"
LABEL_CLUSTER = "orca.cluster"
DEFAULT_CPU = 0.25  # orca.spec.DEFAULT_CPU, for a stored spec that has no cpu at all

# The most processes (and threads) one container may run: stops a fork bomb in one replica from
# taking the whole worker down.
PIDS_LIMIT = 1024
# The smallest cpu limit given to Docker, in cores (orca.spec.MIN_CPU; repeated so the runtime also
# clamps specs stored before that rule existed): NanoCpus=0 would mean "unlimited".
MIN_NANO_CPUS = 10_000_000
# The writable scratch space of a `read_only` container.
READ_ONLY_TMPFS = {"/tmp": "rw,noexec,nosuid,nodev,size=64m"}
CONTAINER_DEFAULTS: dict[str, Any] = {
    "pids_limit": PIDS_LIMIT,
    "security_opt": ["no-new-privileges:true"],
    "privileged": False,
}

# Docker reports a never-started container with this zero time; we report None instead.
_ZERO_TIME = "0001-01-01T00:00:00Z"
# Messages the engine uses when a host port is taken (by another container, or by any other process).
_PORT_TAKEN = ("port is already allocated", "address already in use")
_MAX_REASON = 200


class RuntimeFailure(Exception):
    """An engine operation failed; `reason` is short enough to show in a node's status as is."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ContainerState:
    """One container of this node, as the engine reports it now.

    `status` is Docker's (created, running, restarting, paused, exited, dead); `exit_code` is set only
    once the container has stopped; `host_port` is the published port, if the spec has one.
    """

    alloc_id: str
    service: str
    version: int
    node: str
    container_id: str
    name: str
    status: str
    exit_code: int | None
    started_at: str | None
    host_port: int | None
    image: str


class Runtime(Protocol):
    """What the agent needs from a container engine; see the module docstring for the contract."""

    cluster_id: str | None

    def list(self) -> list[ContainerState]: ...

    def start(self, alloc: dict[str, Any], *, env: dict[str, str], host_port: int | None) -> ContainerState: ...

    def stop(self, alloc_id: str, timeout_s: float = 5) -> None: ...

    def restart(self, alloc_id: str) -> None: ...

    def logs(self, alloc_id: str, tail: int = 100, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes]: ...

    def ensure_image(self, image: str, always: bool = False, *, auth: dict[str, str] | None = None) -> None: ...

    def engine_resources(self) -> dict[str, Any]: ...

    def stats(self, alloc_id: str) -> dict[str, Any] | None: ...

    def volumes(self) -> list[dict[str, Any]]: ...

    def exec_check(self, alloc_id: str, cmd: list[str]) -> int: ...

    def purge_volumes(self, purges: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


def container_name(alloc: dict[str, Any]) -> str:
    """`orca-<service>-<alloc id>`: readable in `docker ps`, unique per allocation."""
    return f"orca-{alloc['service']}-{alloc['id']}"


def container_limits(spec: dict[str, Any]) -> dict[str, Any]:
    """The docker SDK `containers.create` arguments that confine a container, from its normalized spec.

    Only these keys (and the plain ones in `DockerRuntime.start`) ever reach Docker: nothing in a spec
    can add capabilities or devices, mount the host, or share its network, pid or ipc namespace.
    """
    resources = spec.get("resources") or {}
    out: dict[str, Any] = dict(CONTAINER_DEFAULTS)
    out["security_opt"] = list(CONTAINER_DEFAULTS["security_opt"])
    memory = resources.get("memory")
    if memory:
        out["mem_limit"] = int(memory)
        out["memswap_limit"] = int(memory)  # swap equal to memory: no swap beyond the limit
    cpu = resources.get("cpu")
    cores = DEFAULT_CPU if cpu is None else float(cpu)
    out["nano_cpus"] = max(MIN_NANO_CPUS, int(cores * 1e9)) if math.isfinite(cores) else MIN_NANO_CPUS
    if spec.get("read_only"):
        out["read_only"] = True
        out["tmpfs"] = dict(READ_ONLY_TMPFS)
    if spec.get("user"):
        out["user"] = str(spec["user"])
    return out


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut a stream of arbitrary chunks into lines (each ending in b"\\n" but maybe the last), so
    that callers can prefix every line with its replica."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


class DockerRuntime:
    """`Runtime` on a Docker engine through the docker SDK.

    `node_id` scopes everything this object sees or touches (label `orca.node`). Published ports bind
    to `publish_address` only (the agent's advertise address, 127.0.0.1 in tests), never 0.0.0.0.
    `client` is for callers that already hold a `docker.DockerClient`; by default one is made from the
    environment on first use, so an agent can start (and report the error) while the engine is down.
    """

    def __init__(self, node_id: str, publish_address: str = "127.0.0.1", client: Any = None, *,
                 cluster_id: str | None = None):
        self.node_id = node_id
        self.publish_address = publish_address
        self.cluster_id = cluster_id  # set by the agent once the masters told it (see the module docstring)
        self.adopt_legacy: Callable[[str], bool] | None = None  # alloc id -> adopt an unlabelled container?
        # The service mesh (orca.agent.mesh): alloc -> {"network", "dns"} to start its container with.
        self.network_for: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self._legacy: set[str] = set()  # alloc ids of unlabelled containers adopted so far
        self._client = client
        # [agent.docker] bind_paths / bind_paths_rw: host directories bind mounts may come from.
        self.bind_paths: tuple[str, ...] = ()
        self.bind_paths_rw: tuple[str, ...] = ()
        # (container id, state) -> ContainerState from the last `list`: a container is inspected again
        # only when its state changed (or after a restart), not on every reconcile pass.
        self._inspected: dict[tuple[str, str], ContainerState] = {}

    # -- engine access ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise RuntimeFailure(_short(f"docker engine unreachable: {exc}")) from exc
        return self._client

    def _owner_labels(self) -> list[str]:
        """The label filter of everything this runtime may see: its cluster and its node."""
        if not self.cluster_id:
            raise RuntimeFailure("cluster id not known yet (it comes with the first registration)")
        return [f"{LABEL_CLUSTER}={self.cluster_id}", f"{LABEL_NODE}={self.node_id}"]

    def _legacy_ok(self, labels: dict[str, str]) -> bool:
        """An unlabelled container (from before cluster labels) of this node that may be adopted."""
        alloc_id = labels.get(LABEL_ALLOC)
        if alloc_id is None or LABEL_CLUSTER in labels or labels.get(LABEL_NODE) != self.node_id:
            return False
        if alloc_id in self._legacy or (self.adopt_legacy is not None and self.adopt_legacy(alloc_id)):
            self._legacy.add(alloc_id)
            return True
        return False

    def _find(self, alloc_id: str) -> list[Any]:
        """This node's containers for one allocation (normally zero or one)."""
        owner = self._owner_labels()
        try:
            found: list[Any] = self.client.containers.list(
                all=True, filters={"label": [*owner, f"{LABEL_ALLOC}={alloc_id}"]}, ignore_removed=True,
            )
            if not found and (alloc_id in self._legacy or self.adopt_legacy is not None):
                legacy = self.client.containers.list(
                    all=True, filters={"label": [f"{LABEL_NODE}={self.node_id}", f"{LABEL_ALLOC}={alloc_id}"]},
                    ignore_removed=True)
                found = [c for c in legacy if self._legacy_ok(c.labels or {})]
            return found
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "list containers") from exc

    # -- Runtime ---------------------------------------------------------------------------------

    def list(self) -> list[ContainerState]:
        """Every container of this node, running or not; containers without an alloc label are not
        orca's to manage and are left out."""
        # A sparse list is one engine call; the full one inspects every container (one call each, 0.12 s
        # for 20 containers against 0.011 s, measured) and competed with starts on every 1 s pass.
        owner = self._owner_labels()
        try:
            rows = self.client.api.containers(all=True, filters={"label": owner})
            if self.adopt_legacy is not None or self._legacy:
                mine = self.client.api.containers(all=True, filters={"label": f"{LABEL_NODE}={self.node_id}"})
                rows += [r for r in mine if self._legacy_ok(r.get("Labels") or {})]
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "list containers") from exc
        seen: dict[tuple[str, str], ContainerState] = {}
        for row in rows:
            if LABEL_ALLOC not in (row.get("Labels") or {}):
                continue
            key = (row["Id"], str(row.get("State")))
            state = self._inspected.get(key)
            if state is None:
                try:
                    state = _state(self.client.api.inspect_container(row["Id"]))
                except docker.errors.NotFound:
                    continue  # removed between the list and the inspect
                except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                    raise _failure(exc, "inspect container") from exc
            seen[key] = state
        self._inspected = seen
        return list(seen.values())

    def start(self, alloc: dict[str, Any], *, env: dict[str, str], host_port: int | None) -> ContainerState:
        """Run the allocation's container and return its state.

        `env` is the final environment (spec env with secrets already resolved by the agent);
        `alloc["spec"]["env"]` may hold templates and is not read here. `host_port` is used only
        when the spec has a `port`. The image must be present (see `ensure_image`).
        """
        spec = alloc["spec"]
        self._owner_labels()  # never create a container without its cluster label
        port = spec.get("port")
        ports = {f"{port}/tcp": (self.publish_address, host_port)} if port and host_port else None
        kwargs: dict[str, Any] = {
            "image": spec["image"],
            "command": spec.get("command") or None,
            "name": container_name(alloc),
            "labels": {
                LABEL_SERVICE: str(alloc["service"]),
                LABEL_ALLOC: str(alloc["id"]),
                LABEL_VERSION: str(alloc["version"]),
                LABEL_NODE: self.node_id,
                LABEL_CLUSTER: str(self.cluster_id),
            },
            "environment": dict(env),
            "ports": ports,
            # The agent decides about restarts (and reports them); an engine restarting on its own
            # would hide crashes from it and fight its health checks.
            "restart_policy": {"Name": "no"},
            # A tiny init reaps zombies and forwards SIGTERM, so stop is quick even for a PID 1 that
            # ignores signals (busybox sleep does).
            "init": True,
            # Bounded logs: a chatty replica must not fill the worker's disk.
            "log_config": LogConfig(type=LogConfig.types.JSON, config={"max-size": "10m", "max-file": "3"}),
            "detach": True,
        }
        kwargs.update(container_limits(spec))
        if self.network_for is not None:
            try:
                net = self.network_for(alloc)
            except (docker.errors.DockerException, requests.exceptions.RequestException, RuntimeError) as exc:
                raise _failure(exc, "make the project network") from exc
            if net:
                kwargs["network"], kwargs["dns"] = net["network"], list(net["dns"])
        mounts = self._mounts(alloc)
        if mounts:
            kwargs["volumes"] = mounts

        # Optimistic: the agent starts an allocation it saw no container for, so the name is normally
        # free and no list comes first. A taken name (an agent restarted mid-start, a legacy container)
        # is looked at only then: a running one is the replica, a dead one is replaced.
        try:
            container_id = self._create(kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise _failure(exc, "create container", image=spec["image"], host_port=host_port) from exc
            for existing in self._find(alloc["id"]):
                if existing.status == "running":
                    return _state(existing.attrs)
                # A dead container keeps its name and host port: remove it before recreating.
                self._remove(existing)
            try:
                container_id = self._create(kwargs)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc2:
                raise _failure(exc2, "create container", image=spec["image"], host_port=host_port) from exc2
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "create container", image=spec["image"], host_port=host_port) from exc
        try:
            self.client.api.start(container_id)
            state = _state(self.client.api.inspect_container(container_id))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            # Leave nothing behind: a created-but-never-started container would hold the name.
            self._remove_id(container_id)
            raise _failure(exc, "start container", image=spec["image"], host_port=host_port) from exc
        # The next list sees this container in this state: no second inspect of it then.
        self._inspected[(state.container_id, state.status)] = state
        return state

    def _create(self, kwargs: dict[str, Any]) -> str:
        """`docker create` in one engine call; the container's id. (The SDK's `containers.create` also
        inspects the new container, which the start makes stale at once.)"""
        if _create_container_args is None:  # pragma: no cover
            return str(self.client.containers.create(**kwargs).id)
        args = _create_container_args({**kwargs, "version": self.client.api._version})
        return str(self.client.api.create_container(**args)["Id"])

    def _remove_id(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass  # best effort: a start already failed, and that is what gets reported

    def exec_check(self, alloc_id: str, cmd: list[str]) -> int:
        """Run a health check command inside the allocation's running container; its exit code. Output
        is discarded (bounded by the engine's demux of a short-lived exec)."""
        containers = self._find(alloc_id)
        if not containers:
            raise RuntimeFailure(f"no container for allocation {alloc_id}")
        try:
            result = containers[0].exec_run(list(cmd), stdout=False, stderr=False)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "exec health check") from exc
        return int(result.exit_code if result.exit_code is not None else -1)

    # -- volumes (orca.volumes) -------------------------------------------------------------------

    def _mounts(self, alloc: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Docker `volumes` for the allocation: its named volumes (created here, labelled with the owner)
        and the bind mounts this node's config allows; a refused bind fails the start with its reason."""
        spec = alloc["spec"]
        out: dict[str, dict[str, str]] = {}
        named = volumes.named_volumes(spec)
        if named:
            gen = alloc.get("volume_gen")
            if gen is None:
                raise RuntimeFailure("volumes not bound to this node yet (waiting for the leader)")
            for vol in named:
                name = self._ensure_volume(alloc["service"], int(alloc.get("index", 0)), int(gen), vol["name"])
                out[name] = {"bind": vol["path"], "mode": "rw"}
        for bind in volumes.binds(spec):
            host = os.path.realpath(bind["host"])  # a symlink must not lead outside the allowed paths
            refusal = volumes.bind_refusal(host, bind["read_only"], list(self.bind_paths), list(self.bind_paths_rw))
            if refusal:
                raise RuntimeFailure(refusal)
            out[host] = {"bind": bind["path"], "mode": "ro" if bind["read_only"] else "rw"}
        return out

    def _ensure_volume(self, service: str, slot: int, gen: int, name: str) -> str:
        """Create the replica's volume if missing (labelled with its owner) and return its name; a volume of
        that name owned by another cluster or node is refused, never mounted."""
        assert self.cluster_id is not None
        vname = volumes.docker_volume_name(self.cluster_id, self.node_id, service, slot, gen, name)
        labels = {LABEL_CLUSTER: self.cluster_id, LABEL_NODE: self.node_id, LABEL_SERVICE: service,
                  "orca.slot": str(slot), "orca.gen": str(gen), "orca.volume": name}
        try:
            try:
                existing = self.client.volumes.get(vname)
            except docker.errors.NotFound:
                self.client.volumes.create(name=vname, driver="local", labels=labels)
                log.info("created volume %s", vname)
                return vname
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "create volume") from exc
        have = existing.attrs.get("Labels") or {}
        if any(have.get(k) != v for k, v in labels.items()):
            raise RuntimeFailure(f"volume {vname} exists but is not this node's (labels differ); not mounting it")
        return vname

    def volumes(self) -> list[dict[str, Any]]:
        """This node's orca volumes (its cluster's and node's labels only), with their owner labels."""
        owner = self._owner_labels()
        try:
            found = self.client.volumes.list(filters={"label": owner})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "list volumes") from exc
        out = []
        for vol in found:
            labels = vol.attrs.get("Labels") or {}
            out.append({"name": vol.name, "service": labels.get(LABEL_SERVICE),
                        "slot": _int_or_none(labels.get("orca.slot")), "gen": _int_or_none(labels.get("orca.gen")),
                        "volume": labels.get("orca.volume"),
                        "created_at": vol.attrs.get("CreatedAt")})
        return sorted(out, key=lambda v: v["name"])

    def purge_volumes(self, purges: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Remove the volumes the leader's removal orders name; returns the orders now done (no such volume
        left). A volume still mounted (its container is being stopped) stays for the next call."""
        done = []
        owner = self._owner_labels()
        for order in purges:
            wanted = [*owner, f"{LABEL_SERVICE}={order['service']}", f"orca.slot={order['slot']}",
                      f"orca.gen={order['gen']}"]
            try:
                found = self.client.volumes.list(filters={"label": wanted})
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise _failure(exc, "list volumes") from exc
            left = 0
            for vol in found:
                try:
                    vol.remove()
                    log.info("removed volume %s", vol.name)
                except docker.errors.NotFound:
                    pass
                except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                    left += 1
                    log.info("volume %s not removed yet: %s", vol.name, _short(str(exc)))
            if not left:
                done.append(order)
        return done

    def stop(self, alloc_id: str, timeout_s: float = 5) -> None:
        """Stop (SIGTERM, then SIGKILL after `timeout_s`) and remove; nothing there is fine."""
        known = [s.container_id for s in list(self._inspected.values()) if s.alloc_id == alloc_id]
        if len(known) == 1:
            # The last list saw it: stop and remove it by id, two engine calls instead of four (a labelled
            # list inspects what it finds). The name holds the allocation id, so the engine has no other
            # container of it; one the list did not see (this one gone meanwhile) is found by label below.
            self._inspected = {k: v for k, v in self._inspected.items() if k[0] != known[0]}
            try:
                self.client.api.stop(known[0], timeout=max(0, math.ceil(timeout_s)))
                self.client.api.remove_container(known[0], force=True)
                return
            except docker.errors.NotFound:
                pass
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise _failure(exc, "stop container") from exc
        for container in self._find(alloc_id):
            try:
                if container.status in ("running", "restarting", "paused"):
                    container.stop(timeout=max(0, math.ceil(timeout_s)))
            except docker.errors.NotFound:
                continue
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise _failure(exc, "stop container") from exc
            self._remove(container)

    def restart(self, alloc_id: str) -> None:
        """Restart in place (same container, same host port); starts an exited one again."""
        containers = self._find(alloc_id)
        if not containers:
            raise RuntimeFailure(f"no container for allocation {alloc_id}")
        try:
            containers[0].restart(timeout=5)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "restart container") from exc
        finally:  # same id and maybe the same state, but a new StartedAt: inspect it again
            self._inspected = {k: v for k, v in self._inspected.items() if k[0] != containers[0].id}

    def logs(self, alloc_id: str, tail: int = 100, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes]:
        """Stdout and stderr, as lines (each prefixed with Docker's RFC 3339 time with `timestamps`). The
        container is looked up now, so a missing one raises here rather than on first iteration. With
        `follow` the iterator blocks until the container stops: consume it in a thread."""
        containers = self._find(alloc_id)
        if not containers:
            raise RuntimeFailure(f"no container for allocation {alloc_id}")
        try:
            chunks = containers[0].logs(stdout=True, stderr=True, stream=True, follow=follow, tail=tail,
                                        timestamps=timestamps)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "read logs") from exc
        return _split_lines(chunks)

    def ensure_image(self, image: str, always: bool = False, *, auth: dict[str, str] | None = None) -> None:
        """Pull `image` (with `auth`, registry credentials, when given; never logged) unless it is present
        (or always, for a webhook redeploy of a moving tag). The
        pull's own error (e.g. unknown repository, registry unreachable) becomes the reason; a forced
        re-pull that fails while a local copy exists keeps the local copy (an offline registry must not
        take a running service down)."""
        present = False
        try:
            self.client.images.get(image)
            present = True
            if not always:
                return
        except docker.errors.ImageNotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "inspect image", image=image) from exc
        if present:
            try:
                self._pull(image, auth)
            except RuntimeFailure as exc:
                log.warning("re-pull of %s failed (%s); using the local copy", image, exc.reason)
            return
        self._pull(image, auth)

    def _pull(self, image: str, auth: dict[str, str] | None = None) -> None:
        error = None
        try:
            # The low-level stream reports some failures as {"error": ...} messages instead of an HTTP
            # status; the high-level images.pull() would swallow them.
            for message in self.client.api.pull(image, stream=True, decode=True, auth_config=auth):
                if isinstance(message, dict) and message.get("error"):
                    error = message["error"]
            self.client.images.get(image)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            if error is None and isinstance(exc, docker.errors.APIError):
                error = exc.explanation or str(exc)
            raise RuntimeFailure(_pull_reason(image, error or str(exc))) from exc

    def stats(self, alloc_id: str) -> dict[str, Any] | None:
        """One resource sample of the allocation's running container (None when it is not running):
        {"cpu_total", "system_cpu" (ns), "online_cpus", "pre_cpu_total", "pre_system_cpu" (ns or None),
        "mem_usage", "mem_limit" (bytes)}. One-shot: the engine answers at once without its own second
        sample (the `pre_` pair is then empty; orca.agent.stats keeps the previous sample instead)."""
        running = [c for c in self._find(alloc_id) if c.status == "running"]
        if not running:
            return None
        try:
            raw = self.client.api.stats(running[0].id, stream=False, one_shot=True)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "container stats") from exc
        return _sample(raw)

    def engine_resources(self) -> dict[str, Any]:
        """What the engine's host has in total (the node's default capacity)."""
        try:
            info = self.client.info()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _failure(exc, "docker info") from exc
        return {"memory": int(info["MemTotal"]), "cpu": float(info["NCPU"])}

    # -- helpers ---------------------------------------------------------------------------------

    def _remove(self, container: Any, quiet: bool = False) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            if not quiet:
                raise _failure(exc, "remove container") from exc


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _state(attrs: dict[str, Any]) -> ContainerState:
    """Build a ContainerState from `docker inspect` output."""
    labels = attrs["Config"].get("Labels") or {}
    state = attrs.get("State") or {}
    status = state.get("Status", "unknown")
    started = state.get("StartedAt")
    try:
        version = int(labels.get(LABEL_VERSION, 0))
    except ValueError:
        version = 0
    return ContainerState(
        alloc_id=labels.get(LABEL_ALLOC, ""),
        service=labels.get(LABEL_SERVICE, ""),
        version=version,
        node=labels.get(LABEL_NODE, ""),
        container_id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        status=status,
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        started_at=started if started and started != _ZERO_TIME else None,
        host_port=_host_port(attrs),
        image=attrs["Config"].get("Image", ""),
    )


def _sample(raw: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Docker stats document that cpu % and mem % need (cgroup v1 and v2 alike)."""
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    online = cpu.get("online_cpus") or len(usage.get("percpu_usage") or ()) or 1
    mem = raw.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    # Like `docker stats`: page cache the kernel can drop is not the container's use.
    cache = detail.get("inactive_file", detail.get("total_inactive_file", detail.get("cache", 0))) or 0
    used = max(0, int(mem.get("usage") or 0) - int(cache))
    return {"cpu_total": int(usage.get("total_usage") or 0), "system_cpu": int(cpu.get("system_cpu_usage") or 0),
            "online_cpus": int(online),
            "pre_cpu_total": (pre.get("cpu_usage") or {}).get("total_usage") or None,
            "pre_system_cpu": pre.get("system_cpu_usage") or None,
            "mem_usage": used, "mem_limit": int(mem.get("limit") or 0)}


def _host_port(attrs: dict[str, Any]) -> int | None:
    """The published host port: the live mapping while running, else the configured binding."""
    for bindings in (
        (attrs.get("NetworkSettings") or {}).get("Ports") or {},
        (attrs.get("HostConfig") or {}).get("PortBindings") or {},
    ):
        for entries in bindings.values():
            for entry in entries or ():
                if entry.get("HostPort"):
                    return int(entry["HostPort"])
    return None


def _failure(exc: Exception, doing: str, *, image: str | None = None, host_port: int | None = None) -> RuntimeFailure:
    """Map an SDK error to a RuntimeFailure whose reason an operator understands without a traceback."""
    if isinstance(exc, docker.errors.ImageNotFound) and image:
        return RuntimeFailure(f"image not found: {image}")
    if isinstance(exc, docker.errors.APIError):
        text = exc.explanation or str(exc)
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        lowered = text.lower()
        if any(marker in lowered for marker in _PORT_TAKEN):
            return RuntimeFailure(f"port {host_port} already allocated" if host_port else _short(text))
        if image and "no such image" in lowered:
            return RuntimeFailure(f"image not found: {image}")
        return RuntimeFailure(_short(f"{doing} failed: {text}"))
    if isinstance(exc, requests.exceptions.RequestException):
        return RuntimeFailure(_short(f"docker engine unreachable ({doing}): {exc}"))
    return RuntimeFailure(_short(f"{doing} failed: {exc}"))


def _pull_reason(image: str, error: str) -> str:
    lowered = error.lower()
    if any(m in lowered for m in ("not found", "manifest unknown", "pull access denied", "does not exist")):
        return f"image not found: {image}"
    return _short(f"image pull failed: {image}: {error}")


# -- the fake ----------------------------------------------------------------------------------------


class FakeRuntime:
    """In-memory `Runtime` with the same contract as `DockerRuntime`, for unit tests of the agent's
    reconcile logic (and only those: the engine's behaviour itself is tested against Docker).

    `images` are present from the start; `ensure_image` "pulls" any other image unless `pullable` is
    given and lacks it. Tests drive the world with `exit()` (a replica crashes), `fail_start` (image ->
    reason for the next starts), `add_log()`, and read `calls` (every protocol call, in order).
    """

    def __init__(
        self,
        node_id: str = "node-1",
        *,
        images: Iterable[str] = (),
        pullable: Iterable[str] | None = None,
        memory: int = 4 << 30,
        cpu: float = 2.0,
        clock: Any = time.time,
    ):
        self.node_id = node_id
        self.cluster_id: str | None = None
        self.images: set[str] = set(images)
        self.pullable: set[str] | None = None if pullable is None else set(pullable)
        self.resources = {"memory": memory, "cpu": cpu}
        self.fail_start: dict[str, str] = {}
        self.calls: list[tuple[str, Any]] = []
        self._clock = clock
        self._containers: dict[str, ContainerState] = {}
        self._logs: dict[str, list[bytes]] = {}
        self._ids = itertools.count(1)
        self.usage: dict[str, tuple[float, float]] = {}  # alloc id -> (cpu %, mem %) that stats() reports
        self._stat_ticks: dict[str, int] = {}
        self.volume_table: dict[str, dict[str, Any]] = {}  # volume name -> DockerRuntime.volumes() row
        self.exec_codes: dict[str, int] = {}  # alloc id -> exit code of its exec health check
        self.pull_auth: dict[str, dict[str, str]] = {}  # image -> the credentials its last pull used

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).isoformat().replace("+00:00", "Z")

    def list(self) -> list[ContainerState]:
        self.calls.append(("list", None))
        return sorted(self._containers.values(), key=lambda c: c.alloc_id)

    def start(self, alloc: dict[str, Any], *, env: dict[str, str], host_port: int | None) -> ContainerState:
        self.calls.append(("start", alloc["id"]))
        existing = self._containers.get(alloc["id"])
        if existing is not None and existing.status == "running":
            return existing
        self._containers.pop(alloc["id"], None)
        spec = alloc["spec"]
        if spec["image"] not in self.images:
            raise RuntimeFailure(f"image not found: {spec['image']}")
        if spec["image"] in self.fail_start:
            raise RuntimeFailure(self.fail_start[spec["image"]])
        for vol in volumes.named_volumes(spec):
            if alloc.get("volume_gen") is None:
                raise RuntimeFailure("volumes not bound to this node yet (waiting for the leader)")
            name = volumes.docker_volume_name(self.cluster_id or "fake", self.node_id, alloc["service"],
                                              int(alloc.get("index", 0)), int(alloc["volume_gen"]), vol["name"])
            self.volume_table.setdefault(name, {"name": name, "service": alloc["service"],
                                                "slot": int(alloc.get("index", 0)), "gen": int(alloc["volume_gen"]),
                                                "volume": vol["name"], "created_at": self._now()})
        published = host_port if spec.get("port") else None
        if published is not None and any(
            c.host_port == published and c.status == "running" for c in self._containers.values()
        ):
            raise RuntimeFailure(f"port {published} already allocated")
        state = ContainerState(
            alloc_id=alloc["id"],
            service=alloc["service"],
            version=int(alloc["version"]),
            node=self.node_id,
            container_id=f"{next(self._ids):064x}",
            name=container_name(alloc),
            status="running",
            exit_code=None,
            started_at=self._now(),
            host_port=published,
            image=spec["image"],
        )
        self._containers[alloc["id"]] = state
        self._logs.setdefault(alloc["id"], [])
        return state

    def stop(self, alloc_id: str, timeout_s: float = 5) -> None:
        self.calls.append(("stop", alloc_id))
        self._containers.pop(alloc_id, None)
        self._logs.pop(alloc_id, None)

    def restart(self, alloc_id: str) -> None:
        self.calls.append(("restart", alloc_id))
        state = self._containers.get(alloc_id)
        if state is None:
            raise RuntimeFailure(f"no container for allocation {alloc_id}")
        self._containers[alloc_id] = replace(state, status="running", exit_code=None, started_at=self._now())

    def logs(self, alloc_id: str, tail: int = 100, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes]:
        self.calls.append(("logs", alloc_id))
        if alloc_id not in self._containers:
            raise RuntimeFailure(f"no container for allocation {alloc_id}")
        lines = self._logs.get(alloc_id, [])
        return iter(lines[-tail:] if tail > 0 else [])

    def ensure_image(self, image: str, always: bool = False, *, auth: dict[str, str] | None = None) -> None:
        self.calls.append(("ensure_image", image))
        if auth is not None:
            self.pull_auth[image] = dict(auth)
        if image in self.images:
            return
        if self.pullable is not None and image not in self.pullable:
            raise RuntimeFailure(f"image not found: {image}")
        self.images.add(image)

    def engine_resources(self) -> dict[str, Any]:
        return dict(self.resources)

    def stats(self, alloc_id: str) -> dict[str, Any] | None:
        """A sample in DockerRuntime.stats' shape: `usage[alloc_id] = (cpu_pct, mem_pct)` (default 0, 0)
        is what the sampler will compute from two consecutive calls, one simulated second apart."""
        state = self._containers.get(alloc_id)
        if state is None or state.status != "running":
            return None
        cpu_pct, mem_pct = self.usage.get(alloc_id, (0.0, 0.0))
        ticks = self._stat_ticks[alloc_id] = self._stat_ticks.get(alloc_id, 0) + 1
        cpus = int(self.resources["cpu"]) or 1
        system = ticks * 10**9 * cpus  # one second of every CPU per call
        limit = 256 << 20
        return {"cpu_total": int(round(ticks * 10**9 * cpu_pct / 100.0)), "system_cpu": system, "online_cpus": cpus,
                "pre_cpu_total": None, "pre_system_cpu": None,
                "mem_usage": int(limit * mem_pct / 100.0), "mem_limit": limit}

    def volumes(self) -> list[dict[str, Any]]:
        return [dict(v) for _, v in sorted(self.volume_table.items())]

    def exec_check(self, alloc_id: str, cmd: list[str]) -> int:
        """The exit code in `exec_codes[alloc_id]` (default 0) for a running container."""
        self.calls.append(("exec_check", alloc_id))
        state = self._containers.get(alloc_id)
        if state is None or state.status != "running":
            raise RuntimeFailure(f"no container for allocation {alloc_id}")
        return self.exec_codes.get(alloc_id, 0)

    def purge_volumes(self, purges: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append(("purge_volumes", len(purges)))
        for order in purges:
            for name, vol in list(self.volume_table.items()):
                if (vol["service"], vol["slot"], vol["gen"]) == (order["service"], order["slot"], order["gen"]):
                    del self.volume_table[name]
        return list(purges)

    # -- test controls ---------------------------------------------------------------------------

    def exit(self, alloc_id: str, exit_code: int = 1) -> None:
        """Simulate the container's process ending (a crash when `exit_code` != 0)."""
        self._containers[alloc_id] = replace(self._containers[alloc_id], status="exited", exit_code=exit_code)

    def add_log(self, alloc_id: str, line: bytes) -> None:
        self._logs.setdefault(alloc_id, []).append(line if line.endswith(b"\n") else line + b"\n")
