"""How long the server asked us to wait: the `Retry-After` header of a 429 or a 503.

Why bounded: the header is input from the network. A value in the past, or absurdly far off, or not a
number is no reason to sleep for an hour; the SDK waits at most `MAX_RETRY_AFTER_S` per answer and
gives up (raising the 429) once its total budget for one call is spent (see `Transport`).
"""

from __future__ import annotations

import email.utils
import time

__all__ = ["MAX_RETRY_AFTER_S", "retry_after_s"]

MAX_RETRY_AFTER_S = 30.0
_MAX_LEN = 64  # an HTTP-date is 29 characters; delay-seconds a few digits


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait per `value` (delay-seconds, or an HTTP-date), clamped to 0..MAX_RETRY_AFTER_S;
    None when absent or unreadable (then the caller's own backoff applies)."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_LEN:
        return None
    if value.isascii() and value.isdigit():
        return min(float(int(value)), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zoneless one is read as such
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)
