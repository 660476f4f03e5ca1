"""Web origins in their serialised form (RFC 6454 §6.2): what a browser sends in ``Origin``.

A browser sends ``scheme://host[:port]``: scheme and host in lower case (an international host as its
A-labels), the port only when it is not the scheme's default, no path, no trailing slash. A configured
origin (``api.cors_origins``) written ``https://Other.example/`` names the same origin and is compared in
that form (found: it never matched, and the partner's page got no CORS headers).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: a serialised host: A-labels, digits, ``.``, ``-``, ``_`` (a domain), or an IPv6 address's hex digits and
#: colons (bracketed after the check). No space, comma or other separator: ``Origin`` holds one origin
#: (Fetch §3.1), and urlsplit kept ``https://a b`` and ``https://a,b`` as hosts (found with an origin list)
_HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]+")

#: the default port of each scheme an origin of the API's partners may have (left out of the serialised form)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def serialised_origin(text: str) -> str | None:
    """The serialised form of the origin ``text`` (``scheme://host[:port]``), or None when ``text`` is no
    origin: no ``http``/``https`` scheme or no host, a user, a path other than ``/``, a query, a fragment,
    a port outside 1 to 65535, a blank or control character, a host of other characters than a host's (an
    origin list such as ``https://a.example https://b.example`` is none).

    >>> serialised_origin("HTTPS://Other.Example:443/")
    'https://other.example'
    >>> serialised_origin("https://other.example/page") is None
    True
    """
    text = text.strip()
    if any(c.isspace() or not c.isprintable() for c in text):  # urlsplit drops tabs and newlines silently
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None
            or parts.password is not None or parts.path not in ("", "/") or parts.query or parts.fragment
            or "?" in text or "#" in text or (port is not None and not 1 <= port <= 65535)):
        return None
    try:
        host = parts.hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    if not _HOST.fullmatch(host):
        return None
    if ":" in host:  # an IPv6 address, written in brackets
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def origins_problem(value: str) -> str | None:
    """What is wrong with the comma-separated origins ``value`` (``*`` allows any; empty: none), or None."""
    bad = [o.strip() for o in value.split(",") if o.strip() and o.strip() != "*" and serialised_origin(o) is None]
    if bad:
        return (f"{bad[0]!r} is no origin: expected scheme://host[:port] (http or https, no path), "
                "e.g. https://partner.example")
    return None
