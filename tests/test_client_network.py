"""Who a client is for per-client bounds (sonae.ratelimit.client_network, used by evac.coldfields): an IPv6
address's /64, so a script taking a new address of its /64 for every request stays one client."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from sonae.ratelimit import TokenBuckets, client_network


@given(st.integers(min_value=0, max_value=2**128 - 1), st.integers(min_value=0, max_value=2**64 - 1))
def test_every_address_of_an_ipv6_64_is_one_client(address: int, host: int) -> None:
    ip = ipaddress.IPv6Address(address)
    other = ipaddress.IPv6Address((address >> 64 << 64) | host)
    if ip.ipv4_mapped is None and other.ipv4_mapped is None:
        assert client_network(str(ip)) == client_network(other.exploded) == str(
            ipaddress.ip_network(f"{ip}/64", strict=False))


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_is_itself_also_when_mapped(address: int) -> None:
    ip = ipaddress.IPv4Address(address)
    assert client_network(str(ip)) == client_network(f"::ffff:{ip}") == str(ip)


@given(st.text(max_size=60))
def test_any_text_is_read_without_an_exception(text: str) -> None:
    assert isinstance(client_network(text), str)


def test_wait_takes_no_token() -> None:
    b = TokenBuckets(per_minute=2, burst=2)
    assert b.wait("a", now=0.0) == 0.0 and b.wait("a", now=0.0) == 0.0
    assert b.take("a", now=0.0) == 0.0 and b.take("a", now=0.0) == 0.0
    assert b.wait("a", now=0.0) == b.take("a", now=0.0) == 30.0


def test_a_client_is_held_only_until_its_bucket_is_full_again() -> None:
    """Addresses were held until 100,000 other clients pushed them out (in a quiet deployment: until a restart),
    though the rate limit's docstring says a few minutes: a full bucket is dropped by the takes that follow."""
    b = TokenBuckets(per_minute=60, burst=10)  # full again 10 s after a take
    assert b.take("198.51.100.1", now=0.0) == 0.0
    assert b.take("198.51.100.2", now=5.0) == 0.0
    assert b.take("198.51.100.3", now=10.5) == 0.0
    assert "198.51.100.1" not in b._buckets and "198.51.100.2" in b._buckets
    assert b.take("198.51.100.3", now=100.0) == 0.0
    assert list(b._buckets) == ["198.51.100.3"]
    # dropping a full bucket changes no answer: a client over its limit is still held and refused
    for _ in range(10):
        b.take("2001:db8::/64", now=200.0)
    assert b.take("2001:db8::/64", now=200.0) > 0 and b.take("198.51.100.9", now=200.5) == 0.0
    assert b.wait("2001:db8::/64", now=200.5) > 0
