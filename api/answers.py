"""Answers kept in memory per version of the state they are read from: made once, sent as bytes.

An endpoint whose answer changes only when some state changes (the active alerts change only with an
alert event) keeps its answers here, keyed by the request's parameters and valid for one *version* of
that state (:attr:`api.events.EventHub.version` for alerts). For each (key, version):

- the answer is made **once**: every request that arrives while it is being made waits for that one
  (after an alert, every resident page asks at once; they cost one database read, not thousands);
- it is kept as the bytes sent (and their gzip form, made once, for clients that accept it), with a
  strong ETag, so a client that already has it gets ``304 Not Modified`` (RFC 9110 §13.1.2);
- a new version drops every answer of the old one; an answer made for an old version is never kept.

Whether the state may be trusted (for alerts: the event hub is connected) is the caller's decision:
:meth:`AnswerCache.answer` with ``version=None`` makes a fresh answer every time.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from api.compression import MIN_BYTES, accepts_gzip


@dataclass(frozen=True)
class Answer:
    """One answer: ``body`` (bytes), ``gz`` its gzip form (None when too small to gain), ``etag`` (of ``body``)."""

    body: bytes
    gz: bytes | None
    etag: str
    #: the headers of each form of the answer, by (gzipped, content type, Cache-Control), built once
    _headers: dict[tuple[bool, str, str], CIMultiDictProxy[str]] = field(default_factory=dict, compare=False,
                                                                          repr=False)

    @classmethod
    def of(cls, body: bytes) -> Answer:
        gz = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= MIN_BYTES else None
        return cls(body, gz if gz is not None and len(gz) < len(body) else None,
                   hashlib.blake2b(body, digest_size=12).hexdigest())

    def tag(self, gzipped: bool) -> str:
        """The entity tag of one form (unquoted): the two encodings are different bytes."""
        return self.etag + "-gz" if gzipped else self.etag

    def headers(self, *, gzipped: bool, content_type: str, cache_control: str) -> CIMultiDictProxy[str]:
        """The headers sent with the answer (``Content-Type`` and ``Content-Encoding`` included; a 304
        sends the others), the ETag quoted as ``response.etag`` would write it."""
        key = (gzipped, content_type, cache_control)
        got = self._headers.get(key)
        if got is None:
            headers = CIMultiDict({hdrs.CACHE_CONTROL: cache_control, hdrs.VARY: "Accept-Encoding",
                                   hdrs.ETAG: f'"{self.tag(gzipped)}"', hdrs.CONTENT_TYPE: content_type})
            if gzipped:
                headers[hdrs.CONTENT_ENCODING] = "gzip"
            got = self._headers[key] = CIMultiDictProxy(headers)
        return got

    def response(self, request: web.Request, *, content_type: str, cache_control: str) -> web.Response:
        """The answer for ``request``: 304 when its If-None-Match holds this answer's ETag, gzip when accepted."""
        gzipped = self.gz is not None and accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
        headers = self.headers(gzipped=gzipped, content_type=content_type, cache_control=cache_control)
        # (most requests hold no If-None-Match: its parse only when one is there)
        if hdrs.IF_NONE_MATCH in request.headers:
            etag = self.tag(gzipped)
            wanted = request.if_none_match
            if wanted and any(t.value in (etag, "*") for t in wanted):  # weak comparison (RFC 9110 §13.1.2)
                return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                         if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_ENCODING)})
        # (web.Response copies the headers it is given)
        return web.Response(body=self.gz if gzipped else self.body, headers=headers)


class AnswerCache:
    """Answers by key for the current version, each made once (see the module's docstring).

    ``max_keys`` bounds the answers of one version (parameters come from anyone): past it, the answers
    are dropped and made again.
    """

    def __init__(self, *, max_keys: int = 1000) -> None:
        self.max_keys = max_keys
        self.version: Hashable | None = None
        self.made = 0  # answers made (a measure for tests and benchmarks)
        self._answers: dict[Hashable, Answer] = {}
        self._making: dict[Hashable, asyncio.Task[Answer]] = {}

    def kept(self, key: Hashable, version: Hashable | None) -> Answer | None:
        """The answer already made for ``key`` at ``version``, without waiting (None: :meth:`answer` makes it)."""
        if version is None or version != self.version:
            return None
        return self._answers.get(key)

    async def answer(self, key: Hashable, version: Hashable | None, make: Callable[[], Awaitable[bytes]]) -> Answer:
        """The answer for ``key`` at ``version``, made by ``make`` (the body's bytes) unless made already.

        ``version=None``: the state cannot be trusted; ``make`` runs for this request alone. Errors of
        ``make`` reach every request waiting for it; the next request tries again.
        """
        if version is None:
            self.made += 1
            return Answer.of(await make())
        if version != self.version:
            self.version = version
            self._answers.clear()
            self._making.clear()  # answers being made for the old version finish for their own requests only
        answer = self._answers.get(key)
        if answer is not None:
            return answer
        task = self._making.get(key)
        if task is None:
            task = asyncio.ensure_future(self._make(key, version, make))
            task.add_done_callback(_retrieve)
            self._making[key] = task
        return await asyncio.shield(task)  # a request that goes away does not stop it for the others

    async def _make(self, key: Hashable, version: Hashable, make: Callable[[], Awaitable[bytes]]) -> Answer:
        try:
            answer = Answer.of(await make())
            self.made += 1
        finally:
            if self._making.get(key) is asyncio.current_task():
                del self._making[key]
        if version == self.version:  # not if a change arrived while it was being made
            if len(self._answers) >= self.max_keys:
                self._answers.clear()
            self._answers[key] = answer
        return answer


def _retrieve(task: asyncio.Task[Answer]) -> None:
    """Mark an error as seen (each waiting request got it); no "exception was never retrieved" log."""
    if not task.cancelled():
        task.exception()
