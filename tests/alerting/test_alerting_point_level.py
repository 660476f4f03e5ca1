"""The level rules a process other than the API can call (issue #20): a point's municipality
(``alerting.level.municipality_at``) and what residents read (``alerting.level.guidance``), both
moved out of ``api/level.py``; ``GET /api/v1/level`` (tests/api/test_api_level.py) answers through them."""

from __future__ import annotations

import asyncpg

from alerting.level import CALM, OFFICIAL_INSTRUCTION, LevelInForce, Source, guidance, municipality_at
from evac.shelters import Shelter
from evac.store import import_shelters

LANGUAGES = ("ja-JP", "en-US", "ja-JP-x-easy")


class OneTown:
    """Boundaries that put every point in one municipality (the ingest index's interface)."""

    def __init__(self, code: str | None) -> None:
        self.code = code

    def __len__(self) -> int:
        return 1

    def municipality_at(self, lat: float, lon: float) -> str | None:
        return self.code


async def test_a_point_belongs_to_its_boundary_else_to_the_nearest_place_within_20_km(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await import_shelters(conn, [
            Shelter(id="k1", name="K1", lat=37.395, lon=140.365, hazards=frozenset({"flood"}),
                    municipality_code="072036"),
            Shelter(id="f1", name="F1", lat=37.75, lon=140.47, hazards=frozenset({"flood"}),
                    municipality_code="072010"),
        ], actor="test")
        # boundaries decide when loaded, even against a nearer shelter, and a point outside them has none
        assert await municipality_at(conn, 37.395, 140.365, boundaries=OneTown("072010")) == "072010"
        assert await municipality_at(conn, 37.395, 140.365, boundaries=OneTown(None)) is None
        # no boundaries: the nearest shelter or station, within 20 km only
        assert await municipality_at(conn, 37.40, 140.37, boundaries=None) == "072036"
        assert await municipality_at(conn, 37.74, 140.46, boundaries=None) == "072010"
        assert await municipality_at(conn, 36.9, 140.3, boundaries=None) is None  # ~55 km from both


def test_guidance_speaks_for_the_deciding_source_in_every_language() -> None:
    calm = LevelInForce(municipality="072036", top=None)
    official = Source("official", 4, False, dict.fromkeys(LANGUAGES, "土砂災害警戒情報"), "landslide",
                      official={})
    order_alert = {"id": 7, "condition": "evacuation_order", "station_name": None, "river": None}
    order = Source("order", 4, False, dict.fromkeys(LANGUAGES, "避難指示"), None, alert=order_alert)
    for language in LANGUAGES:
        said = guidance(calm, language)
        assert (said["level"], said["headline"], said["instruction"]) == (None, *CALM[language])
        said = guidance(LevelInForce("072036", official, [official]), language)
        assert said["condition"] == "official_information" and said["level"] == 4
        assert said["instruction"] == OFFICIAL_INSTRUCTION[4][language]
        said = guidance(LevelInForce("072036", order, [order]), language)
        assert said["alert_id"] == 7 and said["level"] == 4
        assert said["headline"] and said["instruction"] and said["event"]
    assert len({guidance(calm, lang)["headline"] for lang in LANGUAGES}) == 3
