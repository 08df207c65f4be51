"""The service mesh's DNS responder: service names to VIPs, for the containers of this node.

Containers on a project network get `dns = [resolver, host's upstreams...]`; Docker's embedded DNS
(127.0.0.11 in the container) forwards every name it does not know itself to them, from the container's
own address, so the source address says which project asks (orca.agent.mesh maps it by network).

Answers (`answer`, pure):
  - `NAME` -> the VIP of service NAME of the asking container's project;
  - `NAME.PROJECT` -> the VIP of service NAME of project PROJECT (whether the connection is then allowed
    is the listener's decision, orca.agent.mesh_config);
  - A records only; for a known name any other type gets an empty NOERROR answer (no AAAA, so clients
    do not wait for one);
  - anything else: SERVFAIL, so Docker's embedded DNS asks the next server (the host's upstream one);
    an unknown name in the mesh's shape gets no NXDOMAIN either, as it may be a real host name.
Every packet is bounded (512 bytes in, one question), parsed with dnslib, and a malformed one is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

__all__ = ["answer", "MeshDns", "TTL_S", "MAX_QUERY_BYTES"]

log = logging.getLogger("orca.agent.mesh_dns")

TTL_S = 5  # VIPs are stable for a service's life; short anyway so a purge and redeploy is seen soon
MAX_QUERY_BYTES = 512

# (project of the asker or None, qname) -> VIP or None
Lookup = Callable[[str | None, str], str | None]


def resolve(names: dict[tuple[str, str], str], project: str | None, qname: str) -> str | None:
    """The VIP for `qname` asked from `project`; `names` maps (project, service) to VIP."""
    labels = qname.lower().rstrip(".").split(".")
    if len(labels) == 1 and project is not None:
        return names.get((project, labels[0]))
    if len(labels) == 2:
        return names.get((labels[1], labels[0]))
    return None


def answer(data: bytes, project: str | None, names: dict[tuple[str, str], str]) -> bytes | None:
    """The reply to one query packet, or None to drop it (malformed, not a query, too long)."""
    if len(data) > MAX_QUERY_BYTES:
        return None
    try:
        query = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, KeyError, UnicodeDecodeError):
        return None
    if query.header.qr or len(query.questions) != 1:
        return None
    question = query.questions[0]
    reply = query.reply()
    reply.header.ra = 0
    qname = str(question.qname)
    vip = resolve(names, project, qname)
    if vip is None:
        reply.header.aa = 0
        reply.header.rcode = RCODE.SERVFAIL
    elif question.qtype in (QTYPE.A, QTYPE.ANY):
        reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(vip), ttl=TTL_S))
    return reply.pack()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: MeshDns) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            out = answer(data, self.owner.project_of(addr[0]), self.owner.names)
        except Exception:  # noqa: BLE001 - one odd packet must never stop the responder
            log.debug("dropping a DNS query from %s", addr[0], exc_info=True)
            return
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class MeshDns:
    """UDP on `address`:53 (SO_REUSEPORT: agents of one cluster on one engine answer alike)."""

    def __init__(self, address: str, project_of: Callable[[str], str | None], port: int = 53) -> None:
        self.address = address
        self.port = port
        self.project_of = project_of
        self.names: dict[tuple[str, str], str] = {}
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                           local_addr=(self.address, self.port), reuse_port=True)
        self._transport = transport  # type: ignore[assignment]

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
