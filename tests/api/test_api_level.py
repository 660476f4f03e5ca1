"""The current 警戒レベル for a point or a municipality."""

from __future__ import annotations

import re

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting.level import CALM
from alerting.level import OUTSIDE as OUTSIDE_COVERAGE
from alerting.store import cancel_order, issue_order
from evac.shelters import Shelter
from evac.store import import_shelters
from ingest.municipalities import seed_if_empty as seed_municipalities
from sonae.config import Settings
from tests.api.test_api_staff import FUKUSHIMA, KORIYAMA, SQUARE, make_client

INSIDE = {"lat": "37.395", "lon": "140.365"}  # inside SQUARE, near the Koriyama shelter
OUTSIDE = {"lat": "37.42", "lon": "140.40"}  # Koriyama, outside SQUARE


async def _seed(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await import_shelters(conn, [
            Shelter(id="k1", name="K1", lat=37.395, lon=140.365, hazards=frozenset({"flood"}), municipality_code=KORIYAMA),
            Shelter(id="k2", name="K2", lat=37.42, lon=140.40, hazards=frozenset({"flood"}), municipality_code=KORIYAMA),
            Shelter(id="f1", name="F1", lat=37.75, lon=140.47, hazards=frozenset({"flood"}), municipality_code=FUKUSHIMA),
        ], actor="test")


async def test_level_follows_orders_and_areas(pool: asyncpg.Pool, settings: Settings) -> None:
    await _seed(pool)
    client: TestClient = await make_client(pool, settings)
    try:
        calm = await (await client.get("/api/v1/level", params={**INSIDE, "lang": "en"})).json()
        assert calm["level"] is None and calm["municipality_code"] == KORIYAMA and "No alert" in calm["headline"]
        async with pool.acquire() as conn:
            whole, _ = await issue_order(conn, municipality_code=KORIYAMA, level=3, issued_by="t")
            area, _ = await issue_order(conn, municipality_code=KORIYAMA, level=4, issued_by="t", area=SQUARE)
        inside = await (await client.get("/api/v1/level", params=INSIDE)).json()
        outside = await (await client.get("/api/v1/level", params=OUTSIDE)).json()
        assert (inside["level"], outside["level"]) == (4, 3)
        assert "避難指示" in inside["event"] and not inside["exercise"]
        easy = await (await client.get("/api/v1/level", params={**INSIDE, "lang": "ja-easy"})).json()
        assert easy["headline"] != inside["headline"]
        fuku = await (await client.get("/api/v1/level", params={"municipality": FUKUSHIMA})).json()
        assert fuku["level"] is None
        async with pool.acquire() as conn:
            await cancel_order(conn, area, cancelled_by="t")
            await cancel_order(conn, whole, cancelled_by="t")
            await issue_order(conn, municipality_code=FUKUSHIMA, level=5, issued_by="t", exercise=True)
        drill = await (await client.get("/api/v1/level", params={"municipality": FUKUSHIMA})).json()
        assert drill["level"] == 5 and drill["exercise"] is True
        assert (await (await client.get("/api/v1/level", params=INSIDE)).json())["level"] is None
        for bad in ({"lat": "91", "lon": "140"}, {"municipality": "abc"}, {**INSIDE, "lang": "fr"}):
            resp = await client.get("/api/v1/level", params=bad)
            assert resp.status == 400 and resp.content_type == "application/problem+json"
        for alone in ({"lat": "37"}, {}):  # each parameter valid, but no place named: 422 (the document says so)
            resp = await client.get("/api/v1/level", params=alone)
            assert resp.status == 422 and resp.content_type == "application/problem+json"
    finally:
        await client.close()


async def test_the_headline_names_the_place_of_an_order_in_every_language(pool: asyncpg.Pool, settings: Settings) -> None:
    """An order's headline names its area (the staff's area description), else its municipality, as its CAP
    message does: before, /api/v1/level said "に避難指示を発令しました" / "Evacuation order issued for "."""
    await _seed(pool)
    client: TestClient = await make_client(pool, settings)
    try:
        async with pool.acquire() as conn:
            await seed_municipalities(conn)  # the shipped names, as on a service's first start
            await issue_order(conn, municipality_code=KORIYAMA, level=3, issued_by="t")
        town = {"ja": "郡山市に高齢者等避難", "en": "issued for Koriyama City", "ja-easy": "郡山市の おとしより"}
        for lang, said in town.items():
            body = await (await client.get("/api/v1/level", params={**OUTSIDE, "lang": lang})).json()
            assert body["level"] == 3 and said in body["headline"], body["headline"]
        async with pool.acquire() as conn:
            await issue_order(conn, municipality_code=KORIYAMA, level=4, issued_by="t", area=SQUARE,
                              area_desc="安積町荒井")
        for lang in town:
            body = await (await client.get("/api/v1/level", params={**INSIDE, "lang": lang})).json()
            assert body["level"] == 4 and "安積町荒井" in body["headline"], body["headline"]
    finally:
        await client.close()


async def test_an_order_area_counts_across_municipal_lines(pool: asyncpg.Pool, settings: Settings) -> None:
    await _seed(pool)
    client: TestClient = await make_client(pool, settings)
    try:
        async with pool.acquire() as conn:  # Fukushima city orders an area that reaches into Koriyama
            await issue_order(conn, municipality_code=FUKUSHIMA, level=4, issued_by="t", area=SQUARE)
        inside = await (await client.get("/api/v1/level", params=INSIDE)).json()
        assert inside["municipality_code"] == KORIYAMA and inside["level"] == 4
        assert (await (await client.get("/api/v1/level", params=OUTSIDE)).json())["level"] is None
    finally:
        await client.close()


async def test_a_gauge_just_across_the_line_counts_nearby_only(pool: asyncpg.Pool, settings: Settings) -> None:
    from datetime import UTC, datetime

    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    await _seed(pool)
    async with pool.acquire() as conn:
        # a Fukushima-city gauge 2 km from INSIDE, which is in Koriyama
        await upsert_stations(conn, [Station(id="border", name="境", municipality_code=FUKUSHIMA,
                                             lat=37.395, lon=140.3875, th_danger=5.5)])
        async with conn.transaction():
            await apply_transition(conn, station_id="border", municipality_code=FUKUSHIMA, exercise=False,
                                   t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.6, 5.5,
                                                "threshold"))
    client: TestClient = await make_client(pool, settings)
    try:
        near = await (await client.get("/api/v1/level", params=INSIDE)).json()
        assert near["level"] == 4 and near["condition"] == "river_level" and near["municipality_code"] == KORIYAMA
        far = await (await client.get("/api/v1/level", params={"lat": "37.42", "lon": "140.45"})).json()
        assert far["level"] is None  # 5.5 km away, other municipality
    finally:
        await client.close()


async def test_a_level_raised_by_the_trend_says_forecast_not_reached(pool: asyncpg.Pool, settings: Settings) -> None:
    """A gauge at 2.0 m whose rise forecasts 氾濫危険水位 gets level 3 early (reason ``trend``): its headline,
    CAP and feed say the river is rising towards the danger stage. Before, they said it had reached 避難判断水位
    (4.0 m here), which it had not (found in the demo: "…で避難判断水位に達しました" at 2.0 m)."""
    from datetime import UTC, datetime

    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    await _seed(pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="rising", name="荒井", river="阿武隈川", municipality_code=KORIYAMA,
                                             lat=37.395, lon=140.366, th_evacuation=4.0, th_danger=5.5)])
        async with conn.transaction():
            change = await apply_transition(
                conn, station_id="rising", municipality_code=KORIYAMA, exercise=False,
                t=Transition("river_level", None, 3, datetime.now(UTC).timestamp(), 2.0, 5.5, "trend"))
    client: TestClient = await make_client(pool, settings)
    try:
        said = {lang: await (await client.get("/api/v1/level", params={**INSIDE, "lang": lang})).json()
                for lang in ("ja", "en", "ja-easy")}
        assert {body["level"] for body in said.values()} == {3}
        assert "氾濫危険水位に達する見込み" in said["ja"]["headline"] and "達しました" not in said["ja"]["headline"]
        assert "forecast to reach" in said["en"]["headline"] and "reached" not in said["en"]["headline"]
        assert "ふえて います" in said["ja-easy"]["headline"]
        cap = await (await client.get(f"/api/v1/alerts/{change.alert_id}.cap")).text()
        assert "避難判断水位に達しました" not in cap and "reached the evacuation-judgement" not in cap
        assert cap.count("氾濫危険水位に達する見込み") == 1 and "forecast to reach the flood danger stage (" in cap
        feed = await (await client.get("/api/v1/alerts/feed.atom")).text()
        assert "阿武隈川 荒井の水位が上昇を続け" in feed
    finally:
        await client.close()


async def test_a_level_kept_as_the_river_falls_never_says_reached(pool: asyncpg.Pool, settings: Settings) -> None:
    """A gauge lowered from level 4 to 3 (one step after the dwell) while it reads 1.2 m: the level and CAP say
    the river has begun to fall and level 3 continues. Before, they said "…で避難判断水位に達しました" (4.0 m) as
    the demo's river fell back to 1.2 m (found by enduser)."""
    from datetime import UTC, datetime

    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    await _seed(pool)
    now = datetime.now(UTC).timestamp()
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="falling", name="荒井", river="阿武隈川", municipality_code=KORIYAMA,
                                             lat=37.395, lon=140.366, th_evacuation=4.0, th_danger=5.5)])
        for old, new, value, threshold, at in ((None, 4, 5.6, 5.5, now - 60), (4, 3, 1.2, 4.0, now)):
            async with conn.transaction():
                change = await apply_transition(
                    conn, station_id="falling", municipality_code=KORIYAMA, exercise=False,
                    t=Transition("river_level", old, new, at, value, threshold, "threshold"))
    client: TestClient = await make_client(pool, settings)
    try:
        said = {lang: await (await client.get("/api/v1/level", params={**INSIDE, "lang": lang})).json()
                for lang in ("ja", "en", "ja-easy")}
        assert {body["level"] for body in said.values()} == {3}
        assert "下がり始めましたが、警戒レベル3相当が続いています" in said["ja"]["headline"]
        assert "到達" not in said["ja"]["event"] and "達しました" not in said["ja"]["headline"]
        assert "begun to fall" in said["en"]["headline"] and "reached" not in said["en"]["headline"]
        assert "へりはじめました" in said["ja-easy"]["headline"]
        cap = await (await client.get(f"/api/v1/alerts/{change.alert_id}.cap")).text()
        assert "達しました" not in cap and "reached" not in cap and "has begun to fall" in cap
    finally:
        await client.close()


async def test_the_drill_town_is_named_never_numbered(pool: asyncpg.Pool, settings: Settings) -> None:
    """The drill town of ``run --simulate`` is in no list of municipalities: its order read "079995: 避難指示"
    in /api/v1/level's sources, its CAP headline and on the resident page (the alert's municipality_name
    was null). Now its name, in each language: from its names in the ground before its row exists, and
    from its row once the evacuation service using the town adds it (``evac.store.name_drill_town``)."""
    import json

    from alerting.cap import place_name
    from alerting.store import list_active
    from evac.store import name_drill_town
    from sonae.municipality_code import DRILL_TOWN_CODE, DRILL_TOWN_NAMES

    client: TestClient = await make_client(pool, settings)
    try:
        async with pool.acquire() as conn:
            await issue_order(conn, municipality_code=DRILL_TOWN_CODE, level=4, issued_by="t", exercise=True)
        for seeded in (False, True):
            if seeded:
                async with pool.acquire() as conn:
                    await seed_municipalities(conn)  # the shipped list, which has no drill town
                    await name_drill_town(conn)  # as the evacuation service does when it uses the town
                    order = (await list_active(conn, audience="public"))[0]
                assert (order["municipality_name"], order["municipality_name_en"]) == (
                    DRILL_TOWN_NAMES["ja-JP"], DRILL_TOWN_NAMES["en-US"])
            for lang, tag in (("ja", "ja-JP"), ("en", "en-US"), ("ja-easy", "ja-JP-x-easy")):
                body = await (await client.get("/api/v1/level", params={"municipality": DRILL_TOWN_CODE,
                                                                         "lang": lang})).json()
                assert body["level"] == 4 and body["exercise"], body
                said = json.dumps({k: v for k, v in body.items() if k not in ("municipality_code", "alerts")},
                                  ensure_ascii=False)
                assert DRILL_TOWN_CODE not in said, (seeded, lang, said)
                name = DRILL_TOWN_NAMES["en-US" if tag == "en-US" else "ja-JP"]
                assert name in body["headline"], (seeded, lang, body["headline"])
                assert DRILL_TOWN_NAMES[tag] in body["sources"][0]["name"], (seeded, lang, body["sources"])
        for tag in ("ja-JP", "en-US"):
            assert DRILL_TOWN_CODE not in place_name({"condition": "evacuation_order",
                                                     "municipality_code": DRILL_TOWN_CODE}, lang=tag)
    finally:
        await client.close()


async def test_a_point_outside_every_known_municipality_is_told_so_not_that_all_is_calm(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """Found: ``lat=-0&lon=140.35`` (and any point beyond the covered area) answered "警戒レベルの発表は
    ありません", as if the resident's place were calm; route and nearest shelter say outside_area there."""
    await _seed(pool)
    client: TestClient = await make_client(pool, settings)
    try:
        for lang, tag in (("ja", "ja-JP"), ("en", "en-US"), ("ja-easy", "ja-JP-x-easy")):
            for far in ({"lat": "-0", "lon": "140.35"}, {"lat": "26.2124", "lon": "127.6809"}):  # (那覇)
                said = await (await client.get("/api/v1/level", params={**far, "lang": lang})).json()
                assert (said["covered"], said["municipality_code"], said["level"]) == (False, None, None), said
                assert (said["headline"], said["instruction"]) == OUTSIDE_COVERAGE[tag]
            near = await (await client.get("/api/v1/level", params={**INSIDE, "lang": lang})).json()
            assert (near["covered"], near["headline"], near["instruction"]) == (True, *CALM[tag])
    finally:
        await client.close()


async def test_a_gauge_level_says_equivalent_and_never_an_orders_name_in_every_language(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """A gauge at 氾濫危険水位 is 警戒レベル4相当, not a 避難指示 (only a municipality issues one): the answer's
    texts and its CAP message say 相当 / equivalent / ぐらい in each language (found: やさしい日本語 said
    "かわが とても あぶない（レベル4）", a level without ぐらい, as an issued order's text reads)."""
    from datetime import UTC, datetime

    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    await _seed(pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="danger", name="荒井", river="阿武隈川", municipality_code=KORIYAMA,
                                             lat=37.395, lon=140.366, th_danger=5.5)])
        async with conn.transaction():
            change = await apply_transition(conn, station_id="danger", municipality_code=KORIYAMA, exercise=False,
                                            t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.6,
                                                         5.5, "threshold"))
    said = {"ja": ("警戒レベル4相当", ("避難指示",)), "en": ("alert level 4 equivalent", ("Evacuation order",)),
            "ja-easy": ("けいかいレベル4 ぐらい", ("みんな にげて（レベル4）",))}
    client: TestClient = await make_client(pool, settings)
    try:
        for lang, (equivalent, orders) in said.items():
            body = await (await client.get("/api/v1/level", params={**INSIDE, "lang": lang})).json()
            assert body["level"] == 4 and body["condition"] == "river_level"
            assert equivalent in body["event"], body
            assert not any(o in body["event"] + body["headline"] for o in orders), body
        cap = await (await client.get(f"/api/v1/alerts/{change.alert_id}.cap")).text()
        assert "けいかいレベル4 ぐらい" in cap and "警戒レベル4相当" in cap and "避難指示" not in cap
    finally:
        await client.close()


JA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


async def test_a_2024_named_landslide_telegram_is_named_new_beside_old_in_every_language(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """breakit7: a VXWW50 whose Head/Title is 「…レベル４土砂災害危険警報」 (the 2024 review's name; Control/Title
    and Body still 土砂災害警戒情報) was named 「気象庁: 土砂災害警戒情報」 only, in every language."""
    from jma.store import store_telegram
    from tests.jma.support import LANDSLIDE, sample, substitute

    data = substitute(sample(LANDSLIDE[0]), code7="1420600", name="小田原市", as_code7="0720300", as_name="郡山市")
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="bk7-newname", data=data) == "applied"
    client: TestClient = await make_client(pool, settings)
    try:
        names = {}
        for lang in ("ja", "en", "ja-easy"):
            body = await (await client.get("/api/v1/level", params={"municipality": KORIYAMA, "lang": lang})).json()
            official = [s for s in body["sources"] if s["kind"] == "official"]
            assert body["level"] == 4 and official, body
            names[lang] = official[0]["name"]
            assert body["headline"] == official[0]["name"]
        assert names["ja"] == "気象庁: レベル４土砂災害危険警報（土砂災害警戒情報）"
        assert names["en"] == ("JMA: level 4 landslide danger warning (landslide alert information; "
                               "alert level 4 equivalent)")
        assert not JA.search(names["en"]), names["en"]
        assert "レベル4 どしゃさいがい きけん けいほう" in names["ja-easy"] and "どしゃさいがい" in names["ja-easy"]
        official_list = await (await client.get("/api/v1/official", params={"municipality": KORIYAMA,
                                                                           "lang": "en"})).json()
        assert official_list["official"][0]["name"] == names["en"]
    finally:
        await client.close()


@pytest.mark.parametrize(("row", "new", "former"), [
    ({"kind": "レベル４氾濫危険警報", "phenomenon": "洪水", "level": 4, "title": "阿武隈川レベル４氾濫危険警報"},
     "レベル４氾濫危険警報", "氾濫危険情報"),
    ({"kind": "レベル５大雨特別警報", "phenomenon": "大雨", "level": 5, "title": "福島県気象警報・注意報"},
     "レベル５大雨特別警報", "大雨特別警報"),
    ({"kind": "レベル３氾濫警報", "phenomenon": "洪水", "level": 3, "title": ""}, "レベル３氾濫警報", "氾濫警戒情報"),
    ({"kind": "レベル２氾濫注意報", "phenomenon": "洪水", "level": 2, "title": ""}, "レベル２氾濫注意報", "氾濫注意情報"),
    ({"kind": "レベル４大雨危険警報", "phenomenon": "大雨", "level": 4, "title": ""}, "レベル４大雨危険警報", None),
    ({"kind": "氾濫危険情報", "phenomenon": "洪水", "level": 4, "title": "阿武隈川氾濫危険情報"},
     "レベル４氾濫危険警報", "氾濫危険情報"),
    ({"kind": "大雨警報", "phenomenon": "大雨", "level": 3, "title": "福島県気象警報・注意報"}, None, "大雨警報"),
])
def test_official_names_pair_the_2024_name_with_the_former(row: dict[str, object], new: str | None,
                                                           former: str | None) -> None:
    from alerting.level import official_names, official_source

    assert official_names({**row, "exercise": False}) == (new, former)
    names = official_source({**row, "exercise": False, "editorial_office": "", "status": "発表"}).name
    for shown in (new, former):
        if shown:
            assert shown in names["ja-JP"]
    assert not JA.search(names["en-US"]), names["en-US"]
    assert not re.search(r"[\u4e00-\u9fff]", names["ja-JP-x-easy"]), names["ja-JP-x-easy"]


async def test_a_gauge_is_named_in_english_by_its_english_name(pool: asyncpg.Pool, settings: Settings) -> None:
    """breakit7: the English source name was "Sonae gauge 本宮" although the station has name_en Motomiya."""
    from datetime import UTC, datetime

    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    await _seed(pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="motomiya", name="本宮", name_en="Motomiya", municipality_code=KORIYAMA,
                                             lat=37.396, lon=140.366, th_danger=5.5)])
        async with conn.transaction():
            await apply_transition(conn, station_id="motomiya", municipality_code=KORIYAMA, exercise=False,
                                   t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.6, 5.5,
                                                "threshold"))
    client: TestClient = await make_client(pool, settings)
    try:
        en = await (await client.get("/api/v1/level", params={"municipality": KORIYAMA, "lang": "en"})).json()
        gauge = [s for s in en["sources"] if s["kind"] == "gauge"]
        assert gauge and gauge[0]["name"] == "Sonae gauge Motomiya", gauge
        assert not JA.search(en["headline"]), en["headline"]
        alerts = (await (await client.get("/api/v1/alerts", params={"municipality": KORIYAMA})).json())["alerts"]
        mine = [a for a in alerts if a["station_id"] == "motomiya"]
        assert mine and mine[0]["station_name_en"] == "Motomiya"
    finally:
        await client.close()
