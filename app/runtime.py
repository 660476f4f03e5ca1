"""Running Sonae's processes: backing services (embedded or configured), the database pool, and the
long-running roles (ingest, api, simulator) with a clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg

from ingest.schema import prepare_schema
from sonae import db
from sonae.config import ConfigError, Settings
from sonae.db import ensure_database
from sonae.embedded import EmbeddedBroker, EmbeddedPostgres
from sonae.workers import run_until_stopped

__all__ = ["BackingServices", "ensure_database", "open_pool", "prepare_schema", "run_until_stopped",
           "stop_event_on_signals", "supervise"]

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
            from alerting.worker import alert_topic_root
            from app.provisioning import embedded_broker_auth

            prefix = settings["mqtt.topic_prefix"]
            auth = embedded_broker_auth(state, prefix=prefix, alerts_prefix=alert_topic_root(prefix))
            self.broker = EmbeddedBroker(state, port=settings["embedded.mqtt_port"], auth=auth,
                                         host=settings["embedded.mqtt_host"])
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


async def open_pool(settings: Settings, *, wait_s: float = 30.0, migrate_schema: bool = False,
                    create: bool = True) -> asyncpg.Pool:
    """Connect (see :func:`sonae.db.open_pool`), applying migrations and seed data first if ``migrate_schema``."""
    prepare = functools.partial(prepare_schema, settings=settings) if migrate_schema else None
    return await db.open_pool(settings, wait_s=wait_s, create=create, prepare=prepare)


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
