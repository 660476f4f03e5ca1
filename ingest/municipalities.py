"""The municipality list: every 市区町村 by its 6-digit 団体コード, with names in kanji, kana and romaji.

Sonae ships the list of all of Japan (1,741 municipalities and 175 designated-city wards) as package
data, ``ingest/data/municipalities.csv.gz``, loaded into an empty database by ``sonae run`` and
``sonae db migrate`` (:func:`seed_if_empty`); ``sonae municipalities import FILE`` updates it. Sources and
licences: ``ingest/data/ATTRIBUTION.md`` (総務省「全国地方公共団体コード」, J-LIS via Code for FUKUI
localgovjp (CC0), romaji from 国土地理院「地名集日本」).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from sonae.csvrows import CsvShapeError, shaped_rows
from sonae.municipality_code import DRILL_TOWN_CODE, MunicipalityCodeError, drill_town_refusal, normalise
from sonae.municipality_code import DRILL_TOWN_RULE as _DRILL_TOWN_RULE
from sonae.pgtext import unstorable
from sonae.textfile import TextFileError, read_packaged_text, read_text_file

#: the shipped list (package data)
PACKAGED = "data/municipalities.csv.gz"

#: accepted column names, first match wins: Sonae's own, then the shared-data/J-LIS style
_CODE = ("code", "lgcode6", "lgcode", "code5", "N03_007")
_NAME = ("name_ja", "name", "city", "municipality")
_KANA = ("name_kana", "citykana", "municipality_kana")
_ENGLISH = ("name_en",)
_ROMAJI = ("romaji_gsi", "name_romaji")

#: the English word for a municipality's kind, by the last character of its Japanese name (Tokyo's special
#: wards, 特別区, call themselves cities in English: "Shinjuku City")
_KIND_EN = {"市": "City", "町": "Town", "村": "Village", "区": "City"}
#: the kind as GSI's romaji writes it, after the name ("Koriyama Shi", "Inawashiro Machi", "Hinoemata Mura")
_KIND_ROMAJI = frozenset({"Shi", "Cho", "Machi", "Mura", "Son", "Ku"})
_PREF = ("prefecture", "pref")


class MunicipalityListError(ValueError):
    """A municipality list that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Municipality:
    """A municipality (市区町村) by its 6-digit 団体コード (JIS X 0402 + check digit)."""

    code: str
    name_ja: str
    name_en: str | None = None
    prefecture: str | None = None
    name_kana: str | None = None


def english_name(romaji: str, name_ja: str) -> str:
    """A municipality's name as English readers are told it: GSI's romaji with its kind in English, as the
    municipalities name themselves ("Koriyama Shi", 郡山市 → "Koriyama City"; "Inawashiro Machi" → "Inawashiro
    Town"; "Kitashiobara Mura" → "Kitashiobara Village"; "Chiyoda Ku" → "Chiyoda City").

    The kind comes from the Japanese name's last character (:data:`_KIND_EN`); a romaji without a separate
    kind word ("Edogawa", "Higashison") or a name of another kind is returned as it is.
    """
    stem, _, kind = romaji.rpartition(" ")
    english = _KIND_EN.get(name_ja[-1:])
    if not stem or kind not in _KIND_ROMAJI or english is None:
        return romaji
    return f"{stem} {english}"


def _first(row: Mapping[str, str | None], names: tuple[str, ...]) -> str:
    for name in names:
        value = row.get(name)
        if value is not None and value.strip():
            return value.strip()
    return ""


def parse_municipalities(text: str, *, source: str) -> list[Municipality]:
    """Municipalities from CSV text (header row): ``code, name_ja[, name_kana][, name_en][, prefecture]``.

    5-digit codes get their check digit; the J-LIS/shared-data column names (``lgcode6``, ``name``,
    ``romaji_gsi``, ``pref``) are accepted too. ``name_en`` is taken as written; without it, GSI's romaji
    (``romaji_gsi``, ``name_romaji``) gives the English name by :func:`english_name`.

    Raises
    ------
    MunicipalityListError
        On a row without a name, or whose code is not a municipality code (wrong check digit included),
        or text that is not CSV (a field past the csv module's size limit, a bad quote).
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return _parsed(reader, source=source)
    except CsvShapeError as exc:  # a shifted or short row, a column named twice: cells would be dropped
        raise MunicipalityListError(str(exc)) from None
    except csv.Error as exc:
        raise MunicipalityListError(f"{source} line {reader.line_num}: not CSV ({exc})") from None


def _parsed(reader: csv.DictReader[str], *, source: str) -> list[Municipality]:
    out = []
    for i, row in enumerate(shaped_rows(reader, source=source)):
        where = f"{source} line {i + 2}"
        raw, name = _first(row, _CODE), _first(row, _NAME)
        if not name:
            raise MunicipalityListError(f"{where}: needs a code and a name (columns code, name_ja)")
        try:
            code = normalise(raw)
        except MunicipalityCodeError as exc:
            raise MunicipalityListError(f"{where}: {exc}") from None
        for value in row.values():
            problem = unstorable(value) if isinstance(value, str) else None
            if problem:  # PostgreSQL cannot store it: the upsert would fail with a raw DataError
                raise MunicipalityListError(f"{where}: contains {problem}; remove it from the file")
        romaji = _first(row, _ROMAJI)
        english = _first(row, _ENGLISH) or (english_name(romaji, name) if romaji else "")
        out.append(Municipality(code, name, english or None, _first(row, _PREF) or None, _first(row, _KANA) or None))
    return out


def load_municipalities(path: str | Path) -> list[Municipality]:
    """Read a municipality list CSV (read by :func:`sonae.textfile.read_text_file`: UTF-8 or UTF-16/32 with
    a BOM, optionally gzip- or xz-compressed); see :func:`parse_municipalities`.

    Raises
    ------
    MunicipalityListError
        Naming the file (and line): unreadable, not text, or a bad row.
    """
    path = Path(path)
    try:
        text = read_text_file(path)
    except TextFileError as exc:
        raise MunicipalityListError(str(exc)) from None
    return parse_municipalities(text, source=path.name)


def packaged_municipalities() -> list[Municipality]:
    """The list shipped with Sonae (all of Japan)."""
    return parse_municipalities(read_packaged_text("ingest", PACKAGED), source=PACKAGED)


async def upsert_municipalities(conn: asyncpg.Connection, municipalities: Iterable[Municipality]) -> int:
    """Insert or update municipalities by code; returns how many rows were given."""
    rows = [(m.code, m.name_ja, m.name_en, m.prefecture, m.name_kana) for m in municipalities]
    async with conn.transaction():  # all or none, and one notification to the readers of names (alerting 025)
        await conn.executemany(
            """INSERT INTO municipalities (code, name_ja, name_en, prefecture, name_kana) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (code) DO UPDATE SET name_ja = EXCLUDED.name_ja,
                   name_en = coalesce(EXCLUDED.name_en, municipalities.name_en),
                   prefecture = coalesce(EXCLUDED.prefecture, municipalities.prefecture),
                   name_kana = coalesce(EXCLUDED.name_kana, municipalities.name_kana)""", rows)
    return len(rows)


#: what the drill town is for, told where a real thing names it (:func:`uncovered`; the rule itself is
#: :func:`sonae.municipality_code.drill_town_refusal`)
DRILL_TOWN_RULE = _DRILL_TOWN_RULE


async def uncovered(conn: asyncpg.Connection, code: str, *, exercise: bool, staff: bool = False) -> str | None:
    """Why ``code`` (6-digit) names no municipality this deployment covers, or None.

    ``exercise``: whether the entry is for exercises (an exercise order, area or station; a webhook or push
    subscription taking drills); ``staff``: whether it names the people who run them (an account, a roster
    entry). The drill town is covered for those only, decided here for every caller
    (:func:`sonae.municipality_code.drill_town_refusal`), not by each caller passing ``exercise=True``.

    Three rules, one message each, for every entry that names a 市区町村 (push areas, webhooks, orders,
    accounts, staff scopes, the registry's edits; the API's bodies and the CLI alike):

    * the code is in the municipality list (the ``municipalities`` table: the shipped one of all of Japan
      by default, :func:`seed_if_empty`, or an imported one); a code can pass the check digit and still
      name none of it (``479993``). A deployment that keeps no list takes any code.
    * when boundaries are loaded (``municipality_boundaries``: Fukushima's 59 shipped, more by
      ``sonae municipalities import``), the municipality has one: the boundaries are what Sonae covers,
      as a push circle or ``/api/v1/level``'s ``covered`` measure it (found: 那覇市 ``472018`` was taken
      201 while a circle at 那覇 got 422). The drill town (:data:`~sonae.municipality_code.DRILL_TOWN_CODE`)
      has no boundary and is covered wherever it is in the list (only a service using it names it there),
    * for exercises only (:data:`DRILL_TOWN_RULE`): it is fictional, inside real 郡山市 (found: a real whole-town
      order for it was taken, CAP ``Actual``, and a real station was moved into it, while a real area in it was
      refused).
    """
    if why := drill_town_refusal(code, exercise=exercise, staff=staff):
        return why
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM municipalities) AS has_list,
                  (SELECT name_ja FROM municipalities WHERE code = $1) AS name,
                  EXISTS (SELECT 1 FROM municipality_boundaries) AS has_boundaries,
                  EXISTS (SELECT 1 FROM municipality_boundaries WHERE code = $1) AS bounded""", code)
    if not row["has_list"]:
        return None
    if row["name"] is None:
        return (f"municipality code {code!r} is not in this deployment's municipality list "
                "(GET /api/v1/municipalities lists them)")
    if not row["has_boundaries"] or row["bounded"] or code == DRILL_TOWN_CODE:
        return None
    covered = await conn.fetch(
        """SELECT coalesce(nullif(m.prefecture, ''), '?') AS prefecture, count(*) AS n
           FROM municipality_boundaries b LEFT JOIN municipalities m USING (code)
           GROUP BY 1 ORDER BY 1""")
    where = ", ".join(f"{r['prefecture']} ({r['n']})" for r in covered)
    return (f"municipality {code!r} ({row['name']}) is outside the area Sonae covers here: it covers the "
            f"municipalities it has boundaries for, {where} (GET /api/v1/municipalities marks them "
            "\"covered\": true); other prefectures' boundaries are added with `sonae municipalities import`")


async def seed_if_empty(conn: asyncpg.Connection) -> int:
    """Load the shipped list when the ``municipalities`` table is empty; returns the rows loaded (0: none)."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM municipalities)"):
        return 0
    return await upsert_municipalities(conn, packaged_municipalities())
