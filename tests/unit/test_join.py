"""Node identity in the pure parts: join tokens (orca.jointoken), the join ops (create, rotate, revoke,
the one-time exchange) and node claims on recorded tokens, including property tests over sequences."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca import auth, jointoken
from orca.agent.credential import NODE_TOKEN_FILE, NONCE_FILE, Credential
from orca.errors import Unauthorized
from orca.state.machine import apply, encode_entry, new_state

KEY = jointoken.join_key(auth.signing_key(b"1" * 64))
NONCE = hashlib.sha256(b"nonce").hexdigest()


def entry(op: str, args: dict[str, Any], *, now: float = 1000.0, actor: str = "admin") -> bytes:
    return encode_entry(op, args, now=now, actor=actor)


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" not in result, result
    return result["result"]


def code(result: dict[str, Any]) -> str:
    assert "error" in result, result
    return result["error"]["code"]


def make(s: dict[str, Any], token_id: str, *, node: str | None = None, expires_at: float | None = None,
         rotate: bool = False, now: float = 1000.0) -> dict[str, Any]:
    return ok(apply(s, entry("create_join_token", {"id": token_id, "role": "worker", "node": node,
                                                    "expires_at": expires_at, "rotate": rotate}, now=now)))


def join(s: dict[str, Any], token_id: str, node: str, *, jti: str = "j", nonce: str = NONCE,
         now: float = 1001.0) -> dict[str, Any]:
    return apply(s, entry("join_node", {"id": token_id, "node_id": node, "jti": jti, "iat": int(now),
                                        "nonce_digest": nonce}, now=now, actor=f"join:{token_id}"))


# --- the token format -------------------------------------------------------------------------------

def test_token_shape_and_verification() -> None:
    token_id = jointoken.new_id()
    token = jointoken.make(KEY, token_id)
    assert token.startswith("ORCAJOIN-1-") and jointoken.looks_like_join_token(token)
    parsed = jointoken.verify(KEY, token)
    assert (parsed.version, parsed.id, parsed.ca_fingerprint) == (1, token_id, None)
    assert parsed.secret not in repr(parsed)
    assert jointoken.make(KEY, token_id) == token  # re-printable from the recorded id
    other = jointoken.join_key(auth.signing_key(b"2" * 64))
    with pytest.raises(Unauthorized, match="invalid join token"):
        jointoken.verify(other, token)


@pytest.mark.parametrize("text", [
    "", "ORCAJOIN", "ORCAJOIN-", "ORCAJOIN-1", "ORCAJOIN-1-abc-def", "ORCAJOIN-x-" + "0" * 16 + "-" + "0" * 64,
    "ORCAJOIN-1-" + "0" * 16 + "-" + "0" * 63, "ORCAJOIN-1-" + "G" * 16 + "-" + "0" * 64,
    "ORCAJOIN-1-" + "0" * 16 + "-" + "0" * 64 + "-extra", "orcajoin-1-" + "0" * 16 + "-" + "0" * 64,
    "ORCAJOIN-١-" + "0" * 16 + "-" + "0" * 64, "ORCAJOIN-1-" + "0" * 300, "eyJ.a.b",
])
def test_malformed_tokens_are_refused(text: str) -> None:
    with pytest.raises(Unauthorized) as info:
        jointoken.verify(KEY, text)
    assert info.value.status == 401


def test_unknown_versions_are_named() -> None:
    with pytest.raises(Unauthorized, match="version 3 is not supported"):
        jointoken.parse("ORCAJOIN-3-" + "a" * 64 + "-" + "0" * 16 + "-" + "0" * 64)


def test_version_2_carries_the_ca_fingerprint() -> None:
    key = jointoken.join_key(b"k" * 32)
    token = jointoken.make(key, "0123456789abcdef", "ab" * 32)
    assert token.startswith("ORCAJOIN-2-" + "ab" * 32 + "-0123456789abcdef-")
    parsed = jointoken.verify(key, token)
    assert parsed.version == 2 and parsed.ca_fingerprint == "ab" * 32 and parsed.id == "0123456789abcdef"
    # The v1 form of the same id carries the same secret: the fingerprint is for the agent only.
    assert jointoken.verify(key, jointoken.make(key, "0123456789abcdef")).secret == parsed.secret
    for bad in ("ORCAJOIN-2-" + "AB" * 32 + token[75:], "ORCAJOIN-2-" + token[76:], token + "-x"):
        with pytest.raises(Unauthorized):
            jointoken.parse(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_verify_never_raises_anything_but_unauthorized(text: str) -> None:
    try:
        jointoken.verify(KEY, text)
    except Unauthorized:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=8, max_size=8), st.integers(min_value=0, max_value=63), st.sampled_from("0123456789abcdef"))
def test_any_changed_character_is_refused(raw: bytes, pos: int, char: str) -> None:
    token = jointoken.make(KEY, raw.hex())
    prefix = len("ORCAJOIN-1-") + 17
    changed = token[:prefix + pos] + char + token[prefix + pos + 1:]
    if changed != token:
        with pytest.raises(Unauthorized):
            jointoken.verify(KEY, changed)


# --- the ops ----------------------------------------------------------------------------------------

def test_exchange_once_records_a_node_bound_credential() -> None:
    s = new_state()
    make(s, "a" * 16, expires_at=5000)
    result = ok(join(s, "a" * 16, "worker-2", jti="jt1"))
    assert result == {"node_id": "worker-2", "jti": "jt1", "iat": 1001, "id": "a" * 16}
    record = s["tokens"]["jt1"]
    assert (record["role"], record["node"], record["revoked"], record["created_by"]) == \
        ("agent", "worker-2", False, "join:" + "a" * 16)
    assert s["join_tokens"]["a" * 16]["used_by"] == "worker-2"
    assert [e["type"] for e in s["events"]][-1] == "node_joined"
    # Used: refused for any other node, or the same node without the first request's nonce.
    before = copy.deepcopy(s)
    assert code(join(s, "a" * 16, "worker-3", jti="jt2")) == "UNAUTHORIZED"
    assert code(join(s, "a" * 16, "worker-2", jti="jt3", nonce="b" * 64)) == "UNAUTHORIZED"
    assert s == before
    # The same agent retrying (the answer was lost): the same credential, nothing new.
    again = ok(join(s, "a" * 16, "worker-2", jti="jt4"))
    assert again["jti"] == "jt1" and again["replayed"] and s == before


def test_refusals_change_nothing() -> None:
    s = new_state()
    make(s, "1" * 16, expires_at=2000)
    make(s, "2" * 16, node="worker-9")
    make(s, "3" * 16)
    ok(apply(s, entry("revoke_join_token", {"id": "3" * 16})))
    s["nodes"]["worker-1"] = {"id": "worker-1"}
    ok(apply(s, entry("create_token", {"jti": "old", "name": "worker-4", "role": "agent", "iat": 1,
                                       "expires_at": None, "node": "worker-4"})))
    before = copy.deepcopy(s)
    assert code(join(s, "1" * 16, "worker-2", now=2000.0)) == "UNAUTHORIZED"   # expired
    assert code(join(s, "2" * 16, "worker-2")) == "FORBIDDEN"                   # made for worker-9
    assert code(join(s, "3" * 16, "worker-2")) == "UNAUTHORIZED"                # revoked
    assert code(join(s, "f" * 16, "worker-2")) == "UNAUTHORIZED"                # unknown
    assert code(join(s, "1" * 16, "worker-1")) == "CONFLICT"                    # registered node
    assert code(join(s, "1" * 16, "worker-4")) == "CONFLICT"                    # holds a live credential
    assert code(join(s, "1" * 16, "Worker-2")) == "VALIDATION_ERROR"
    assert code(join(s, "1" * 16, "worker-2", nonce="short")) == "VALIDATION_ERROR"
    assert s == before
    # Once the old credential is revoked, the node id is free for a join again.
    ok(apply(s, entry("revoke_token", {"jti": "old"})))
    assert ok(join(s, "1" * 16, "worker-4", jti="new"))["node_id"] == "worker-4"


def test_rotation_revokes_every_unused_token_of_the_role() -> None:
    s = new_state()
    make(s, "1" * 16)
    make(s, "2" * 16)
    ok(join(s, "2" * 16, "worker-2"))
    rotated = make(s, "3" * 16, rotate=True)
    assert rotated["rotated"] == ["1" * 16]  # the used one stays as it was (used, not revoked)
    assert s["join_tokens"]["1" * 16]["revoked"] and not s["join_tokens"]["2" * 16]["revoked"]
    assert code(join(s, "1" * 16, "worker-5")) == "UNAUTHORIZED"
    assert ok(join(s, "3" * 16, "worker-5", jti="j5"))["node_id"] == "worker-5"


def test_create_and_revoke_validate() -> None:
    s = new_state()
    for bad in ({"id": "short"}, {"id": "a" * 16, "role": "manager"}, {"id": "a" * 16, "node": "Bad"},
                {"id": "a" * 16, "expires_at": "soon"}, {"id": "a" * 16, "rotate": "yes"}):
        assert code(apply(s, entry("create_join_token", {"role": "worker", **bad}))) == "VALIDATION_ERROR"
    make(s, "a" * 16)
    assert code(apply(s, entry("create_join_token", {"id": "a" * 16, "role": "worker"}))) == "CONFLICT"
    assert code(apply(s, entry("revoke_join_token", {"id": "b" * 16}))) == "NOT_FOUND"
    assert ok(apply(s, entry("revoke_join_token", {"id": "a" * 16}, now=5.0)))["revoked_at"] == 5.0
    assert ok(apply(s, entry("revoke_join_token", {"id": "a" * 16}, now=9.0)))["revoked_at"] == 5.0


def test_old_snapshots_without_the_table_still_apply() -> None:
    s = new_state()
    del s["join_tokens"]
    make(s, "a" * 16)
    assert "a" * 16 in s["join_tokens"]


def test_recorded_tokens_carry_their_node() -> None:
    s = new_state()
    rec = ok(apply(s, entry("create_token", {"jti": "t", "name": "worker-2", "role": "agent", "iat": 1,
                                             "expires_at": None, "node": "worker-2"})))
    assert rec["node"] == "worker-2"
    for bad in ({"role": "admin", "node": "worker-2"}, {"role": "agent", "node": "Bad!"}):
        args = {"jti": "u", "name": "x", "iat": 1, "expires_at": None, **bad}
        assert code(apply(s, entry("create_token", args))) == "VALIDATION_ERROR"
    # Entries written before node identity still apply (ops are only ever added).
    assert ok(apply(s, entry("create_token", {"jti": "v", "name": "w", "role": "agent", "iat": 1,
                                              "expires_at": None})))["node"] is None


NODES = st.sampled_from(["worker-1", "worker-2", "worker-3"])
IDS = st.sampled_from(["1" * 16, "2" * 16, "3" * 16])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("create"), IDS, st.booleans()),
    st.tuples(st.just("revoke"), IDS, st.just(False)),
    st.tuples(st.just("join"), IDS, NODES),
), max_size=25)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_each_join_token_yields_at_most_one_credential_and_each_node_at_most_one(steps: list[Any]) -> None:
    """Whatever the order of creations, rotations, revocations and exchanges: a join token is used by at
    most one node, a node obtains at most one credential by joining, refused entries change nothing,
    and two masters applying the same entries end equal."""
    a, b = new_state(), new_state()
    for i, (kind, token_id, extra) in enumerate(steps):
        if kind == "create":
            raw = entry("create_join_token", {"id": token_id, "role": "worker", "rotate": extra}, now=1000.0 + i)
        elif kind == "revoke":
            raw = entry("revoke_join_token", {"id": token_id}, now=1000.0 + i)
        else:
            raw = entry("join_node", {"id": token_id, "node_id": extra, "jti": f"j{i}", "iat": 1000 + i,
                                      "nonce_digest": hashlib.sha256(f"n{i}".encode()).hexdigest()}, now=1000.0 + i)
        before = copy.deepcopy(a)
        result = apply(a, raw, i)
        assert apply(b, raw, i) == result
        if "error" in result:
            assert a == before
    assert a == b
    joined = [t for t in a["tokens"].values() if t["created_by"] and t["created_by"].startswith("join:")]
    assert len({t["node"] for t in joined}) == len(joined)
    assert len({t["created_by"] for t in joined}) == len(joined)
    for rec in a["join_tokens"].values():
        if rec["used_by"] is not None:
            assert a["tokens"][rec["jti"]]["node"] == rec["used_by"] and rec["jti"] is not None


# --- the agent's credential -------------------------------------------------------------------------

def node_token(node: str) -> str:
    return auth.mint_token(b"k" * 32, role="agent", name=node, node=node, now=1.0)[0]


def test_credential_from_a_node_token_is_used_as_is(tmp_path: Path) -> None:
    token = node_token("worker-1")
    cred = Credential("worker-1", token, tmp_path)
    assert cred.join_token is None and cred.token == token
    assert Credential("worker-1", "opaque", tmp_path).token == "opaque"


def test_credential_from_a_join_token_is_stored_0600_and_reused(tmp_path: Path) -> None:
    join_token = jointoken.make(KEY, "a" * 16)
    cred = Credential("worker-1", join_token, tmp_path)
    assert cred.token is None and cred.join_token == join_token
    nonce = cred.nonce()
    assert cred.nonce() == nonce and (tmp_path / NONCE_FILE).stat().st_mode & 0o777 == 0o600
    assert cred.accept({"token": node_token("worker-2")}) is not None  # another node's: refused
    assert cred.accept({"nope": 1}) is not None and cred.token is None
    assert cred.accept({"token": node_token("worker-1")}) is None
    path = tmp_path / NODE_TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600 and not (tmp_path / NONCE_FILE).exists()
    again = Credential("worker-1", join_token, tmp_path)  # a restart
    assert again.token == cred.token
    # A stored credential of another node (a copied data dir) is not used.
    assert Credential("worker-3", join_token, tmp_path).token is None


# --- the masters' check on agent routes ----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(bound=st.one_of(st.none(), st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True)),
       asked=st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True))
def test_an_agent_token_acts_for_its_own_node_only(bound: str | None, asked: str) -> None:
    from orca.errors import Forbidden
    from orca.master.api_workers import require_own_node

    claims = auth.Claims(sub="s", role="agent", jti="j", iat=1, exp=None, name="s", node=bound)
    request: dict[str, Any] = {"claims": claims}
    if bound == asked:
        require_own_node(request, asked)  # type: ignore[arg-type]
    else:
        with pytest.raises(Forbidden) as info:
            require_own_node(request, asked)  # type: ignore[arg-type]
        assert info.value.status == 403 and info.value.details == {"node": asked, "token_node": bound}
    with pytest.raises(Forbidden):
        require_own_node({}, asked)  # type: ignore[arg-type]  # no claims: fail closed
