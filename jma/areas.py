"""JMA area codes → Sonae's 6-digit municipality codes (全国地方公共団体コード), for 福島県.

Rules (tables and how they were derived: ``jma/data/README.md``):

- 市町村等 (7 digits, warnings and 土砂災害警戒情報): the first 5 digits are the 団体コード; the municipality is
  the shipped one with that ``code5`` (its 6-digit code carries the JIS X 0402 check digit,
  :mod:`sonae.municipality_code`).
- 津波予報区 (3 digits, VTSE41): the shipped coastal table (福島県 = 250 → 10 municipalities).
- 河川 (VXKO/VXSU): the statement's own municipalities (CityCode of 浸水想定地区), mapped as 市町村等.

A code not in the tables is returned in ``unknown`` — never guessed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from jma.telegram import Statement
from sonae.municipality_code import normalise


def _rows(name: str) -> list[dict[str, str]]:
    text = (resources.files("jma") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def municipalities() -> dict[str, str]:
    """code5 → lgcode6 of the shipped 福島県 municipalities (the 6-digit code by :func:`sonae.municipality_code.normalise`).

    Raises ``MunicipalityCodeError`` if the table's 6-digit code disagrees with the check-digit rule.
    """
    return {r["code5"]: normalise(r["lgcode6"]) for r in _rows("fukushima_municipalities.csv")}


@cache
def municipality_names() -> dict[str, str]:
    """lgcode6 → name."""
    return {r["lgcode6"]: r["name"] for r in _rows("fukushima_municipalities.csv")}


@cache
def tsunami_areas() -> dict[str, tuple[str, ...]]:
    """津波予報区 code → coastal municipalities (lgcode6)."""
    out: dict[str, list[str]] = {}
    for r in _rows("fukushima_tsunami_areas.csv"):
        out.setdefault(r["tsunami_area_code"], []).append(r["lgcode6"])
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class Mapped:
    """Municipalities a statement concerns, and the codes that could not be mapped."""

    municipalities: tuple[str, ...]
    unknown: tuple[str, ...]


def _city(code: str) -> str | None:
    if len(code) != 7 or not code.isascii() or not code.isdigit():
        return None
    return municipalities().get(code[:5])


def map_statement(statement: Statement) -> Mapped:
    """The 6-digit municipality codes of one statement (see module rules)."""
    found: list[str] = []
    unknown: list[str] = []
    if statement.area_type == "津波予報区":
        codes = tsunami_areas().get(statement.area_code)
        if codes:
            found.extend(codes)
        else:
            unknown.append(statement.area_code)
    else:
        sources = (statement.municipality_codes if statement.area_type == "河川" else (statement.area_code,))
        for code in sources:
            city = _city(code)
            if city is None:
                unknown.append(code)
            elif city not in found:
                found.append(city)
        if statement.area_type == "河川" and not sources:
            unknown.append(statement.area_code)
    return Mapped(tuple(found), tuple(unknown))
