"""The conformance tier: each API document orca was specified from (Porter, Dory, orun, Orca; Orchestry has
its own module), its example payloads sent as written to real `orca server` processes (and, for orun, a
real agent on the Docker engine), every documented field of each answer checked.

One cluster per test module (module scope): a module's tests run in file order and build on each other.
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
