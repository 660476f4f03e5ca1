"""``Vary`` (RFC 9110 §12.5.5): the request headers an answer was chosen by, listed on every form of it.

A handler (or a helper it calls, e.g. :func:`api.language.language` when it reads ``Accept-Language``) that
lets a request header choose the answer calls :func:`vary` with that header's name; the names are merged
into the answer's ``Vary`` when its head is written (:func:`on_prepare`, an ``on_response_prepare``
signal), so every answer made for the request carries them: the 200, a 304 of a cached/ETag path, a
problem raised after the header was read, and a stream. Names already there (``Accept-Encoding``, set by
the compression of :mod:`api.edge` or a handler that chose an encoding itself) are kept; none is listed
twice (compared without regard to case).
"""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

#: where a request keeps the names of the headers that chose its answer
_KEY: Any = web.RequestKey("vary", list) if hasattr(web, "RequestKey") else "sonae.vary"


def vary(request: web.Request, *names: str) -> None:
    """Record that the request headers ``names`` chose (or may choose) the answer to ``request``."""
    kept: list[str] | None = request.get(_KEY)
    if kept is None:
        kept = request[_KEY] = []
    for name in names:
        if name.lower() not in (k.lower() for k in kept):
            kept.append(name)


def merged(current: str | None, names: list[str]) -> str:
    """The ``Vary`` field value ``current`` (or none) with ``names`` added, each once; ``*`` stays alone."""
    listed = [v.strip() for v in (current or "").split(",") if v.strip()]
    if "*" in listed:
        return "*"
    seen = {v.lower() for v in listed}
    for name in names:
        if name.lower() not in seen:
            listed.append(name)
            seen.add(name.lower())
    return ", ".join(listed)


def merge_recorded(request: web.Request, response: web.StreamResponse) -> None:
    """The names :func:`vary` recorded for ``request``, merged into ``response``'s ``Vary`` (not yet sent)."""
    # (a request that keeps nothing recorded none: its length is a dict's, where ``get`` of a missing key raises
    # and catches a KeyError inside the Mapping mixin, on most requests)
    names = request.get(_KEY) if len(request) else None
    if names:
        response.headers[hdrs.VARY] = merged(response.headers.get(hdrs.VARY), names)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: :func:`merge_recorded` (the API's application calls it from
    :func:`api.edge.answer_on_prepare`, with the security headers, in one signal receiver)."""
    merge_recorded(request, response)
