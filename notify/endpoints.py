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

**Webhooks** (registered by admins, found: ``http://127.0.0.1:9/x`` and ``http://169.254.169.254/…`` were
accepted and posted to) use the same machinery with ``allow_private``: a municipality's partner systems
legitimately sit on private networks (:data:`PARTNER_NETWORKS`: 10/8, 172.16/12, 192.168/16, fc00::/7), so
those pass, while loopback, link-local (169.254.0.0/16 with the metadata address, fe80::/10), unspecified,
multicast, reserved and broadcast addresses, and the IPv4-mapped forms of these, are refused
(:func:`webhook_refusal` at registration and before sending, :func:`check_webhook_url` resolving a name at
registration, and :class:`PublicResolver` at delivery). ``notify.webhook_allow_loopback`` (tests and
development) lets loopback through. ``http://`` stays allowed for webhooks: a relay on a private network
often has no certificate, and each delivery is signed (HMAC-SHA256); use ``https://`` across the Internet.

**Which host is judged.** The host the HTTP client (yarl) will connect to, and an IP literal in any form the
C library accepts: aiohttp takes an all-digit host (``2130706433``, ``127.1``, ``0177.0.0.1``, ``0``) for an
IP address and hands it to ``getaddrinfo`` without asking a resolver, which reads it as ``inet_aton`` does
(``127.0.0.1``, ``0.0.0.0``); so does :func:`_literal` (found: such hosts were names to ``ipaddress`` and
passed the literal check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from yarl import URL

#: the push services of the browsers residents use: Chrome, Edge (Chromium), Samsung Internet, Opera →
#: Firebase Cloud Messaging; Firefox → Mozilla autopush; Safari (macOS 13+, iOS 16.4+) → Apple; legacy Edge
#: → Windows Push Notification Services
DEFAULT_PUSH_HOSTS = ("fcm.googleapis.com", "updates.push.services.mozilla.com", "web.push.apple.com",
                      "*.notify.windows.com")

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT space, not routable
#: the private networks a webhook may point at (RFC 1918 and IPv6 unique-local, RFC 4193): partner systems
#: of a municipality on its own network. Python's ``is_private`` is wider (documentation, benchmarking and
#: loopback ranges too), so the networks are named here.
PARTNER_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                          "fc00::/7"))
#: a host the C library may read as an IPv4 address (decimal, octal or hex parts, one to four of them)
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


class EndpointError(ValueError):
    """A push endpoint or webhook URL Sonae will not send to; the message says why, in words a developer can
    act on."""


class AddressRefused(OSError):
    """Raised by :class:`PublicResolver`: a name resolved to an address the policy refuses (an ``OSError``,
    so aiohttp reports it as a connection error; the worker finds it in the error's cause)."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_refusal(ip: IPAddress, *, allow_loopback: bool = False, allow_private: bool = False) -> str | None:
    """Why ``ip`` is not a public address (a short phrase), or None when it is; ``allow_private`` (webhooks)
    also lets :data:`PARTNER_NETWORKS` through."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped, allow_loopback=allow_loopback, allow_private=allow_private)
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if allow_private and any(ip in net for net in PARTNER_NETWORKS):
        return None
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
    """The IP address ``host`` spells (brackets, an IPv6 zone ``%eth0`` and a trailing dot dropped), or None for
    a name. An IPv4 address in a form only the C library reads (``2130706433``, ``127.1``, ``0x7f.1``,
    ``0177.0.0.1``, ``0``) is that address, as ``getaddrinfo`` (and so aiohttp) would connect to it."""
    bare = host.strip("[]").split("%")[0]
    if bare.endswith(".") and not bare.endswith(".."):
        bare = bare[:-1]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if bare.isascii() and _NUMERIC_HOST.fullmatch(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _loopback_name(host: str) -> bool:
    """``localhost``, ``localhost.localdomain`` or a ``*.localhost`` name (RFC 6761), in any case, with or
    without the root's trailing dot."""
    name = host.rstrip(".").lower()
    return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def literal_refusal(host: str, *, allow_loopback: bool = False, allow_private: bool = False) -> str | None:
    """For an IP-literal host (``127.0.0.1``, ``[::1]`` without brackets), why it is refused; None for a
    public literal (or a private one with ``allow_private``) or a name (names are checked when resolved)."""
    ip = _literal(host)
    if ip is None:
        return None if allow_loopback or not _loopback_name(host) else "a loopback name"
    return address_refusal(ip, allow_loopback=allow_loopback, allow_private=allow_private)


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


WEBHOOK_RULE = ("a webhook may point at a public address or a private network's (10/8, 172.16/12, 192.168/16, "
                "fc00::/7), not at a loopback, link-local, unspecified, multicast or reserved one")


def webhook_host(url: str) -> str:
    """The host the delivery worker's HTTP client connects to for ``url`` (yarl's reading: an IDNA name
    lower-cased, full-width digits folded, an IPv6 literal without brackets); '' when there is none."""
    try:
        return URL(url).raw_host or ""
    except (ValueError, TypeError):
        return ""


def webhook_refusal(url: str, *, allow_loopback: bool = False) -> str | None:
    """Why a webhook may not send to ``url``'s host as written (an IP literal in any form, or ``localhost``),
    a short phrase ("a loopback address"); None for an allowed literal or a name (its addresses are checked
    by :func:`check_webhook_url` at registration and by :class:`PublicResolver` at delivery)."""
    hosts = {host_of(url), webhook_host(url)} - {""}  # the two readings must both pass
    if not hosts:
        return "a URL without a host"
    for host in sorted(hosts):
        if why := literal_refusal(host, allow_loopback=allow_loopback, allow_private=True):
            return why
    return None


async def check_webhook_url(url: str, *, allow_loopback: bool = False, resolve: bool = True) -> None:
    """The address rule of a webhook at registration (the API, ``sonae webhooks add``).

    Raises
    ------
    EndpointError
        The host is an IP literal or loopback name the rule refuses (:func:`webhook_refusal`), or a name any of
        whose addresses (``getaddrinfo``, at most 5 s) is refused. A name that does not resolve now is accepted:
        the worker checks again at every delivery."""
    host = webhook_host(url) or host_of(url)
    why = webhook_refusal(url, allow_loopback=allow_loopback)
    if why:
        raise EndpointError(f"url's host {host} is {why}: {WEBHOOK_RULE}")
    if not resolve or _is_literal(host):
        return
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM), 5)
    except (OSError, TimeoutError, UnicodeError):
        return  # not resolvable now: the worker resolves and checks again before connecting
    for info in infos:
        why = address_refusal(ipaddress.ip_address(str(info[4][0]).split("%")[0]), allow_loopback=allow_loopback,
                              allow_private=True)
        if why:
            raise EndpointError(f"url's host {host} resolves to {why}: {WEBHOOK_RULE}")


class PublicResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to any address the policy refuses (non-public; with
    ``allow_private``, :data:`PARTNER_NETWORKS` pass) with :class:`AddressRefused` (an ``OSError``, which
    aiohttp reports as a connection error). ``inner`` does the lookup (default: ``getaddrinfo`` in a thread;
    tests give a fixed answer)."""

    def __init__(self, *, allow_loopback: bool = False, allow_private: bool = False,
                 inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()
        self.allow_loopback = allow_loopback
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        for r in found:
            why = address_refusal(ipaddress.ip_address(str(r["host"]).split("%")[0]),
                                  allow_loopback=self.allow_loopback, allow_private=self.allow_private)
            if why:
                raise AddressRefused(f"refused to connect: {host} resolves to {why}")
        return list(found)

    async def close(self) -> None:
        await self._inner.close()
