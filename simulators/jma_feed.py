"""A local JMA PULL feed: serves a sequence of telegrams as an Atom feed, for drills and tests.

``sonae simulate --jma DIR`` serves DIR's ``*.xml`` in name order; :meth:`JmaFeed.publish_next` (or the
``--jma-interval-s`` clock) appends the next telegram to the feed. The feed answers conditional GETs
(ETag, Last-Modified → 304) as JMA's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import xml.etree.ElementTree as ET
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

from sonae.xmltext import to_xml_bytes


class JmaFeed:
    """Telegrams ``telegrams`` (bytes, in order) served at ``/feed.xml`` and ``/data/<n>.xml``."""

    def __init__(self, telegrams: list[bytes]) -> None:
        self.telegrams = telegrams
        self.published = 0
        self.requests = 0
        self.not_modified = 0
        self._modified = formatdate(usegmt=True)

    @classmethod
    def from_directory(cls, folder: Path) -> JmaFeed:
        return cls([p.read_bytes() for p in sorted(folder.glob("*.xml"))])

    def publish_next(self) -> bool:
        """Append the next telegram; False when all are published."""
        if self.published >= len(self.telegrams):
            return False
        self.published += 1
        self._modified = formatdate(usegmt=True)
        return True

    def _etag(self) -> str:
        return '"' + hashlib.sha256(str(self.published).encode()).hexdigest()[:16] + '"'

    async def feed(self, request: web.Request) -> web.Response:
        self.requests += 1
        etag = self._etag()
        if request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag, "Last-Modified": self._modified})
        base = f"{request.scheme}://{request.host}"  # the client's Host header: text from outside
        feed = ET.Element("feed", {"xmlns": "http://www.w3.org/2005/Atom"})
        ET.SubElement(feed, "title").text = "Sonae JMA simulator"
        ET.SubElement(feed, "id").text = "urn:sonae:jma-sim"
        ET.SubElement(feed, "updated").text = "2026-01-01T00:00:00Z"
        for n in reversed(range(self.published)):
            entry = ET.SubElement(feed, "entry")
            ET.SubElement(entry, "id").text = f"urn:sonae:jma-sim:{n}"
            ET.SubElement(entry, "title").text = f"telegram {n}"
            ET.SubElement(entry, "updated").text = "2026-01-01T00:00:00Z"
            ET.SubElement(entry, "link", {"type": "application/xml", "href": f"{base}/data/{n}.xml"})
        body = to_xml_bytes(feed)  # sonae.xmltext: escaped and sanitised like every XML writer
        return web.Response(body=body, content_type="application/atom+xml",
                            headers={"ETag": etag, "Last-Modified": self._modified})

    async def telegram(self, request: web.Request) -> web.Response:
        try:
            n = int(request.match_info["n"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not 0 <= n < self.published:
            raise web.HTTPNotFound()
        return web.Response(body=self.telegrams[n], content_type="application/xml")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/feed.xml", self.feed)
        app.router.add_get("/data/{n}.xml", self.telegram)
        return app


async def serve(folder: Path, *, port: int, interval_s: float, stop: asyncio.Event,
                host: str = "127.0.0.1") -> None:
    """Serve ``folder`` as a feed, publishing one more telegram every ``interval_s`` until ``stop``.

    ``port`` 0 lets the system choose a free port; the first line printed names the URL actually served.
    """
    feed = JmaFeed.from_directory(folder)
    runner = web.AppRunner(feed.app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    port = int(runner.addresses[0][1])  # the bound port (differs from ``port`` when that was 0)
    print(f"JMA feed: http://{host}:{port}/feed.xml ({len(feed.telegrams)} telegrams, one every {interval_s:g} s)",
          flush=True)
    try:
        while feed.publish_next():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if stop.is_set():
                break
        await stop.wait()
    finally:
        await runner.cleanup()
