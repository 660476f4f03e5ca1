"""The Atom entry of an alert says what its CAP message is (found by a break-it pass: the summary derived
``Alert``/``Update`` from the version number, so the first public entry of an alert raised at 水防団待機, staff
only, and made public later said ``Update`` where its CAP message, rightly, is an ``Alert``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_atom, render_cap
from alerting.cap_identity import CapProfile
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings

PROFILE = CapProfile("atom-test", "sonae@sonae.test")
NS = {"c": CAP_NS}
ATOM = "{http://www.w3.org/2005/Atom}"
GAUGE = Station(id="atom", name="Atom", river="阿武隈川", municipality_code="072036", th_standby=3.0, th_caution=3.5,
                th_evacuation=4.0, th_danger=4.5)


async def _write(conn: asyncpg.Connection, points: list[tuple[datetime, float]]) -> None:
    await write_batch(conn, [Reading(GAUGE.id, "level", ts, v) for ts, v in points])


async def test_the_atom_entry_of_an_alert_first_public_later_is_an_alert(pool: asyncpg.Pool,
                                                                        settings: Settings) -> None:
    """Raised at 水防団待機 (staff only), raised to 警戒レベル2相当: its first public CAP message is an ``Alert``; the
    Atom summary said ``Update`` (from the version number). A later change is an ``Update`` in both."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        t0: datetime = await conn.fetchval("SELECT date_trunc('minute', now()) - interval '40 minutes'")
        await _write(conn, [(t0, 3.1)])
        await worker.step(conn)
        await _write(conn, [(t0 + timedelta(minutes=10), 3.6)])
        await worker.step(conn)

        async def told() -> tuple[str, str]:
            (alert,) = await store.list_feed(conn)
            atom = etree.fromstring(render_atom([alert], base_url="https://sonae.test", profile=PROFILE))
            summary = atom.findtext(f"{ATOM}entry/{ATOM}summary")
            full = await store.get_alert(conn, alert["id"])
            assert full is not None
            cap = etree.fromstring(render_cap(full, await store.messages_of(conn, alert["id"]), profile=PROFILE))
            return summary.split(":")[0], cap.findtext("c:msgType", namespaces=NS)

        assert await conn.fetchval("SELECT version FROM alerts WHERE station_id = $1", GAUGE.id) == 2
        assert await told() == ("Alert", "Alert")
        await _write(conn, [(t0 + timedelta(minutes=20), 4.1)])
        await worker.step(conn)
        assert await told() == ("Update", "Update")
