"""Webhook deliveries: signature headers (GitHub and Gitea), which webhook signed a body, and the replay
verdicts of the `webhook_delivery` op (by delivery id and by body digest within the window)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from orca import spec
from orca.master.api_webhooks import claimed_signatures, repo_mentioned, signed_by
from orca.state.machine import apply, encode_entry, new_state


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_claimed_signatures_accepts_github_and_gitea_forms_only() -> None:
    h = sign("s", b"x")
    assert claimed_signatures({"X-Hub-Signature-256": f"sha256={h}"}) == [h]
    assert claimed_signatures({"X-Gitea-Signature": h.upper()}) == [h]
    assert claimed_signatures({"X-Hub-Signature-256": f"sha256={h}", "X-Gitea-Signature": h}) == [h, h]
    for bad in ({}, {"X-Hub-Signature-256": h}, {"X-Hub-Signature-256": "sha1=" + h[:40]},
                {"X-Gitea-Signature": "sha256=" + h}, {"X-Gitea-Signature": h[:-1]},
                {"X-Hub-Signature-256": "sha256=" + "z" * 64}):
        assert claimed_signatures(bad) == []


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), secret=st.text(min_size=16, max_size=40), other=st.text(min_size=16, max_size=40))
def test_only_the_signing_secret_matches(body: bytes, secret: str, other: str) -> None:
    hooks = [("a", "acme/a", secret), ("b", "acme/b", other), ("c", "acme/c", None)]
    got = signed_by(hooks, body, [sign(secret, body)])
    assert ("a", "acme/a") in got and (("b", "acme/b") in got) == (sign(other, body) == sign(secret, body))
    assert signed_by(hooks, body + b"!", [sign(secret, body)]) == []


def test_repo_mentioned_is_a_byte_search_for_the_json_string() -> None:
    assert repo_mentioned(b'{"repository":{"full_name":"acme/web"}}', "acme/web")
    assert repo_mentioned(b'{"repository":{"full_name":"acme\\/web"}}', "acme/web")
    assert not repo_mentioned(b'{"repository":{"full_name":"acme/web2"}}', "acme/web")
    assert not repo_mentioned(b"[" * 1000, "acme/web")


def delivery(state: dict, delivery_id: str, *, now: float, event: str = "push", digest: str | None = "d1",
             window: float = 100.0) -> dict:
    args = {"id": "h1", "delivery": f"h1:{delivery_id}", "event": event, "ref": "refs/heads/main"}
    if digest is not None:
        args |= {"body_digest": digest, "replay_window_s": window}
    result = apply(state, encode_entry("webhook_delivery", args, now=now))
    assert "error" not in result, result
    return result["result"]


def hooked() -> dict:
    s = new_state()
    web = spec.validate_service({"name": "web", "image": "img"})
    apply(s, encode_entry("deploy", {"services": [{"name": "web", "spec": web, "digest": spec.spec_digest(web)}]},
                          now=1.0))
    apply(s, encode_entry("register_webhook", {"id": "h1", "repo": "acme/web", "service": "web", "branch": "main",
                                               "secret_ciphertext": "c"}, now=1.0))
    return s


def test_a_captured_body_under_a_fresh_delivery_id_is_refused_within_the_window() -> None:
    s = hooked()
    assert delivery(s, "d-1", now=10.0)["action"] == "redeployed"
    assert delivery(s, "d-1", now=11.0)["reason"] == "repeated delivery"
    assert delivery(s, "fresh-id", now=12.0)["reason"] == "replayed body"
    assert delivery(s, "fresh-2", now=109.0)["reason"] == "replayed body"  # the window counts from acceptance
    assert delivery(s, "other", now=20.0, event="ping")["action"] == "pong"  # another event: another key
    assert delivery(s, "new-body", now=21.0, digest="d2")["action"] == "redeployed"
    assert delivery(s, "later", now=110.0)["action"] == "redeployed"  # the window has passed
    assert s["services"]["web"]["version"] == 4
    # entries from before body digests (none in the args) are judged by delivery id only, as then
    assert delivery(s, "old-1", now=111.0, digest=None)["action"] == "redeployed"
    assert delivery(s, "old-2", now=112.0, digest=None)["action"] == "redeployed"


def test_replay_verdicts_are_the_same_on_every_master() -> None:
    a, b = hooked(), hooked()
    for st_ in (a, b):
        for i, (now, digest) in enumerate([(10.0, "x"), (11.0, "x"), (50.0, "y"), (200.0, "x"), (201.0, "y")]):
            delivery(st_, f"id-{i}", now=now, digest=digest)
    assert a == b
    assert [i["reason"] for i in a["webhooks"]["h1"]["invocations"]] == [None, "replayed body", None, None, None]
    assert set(a["webhook_bodies"]) == {"h1:push:x", "h1:push:y"}  # expired ones are forgotten


def test_a_malformed_digest_is_an_error_value_and_changes_nothing() -> None:
    s = hooked()
    before = repr(s)
    result = apply(s, encode_entry("webhook_delivery", {"id": "h1", "delivery": "h1:x", "event": "push",
                                                        "ref": None, "body_digest": "d"}, now=5.0))
    assert result["error"]["code"] == "VALIDATION_ERROR" and repr(s) == before
