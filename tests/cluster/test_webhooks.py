"""GitHub webhooks through real masters: HMAC, replay, branch, ping, forwarding by a follower, rate limit."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster
from orca.devcluster import http_exchange as raw

pytestmark = pytest.mark.cluster


def deliver(url: str, secret: str, payload: dict, event: str = "push", delivery: str | None = None,
            signature: str | None = None) -> tuple[int, dict, object]:
    body = json.dumps(payload).encode()
    sig = signature if signature is not None else \
        "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return raw("POST", url + "/api/v1/webhooks/github", body=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or uuid.uuid4().hex, "X-Hub-Signature-256": sig})


def test_webhook_redeploys_on_push_once_and_refuses_bad_signatures(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    token = cluster.token("deployer", "ci")
    with Client([m.url for m in cluster.masters], token) as client:
        client.deploy([{"name": "web", "image": "orca-test/busybox"}])
        status, _, hook = raw("POST", leader.url + "/api/v1/webhooks", token=token,
                              body={"repo": "acme/web", "service": "web", "branch": "main"})
        assert status == 201 and len(hook["secret"]) >= 32
        secret = hook["secret"]
        push = {"ref": "refs/heads/main", "repository": {"full_name": "acme/web"}}
        # ping, then a push sent to a follower (GitHub does not follow redirects: it forwards)
        assert deliver(leader.url, secret, push, event="ping")[0] == 200
        status, _, body = deliver(follower.url, secret, push, delivery="d-1")
        assert status == 200 and body["results"][0]["action"] == "redeployed", body
        assert client.service("web", consistent=True)["version"] == 2
        # the same delivery again: ignored, no new version
        status, _, body = deliver(leader.url, secret, push, delivery="d-1")
        assert status == 200 and body["results"][0]["action"] == "ignored"
        # another branch: ignored
        status, _, body = deliver(leader.url, secret, {**push, "ref": "refs/heads/dev"})
        assert body["results"][0]["action"] == "ignored"
        # bad or missing signature: 401, nothing recorded
        assert deliver(leader.url, "wrong-secret-wrong-secret", push)[0] == 401
        assert deliver(leader.url, secret, push, signature="")[0] == 401
        assert deliver(leader.url, secret, {**push, "repository": {"full_name": "acme/other"}})[0] == 401
        assert client.service("web", consistent=True)["version"] == 2
        listed = client.request("GET", "/api/v1/webhooks")["webhooks"]
        assert "secret" not in json.dumps(listed).replace('"secret_', "")
        assert [i["action"] for i in listed[0]["invocations"]] == ["ignored", "ignored", "redeployed", "pong"]
        # rate limited per source
        codes = [deliver(leader.url, secret, push, event="ping")[0] for _ in range(25)]
        assert 429 in codes


def test_signature_before_parsing_replayed_bodies_and_gitea(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    token = cluster.token("deployer", "ci")
    with Client([m.url for m in cluster.masters], token) as client:
        client.deploy([{"name": "web", "image": "orca-test/busybox"}])
        hook = client.add_webhook("acme/web", "web", "main")
        secret = hook["secret"]
        # an unsigned (or wrongly signed) body nested 100k deep is refused before it is parsed: 401, not 500
        deep = b"[" * 100_000 + b"]" * 100_000
        for headers in ({}, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, {"X-Gitea-Signature": "0" * 64}):
            status, _, body = raw("POST", leader.url + "/api/v1/webhooks/github", body=deep,
                                  headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x", **headers})
            assert status == 401 and body["code"] == "UNAUTHORIZED", (status, body)
        # signed by the webhook's secret, naming its repository, but too deep to parse: a 400 with the envelope
        deep = b'{"repository":{"full_name":"acme/web"},"x":' + deep + b"}"
        sig = "sha256=" + hmac.new(secret.encode(), deep, hashlib.sha256).hexdigest()
        status, _, body = raw("POST", leader.url + "/api/v1/webhooks/github", body=deep, headers={
            "X-GitHub-Event": "push", "X-GitHub-Delivery": "deep", "X-Hub-Signature-256": sig})
        assert status == 400 and body["code"] == "VALIDATION_ERROR", (status, body)

        push = {"ref": "refs/heads/main", "after": "abc123", "repository": {"full_name": "acme/web"}}
        status, _, body = deliver(leader.url, secret, push, delivery="first")
        assert body["results"][0]["action"] == "redeployed"
        # the captured delivery, replayed under fresh delivery ids, through any master: ignored
        for url, fresh in ((leader.url, "fresh-1"), (follower.url, "fresh-2")):
            status, _, body = deliver(url, secret, push, delivery=fresh)
            assert status == 200 and body["results"][0]["action"] == "ignored", body
            assert body["results"][0]["reason"] == "replayed body"
        assert client.service("web", consistent=True)["version"] == 2

        # Gitea: hex HMAC-SHA256 in X-Gitea-Signature, its own event and delivery headers, via a follower
        gitea_push = {**push, "after": "def456"}
        payload = json.dumps(gitea_push).encode()
        status, _, body = raw("POST", follower.url + "/api/v1/webhooks/github", body=payload, headers={
            "X-Gitea-Event": "push", "X-Gitea-Delivery": str(uuid.uuid4()),
            "X-Gitea-Signature": hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()})
        assert status == 200 and body["results"][0]["action"] == "redeployed", (status, body)
        assert client.service("web", consistent=True)["version"] == 3
        status, _, body = raw("POST", leader.url + "/api/v1/webhooks/github", body=payload, headers={
            "X-Gitea-Event": "push", "X-Gitea-Delivery": str(uuid.uuid4()),
            "X-Gitea-Signature": hmac.new(b"not-the-secret-at-all", payload, hashlib.sha256).hexdigest()})
        assert status == 401
        # every webhook of a repository costs an HMAC per delivery: at most 16 per repository
        for _ in range(15):
            client.add_webhook("acme/web", "web", "main")
        with pytest.raises(ApiError) as info:
            client.add_webhook("acme/web", "web", "main")
        assert info.value.status == 409
