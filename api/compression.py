"""gzip for the API's own answers: JSON, GeoJSON, CSV, Atom and CAP bodies of 1 KB or more.

The pages' files (``api/web.py``) and the road network (``/api/v1/network.geojson``) are compressed once
ahead and say so with ``Content-Encoding``; they are left alone here. Server-Sent Events are never
compressed: their handler prepares and streams its response itself (a ``StreamResponse``, already sent
when this middleware sees it), so no event waits in a compressor's buffer. gzip rather than deflate
(aiohttp would pick whichever the client lists first) because every client handles it the same way;
aiohttp has no brotli coding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_response import ContentCoding

#: media types worth compressing (text), by the part of Content-Type before ";"
COMPRESSIBLE = frozenset({"application/json", "application/geo+json", "application/problem+json", "text/csv",
                          "application/atom+xml", "application/cap+xml", "application/xml", "text/plain"})
#: smaller bodies gain nothing that pays for the header and the work
MIN_BYTES = 1024


def accepts_gzip(value: str) -> bool:
    """Whether an Accept-Encoding value (RFC 9110 §12.5.3) allows gzip: listed without ``q=0``."""
    if not value:  # (no header: most API clients)
        return False
    for part in value.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip().rstrip("0").rstrip(".") in ("0", ""))
    return False


@web.middleware
async def compression_middleware(request: web.Request,
                                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    response = await handler(request)
    if not isinstance(response, web.Response) or response.prepared:
        return response  # a stream (SSE) or an answer already sent
    body = response.body
    if (response.status != 200 or hdrs.CONTENT_ENCODING in response.headers or not isinstance(body, bytes | bytearray)
            or len(body) < MIN_BYTES or response.content_type not in COMPRESSIBLE):
        return response
    vary = response.headers.get(hdrs.VARY, "")
    if "accept-encoding" not in vary.lower():
        response.headers[hdrs.VARY] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
    if accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
        response.enable_compression(ContentCoding.gzip)
    return response
