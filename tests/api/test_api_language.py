"""The language of answers and pages: RFC 4647 lookup of Accept-Language with q-values, one rule for all
(api/language.py): the /api/v1/level answer and the resident page over the real API and a real database."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.language import DEFAULT, MAX_RANGES, lookup, negotiate
from evac.guidance import LANGS

EASY = ["ja-JP-x-easy", "ja-x-easy", "JA-jp-X-EASY", "ja-Jpan-JP-x-easy", "ja-x-yasashii", "ja-easy",
        "ja-JP-x-easy-v2", "fr;q=0.9, ja-JP-x-easy", "en;q=0.5, ja-JP-x-easy;q=0.8",
        "ja-JP-x-easy ; q=1, en;q=0.9", "ja-x-easy;Q=0.3, fr"]


@pytest.mark.parametrize("header", EASY)
def test_easy_japanese_tags_are_easy_japanese(header: str) -> None:
    assert negotiate(header) == "ja-easy"


@pytest.mark.parametrize(("header", "expected"), [
    ("en-GB", "en"), ("fr;q=1, en-GB;q=0.9, ja;q=0.5", "en"), ("ja-JP, en;q=0.9", "ja"),
    ("en;q=0.2, ja;q=0.8", "ja"), ("ja;q=0, en", "en"), ("ja-JP-x-easy;q=0, en;q=0.1", "en"),
    ("*", DEFAULT), ("fr, *;q=0.5, en;q=0.4", DEFAULT), ("en;q=2, ja-x-easy", "ja-easy"),
    ("", DEFAULT), (None, DEFAULT), ("de, fr", DEFAULT), ("en-x-easy", "en"), ("x-easy", DEFAULT),
    ("ja-Hira-JP", "ja"), ("en;q=0.5;level=1, ja", "ja"),
])
def test_negotiation_follows_lookup_and_weights(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


@given(st.lists(st.sampled_from(["", " ", "\t", " \t "]), min_size=MAX_RANGES, max_size=3 * MAX_RANGES))
def test_empty_list_elements_are_not_ranges(empties: list[str]) -> None:
    """RFC 9110 §5.6.1: empty elements are ignored, so they never push a range past the cap (found:
    40 commas before ``en`` gave ja); a real range past the cap still is cut."""
    assert negotiate(",".join([*empties, "en"])) == "en"
    assert negotiate(",".join(["fr"] * MAX_RANGES + ["en"])) == DEFAULT


def test_lookup_truncates_and_drops_a_trailing_singleton() -> None:
    assert lookup("ja-JP-x-easy-extra") == "ja-easy"
    assert lookup("ja-JP-x-other") == "ja"  # ja-JP-x → ja-JP (the 'x' goes with it) → ja
    assert lookup("zh-Hant") is None


@given(st.text(max_size=300))
def test_any_header_gives_a_language(header: str) -> None:
    assert negotiate(header) in LANGS


@given(st.lists(st.tuples(st.sampled_from(["ja", "en", "ja-JP-x-easy", "fr", "*", "ja-x-yasashii", "en-US"]),
                          st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.25", ";q=0.999"])), max_size=6))
def test_the_heaviest_known_range_wins(ranges: list[tuple[str, str]]) -> None:
    header = ", ".join(tag + q for tag, q in ranges)
    weighted = [(float(q[3:]) if q else 1.0, -i, lookup(tag)) for i, (tag, q) in enumerate(ranges)]
    known = sorted((w for w in weighted if w[0] > 0 and w[2] is not None), reverse=True)
    assert negotiate(header) == (known[0][2] if known else DEFAULT)


async def test_level_answers_in_easy_japanese_for_its_tags(client: TestClient) -> None:
    for header in ("ja-JP-x-easy", "ja-x-easy", "JA-JP-X-EASY;q=0.9, en;q=0.5"):
        resp = await client.get("/api/v1/level", params={"municipality": "072036"},
                                headers={"Accept-Language": header})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["language"] == "ja-JP-x-easy", header
    resp = await client.get("/api/v1/level", params={"municipality": "072036"},
                            headers={"Accept-Language": "ja-x-easy;q=0.1, en-GB;q=0.9"})
    assert (await resp.json())["language"] == "en-US"


async def test_resident_page_starts_in_the_negotiated_language(client: TestClient) -> None:
    seen = set()
    for header, lang in (("ja-JP-x-easy", "ja-easy"), ("en-GB,ja;q=0.5", "en"), ("ja", "ja"), ("", "ja")):
        resp = await client.get("/", headers={"Accept-Language": header})
        assert resp.status == 200
        page = await resp.text()
        assert f'data-lang="{lang}"' in page, header
        assert "Accept-Language" in resp.headers["Vary"]
        seen.add(resp.headers["ETag"])
    assert len(seen) == 3  # one variant per language (ja twice): a cache never serves one for another
