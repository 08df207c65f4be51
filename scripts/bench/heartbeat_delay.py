"""No false node loss on a slow link: everything one agent sends delayed by 0-1 s, nothing marked down.

Prints one JSON line. A local three-master cluster on 127.0.0.1 at default timing (heartbeat 1 s, probe
after 1.5 s of silence, lease TTL 5 s) and one real agent whose every byte towards the masters goes through
a delay line: its heartbeats and registrations (agent -> master connections) and its answers to the
leader's pushes and probes (master -> agent connections, through the address the agent advertises) are
each held for a random 0-1 s (`--delay-ms` + uniform jitter of +-`--jitter-ms`), in order, as a TCP stream
over a link with that latency sees them.

Why not `tc qdisc ... netem` in a network namespace: this kernel has no sch_netem (`tc` answers
"Specified qdisc kind is unknown"; no module directory to load it from), so the delay is made in user
space by a relay in this process; what the agent and the masters run is unchanged.

For `--seconds` (default 60) the benchmark polls the node's status every 200 ms and counts every moment
it is not `ready` (the goal: none), then SIGKILLs the agent and times its loss (down) on the same slow
link: the delay must not make a real loss slow to see either. Bounded: `--seconds` + 90 s at most.

    .venv/bin/python scripts/bench/heartbeat_delay.py [--seconds 60] [--delay-ms 500] [--jitter-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import box_load, emit, install_sigterm, wait_until  # noqa: E402

from orca.client import Client  # noqa: E402
from orca.devcluster import LocalCluster  # noqa: E402


class DelayRelay:
    """TCP relays on 127.0.0.1 in a thread of their own. `listen(target, delay_up)` returns a port that
    forwards to 127.0.0.1:`target`; bytes from the slow side (towards the target when `delay_up`, back
    from it otherwise) wait `delay_s()` each, never overtaking earlier ones."""

    def __init__(self, delay_s: Any) -> None:
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.base_events.Server] = []
        self.delayed_chunks = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while True:
                    due, data = await queue.get()
                    if not data:
                        break
                    await asyncio.sleep(max(0.0, due - self.loop.time()))
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        sender = self.loop.create_task(deliver())
        last_due = 0.0
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                due = self.loop.time() + (self.delay_s() if slow else 0.0)
                last_due = max(last_due, due)  # in order: a TCP stream never overtakes itself
                self.delayed_chunks += slow
                queue.put_nowait((last_due, data))
        queue.put_nowait((last_due, b""))
        await sender

    def listen(self, target: int, delay_up: bool) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pipe(reader, up_w, delay_up), self._pipe(up_r, writer, not delay_up))

        async def start() -> int:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.servers.append(server)
            return int(server.sockets[0].getsockname()[1])
        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def stop(self) -> None:
        def close() -> None:
            for s in self.servers:
                s.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(close)
        self.thread.join(5)


def run(seconds: float, delay_ms: int, jitter_ms: int) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    node = f"slow-{uuid.uuid4().hex[:6]}"
    relay = DelayRelay(lambda: max(0.0, (delay_ms + random.uniform(-jitter_ms, jitter_ms)) / 1000))
    try:
        with tempfile.TemporaryDirectory(prefix="orca-bench-hbdelay-") as tmp, \
                LocalCluster(Path(tmp) / "c") as cluster:
            # The agent's connections to the masters: slow on the way up (heartbeats, registration). The
            # masters advertise the relayed address too: the agent follows the leader's advertised URL.
            slow_url = {m.node_id: f"http://127.0.0.1:{relay.listen(m.api_port, delay_up=True)}"
                        for m in cluster.masters}
            for m in cluster.masters:
                m.config.write_text(m.config.read_text().replace(f'advertise = "{m.url}"',
                                                                 f'advertise = "{slow_url[m.node_id]}"'))
            cluster.start()
            cluster.wait_leader(30)
            agent = cluster.add_agent(node)
            masters = ", ".join(f'"{url}"' for url in slow_url.values())
            # The masters' connections to the agent (pushes, probes): slow on the way back (its answers).
            advertise = f"http://127.0.0.1:{relay.listen(agent.api_port, delay_up=False)}"
            text = agent.config.read_text()
            text = text.replace("masters = [" + ", ".join(f'"{m.url}"' for m in cluster.masters) + "]",
                                f"masters = [{masters}]")
            text = text.replace(f'advertise = "{agent.url}"', f'advertise = "{advertise}"')
            agent.config.write_text(text)
            cluster.start_agent(agent)
            with Client([m.url for m in cluster.masters], cluster.token("admin", "bench"), timeout=15) as client:
                wait_until(lambda: {n["id"]: n["status"] for n in client.nodes()}.get(node) == "ready", 60,
                           f"{node} ready over the slow link", period=0.2)
                not_ready: list[tuple[float, str]] = []
                t0 = time.monotonic()
                polls = 0
                while time.monotonic() - t0 < seconds:
                    status = {n["id"]: n["status"] for n in client.nodes()}.get(node)
                    polls += 1
                    if status != "ready":
                        not_ready.append((round(time.monotonic() - t0, 2), str(status)))
                    time.sleep(0.2)
                downs = [e for e in client.events(type="node_down", limit=1000) if e.get("node") == node]
                t_kill = time.monotonic()
                cluster.kill(agent)
                wait_until(lambda: {n["id"]: n["status"] for n in client.nodes()}.get(node) == "down", 30,
                           f"{node} down after the kill", period=0.1)
                loss_s = time.monotonic() - t_kill
    finally:
        relay.stop()
    return {"bench": "heartbeat_delay", "seconds": seconds, "delay_ms": [max(0, delay_ms - jitter_ms),
                                                                         delay_ms + jitter_ms],
            "delayed_chunks": relay.delayed_chunks, "polls": polls, "not_ready_samples": len(not_ready),
            "not_ready_first": not_ready[:5], "node_down_events": len(downs), "loss_detected_s": round(loss_s, 3),
            "goal": "no node marked down or unreachable while everything its agent sends is delayed 0-1 s",
            "met": not not_ready and not downs, "box": box_load(load0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--delay-ms", type=int, default=500)
    ap.add_argument("--jitter-ms", type=int, default=500)
    args = ap.parse_args()
    if not 5 <= args.seconds <= 600 or not 0 <= args.delay_ms <= 2000 or not 0 <= args.jitter_ms <= args.delay_ms:
        ap.error("--seconds 5..600, --delay-ms 0..2000, --jitter-ms 0..delay")
    install_sigterm()
    emit(run(args.seconds, args.delay_ms, args.jitter_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
