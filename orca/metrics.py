"""Prometheus metrics of masters and agents, each process in registries of its own (several masters and
agents may share a test process).

Conventions (https://prometheus.io/docs/practices/naming/), checked by `promtool check metrics` in the tests:
`orca_` prefix; cumulative counts are counters ending in `_total`, never gauges (else `rate()` is wrong);
base units as suffixes (`_seconds`, `_bytes`); fractions are `_ratio` in 0..1, never percentages; no
pre-computed rates (expose the counter, let PromQL take `rate()`); no `_created` series. Every process
exposes `orca_build_info{version,commit,python}` and the standard `process_*`/`python_*` series.

Values that live elsewhere (the Raft node's term, the dispatcher's push count) are read at scrape time by
a `LiveCollector` rather than copied into gauges by a background task, so they are never stale.
docs/metrics.md lists every series; a test holds it against the registries.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from orca import __version__

__all__ = ["MasterMetrics", "LiveCollector", "CONTENT_TYPE", "base_registry", "build_commit", "API_BUCKETS"]

# `_created` series double the counters' cardinality and no query in our dashboard or alerts needs them.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
API_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# A labelled family's reader returns [(label values, value), ...]; an unlabelled one returns the value.
Reader = Callable[[], "float | Iterable[tuple[Sequence[str], float]]"]


@functools.cache
def build_commit() -> str:
    """The commit this code was built from: `ORCA_BUILD_COMMIT` when set (packagers, images), else the
    checkout's `git rev-parse` (a development tree), else "unknown". Read once per process."""
    env = os.environ.get("ORCA_BUILD_COMMIT", "").strip()
    if env:
        return env[:40]
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=2.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit.isalnum() and len(commit) <= 40 else "unknown"


def base_registry() -> CollectorRegistry:
    """A registry with what every orca process exposes: build info, process and Python runtime series."""
    registry = CollectorRegistry(auto_describe=True)
    info = Gauge("orca_build_info", "Always 1; the labels say which orca build this process runs.",
                 ["version", "commit", "python"], registry=registry)
    info.labels(__version__, build_commit(), platform.python_version()).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class LiveCollector:
    """Families whose values are read from live objects at scrape time.

    `counter()` for monotonic counts kept by the code as plain integers (the dispatcher's push count),
    `gauge()` for current values. A reader that raises leaves its family out of that one scrape instead
    of failing the whole exposition.
    """

    def __init__(self) -> None:
        self._families: list[tuple[str, str, str, tuple[str, ...], Reader]] = []

    def counter(self, name: str, doc: str, read: Reader, labels: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        self._families.append(("counter", name[: -len("_total")], doc, tuple(labels), read))

    def gauge(self, name: str, doc: str, read: Reader, labels: Sequence[str] = ()) -> None:
        self._families.append(("gauge", name, doc, tuple(labels), read))

    def _family(self, kind: str, name: str, doc: str, labels: tuple[str, ...]) -> Metric:
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return cls(name, doc, labels=list(labels))

    def describe(self) -> Iterator[Metric]:
        for kind, name, doc, labels, _ in self._families:
            yield self._family(kind, name, doc, labels)

    def collect(self) -> Iterator[Metric]:
        for kind, name, doc, labels, read in self._families:
            family = self._family(kind, name, doc, labels)
            try:
                value: Any = read()
                if labels:
                    for label_values, v in value:
                        family.add_metric(list(label_values), float(v))
                else:
                    family.add_metric([], float(value))
            except Exception:  # noqa: BLE001 - one broken reader must not take the scrape down
                continue
            yield family


class MasterMetrics:
    """The master's registry: API and Raft-write instruments pushed by the code, plus live families.

    `live` is filled by whoever owns the values (MasterApi: Raft and services; ControlPlane: scheduler,
    dispatcher, nodes). `on_scrape` remains for callers that update gauges right before a scrape.
    """

    def __init__(self) -> None:
        self.registry = base_registry()
        r = self.registry
        self.api_requests = Counter("orca_api_requests", "API requests by route, method and status code.",
                                    ["route", "method", "code"], registry=r)
        self.api_latency = Histogram("orca_api_request_duration_seconds", "API request latency by route and method.",
                                     ["route", "method"], registry=r, buckets=API_BUCKETS)
        self.raft_writes = Counter("orca_raft_writes", "Entries proposed through the API by op and outcome.",
                                   ["op", "outcome"], registry=r)
        self.live = LiveCollector()
        r.register(self.live)
        self._refreshers: list[Callable[[], None]] = []

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Register a function that updates gauges from live state right before each scrape."""
        self._refreshers.append(refresh)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry)
