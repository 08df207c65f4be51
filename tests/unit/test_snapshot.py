"""The snapshot file (format, checksum, bounds) and the restore ops (staged chunks, swap, refusals)."""

from __future__ import annotations

import copy
import hashlib
import json
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import snapshot
from orca.state import ops_restore
from orca.state.machine import apply, new_state
from orca.state.schema import SCHEMA_VERSION  # noqa: F401 - the current one
from tests.unit.test_machine import deploy_args, entry, err, ok

META = {"index": 42, "term": 3, "schema_version": SCHEMA_VERSION, "created_at": 1000.0, "orca_version": "t"}


def busy_state() -> dict:
    s = new_state()
    ok(apply(s, entry("leader_elected", {"term": 3, "node": "m1"}), 1))
    ok(apply(s, entry("deploy", deploy_args("web", "api")), 2))
    ok(apply(s, entry("set_secret", {"key": "DB", "ciphertext": "c2VhbGVk"}), 3))
    ok(apply(s, entry("scale", {"name": "web", "replicas": 5}, key="tester:k1"), 4))
    return s


# ---------------------------------------------------------------------- the file


def test_file_round_trips_and_says_what_it_holds() -> None:
    state = busy_state()
    data = snapshot.encode(state, **META)
    assert data.startswith(b"ORCA-SNAPSHOT 1\n")
    header, body = snapshot.parse(data)
    assert (header["index"], header["term"], header["schema_version"]) == (42, 3, SCHEMA_VERSION)
    assert header["counts"]["services"] == 2 and header["counts"]["secrets"] == 1
    assert header["sha256"] == hashlib.sha256(body).hexdigest()
    assert snapshot.decode_body(body, header["state_bytes"]) == state


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20)
                    | st.binary(max_size=20) | st.floats(allow_nan=False),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=20))
@settings(max_examples=150, deadline=None)
def test_any_plain_data_round_trips(value: object) -> None:
    state = {"services": {}, "x": value}
    header, body = snapshot.parse(snapshot.encode(state, **META))
    assert snapshot.decode_body(body, header["state_bytes"]) == state


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"NOT" + d, "not an orca snapshot"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum mismatch"),
    (lambda d: d.replace(b'"format": 1', b'"format": 9'), "unsupported snapshot format"),
    (lambda d: d.replace(b'"index": 42', b'"index": -1'), "index"),
    (lambda d: snapshot.MAGIC + b"{" * 10, "header"),
])
def test_damaged_files_are_refused(damage, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(snapshot.SnapshotError, match=message):
        snapshot.parse(damage(snapshot.encode(busy_state(), **META)))


def test_decoding_is_bounded_by_the_stated_size() -> None:
    raw = msgpack.packb({"services": {}, "pad": "x" * 100_000})
    body = zlib.compress(raw)
    with pytest.raises(snapshot.SnapshotError, match="stated size"):
        snapshot.decode_body(body, 1000)  # a small claim never inflates the whole thing
    with pytest.raises(snapshot.SnapshotError):
        snapshot.decode_body(zlib.compress(b"\xc1"), 1)  # not msgpack
    with pytest.raises(snapshot.SnapshotError, match="not a map"):
        snapshot.decode_body(zlib.compress(msgpack.packb([1])), 2)


# ---------------------------------------------------------------------- the restore ops


def restore(target: dict, data: bytes, *, force: bool = False, chunk: int = ops_restore.CHUNK_MAX,
            rid: str = "r1") -> dict:
    header, body = snapshot.parse(data)
    begun = apply(target, entry("restore_begin", {"id": rid, "header": header, "force": force,
                                                  "chunk_bytes": chunk}), 100)
    if "error" in begun:
        return begun
    for n in range(ok(begun)["chunks"]):
        ok(apply(target, entry("restore_chunk", {"id": rid, "n": n, "data": body[n * chunk:(n + 1) * chunk]}), 101))
    return apply(target, entry("restore_commit", {"id": rid}, now=2000.0), 102)


def test_restore_into_an_empty_cluster_brings_everything_back() -> None:
    source = busy_state()
    target = new_state()
    ok(apply(target, entry("leader_elected", {"term": 1, "node": "m2"}), 1))
    ok(apply(target, entry("register_node", {"node_id": "w1", "address": "http://a", "labels": {},
                                             "capacity": {"memory_mb": 100, "cpus": 1}, "push_token": "t",
                                             "agent_version": "1"}), 2))  # an agent re-attached early
    result = ok(restore(target, snapshot.encode(source, **META)))
    assert result["counts"]["services"] == 2 and result["index"] == 42
    for key in ("services", "allocations", "secrets", "tokens", "webhooks", "nodes", "idempotency"):
        assert target[key] == source[key], key
    assert target["leader"]["term"] == 1  # the cluster's own leader record, not the lost one's
    assert target["fence_base"] == 3 + ops_restore.RESTORE_TERM_GAP
    assert target["restored_from"]["index"] == 42 and "restore" not in target
    assert target["events"][-1]["type"] == "snapshot_restored"
    # An idempotency key of the lost cluster still answers with its first result.
    assert apply(target, entry("scale", {"name": "web", "replicas": 9}, key="tester:k1"), 103)["replayed"]


def test_a_restore_keeps_the_member_list_of_the_cluster_it_lands_on() -> None:
    source = busy_state()
    source["masters"] = {"old-1": {"id": "old-1", "raft": "10.0.0.1:7000", "api": "http://10.0.0.1:8000"}}
    target = new_state()
    ours = {"id": "m1", "raft": "127.0.0.1:7001", "api": "http://127.0.0.1:8001"}
    ok(apply(target, entry("masters_seed", {"masters": [ours]}), 1))
    ok(restore(target, snapshot.encode(source, **META)))
    assert list(target["masters"]) == ["m1"]  # the lost cluster's masters are not redirect targets


def test_restore_in_many_chunks_and_twice_is_deterministic() -> None:
    source = busy_state()
    source["secrets"].update({f"K{i}": {"key": f"K{i}", "ciphertext": hashlib.sha256(str(i).encode()).hexdigest() * 4}
                              for i in range(2000)})  # ~0.5 MB that does not compress away
    data = snapshot.encode(source, **META)
    a, b = new_state(), new_state()
    ok(restore(a, data))
    ok(restore(b, data, chunk=ops_restore.CHUNK_MIN))
    assert a == b and a["secrets"] == source["secrets"]
    assert -(-snapshot.parse(data)[0]["body_bytes"] // ops_restore.CHUNK_MIN) > 3
    # A second restore over a restored cluster keeps raising the fence.
    again = snapshot.encode(a, **{**META, "term": 7})
    ok(restore(a, again, force=True, rid="r2"))
    assert a["fence_base"] == 3 + 7 + 2 * ops_restore.RESTORE_TERM_GAP


def test_a_cluster_that_is_not_empty_is_refused_unless_forced() -> None:
    target = busy_state()
    before = copy.deepcopy(target)
    data = snapshot.encode(new_state(), **META)
    assert err(restore(target, data)) == "CONFLICT"
    assert target == before  # nothing staged
    ok(restore(target, data, force=True))
    assert target["services"] == {}


def test_refusals_leave_the_state_alone() -> None:
    data = snapshot.encode(busy_state(), **META)
    header, body = snapshot.parse(data)
    target = new_state()
    newer = {**header, "schema_version": SCHEMA_VERSION + 1}  # a master that does not know it halts
    assert apply(target, entry("restore_begin", {"id": "r", "header": newer}), 1)["halt"]["index"] == 1
    assert err(apply(target, entry("restore_begin", {"id": "r", "header": {"format": 1}}), 1)) == "VALIDATION_ERROR"
    ok(apply(target, entry("restore_begin", {"id": "r", "header": header}), 1))
    assert err(apply(target, entry("restore_chunk", {"id": "other", "n": 0, "data": body}), 2)) == "CONFLICT"
    assert err(apply(target, entry("restore_chunk", {"id": "r", "n": 5, "data": body}), 2)) == "VALIDATION_ERROR"
    assert err(apply(target, entry("restore_chunk", {"id": "r", "n": 0, "data": "text"}), 2)) == "VALIDATION_ERROR"
    assert err(apply(target, entry("restore_commit", {"id": "r"}), 3)) == "CONFLICT"  # chunk missing
    ok(apply(target, entry("restore_chunk", {"id": "r", "n": 0, "data": body[:-1] + b"x"}), 4))
    assert err(apply(target, entry("restore_commit", {"id": "r"}), 5)) == "VALIDATION_ERROR"  # checksum
    assert target["restore"]["id"] == "r" and target["services"] == {}  # refused: nothing else changed
    assert json.dumps(header)  # the header stays plain JSON


def test_the_cluster_is_named_once_and_a_restore_carries_the_name() -> None:
    source = busy_state()
    assert ok(apply(source, entry("set_lineage", {"lineage": "lost"}), 5)) == {"lineage": "lost"}
    assert ok(apply(source, entry("set_lineage", {"lineage": "other"}), 6)) == {"lineage": "lost"}
    assert err(apply(source, entry("set_lineage", {"lineage": ""}), 7)) == "VALIDATION_ERROR"
    fresh = new_state()
    ok(apply(fresh, entry("set_lineage", {"lineage": "fresh"}), 1))
    ok(restore(fresh, snapshot.encode(source, **META)))
    assert fresh["lineage"] == "lost"  # its agents obey the restored cluster, not the fresh one


def test_a_restored_state_of_a_newer_schema_halts_instead_of_loading() -> None:
    source = busy_state()
    source["schema_version"] = SCHEMA_VERSION + 1  # written by masters of the next version
    target = new_state()
    result = restore(target, snapshot.encode(source, **META))
    assert result["halt"]["op"] == "restore_commit" and "schema version" in result["halt"]["reason"]
    assert target["services"] == {}
