"""Tests for orca.auth: token round trips, every way a token is refused, and the role order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import auth
from orca.auth import (
    ROLE_RANK,
    ROLES,
    Claims,
    generate_cluster_secret,
    mint_token,
    raft_password,
    role_satisfies,
    signing_key,
    verify_token,
)
from orca.errors import Invalid, Unauthorized

SECRET = bytes.fromhex("11" * 32)
KEY = signing_key(SECRET)
NOW = 1_700_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], payload: dict[str, Any], key: bytes | None = KEY) -> str:
    """Build a JWT by hand, so the tests do not depend on what pyjwt is willing to produce."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


GOOD_PAYLOAD = {"sub": "ops", "role": "admin", "jti": "abc123", "iat": int(NOW)}


def refused(token: str, *, key: bytes = KEY, now: float = NOW) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        verify_token(key, token, now=now)
    err = info.value
    assert err.status == 401 and err.code == "UNAUTHORIZED"
    # Never leak the credential material into a message that may reach logs or clients.
    for secret in (token, KEY.hex(), SECRET.hex(), token.split(".")[-1]):
        if len(secret) >= 16:  # short fragments like "d" match innocent words
            assert secret not in err.message
            assert secret not in repr(err.details)
    return err


def test_public_surface() -> None:
    for name in auth.__all__:
        assert hasattr(auth, name), name
    assert ROLES == ("viewer", "deployer", "admin", "agent")
    assert ROLE_RANK == {"viewer": 1, "deployer": 2, "admin": 3}


def test_key_derivation() -> None:
    assert KEY == hmac.new(SECRET, b"orca/jwt/v1", hashlib.sha256).digest()
    assert len(KEY) == 32 and SECRET not in KEY
    pw = raft_password(SECRET)
    assert pw == hmac.new(SECRET, b"orca/raft/v1", hashlib.sha256).hexdigest()
    assert pw != KEY.hex() and pw != SECRET.hex()
    assert signing_key(b"other") != KEY


def test_generate_cluster_secret() -> None:
    a, b = generate_cluster_secret(), generate_cluster_secret()
    assert len(a) == 64 and int(a, 16) >= 0 and a == a.lower()
    assert a != b


@pytest.mark.parametrize("role", ROLES)
def test_round_trip_each_role(role: str) -> None:
    node = "worker-1" if role == "agent" else None
    token, claims = mint_token(KEY, role=role, name="worker-1", now=NOW, ttl_s=3600, node=node)
    assert claims == Claims(sub="worker-1", role=role, jti=claims.jti, iat=int(NOW), exp=int(NOW) + 3600,
                            name="worker-1", node=node)
    assert len(claims.jti) == 32
    assert verify_token(KEY, token, now=NOW + 10) == claims
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"


def test_no_ttl_means_no_exp_and_explicit_jti() -> None:
    token, claims = mint_token(KEY, role="agent", name="w1", now=NOW, jti="fixed-id_1", node="w1")
    assert claims.exp is None and claims.jti == "fixed-id_1"
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert set(payload) == {"sub", "role", "jti", "iat", "node"}
    assert verify_token(KEY, token, now=NOW + 10 * 365 * 86400) == claims


def test_random_jtis_differ() -> None:
    _, a = mint_token(KEY, role="viewer", name="v", now=NOW)
    _, b = mint_token(KEY, role="viewer", name="v", now=NOW)
    assert a.jti != b.jti


def test_verify_defaults_to_wall_clock() -> None:
    import time

    token, claims = mint_token(KEY, role="viewer", name="v", now=time.time(), ttl_s=60)
    assert verify_token(KEY, token) == claims
    old, _ = mint_token(KEY, role="viewer", name="v", now=time.time() - 120, ttl_s=60)
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(KEY, old)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"role": "root"}, "role"),
    ({"role": "Admin"}, "role"),
    ({"name": ""}, "name"),
    ({"name": "has space"}, "name"),
    ({"name": "-leading"}, "name"),
    ({"name": "x" * 200}, "name"),
    ({"jti": ""}, "jti"),
    ({"jti": "a.b"}, "jti"),
    ({"ttl_s": 0}, "ttl_s"),
    ({"ttl_s": -5}, "ttl_s"),
    ({"ttl_s": float("nan")}, "ttl_s"),
    ({"now": float("inf")}, "now"),
    ({"role": "agent"}, "node"),
    ({"role": "agent", "node": ""}, "node"),
    ({"role": "agent", "node": "Worker-1"}, "node"),
    ({"role": "agent", "node": "w" * 64}, "node"),
    ({"role": "agent", "node": 7}, "node"),
    ({"role": "admin", "node": "worker-1"}, "node"),
    ({"node": "worker-1"}, "node"),
])
def test_mint_rejects(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"role": "viewer", "name": "ops", "now": NOW, **kwargs}
    with pytest.raises(Invalid) as info:
        mint_token(KEY, **args)
    assert info.value.details == {"field": field}
    assert not isinstance(info.value, Unauthorized)


def test_names_people_use() -> None:
    for name in ("ops", "alice@example.com", "ci.deploy-bot_2", "worker-1"):
        token, _ = mint_token(KEY, role="deployer", name=name, now=NOW)
        assert verify_token(KEY, token, now=NOW).sub == name


def test_hand_crafted_good_token_is_accepted() -> None:
    claims = verify_token(KEY, craft({"alg": "HS256", "typ": "JWT"}, GOOD_PAYLOAD), now=NOW)
    assert claims == Claims(sub="ops", role="admin", jti="abc123", iat=int(NOW), exp=None, name="ops")


def test_alg_none_rejected() -> None:
    for alg in ("none", "None", "NONE"):
        err = refused(craft({"alg": alg, "typ": "JWT"}, GOOD_PAYLOAD, key=None))
        assert "algorithm" in err.message
    # Also with a signature present: the header decides, never the attacker's choice.
    refused(craft({"alg": "none"}, GOOD_PAYLOAD))


@pytest.mark.parametrize("alg", ["HS512", "HS384", "RS256", "ES256", "PS256", "EdDSA", "hs256", ""])
def test_other_algorithms_rejected(alg: str) -> None:
    assert "algorithm" in refused(craft({"alg": alg, "typ": "JWT"}, GOOD_PAYLOAD)).message


def test_missing_alg_rejected() -> None:
    refused(craft({"typ": "JWT"}, GOOD_PAYLOAD))


def test_real_hs512_token_rejected() -> None:
    token = jwt.encode(GOOD_PAYLOAD, KEY + KEY, algorithm="HS512")
    assert "algorithm" in refused(token).message


def test_wrong_key() -> None:
    token, _ = mint_token(signing_key(b"another cluster"), role="admin", name="ops", now=NOW)
    assert refused(token).message == "invalid token signature"
    # The raw cluster secret is not the JWT key either.
    token, _ = mint_token(SECRET, role="admin", name="ops", now=NOW)
    assert refused(token).message == "invalid token signature"


def test_expired() -> None:
    token, _ = mint_token(KEY, role="admin", name="ops", now=NOW, ttl_s=60)
    verify_token(KEY, token, now=NOW + 59)
    assert refused(token, now=NOW + 60).message == "token expired"
    assert refused(token, now=NOW + 10_000).message == "token expired"


def test_not_before() -> None:
    token = craft({"alg": "HS256"}, {**GOOD_PAYLOAD, "nbf": int(NOW) + 100})
    assert "not yet valid" in refused(token).message
    assert verify_token(KEY, token, now=NOW + 100).sub == "ops"


def test_tampered_payload() -> None:
    token, _ = mint_token(KEY, role="viewer", name="ops", now=NOW)
    head, _, sig = token.split(".")
    forged = b64(json.dumps({**GOOD_PAYLOAD, "role": "admin"}).encode())
    assert refused(f"{head}.{forged}.{sig}").message == "invalid token signature"


def test_tampered_signature() -> None:
    token, _ = mint_token(KEY, role="viewer", name="ops", now=NOW)
    head, body, sig = token.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    refused(f"{head}.{body}.{flipped}")
    refused(f"{head}.{body}.")


@pytest.mark.parametrize("claim", ["sub", "role", "jti", "iat"])
def test_missing_claims(claim: str) -> None:
    payload = {k: v for k, v in GOOD_PAYLOAD.items() if k != claim}
    assert f"'{claim}'" in refused(craft({"alg": "HS256"}, payload)).message


@pytest.mark.parametrize(("claim", "value"), [
    ("sub", ""), ("sub", 5), ("sub", None), ("jti", ""), ("jti", ["a"]), ("iat", "now"), ("iat", True),
    ("exp", "later"), ("exp", True), ("role", None), ("role", 3),
])
def test_wrongly_typed_claims(claim: str, value: Any) -> None:
    refused(craft({"alg": "HS256"}, {**GOOD_PAYLOAD, claim: value}))


@pytest.mark.parametrize("role", ["root", "ADMIN", "", "superuser"])
def test_unknown_role(role: str) -> None:
    assert refused(craft({"alg": "HS256"}, {**GOOD_PAYLOAD, "role": role})).message == "token has an unknown role"


@pytest.mark.parametrize("token", [
    "", "abc", "a.b", "a.b.c", "a.b.c.d", "....", "Bearer x.y.z", "x" * 10_000,
    b64(b"[1]") + "." + b64(b"{}") + ".x",
    b64(b'{"alg":"HS256"}') + "." + b64(b"[1,2]") + ".x",
    b64(b'{"alg":"HS256"}') + "." + b64(b"not json") + ".x",
    b64(b"[" * 3000 + b"]" * 3000) + "." + b64(b"{}") + ".x",
])
def test_malformed(token: str) -> None:
    refused(token)


def test_payload_must_be_an_object() -> None:
    header = b64(b'{"alg":"HS256"}')
    body = b64(b"[1,2]")
    sig = b64(hmac.new(KEY, f"{header}.{body}".encode(), hashlib.sha256).digest())
    refused(f"{header}.{body}.{sig}")


def test_non_string_token() -> None:
    with pytest.raises(Unauthorized, match="malformed"):
        verify_token(KEY, None, now=NOW)  # type: ignore[arg-type]


HUMAN = ("viewer", "deployer", "admin")


@pytest.mark.parametrize(("have", "need", "ok"), [
    *[(h, n, HUMAN.index(h) >= HUMAN.index(n)) for h in HUMAN for n in HUMAN],
    ("agent", "agent", True),
    ("admin", "agent", False),
    ("deployer", "agent", False),
    ("viewer", "agent", False),
    ("agent", "viewer", False),
    ("agent", "deployer", False),
    ("agent", "admin", False),
    ("root", "viewer", False),
    ("admin", "root", False),
    ("", "", False),
])
def test_role_satisfies(have: str, need: str, ok: bool) -> None:
    assert role_satisfies(have, need) is ok


# --- node identity --------------------------------------------------------------------------------

AGENT_PAYLOAD = {"sub": "worker-1", "role": "agent", "jti": "j1", "iat": int(NOW), "node": "worker-1"}


def test_agent_token_carries_its_node() -> None:
    token, claims = mint_token(KEY, role="agent", name="anything", now=NOW, node="worker-2")
    assert claims.node == "worker-2"
    assert verify_token(KEY, token, now=NOW).node == "worker-2"
    assert verify_token(KEY, craft({"alg": "HS256"}, AGENT_PAYLOAD), now=NOW).node == "worker-1"


def test_agent_token_without_node_is_refused() -> None:
    """Tokens minted before node identity: refused, with a message that says how to replace them."""
    payload = {k: v for k, v in AGENT_PAYLOAD.items() if k != "node"}
    err = refused(craft({"alg": "HS256"}, payload))
    assert "not bound to a node" in err.message and "--node" in err.message


@pytest.mark.parametrize("node", ["", None, 5, ["worker-1"], "Worker-1", "w" * 64, "a b", "../x"])
def test_agent_token_with_a_bad_node_is_refused(node: Any) -> None:
    refused(craft({"alg": "HS256"}, {**AGENT_PAYLOAD, "node": node}))


@pytest.mark.parametrize("role", HUMAN)
def test_only_agent_tokens_carry_a_node(role: str) -> None:
    refused(craft({"alg": "HS256"}, {**AGENT_PAYLOAD, "role": role}))


def test_a_node_cannot_be_swapped_without_the_key() -> None:
    token, _ = mint_token(KEY, role="agent", name="worker-1", now=NOW, node="worker-1")
    head, _, sig = token.split(".")
    forged = b64(json.dumps({**AGENT_PAYLOAD, "node": "worker-2"}).encode())
    assert refused(f"{head}.{forged}.{sig}").message == "invalid token signature"


@settings(max_examples=200, deadline=None)
@given(node=st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True),
       other=st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True))
def test_node_claim_round_trips(node: str, other: str) -> None:
    token, claims = mint_token(KEY, role="agent", name="n", now=NOW, node=node)
    got = verify_token(KEY, token, now=NOW)
    assert got == claims and got.node == node
    assert (got.node == other) is (node == other)


def test_peek_claims() -> None:
    token, _ = mint_token(KEY, role="agent", name="w", now=NOW, node="worker-3")
    assert auth.peek_claims(token)["node"] == "worker-3"
    for junk in ("", "a.b", "ORCAJOIN-1-x-y", "x" * 10_000, "a.b.c", None):
        assert auth.peek_claims(junk) is None  # type: ignore[arg-type]
