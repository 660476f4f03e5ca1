"""api/web.py without a browser: the pages and their files are served by Sonae itself, safely."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import web as pages

PAGES = Path(pages.__file__).resolve().parent / "pages"


async def _client() -> TestClient:
    app = web.Application()
    app.router.add_routes(pages.routes)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_pages_and_static_files_are_served_with_csp_and_etag() -> None:
    client = await _client()
    try:
        for path, ctype in (("/", "text/html"), ("/staff", "text/html"), ("/static/resident.js", "text/javascript"),
                            ("/static/map.js", "text/javascript"), ("/static/staff.js", "text/javascript"),
                            ("/static/sonae.css", "text/css"), ("/static/icon.svg", "image/svg+xml")):
            resp = await client.get(path, headers={"Accept-Encoding": "identity"})
            assert resp.status == 200, path
            assert resp.headers["Content-Type"].startswith(ctype)
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            etag = resp.headers["ETag"]
            again = await client.get(path, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
            assert again.status == 304
        resp = await client.get("/static/resident.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert resp.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await resp.read()) == (PAGES / "resident.js").read_bytes()
    finally:
        await client.close()


async def test_only_plain_page_files_can_be_fetched() -> None:
    client = await _client()
    try:
        for path in ("/static/..%2Fweb.py", "/static/%2e%2e%2fapp.py", "/static/.hidden.js", "/static/nope.js",
                     "/static/web.py", "/static/resident.js.map"):
            resp = await client.get(path)
            assert resp.status == 404, path
    finally:
        await client.close()


def test_pages_reference_only_their_own_origin() -> None:
    """No CDN, no third-party host, no inline script or style (the CSP would block them anyway)."""
    for f in PAGES.iterdir():
        if f.suffix not in (".html", ".js", ".css"):
            continue
        text = f.read_text(encoding="utf-8")
        urls = re.findall(r"https?://[^\s\"'<>)]+", text)
        assert all(u.startswith("http://www.w3.org/") for u in urls), (f.name, urls)
        if f.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {f.name}"
            assert " style=" not in text, f"inline style in {f.name}"
            assert "<html lang=" in text


def test_first_load_weight_of_the_resident_page_is_small() -> None:
    """index.html with every file it loads, uncompressed, stays well under the 300 KB budget."""
    html = (PAGES / "index.html").read_text(encoding="utf-8")
    assets = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
    total = len(html.encode()) + sum((PAGES / a).stat().st_size for a in assets)
    assert total < 150_000, total
