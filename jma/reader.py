"""Reading telegrams: JMA's PULL Atom feeds (and the long feeds for catching up), or files.

Every telegram goes through :func:`jma.store.store_telegram`, idempotent by its link, so a restart
re-reads the feed and stores exactly the telegrams it had not yet stored (nothing lost, nothing twice).
Feeds are polled with conditional GET (``If-None-Match`` / ``If-Modified-Since``, kept per URL in
``jma_feeds``); a failed fetch is retried with exponential backoff (base ``retry_base_s``, at most
``retry_max_s``) and the feed's error is kept for ``/readyz``.

Feed URLs (気象庁防災情報XML PULL型, 高頻度/長期フィード): ``…/developer/xml/feed/regular.xml``,
``extra.xml``, ``eqvol.xml`` and the ``*_l.xml`` long feeds — configured, never built in: the reader is off
unless ``jma.feeds`` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from lxml import etree
from prometheus_client import Counter

from jma.store import store_telegram

log = logging.getLogger("sonae.jma")
ATOM = "{http://www.w3.org/2005/Atom}"
FEED_ERRORS = Counter("sonae_jma_feed_errors_total", "Failed feed or telegram fetches", ["reason"])


class FeedError(RuntimeError):
    """A feed or telegram could not be fetched; ``reason`` names why (http_503, timeout, not_atom …)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def entry_links(feed: bytes) -> list[str]:
    """Telegram links of an Atom feed, oldest first (JMA lists newest first).

    Raises ``FeedError('not_atom')`` when the document is not an Atom feed.
    """
    try:
        root = etree.fromstring(feed, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        raise FeedError("not_atom") from None
    if root.tag != f"{ATOM}feed":
        raise FeedError("not_atom")
    links = []
    for entry in root.iterfind(f"{ATOM}entry"):
        link = entry.find(f"{ATOM}link")
        href = link.get("href") if link is not None else None
        if href:
            links.append(href)
    return list(reversed(links))


async def read_files(conn: asyncpg.Connection, paths: Iterable[Path]) -> list[str]:
    """Store telegrams from files (a directory: its ``*.xml`` in name order); the link is ``file:<sha256>``.

    Returns the outcome of each file (see :func:`jma.store.store_telegram`); raises ``OSError`` for a
    file that cannot be read.
    """
    outcomes = []
    for path in paths:
        files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
        for file in files:
            data = file.read_bytes()
            outcomes.append(await store_telegram(conn, link=f"file:{hashlib.sha256(data).hexdigest()}", data=data))
    return outcomes


class FeedReader:
    """Polls feeds every ``interval_s``; :meth:`poll_once` is one round (tests call it directly)."""

    def __init__(self, pool: asyncpg.Pool, *, feeds: list[str], interval_s: float = 60.0,
                 retry_base_s: float = 2.0, retry_max_s: float = 300.0, timeout_s: float = 20.0,
                 attempts: int = 4) -> None:
        self.pool = pool
        self.feeds = feeds
        self.interval_s = interval_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.attempts = attempts
        self.errors: dict[str, str] = {}

    def ready(self) -> bool:
        """False while a configured feed's last poll failed (``/readyz``)."""
        return not self.errors

    async def _get(self, session: aiohttp.ClientSession, url: str,
                   headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        delay = self.retry_base_s
        for attempt in range(self.attempts):
            try:
                async with session.get(url, headers=headers or {}) as response:
                    if response.status in (200, 304):
                        validators = {k: v for k in ("ETag", "Last-Modified")
                                      if (v := response.headers.get(k)) is not None}
                        return response.status, await response.read(), validators
                    reason = f"http_{response.status}"
                    if response.status < 500 and response.status != 429:
                        raise FeedError(reason)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            FEED_ERRORS.labels(reason).inc()
            if attempt + 1 == self.attempts:
                raise FeedError(reason)
            await asyncio.sleep(min(self.retry_max_s, delay) * (0.5 + random.random() / 2))
            delay *= 2
        raise FeedError("unreachable")

    async def poll_once(self) -> dict[str, int]:
        """Fetch every feed (conditionally) and store each telegram not stored yet; counts by outcome."""
        counts: dict[str, int] = {}
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            for url in self.feeds:
                try:
                    await self._poll_feed(session, url, counts)
                    self.errors.pop(url, None)
                except FeedError as exc:
                    # recorded first, then reported: whoever sees /readyz fail finds the reason stored
                    async with self.pool.acquire() as conn:
                        await conn.execute(
                            """INSERT INTO jma_feeds (url, checked_at, error) VALUES ($1, now(), $2)
                               ON CONFLICT (url) DO UPDATE SET checked_at = now(), error = $2""", url, exc.reason)
                    self.errors[url] = exc.reason
                    log.warning("JMA feed not read", extra={"url": url, "reason": exc.reason})
        return counts

    async def _poll_feed(self, session: aiohttp.ClientSession, url: str, counts: dict[str, int]) -> None:
        async with self.pool.acquire() as conn:
            state = await conn.fetchrow("SELECT etag, last_modified FROM jma_feeds WHERE url = $1", url)
        headers = {}
        if state is not None and state["etag"]:
            headers["If-None-Match"] = state["etag"]
        if state is not None and state["last_modified"]:
            headers["If-Modified-Since"] = state["last_modified"]
        status, body, response_headers = await self._get(session, url, headers)
        if status == 304:
            counts["not_modified"] = counts.get("not_modified", 0) + 1
        else:
            origin = urlsplit(url)[:2]
            for link in entry_links(body):
                if urlsplit(link)[:2] != origin:
                    # a feed names telegrams on its own host; anything else is not fetched (counted, logged)
                    FEED_ERRORS.labels("foreign_link").inc()
                    counts["foreign_link"] = counts.get("foreign_link", 0) + 1
                    log.warning("JMA feed entry on another host not fetched", extra={"url": url, "link": link})
                    continue
                async with self.pool.acquire() as conn:
                    if await conn.fetchval("SELECT 1 FROM jma_telegrams WHERE link = $1", link):
                        continue
                _, data, _ = await self._get(session, link)
                async with self.pool.acquire() as conn:
                    outcome = await store_telegram(conn, link=link, data=data)
                counts[outcome] = counts.get(outcome, 0) + 1
        # The validators are saved only after every entry is stored: a crash before this re-reads the feed.
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO jma_feeds (url, etag, last_modified, checked_at, error)
                   VALUES ($1, $2, $3, now(), NULL)
                   ON CONFLICT (url) DO UPDATE SET etag = coalesce($2, jma_feeds.etag),
                       last_modified = coalesce($3, jma_feeds.last_modified), checked_at = now(), error = NULL""",
                url, response_headers.get("ETag"), response_headers.get("Last-Modified"))

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)
