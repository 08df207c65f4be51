"""`orca.snapshot_offline`: what it writes is PySyncObj's own dump format holding the restored state and the
config's members; what it refuses (a corrupt file, a used data directory without force); that force moves
the old Raft files aside instead of deleting them. The full path with real masters is in
tests/cluster/test_snapshot_offline.py."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysyncobj.pickle as upstream_pickle
import pytest

from orca import snapshot
from orca.config import load_master_config
from orca.devcluster import free_ports
from orca.errors import Conflict, Invalid
from orca.snapshot_offline import restore_offline
from orca.state import machine, ops_restore


def _config(tmp_path: Path):  # noqa: ANN202
    secret = tmp_path / "secret"
    secret.write_text("x" * 32)
    raft, api, peer = free_ports(3)
    path = tmp_path / "m1.toml"
    path.write_text(f'[node]\nid = "master-1"\ndata_dir = "{tmp_path / "data"}"\n[api]\nlisten = "127.0.0.1:{api}"\n'
                    f'[raft]\nlisten = "127.0.0.1:{raft}"\npeers = [{{ id = "master-2", raft = "127.0.0.1:{peer}", '
                    f'api = "http://127.0.0.1:1" }}]\n[security]\ncluster_secret_file = "{secret}"\n')
    return load_master_config(path)


def _file() -> bytes:
    state = machine.new_state()
    state["services"] = {"web": {"name": "web"}}
    state["lineage"] = "lost-cluster"
    state["masters"] = {"old": {"id": "old", "raft": "10.0.0.9:1", "api": "http://10.0.0.9:2"}}
    return snapshot.encode(state, index=500, term=7, schema_version=state["schema_version"], created_at=1.0,
                           orca_version="test")


def test_writes_upstreams_dump_with_the_restored_state(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = restore_offline(_file(), config, now=2.0)
    with gzip.open(config.data_dir / "raft.dump", "rb") as fh:
        (own, consumer), last, first, members = upstream_pickle.load(fh)
    assert own == {} and (first[1], first[2], last[1], last[2]) == (1, 0, 2, 0)
    state = consumer["state"]
    assert state["services"] == {"web": {"name": "web"}} and state["lineage"] == "lost-cluster"
    assert state["masters"] == {}  # seeded again from the configs at the first membership change
    assert state["fence_base"] == 7 + ops_restore.RESTORE_TERM_GAP and state["restored_from"]["index"] == 500
    assert {m.id for m in members} == {config.raft_listen, config.peers[0].raft} == set(result["members"])
    assert oct((config.data_dir / "raft.dump").stat().st_mode & 0o777) == "0o600"


def test_refusals_and_force(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(Invalid):
        restore_offline(_file()[:-3], config)
    config.data_dir.mkdir(parents=True)
    (config.data_dir / "raft.journal").write_bytes(b"old")
    with pytest.raises(Conflict, match="--force"):
        restore_offline(_file(), config)
    result = restore_offline(_file(), config, force=True, now=0.0)
    assert (Path(result["moved_aside"]) / "raft.journal").read_bytes() == b"old"
    assert not (config.data_dir / "raft.journal").exists() and (config.data_dir / "raft.dump").exists()
