"""Where Sonae may send a resident's push message: a public https URL of a push service.

A push subscription's endpoint comes from anyone on the Internet (``POST /api/v1/push/subscriptions``
has no account), so it must not aim the delivery worker at Sonae's own network (found: ``https://127.0.0.1:…``
and ``https://169.254.169.254/…``, the cloud metadata address, were accepted and connected to).

* :func:`address_refusal` — why an IP address is not a public one (loopback, private, link-local,
  unique-local, multicast, reserved, unspecified, shared CGNAT space, or not globally routable);
  an IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
* :func:`host_allowed` — the host against ``notify.push_hosts``: exact names, ``*.example`` for any
  subdomain, ``*`` for any public host.
* :func:`check_push_endpoint` — the whole rule at subscription time, resolving a name (every address it
  resolves to must be public). A name that does not resolve now is accepted: the worker checks again.
* :class:`PublicResolver` — the worker's aiohttp resolver: it resolves, refuses any non-public address,
  and aiohttp connects to exactly the addresses it returned (no second lookup), so a name that
  resolves to a public address at subscription and to 127.0.0.1 later (DNS rebinding) is refused at
  delivery. IP literals never reach a resolver; :func:`literal_refusal` checks them before sending.

``allow_loopback`` (``notify.push_allow_http``, tests and development) lets loopback addresses and
``localhost`` through — never private, link-local or metadata addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

#: the push services of the browsers residents use: Chrome, Edge (Chromium), Samsung Internet, Opera →
#: Firebase Cloud Messaging; Firefox → Mozilla autopush; Safari (macOS 13+, iOS 16.4+) → Apple; legacy Edge
#: → Windows Push Notification Services
DEFAULT_PUSH_HOSTS = ("fcm.googleapis.com", "updates.push.services.mozilla.com", "web.push.apple.com",
                      "*.notify.windows.com")

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT space, not routable


class EndpointError(ValueError):
    """A push endpoint Sonae will not send to; the message says why, in words a developer can act on."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_refusal(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` is not a public address (a short phrase), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped, allow_loopback=allow_loopback)
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    for test, why in ((ip.is_unspecified, "the unspecified address"), (ip.is_link_local, "a link-local address"),
                      (ip.is_multicast, "a multicast address"), (ip.is_reserved, "a reserved address"),
                      (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "a shared (CGNAT) address"),
                      (isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fc00::/7"),
                       "a unique-local address"),
                      (ip.is_private, "a private address"), (not ip.is_global, "not a public address")):
        if test:
            return why
    return None


def _literal(host: str) -> IPAddress | None:
    """The IP address ``host`` spells (brackets and an IPv6 zone ``%eth0`` dropped), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def _loopback_name(host: str) -> bool:
    """``localhost``, ``localhost.localdomain`` or a ``*.localhost`` name (RFC 6761), in any case, with or
    without the root's trailing dot."""
    name = host.rstrip(".").lower()
    return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def literal_refusal(host: str, *, allow_loopback: bool = False) -> str | None:
    """For an IP-literal host (``127.0.0.1``, ``[::1]`` without brackets), why it is refused; None for a
    public literal or a name (names are checked when resolved)."""
    ip = _literal(host)
    if ip is None:
        return None if allow_loopback or not _loopback_name(host) else "a loopback name"
    return address_refusal(ip, allow_loopback=allow_loopback)


def parse_hosts(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``notify.push_hosts`` as a tuple of lower-case patterns (a comma-separated string or a sequence);
    empty or None: :data:`DEFAULT_PUSH_HOSTS`."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    hosts = tuple(h.strip().lower().rstrip(".") for h in items if h.strip())
    return hosts or DEFAULT_PUSH_HOSTS


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` matches one of ``patterns`` (exact, ``*.suffix`` for a subdomain, ``*`` any)."""
    host = host.lower().rstrip(".")
    for p in patterns:
        if p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1):
            return True
    return False


def named_host(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` is allowed by a pattern other than ``*`` (a push service the operator named)."""
    return host_allowed(host, [p for p in patterns if p != "*"])


def host_of(url: str) -> str:
    """The lower-case host name of a URL ('' when it has none)."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


async def check_push_endpoint(url: str, *, hosts: Sequence[str], allow_loopback: bool = False,
                              resolve: bool = True) -> str:
    """The rule for a push endpoint; returns its host.

    Raises
    ------
    EndpointError
        The host is not one of ``hosts`` (``notify.push_hosts``), is an IP literal or ``localhost`` that is
        not public, or is a name any of whose addresses (``getaddrinfo``, at most 5 s) is not public.
    """
    host = host_of(url)
    if not host:
        raise EndpointError("subscription.endpoint has no host")
    loopback = is_loopback_host(host)
    if not (allow_loopback and loopback) and not host_allowed(host, hosts):
        raise EndpointError(f"subscription.endpoint's host {host} is not a push service this installation sends "
                            f"to (notify.push_hosts: {', '.join(hosts)})")
    why = literal_refusal(host, allow_loopback=allow_loopback)
    if why:
        raise EndpointError(f"subscription.endpoint must be a public address; {host} is {why}")
    if not resolve or _is_literal(host):
        return host
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM), 5)
    except (OSError, TimeoutError):
        return host  # not resolvable now: the worker resolves and checks again before connecting
    for info in infos:
        why = address_refusal(ipaddress.ip_address(str(info[4][0]).split("%")[0]), allow_loopback=allow_loopback)
        if why:
            raise EndpointError(f"subscription.endpoint must be a public address; {host} resolves to {why}")
    return host


def _is_literal(host: str) -> bool:
    return _literal(host) is not None


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a URL's host, bracketed or not, any case, a trailing dot or not) is a loopback host:
    the one rule of the subscription API's scheme check (``http://`` only to such a host, with
    ``notify.push_allow_http``), of :func:`check_push_endpoint` and of the delivery worker
    (:func:`push_refusal`).

    An IP literal is loopback as :func:`address_refusal` judges it: ``127.0.0.0/8``, ``::1``, and an
    IPv4-mapped ``::ffff:127.x.y.z`` (the IPv4 address it carries; Python 3.11's ``is_loopback`` says False
    for it, found: the API refused ``http://[::ffff:127.0.0.1]/`` that the worker sent to). A name is loopback
    when it is ``localhost``, ``localhost.localdomain`` or ends in ``.localhost`` (RFC 6761)."""
    ip = _literal(host)
    if ip is None:
        return _loopback_name(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def push_refusal(endpoint: str, *, hosts: Sequence[str], allow_loopback: bool = False) -> str | None:
    """Why the delivery worker will not send to ``endpoint`` (a stored subscription's URL), or None: it is
    not ``https://`` (``http://`` passes only to a loopback host with ``allow_loopback``, as the subscription
    API's scheme rule), its host is an IP literal or loopback name that is not public (a loopback one passes
    with ``allow_loopback``), or is neither loopback (with ``allow_loopback``) nor one of ``hosts``
    (``notify.push_hosts``). A name's addresses are checked when it is resolved (:class:`PublicResolver`)."""
    host = host_of(endpoint)
    if not host:
        return "the endpoint has no host"
    scheme = endpoint.split(":", 1)[0].lower()
    if scheme != "https" and not (scheme == "http" and allow_loopback and is_loopback_host(host)):
        return "not an https:// URL"
    why = literal_refusal(host, allow_loopback=allow_loopback)
    if why:
        return why
    if not (allow_loopback and is_loopback_host(host)) and not host_allowed(host, hosts):
        return "host not in push_hosts"
    return None


class PublicResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to any non-public address (an ``OSError``, which
    aiohttp reports as a connection error: the message is retried, then dead)."""

    def __init__(self, *, allow_loopback: bool = False) -> None:
        self._inner = ThreadedResolver()
        self.allow_loopback = allow_loopback

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        for r in found:
            why = address_refusal(ipaddress.ip_address(str(r["host"]).split("%")[0]),
                                  allow_loopback=self.allow_loopback)
            if why:
                raise OSError(f"refused to connect: {host} resolves to {why}")
        return list(found)

    async def close(self) -> None:
        await self._inner.close()
