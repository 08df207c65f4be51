"""orca.eventloop: uvloop unless opted out, and `run` runs a coroutine to its result on that loop."""

from __future__ import annotations

import asyncio

import pytest

from orca import eventloop


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("ORCA_EVENT_LOOP", raising=False)
    assert eventloop.loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize("value", ["asyncio", " AsyncIO "])
def test_opt_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ORCA_EVENT_LOOP", value)
    assert eventloop.loop_factory() is None


@pytest.mark.parametrize("value", ["", "asyncio"])
def test_run_returns_the_result(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ORCA_EVENT_LOOP", value)

    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = eventloop.run(main())
    assert module.startswith("uvloop") == (value == "" and eventloop.loop_factory() is not None)
