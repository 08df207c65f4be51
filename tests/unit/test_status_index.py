"""Pages of GET /api/v1/status (orca.master.status_index): pure, over a state made by the real `apply`.

Paging through with next_cursor gives exactly the full list (views.status_list), in order, for every
page size and project filter; a changed generation is never answered from the old index.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orca import spec as specs
from orca.master import views
from orca.master.status_index import StatusIndex
from orca.state.machine import apply, encode_entry, new_state


def _state(services: list[tuple[str, str]]) -> dict[str, Any]:
    state = new_state()

    def op(name: str, args: dict[str, Any]) -> None:
        result = apply(state, encode_entry(name, args, now=1000.0))
        assert "error" not in result, result
    op("leader_elected", {"term": 1, "node": "m1"})
    op("register_node", {"node_id": "n1", "address": "http://x", "labels": {}, "push_token": "t",
                         "capacity": {"memory": 2**34, "cpu": 64.0}, "agent_version": "1"})
    for name, project in services:
        s = specs.validate_service({"name": name, "project": project, "image": "img", "replicas": 2,
                                    "resources": {"memory": "16Mi", "cpu": 0.01}})
        op("deploy", {"services": [{"name": name, "spec": s, "digest": specs.spec_digest(s)}]})
    return state


NAMES = st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), st.sampled_from(["p1", "p2"])),
                 max_size=25, unique_by=lambda t: t[0])


def _all_pages(index: StatusIndex, state: dict[str, Any], project: str | None, limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = index.page(state, 7, project, cursor, limit)
        assert len(page["services"]) <= limit
        out += page["services"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("paging did not end")


@given(NAMES, st.integers(1, 30), st.sampled_from([None, "p1", "p2"]))
def test_paging_through_gives_the_full_list(services: list[tuple[str, str]], limit: int, project: str | None) -> None:
    state = _state(services)
    index = StatusIndex()
    assert _all_pages(index, state, project, limit) == views.status_list(state, project)
    assert index.page(state, 7, project, None, None)["services"] == views.status_list(state, project)


def test_a_cursor_past_the_end_and_between_names() -> None:
    state = _state([("a", "p1"), ("c", "p1"), ("e", "p1")])
    index = StatusIndex()
    assert index.page(state, 1, None, "zzz", 10) == {"services": [], "next_cursor": None}
    page = index.page(state, 1, None, "b", 1)  # a name that is not there: the services after it
    assert [s["name"] for s in page["services"]] == ["c"] and page["next_cursor"] == "c"
    assert index.page(state, 1, None, "c", 5)["next_cursor"] is None


def test_a_new_generation_is_never_answered_from_the_old_index() -> None:
    state = _state([("a", "p1")])
    index = StatusIndex()
    assert [s["name"] for s in index.page(state, 1, None, None, 10)["services"]] == ["a"]
    more = _state([("a", "p1"), ("b", "p1")])
    assert [s["name"] for s in index.page(more, 1, None, None, 10)["services"]] == ["a"]  # same generation: cached
    assert [s["name"] for s in index.page(more, 2, None, None, 10)["services"]] == ["a", "b"]
