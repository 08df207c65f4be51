"""Inputs the API fuzz tier found answering 5xx or without the envelope, each pinned by a small test."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from orca.devcluster import free_ports
from orca.errors import NotLeader
from orca.master import views
from orca.master.http import ApiRunner, error_response


async def _raw_exchange(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("request_bytes", [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",            # request line over 8 KiB
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",  # header over 8 KiB
    b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",                              # not a method
])
async def test_http_parser_refusals_carry_the_envelope(request_bytes: bytes) -> None:
    app = web.Application()
    runner = ApiRunner(app, access_log=None)
    await runner.setup()
    port = free_ports(1)[0]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        status, body = await _raw_exchange(port, request_bytes)
    finally:
        await runner.cleanup()
    assert 400 <= status < 500
    envelope = json.loads(body)
    assert {"error", "code", "details", "timestamp"} <= set(envelope)


def test_not_leader_location_keeps_the_path_percent_encoded() -> None:
    from aiohttp.test_utils import make_mocked_request

    request = make_mocked_request("POST", "/api/v1/services/%03%0A/scale?x=%00")
    response = error_response(NotLeader("http://127.0.0.1:1"), request)
    assert response.headers["Location"] == "http://127.0.0.1:1/api/v1/services/%03%0A/scale?x=%00"


def test_huge_expiries_recorded_before_ttl_was_bounded_still_render() -> None:
    assert views.iso(3154355329313834.5) == "9999-12-31T23:59:59.999Z"
    assert views.iso(0.0) == "1970-01-01T00:00:00.000Z"
