"""Pages of `GET /api/v1/status` at 10,000 services: built from an index kept per applied Raft index.

The whole list costs one scan of every allocation (30,000 at the scale goal) plus a sort of every service
name; a page of 100 needs neither, given the sorted names and the live allocations per service. Both are
made once per layout generation (`ReplicatedState.layout_generation`: it moves with every applied entry
and every snapshot load, except the once-a-second lease renewals that change nothing but `renewed_at`)
and reused by every page read at that generation, so a client paging through, or many clients polling
page one, pay the scan once per change, not once per request or per lease renewal. The index holds the
allocation records themselves, and a page reads their `observed` and their node's status when it is
made. Everything here runs under the state lock, so the generation and the state it describes are the
same moment.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from orca.master import views

__all__ = ["StatusIndex", "MAX_CURSOR_LEN"]

MAX_CURSOR_LEN = 256  # a cursor is a service name (at most 63 characters); anything longer is refused


@dataclass
class _Built:
    generation: int
    names: list[str]
    by_service: dict[str, list[dict[str, Any]]]
    by_project: dict[str, list[str]] = field(default_factory=dict)


class StatusIndex:
    """Sorted names and live allocations per service, valid for one layout generation."""

    def __init__(self) -> None:
        self._built: _Built | None = None

    def _at(self, state: dict[str, Any], generation: int) -> _Built:
        built = self._built
        if built is None or built.generation != generation:
            built = _Built(generation, sorted(state["services"]), views.live_allocs_by_service(state))
            self._built = built
        return built

    def page(self, state: dict[str, Any], generation: int, project: str | None, cursor: str | None,
             limit: int | None) -> dict[str, Any]:
        """`{"services": [...], "next_cursor": str | None}`: the services after `cursor` (by name), at most
        `limit` of them; `next_cursor` is the last name when more follow. Without a limit: every service
        after `cursor`, and no `next_cursor` key."""
        built = self._at(state, generation)
        names = built.names
        if project is not None:
            names = built.by_project.get(project)
            if names is None:
                names = built.by_project[project] = [n for n in built.names
                                                     if state["services"][n]["project"] == project]
        start = bisect.bisect_right(names, cursor) if cursor else 0
        end = len(names) if limit is None else min(len(names), start + limit)
        services = state["services"]
        page = [views.service_summary(state, services[n], built.by_service.get(n, [])) for n in names[start:end]]
        if limit is None:
            return {"services": page}  # unpaged: the answer it has always been
        more = end < len(names)
        return {"services": page, "next_cursor": names[end - 1] if more and end > start else None}
