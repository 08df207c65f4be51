"""The web console: its static files under `/ui/`, and the CORS rules that let it use every master.

The console is a handful of static files shipped inside the package (`orca/ui/static`, libraries
vendored from npm, see its `vendor/README.md`): nothing is built at install time. They are read into
memory once, at start-up, and served only by exact name, so no request path ever reaches the file
system. They hold no secret: the routes are public, and the console asks the user for a token.

A console loaded from one master keeps working when that master dies by talking to the others, which
are other origins to the browser. So every master answers CORS requests, but only from the origins of
the cluster's own masters (their advertised API URLs): a page from anywhere else gets no CORS headers
and the browser keeps it out. Tokens travel in the `Authorization` header, never in cookies, so a
cross-origin page cannot borrow a signed-in user's rights anyway.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from orca.errors import Forbidden, NotFound
from orca.master.http import error_response

__all__ = ["Console", "STATIC_DIR", "load_assets", "origin_of"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui" / "static"
MAX_ASSET_BYTES = 2 * 1024 * 1024  # the biggest vendored file is ~150 KB; a bigger one is a packaging mistake
PREFLIGHT_MAX_AGE_S = 600
ALLOWED_METHODS = "GET, POST, PUT, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"
EXPOSED_HEADERS = "X-Orca-Leader, X-Orca-Applied-Index, X-Current-Leader, Retry-After"
_INLINE_SCRIPT = re.compile(rb"<script type=\"importmap\">(.*?)</script>", re.S)
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".md": "text/plain",
          ".png": "image/png", ".svg": "image/svg+xml"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str

    etag: str = ""


def load_assets(root: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file under `root` by its relative POSIX path (LICENSE files are served as text)."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        if len(body) > MAX_ASSET_BYTES:
            raise ValueError(f"console asset {path} is larger than {MAX_ASSET_BYTES} bytes")
        ctype = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path.relative_to(root).as_posix()] = Asset(body, ctype, etag)
    return assets


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, as a browser writes it in the `Origin` header."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _csp(index: bytes, origins: Iterable[str]) -> str:
    """Scripts only from this master, plus the one inline import map, allowed by its hash."""
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'"
                      for m in _INLINE_SCRIPT.findall(index))
    connect = " ".join(["'self'", *sorted(origins),
                        *sorted(o.replace("http", "ws", 1) for o in origins)])
    return ("default-src 'none'; script-src 'self' " + hashes + "; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src " + connect + "; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


class Console:
    """The `/ui/` routes and the CORS middleware of one master."""

    def __init__(self, master_urls: Iterable[str], assets: dict[str, Asset] | None = None) -> None:
        self.assets = load_assets() if assets is None else assets
        self.origins = {o for o in (origin_of(u) for u in master_urls) if o}
        self.csp = _csp(self.assets.get("index.html", Asset(b"", "")).body, self.origins)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ui/", self.index)
        r.add_get("/ui/{path:.+}", self.asset)
        # Outermost, so a preflight never meets authentication; headers go on every response, streams too.
        app.middlewares.insert(0, self.cors_preflight)
        app.on_response_prepare.append(self.cors_headers)

    async def index(self, request: web.Request) -> web.Response:
        return self._serve(request, "index.html")

    async def asset(self, request: web.Request) -> web.Response:
        return self._serve(request, request.match_info["path"])

    def _serve(self, request: web.Request, name: str) -> web.Response:
        """The file, or 304 when the browser's copy is current (no-cache: it always asks; an upgrade of
        orca changes the ETag, so nobody runs an old console against a new master)."""
        asset = self.assets.get(name)
        if asset is None:
            raise NotFound("no such console file", {"path": name[:200]})
        headers = {"Cache-Control": "no-cache", "ETag": asset.etag, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "Content-Security-Policy": self.csp}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=asset.body, content_type=asset.content_type,
                            charset="utf-8" if asset.content_type.startswith("text/") else None, headers=headers)

    def allowed(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin is not None and origin.lower() in self.origins else None

    @web.middleware
    async def cors_preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            origin = self.allowed(request)
            if origin is None:
                return error_response(Forbidden("cross-origin requests are answered only for the cluster's own "
                                                "masters", {"origin": (request.headers.get("Origin") or "")[:200]}))
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS, "Vary": "Origin",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S)})
        return await handler(request)

    async def cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = self.allowed(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.headers.add("Vary", "Origin")
