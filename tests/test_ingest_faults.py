"""Zero loss, no duplicates: the ingestor killed with SIGKILL, PostgreSQL restarted, the broker restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from sonae.config import Settings
from sonae.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from sonae.migrations import migrate
from tests.ingest_support import count, publish_all, readings_for, register, running_ingestor, wait_until


def _ingest_process(settings: Settings, client_id: str, metrics_port: int = 0) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SONAE_DATABASE_URL": settings["database.url"],
        "SONAE_MQTT_URL": settings["mqtt.url"],
        "SONAE_MQTT_PROTOCOL": settings["mqtt.protocol"],
        "SONAE_MQTT_TOPIC_PREFIX": settings["mqtt.topic_prefix"],
        "SONAE_MQTT_CLIENT_ID": client_id,
        "SONAE_INGEST_SHARED_GROUP": settings["ingest.shared_group"],
        "SONAE_INGEST_PARTITION": settings["ingest.partition"],
        "SONAE_INGEST_BATCH_SIZE": "500",
        "SONAE_INGEST_METRICS_PORT": str(metrics_port),
        "SONAE_STATE_DIR": settings["state.dir"],
    }
    return subprocess.Popen([sys.executable, "-m", "app.cli", "ingest"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _wait_subscribed(pool: asyncpg.Pool, settings: Settings, proc: subprocess.Popen[bytes]) -> None:
    """The process is consuming once a probe reading published now is stored."""
    probe = readings_for("probe", 1)
    async def stored() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        await publish_all(settings, [("probe", "level", probe[0][1])])
        return await count(pool, "SELECT count(*) FROM readings WHERE station_id = 'probe'") > 0
    await wait_until(stored, timeout=60, what="ingest process consuming")


async def test_sigkill_mid_stream_loses_nothing(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "k1", "k2", "probe")
    client_id = f"kill-{uuid.uuid4().hex[:6]}"
    metrics_port = free_port()
    proc = _ingest_process(settings, client_id, metrics_port)
    try:
        await _wait_subscribed(pool, settings, proc)
        import aiohttp

        async def ready() -> bool:  # its database check has a 2 s budget: a busy machine may miss it once
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{metrics_port}/readyz") as resp:
                return resp.status == 200

        await wait_until(ready, what="ingest /readyz answering 200")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert "sonae_ingest_messages_acked_total" in await resp.text()
        msgs = [(s, "level", p) for s in ("k1", "k2") for _, p in readings_for(s, 6000)]
        publisher = asyncio.create_task(publish_all(settings, msgs))
        await wait_until(lambda: count(pool, "SELECT count(*) > 1500 FROM readings WHERE station_id <> 'probe'"),
                         what="ingest under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        before = await count(pool, "SELECT count(*) FROM readings WHERE station_id <> 'probe'")
        assert before < 12000, "the kill happened mid-stream"
        await publisher  # the broker queues the rest for the persistent session
        proc = _ingest_process(settings, client_id)
        await wait_until(lambda: count(pool, "SELECT count(*) = 12000 FROM readings WHERE station_id <> 'probe'"),
                         timeout=90, what="all readings after restart")
    finally:
        proc.kill()
        proc.wait(60)
    assert await count(pool, "SELECT count(*) FROM readings WHERE station_id <> 'probe'") == 12000
    assert await count(pool, "SELECT count(*) FROM dead_letters") == 0


@pytest.fixture
async def own_postgres(private_tmp: Path):  # type: ignore[no-untyped-def]
    server = EmbeddedPostgres(private_tmp / "pg", database="postgres")
    (private_tmp / "pg").mkdir()
    server.start()
    yield server
    server.stop()


async def test_postgres_restart_mid_stream(settings: Settings, own_postgres: EmbeddedPostgres) -> None:
    url = own_postgres.url("postgres")
    settings = settings.replace(database__url=url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        await register(pool, "p1")
        msgs = [("p1", "level", p) for _, p in readings_for("p1", 4000)]
        async with running_ingestor(settings, pool) as ingestor:
            await publish_all(settings, msgs[:1000])
            await wait_until(lambda: _processed(ingestor, 1000), what="first part")
            errors_before = _db_errors()  # a process-wide counter: earlier tests may have added to it
            own_postgres.stop()
            publisher = asyncio.create_task(publish_all(settings, msgs[1000:]))
            await wait_until(lambda: _errors_seen(ingestor, errors_before), what="ingestor noticing the outage")
            assert ingestor.client.unacked <= ingestor.client.max_inflight
            own_postgres.start()
            await publisher
            await wait_until(lambda: count(pool, "SELECT count(*) = 4000 FROM readings"), timeout=60,
                             what="all readings after the database came back")
        assert await count(pool, "SELECT count(*) FROM readings") == 4000
    finally:
        await pool.close()


async def _processed(ingestor, n):  # type: ignore[no-untyped-def]
    return ingestor.totals["inserted"] >= n


def _db_errors() -> float:
    from ingest import metrics

    return float(metrics.DB_ERRORS._value.get())


async def _errors_seen(ingestor, before: float):  # type: ignore[no-untyped-def]
    return ingestor.client.unacked > 0 and _db_errors() > before


async def test_broker_restart_mid_stream(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A broker restart loses nothing with the default settings (a plain persistent subscription):
    the second half is published while the ingestor is still reconnecting, and the broker queues it
    for the resumed session."""
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port(), anonymous=True)
    broker.start()
    settings = settings.replace(mqtt__url=broker.url, mqtt__protocol=broker.protocol)
    assert settings["ingest.shared_group"] == "" and settings["ingest.partition"] == ""
    await register(pool, "b1")
    msgs = [("b1", "level", p) for _, p in readings_for("b1", 3000)]
    try:
        async with running_ingestor(settings, pool) as ingestor:
            await publish_all(settings, msgs[:1500])
            broker.stop()
            broker.start()
            await publish_all(settings, msgs[1500:])
            await wait_until(lambda: count(pool, "SELECT count(*) = 3000 FROM readings"), timeout=60,
                             what="all readings after the broker restart")
            assert ingestor.client.sessions == 1, "the session was resumed, not begun anew"
    finally:
        broker.stop()
    assert await count(pool, "SELECT count(*) FROM readings") == 3000
