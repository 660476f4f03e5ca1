"""The pages Sonae serves itself: ``GET /`` (residents), ``GET /staff`` (staff console), ``GET /static/...``.

Everything a page uses comes from ``api/pages/`` through these routes: no CDN, no tile server, no
third-party script. Files are read once into memory (re-read when their modification time changes),
gzip-compressed when the client accepts it, and served with an ETag. A strict Content-Security-Policy
allows only this origin, so a page cannot load or send anything elsewhere by accident.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from api.language import negotiate

routes = web.RouteTableDef()

PAGES = Path(__file__).resolve().parent / "pages"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}
#: Only this origin: scripts, styles, images and API calls. No inline script, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gz: bytes
    etag: str
    ctype: str
    mtime_ns: int


_cache: dict[str, _Asset] = {}
_lock = threading.Lock()


def _load(name: str) -> _Asset | None:
    """The asset ``name`` (a plain file name in ``api/pages``), or None when there is no such file."""
    path = PAGES / name
    suffix = path.suffix
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        return None
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    with _lock:
        asset = _cache.get(name)
    if asset is not None and asset.mtime_ns == mtime:
        return asset
    body = path.read_bytes()
    asset = _Asset(body, gzip.compress(body, compresslevel=9, mtime=0),
                   '"' + hashlib.sha256(body).hexdigest()[:20] + '"', _TYPES[suffix], mtime)
    with _lock:
        _cache[name] = asset
    return asset


#: the resident page's root element, as written in ``index.html``
_ROOT = b'<html lang="ja">'


def _in_language(asset: _Asset, lang: str) -> _Asset:
    """``asset`` (an HTML page) whose root element names the language the page starts in, ``data-lang``
    (read by ``resident.js`` when the address has no ``lang``), and its ``lang`` attribute to match."""
    key = (asset.etag, lang)
    with _lock:
        done = _variants.get(key)
    if done is not None:
        return done
    root = f'<html lang="{"en" if lang == "en" else "ja"}" data-lang="{lang}">'.encode()
    body = asset.body.replace(_ROOT, root, 1)
    done = _Asset(body, gzip.compress(body, compresslevel=9, mtime=0),
                  '"' + hashlib.sha256(body).hexdigest()[:20] + '"', asset.ctype, asset.mtime_ns)
    with _lock:
        _variants[key] = done
    return done


_variants: dict[tuple[str, str], _Asset] = {}


def _serve(request: web.Request, name: str, *, cache: str, negotiated: bool = False) -> web.Response:
    """The asset ``name``; ``negotiated``: an HTML page in the language of the request's ``Accept-Language``
    (:func:`api.language.negotiate`, the rule every endpoint follows), ``Vary: Accept-Language``."""
    asset = _load(name)
    if asset is None:
        raise web.HTTPNotFound()
    if negotiated:
        asset = _in_language(asset, negotiate(request.headers.get("Accept-Language")))
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "") and len(asset.gz) < len(asset.body)
    etag = asset.etag[:-1] + '-gz"' if gzipped else asset.etag  # the two encodings are different bytes
    headers = {"ETag": etag, "Cache-Control": cache,
               "Vary": "Accept-Encoding, Accept-Language" if negotiated else "Accept-Encoding",
               "Content-Security-Policy": CSP, "Cross-Origin-Opener-Policy": "same-origin",
               "Permissions-Policy": "geolocation=(self), camera=(), microphone=(), interest-cohort=()"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        body = asset.gz
    return web.Response(body=body, headers={**headers, "Content-Type": asset.ctype})


@routes.get("/")
async def resident_page(request: web.Request) -> web.Response:
    return _serve(request, "index.html", cache="no-cache", negotiated=True)


@routes.get("/staff")
async def staff_page(request: web.Request) -> web.Response:
    return _serve(request, "staff.html", cache="no-cache")


@routes.get("/static/{name}")
async def static_file(request: web.Request) -> web.Response:
    # revalidated each time (304 when unchanged): a deploy must never leave old scripts in residents' phones
    return _serve(request, request.match_info["name"], cache="no-cache")
