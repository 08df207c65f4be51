"""Schema versions: every entry carries one; a master meeting a newer version or an unknown op stops
applying (no partial write) instead of diverging; two adjacent versions side by side, as in a rolling
upgrade, end with the same state once the old master is upgraded and replays its journal."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from orca.state import machine, schema
from orca.state.core import Ctx, State, record_event
from orca.state.machine import apply, new_state
from tests.unit.test_machine import deploy_args, entry, err, ok


def _annotate(state: State, args: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """The op the "next" version adds (version 2 of the schema in this test)."""
    state.setdefault("annotations", {})[str(args["key"])] = str(args["value"])
    record_event(state, ctx, "annotated", f"{args['key']} annotated")
    return {"key": args["key"]}


@pytest.fixture
def next_version(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Within this fixture the code is "version N+1": it knows one more op, written as version N+1."""
    nxt = schema.SCHEMA_VERSION + 1
    monkeypatch.setattr(schema, "SCHEMA_VERSION", nxt)
    monkeypatch.setitem(schema.OP_VERSIONS, "annotate", nxt)
    monkeypatch.setitem(machine.OPS, "annotate", _annotate)
    yield monkeypatch


def test_entries_carry_their_version_and_old_entries_apply_as_version_1() -> None:
    raw = entry("scale", {"name": "web", "replicas": 1})
    assert msgpack.unpackb(raw)["v"] == 1
    s = new_state()
    legacy = msgpack.packb({"op": "deploy", "now": 1.0, "args": deploy_args("web"), "key": None, "actor": None})
    ok(apply(s, legacy, 1))  # written before versions existed
    assert s["schema_version"] == 1 and "web" in s["services"]


@pytest.mark.parametrize("version", [schema.SCHEMA_VERSION + 1, 0, "2", None, True])
def test_an_entry_of_an_unknown_version_halts_without_writing(version: Any) -> None:
    s = new_state()
    ok(apply(s, entry("deploy", deploy_args("web")), 1))
    before = copy.deepcopy(s)
    raw = msgpack.packb({"op": "scale", "now": 2.0, "args": {"name": "web", "replicas": 5}, "key": "k",
                         "actor": "a", "v": version})
    result = apply(s, raw, 7)
    assert err(result) == "CLUSTER_NOT_READY"
    assert result["halt"]["index"] == 7 and "upgrade" in result["error"]["message"]
    assert s == before  # nothing applied, the key not remembered


def test_a_batch_with_an_entry_it_cannot_apply_halts() -> None:
    s = new_state()
    subs = [entry("deploy", deploy_args("a")), entry("format_disk", {}), entry("deploy", deploy_args("b"))]
    result = apply(s, entry(machine.BATCH_OP, {"entries": subs}), 3)
    assert machine.halt_of(result) == {"index": 3, "op": "format_disk", "version": 1,
                                       "reason": "op 'format_disk' is unknown"}
    assert machine.halt_of(ok_result := apply(s, entry("noop", {}), 4)) is None and "ok" in ok_result


def test_a_halted_store_applies_nothing_more_and_says_why() -> None:
    """`orca.raft.ReplicatedState`, as PySyncObj calls it (`_doApply=True`), without a Raft group."""
    from orca.raft import ReplicatedState

    store = ReplicatedState()
    halts: list[dict[str, Any]] = []
    store.on_halt = halts.append
    assert "ok" in store.apply(entry("deploy", deploy_args("a")), _doApply=True)
    assert "halt" in store.apply(entry("format_disk", {}), _doApply=True)
    result = store.apply(entry("deploy", deploy_args("b")), _doApply=True)  # known, but after the halt
    assert result["error"]["code"] == "CLUSTER_NOT_READY" and "stopped applying" in result["error"]["message"]
    assert set(store.state["services"]) == {"a"} and [h["op"] for h in halts] == ["format_disk"]


def test_a_dump_of_a_newer_schema_halts_on_load() -> None:
    from orca.raft import ReplicatedState

    newer = new_state()
    newer["schema_version"] = schema.SCHEMA_VERSION + 1
    store = ReplicatedState()
    store._deserialize({"state": newer})
    assert store.halted is not None and "newer" in store.halted["reason"]
    same = ReplicatedState()
    same._deserialize({"state": new_state()})
    assert same.halted is None


def _log(next_version: pytest.MonkeyPatch) -> list[bytes]:
    """What a leader of version N+1 writes: old ops (version N entries) and one new op."""
    return [entry("deploy", deploy_args("web", "api")), entry("scale", {"name": "web", "replicas": 3}),
            entry("annotate", {"key": "owner", "value": "team-a"}), entry("scale", {"name": "api", "replicas": 4})]


def test_two_adjacent_versions_side_by_side(next_version: pytest.MonkeyPatch) -> None:
    log = _log(next_version)
    assert [msgpack.unpackb(e)["v"] for e in log] == [1, 1, schema.SCHEMA_VERSION, 1]
    upgraded = new_state()
    for i, raw in enumerate(log, 1):
        ok(apply(upgraded, raw, i))
    assert upgraded["annotations"] == {"owner": "team-a"} and upgraded["schema_version"] == schema.SCHEMA_VERSION

    next_version.undo()  # now the code is version N: the master not upgraded yet
    old = new_state()
    results = [apply(old, raw, i) for i, raw in enumerate(log, 1)]
    assert "halt" not in results[0] and "halt" not in results[1]
    assert results[2]["halt"]["index"] == 3 and results[2]["halt"]["op"] == "annotate"
    # (A real master applies nothing after a halt: orca.raft.ReplicatedState; here the first two count.)
    assert old["services"]["web"]["replicas"] == 3 and "annotations" not in old

    # Upgraded and restarted, the old master replays its journal from the start (or its last dump,
    # which never passes the halt) and reaches the same state as the others.
    pytest.MonkeyPatch.setattr(next_version, schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    next_version.setitem(schema.OP_VERSIONS, "annotate", schema.SCHEMA_VERSION)
    next_version.setitem(machine.OPS, "annotate", _annotate)
    replayed = new_state()
    for i, raw in enumerate(log, 1):
        ok(apply(replayed, raw, i))
    assert replayed == upgraded
