"""A hardened PySyncObj TCP transport: what an unauthenticated stranger on the Raft port can cost us.

PySyncObj 0.3.17's transport reads whatever a socket offers into one growing buffer (a 0x7fffffff length
prefix followed by a byte stream grows it without end and holds the tick thread in the read loop), keeps
every accepted connection for ever (`connectionTimeout` only fires on an event of that connection, and
we run it at 1e6 s, see `orca.raft`), and accepts connections from anyone. Its password (Fernet) keeps
strangers from *speaking* Raft, not from costing memory and tick-thread time. `GuardedTransport` keeps
the wire format byte for byte and adds, in the tick thread:

- **Peers only**: a connection whose source address is not one of the members' (resolved) addresses is
  closed at accept (the configured peers at start, then the Raft membership as it changes: a member
  added at runtime is admitted, a removed one is not); a connection that names a peer must come from
  that peer's address.
  `raft.allow_from` adds networks for peers whose connections come from another address (NAT, a
  second interface).
  The `readonly` role of PySyncObj (not used by orca) is refused.
- **Per-address limit**: at most `max_preauth_per_address` connections per source address, and
  `max_preauth_total` in all, may be waiting to authenticate; further ones are closed at accept.
  Authenticated links are at most one per peer: a peer that reconnects replaces (and closes) its old link.
- **Auth deadline**: a connection must complete the key exchange and name its node (proving the cluster
  password, as only a password holder can produce a frame that decrypts) within `auth_deadline_s`, or it
  is closed. This is also what drops idle strangers; an authenticated peer link that goes quiet is left
  to TCP keepalive (`tcp_keepalive` in `orca.raft`) and to Raft's own timeouts.
- **Frame caps**: before authentication a frame may announce at most `preauth_frame_bytes` (the
  handshake frames are ~200 bytes); after it, at most `max_frame_bytes` (derived below). A negative or
  larger length prefix closes the connection before its body is read, and the decompressed message is
  bounded too (a zlib bomb).
- **Read budget**: one poll event reads at most `read_budget_bytes` from a connection, so a fast sender
  cannot hold the tick thread; the poller is level-triggered and comes back for the rest. The receive
  buffer is a bytearray (upstream's `bytes +=` copies the whole buffer on every 64 KiB read).

Frame cap derivation (checked by tests/unit/test_raft_transport.py against real encoded frames): the
largest message is an `append_entries` carrying up to `appendEntriesBatchSizeBytes` (64 KiB) of entries
plus one more entry, each entry at most `orca.raft.MAX_ENTRY_BYTES` (16 MiB: a group-commit batch closes
at `MAX_BATCH_BYTES` = 4 MiB, and a single proposal larger than 16 MiB is refused with 413 before it is
proposed). Snapshot transfer and oversized entries go in 64 KiB chunks (`logCompactionBatchSize`,
`appendEntriesBatchSizeBytes`). On the wire a message is zlib (at worst +0.03 %) inside Fernet
(base64: x4/3, plus 57 bytes before encoding): (16 MiB + 64 KiB + 4 KiB of pickle/dict overhead) x 4/3
≈ 21.4 MiB, so `max_frame_bytes` = 32 MiB leaves 1.5x headroom. Only a password holder can reach that
cap; a stranger is bounded by `preauth_frame_bytes` per connection times the connection limits.

A password holder is trusted completely: PySyncObj unpickles its messages (code execution by design).
Keep the Raft port on a private network; these guards bound what the *rest* of that network can do.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

__all__ = ["TransportLimits", "GuardedTransport", "GuardedTcpConnection", "FrameError", "next_frame",
           "allowed_source"]

log = logging.getLogger("orca.raft.transport")

_LEN = struct.Struct("i")  # upstream's prefix: native int (little-endian on every platform we run)
MiB = 1 << 20


@dataclass(frozen=True)
class TransportLimits:
    """The bounds above; defaults are what orca runs with (see the module docstring for the numbers)."""

    max_frame_bytes: int = 32 * MiB
    max_message_bytes: int = 64 * MiB        # decompressed
    preauth_frame_bytes: int = 64 * 1024
    auth_deadline_s: float = 2.0
    max_preauth_per_address: int = 8
    max_preauth_total: int = 64
    read_budget_bytes: int = 4 * MiB
    accept_per_event: int = 64
    listen_backlog: int = 128
    allow_from: tuple[str, ...] = ()          # extra source networks (config `raft.allow_from`)


class FrameError(ValueError):
    """A length prefix that no legitimate peer sends (negative, or above the cap in force)."""


def next_frame(buf: bytes | bytearray, cap: int) -> tuple[bytes | None, int]:
    """The first complete frame body in `buf` and how many bytes it spans (None, 0 when incomplete).

    Raises FrameError as soon as the 4-byte prefix is readable and announces a length < 0 or > cap, so
    an oversized frame is refused before its body is buffered.
    """
    if len(buf) < _LEN.size:
        return None, 0
    (length,) = _LEN.unpack_from(buf, 0)
    if length < 0 or length > cap:
        raise FrameError(f"frame length {length} outside 0..{cap}")
    end = _LEN.size + length
    if len(buf) < end:
        return None, 0
    return bytes(buf[_LEN.size:end]), end


def _decompress(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, limit)
    if d.unconsumed_tail or not d.eof:
        raise FrameError(f"message decompresses beyond {limit} bytes or is truncated")
    return out


def allowed_source(source_ip: str, allowed: Iterable[str], networks: Iterable[str] = ()) -> bool:
    """Whether `source_ip` is one of `allowed` or inside one of `networks` (compared as addresses:
    ::ffff:10.0.0.1 is 10.0.0.1)."""
    try:
        src = ipaddress.ip_address(source_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    for a in allowed:
        try:
            if ipaddress.ip_address(a) == src:
                return True
        except ValueError:
            continue
    for net in networks:
        try:
            if src in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


class GuardedTcpConnection(TcpConnection):
    """`TcpConnection` with a capped, budgeted read path. The overridden methods are the name-mangled
    private ones upstream calls (pysyncobj 0.3.17); tests pin that they exist."""

    def __init__(self, *args: Any, limits: TransportLimits, peer_ip: str | None = None,
                 on_refused: Callable[[str, str], None] | None = None, **kwargs: Any) -> None:
        self.limits = limits
        self.peer_ip = peer_ip
        self.accepted_at = time.monotonic()
        self.authenticated = False
        self._on_refused = on_refused
        self._buf = bytearray()
        super().__init__(*args, **kwargs)

    def connect(self, host: str, port: int) -> bool:
        self._buf = bytearray()
        self.authenticated = False
        self.accepted_at = time.monotonic()
        return super().connect(host, port)

    def disconnect(self) -> None:
        self._buf = bytearray()
        super().disconnect()

    def _refuse(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(self.peer_ip or "?", reason)
        self.disconnect()

    @property
    def _frame_cap(self) -> int:
        return self.limits.max_frame_bytes if self.authenticated else self.limits.preauth_frame_bytes

    def _TcpConnection__tryReadBuffer(self) -> None:  # noqa: N802 - upstream's mangled name
        sock = self._TcpConnection__socket
        # Before authentication one frame of at most the pre-auth cap is all a peer needs to send: the
        # buffer then never holds more than about two caps however fast a stranger writes.
        budget = self.limits.read_budget_bytes if self.authenticated else self.limits.preauth_frame_bytes
        chunk = self._TcpConnection__recvBufferSize
        while budget > 0 and sock is not None:
            try:
                incoming = sock.recv(min(chunk, budget))
            except OSError as e:
                if e.errno not in (socket.errno.EAGAIN, socket.errno.EWOULDBLOCK):
                    self.disconnect()
                break
            if not incoming:
                self.disconnect()
                return
            self._buf += incoming
            budget -= len(incoming)
            try:  # refuse an impossible prefix before buffering its body
                if len(self._buf) >= _LEN.size:
                    next_frame(self._buf[:_LEN.size], self._frame_cap)
            except FrameError as e:
                self._refuse(str(e))
                return
        self._TcpConnection__lastReadTime = monotonic_time()

    def _TcpConnection__processParseMessage(self) -> Any:  # noqa: N802 - upstream's mangled name
        try:
            data, used = next_frame(self._buf, self._frame_cap)
        except FrameError as e:
            self._refuse(str(e))
            return None
        if data is None:
            return None
        try:
            if self.encryptor:
                stamp = self.encryptor.extract_timestamp(data)
                if stamp < self.recvLastTimestamp:
                    raise ValueError("timestamp went backwards")
                self.recvLastTimestamp = stamp
                data = self.encryptor.decrypt(data)
            limit = self.limits.max_message_bytes if self.authenticated else self.limits.preauth_frame_bytes
            message = pysyncobj_pickle.loads(_decompress(data, limit))
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise ValueError("wrong session key")
        except Exception:  # noqa: BLE001 - any undecodable frame: upstream also just disconnects
            self._refuse("undecodable frame (wrong password or garbage)")
            return None
        del self._buf[:used]
        return message


class GuardedTcpServer(TcpServer):
    """`TcpServer` that asks `admit(ip)` before it makes a connection, accepts in bursts and listens with
    a real backlog."""

    def __init__(self, poller: Any, host: str, port: int, *, limits: TransportLimits,
                 admit: Callable[[str], bool], make_conn: Callable[[socket.socket, str], TcpConnection],
                 on_new: Callable[[TcpConnection], None], **kwargs: Any) -> None:
        super().__init__(poller, host, port, on_new, **kwargs)
        self._limits = limits
        self._admit = admit
        self._make_conn = make_conn
        self._on_new = on_new

    def bind(self) -> None:
        super().bind()
        self._TcpServer__socket.listen(self._limits.listen_backlog)

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:  # noqa: N802 - upstream's name
        if event & POLL_EVENT_TYPE.READ:
            for _ in range(self._limits.accept_per_event):
                try:
                    sock, addr = self._TcpServer__socket.accept()
                except OSError as e:
                    if e.errno not in (socket.errno.EAGAIN, socket.errno.EWOULDBLOCK):
                        self.unbind()
                        return
                    break
                if not self._admit(addr[0]):
                    sock.close()
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpServer__sendBufferSize)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpServer__recvBufferSize)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setblocking(False)
                    conn = self._make_conn(sock, addr[0])
                except OSError:
                    sock.close()
                    continue
                self._on_new(conn)
        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()


class GuardedTransport(TCPTransport):
    """PySyncObj's `TCPTransport` with the guards of the module docstring. Pass as
    `transportClass=functools.partial(GuardedTransport, limits=...)`."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any,  # noqa: N803 - upstream's names
                 limits: TransportLimits | None = None) -> None:
        self.limits = limits or TransportLimits()
        self._peer_hosts = {node.address: node.address.rsplit(":", 1)[0] for node in otherNodes}
        self._conn_ip: dict[int, str] = {}
        self._refusals: dict[str, int] = {}
        self._last_refusal_log = 0.0
        self._last_sweep = 0.0
        self.refused_total = 0
        super().__init__(syncObj, selfNode, otherNodes)

    # --- who may connect --------------------------------------------------------------------------
    def _resolve(self, host: str) -> str | None:
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            return globalDnsResolver().resolve(host)

    def peer_ips(self) -> set[str]:
        """The resolved source addresses of the configured peers (hostnames through PySyncObj's DNS cache)."""
        return {ip for host in self._peer_hosts.values() if (ip := self._resolve(host)) is not None}

    def _preauth(self) -> list[GuardedTcpConnection]:
        return [c for c in self._unknownConnections if isinstance(c, GuardedTcpConnection)]

    def _admit(self, ip: str) -> bool:
        if not allowed_source(ip, self.peer_ips(), self.limits.allow_from):
            self.note_refused(ip, "not a configured peer address")
            return False
        waiting = self._preauth()
        if len(waiting) >= self.limits.max_preauth_total:
            self.note_refused(ip, f"{len(waiting)} connections already waiting to authenticate")
            return False
        same = sum(1 for c in waiting if c.peer_ip == ip)
        if same >= self.limits.max_preauth_per_address:
            self.note_refused(ip, f"{same} connections from this address already waiting to authenticate")
            return False
        return True

    def note_refused(self, ip: str, reason: str) -> None:
        """Count a refusal; log at most one summary line per 10 s (an attack must not flood the log)."""
        self.refused_total += 1
        key = f"{ip}: {reason}"
        self._refusals[key] = self._refusals.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 10.0:
            self._last_refusal_log = now
            summary = "; ".join(f"{k} (x{n})" for k, n in sorted(self._refusals.items())[:5])
            log.warning("raft port: refused connections: %s", summary)
            self._refusals.clear()

    # --- connection construction ------------------------------------------------------------------
    def _new_conn(self, sock: socket.socket | None = None, ip: str | None = None) -> GuardedTcpConnection:
        conf = self._syncObj.conf
        return GuardedTcpConnection(
            poller=self._syncObj._poller, socket=sock, timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize, recvBufferSize=conf.recvBufferSize,
            keepalive=conf.tcp_keepalive, limits=self.limits, peer_ip=ip, on_refused=self.note_refused)

    def _createServer(self) -> None:  # noqa: N802 - upstream's name
        super()._createServer()
        upstream = self._server
        conf = self._syncObj.conf
        self._server = GuardedTcpServer(
            self._syncObj._poller, upstream._TcpServer__host, upstream._TcpServer__port, limits=self.limits,
            admit=self._admit, make_conn=lambda sock, ip: self._new_conn(sock, ip),
            on_new=self._onNewIncomingConnection, sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize, connectionTimeout=conf.connectionTimeout,
            keepalive=conf.tcp_keepalive)

    def addNode(self, node: Any) -> None:  # noqa: N802 - upstream's name
        # Called for the configured peers at start and, with dynamic membership, whenever a member is
        # added (a committed or replayed change, or a snapshot's member list): its address is admitted
        # from then on, whatever the config file lists.
        self._peer_hosts[node.address] = node.address.rsplit(":", 1)[0]
        super().addNode(node)
        old = self._connections.get(node)
        if old is not None and not isinstance(old, GuardedTcpConnection):
            # Upstream made a plain TcpConnection for the outgoing link; use ours, wired the same way.
            conn = self._new_conn(ip=self._peer_hosts.get(node.address))
            conn.encryptor = self._syncObj.encryptor
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def dropNode(self, node: Any) -> None:  # noqa: N802 - upstream's name
        super().dropNode(node)
        self._peer_hosts.pop(getattr(node, "address", None), None)  # a removed member is a stranger again

    # --- handshake --------------------------------------------------------------------------------
    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802 - upstream's name
        if not self._syncObj.encryptor or conn.sendRandKey:
            # The message after the key exchange names the peer: it must be a configured peer, named
            # from its own address; `readonly` members are not part of orca.
            if isinstance(message, str) and message in self._nodeAddrToNode:
                node = self._nodeAddrToNode[message]
                ip = getattr(conn, "peer_ip", None)
                expected = self._resolve(self._peer_hosts.get(node.address, ""))
                if ip is not None and expected is not None and not allowed_source(ip, [expected],
                                                                                   self.limits.allow_from):
                    self.note_refused(ip, f"claims to be {node.address}")
                    conn.disconnect()
                    self._unknownConnections.discard(conn)
                    return
                previous = self._connections.get(node)
                super()._onIncomingMessageReceived(conn, message)
                if isinstance(conn, GuardedTcpConnection):
                    conn.authenticated = True
                if previous is not None and previous is not conn and self._connections.get(node) is conn:
                    previous.disconnect()  # quiet: it no longer maps to the node
                return
            if not (isinstance(message, list) and message and isinstance(message[0], str)
                    and message[0] in self._onUtilityMessageCallbacks):
                # 'readonly', an unknown name, or something upstream would choke on
                self.note_refused(getattr(conn, "peer_ip", "?") or "?", "names no configured peer")
                conn.disconnect()
                self._unknownConnections.discard(conn)
                return
        super()._onIncomingMessageReceived(conn, message)

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802 - upstream's name
        super()._onOutgoingMessageReceived(conn, message)
        if isinstance(conn, GuardedTcpConnection):
            conn.authenticated = True  # the peer's key frame decrypted: it holds the password

    def _onOutgoingConnected(self, conn: Any) -> None:  # noqa: N802 - upstream's name
        super()._onOutgoingConnected(conn)
        if not self._syncObj.encryptor and isinstance(conn, GuardedTcpConnection):
            conn.authenticated = True

    # --- deadline sweep ---------------------------------------------------------------------------
    def _onTick(self) -> None:  # noqa: N802 - upstream's name
        super()._onTick()
        now = time.monotonic()
        if now - self._last_sweep < 0.1:
            return
        self._last_sweep = now
        for conn in self._preauth():
            if now - conn.accepted_at > self.limits.auth_deadline_s:
                self.note_refused(conn.peer_ip or "?", f"no authentication within {self.limits.auth_deadline_s:g} s")
                conn.disconnect()
                self._unknownConnections.discard(conn)

    def connection_counts(self) -> dict[str, int]:
        """For tests and status: connections waiting to authenticate, and authenticated peer links."""
        return {"preauth": len(self._preauth()),
                "peers": sum(1 for c in self._connections.values() if c.state == CONNECTION_STATE.CONNECTED)}
