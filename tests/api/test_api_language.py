"""The language of answers and pages: RFC 4647 lookup of Accept-Language with q-values, one rule for all
(api/language.py): the /api/v1/level answer and the resident page over the real API and a real database."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app
from api.language import DEFAULT, MAX_RANGES, lookup, negotiate
from evac.guidance import LANGS
from sonae.config import Settings
from tests.api_support import start_client

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


#: parameters other than q, as clients and proxies write them (RFC 9110 §5.6.6 syntax, and some that are not)
_OTHER_PARAMETERS = st.lists(st.tuples(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,7}", fullmatch=True).filter(lambda n: n.lower() != "q"),
    st.one_of(st.from_regex(r"[A-Za-z0-9.]{0,8}", fullmatch=True), st.just('"a b"'))), max_size=3)


@given(st.lists(st.tuples(st.sampled_from(["ja", "en", "ja-JP-x-easy", "fr", "*", "ja-x-yasashii", "en-US"]),
                          st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.25", ";q=0.999"]),
                          _OTHER_PARAMETERS, st.booleans()), max_size=6))
def test_parameters_other_than_q_are_ignored(ranges: list[tuple[str, str, list[tuple[str, str]], bool]]) -> None:
    """``en;level=1`` is ``en`` (found: it was dropped as malformed): any parameter but ``q``, before or
    after the weight, leaves the answer as the header without it gives."""
    def written(tag: str, q: str, others: list[tuple[str, str]], first: bool) -> str:
        extra = "".join(f";{name}={value}" for name, value in others)
        return tag + (extra + q if first else q + extra)

    plain = ", ".join(tag + q for tag, q, _, _ in ranges)
    assert negotiate(", ".join(written(*r) for r in ranges)) == negotiate(plain)


@pytest.mark.parametrize(("header", "expected"), [
    ("en;level=1", "en"), ("en;level=1, ja;q=0.9", "en"), ("ja;q=0.1, en ; charset=x ; q=0.5", "en"),
    ("en;level=1;q=0, ja-x-easy;q=0.1", "ja-easy"), ("en;q=zz;level=1, ja-x-easy", "ja-easy"),
])
def test_a_range_with_another_parameter_is_read(header: str, expected: str) -> None:
    assert negotiate(header) == expected


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


def _vary(resp: Any) -> list[str]:
    return [v.strip().lower() for v in ",".join(resp.headers.getall("Vary", [])).split(",") if v.strip()]


async def test_answers_chosen_by_accept_language_say_so_in_vary(client: TestClient) -> None:
    """RFC 9110 §12.5.5: /api/v1/level and /api/v1/official answer in the header's language, and sent only
    ``Vary: Accept-Encoding`` (found: a shared cache could serve an English level to a Japanese reader).
    Every form says so: the 200, a problem made after the language was read, and the page's 304."""
    for path, params in (("/api/v1/level", {"municipality": "072036"}), ("/api/v1/official", {})):
        for header in ("en", None):
            resp = await client.get(path, params=params, headers={"Accept-Language": header} if header else {})
            assert resp.status == 200, await resp.text()
            vary = _vary(resp)
            assert "accept-language" in vary, (path, header, resp.headers.getall("Vary", []))
            assert len(vary) == len(set(vary)), vary  # each name once, beside the compression's Accept-Encoding
    # a problem answered after the language was chosen
    resp = await client.get("/api/v1/level", params={"lat": "37.4"}, headers={"Accept-Language": "en"})
    assert resp.status == 422
    assert "accept-language" in _vary(resp)
    # ?lang= chooses the language, not the header: the answer does not vary by it
    resp = await client.get("/api/v1/level", params={"municipality": "072036", "lang": "en"},
                            headers={"Accept-Language": "ja"})
    assert (await resp.json())["language"] == "en-US"
    assert "accept-language" not in _vary(resp)
    # the page's cached form: its 304 varies as its 200 does
    first = await client.get("/", headers={"Accept-Language": "en"})
    again = await client.get("/", headers={"Accept-Language": "en", "If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert {"accept-language", "accept-encoding"} <= set(_vary(again))


async def test_an_answer_chosen_by_other_headers_says_so_in_vary(pool: asyncpg.Pool, settings: Settings) -> None:
    """CORS: whether Access-Control-Allow-Origin is sent depends on Origin, allowed or not, and the
    middleware replaced the Vary it found (Accept-Language lost) with ``Origin``."""
    c = await start_client(create_app(pool=pool, settings=settings.replace(api__cors_origins="https://a.example")))
    try:
        for origin in ("https://a.example", "https://b.example"):
            resp = await c.get("/api/v1/level", params={"municipality": "072036"},
                               headers={"Origin": origin, "Accept-Language": "en"})
            assert resp.status == 200
            assert {"origin", "accept-language"} <= set(_vary(resp)), resp.headers.getall("Vary", [])
    finally:
        await c.close()


async def test_the_event_stream_says_last_event_id_chose_it(client: TestClient) -> None:
    """The stream replays what follows ``Last-Event-ID``: it lists it in Vary (found: it did not)."""
    for headers in ({}, {"Last-Event-ID": "0"}):
        resp = await client.head("/api/v1/events", headers=headers)
        assert resp.status == 200
        assert "last-event-id" in set(_vary(resp)), resp.headers.getall("Vary", [])


async def test_the_lang_parameter_takes_the_spellings_accept_language_takes(client: TestClient) -> None:
    """``?lang=`` took only ja, en, ja-easy (found: EN, ja-JP-x-easy were 400 while the header takes them);
    a tag of no language Sonae writes is a 400 naming what is accepted, from the OpenAPI check or the handler."""
    for sent, expected in (("EN", "en-US"), ("en-GB", "en-US"), ("ja-JP-x-easy", "ja-JP-x-easy"),
                            ("JA-X-EASY", "ja-JP-x-easy"), ("ja-easy", "ja-JP-x-easy"), ("ja-JP", "ja-JP")):
        resp = await client.get("/api/v1/level", params={"municipality": "072036", "lang": sent})
        assert resp.status == 200, (sent, await resp.text())
        assert (await resp.json())["language"] == expected, sent
    for sent in ("fr", "en_US", "*", "ja JP", "x-easy"):
        for path in ("/api/v1/level", "/api/v1/alerts"):
            resp = await client.get(path, params={"municipality": "072036", "lang": sent})
            assert resp.status == 400, (sent, path, await resp.text())
            assert "ja-JP, en-US or ja-JP-x-easy" in (await resp.json())["detail"], sent


@given(st.one_of(st.from_regex(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,4}", fullmatch=True), st.text(max_size=20),
                 st.sampled_from(["ja", "EN", "ja-JP-x-easy", "ja-x-yasashii", "en-GB", "x-easy", "fr", "*"])))
def test_the_openapi_pattern_of_lang_is_the_rule_of_the_handlers(value: str) -> None:
    """The document's pattern (validated before the handler) accepts exactly what language_of reads (a
    value ending in a newline passes Python's ``$``, then the handler's 400: not compared)."""
    import re

    from hypothesis import assume

    from api.language import TAG_PATTERN, language_of

    assume(not value.endswith("\n"))
    assert (re.search(TAG_PATTERN, value) is not None and len(value) <= 64) == (language_of(value) is not None)
