"""A packet capture for tests that assert what crosses a link in clear (TLS tests): a raw AF_PACKET
socket, like `tcpdump -i IFACE`, needing CAP_NET_RAW (root)."""

from __future__ import annotations

import select
import socket
import threading
import time

__all__ = ["Capture", "capture_available"]


def capture_available() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)).close()
        return True
    except (OSError, AttributeError):
        return False


class Capture:
    """Every frame on an interface (a raw AF_PACKET socket in the root namespace, like tcpdump -i), kept
    in memory for the test to assert on the bytes; bounded to 64 MiB and to the `with` block."""

    LIMIT = 64 * 1024 * 1024

    def __init__(self, interface: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        self.sock.bind((interface, 0))
        self.sock.setblocking(False)
        self.frames: list[bytes] = []
        self.size = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.size < self.LIMIT:
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            while ready and self.size < self.LIMIT:
                try:
                    frame = self.sock.recv(65535)
                except BlockingIOError:
                    break
                self.frames.append(frame)
                self.size += len(frame)

    def __enter__(self) -> Capture:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last frames of the last exchange
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def bytes(self) -> bytes:
        return b"".join(self.frames)
