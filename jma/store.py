"""Keeping telegrams and the official information in force (tables of ``jma/migrations``).

:func:`store_telegram` is the one path every telegram takes (feed or file): it is idempotent by
``link``, keeps the raw bytes whatever happens, and in the same transaction applies what the telegram
says. Ordering per event (``type|EventID|exercise``): a telegram older than the newest applied one
(``ReportDateTime``, then ``Serial``) is kept as ``stale`` and changes nothing; a telegram dated more than
:data:`jma.telegram.MAX_FUTURE_S` ahead of the clock is kept as ``failed`` ``future_datetime`` and never
orders anything (:func:`jma.telegram.check_clock`); ``InfoType`` 取消
removes the event's information; any other telegram replaces the event's rows with its statements
that are in force (発表/継続 with a level). ``試験`` telegrams are kept as ``ignored_test``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from jma.areas import map_statement
from jma.telegram import MAX_FUTURE_S, Telegram, TelegramError, check_clock, parse

FETCHED = Counter("sonae_jma_telegrams_fetched_total", "Telegrams received (feed or file), new ones only")
PARSED = Counter("sonae_jma_telegrams_parsed_total", "Telegrams parsed", ["type"])
FAILED = Counter("sonae_jma_telegrams_failed_total", "Telegrams that could not be read, by reason", ["reason"])
IGNORED_TEST = Counter("sonae_jma_telegrams_test_total", "試験 telegrams, kept and ignored")
LAG = Histogram("sonae_jma_telegram_lag_seconds", "Control/DateTime → stored",
                buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600, 86400))


def event_key(telegram: Telegram) -> str:
    return f"{telegram.type}|{telegram.event_id}|{'exercise' if telegram.exercise else 'real'}"


def _parsed_json(telegram: Telegram) -> str:
    def default(value: Any) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    return json.dumps(asdict(telegram), ensure_ascii=False, default=default)


async def store_telegram(conn: asyncpg.Connection, *, link: str, data: bytes) -> str:
    """Keep one telegram and apply it; returns the outcome.

    Returns
    -------
    str
        ``duplicate`` (link already stored: nothing changes), ``applied``, ``stale``, ``ignored_test``
        or ``failed:<reason>`` (kept with its reason).
    """
    try:
        return await _store(conn, link=link, data=data)
    except asyncpg.UniqueViolationError:
        return "duplicate"  # another process stored the same link at the same moment


async def _store(conn: asyncpg.Connection, *, link: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM jma_telegrams WHERE link = $1", link):
            return "duplicate"
        now = datetime.now(UTC)
        try:
            telegram = parse(data)
            check_clock(telegram, now=now)
        except TelegramError as exc:
            await conn.execute(
                """INSERT INTO jma_telegrams (link, sha256, raw, outcome, error_reason, error_detail)
                   VALUES ($1, $2, $3, 'failed', $4, $5) ON CONFLICT (link) DO NOTHING""",
                link, sha, data, exc.reason, exc.detail[:1000])
            FETCHED.inc()
            FAILED.labels(exc.reason).inc()
            return f"failed:{exc.reason}"
        key = event_key(telegram)
        outcome = "applied"
        if telegram.status == "試験":
            outcome = "ignored_test"
        else:
            newest = await conn.fetchrow(
                "SELECT report_time, serial FROM jma_events WHERE event_key = $1 FOR UPDATE", key)
            if newest is not None and newest["report_time"] > now + timedelta(seconds=MAX_FUTURE_S):
                newest = None  # applied before the clock check: a future time never shadows a genuine telegram
            if newest is not None and (telegram.report_time, telegram.serial) <= (
                    newest["report_time"], newest["serial"]) and telegram.info_type != "取消":
                outcome = "stale"
        telegram_id = await conn.fetchval(
            """INSERT INTO jma_telegrams (link, sha256, raw, telegram_time, type, status, info_type, event_key,
                   serial, title, outcome, parsed)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb) RETURNING id""",
            link, sha, data, telegram.date_time, telegram.type, telegram.status, telegram.info_type, key,
            telegram.serial, telegram.title, outcome, _parsed_json(telegram))
        FETCHED.inc()
        PARSED.labels(telegram.type).inc()
        if outcome == "ignored_test":
            IGNORED_TEST.inc()
            return outcome
        if outcome == "applied":
            await _apply(conn, telegram, key, telegram_id)
            await conn.execute("SELECT pg_notify('sonae_official', $1)", str(telegram_id))
        stored_at = await conn.fetchval("SELECT received_at FROM jma_telegrams WHERE id = $1", telegram_id)
        LAG.observe(max(0.0, (stored_at - telegram.date_time).total_seconds()))
        return outcome


async def _apply(conn: asyncpg.Connection, telegram: Telegram, key: str, telegram_id: int) -> None:
    await conn.execute("DELETE FROM jma_official_info WHERE event_key = $1", key)
    await conn.execute(
        """INSERT INTO jma_events (event_key, report_time, serial, telegram_id) VALUES ($1, $2, $3, $4)
           ON CONFLICT (event_key) DO UPDATE SET report_time = excluded.report_time,
               serial = excluded.serial, telegram_id = excluded.telegram_id""",
        key, telegram.report_time, telegram.serial, telegram_id)
    if telegram.info_type == "取消":
        return
    rows = []
    for statement in telegram.statements:
        mapped = map_statement(statement)
        for code in mapped.unknown:
            await conn.execute(
                """INSERT INTO jma_unknown_areas (area_type, area_code, area_name) VALUES ($1, $2, $3)
                   ON CONFLICT (area_type, area_code) DO UPDATE SET last_seen = now(),
                       seen = jma_unknown_areas.seen + 1""",
                statement.area_type, code, statement.area_name)
        if statement.level is None or statement.status == "解除":
            continue
        for municipality in mapped.municipalities:
            rows.append((key, municipality, statement.phenomenon, statement.kind, statement.level,
                         statement.status, statement.area_code, statement.area_name, telegram.title,
                         telegram.headline, telegram.editorial_office, telegram.exercise, telegram_id,
                         telegram.report_time, telegram.valid_until))
    await conn.executemany(
        """INSERT INTO jma_official_info (event_key, municipality_code, phenomenon, kind, level, status,
               area_code, area_name, title, headline, editorial_office, exercise, telegram_id, valid_from,
               valid_until)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)
           ON CONFLICT DO NOTHING""", rows)


async def in_force(conn: asyncpg.Connection, *, municipality: str | None = None) -> list[dict[str, Any]]:
    """Official information in force (of one municipality, or all), highest level first."""
    rows = await conn.fetch(
        """SELECT municipality_code, phenomenon, kind, level, status, area_code, area_name, title, headline,
                  editorial_office, exercise, valid_from, valid_until
           FROM jma_official_info
           WHERE ($1::text IS NULL OR municipality_code = $1)
             AND (valid_until IS NULL OR valid_until > now())
           ORDER BY level DESC, valid_from DESC""", municipality)
    return [dict(r) for r in rows]


async def last_telegram_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM jma_telegrams"))


async def applied_after(conn: asyncpg.Connection, last_id: int, *, limit: int = 500) -> list[dict[str, Any]]:
    """Applied telegrams after ``last_id``: id, type, title, InfoType, exercise, event and the
    municipalities where their information is in force (empty for a 解除 or 取消)."""
    rows = await conn.fetch(
        """SELECT t.id, t.type, t.title, t.info_type, t.status = '訓練' AS exercise, t.event_key,
                  coalesce((SELECT array_agg(DISTINCT o.municipality_code) FROM jma_official_info o
                            WHERE o.telegram_id = t.id), '{}') AS municipalities
           FROM jma_telegrams t WHERE t.id > $1 AND t.outcome = 'applied' ORDER BY t.id LIMIT $2""",
        last_id, limit)
    return [{**dict(r), "municipalities": list(r["municipalities"])} for r in rows]
