"""Running Sonae's processes: backing services (embedded or configured), the database pool, and the
long-running roles (ingest, api, simulator) with a clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sonae.config import ConfigError, Settings
from sonae.embedded import EmbeddedBroker, EmbeddedPostgres
from sonae.migrations import migrate
from sonae.retry import Backoff, count_failure

log = logging.getLogger("sonae.runtime")


class BackingServices:
    """PostgreSQL and the MQTT broker: the configured ones, or embedded ones started here."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None

    def start(self, *, need_broker: bool = True, create: bool = True) -> Settings:
        """Start what is not configured; returns the settings with every URL filled in.

        With ``create=False`` (administrative commands) an embedded PostgreSQL is only started when the
        state directory already holds one: a command run from the wrong folder must not create a new,
        empty deployment beside the real one.

        Raises
        ------
        ConfigError
            ``create=False`` and the state directory holds no database; the message names the folder
            and how to point at the right one.
        """
        settings = self.settings
        state = settings.state_dir
        changes: dict[str, object] = {}
        if settings["database.url"] is None:
            if not create and not EmbeddedPostgres(state).initialised:
                raise ConfigError(
                    f"no Sonae database in the state directory {state} (from {settings.origin('state.dir')}); "
                    "run this command where the service runs, or pass --state-dir / set SONAE_STATE_DIR or "
                    "SONAE_DATABASE_URL to the deployment's; `sonae status` shows what a command would use, "
                    "and `sonae db migrate` creates a new database on purpose")
            state.mkdir(parents=True, exist_ok=True)
            self.postgres = EmbeddedPostgres(state)
            changes["database__url"] = self.postgres.start()
        if settings["mqtt.url"] is None and need_broker:
            state.mkdir(parents=True, exist_ok=True)
            self.broker = EmbeddedBroker(state, port=settings["embedded.mqtt_port"])
            changes["mqtt__url"] = self.broker.start()
            if self.broker.protocol != "5":
                changes["mqtt__protocol"] = self.broker.protocol
                changes["ingest__shared_group"] = ""  # amqtt has no shared subscriptions
        return settings.replace(**changes) if changes else settings

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def ensure_database(url: str, *, create: bool = True) -> None:
    """Create the database named in ``url`` when the server lacks it (``create=False``: refuse instead).

    Raises
    ------
    ConfigError
        The database is missing and ``create`` is false.
    """
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    try:
        conn = await asyncpg.connect(url)
        await conn.close()
        return
    except asyncpg.InvalidCatalogNameError:
        if not create:
            raise ConfigError(
                f"the database {name!r} does not exist on the configured server; check SONAE_DATABASE_URL, "
                "or create it on purpose with `sonae db migrate`") from None
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        log.info("database created", extra={"database": name})
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()


async def open_pool(settings: Settings, *, wait_s: float = 30.0, migrate_schema: bool = False,
                    create: bool = True) -> asyncpg.Pool:
    """Connect (waiting up to ``wait_s`` for the server), optionally applying migrations first.

    ``create=False`` refuses to create a missing database (administrative commands); see
    :func:`ensure_database`.
    """
    url = settings["database.url"]
    deadline = asyncio.get_running_loop().time() + wait_s
    backoff = Backoff(base=0.2, cap=2.0)
    while True:
        try:
            await ensure_database(url, create=create)
            pool = await asyncpg.create_pool(url, min_size=1, max_size=settings["database.pool_size"])
            break
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            count_failure("postgres")
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(f"cannot reach PostgreSQL: {exc}") from exc
            await asyncio.sleep(backoff.next_delay())
    assert pool is not None
    if migrate_schema:
        try:
            await prepare_schema(pool, settings)
        except BaseException:
            await pool.close()
            raise
    return pool


async def prepare_schema(pool: asyncpg.Pool, settings: Settings) -> list[str]:
    """Apply pending migrations and the retention setting; returns the migrations applied."""
    async with pool.acquire() as conn:
        applied = await migrate(conn)
        from ingest.retention import apply_retention_policy

        await apply_retention_policy(conn, days=settings["database.retention_days"])
        from ingest.boundaries import seed_if_empty as seed_boundaries
        from ingest.municipalities import seed_if_empty as seed_municipalities

        # an empty database gets the shipped municipality list and boundaries (issue #14)
        seeded = {"municipalities": await seed_municipalities(conn), "boundaries": await seed_boundaries(conn)}
    if any(seeded.values()):
        log.info("municipality data loaded from the package", extra=seeded)
    if applied:
        log.info("schema migrated", extra={"applied": len(applied)})
    return applied


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (the first one; a second SIGINT aborts)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, event.set)
    return event


async def supervise(tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]], stop: asyncio.Event,
                    on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run named coroutines until ``stop`` is set or one of them fails; then stop them all."""
    running: dict[asyncio.Task[None], str] = {asyncio.create_task(factory(), name=name): name for name, factory in tasks.items()}
    stopper = asyncio.create_task(stop.wait(), name="stop")
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                failure = task.exception()
                log.error("%s failed", task.get_name(), exc_info=failure)
    finally:
        if on_stop is not None:
            await on_stop()
        for task in running:
            task.cancel()
        stopper.cancel()
        await asyncio.gather(*running, stopper, return_exceptions=True)
    if failure is not None:
        raise failure


async def run_until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event,
                            on_stop: Callable[[], None]) -> None:
    """Run ``work`` until it ends (its error raised) or ``stop`` is set; then ``on_stop()`` and wait."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
    finally:
        on_stop()
        stopper.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
