"""gzip for the API's own answers (applied by :mod:`api.edge`): JSON, GeoJSON, CSV, Atom and CAP bodies of 1 KB
or more.

The pages' files (``api/web.py``) and the road network (``/api/v1/network.geojson``) are compressed once
ahead and say so with ``Content-Encoding``; they are left alone here. Server-Sent Events are never
compressed: their handler prepares and streams its response itself (a ``StreamResponse``, already sent
when :mod:`api.edge` sees it), so no event waits in a compressor's buffer. gzip rather than deflate
(aiohttp would pick whichever the client lists first) because every client handles it the same way;
aiohttp has no brotli coding.
"""

from __future__ import annotations

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
