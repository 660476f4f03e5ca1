"""Values with something around them are refused with the rule (sonae.exacttext.EXACT_RULE), not trimmed:
a hazard map's link (``sonae hazards import --link``, ``MapLink.parse``, the API's body: found ``"gauge: G1\\n"``
taken as gauge G1) and the road network setting (found: ``SONAE_EVAC_NETWORK=$'drilltown\\n'`` taken as
drilltown; a configuration error quotes what was typed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evac.store import MapLink, StoreError
from sonae.config import ConfigError, load_settings
from sonae.exacttext import EXACT_RULE

AROUND = ["\n", "\r", "\t", " ", "\x00", "\u3000", "\ufeff", "\u2028", "\x85", "\r\n"]
around = st.sampled_from(AROUND)
sides = st.sampled_from(["start", "end", "both"])
links = st.sampled_from(["gauge:kano-01", "river:狩野川", "jma_area:222038", "gauge:DT-G01"])


def _wrapped(value: str, extra: str, side: str) -> str:
    return (extra if side != "end" else "") + value + (extra if side != "start" else "")


@given(links, around, sides, st.sampled_from(["kind", "ref"]))
def test_a_link_with_anything_around_a_part_is_refused_with_the_rule(text: str, extra: str, side: str,
                                                                    part: str) -> None:
    link = MapLink.parse(text, at_level=4)
    kind, _, ref = text.partition(":")
    padded = f"{_wrapped(kind, extra, side)}:{ref}" if part == "kind" else f"{kind}:{_wrapped(ref, extra, side)}"
    with pytest.raises(StoreError) as err:
        MapLink.parse(padded, at_level=4)
    assert EXACT_RULE in str(err.value) and f"U+{ord(extra[0] if side != 'end' else extra[-1]):04X}" in str(err.value)
    assert link.ref == (ref if kind != "jma_area" else "222038")


@given(around, sides)
def test_a_phenomenon_with_anything_around_it_is_refused(extra: str, side: str) -> None:
    assert MapLink.given("jma_area", "222038", at_level=4, phenomenon="flood").phenomenon == "flood"
    with pytest.raises(StoreError, match="the phenomenon has U\\+"):
        MapLink.given("jma_area", "222038", at_level=4, phenomenon=_wrapped("flood", extra, side))


def test_a_link_stored_before_the_rule_still_loads() -> None:
    assert MapLink("gauge", " G1", 4).ref == " G1"  # built from a database row directly


@pytest.mark.parametrize("written", ["drilltown\n", " drilltown", "drilltown\t", "\u3000drilltown", "drilltown\r\n"])
def test_the_road_network_setting_is_taken_exactly(written: str) -> None:
    assert load_settings(environ={"SONAE_EVAC_NETWORK": "drilltown"})["evac.network"] == "drilltown"
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"SONAE_EVAC_NETWORK": written})
    assert str(err.value).startswith(f"SONAE_EVAC_NETWORK={written!r}: has U+") and EXACT_RULE in str(err.value)


@pytest.mark.parametrize("written", ["walk:flood\n", "\twalk:flood", "walk:flood,\u3000walk:landslide",
                                     "walk:flood\r\n,walk:landslide", "walk:flood:exercise\x00"])
def test_the_warm_fields_setting_takes_spaces_around_an_item_and_nothing_else(written: str) -> None:
    from evac.service import parse_warm

    assert parse_warm(" walk:flood , walk:landslide:exercise ") == [("walk", "flood", False),
                                                                    ("walk", "landslide", True)]
    with pytest.raises(ConfigError, match="is not profile:hazard"):
        parse_warm(written)
