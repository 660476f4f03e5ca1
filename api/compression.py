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
    """Whether an Accept-Encoding value (RFC 9110 §12.5.3) allows gzip.

    ``gzip`` (or its alias ``x-gzip``) listed with a weight above 0 allows it and listed only with ``q=0``
    refuses it, wherever it stands; ``*`` decides only for a value that names neither (the more specific
    entry wins: ``*;q=0, gzip`` allows gzip, ``gzip;q=0, *`` refuses it). A weight that is not a number
    counts as above 0. No header: no gzip (most API clients).
    """
    if not value:
        return False
    named: list[bool] = []
    star: list[bool] = []
    for part in value.lower().split(","):
        coding, *params = part.split(";")
        coding = coding.strip()
        if coding in ("gzip", "x-gzip"):
            named.append(_weight_above_zero(params))
        elif coding == "*":
            star.append(_weight_above_zero(params))
    return any(named) if named else any(star)


def _weight_above_zero(params: list[str]) -> bool:
    for param in params:
        name, _, raw = param.partition("=")
        if name.strip() == "q":
            try:
                return float(raw.strip()) != 0.0
            except ValueError:
                return True
    return True
