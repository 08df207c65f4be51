"""Named volumes and bind mounts: the pure rules shared by the state machine, the scheduler and the agent.

How a named volume lives (one Docker volume per replica slot and volume name):
- When the leader first places slot `i` of a service whose spec has named volumes, the `plan` entry binds
  the slot to that node: `service["volumes"][str(i)] = {"node": N, "gen": G}`. `G` comes from the
  cluster-wide counter `state["volume_seq"]`, so a purged-and-redeployed service never reuses an old
  volume whose removal is still under way.
- From then on the scheduler places that slot only on N (sticky placement). When N is down or not
  eligible, the slot stays pending with `waiting for node N that holds volume <name>`; it never moves
  to an empty volume elsewhere. Restarts, redeploys, rolling updates (the new version of slot `i` lands
  on N and mounts the same volume) and agent restarts all keep the data.
- A drain of a node that holds volumes of running services is refused unless forced; a forced drain
  drops those bindings (the replicas start on empty volumes elsewhere; the old volumes stay on N, listed
  by `orca volumes ls`, until `orca volumes rm`).
- `orca stop NAME --purge` (op `purge_service`) and `orca volumes rm` turn bindings into tombstones in
  `state["volume_purges"][node]`; the dispatcher sends a node its tombstones and the agent removes the
  matching Docker volumes once no container uses them (retried on every push until done).
- On the node, a volume is `orca-<cluster8>-<node>-<service>-<slot>-g<gen>-<name>` with labels
  `orca.cluster`, `orca.node`, `orca.service`, `orca.slot`, `orca.gen` and `orca.volume`: an agent lists,
  mounts and removes only volumes carrying its own cluster and node labels.

Bind mounts (`{host, path, read_only}`) need the host path under one of the agent config's
`[agent] bind_paths` (read-only) or `bind_paths_rw` (may be mounted writable); anything else fails the
replica with a reason naming the path.
"""

from __future__ import annotations

import os.path
from typing import Any

__all__ = ["named_volumes", "binds", "docker_volume_name", "bind_refusal", "VOLUME_LABELS", "TOMBSTONES_KEPT",
           "waiting_reason"]

# Docker labels of an orca volume (the cluster and node labels are the runtime's own).
VOLUME_LABELS = ("orca.service", "orca.slot", "orca.gen", "orca.volume")
# Tombstones kept per node: far more than a node's removals between two pushes (one every few seconds).
TOMBSTONES_KEPT = 1024


def named_volumes(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The `{name, path}` entries of a normalized spec (stored specs from before volumes have none)."""
    return [v for v in (spec or {}).get("volumes") or [] if "name" in v]


def binds(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The `{host, path, read_only}` entries of a normalized spec."""
    return [v for v in (spec or {}).get("volumes") or [] if "host" in v]


def docker_volume_name(cluster_id: str, node: str, service: str, slot: int, gen: int, name: str) -> str:
    """The engine-wide unique name of one replica's volume; readable in `docker volume ls`."""
    return f"orca-{cluster_id[:8]}-{node}-{service}-{int(slot)}-g{int(gen)}-{name}"


def waiting_reason(node: str, spec: dict[str, Any] | None) -> str:
    """The pending reason of a slot whose volume node cannot take it now."""
    names = [v["name"] for v in named_volumes(spec)]
    return f"waiting for node {node} that holds volume {names[0] if names else 'data'}"


def _under(path: str, prefix: str) -> bool:
    prefix = os.path.normpath(prefix)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def bind_refusal(host: str, read_only: bool, allowed_ro: list[str], allowed_rw: list[str]) -> str | None:
    """None when the agent's config allows mounting `host` this way, else the reason shown for the replica.

    `host` is normalized by the spec (absolute, no '..'); a symlink inside an allowed directory could still
    point outside it, so the agent resolves it with `os.path.realpath` before calling this.
    """
    if any(_under(host, p) for p in allowed_rw):
        return None
    if any(_under(host, p) for p in allowed_ro):
        return None if read_only else f"bind mount {host} may only be read-only on this node (bind_paths)"
    return f"bind mount {host} is not allowed on this node (not under the agent's bind_paths)"
