"""orca.master.http.TokenChecker caches a verified token's claims by its exact string: revocation and
expiry must still take effect on the very next request, and the cache stays bounded."""

from __future__ import annotations

import pytest

from orca import auth
from orca.errors import Unauthorized
from orca.master import http

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(1_000_000.0)
    monkeypatch.setattr(http.time, "time", c)  # the time module's clock: auth reads the same one
    assert auth.time.time is c
    return c


def test_revocation_takes_effect_at_once_for_a_cached_token(clock: Clock) -> None:
    revoked: set[str] = set()
    checker = http.TokenChecker(KEY, lambda jti: jti in revoked)
    token, claims = auth.mint_token(KEY, role="admin", name="ops", now=clock.now)
    assert checker.check(f"Bearer {token}").jti == claims.jti
    assert checker.check(f"Bearer {token}").jti == claims.jti  # from the cache now
    assert token in checker._verified
    revoked.add(claims.jti)
    with pytest.raises(Unauthorized, match="revoked"):
        checker.check(f"Bearer {token}")
    revoked.clear()  # (un-revoking is not an API operation; this only shows the check is live)
    assert checker.check(f"Bearer {token}").jti == claims.jti


def test_expiry_takes_effect_for_a_cached_token(clock: Clock) -> None:
    checker = http.TokenChecker(KEY, lambda jti: False)
    token, _ = auth.mint_token(KEY, role="viewer", name="short", now=clock.now, ttl_s=60)
    checker.check(f"Bearer {token}")
    assert token in checker._verified
    clock.now += 59
    checker.check(f"Bearer {token}")
    clock.now += 1
    with pytest.raises(Unauthorized, match="expired"):
        checker.check(f"Bearer {token}")
    assert token not in checker._verified
    with pytest.raises(Unauthorized):  # and not through the uncached path either
        checker.check(f"Bearer {token}")


def test_a_different_string_is_verified_afresh(clock: Clock) -> None:
    checker = http.TokenChecker(KEY, lambda jti: False)
    token, _ = auth.mint_token(KEY, role="admin", name="ops", now=clock.now)
    checker.check(f"Bearer {token}")
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized):
        checker.check(f"Bearer {forged}")
    other_key = http.TokenChecker(b"x" * 32, lambda jti: False)
    with pytest.raises(Unauthorized, match="signature"):
        other_key.check(f"Bearer {token}")


def test_cache_is_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http.TokenChecker, "CACHE_SIZE", 8)
    checker = http.TokenChecker(KEY, lambda jti: False)
    tokens = [auth.mint_token(KEY, role="viewer", name=f"t{i}", now=clock.now)[0] for i in range(20)]
    for t in tokens:
        checker.check(f"Bearer {t}")
    assert len(checker._verified) == 8
    assert list(checker._verified) == tokens[-8:]  # the oldest went first
