"""What the API does with blanks and line breaks around a value, decided per place (sonae.exacttext):

* the Last-Event-ID of the alert stream (``last_event_id``) is taken exactly: found, ``last_event_id=0%0A`` was
  trimmed and taken as 0; now a 400 that says the rule;
* a hazard map's link (``PUT /api/v1/hazard-maps/{id}/link``): found, ``"ref": "G1\\n"`` would link gauge ``G1\\n``
  (the command line's ``--link`` trimmed it to G1); now a 400 with the rule, before anything is looked up;
* the words of the shelter search (``q``) are free text typed into a search box: the spaces around them are
  trimmed (decided: they are no part of what is searched for), a line break is refused (400), never trimmed.
"""

from __future__ import annotations

from urllib.parse import quote

import asyncpg
from aiohttp.test_utils import TestClient

from sonae.exacttext import EXACT_RULE


async def test_last_event_id_is_taken_exactly(client: TestClient) -> None:
    assert (await client.head("/api/v1/events?last_event_id=0")).status == 200
    for written in ("0\n", " 0", "0 ", "\t0", "0\r\n"):
        resp = await client.get("/api/v1/events?last_event_id=" + quote(written))
        body = await resp.json()
        assert resp.status == 400, (written, body)
        assert "Last-Event-ID must be an event id" in body["detail"] and EXACT_RULE in body["detail"], body


async def test_a_hazard_map_link_reference_is_taken_exactly(admin_client: tuple[TestClient, str]) -> None:
    client, token = admin_client
    auth = {"Authorization": f"Bearer {token}"}
    plain = await client.put("/api/v1/hazard-maps/nope/link", json={"kind": "gauge", "ref": "G1", "at_level": 4},
                             headers=auth)
    assert plain.status == 404, await plain.text()  # no such map: the body itself was taken
    for ref in ("G1\n", " G1", "G1\t", "\u3000G1"):
        resp = await client.put("/api/v1/hazard-maps/nope/link", json={"kind": "gauge", "ref": ref, "at_level": 4},
                                headers=auth)
        body = await resp.json()
        assert resp.status == 400, (ref, body)
        assert "the reference has U+" in body["detail"] and EXACT_RULE in body["detail"], body


async def test_shelter_search_words_are_trimmed_of_spaces_only(client: TestClient, pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO shelters (id, name, lat, lon) VALUES ('s1', '第一公民館', 37.4, 140.3), "
                       "('s2', '第二小学校', 37.41, 140.31)")

    async def found(words: str) -> list[str]:
        resp = await client.get("/api/v1/shelters?format=json&q=" + quote(words))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return sorted(s["id"] for s in (body["shelters"] if isinstance(body, dict) else body))

    assert await found("公民館") == await found(" 公民館 ") == await found("  公民館") == ["s1"]
    for written in ("公民館\n", "\t公民館", "公民館\r"):
        resp = await client.get("/api/v1/shelters?format=json&q=" + quote(written))
        assert resp.status == 400, (written, await resp.text())
