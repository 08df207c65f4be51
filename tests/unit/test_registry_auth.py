"""Private registry credentials (orca.registry): only a secret reference in the spec, the value never echoed,
the secret sent to agents like an env secret, and handed to the pull (and nowhere else)."""

from __future__ import annotations

import asyncio

import pytest

from orca import spec
from orca.agent.reconcile import Reconciler
from orca.agent.runtime import FakeRuntime
from orca.errors import InvalidSpec
from orca.registry import parse_credentials

IMAGE = "registry.example:5000/team/app:1"
PASSWORD = "s3cr3t-Pa55"


def svc(**fields: object) -> dict:
    return spec.validate_service({"name": "app", "image": IMAGE, **fields})


def test_spec_takes_only_a_secret_reference_and_never_echoes_a_pasted_password() -> None:
    s = svc(registry_auth="${secrets.REGISTRY}")
    assert s["registry_auth"] == "${secrets.REGISTRY}"
    assert spec.secret_refs(s) == {"REGISTRY"}
    assert spec.validate_service(s) == s
    for bad in (f"bob:{PASSWORD}", "${secrets.A}${secrets.B}", "x${secrets.A}", 5, "${secrets.}"):
        with pytest.raises(InvalidSpec) as exc:
            svc(registry_auth=bad)
        assert exc.value.details["field"] == "registry_auth"
        assert PASSWORD not in str(exc.value) and PASSWORD not in repr(exc.value.details)
    plain = svc()
    legacy = {k: v for k, v in plain.items() if k != "registry_auth"}
    assert spec.spec_digest(plain) == spec.spec_digest(legacy)


@pytest.mark.parametrize(("value", "expected"), [
    (f"bob:{PASSWORD}", {"username": "bob", "password": PASSWORD}),
    (f"bob:{PASSWORD}:with:colons", {"username": "bob", "password": f"{PASSWORD}:with:colons"}),
    ('{"username": "bob", "password": "p", "serveraddress": "r:5000"}',
     {"username": "bob", "password": "p", "serveraddress": "r:5000"}),
])
def test_credential_formats(value: str, expected: dict) -> None:
    assert parse_credentials(value, "REGISTRY") == expected


@pytest.mark.parametrize("value", [PASSWORD, f":{PASSWORD}", "bob:", "", "{" + PASSWORD, '{"username": "b"}',
                                   "x" * 20000])
def test_malformed_credentials_name_the_key_never_the_value(value: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_credentials(value, "REGISTRY")
    assert "REGISTRY" in str(exc.value) and PASSWORD not in str(exc.value)


def test_agent_pulls_with_the_credentials_and_reports_a_missing_secret_by_key() -> None:
    async def scenario() -> None:
        rt = FakeRuntime(images=[])
        rec = Reconciler(rt)
        alloc = {"id": "a1", "service": "app", "version": 1, "index": 0,
                 "spec": svc(registry_auth="${secrets.REGISTRY}")}
        rec.set_desired({"term": 1, "version": 1, "allocations": [alloc], "secrets": {}})
        await rec.reconcile_once()
        await rec.wait_idle()
        report = rec.reports()[0]
        assert report["status"] == "failed" and "missing secret REGISTRY" in report["reason"]
        rec.set_desired({"term": 1, "version": 2, "allocations": [alloc],
                         "secrets": {"REGISTRY": f"bob:{PASSWORD}"}})
        await rec.reconcile_once()
        await rec.wait_idle()
        assert rt.pull_auth[IMAGE] == {"username": "bob", "password": PASSWORD}
        assert rec.reports()[0]["status"] == "running"
        assert PASSWORD not in repr(rec.reports())
        rec.set_desired({"term": 1, "version": 3, "allocations": [{**alloc, "id": "a2"}],
                         "secrets": {"REGISTRY": PASSWORD}})
        await rec.reconcile_once()
        await rec.wait_idle()
        bad = next(r for r in rec.reports() if r["alloc"] == "a2")
        assert "not registry credentials" in bad["reason"] and PASSWORD not in bad["reason"]
    asyncio.run(scenario())
