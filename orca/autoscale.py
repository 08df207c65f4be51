"""The autoscaler's decision: a pure function from a policy and recent samples to a replica count.

The leader samples every service every few seconds (`Sample`: the aggregate over its replicas), keeps
a short history and a `ScalerMemory` per service, calls `decide` and commits any change as a scale
with the decision's reason and figures in the event. `decide` does no I/O and reads no clock: the
caller passes `now`, in the same clock as `Sample.at`. It updates `memory` in place (that is its only
effect) and returns the `Decision`.

Semantics, in the order they are checked:

1. **Manual mode** (`policy["mode"] == "manual"`): always hold, reason "manual mode".
2. **Bounds**: a current count below `min_replicas` or above `max_replicas` (say the policy was just
   changed) is corrected to the bound at once: no data, window or cooldown needed.
3. **Window**: the samples with `now - window_seconds <= at <= now` *and taken after the last change*
   (`at > memory.last_change_at`): data from before a change describes a replica count that no
   longer runs, and would make the scaler react twice to the same load. At least 2 such samples
   spanning at least half the window are needed, else hold ("not enough data"). So after a change
   the next decision waits for half a window of fresh data.
4. **Load ratio**: for each metric, its window average over the samples that have it, divided by its
   limit; the ratio is the largest of them, and that metric drives the decision:
     rps per replica (`rps / replicas` of each sample)  / `target_rps_per_replica`
     p95 latency                                         / `max_p95_latency_ms`
     cpu % (mean over replicas, of their limit)          / `max_cpu_percent`
     memory % (idem)                                     / `max_memory_percent`
   A metric no sample has is ignored (no traffic gives no p95). A sample with 0 replicas and some
   requests counts them all against one replica (the first one to start would take them all).
5. **Scale out, fast**, when ratio > `scale_out_threshold_pct`/100 = T_out: to
   `ceil(serving * ratio / T_out)`, at least current+1, at most `max_replicas`; `serving` is the
   average replica count of the window's samples (the count that produced the observed load; it
   equals `current` except while replicas start or after a change nobody told the memory about).
   Blocked for `cooldown_seconds / 4` after the last change (in either direction). While replicas
   are still starting and the count already asked for covers the need, hold ("waiting for...").
   At 0 replicas, any request in the window is a reason to scale out (to at least 1), whatever the
   ratio: a service scaled to zero must wake up.
6. **Scale in, slow**, when ratio < `scale_in_threshold_pct`/100 = T_in for `SCALE_IN_WINDOWS` (3)
   consecutive windows: the first evaluation with a low window average counts one window, and one
   more is counted each time a further `window_seconds` has elapsed with every evaluation in between
   also low; any evaluation that is not low (or lacks data) restarts the count from zero. Also
   needs the full `cooldown_seconds` since the last change. The step removes at most a quarter of
   the replicas (at least one), never goes below `min_replicas`, and never so far that the
   linearly predicted ratio (`ratio * serving / new`) would exceed `SCALE_IN_HEADROOM` (90%) of
   T_out: a scale-in that would trigger the next scale-out is flapping. If even one replica fewer
   would, hold. It goes to 0 replicas (with `min_replicas` 0) only when the window saw no request.
7. Otherwise hold ("within the band").

Every `Decision` carries a reason with the figures and a `figures` dict of plain JSON values (no
NaN or inf: it goes into the event log). `ScalerMemory` may be lost (on failover): a fresh one only
means a full low streak is needed again before scaling in, and no cooldown is assumed. A change is
recorded in the memory when it is decided; a commit that then fails costs at most one cooldown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Sample", "Decision", "ScalerMemory", "decide", "SCALE_IN_WINDOWS", "SCALE_IN_STEP",
           "SCALE_IN_HEADROOM", "SCALE_OUT_COOLDOWN_FACTOR"]

SCALE_IN_WINDOWS = 3  # consecutive low windows before a scale-in
SCALE_IN_STEP = 0.25  # largest share of the replicas one scale-in removes (at least one replica)
SCALE_IN_HEADROOM = 0.9  # a scale-in may bring the predicted load up to 90% of the scale-out threshold
SCALE_OUT_COOLDOWN_FACTOR = 0.25  # scale-out waits cooldown_seconds * 0.25 after a change

_MAX_RATIO = 1e6
_MAX_FIGURE = 1e15

# Guards `ceil` against float noise: 2.0000000000000004 replicas means 2.
_EPSILON = 1e-9

# metric key -> (label in reasons, policy limit field, how the limit is named, unit)
_METRICS: dict[str, tuple[str, str, str, str]] = {
    "rps_per_replica": ("rps/replica", "target_rps_per_replica", "target", ""),
    "p95_ms": ("p95", "max_p95_latency_ms", "max", " ms"),
    "cpu_pct": ("cpu", "max_cpu_percent", "max", "%"),
    "mem_pct": ("memory", "max_memory_percent", "max", "%"),
}


@dataclass(frozen=True)
class Sample:
    """One aggregated observation of a service, taken by the leader every few seconds.

    `rps` is the service's total; `p95_ms` over all its requests since the previous sample;
    `cpu_pct` and `mem_pct` the mean over its replicas, each in % of the container's limit. None when
    unknown (no traffic, no stats yet).
    """

    at: float
    replicas: int
    rps: float
    p95_ms: float | None
    cpu_pct: float | None
    mem_pct: float | None


@dataclass(frozen=True)
class Decision:
    replicas: int  # desired count after this decision (== current when no change)
    direction: str  # "out" | "in" | "hold"
    reason: str  # human text with the figures
    figures: dict[str, Any]  # the numbers behind it (load ratios, window averages)


@dataclass
class ScalerMemory:
    """Per-service state the leader keeps between decisions; `decide` updates it in place."""

    last_change_at: float | None = None
    low_windows: int = 0  # consecutive low windows counted so far
    last_window_end: float | None = None  # when the last low window was counted (None: no streak)


def decide(policy: dict[str, Any], samples: list[Sample], now: float, current: int,
           memory: ScalerMemory) -> Decision:
    """The replica count `policy` (a normalized `scaling` from orca.spec) wants now; see the module doc."""
    low, high = policy["min_replicas"], policy["max_replicas"]
    base: dict[str, Any] = {"current": current, "min_replicas": low, "max_replicas": high}

    if policy["mode"] != "auto":
        _end_streak(memory)
        return Decision(current, "hold", "manual mode", base)
    if current < low:
        return _change(memory, now, current, low, f"below min_replicas: {current} < {low}; scale out to {low}",
                       base)
    if current > high:
        return _change(memory, now, current, high, f"above max_replicas: {current} > {high}; scale in to {high}",
                       base)

    window_s = float(policy["window_seconds"])
    since = now - window_s
    last_change = memory.last_change_at
    if last_change is not None and last_change > now:
        # The clock went backwards (a new leader, a clock step): restart the cooldown rather than
        # stall for however far back it went.
        memory.last_change_at = last_change = now
    recent = sorted((s for s in samples if since <= s.at <= now and (last_change is None or s.at > last_change)),
                    key=lambda s: s.at)
    covered = recent[-1].at - recent[0].at if recent else 0.0
    figures = {**base, "window_seconds": window_s, "samples": len(recent), "covered_seconds": _num(covered)}
    if len(recent) < 2 or covered < window_s / 2:
        _end_streak(memory)
        after = " since the last change" if last_change is not None and last_change > since else ""
        return Decision(current, "hold",
                        f"not enough data: {len(recent)} samples covering {covered:.1f}s of the {window_s:g}s "
                        f"window{after} (need 2 covering {window_s / 2:g}s)", figures)

    ratio, driver, load = _load(policy, recent)
    serving = sum(s.replicas for s in recent) / len(recent)
    out_at = policy["scale_out_threshold_pct"] / 100
    in_at = policy["scale_in_threshold_pct"] / 100
    figures.update(load)
    figures.update({"serving_replicas": _num(serving), "load_ratio": _num(ratio), "driver": driver,
                    "scale_out_ratio": _num(out_at), "scale_in_ratio": _num(in_at)})
    since_change = None if last_change is None else now - last_change
    if since_change is not None:
        figures["since_change_seconds"] = _num(since_change)

    cold = current == 0 and any(s.rps > 0 for s in recent)
    if ratio > out_at or cold:
        _end_streak(memory)
        what = _describe(policy, load, driver, ">", policy["scale_out_threshold_pct"])
        if cold and ratio <= out_at:
            what = f"requests arrive ({load['rps_per_replica']:.1f} rps) and no replica runs"
        if current >= high:
            return Decision(current, "hold", f"{what}; already at max_replicas {high}", figures)
        cooldown = policy["cooldown_seconds"] * SCALE_OUT_COOLDOWN_FACTOR
        if since_change is not None and since_change < cooldown:
            figures["cooldown_remaining_seconds"] = _num(cooldown - since_change)
            return Decision(current, "hold", f"{what}; scale-out cooldown: {since_change:.1f}s of {cooldown:g}s "
                                             "since the last change", figures)
        need = math.ceil(max(serving, 1.0) * ratio / out_at - _EPSILON)
        figures["needed_replicas"] = need
        if serving < current and need <= current:
            return Decision(current, "hold", f"{what}; waiting for the {current} replicas asked for "
                                             f"({serving:.1f} serving) to cover the {need} needed", figures)
        new = min(high, max(need, current + 1))
        return _change(memory, now, current, new, f"{what}: scale out {current} -> {new} "
                                                  f"(load {ratio:.0%} on {serving:.1f} serving replicas)", figures)

    if ratio < in_at:
        _count_low_window(memory, now, window_s)
        figures["low_windows"] = memory.low_windows
        what = _describe(policy, load, driver, "<", policy["scale_in_threshold_pct"])
        if memory.low_windows < SCALE_IN_WINDOWS:
            return Decision(current, "hold", f"{what} for {memory.low_windows} of {SCALE_IN_WINDOWS} windows "
                                             f"of {window_s:g}s", figures)
        if current <= low:
            return Decision(current, "hold", f"{what}; already at min_replicas {low}", figures)
        cooldown = policy["cooldown_seconds"]
        if since_change is not None and since_change < cooldown:
            figures["cooldown_remaining_seconds"] = _num(cooldown - since_change)
            return Decision(current, "hold", f"{what}; scale-in cooldown: {since_change:.1f}s of {cooldown:g}s "
                                             "since the last change", figures)
        step_floor = max(low, current - max(1, math.ceil(current * SCALE_IN_STEP - _EPSILON)))
        if any(s.rps > 0 for s in recent):
            # The fewest replicas that keep the predicted load under the headroom below the
            # scale-out line; and never none while requests arrive.
            keep = max(1, math.ceil(serving * ratio / (out_at * SCALE_IN_HEADROOM) - _EPSILON))
        else:
            # No request in the whole window: idle cpu and memory do not need a replica.
            keep = 0
        new = max(step_floor, keep)
        figures["needed_replicas"] = keep
        if new > 0:
            figures["predicted_ratio"] = _num(ratio * serving / new)
        if new >= current:
            if current == 1:
                return Decision(current, "hold", f"{what}; but the last replica still serves requests", figures)
            return Decision(current, "hold", f"{what}; but {current - 1} replicas would carry "
                                             f"{ratio * serving / (current - 1):.0%} of the limits, too close to "
                                             f"scale-out at {out_at:.0%}", figures)
        return _change(memory, now, current, new, f"{what} for {memory.low_windows} windows of {window_s:g}s: "
                                                  f"scale in {current} -> {new}", figures)

    _end_streak(memory)
    return Decision(current, "hold", f"{_describe(policy, load, driver, 'is', ratio * 100)}: within the band "
                                     f"{in_at:.0%}..{out_at:.0%}", figures)


# --------------------------------------------------------------------------------------------------

def _load(policy: dict[str, Any], recent: list[Sample]) -> tuple[float, str, dict[str, Any]]:
    """(ratio, driving metric, figures): window averages per metric and their ratios to the limits."""
    series: dict[str, list[float]] = {
        # With no replicas the first one to start takes every request.
        "rps_per_replica": [s.rps / max(s.replicas, 1) for s in recent],
        "p95_ms": [s.p95_ms for s in recent if s.p95_ms is not None],
        "cpu_pct": [s.cpu_pct for s in recent if s.cpu_pct is not None],
        "mem_pct": [s.mem_pct for s in recent if s.mem_pct is not None],
    }
    figures: dict[str, Any] = {}
    ratio, driver = 0.0, "none"
    for key, values in series.items():
        # Absurd figures are clipped (a sum of huge ones would overflow); NaN and inf are dropped.
        values = [min(v, _MAX_FIGURE) for v in values if math.isfinite(v)]
        if not values:
            continue
        average = math.fsum(values) / len(values)
        # Capped: beyond a million times a limit the answer is "max_replicas" anyway, and the
        # arithmetic on it stays finite.
        metric_ratio = min(average / policy[_METRICS[key][1]], _MAX_RATIO)
        figures[key] = _num(average)
        figures[f"{key}_ratio"] = _num(metric_ratio)
        if metric_ratio > ratio or driver == "none":
            ratio, driver = metric_ratio, key
    return ratio, driver, figures


def _describe(policy: dict[str, Any], load: dict[str, Any], driver: str, op: str, pct: float) -> str:
    """E.g. "rps/replica 92.0 > 80% of target 50 (40.0)" for the metric driving the decision."""
    if driver == "none":  # only when every figure of the window was NaN
        return f"no load figures {op} {pct:g}%"
    label, limit_field, limit_name, unit = _METRICS[driver]
    limit = policy[limit_field]
    return (f"{label} {load[driver]:.1f}{unit} {op} {round(pct, 1):g}% of {limit_name} {limit:g}{unit} "
            f"({limit * pct / 100:.1f}{unit})")


def _change(memory: ScalerMemory, now: float, current: int, new: int, reason: str,
            figures: dict[str, Any]) -> Decision:
    memory.last_change_at = now
    _end_streak(memory)
    return Decision(new, "out" if new > current else "in", reason, {**figures, "new": new})


def _count_low_window(memory: ScalerMemory, now: float, window_s: float) -> None:
    if memory.last_window_end is None:
        memory.low_windows, memory.last_window_end = 1, now
    elif now - memory.last_window_end >= window_s:
        # Once per elapsed window, however long the gap: a gap is not evidence of low load.
        memory.low_windows += 1
        memory.last_window_end = now
    elif now < memory.last_window_end:
        memory.last_window_end = now  # clock went backwards: keep the count, restart the window


def _end_streak(memory: ScalerMemory) -> None:
    memory.low_windows = 0
    memory.last_window_end = None


def _num(value: float) -> float:
    """A figure for the event log: finite (msgpack and JSON both take it) and short."""
    if not math.isfinite(value):
        return 1e308 if value > 0 else (-1e308 if value < 0 else 0.0)
    return round(value, 4)
