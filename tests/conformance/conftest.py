"""Fixtures of the conformance tier: real `orca server` processes on free 127.0.0.1 ports.

This tier sends each API document's own example payloads, as written, and checks every documented field
of each answer (`shapes.assert_shape`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orca.devcluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("conformance")) / "cluster")
    try:
        c.start()
        c.wait_leader(timeout=60, all_up=True)
        yield c
    finally:
        c.__exit__(None, None, None)
