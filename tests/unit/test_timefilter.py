"""orca.timefilter: relative ages, ISO times and Unix seconds; everything else is a 400, never a crash."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca.errors import Invalid
from orca.timefilter import MAX_AGE_S, UNITS, parse_duration, parse_since

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("raw", "age"), [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), ("2w", 1209600),
                                          ("1.5h", 5400), (" 1H ", 3600), ("0s", 0)])
def test_relative_ages(raw: str, age: float) -> None:
    assert parse_since(raw, NOW) == NOW - age


@pytest.mark.parametrize(("raw", "expected"), [
    ("2023-11-14T22:13:20Z", 1_700_000_000.0), ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000.0), ("2023-11-14T22:13:20", 1_700_000_000.0),
    ("2023-11-14T22:13:20.500z", 1_700_000_000.5), ("1700000000", 1_700_000_000.0)])
def test_absolute_times(raw: str, expected: float) -> None:
    assert parse_since(raw, NOW) == expected


@pytest.mark.parametrize("raw", ["", " ", "1y", "h", "-1h", "1h30m", "yesterday", "1e3", "nan", "١h",
                                 "x" * 65, "99999999999d", "2023-13-01"])
def test_anything_else_is_a_400(raw: str) -> None:
    with pytest.raises(Invalid) as err:
        parse_since(raw, NOW, field="since")
    assert err.value.status == 400 and err.value.details == {"field": "since"}


def test_epoch_can_be_refused_where_digits_mean_a_cursor() -> None:
    with pytest.raises(Invalid):
        parse_since("1700000000", NOW, allow_epoch=False)


@given(st.integers(0, 10**6), st.sampled_from(sorted(UNITS)))
def test_every_duration_goes_back_exactly(n: int, unit: str) -> None:
    seconds = n * UNITS[unit]
    if seconds > MAX_AGE_S:
        with pytest.raises(Invalid):
            parse_duration(f"{n}{unit}")
    else:
        assert parse_since(f"{n}{unit}", NOW) == NOW - seconds


@given(st.text(max_size=80))
def test_never_raises_anything_but_invalid(raw: str) -> None:
    try:
        value = parse_since(raw, NOW)
    except Invalid:
        return
    assert isinstance(value, float)


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)))
def test_iso_round_trip(when: dt.datetime) -> None:
    aware = when.replace(tzinfo=dt.UTC)
    assert parse_since(aware.isoformat(), NOW) == pytest.approx(aware.timestamp())
