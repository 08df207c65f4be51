"""Secret grants through real masters: a deployer cannot reference a secret outside its grants, and a refused
write commits nothing (the replicated state, read linearizably from the leader, is the same before and after)."""

from __future__ import annotations

import hashlib
import json

import pytest

from orca.client import ApiError, Client
from orca.devcluster import LocalCluster

pytestmark = pytest.mark.cluster

IMAGE = "orca-test/busybox"


def state_digest(admin: Client) -> str:
    """Everything a refused write could have touched, read through the leader's log (consistent reads)."""
    services = admin.request("GET", "/api/v1/status", params={"consistent": "true"})
    details = [admin.request("GET", f"/api/v1/services/{s['name']}/history", params={"consistent": "true"})
               for s in services["services"]]
    view = {"services": services, "history": details,
            "secrets": admin.request("GET", "/api/v1/secrets", params={"consistent": "true"}),
            "tokens": admin.request("GET", "/api/v1/tokens", params={"consistent": "true"}),
            "events": admin.request("GET", "/api/v1/events", params={"consistent": "true", "limit": "1000"})}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()


def refused(client: Client, services: list[dict]) -> ApiError:
    with pytest.raises(ApiError) as info:
        client.deploy(services)
    return info.value


def test_a_deployer_cannot_reference_an_ungranted_secret(cluster: LocalCluster) -> None:
    urls = [m.url for m in cluster.masters]
    with Client(urls, cluster.token("admin", "root")) as admin:
        admin.set_secret("DB_PASS", "db-value-1", projects=["shop"])
        admin.set_secret("LOG_KEY", "log-value-2", all_projects=True)
        admin.set_secret("OLD", "old-value-3")  # no grants: admin-only, as every secret from before grants
        shop_token = admin.create_token("deployer", "shop-ci", projects=["shop"])["token"]
        listed = admin.list_secrets()
        assert {s["key"]: s["grants"] for s in listed} == {
            "DB_PASS": {"all_projects": False, "projects": ["shop"]},
            "LOG_KEY": {"all_projects": True, "projects": []},
            "OLD": {"all_projects": False, "projects": []}}
        assert "value" not in json.dumps(listed)
        admin.deploy([{"name": "site", "project": "web", "image": IMAGE, "replicas": 0}])
        before = state_digest(admin)

        with Client(urls, cluster.token("deployer", "ci")) as deployer, Client(urls, shop_token) as shop:
            # an unscoped deployer: only secrets granted to all projects
            for key in ("DB_PASS", "OLD", "MISSING"):
                err = refused(deployer, [{"name": "ok", "image": IMAGE, "project": "shop", "replicas": 0},
                                         {"name": "leak", "image": IMAGE, "project": "shop", "replicas": 0,
                                          "env": {"X": f"${{secrets.{key}}}"}}])
                assert (err.status, err.code, err.details["secret"]) == (403, "SECRET_FORBIDDEN", key), err
                assert "value" not in json.dumps(err.body)
            # a shop deployer: shop's secret only in shop's specs, and only shop's services
            err = refused(shop, [{"name": "leak", "image": IMAGE, "project": "web", "replicas": 0,
                                  "env": {"X": "${secrets.DB_PASS}"}}])
            assert (err.status, err.code) == (403, "PROJECT_FORBIDDEN")
            err = refused(shop, [{"name": "site", "image": IMAGE, "project": "shop", "replicas": 0}])
            assert err.code == "PROJECT_FORBIDDEN"  # taking web's service into shop
            with pytest.raises(ApiError) as info:
                shop.scale("site", 1)
            assert info.value.code == "PROJECT_FORBIDDEN"
            err = refused(shop, [{"name": "leak", "image": IMAGE, "project": "shop", "replicas": 0,
                                  "env": {"X": "${secrets.OLD}"}}])
            assert err.code == "SECRET_FORBIDDEN" and err.details["secret"] == "OLD"
            # nothing of the above was committed
            assert state_digest(admin) == before

            # what the grants do allow
            assert deployer.deploy([{"name": "logger", "image": IMAGE, "project": "web", "replicas": 0,
                                     "env": {"K": "${secrets.LOG_KEY}"}}])["deployed"] == ["logger"]
            assert shop.deploy([{"name": "db", "image": IMAGE, "project": "shop", "replicas": 0,
                                 "env": {"P": "${secrets.DB_PASS}", "K": "${secrets.LOG_KEY}"}}])["deployed"] == ["db"]
        # admins may reference anything (they grant)
        assert admin.deploy([{"name": "legacy", "image": IMAGE, "project": "web", "replicas": 0,
                              "env": {"O": "${secrets.OLD}"}}])["deployed"] == ["legacy"]
        # granting is an admin's, and changes who may reference: shop's token may now use OLD
        admin.grant_secret("OLD", ["shop"])
        with Client(urls, shop_token) as shop:
            assert shop.deploy([{"name": "db2", "image": IMAGE, "project": "shop", "replicas": 0,
                                 "env": {"O": "${secrets.OLD}"}}])["deployed"] == ["db2"]
            with pytest.raises(ApiError) as info:
                shop.grant_secret("DB_PASS", all_projects=True)
            assert info.value.status == 403
