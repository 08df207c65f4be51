"""Compare an answer with a document's example: every documented field present, of the documented type."""

from __future__ import annotations

from typing import Any


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def assert_shape(actual: Any, example: Any, path: str = "$", nullable: frozenset[str] = frozenset()) -> None:
    """`actual` has every key of `example` (recursively; a list's items against the example's first item)
    with a value of the same JSON type. A path in `nullable` (like `$.metrics.rps`, `[]` for list items)
    may be null: what orca has not measured yet is null, never a made-up number."""
    if actual is None and (path in nullable or example is None):
        return
    assert _kind(actual) == _kind(example), f"{path}: expected {_kind(example)}, got {actual!r}"
    if isinstance(example, dict):
        for key, value in example.items():
            assert key in actual, f"{path}: missing documented field {key!r} (got {sorted(actual)})"
            assert_shape(actual[key], value, f"{path}.{key}", nullable)
    elif isinstance(example, list) and example:
        for item in actual:
            assert_shape(item, example[0], f"{path}[]", nullable)
