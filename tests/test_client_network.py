"""Who a client is for per-client bounds (sonae.ratelimit.client_network, used by evac.coldfields): an IPv6
address's /64, so a script taking a new address of its /64 for every request stays one client; an address
written with its port or in brackets (``[2001:db8::1]:443``, ``[2001:db8::1]``, ``192.0.2.5:80``) is the
client of the bare address."""

from __future__ import annotations

import ipaddress

import pytest
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


_PORTS = st.integers(min_value=0, max_value=65535).map(str) | st.sampled_from(["0", "80", "443", "08080", "65535"])
#: an IPv4 or IPv6 address, any spelling ipaddress reads (compressed, exploded, IPv4-mapped)
_ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.ip_addresses(v=6).map(lambda ip: ip.exploded),
    st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"))


@st.composite
def _written(draw: st.DrawFn) -> tuple[str, str]:
    """(the bare address, the address as a peer or proxy may write it: with a port, in brackets, both)."""
    bare = draw(_ADDRESSES)
    if ":" in bare:  # IPv6: bracketed, with or without a port, or bare
        form = draw(st.sampled_from(["{a}", "[{a}]", "[{a}]:{p}", "[{a}]:", '"[{a}]:{p}"', '"{a}"']))
    else:
        form = draw(st.sampled_from(["{a}", "{a}:{p}", "{a}:", '"{a}:{p}"', '"{a}"']))
    space = draw(st.sampled_from(["", " ", "\t"]))
    return bare, space + form.format(a=bare, p=draw(_PORTS)) + space


@given(_written())
def test_an_address_with_a_port_or_in_brackets_is_the_client_of_the_bare_address(written: tuple[str, str]) -> None:
    """Found: ``[2001:db8::1]:443``, ``[2001:db8::1]`` and ``192.0.2.5:80`` were taken as text, each a client of its
    own (a new port, a new bucket) and an IPv6 client never counted by its /64."""
    bare, text = written
    ip = ipaddress.ip_address(bare)
    expected = (str(ip.ipv4_mapped) if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
                else str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip))
    assert client_network(text) == client_network(bare) == expected


def test_the_written_forms_by_example() -> None:
    assert client_network("[2001:db8:1:2::7]:443") == client_network("[2001:db8:1:2::8]") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert client_network("192.0.2.5:80") == client_network("192.0.2.5") == "192.0.2.5"
    assert client_network("[::ffff:192.0.2.5]:80") == "192.0.2.5"
    assert client_network("[fe80::1%eth0]:80") == "fe80::/64"


@pytest.mark.parametrize("text", ["[2001:db8::1]:x", "[2001:db8::1]:65536", "[2001:db8::1]443",
                                  "[2001:db8::1", "192.0.2.5:99999", "192.0.2.5:80:80", "host:80",
                                  "unknown", ""])
def test_text_that_is_no_address_with_a_port_stays_as_it_is(text: str) -> None:
    """Not an address in any of the forms: the text itself (never an exception, never some other client)."""
    assert client_network(text) == text


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
