"""What clients did under faults (the recorder) and whether the cluster kept its promises (the checker).

Recorder. `History` is shared by every client thread. A client calls `op = history.invoke(...)` before it
sends a request and exactly one of `ok`, `fail` or `unknown` when it knows the outcome; times are
`time.monotonic()`. The three outcomes mean what they mean in Jepsen:

- `ok`      the cluster acknowledged the write (or answered the read);
- `fail`    the cluster definitely did not apply it (a 4xx refusal before any commit);
- `unknown` it may or may not have been applied: a timeout, a connection lost mid-request, a 503 after
            the leader had proposed it. An op still pending when the history is checked counts as unknown.

Checker. `check(history, final)` takes the final state as `{write key: times applied}` (build it with
`applied_counts`) and proves:

1. every acknowledged write is present exactly once (0 -> lost, 2+ -> duplicated);
2. no write is present more than once whatever its outcome (a retried `unknown` must not apply twice),
   and nothing is present that no client ever wrote (a phantom);
3. reads never go backwards per client: for two `ok` reads of the same key by the same process, the one
   invoked after the other completed returns a value at least as large (ints) or a superset (sets);
4. linearizable reads (`linearizable=True`, e.g. `?consistent=true`) that return a set of write keys
   contain every write of their scope acknowledged before the read was invoked.

Failed or unknown writes may be absent or present (once): nothing is required of them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Op", "History", "Verdict", "check", "applied_counts", "diverged", "OUTCOMES"]

OUTCOMES = ("ok", "fail", "unknown")


@dataclass
class Op:
    """One client operation. `key` is the item written (writes) or what was read (reads); `scope` groups
    writes so that a set-valued read of that scope can be checked against them."""

    id: int
    process: str
    kind: str                       # "write" | "read"
    key: str
    value: Any = None               # written value, or the value a read returned
    scope: str | None = None
    linearizable: bool = False      # reads only: must see every write of `scope` acknowledged before invoke
    invoke: float = 0.0
    complete: float | None = None
    outcome: str = "pending"        # "pending" until ok / fail / unknown
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class History:
    """A thread-safe, append-only list of ops. `clock` is injectable so unit tests can craft times."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._ids = itertools.count()

    def invoke(self, process: str, kind: str, key: str, value: Any = None, *, scope: str | None = None,
               linearizable: bool = False, at: float | None = None) -> Op:
        if kind not in ("write", "read"):
            raise ValueError(f"kind must be 'write' or 'read', not {kind!r}")
        with self._lock:
            op = Op(next(self._ids), str(process), kind, key, value, scope, linearizable,
                    self._clock() if at is None else at)
            self._ops.append(op)
        return op

    def _complete(self, op: Op, outcome: str, value: Any, error: str | None, at: float | None,
                  meta: dict[str, Any]) -> Op:
        with self._lock:
            if op.outcome != "pending":
                raise ValueError(f"op {op.id} already completed as {op.outcome}")
            op.complete = self._clock() if at is None else at
            op.outcome = outcome
            op.error = error
            if value is not None:
                op.value = value
            op.meta.update(meta)
        return op

    def ok(self, op: Op, value: Any = None, *, at: float | None = None, **meta: Any) -> Op:
        return self._complete(op, "ok", value, None, at, meta)

    def fail(self, op: Op, error: str, *, at: float | None = None, **meta: Any) -> Op:
        return self._complete(op, "fail", None, error, at, meta)

    def unknown(self, op: Op, error: str, *, at: float | None = None, **meta: Any) -> Op:
        return self._complete(op, "unknown", None, error, at, meta)

    def ops(self) -> list[Op]:
        """A snapshot of the ops (the Op objects themselves: do not mutate them)."""
        with self._lock:
            return list(self._ops)

    def writes(self, outcome: str | None = None) -> list[Op]:
        return [o for o in self.ops() if o.kind == "write" and (outcome is None or o.outcome == outcome)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)


@dataclass
class Verdict:
    acked: int = 0
    unknown: int = 0
    failed: int = 0
    reads: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    phantoms: list[str] = field(default_factory=list)
    backwards_reads: list[str] = field(default_factory=list)
    stale_reads: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.phantoms or self.backwards_reads or self.stale_reads)

    def __str__(self) -> str:
        head = (f"acked={self.acked} unknown={self.unknown} failed={self.failed} reads={self.reads} "
                f"lost={len(self.lost)} duplicated={len(self.duplicated)} phantoms={len(self.phantoms)} "
                f"backwards_reads={len(self.backwards_reads)} stale_reads={len(self.stale_reads)}")
        details = [f"lost: {sorted(self.lost)[:10]}" if self.lost else "",
                   f"duplicated: {dict(sorted(self.duplicated.items())[:10])}" if self.duplicated else "",
                   f"phantoms: {sorted(self.phantoms)[:10]}" if self.phantoms else "",
                   f"backwards: {self.backwards_reads[:5]}" if self.backwards_reads else "",
                   f"stale: {self.stale_reads[:5]}" if self.stale_reads else ""]
        return "; ".join([head, *[d for d in details if d]])


def _ge(later: Any, earlier: Any) -> bool:
    if isinstance(later, (set, frozenset)) and isinstance(earlier, (set, frozenset)):
        return later >= earlier
    return bool(later >= earlier)


def check(history: History | Iterable[Op], final: Mapping[str, int]) -> Verdict:
    """Judge a history against the final state `{write key: times applied}` (module docstring, rules 1-4)."""
    ops = history.ops() if isinstance(history, History) else list(history)
    verdict = Verdict()
    writes = [o for o in ops if o.kind == "write"]
    written = {o.key for o in writes}
    for o in writes:
        if o.outcome == "ok":
            verdict.acked += 1
            if final.get(o.key, 0) == 0:
                verdict.lost.append(o.key)
        elif o.outcome == "fail":
            verdict.failed += 1
        else:  # unknown, or still pending: either may have been applied
            verdict.unknown += 1
    verdict.duplicated = {k: n for k, n in final.items() if n > 1}
    verdict.phantoms = sorted(k for k, n in final.items() if n > 0 and k not in written)

    reads = [o for o in ops if o.kind == "read" and o.outcome == "ok" and o.complete is not None]
    verdict.reads = len(reads)
    by_client: dict[tuple[str, str], list[Op]] = {}
    for r in reads:
        by_client.setdefault((r.process, r.key), []).append(r)
    for (process, key), rs in by_client.items():
        # Sweep in invoke order; `seen` folds every read that completed before the current one began
        # (the only reads ordered before it): the largest int, or the union of the sets.
        by_complete = sorted(rs, key=lambda o: o.complete)
        j, seen, seen_op = 0, None, None
        for later in sorted(rs, key=lambda o: o.invoke):
            while j < len(by_complete) and by_complete[j].complete <= later.invoke:
                v = by_complete[j].value
                if seen is None:
                    seen, seen_op = v, by_complete[j]
                elif isinstance(v, (set, frozenset)):
                    seen, seen_op = frozenset(seen) | v, by_complete[j]
                elif v > seen:
                    seen, seen_op = v, by_complete[j]
                j += 1
            if seen is not None and not _ge(later.value, seen):
                verdict.backwards_reads.append(
                    f"{process} read {key}: {_show(later.value)} (op {later.id}) after "
                    f"{_show(seen)} (op {seen_op.id if seen_op else '?'})")
    acked_by_scope: dict[str | None, list[Op]] = {}
    for o in writes:
        if o.outcome == "ok":
            acked_by_scope.setdefault(o.scope, []).append(o)
    for r in reads:
        if not r.linearizable or not isinstance(r.value, (set, frozenset)):
            continue
        missing = sorted(w.key for w in acked_by_scope.get(r.key, [])
                         if w.complete is not None and w.complete < r.invoke and w.key not in r.value)
        if missing:
            verdict.stale_reads.append(f"{r.process} read {r.key} (op {r.id}) misses acknowledged {missing[:5]}"
                                       f"{' ...' if len(missing) > 5 else ''}")
    return verdict


def _show(value: Any) -> str:
    if isinstance(value, (set, frozenset)):
        return f"{len(value)} items"
    return repr(value)


def applied_counts(services: Iterable[Mapping[str, Any]], events: Mapping[str, int] | None = None,
                   keys: Iterable[str] | None = None) -> dict[str, int]:
    """`{service name: times applied}` from a status list and, optionally, counted deploy events.

    A service present counts once. Writers put their attempt number in the spec, so a retry the server
    applied instead of replaying the first result raised the version: `version` is a lower bound of the
    applications. `events` (`service_deployed` + `service_updated` per service, when every event was
    seen) catches a same-attempt double apply, which leaves the version at 1. `keys` limits the result
    to the services the history wrote (other services of the cluster are not phantoms).
    """
    wanted = set(keys) if keys is not None else None
    counts: dict[str, int] = {}
    for svc in services:
        name = svc["name"]
        if wanted is not None and name not in wanted:
            continue
        counts[name] = max(1, int(svc.get("version") or 1))
    for name, n in (events or {}).items():
        if (wanted is None or name in wanted) and n > counts.get(name, 0):
            counts[name] = n
    return counts


def diverged(views: Mapping[str, Any]) -> list[str]:
    """Differences between the masters' views of the same thing (e.g. `{master: {name: version}}`);
    empty when they all agree."""
    if len(views) < 2:
        return []
    names = sorted(views)
    ref_name, ref = names[0], views[names[0]]
    out = []
    for name in names[1:]:
        view = views[name]
        if view == ref:
            continue
        if isinstance(ref, Mapping) and isinstance(view, Mapping):
            only_ref = sorted(set(ref) - set(view))
            only_view = sorted(set(view) - set(ref))
            changed = sorted(k for k in set(ref) & set(view) if ref[k] != view[k])
            out.append(f"{name} vs {ref_name}: missing {only_ref[:5]} ({len(only_ref)}), extra {only_view[:5]} "
                       f"({len(only_view)}), different {changed[:5]} ({len(changed)})")
        else:
            out.append(f"{name} vs {ref_name}: {view!r} != {ref!r}")
    return out
