"""Regenerate the autoscaler's metric series (`autoscale_*.json`): `python make_autoscale_series.py`.

Each series is what the leader would have sampled (every 5 s) from one service running a fixed
number of replicas (`recorded_replicas`) under a demand shape, with the noise of real traffic:
request rates jitter (lognormal), cpu follows requests per replica, memory sits at a baseline that
creeps with load, p95 latency grows like a queue's as a replica nears its capacity (100 rps), and a
service with no request has no p95. Seeded, so the files are stable; the tests replay them (see
`replay` in tests/unit/test_autoscale.py for how figures are rescaled to the replicas the autoscaler
runs).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
INTERVAL_S = 5.0
P95_BASE_MS = 20.0
CAPACITY_RPS = 100.0  # what one replica serves before its queue grows without bound


def observe(rng: random.Random, at: float, replicas: int, demand: float, jitter: float) -> list[Any]:
    rps = max(0.0, demand * rng.lognormvariate(0.0, jitter))
    per_replica = rps / replicas
    util = min(per_replica / CAPACITY_RPS, 0.95)
    p95 = None if rps == 0 else P95_BASE_MS / (1 - util) * rng.lognormvariate(0.0, 0.1)
    cpu = min(100.0, 2.0 + 0.9 * per_replica * rng.lognormvariate(0.0, 0.05))
    mem = 16.0 + 0.05 * per_replica + rng.gauss(0.0, 0.5)
    return [round(at, 1), replicas, round(rps, 2), None if p95 is None else round(p95, 1), round(cpu, 1),
            round(mem, 1)]


def series(name: str, description: str, replicas: int, duration_s: float, demand: Any, policy: dict[str, Any],
           *, jitter: float = 0.08, seed: int = 1, gaps: tuple[tuple[float, float], ...] = (),
           cpu_missing_until: float = 0.0, **extra: Any) -> dict[str, Any]:
    rng = random.Random(seed)
    samples = []
    t = 1_700_000_000.0  # recorded wall-clock times, as the leader stamps them
    start = t
    while t - start < duration_s:
        rel = t - start
        if not any(a <= rel < b for a, b in gaps):
            row = observe(rng, t, replicas, demand(rel, rng), jitter)
            if rel < cpu_missing_until:
                row[4] = row[5] = None  # no container stats yet
            samples.append(row)
        t += INTERVAL_S
    return {"name": name, "description": description, "recorded_replicas": replicas, "interval_s": INTERVAL_S,
            "p95_base_ms": P95_BASE_MS, "policy": policy, **extra,
            "columns": ["at", "replicas", "rps", "p95_ms", "cpu_pct", "mem_pct"], "samples": samples}


def ramp(rel: float, rng: random.Random) -> float:
    return 40 + 260 * min(rel / 900, 1.0)


def spike(rel: float, rng: random.Random) -> float:
    if 600 <= rel < 720:
        return 60 + 540 * min((rel - 600) / 10, 1.0)
    return 60.0


def steady(rel: float, rng: random.Random) -> float:
    return 70.0


def decay(rel: float, rng: random.Random) -> float:
    return 20 + 260 * math.exp(-rel / 600)


def noisy_low(rel: float, rng: random.Random) -> float:
    if 1200 <= rel < 1380:
        return 0.0  # nobody at all for three minutes
    burst = 4.0 if rng.random() < 0.03 else 1.0
    return 12.0 * burst


SERIES = [
    series("ramp", "40 -> 300 rps over 15 min on 2 replicas, then a plateau", 2, 1500, ramp,
           {"mode": "auto"}),
    series("spike", "60 rps on 2 replicas, a 2-minute spike to 600 rps at 10 min, then 60 again", 2, 2400,
           spike, {"mode": "auto", "window_seconds": 30, "cooldown_seconds": 60}, seed=2),
    series("steady", "70 rps on 2 replicas (70% of target) for 30 min, container stats late at start", 2, 1800,
           steady, {"mode": "auto"}, seed=3, cpu_missing_until=30),
    series("decay", "280 rps decaying to 20 rps over 40 min on 8 replicas", 8, 2400, decay,
           {"mode": "auto", "min_replicas": 2}, seed=4),
    series("noisy_low", "about 12 rps with bursts on 4 replicas, 3 idle minutes, a 2-minute sampling gap "
           "(leader failover: memory lost at its end)", 4, 2400, noisy_low, {"mode": "auto"}, jitter=0.5, seed=5,
           gaps=((1800, 1920),), failover_at_s=1920),
]


def main() -> None:
    for data in SERIES:
        rows = ",\n    ".join(json.dumps(row) for row in data["samples"])
        head = json.dumps({k: v for k, v in data.items() if k != "samples"}, indent=2)[:-2]
        (HERE / f"autoscale_{data['name']}.json").write_text(f'{head},\n  "samples": [\n    {rows}\n  ]\n}}\n')


if __name__ == "__main__":
    main()
