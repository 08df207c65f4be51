"""The OpenAPI document is valid and true: exactly the router's routes, each with its policy role."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from orca import spec
from orca.master.http import HMAC, POLICY, PUBLIC
from orca.master.openapi import ROUTES, build_document, router_routes, undocumented_routes
from orca.master.openapi_schemas import COMPONENTS
from orca.state.digest import state_digest
from orca.state.machine import new_state
from tests.unit.test_http_policy import build

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), path): op for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    _, app = build()
    doc = build_document(app)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema (incl. the JSON Schemas inside)


def test_every_served_route_and_nothing_else_is_documented() -> None:
    _, app = build()
    doc = build_document(app)
    assert set(operations(doc)) == set(router_routes(app))
    # a route served without a ROUTES entry would be listed as "(not documented yet)": add it to ROUTES
    assert undocumented_routes(app) == []


def test_the_role_of_every_operation_is_the_policy_role() -> None:
    _, app = build()
    for key, op in operations(build_document(app)).items():
        need = POLICY[key]
        assert op["x-orca-role"] == need, key
        if need == PUBLIC:
            assert op["security"] == [], key
        elif need == HMAC:
            assert op["security"] == [{"githubSignature": []}] and "401" in op["responses"], key
        else:
            assert {"bearer": []} in op["security"] and {"401", "403"} <= set(op["responses"]), key


def test_every_error_answer_is_the_envelope_and_bodies_have_schemas() -> None:
    _, app = build()
    doc = build_document(app)
    for key, op in operations(doc).items():
        for status, response in op["responses"].items():
            if status == "default" or int(status) >= 300:
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        body = op.get("requestBody")
        if body is not None:
            (media,) = body["content"].values()
            name = media["schema"]["$ref"].rsplit("/", 1)[1]
            assert name in COMPONENTS, key
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["name"] in key[1], key


def test_spec_schemas_list_exactly_the_fields_the_validators_accept() -> None:
    assert set(COMPONENTS["ServiceSpec"]["properties"]) == set(spec._TOP_FIELDS)
    assert set(COMPONENTS["ScalingPolicy"]["properties"]) == set(spec.SCALING_DEFAULTS)
    assert COMPONENTS["ServiceSpec"]["properties"]["replicas"]["maximum"] == spec.MAX_REPLICAS


@pytest.mark.parametrize("token", [None, "Bearer not-a-token"])
async def test_every_master_serves_the_document_without_a_token(token: str | None) -> None:
    _, app = build()
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/openapi.json", headers={"Authorization": token} if token else {})
        assert resp.status == 200 and resp.content_type == "application/json"
        assert json.loads(await resp.read()) == build_document(app)


def test_state_digest_changes_exactly_when_the_state_does() -> None:
    a, b = new_state(), new_state()
    assert state_digest(a) == state_digest(b)
    b["secrets"]["K"] = {"ciphertext": "x", "created_at": 1.0, "updated_at": 1.0}
    assert state_digest(a) != state_digest(b)
    del b["secrets"]["K"]
    assert state_digest(a) == state_digest(b)
    b["nodes"]["n"] = {"capacity": {"memory": 2**70}}  # beyond msgpack's range: still a digest
    assert len(state_digest(b)) == 64


def test_every_routes_entry_makes_a_valid_operation() -> None:
    """Entries may be written before their route is served (routes landing from other work): each one,
    served, still gives a valid document."""
    _, app = build()
    served = set(router_routes(app))
    policy = dict(POLICY)

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    extra = web.Application()
    extra.router.add_routes([web.route(method, path, handler) for method, path in ROUTES if (method, path)
                             not in served])
    for method, path in ROUTES:
        policy.setdefault((method, path), "join" if path.endswith("/join") else "admin")
    validate(build_document(extra, policy))
