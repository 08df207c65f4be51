"""The hardened Raft transport (orca.raft_transport): its pure pieces exhaustively, its guards against a
real pair of PySyncObj nodes on 127.0.0.1 driven by raw sockets, and the frame-cap derivation against
frames encoded exactly as PySyncObj encodes them."""

from __future__ import annotations

import functools
import os
import pickle
import socket
import struct
import time
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.encryptor import getEncryptor
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

from orca.devcluster import free_ports
from orca.raft import MAX_BATCH_BYTES, MAX_ENTRY_BYTES, _take_batch
from orca.raft_transport import FrameError, GuardedTransport, TransportLimits, allowed_source, next_frame

PASSWORD = "test-password"


# --- pure pieces ----------------------------------------------------------------------------------
@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=4000))
def test_next_frame_round_trip(body: bytes, cap: int) -> None:
    framed = struct.pack("i", len(body)) + body + b"tail"
    if len(body) > cap:
        with pytest.raises(FrameError):
            next_frame(framed, cap)
    else:
        data, used = next_frame(framed, cap)
        assert data == body and used == 4 + len(body)
        # every strict prefix is simply incomplete
        for cut in {0, 3, 4, 4 + len(body) - 1} - {4 + len(body)}:
            if 0 <= cut < 4 + len(body):
                assert next_frame(framed[:cut], cap) == (None, 0)


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.binary(max_size=64))
def test_next_frame_refuses_impossible_prefixes_before_the_body(length: int, tail: bytes) -> None:
    cap = 1 << 16
    buf = struct.pack("i", length) + tail
    if length < 0 or length > cap:
        with pytest.raises(FrameError):
            next_frame(buf, cap)
    else:
        data, used = next_frame(buf, cap)
        assert (data is None) == (len(tail) < length)


def test_allowed_source() -> None:
    assert allowed_source("127.0.0.1", ["127.0.0.1"])
    assert allowed_source("::ffff:10.0.0.1", ["10.0.0.1"])
    assert allowed_source("::1", ["::1"])
    assert not allowed_source("127.0.0.2", ["127.0.0.1"])
    assert not allowed_source("not-an-ip", ["127.0.0.1"])
    assert not allowed_source("10.0.0.1", ["host.example", "10.0.0.2"])


@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=40), st.integers(min_value=1, max_value=20000))
def test_take_batch_keeps_order_and_bounds_bytes(sizes: list[int], cap: int) -> None:
    queue = [(b"x" * n, i) for i, n in enumerate(sizes)]
    batch, rest = _take_batch(queue, cap)
    assert batch + rest == queue
    if queue:
        assert batch, "at least one entry always goes"
        assert len(batch) == 1 or sum(len(r) for r, _ in batch) <= cap
        if rest:
            assert sum(len(r) for r, _ in batch) + len(rest[0][0]) > cap


def test_upstream_internals_we_override_exist() -> None:
    """The guards override name-mangled methods of pysyncobj 0.3.17; a release that renames them must
    fail here, not silently lose the guards."""
    for cls, names in ((TcpConnection, ["_TcpConnection__tryReadBuffer", "_TcpConnection__processParseMessage"]),
                       (TcpServer, ["_TcpServer__onNewConnection"]),
                       (TCPTransport, ["_onIncomingMessageReceived", "_onOutgoingMessageReceived", "_onTick",
                                       "_createServer", "addNode", "_onOutgoingConnected"])):
        for name in names:
            assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name}"


def _frame_like_pysyncobj(message: object) -> bytes:
    data = zlib.compress(pickle.dumps((os.urandom(32), message)), 3)
    data = getEncryptor(PASSWORD).encrypt_at_time(data, int(time.monotonic()))
    return struct.pack("i", len(data)) + data


def test_frame_cap_is_well_above_the_largest_legitimate_message() -> None:
    """The derivation in the orca.raft_transport docstring, on a real encoding: an append_entries with
    64 KiB of entries plus one MAX_ENTRY_BYTES entry of incompressible bytes."""
    limits = TransportLimits()
    assert MAX_BATCH_BYTES <= MAX_ENTRY_BYTES
    big = (os.urandom(MAX_ENTRY_BYTES), 10, 3)
    small = [(os.urandom(1024), i, 3) for i in range(64)]
    message = {"type": "append_entries", "term": 3, "commit_index": 9, "entries": [*small, big],
               "prevLogIdx": 1, "prevLogTerm": 3}
    frame = _frame_like_pysyncobj(message)
    assert len(frame) * 1.4 < limits.max_frame_bytes, (len(frame), limits.max_frame_bytes)
    assert len(pickle.dumps(message)) * 1.4 < limits.max_message_bytes
    # the handshake frames (a 32-byte key, then the node address) fit the pre-auth cap many times over
    assert len(_frame_like_pysyncobj("127.0.0.1:65535")) * 10 < limits.preauth_frame_bytes


# --- a real pair of PySyncObj nodes ---------------------------------------------------------------
class _Counter(SyncObjConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @replicated
    def add(self, n: int) -> int:
        self.value += n
        return self.value


LIMITS = TransportLimits(auth_deadline_s=0.6, max_preauth_per_address=4, max_preauth_total=16)


@pytest.fixture
def pair() -> Iterator[tuple[list[SyncObj], list[_Counter], list[str]]]:
    ports = free_ports(2)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    nodes, counters = [], []
    for me in addrs:
        conf = SyncObjConf(password=PASSWORD, bindAddress=me, appendEntriesUseBatch=False, raftMinTimeout=0.3,
                           raftMaxTimeout=0.6, appendEntriesPeriod=0.05, connectionTimeout=1e6,
                           connectionRetryTime=0.1)
        counter = _Counter()
        nodes.append(SyncObj(me, [a for a in addrs if a != me], conf=conf, consumers=[counter],
                             transportClass=functools.partial(GuardedTransport, limits=LIMITS)))
        counters.append(counter)
    try:
        _wait(lambda: any(n._isLeader() for n in nodes) and all(n._getLeader() is not None for n in nodes), 20)
        yield nodes, counters, addrs
    finally:
        for n in nodes:
            n.destroy()


def _wait(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _connect(addr: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def _commits(node: SyncObj, counter: _Counter, n: int = 5) -> None:
    before = counter.value
    for _ in range(n):
        counter.add(1, sync=True, timeout=5)
    assert counter.value == before + n


def _leader(nodes: list[SyncObj], counters: list[_Counter]) -> tuple[SyncObj, _Counter]:
    i = next(i for i, n in enumerate(nodes) if n._isLeader())
    return nodes[i], counters[i]


def test_oversized_prefix_garbage_and_truncated_frames_are_cut(pair) -> None:  # noqa: ANN001
    nodes, counters, addrs = pair
    for addr in addrs:
        huge = _connect(addr)
        huge.sendall(struct.pack("i", 0x7FFFFFFF) + b"x" * 10000)
        assert _closed_by_peer(huge, 2.0), "0x7fffffff prefix not refused"
        negative = _connect(addr)
        negative.sendall(struct.pack("i", -5) + b"x" * 100)
        assert _closed_by_peer(negative, 2.0)
        above_preauth = _connect(addr)
        above_preauth.sendall(struct.pack("i", LIMITS.preauth_frame_bytes + 1))
        assert _closed_by_peer(above_preauth, 2.0), "a stranger may not announce a big frame"
        garbage = _connect(addr)
        garbage.sendall(struct.pack("i", 200) + os.urandom(200))
        assert _closed_by_peer(garbage, 2.0), "undecryptable frame not refused"
        truncated = _connect(addr)
        truncated.sendall(struct.pack("i", 500) + os.urandom(100))
        assert _closed_by_peer(truncated, LIMITS.auth_deadline_s + 2.0), "truncated frame kept past the deadline"
        for s in (huge, negative, above_preauth, garbage, truncated):
            s.close()
    _commits(*_leader(nodes, counters))


def test_idle_strangers_are_dropped_at_the_auth_deadline_and_limited_per_address(pair) -> None:  # noqa: ANN001
    nodes, counters, addrs = pair
    addr = addrs[0]
    idle = [_connect(addr) for _ in range(LIMITS.max_preauth_per_address)]
    time.sleep(0.2)
    extra = _connect(addr)
    assert _closed_by_peer(extra, 2.0), "connection over the per-address limit kept"
    for s in idle:
        assert not _closed_by_peer(s, 0.01)
    started = time.monotonic()
    for s in idle:
        assert _closed_by_peer(s, LIMITS.auth_deadline_s + 3.0), "idle stranger kept past the auth deadline"
    assert time.monotonic() - started < LIMITS.auth_deadline_s + 3.0
    # the slots are free again, and the peers never noticed
    again = _connect(addr)
    assert not _closed_by_peer(again, 0.1)
    again.close()
    _commits(*_leader(nodes, counters))
    assert all(n._getLeader() is not None for n in nodes)


def test_connections_from_non_peer_addresses_are_refused_at_accept(pair) -> None:  # noqa: ANN001
    nodes, counters, addrs = pair
    try:
        s = _connect(addrs[0], source="127.0.0.2")
    except OSError as e:  # a loopback without 127/8 routing (not Linux): nothing to test
        pytest.skip(f"cannot bind 127.0.0.2: {e}")
    assert _closed_by_peer(s, 1.0)
    s.close()
    transport = nodes[0]._SyncObj__transport
    assert transport.refused_total >= 1
    _commits(*_leader(nodes, counters))


def test_many_idle_connections_do_not_stop_the_pair(pair) -> None:  # noqa: ANN001
    nodes, counters, addrs = pair
    socks = []
    for _ in range(100):
        for addr in addrs:
            try:
                socks.append(_connect(addr))
            except OSError:
                pass
    _commits(*_leader(nodes, counters), n=20)
    for s in socks:
        s.close()
    transport = nodes[0]._SyncObj__transport
    _wait(lambda: transport.connection_counts()["preauth"] == 0, LIMITS.auth_deadline_s + 5)
    assert transport.connection_counts()["peers"] == 1


def test_allowed_source_networks() -> None:
    assert allowed_source("10.9.4.4", ["10.0.0.1"], ["10.9.0.0/16"])
    assert allowed_source("::ffff:10.9.4.4", [], ["10.9.0.0/16"])
    assert not allowed_source("10.8.4.4", ["10.0.0.1"], ["10.9.0.0/16"])


def test_a_member_added_at_runtime_is_admitted_and_a_removed_one_is_not() -> None:
    """Dynamic membership: the peers-only check follows the Raft configuration, not the start-up list."""
    ports = free_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]

    def start(me: str, peers: list[str]) -> tuple[SyncObj, _Counter]:
        conf = SyncObjConf(password=PASSWORD, bindAddress=me, appendEntriesUseBatch=False, raftMinTimeout=0.3,
                           raftMaxTimeout=0.6, appendEntriesPeriod=0.05, connectionTimeout=1e6,
                           connectionRetryTime=0.1, dynamicMembershipChange=True)
        counter = _Counter()
        return SyncObj(me, peers, conf=conf, consumers=[counter],
                       transportClass=functools.partial(GuardedTransport, limits=LIMITS)), counter

    first = [start(me, [a for a in addrs[:2] if a != me]) for me in addrs[:2]]
    new_node, new_counter = start(addrs[2], addrs[:2])  # an ordinary config listing the members
    nodes = [n for n, _ in first]
    try:
        _wait(lambda: any(n._isLeader() for n in nodes), 20)
        leader, counter = _leader(nodes, [c for _, c in first])
        _commits(leader, counter)
        # before the change the members refuse it: it names no configured peer
        assert addrs[2] not in leader._SyncObj__transport._peer_hosts
        done: list[int] = []
        leader.addNodeToCluster(addrs[2], callback=lambda _r, err: done.append(err))
        _wait(lambda: done, 10)
        assert done == [0]
        for n in nodes:
            _wait(lambda n=n: addrs[2] in n._SyncObj__transport._peer_hosts, 10)
        _commits(leader, counter)
        _wait(lambda: new_counter.value == counter.value, 20)  # it joined and caught up
        done.clear()
        leader.removeNodeFromCluster(addrs[2], callback=lambda _r, err: done.append(err))
        _wait(lambda: done, 10)
        for n in nodes:
            _wait(lambda n=n: addrs[2] not in n._SyncObj__transport._peer_hosts, 10)
        _commits(leader, counter)
    finally:
        for n in [*nodes, new_node]:
            n.destroy()
