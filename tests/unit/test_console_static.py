"""The web console's server side: its files are served by exact name only, with a CSP that allows the
one inline import map by hash; CORS is answered for the cluster's own masters and nobody else; and the
package ships every file the pages import."""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca.master import views
from orca.master.api import MasterApi, MasterInfo
from orca.master.console import STATIC_DIR, Console, load_assets, origin_of

ROOT = Path(__file__).resolve().parents[2]
ME, PEER, STRANGER = "http://127.0.0.1:7001", "http://127.0.0.1:7003", "http://evil.example:7001"


def build_app() -> Any:
    info = MasterInfo(node_id="m1", api_urls={"m1": ME, "m2": PEER}, raft_addrs={}, signing_key=b"k" * 32,
                      max_body_bytes=1024)
    api = MasterApi(raft=None, leadership=None, info=info)  # type: ignore[arg-type] - static routes only
    api.extra_routes.append(Console(info.api_urls.values()).add_routes)
    return api.build_app()


@pytest.fixture
async def ui(aiohttp_client: Any) -> Any:
    return await aiohttp_client(build_app())


async def test_index_and_assets_are_served_with_their_types_and_a_csp(ui: Any) -> None:
    resp = await ui.get("/ui/")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    import_map = re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self' " in csp and PEER in csp and PEER.replace("http", "ws") in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css"),
                        ("vendor/uPlot.esm.js", "text/javascript"), ("vendor/LICENSE.preact", "text/plain")):
        resp = await ui.get(f"/ui/{name}")
        assert resp.status == 200 and resp.content_type == ctype, name
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        again = await ui.get(f"/ui/{name}", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304 and await again.read() == b""
        other = await ui.get(f"/ui/{name}", headers={"If-None-Match": '"stale"'})
        assert other.status == 200 and await other.read() == await resp.read()


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/../orca/auth.py", "/ui/%2e%2e/%2e%2e/etc/passwd",
                                  "/ui/vendor/../../master/console.py", "/ui/static/app.js", "/ui//etc/passwd"])
async def test_anything_but_a_shipped_file_is_a_404_envelope(ui: Any, path: str) -> None:
    resp = await ui.get(path)
    assert resp.status == 404
    body = await resp.json()
    assert body["code"] == "NOT_FOUND" and "error" in body


async def test_cors_only_for_the_clusters_own_masters(ui: Any) -> None:
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    resp = await ui.options("/api/v1/services/web/scale", headers={"Origin": PEER, **pre})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == PEER
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "Idempotency-Key" in resp.headers["Access-Control-Allow-Headers"]
    resp = await ui.options("/api/v1/services/web/scale", headers={"Origin": STRANGER, **pre})
    assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    assert (await resp.json())["code"] == "FORBIDDEN"

    resp = await ui.get("/livez", headers={"Origin": PEER})
    assert resp.headers["Access-Control-Allow-Origin"] == PEER
    assert "X-Orca-Leader" in resp.headers["Access-Control-Expose-Headers"]
    resp = await ui.get("/livez", headers={"Origin": STRANGER})
    assert "Access-Control-Allow-Origin" not in resp.headers
    # an error is still the envelope, and still readable by the console (the 401 of a missing token)
    resp = await ui.get("/api/v1/status", headers={"Origin": PEER})
    assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == PEER


def test_every_import_of_every_page_is_a_shipped_file() -> None:
    assets = load_assets()
    index = assets["index.html"].body.decode()
    imports = re.search(r'<script type="importmap">(.*?)</script>', index, re.S).group(1)
    targets = re.findall(r'"\./([^"]+)"', imports)
    targets += re.findall(r'(?:src|href)="(?!data:)([^"]+)"', index)
    for name, asset in assets.items():
        if name.endswith(".js") and not name.startswith("vendor/"):
            targets += re.findall(r'from "\./([^"]+)"', asset.body.decode())
    assert targets and all(t in assets for t in targets), [t for t in targets if t not in assets]
    for lib in ("preact", "htm", "uplot"):
        assert f"LICENSE.{lib}" in {Path(n).name for n in assets}
    readme = assets["vendor/README.md"].body.decode()
    assert all(v in readme for v in ("10.29.8", "3.1.1", "1.6.32"))


def test_package_data_covers_every_console_directory() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["orca.ui"]
    dirs = {p.parent.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert {f"{d}/*" for d in dirs} <= set(globs)


def test_origin_of() -> None:
    assert origin_of("http://127.0.0.1:6880/") == "http://127.0.0.1:6880"
    assert origin_of("https://Master.Example") == "https://master.example"
    assert origin_of("ftp://x") is None and origin_of("nonsense") is None


def _svc(specs: list[dict[str, Any]]) -> dict[str, Any]:
    history = [{"version": i + 1, "digest": f"d{i}", "spec": s, "at": 1000.0 + i} for i, s in enumerate(specs)]
    return {"version": len(specs), "history": history, "canary": None}


def test_history_names_what_changed_from_the_version_before() -> None:
    out = views.history_view(_svc([{"image": "a", "replicas": 1}, {"image": "b", "replicas": 3},
                                   {"image": "b", "replicas": 3, "env": {"X": "1"}}]))
    assert [v["version"] for v in out] == [3, 2, 1]
    assert [v["changed"] for v in out] == [["env"], ["image"], []]
    assert out[0]["current"] and not out[1]["current"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["image", "env", "replicas", "port", "health"]),
                                st.integers(0, 3), min_size=1), min_size=1, max_size=6))
def test_history_changed_is_exactly_the_differing_fields(specs: list[dict[str, Any]]) -> None:
    out = views.history_view(_svc(specs))[::-1]
    assert out[0]["changed"] == []
    for before, after, view in zip(specs, specs[1:], out[1:], strict=False):
        expect = sorted(k for k in set(before) | set(after) if k != "replicas" and before.get(k) != after.get(k))
        assert view["changed"] == expect
