"""Through the application as served: a parameter with a line break or blank around it is refused (400) naming
the parameter, never taken as if clean.

Found by a tester: ``/api/v1/level?municipality=07203%0A``, ``/stations/DT-G01/readings?from=2026-12-02%0A``,
``bbox=140,37,141,38%0A``, ``/alerts/history?station=DT-G01%0A`` (an empty list) and
``/ngsi-ld/v1/entities?type=WaterObserved%0A`` (the entities) answered 200: parsers stripped what was sent.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

CASES = [  # (target, the parameter named)
    *[(f"{path}?municipality=07203%0A", "municipality") for path in (
        "/api/v1/level", "/api/v1/alerts", "/api/v1/alerts/history", "/api/v1/alerts/feed.atom", "/api/v1/official",
        "/api/v1/shelters", "/api/v1/stations")],
    ("/api/v1/level?municipality=%2007203", "municipality"),
    ("/api/v1/level?municipality=07203%E2%80%A8", "municipality"),
    ("/api/v1/stations/DT-G01/readings?from=2026-12-02%0A", "from"),
    ("/api/v1/stations/DT-G01/readings?to=%092026-12-02", "to"),
    ("/api/v1/stations?bbox=140,37,141,38%0A", "bbox"),
    ("/api/v1/stations?bbox=140,37,%20141,38", "bbox"),
    ("/api/v1/network.geojson?bbox=140,37,141,38%0D", "bbox"),
    ("/api/v1/alerts/history?station=DT-G01%0A", "station"),
]


@pytest.mark.parametrize(("target", "name"), CASES, ids=[t for t, _ in CASES])
async def test_a_parameter_with_anything_around_it_is_400_naming_it(admin_client: tuple[TestClient, str],
                                                                   target: str, name: str) -> None:
    client, token = admin_client
    async with client.get(target, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 400, (target, r.status, await r.text())
        problem = await r.json()
    assert problem.get("parameter") == name, problem


async def test_a_refused_time_says_the_rule_in_words(admin_client: tuple[TestClient, str]) -> None:
    client, _ = admin_client
    for sent in ("2026-12-02T09:00%2B99:00", "%D9%A2%D9%A0%D9%A2%D9%A6-07-12"):
        async with client.get(f"/api/v1/stations/DT-G01/readings?from={sent}") as r:
            assert r.status == 400, await r.text()
            detail = (await r.json())["detail"]
        assert "timedelta" not in detail and "isoformat" not in detail, detail
        assert "±24 h" in detail and "ASCII digits" in detail and "2026-07-12T09:00+09:00" in detail, detail


NGSI = ["type=WaterObserved%0A", "type=WaterObserved,%20Device", "id=urn:ngsi-ld:WaterObserved:DT-G01%0A",
        "attrs=waterLevel%0A", "q=waterLevel%3E2.5%0A", "idPattern=.*%0A",
        "georel=near;maxDistance==100&geometry=Point&coordinates=%5B140.47,37.75%5D%0A",
        "type=WaterObserved&q=%0BwaterLevel%3E1"]


@pytest.mark.parametrize("query", NGSI)
async def test_ngsi_ld_parameters_with_anything_around_them_are_bad_request_data(
        admin_client: tuple[TestClient, str], query: str) -> None:
    client, _ = admin_client
    async with client.get(f"/ngsi-ld/v1/entities?{query}") as r:
        assert r.status == 400, (query, r.status, await r.text())
        problem = await r.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", problem
    async with client.get("/ngsi-ld/v1/entities?type=WaterObserved") as ok:
        assert ok.status == 200, await ok.text()


async def test_municipality_codes_in_json_bodies_are_taken_as_sent(admin_client: tuple[TestClient, str]) -> None:
    client, token = admin_client
    body = {"username": "koriyama-staff", "password": "correct horse battery", "role": "operator",
            "municipality_code": "07203\n"}
    async with client.post("/api/v1/accounts", json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 400, await r.text()
        assert "municipality_code" in await r.text()
