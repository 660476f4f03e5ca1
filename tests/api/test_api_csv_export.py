"""CSV exports: one guard against formula injection and one encoding (UTF-8 with a BOM), for every CSV served.

Found (break-it pass 6): the exports had no BOM, so Excel on Japanese Windows showed the Japanese names garbled,
and the guard let full-width ``＝HYPERLINK(…)``, ``－1+1``, ``＋`` and ``＠`` through. Real PostgreSQL for the
served exports; the guard itself is pure logic, checked with hypothesis.
"""

from __future__ import annotations

import csv
import io
import unicodedata

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import example, given
from hypothesis import strategies as st

from api.csvexport import BOM, cell, csv_text, starts_formula
from ingest.registry import Station, upsert_stations
from sonae.config import Settings, load_settings
from tests.api.test_api_coverage import _deployment
from tests.api.test_api_staff import make_client

KORI = "072036"
#: what a formula starts with, every way the break-it pass and OWASP/ASVS name (full-width, small, minus sign,
#: and the characters a spreadsheet may skip before one)
TRIGGERS = ("=", "+", "-", "@", "＝", "＋", "－", "＠", "﹦", "﹢", "﹣", "﹫", "\u2212", "\t", "\r", "\n", "\x00",
            " ", "\u3000", "\u200b", "\u200e", "\u202e", "\ufeff")
NAMES = ("郡山市役所", "阿武隈川 阿久津", "1丁目集会所", "Kunren Town", "ｶﾀｶﾅ", "(仮)避難所", "'quoted", "")


def _read(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@given(st.sampled_from(TRIGGERS), st.text(max_size=30))
@example("＝", 'HYPERLINK("http://evil.example","x")')
@example("－", "1+1")
def test_every_formula_start_is_guarded(first: str, rest: str) -> None:
    value = first + rest
    assert starts_formula(value)
    assert cell(value) == "'" + value
    assert _read(csv_text(["name"], [[value]]))[1] == ["'" + value]


@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=1), st.text(max_size=30))
def test_a_cell_starting_with_a_letter_or_digit_is_kept_as_it_is(first: str, rest: str) -> None:
    value = first + rest
    if unicodedata.normalize("NFKC", first)[:1] in ("=", "+", "-", "@"):
        return  # a letter or number that folds to a formula sign (none is known): the guard's case
    assert cell(value) == value
    assert _read(csv_text(["name"], [[value]]))[1] == [value]


@given(st.lists(st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none()), min_size=2, max_size=2),
                max_size=5), st.booleans())
def test_what_is_written_reads_back_guarded_and_whole(rows: list[list[object]], bom: bool) -> None:
    text = csv_text(["a", "b"], rows, bom=bom)
    assert text.startswith(BOM) == bom and text.endswith("\r\n")
    got = _read(text.removeprefix(BOM))
    expected = [["" if v is None else str(cell(v)) for v in row] for row in rows]
    # the csv module reads a lone CR or CRLF inside a quoted field back as written
    assert got == [["a", "b"], *expected], (rows, got)
    for row, written in zip(rows, got[1:], strict=True):  # text never reads back as a formula (numbers stay numbers)
        assert all(not isinstance(v, str) or not starts_formula(w) or w.startswith("'") for v, w in zip(row, written, strict=True))


def test_names_and_numbers_are_not_changed() -> None:
    assert [cell(n) for n in NAMES] == list(NAMES)
    assert [cell(v) for v in (-1.5, -3, 0, None, True)] == [-1.5, -3, 0, None, True]


@pytest.fixture
def psettings(database_url: str) -> Settings:
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_API_RATE_LIMIT_PER_MINUTE": "0",
                                  "SONAE_LOG_FORMAT": "text"})


async def test_every_served_csv_has_a_bom_and_guards_full_width_formulas(pool: asyncpg.Pool,
                                                                         psettings: Settings) -> None:
    await _deployment(pool)
    evil = "＝HYPERLINK(\"http://evil.example\",\"郡山\")"
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="bk-evil", name=evil, municipality_code=KORI, lat=37.4, lon=140.36),
                                     Station(id="bk-ok", name="阿武隈川 阿久津", municipality_code=KORI,
                                             lat=37.41, lon=140.37)])
        await conn.execute("INSERT INTO shelters (id, name, lat, lon, municipality_code, source) VALUES "
                           "('s-evil', '－1+1', 37.40, 140.36, $1, 'import'), "
                           "('s-ok', '郡山市役所', 37.41, 140.37, $1, 'import')", KORI)
    client: TestClient = await make_client(pool, psettings)
    try:
        for path, evil_id, evil_name, ok_name in (("/api/v1/stations", "bk-evil", evil, "阿武隈川 阿久津"),
                                                  ("/api/v1/shelters", "s-evil", "－1+1", "郡山市役所")):
            resp = await client.get(path, params={"format": "csv"})
            assert resp.status == 200 and resp.content_type == "text/csv" and resp.charset == "utf-8"
            raw = await resp.read()
            assert raw.startswith(b"\xef\xbb\xbf"), raw[:20]  # what Excel needs to read UTF-8
            table = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
            names = {r["id"]: r["name"] for r in table}
            assert names["bk-ok" if evil_id == "bk-evil" else "s-ok"] == ok_name
            assert names[evil_id] == "'" + evil_name, names
            plain = await client.get(path, params={"format": "csv", "bom": "false"})
            assert plain.status == 200 and (await plain.read()) == raw[3:]
            bad = await client.get(path, params={"format": "csv", "bom": "yes"})
            assert bad.status == 400, await bad.text()
            assert "bom" in (await bad.json())["detail"]
    finally:
        await client.close()
