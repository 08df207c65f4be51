"""Bounds on every number, string and JSON document that arrives from the network, in one place.

Why: an unbounded integer from a client once reached the Raft log (a 2**64 heartbeat made every lease
commit fail), a 5,000-digit query parameter and a 100k-deep JSON body answered 500. Every reader of
network input goes through these helpers, so the limits below hold for every route of the masters and
of the agent, and a violation is always a 400 with the error envelope (`BoundsError` is an `Invalid`).

The limits (documented in the README's Security section):
  - JSON: at most `MAX_JSON_DEPTH` nested arrays/objects; integers within +-`MAX_INT` (2**53, the
    largest integer every JSON implementation represents exactly); floats finite (no NaN/Infinity,
    no 1e999); the byte size is the caller's (`orca.master.http.read_json`).
  - query parameters: ASCII digits only (no '٣', no '²'), at most `MAX_QUERY_DIGITS` of them, then the
    route's own range.
Field-level ranges (capacity, ttl_s, replicas, ports, ...) are tighter and live next to each field's
validator (orca.protocol, orca.spec); they use `bounded_int`/`bounded_number`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from orca.errors import Invalid

__all__ = ["MAX_INT", "MAX_JSON_DEPTH", "MAX_QUERY_DIGITS", "BoundsError", "loads", "check_depth",
           "bounded_int", "bounded_number", "bounded_str", "query_int"]

MAX_INT = 2**53
MAX_JSON_DEPTH = 32
MAX_QUERY_DIGITS = 16
_INT_TEXT_MAX = 17  # "-9007199254740992" is 17 characters; longer int literals are out of range anyway
_QUERY_INT_RE = re.compile(rf"-?[0-9]{{1,{MAX_QUERY_DIGITS}}}", re.ASCII)
# orjson reads an integer literal beyond 64 bits as a float: floats this large go to the standard library
_FLOAT_AMBIGUOUS = float(2**63)

try:
    import orjson as _orjson
except ImportError:  # the standard library alone gives the same answers, slower
    _orjson = None  # type: ignore[assignment]


class BoundsError(Invalid, ValueError):
    """A value outside its documented bounds: a 400 VALIDATION_ERROR naming the field.

    Also a ValueError, so pure validators (orca.protocol, orca.spec) may catch it like their own errors.
    """

    def __init__(self, field: str, problem: str) -> None:
        Invalid.__init__(self, f"{field}: {problem}", {"field": field})
        self.field = field
        self.problem = problem


def _parse_int(text: str) -> int:
    if len(text) > _INT_TEXT_MAX:
        raise BoundsError("body", f"integer out of range (at most {MAX_INT} in magnitude)")
    value = int(text)
    if not -MAX_INT <= value <= MAX_INT:
        raise BoundsError("body", f"integer out of range (at most {MAX_INT} in magnitude)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BoundsError("body", "number out of range")
    return value


def _parse_constant(text: str) -> Any:
    raise BoundsError("body", f"{text} is not JSON")


def check_depth(doc: Any, max_depth: int = MAX_JSON_DEPTH, field: str = "body") -> None:
    """Raise BoundsError when arrays/objects nest deeper than `max_depth` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > max_depth:
            raise BoundsError(field, f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def loads(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH, field: str = "body") -> Any:
    """json.loads with the bounds above; any failure is a BoundsError (never a RecursionError).

    Fast path: orjson parses, then one walk checks depth and integer range. Whenever orjson refuses the
    input, or it may have read an integer literal as a float (it does so beyond 64 bits), the standard
    library path below decides: the same documents are accepted, with the same values (a property test
    compares the two). orjson was a third of the cost of a small write request's body.
    """
    if _orjson is not None:
        try:
            doc = _orjson.loads(raw)
        except (_orjson.JSONDecodeError, TypeError):
            pass
        else:
            if _walk(doc, max_depth, field):
                return doc
    return _loads_stdlib(raw, max_depth, field)


def _walk(doc: Any, max_depth: int, field: str) -> bool:
    """Depth and integer bounds of an orjson document (iterative); False when a float is so large that it
    may have been an out-of-range integer literal (the caller then parses with the standard library)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        elif type(value) is int:
            if not -MAX_INT <= value <= MAX_INT:
                raise BoundsError(field, f"integer out of range (at most {MAX_INT} in magnitude)")
            continue
        elif type(value) is float:
            if not -_FLOAT_AMBIGUOUS < value < _FLOAT_AMBIGUOUS:
                return False
            continue
        else:
            continue
        if depth > max_depth:
            raise BoundsError(field, f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children
                     if type(child) in (dict, list, int, float))
    return True


def _loads_stdlib(raw: bytes | str, max_depth: int, field: str) -> Any:
    try:
        doc = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except BoundsError as err:
        raise BoundsError(field, err.problem) from None
    except RecursionError:
        raise BoundsError(field, f"nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BoundsError(field, f"not valid JSON: {exc}") from None
    check_depth(doc, max_depth, field)
    return doc


def bounded_int(value: Any, field: str, lo: int = 0, hi: int = MAX_INT) -> int:
    """`value` if it is an integer (not a bool) within lo..hi, else a BoundsError naming `field`."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BoundsError(field, f"expected an integer from {lo} to {hi}")
    return value


def bounded_number(value: Any, field: str, lo: float = 0.0, hi: float = float(MAX_INT)) -> float:
    """`value` as a float if it is a finite number (not a bool) within lo..hi, else a BoundsError."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BoundsError(field, f"expected a number from {lo:g} to {hi:g}")
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        raise BoundsError(field, f"expected a number from {lo:g} to {hi:g}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BoundsError(field, f"expected a number from {lo:g} to {hi:g}")
    return number


def bounded_str(value: Any, field: str, max_len: int, min_len: int = 0) -> str:
    """`value` if it is a string of min_len..max_len characters, else a BoundsError."""
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise BoundsError(field, f"expected a string of {min_len} to {max_len} characters")
    return value


def query_int(raw: str | None, field: str, default: int, lo: int, hi: int) -> int:
    """A query parameter as an integer in lo..hi: ASCII digits only, absent or empty means `default`."""
    if raw is None or raw == "":
        return default
    if not _QUERY_INT_RE.fullmatch(raw):
        raise BoundsError(field, f"expected an integer from {lo} to {hi} (ASCII digits)")
    return bounded_int(int(raw), field, lo, hi)
