"""`since` filters: a relative age (`30s`, `15m`, `1h`, `1d`, `2w`) or an absolute time (ISO-8601, or Unix
seconds), turned into Unix seconds. Pure: the caller passes `now`.

Every route that accepts `since` parses it here, so `since=1h` means the same thing everywhere (the
Orchestry, Porter and Dory documents use relative ages; orca's own routes used ISO times). A value that
is neither is a 400 VALIDATION_ERROR naming the field, never a silently ignored filter.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from orca.errors import Invalid

__all__ = ["parse_since", "parse_duration", "MAX_AGE_S", "UNITS"]

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
MAX_AGE_S = 10 * 365 * 86400.0  # ten years back: anything older is a typo (or an attack on datetime)
_MAX_LEN = 64
_DURATION_RE = re.compile(r"(\d{1,9})(?:\.(\d{1,6}))?([smhdw])")
_EPOCH_RE = re.compile(r"\d{1,12}(\.\d{1,9})?")


def parse_duration(raw: str, field: str = "since") -> float | None:
    """Seconds of a relative age like `90s`, `1.5h`, `1d` (one number, one unit), or None if `raw` is not one."""
    match = _DURATION_RE.fullmatch(raw.strip().lower())
    if match is None:
        return None
    whole, frac, unit = match.groups()
    seconds = (int(whole) + (int(frac) / 10 ** len(frac) if frac else 0.0)) * UNITS[unit]
    if seconds > MAX_AGE_S:
        raise Invalid(f"{field}: at most {int(MAX_AGE_S // 86400)} days back", {"field": field})
    return seconds


def parse_since(raw: str, now: float, field: str = "since", allow_epoch: bool = True) -> float:
    """Unix seconds of `raw`: `now` minus a relative age, an ISO-8601 time (no zone means UTC), or (with
    `allow_epoch`) Unix seconds. Raises Invalid (400) for anything else."""
    hint = f"{field}: expected a relative age like 30s, 15m, 1h, 1d, or an ISO-8601 time"
    if not isinstance(raw, str) or not raw.strip() or len(raw) > _MAX_LEN or not raw.isascii():
        raise Invalid(hint, {"field": field})
    text = raw.strip()
    age = parse_duration(text, field)
    if age is not None:
        return now - age
    if allow_epoch and _EPOCH_RE.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise Invalid(hint, {"field": field})
        return value
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise Invalid(hint, {"field": field}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
