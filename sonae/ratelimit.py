"""Token buckets: a per-key request rate with bursts, kept in memory with a bounded number of keys.

Ground layer, shared by the API's per-client limits and the notifier's per-channel delivery limits.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from itertools import islice


def _bare(address: str) -> str:
    """The address in ``address`` without the port or brackets a socket address or header writes around it:
    ``[2001:db8::1]:443`` and ``[2001:db8::1]`` are ``2001:db8::1``, ``192.0.2.5:80`` is ``192.0.2.5``. Text of
    any other form is given back as it is (stripped), for :func:`ipaddress.ip_address` to judge."""
    text = address.strip()
    if len(text) > 1 and text[0] == text[-1] == '"':  # a quoted-string, as RFC 7239's Forwarded writes one
        text = text[1:-1]
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if bracket and (not rest or (rest[:1] == ":" and _port(rest[1:]))):
            return inside
        return text
    host, colon, port = text.partition(":")
    if colon and ":" not in port and _port(port) and host.count(".") == 3:
        return host  # IPv4 with a port; a bare IPv6 address has two colons or more
    return text


def _port(text: str) -> bool:
    """A port as written after an address: digits up to 65535, or none at all (``192.0.2.5:``)."""
    return text == "" or (text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535)


def address_network(address: str) -> str | None:
    """:func:`client_network` of an IP address in any of the forms it reads; None when ``address`` holds none."""
    try:
        ip = ipaddress.ip_address(_bare(address))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def client_network(address: str) -> str:
    """The client an address stands for: an IPv6 address's /64 (one household or phone has a whole /64, so a
    script could take a new address for every request), an IPv4-mapped IPv6 address's IPv4 address, an IPv4
    address itself; any other text (e.g. ``unknown``) as it is. The address may be written with its port or in
    brackets as a peer or proxy writes it (``[2001:db8::1]:443``, ``[2001:db8::1]``, ``192.0.2.5:80``): the
    same client as the bare address (found: those forms were taken as text, so each port was a client of its
    own and an IPv6 client behind such a proxy was never counted by its /64)."""
    network = address_network(address)
    return address if network is None else network


class TokenBuckets:
    """``rate`` requests a minute with bursts of ``burst``; at most ``max_clients`` tracked.

    A client is held only while its bucket is not full again: a full bucket is what an unknown client gets, so
    once ``burst`` tokens have refilled since its last take (``burst`` / ``rate`` seconds: 10 s at the API's
    default of 600 a minute, a minute for a bucket whose burst is its rate a minute) the takes that follow drop
    it, the oldest first (found: client addresses stayed until 100,000 other clients pushed them out, in a quiet
    deployment until a restart, though the API's docstring said a few minutes and the cold-field budget's about
    a minute)."""

    def __init__(self, *, per_minute: int, burst: int | None = None, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(10, per_minute // 6))
        self.max_clients = max_clients
        #: seconds after a client's last take when its bucket is full again (and it is dropped)
        self.refill_s = self.burst / self.rate if self.rate > 0 else math.inf
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # oldest take first

    def wait(self, client: str, now: float | None = None) -> float:
        """The seconds until ``client`` may take a token (0: now), taking none."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else the seconds until the next token."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        for key, (_, then) in list(islice(self._buckets.items(), 8)):  # a few at a time: O(1) per take
            if now - then < self.refill_s:
                break
            del self._buckets[key]  # full again: as if never seen
        return wait
