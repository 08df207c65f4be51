"""The proposals' deadlines (orca.raft.RaftNode._expire): one shared timer resolves every overdue
proposal with the time-out value and looks again while any proposal waits."""

from __future__ import annotations

import asyncio
import time

from orca import raft


def test_expire_times_out_only_overdue_proposals_and_rearms() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = raft.RaftNode.__new__(raft.RaftNode)
        node.loop = loop
        node._expiry = None
        now = time.monotonic()
        overdue, waiting = loop.create_future(), loop.create_future()
        node._waiting = {overdue: (now - 5, now - 1), waiting: (now, now + 60)}
        node._expire()
        assert overdue.done() and overdue.result() == (None, raft._TIMED_OUT)
        assert not waiting.done()
        assert node._expiry is not None  # a proposal still waits: the timer looks again
        assert node._expiry.when() - loop.time() <= raft.EXPIRY_SLACK_S + 0.01
        node._expiry.cancel()
        node._waiting = {}
        node._expire()
        assert node._expiry is None  # nothing waits: no timer

    asyncio.run(main())


def test_in_flight_counts_waiting_proposals() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = raft.RaftNode.__new__(raft.RaftNode)
        node._waiting = {}
        assert node.in_flight() == (0, 0.0)
        now = time.monotonic()
        node._waiting = {loop.create_future(): (now - 2, now + 1), loop.create_future(): (now, now + 3)}
        count, oldest = node.in_flight()
        assert count == 2 and oldest >= 2

    asyncio.run(main())
