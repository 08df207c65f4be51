"""Dory's heartbeat body as orca validates it (orca.master.api_edge): the documented fields and types, nulls
where the document allows them, nothing else."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca.errors import Invalid
from orca.master.api_edge import edge_node_uuid, validate_heartbeat

DOCUMENTED = {"processor_id": "string", "node_id": "string", "role": "string", "epoch": 0, "timestamp": 0.0,
              "status": "string", "last_state_sync": 0.0, "state_size_bytes": 0, "uptime_sec": 0.0}


def test_the_documents_example_and_its_nulls() -> None:
    assert validate_heartbeat(dict(DOCUMENTED)) == DOCUMENTED
    nulls = {**DOCUMENTED, "epoch": None, "last_state_sync": None, "state_size_bytes": None}
    assert validate_heartbeat(nulls) == {k: v for k, v in nulls.items() if v is not None}
    assert validate_heartbeat({}) == {}


@pytest.mark.parametrize(("field", "value"), [
    ("processor_id", 5), ("processor_id", None), ("role", "x" * 257), ("epoch", 1.5), ("epoch", True),
    ("epoch", -1), ("timestamp", "now"), ("timestamp", None), ("uptime_sec", float("inf")),
    ("state_size_bytes", 2**60), ("extra", 1)])
def test_bad_fields_are_400_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(Invalid) as err:
        validate_heartbeat({**DOCUMENTED, field: value})
    assert err.value.status == 400 and err.value.details == {"field": field}


@given(st.dictionaries(st.sampled_from(sorted(DOCUMENTED) + ["x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=300),
                                 st.lists(st.integers(), max_size=2))))
def test_never_anything_but_invalid(body: dict[str, Any]) -> None:
    try:
        out = validate_heartbeat(body)
    except Invalid:
        return
    assert set(out) <= set(DOCUMENTED)


def test_node_uuid_is_stable_and_a_uuid() -> None:
    assert edge_node_uuid("worker-1") == edge_node_uuid("worker-1") != edge_node_uuid("worker-2")
    assert uuid.UUID(edge_node_uuid("worker-1")).version == 5
