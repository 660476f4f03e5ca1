"""The rules worker: the one place where each station's readings are evaluated in reading-time order.

Several ingestors share the MQTT stream (a station's readings are split between them), so rules with
memory cannot live in an ingestor. Instead exactly one worker is active at a time:

* **Election.** The worker holds ``pg_try_advisory_lock(RULES_LOCK)`` on a dedicated connection; run
  one in every ``sonae run``/``sonae ingest`` process and the others wait as hot standbys, taking over
  within ``lock_retry_s`` when the leader's connection goes.
* **Streaming, not polling.** The leader LISTENs on ``sonae_readings`` (ingest NOTIFYs after every
  committed batch) and reads the committed readings whose ``received_at`` is past its watermark. A
  sweep every ``sweep_s`` only covers a lost notification.
* **The watermark is safe against slow commits.** ``received_at`` is the writing transaction's start
  time (``now()``), so a batch can commit *after* a later-started one. The watermark therefore advances
  only to the start of the oldest transaction still open in the database (``pg_stat_activity``), never
  past rows that may still appear — however long that transaction stays open (a long one costs
  re-reading, reported by ``sonae_alert_rules_watermark_lag_seconds`` and a warning after
  ``max_lag_s``, but never a skipped reading). The horizon is read *before* the snapshot the readings
  are read from, so a writer that commits in between is either seen open (horizon held) or its rows are
  in the snapshot. Rows read twice are skipped (in memory, and by the rule state itself).
* **State in the database.** Each (station, exercise) stream's :class:`~alerting.rules.StationRules`
  state is stored as JSON in ``rule_state`` with the alert changes, in one transaction, so a new leader
  continues exactly where the old one stopped.
* **Late readings re-evaluate, they do not flap.** A level reading older than the last one evaluated
  makes the worker take the newest checkpoint (``rule_checkpoints``, one per ``checkpoint_every_s`` of
  reading time) before it, replay the stored readings from there in time order, and apply only the *net*
  difference to the open alerts — each net change with the rule, stage and threshold of the replayed
  transition that decided it (:func:`~alerting.rules.reconcile`), so its texts say what happened.
* **Step-down by time.** Every ``silent_check_s`` (with the silent-gauge check) each stream with an open
  river-level alert is ticked at the wall clock (:meth:`~alerting.rules.StationRules.tick`), so a
  report-by-exception gauge that stops sending while its last value is below the line is lowered after
  the dwell instead of holding its level until its next reading. A replay after a late reading ticks to
  the same time, so it does not undo the step-down.
* **Silent stations** are checked every ``silent_check_s`` by :func:`alerting.silence.station_silence`,
  the query the staff console shows too: a registered station without a reading of any kind for
  ``silent_factor`` (setting ``alerting.silent_factor``) × its ``expected_interval_s`` — counted from
  the start of its stream (registration, or the later switch of its exercise flag) if it has not reported
  in it since — raises a staff alert; data clears it (rule:
  :func:`alerting.rules.is_silent`). Every pass therefore reads readings of all kinds: the rules are fed
  the kinds they judge, and ``rule_state.last_ts`` keeps the newest reading of any kind per stream.
* **Open alerts follow the registry** (:meth:`~RulesWorker.follow_registry`), at once when the ``stations``
  trigger announces a change and with every silent check: a stream that stopped existing (a station
  switched to or from exercise, or deleted) has its open alerts cleared and its state dropped, a station
  moved to another municipality takes its open alerts of every condition along (event ``moved``), and a
  stream whose ladder changed (thresholds, ``gauge_type``, ``kind``) has its level judged again. An exercise
  station's real readings are not judged: it has no real stream (its real alerts end once
  ``exercise_grace_s`` have passed since the switch — switched back within them, they go on unchanged — and
  its real stream is then parked, and judged again if it is real again while its readings are fresh). A
  reading is judged under the registration it arrived under (``stations.exercise_since``,
  :meth:`~RulesWorker._eligible`), whatever the order the worker sees the reading and the switch in: a
  real reading that arrived before a switch to exercise is judged as real.
* **Outputs** after each commit: the alert tables and NOTIFY ``sonae_alerts`` (in the transaction),
  and a retained MQTT message per active alert on ``{root}/alerts/{municipality}/{alert_id}`` (cleared
  alerts publish their last state once and then remove the retained message; an alert moved to another
  municipality has its retained message under the old one removed). The topic root is the
  device prefix's parent (``sonae/v1`` → ``sonae/alerts``), outside the tree ingestors subscribe to.
  Unconfirmed alerts (a reading beyond the gauge's plausible rate) are never published there: they are
  for staff (API, console) until the next reading confirms them.
* **Per-gauge rules**: the registry's ``max_rate_m_per_h`` overrides the plausible rate; an exercise
  stream of a station with ``exercise_time_scale`` > 1 runs the rules on the scenario's faster clock
  (:meth:`~alerting.rules.RuleConfig.scaled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from alerting import store
from alerting.levels import Step, ladder, threshold_of
from alerting.rules import (
    HEALTH_KINDS,
    IMPLAUSIBLE,
    RIVER,
    SILENT,
    SILENT_FACTOR,
    UNCONFIRMED,
    Reading,
    RuleConfig,
    StationRules,
    Transition,
    reconcile,
)
from alerting.silence import station_silence
from alerting.texts import ENDED_EXERCISE, ENDED_REAL, REJUDGED, REMOVED, RESUMED
from ingest.registry import THRESHOLD_FIELDS
from ingest.store import NOTIFY_CHANNEL as READINGS_CHANNEL
from sonae.config import Settings
from sonae.db import DATABASE_ERRORS
from sonae.mqtt import MqttClient, default_client_id
from sonae.retry import count_failure

log = logging.getLogger("sonae.alerting")

#: seconds of received readings every pass reads again (see ``step``)
OVERLAP_S = 2.0

RULES_LOCK = 0x534E_414C  # "SNAL"
#: (the reasons of alerts cleared or changed by a registry change, REMOVED, ENDED_EXERCISE, ENDED_REAL and
#: REJUDGED, are alerting.texts', which words those alerts as withdrawn, never as an all-clear)
#: how far back cleared alerts are cleared again on MQTT when the publisher (re)connects
REPUBLISH_CLEARED = timedelta(days=7)
#: the reading kinds the rules judge (every kind is read: any reading is a sign of life, see ``check_silent``)
KINDS = ("level", *HEALTH_KINDS)

PASSES = Histogram("sonae_alert_rules_pass_seconds", "Time of one rules pass",
                   buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
CHANGES = Counter("sonae_alert_changes_total", "Alert changes made by the rules worker", ["kind"])
LATE = Counter("sonae_alert_late_reevaluations_total", "Stations re-evaluated for late readings")
ACTIVE_ALERTS = Gauge("sonae_alerts_active", "Active alerts by 警戒レベル (set by the rules leader)", ["level", "exercise"])
WATERMARK_LAG = Gauge("sonae_alert_rules_watermark_lag_seconds",
                      "How far the rules worker's reading watermark is behind the clock (held by open transactions)")
SILENT_GAUGES = Gauge("sonae_alerts_silent_gauges", "Gauges with an open silent-gauge alert (set by the rules leader)")
UNCONFIRMED_ALERTS = Gauge("sonae_alerts_unconfirmed",
                           "Open unconfirmed river-level alerts: readings beyond the gauge's plausible rate (rules leader)")


def alert_topic_root(device_prefix: str) -> str:
    parent = device_prefix.rsplit("/", 1)[0] if "/" in device_prefix else device_prefix
    return f"{parent}/alerts"


@dataclass
class _Station:
    id: str
    municipality_code: str | None
    expected_interval_s: int
    exercise: bool
    steps: tuple[Any, ...]
    max_rate_m_per_h: float | None = None
    exercise_time_scale: float = 1.0
    #: ``kind/gauge_type`` of the station: what its ladder is of (:func:`_ladder_of`)
    gauge: str = "river_level/flood_forecast"
    #: when the station's exercise flag last changed (``stations.exercise_since``; None: never since it was
    #: registered): a real station's readings that arrived before it are not its (:meth:`RulesWorker._eligible`)
    exercise_since: datetime | None = None
    #: the stage at or below which a reading is 欠測 (``stations.missing_at_or_below``; None: no sentinel)
    missing_at_or_below: float | None = 0.0


#: the station columns the worker reads (``_stations``); exercise_since -infinity (never changed) is NULL
_STATION_COLUMNS = ("id, municipality_code, expected_interval_s, exercise, kind, gauge_type, max_rate_m_per_h, "
                    "exercise_time_scale, nullif(exercise_since, '-infinity'::timestamptz) AS exercise_since, missing_at_or_below, "
                    + ", ".join(THRESHOLD_FIELDS))


def _ladder_of(row: Any) -> tuple[Step, ...]:
    """A station's ladder (:func:`alerting.levels.ladder`) from its row: a river-level gauge's by its
    ``gauge_type``; a station of another ``kind`` (rain gauge, device, gateway) judges no river level."""
    return ladder(row["gauge_type"] if row["kind"] == "river_level" else "none", dict(row))


def _gauge_of(row: Any) -> str:
    return f"{row['kind']}/{row['gauge_type']}"


class RulesWorker:
    """Evaluate the alert rules on committed readings. Run with :meth:`run`; stop with :meth:`stop`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        mqtt_url: str | None = None,
        mqtt_protocol: str = "5",
        topic_root: str = "sonae/alerts",
        config: RuleConfig | None = None,
        silent_factor: float = SILENT_FACTOR,
        silent_check_s: float = 30.0,
        sweep_s: float = 5.0,
        lock_retry_s: float = 2.0,
        checkpoint_every_s: float = 600.0,
        initial_lookback: timedelta = timedelta(days=1),
        max_lag_s: float = 30.0,
        exercise_grace_s: float = 600.0,
    ) -> None:
        self.pool = pool
        self.mqtt_url = mqtt_url
        self.mqtt_protocol = mqtt_protocol
        self.topic_root = topic_root
        self.config = config or RuleConfig()
        self.silent_factor = silent_factor
        self.silent_check_s = silent_check_s
        self.sweep_s = sweep_s
        self.lock_retry_s = lock_retry_s
        self.checkpoint_every_s = checkpoint_every_s
        self.initial_lookback = initial_lookback
        self.max_lag_s = max_lag_s
        self.exercise_grace_s = exercise_grace_s
        self.is_leader = asyncio.Event()
        #: set once this worker, as leader, has made its first whole pass (registry followed, readings
        #: judged, silent stations checked, states ticked to now); cleared when it stops leading
        self.first_pass_done = asyncio.Event()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._watermark: datetime | None = None
        self._lag_warned = float("-inf")
        self._seen: dict[tuple[str, str, bool, datetime], datetime] = {}
        self._mqtt: MqttClient | None = None
        self._mqtt_connecting: asyncio.Task[None] | None = None
        self._published_connection = 0  # the publisher connection the full alert state was sent on
        self._to_publish: set[int] = set()
        self._configs: dict[tuple[int, float | None, float, float | None], RuleConfig] = {}
        self._registry_changed = False  # a registry change was announced (NOTIFY 'names'): follow_registry
        self.passes = 0

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> RulesWorker:
        overrides.setdefault("config", RuleConfig(max_rate_m_per_h=settings["alerting.max_rate_m_per_h"]))
        overrides.setdefault("silent_factor", settings["alerting.silent_factor"])
        overrides.setdefault("exercise_grace_s", settings["alerting.exercise_grace_s"])
        return cls(pool, mqtt_url=settings["mqtt.url"], mqtt_protocol=settings["mqtt.protocol"],
                   topic_root=alert_topic_root(settings["mqtt.topic_prefix"]), **overrides)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # -- life cycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Wait for leadership, then evaluate until :meth:`stop` (re-electing after a lost connection)."""
        while not self._stop.is_set():
            try:
                await self._lead()
            except DATABASE_ERRORS as exc:
                count_failure("postgres-listen")
                log.warning("rules worker lost its database connection; re-electing", extra={"error": str(exc)})
                self.is_leader.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.lock_retry_s)

    async def _lead(self) -> None:
        async with self.pool.acquire() as conn:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RULES_LOCK):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.lock_retry_s)
                if self._stop.is_set():
                    return
            lost = asyncio.Event()

            def on_notify(*_: Any) -> None:
                self._wake.set()

            def on_alert(_c: Any, _pid: int, _channel: str, payload: str) -> None:
                if payload == store.NAMES_CHANGED:  # the registry changed: open alerts may have to follow
                    self._registry_changed = True
                    self._wake.set()
                    return
                if not self.mqtt_url:
                    return
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self._to_publish.add(int(json.loads(payload)["alert_id"]))
                    self._wake.set()

            def on_lost(*_: Any) -> None:
                lost.set()
                self._wake.set()

            conn.add_termination_listener(on_lost)
            await conn.add_listener(READINGS_CHANNEL, on_notify)
            # every alert change (rules, orders, acks) is published from here; registry changes are followed
            await conn.add_listener(store.NOTIFY_CHANNEL, on_alert)
            log.info("rules worker is the leader")
            await self._open_mqtt()
            self.is_leader.set()
            try:
                next_silent = 0.0
                self._registry_changed = True  # changes while no worker led
                self._wake.set()
                while not self._stop.is_set() and not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.sweep_s)
                    self._wake.clear()
                    if self._stop.is_set() or lost.is_set():
                        break
                    if self._registry_changed:  # before the readings: their changes go to the moved alerts
                        self._registry_changed = False
                        await self.follow_registry(conn)
                    await self.step(conn)
                    if time.monotonic() >= next_silent:
                        await self.follow_registry(conn)  # also after a lost notification
                        await self.check_silent(conn)
                        await self.tick(conn)
                        await self.update_gauges(conn)
                        next_silent = time.monotonic() + self.silent_check_s
                        self.first_pass_done.set()
                    await self._publish(conn)
            finally:
                self.is_leader.clear()
                self.first_pass_done.clear()
                with contextlib.suppress(Exception):
                    await conn.remove_listener(READINGS_CHANNEL, on_notify)
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.NOTIFY_CHANNEL, on_alert)
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock($1)", RULES_LOCK)
                await self._close_mqtt()
            if lost.is_set():
                raise OSError("rules worker connection lost")

    async def _open_mqtt(self) -> None:
        """Start connecting the alert publisher; it retries with backoff from the first attempt
        (:mod:`sonae.retry`), so a broker that is down at election is used as soon as it is up."""
        if not self.mqtt_url:
            return
        client = MqttClient(self.mqtt_url, client_id=default_client_id("alerts"), protocol=self.mqtt_protocol,
                            target="mqtt-alerts")
        self._mqtt = client
        self._published_connection = 0

        async def connect() -> None:
            try:
                await client.connect()
            except Exception as exc:  # a refusal (credentials): the database stays the source of truth
                log.error("rules worker cannot publish alerts on MQTT", extra={"error": str(exc)})
                return
            self._wake.set()  # publish the whole state now

        self._mqtt_connecting = asyncio.create_task(connect())

    async def _close_mqtt(self) -> None:
        if self._mqtt_connecting is not None:
            self._mqtt_connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._mqtt_connecting
            self._mqtt_connecting = None
        if self._mqtt is not None:
            if self._mqtt.is_connected:
                with contextlib.suppress(Exception):
                    await self._mqtt.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self._mqtt.close()
            self._mqtt = None

    # -- one pass --------------------------------------------------------------------------------
    async def _load_watermark(self, conn: asyncpg.Connection) -> datetime:
        if self._watermark is None:
            stored = await conn.fetchval("SELECT received_at FROM rule_watermark")
            self._watermark = stored or (await conn.fetchval("SELECT now()") - self.initial_lookback)
        return self._watermark

    async def update_gauges(self, conn: asyncpg.Connection) -> None:
        """Refresh the active-alert and silent-gauge metrics from the alerts table."""
        rows = await conn.fetch("""SELECT coalesce(level, 0) AS level, exercise, count(*) AS n FROM alerts
                                   WHERE cleared_at IS NULL AND condition NOT IN ('silent', $1) GROUP BY 1, 2""",
                                UNCONFIRMED)
        for level in range(0, 6):
            for exercise in (False, True):
                ACTIVE_ALERTS.labels(str(level), str(exercise).lower()).set(0)
        for r in rows:
            ACTIVE_ALERTS.labels(str(r["level"]), str(r["exercise"]).lower()).set(r["n"])
        SILENT_GAUGES.set(await conn.fetchval(
            "SELECT count(*) FROM alerts WHERE cleared_at IS NULL AND condition = 'silent' AND NOT exercise"))
        UNCONFIRMED_ALERTS.set(await conn.fetchval(
            "SELECT count(*) FROM alerts WHERE cleared_at IS NULL AND condition = $1 AND NOT exercise", UNCONFIRMED))

    async def step(self, conn: asyncpg.Connection) -> int:
        """Evaluate every committed reading past the watermark. Returns the number of alert changes."""
        started = time.perf_counter()
        watermark = await self._load_watermark(conn)
        # The horizon first, in its own statement: every row with received_at below it belongs to a
        # transaction that had ended by then, so the snapshot taken afterwards holds all of them. (Read
        # after the snapshot, a writer committing in between would be neither open nor visible.)
        snap = await conn.fetchrow(
            """SELECT clock_timestamp() AS now,
                      (SELECT min(xact_start) FROM pg_stat_activity
                       WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
                         AND datname = current_database() AND backend_type = 'client backend') AS oldest""")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(
                """SELECT station_id, kind, exercise, ts, value, received_at FROM readings
                   WHERE received_at >= $1 ORDER BY station_id, exercise, ts""", watermark)
        # The horizon also stays OVERLAP_S behind the clock: a writer's now() is the time its first
        # statement arrived, a moment before it shows in pg_stat_activity; re-reading that short window
        # costs little, since rows already evaluated are in ``_seen``. An open transaction holds the
        # horizon for as long as it stays open: its rows may still appear with that start time.
        horizon = snap["now"] - timedelta(seconds=OVERLAP_S)
        if snap["oldest"] is not None:
            horizon = min(horizon, snap["oldest"])
        lag = (snap["now"] - horizon).total_seconds()
        WATERMARK_LAG.set(lag)
        if lag > self.max_lag_s and time.monotonic() >= self._lag_warned + 60:
            self._lag_warned = time.monotonic()
            log.warning("an open transaction holds the rules watermark back; readings since then are read again "
                        "every pass until it ends", extra={"lag_s": round(lag, 1), "since": horizon.isoformat()})
        fresh: dict[tuple[str, bool], list[asyncpg.Record]] = defaultdict(list)
        for r in rows:
            key = (r["station_id"], r["kind"], r["exercise"], r["ts"])
            if key in self._seen:
                continue
            self._seen[key] = r["received_at"]
            fresh[(r["station_id"], r["exercise"])].append(r)
        changes = await self._evaluate(conn, fresh) if fresh else []
        new_mark = max(watermark, horizon)
        if new_mark != watermark:
            self._watermark = new_mark
            self._seen = {k: v for k, v in self._seen.items() if v >= new_mark}
            await conn.execute(
                """INSERT INTO rule_watermark (id, received_at) VALUES (true, $1)
                   ON CONFLICT (id) DO UPDATE SET received_at = EXCLUDED.received_at""", new_mark)
        self.passes += 1
        PASSES.observe(time.perf_counter() - started)
        return len(changes)

    async def _stations(self, conn: asyncpg.Connection, ids: list[str]) -> dict[str, _Station]:
        rows = await conn.fetch(f"SELECT {_STATION_COLUMNS} FROM stations WHERE id = ANY($1::text[])", ids)
        return {r["id"]: _Station(r["id"], r["municipality_code"], r["expected_interval_s"], r["exercise"],
                                  _ladder_of(r), r["max_rate_m_per_h"], r["exercise_time_scale"], _gauge_of(r),
                                  r["exercise_since"], r["missing_at_or_below"]) for r in rows}

    @staticmethod
    def _eligible(st: _Station, exercise: bool, received_at: datetime) -> bool:
        """Was a reading of the ``exercise`` stream that arrived at ``received_at`` the station's to judge?

        The rule (of live readings, late replays and re-judging alike): a reading is judged under the
        registration it arrived under, whenever the worker comes to it. Real readings are judged as real
        if they arrived while the station was real: on a real station, those that arrived since its exercise
        flag last changed (``stations.exercise_since``; those before were drills of an exercise station);
        on an exercise station, those that arrived *before* the switch to exercise (real readings the worker
        had not judged yet when the switch came: judged as real all the same, see :meth:`_evaluate`), never
        those since. Exercise readings: an exercise station judges its exercise stream whatever came before;
        a real station only those that arrived since its flag changed (the drills of the exercise registration
        ended with it, :data:`ENDED_REAL`; a drill on the real gauge is a new exercise stream).

        The registry keeps only the *last* change of the flag: on a station switched more than once before the
        worker read a reading, the registration it arrived under is taken to be the one before the last change.
        """
        if st.exercise_since is None:  # never changed: every reading arrived under this registration
            return exercise or not st.exercise
        if exercise and st.exercise:
            return True
        return (received_at >= st.exercise_since) != (st.exercise and not exercise)

    def _machine(self, st: _Station, exercise: bool, state: dict[str, Any] | None) -> StationRules:
        """The station's rules: its interval and plausible rate; an exercise stream of an exercise station on
        the scenario's clock (``exercise_time_scale``; real streams, and a real gauge's drills, run on real time)."""
        scale = st.exercise_time_scale if exercise and st.exercise else 1.0  # the scenario's, while it is one
        key = (st.expected_interval_s, st.max_rate_m_per_h, scale, st.missing_at_or_below)
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = (self.config.for_interval(st.expected_interval_s)
                                           .for_gauge(max_rate_m_per_h=st.max_rate_m_per_h,
                                                      missing_at_or_below=st.missing_at_or_below).scaled(scale))
        return StationRules(st.steps, config, state)

    async def _evaluate(self, conn: asyncpg.Connection,
                        fresh: dict[tuple[str, bool], list[asyncpg.Record]]) -> list[store.AlertChange]:
        stations = await self._stations(conn, sorted({s for s, _ in fresh}))
        # an exercise station has no real stream: its real readings are drills and never raise a real alert
        # (follow_registry ends what a real stream left open when the station became one)
        # (real readings that arrived before the station's switch to exercise are real: judged, see _eligible)
        drills = sorted(k[0] for k in fresh if k[0] in stations and not k[1] and stations[k[0]].exercise
                        and any(not self._eligible(stations[k[0]], False, r["received_at"]) for r in fresh[k]))
        if drills:
            log.warning("real readings of exercise stations are not judged: mark them exercise, or register "
                        "the station as a real one", extra={"stations": drills})
        keys = [k for k in fresh if k[0] in stations and (
            k[1] or not stations[k[0]].exercise
            or any(self._eligible(stations[k[0]], False, r["received_at"]) for r in fresh[k]))]
        states = {(r["station_id"], r["exercise"]): json.loads(r["state"]) for r in await conn.fetch(
            """SELECT station_id, exercise, state FROM rule_state
               WHERE (station_id, exercise) IN (SELECT * FROM unnest($1::text[], $2::bool[]))""",
            [k[0] for k in keys], [k[1] for k in keys])}
        changes: list[store.AlertChange] = []
        state_rows: list[tuple[str, bool, str, datetime]] = []
        checkpoints: list[tuple[str, bool, datetime, str]] = []
        async with conn.transaction():
            for key in keys:
                st = stations[key[0]]
                stored = states.get(key) or {}
                parked = "parked" in stored and not key[1] and st.exercise
                machine = self._machine(st, key[1], None if parked else stored.get("machine"))
                every = [Reading(r["kind"], r["ts"].timestamp(), r["value"]) for r in fresh[key]]
                # a sign of life whatever it is (last_any_ts), but judged only under the registration it arrived under
                readings = sorted((Reading(r["kind"], r["ts"].timestamp(), r["value"]) for r in fresh[key]
                                   if r["kind"] in KINDS and self._eligible(st, key[1], r["received_at"])),
                                  key=lambda r: r.ts)
                late = [r for r in readings if machine.is_late(r)]
                prev_ts = machine.state.last_ts
                cp_ts = stored.get("cp_ts")
                if prev_ts is not None and not late and not parked and (cp_ts is None or prev_ts - cp_ts >= self.checkpoint_every_s):
                    checkpoints.append((key[0], key[1], store.to_dt(prev_ts), json.dumps(machine.to_json())))
                    cp_ts = prev_ts
                if late and not parked:
                    machine, transitions = await self._reevaluate(conn, st, key[1], machine, min(r.ts for r in late))
                elif parked:
                    # the real stream of a station switched to exercise was parked (follow_registry) before these
                    # real readings of before the switch were read: judged with what it held, as they would have
                    # been had the worker come to them first; its alerts end with the switch (below)
                    machine, transitions = self._judge_parked(st, stored["parked"], readings)
                else:
                    transitions = machine.feed_all(r for r in readings if not machine.is_duplicate(r))
                # the newest reading of any kind: the silent-station check's input (alerting.silence)
                last_ts = max([r.ts for r in every] + [stored.get("last_any_ts") or 0.0])
                for t in transitions:
                    change = await store.apply_transition(conn, station_id=key[0], municipality_code=st.municipality_code,
                                                          exercise=key[1], t=t)
                    if change is not None:
                        changes.append(change)
                        CHANGES.labels(change.kind).inc()
                # the registry it was judged with: kept until follow_registry has followed a change
                # (a real stream is judged only from readings of a real registration: of a station switched to
                # exercise since, follow_registry ends its alerts and parks it)
                registry = stored.get("registry") or _registry_stamp(st.exercise and key[1], st.steps, st.gauge)
                if parked:  # ended as the switch to exercise ends a real stream's alerts, and parked again
                    for change in await self._end_real_alerts(conn, st.id, max(r.ts for r in every)):
                        changes.append(change)
                        CHANGES.labels(change.kind).inc()
                    state_rows.append((key[0], key[1], json.dumps({
                        "parked": _eligible_points(machine), "last_any_ts": last_ts, "registry": registry}),
                        store.to_dt(last_ts)))
                    continue
                state_rows.append((key[0], key[1], json.dumps({"machine": machine.to_json(), "cp_ts": cp_ts,
                                                               "last_any_ts": last_ts, "registry": registry}),
                                   store.to_dt(last_ts)))
            if checkpoints:
                await conn.execute(
                    """INSERT INTO rule_checkpoints (station_id, exercise, ts, state)
                       SELECT * FROM unnest($1::text[], $2::bool[], $3::timestamptz[], $4::jsonb[])
                       ON CONFLICT DO NOTHING""", *map(list, zip(*checkpoints, strict=True)))
            if state_rows:
                await conn.execute(
                    """INSERT INTO rule_state (station_id, exercise, state, last_ts, updated_at)
                       SELECT s, e, st, ts, now() FROM unnest($1::text[], $2::bool[], $3::jsonb[], $4::timestamptz[])
                           AS u(s, e, st, ts)
                       ON CONFLICT (station_id, exercise) DO UPDATE SET state = EXCLUDED.state,
                           last_ts = greatest(rule_state.last_ts, EXCLUDED.last_ts), updated_at = now()""",
                    *map(list, zip(*state_rows, strict=True)))
        return changes

    def _judge_parked(self, st: _Station, points: list[list[float]],
                      readings: list[Reading]) -> tuple[StationRules, list[Transition]]:
        """A parked real stream (``points``: ``[[ts, m], …]``, :func:`_eligible_points`) judged with real
        ``readings`` that arrived before the switch to exercise: the machine fed both in time order, and the
        net transitions from the level the parked readings alone show (dated by the newest reading), each with
        the rule, stage and threshold that decided it (:func:`alerting.rules.reconcile`)."""
        held = self._machine(st, False, None)
        held.feed_all(Reading("level", float(t), float(v)) for t, v in sorted(points))
        machine = self._machine(st, False, None)
        known = {float(t) for t, _ in points}
        decided = machine.feed_all(sorted([Reading("level", float(t), float(v)) for t, v in points]
                                          + [r for r in readings if r.ts not in known or r.kind != "level"],
                                          key=lambda r: r.ts))
        ts = max([r.ts for r in readings] + [float(t) for t, _ in points])
        # each net change with the rule, stage and threshold that decided it (alerting.rules.reconcile)
        return machine, reconcile(held.open_conditions(), machine.open_conditions(), ts=ts, decided=decided,
                                  ended=[*machine.standing(), *machine.settled(held.state.pending, held.state.unconfirmed)])

    @staticmethod
    async def _end_real_alerts(conn: asyncpg.Connection, station_id: str, ts: float) -> list[store.AlertChange]:
        """End the open real alerts of an exercise station (:data:`ENDED_EXERCISE`, as :meth:`follow_registry`
        step 1 does), dated ``ts`` (s). Call in a transaction."""
        out = []
        for r in await conn.fetch("""SELECT id, condition, level FROM alerts WHERE station_id = $1 AND NOT exercise
                                     AND cleared_at IS NULL AND order_id IS NULL ORDER BY id""", station_id):
            t = Transition(r["condition"], r["level"], None, ts, None, None, ENDED_EXERCISE)
            change = await store.apply_transition(conn, station_id=station_id, municipality_code=None, exercise=False,
                                                  t=t, alert_id=r["id"])
            if change is not None:
                out.append(change)
        return out

    async def _reevaluate(self, conn: asyncpg.Connection, st: _Station, exercise: bool, current: StationRules,
                          since: float) -> tuple[StationRules, list[Transition]]:
        """Replay the station from the newest checkpoint before ``since``; return the net transitions."""
        LATE.inc()
        cp = await conn.fetchrow(
            """SELECT ts, state FROM rule_checkpoints WHERE station_id = $1 AND exercise = $2 AND ts < $3
               ORDER BY ts DESC LIMIT 1""", st.id, exercise, store.to_dt(since))
        if cp is not None:
            machine = self._machine(st, exercise, json.loads(cp["state"]))
            start = cp["ts"]
        else:
            machine = self._machine(st, exercise, None)
            start = store.to_dt(since) - timedelta(seconds=machine.config.buffer_s)
        rows = [r for r in await conn.fetch(
            """SELECT kind, ts, value, received_at FROM readings WHERE station_id = $1 AND exercise = $2 AND ts > $3
               AND kind = ANY($4::text[]) ORDER BY ts""", st.id, exercise, start, list(KINDS))
                if self._eligible(st, exercise, r["received_at"])]
        # the replay's own transitions say what decided each net change (the rule, the reading's time and stage,
        # the threshold): the net transitions carry them, so the texts say what happened (a trend's level 3 is
        # forecast, a level lowered because its reading was a spike is withdrawn: alerting.rules.reconcile)
        decided = machine.feed_all(Reading(r["kind"], r["ts"].timestamp(), r["value"]) for r in rows)
        if current.state.ticked_to is not None:  # as far as the live state was ticked: no flapping
            decided += machine.tick(current.state.ticked_to)
        await conn.execute("DELETE FROM rule_checkpoints WHERE station_id = $1 AND exercise = $2 AND ts >= $3",
                           st.id, exercise, store.to_dt(since))
        last = rows[-1]["ts"].timestamp() if rows else since
        net = reconcile(current.open_conditions(), machine.open_conditions(), ts=last, decided=decided,
                        ended=[*machine.standing(), *machine.settled(current.state.pending, current.state.unconfirmed)])
        log.info("late reading: station re-evaluated", extra={"station": st.id, "exercise": exercise,
                                                               "changes": len(net)})
        return machine, net

    # -- step-down by time -----------------------------------------------------------------------
    async def tick(self, conn: asyncpg.Connection, *, now: datetime | None = None) -> int:
        """Tick every stream with an open river-level alert at ``now`` (default: the database clock).

        Applies the step-down by time of :mod:`alerting.rules` to gauges that stopped reporting below the
        line. Returns the number of alert changes.
        """
        async with conn.transaction():
            rows = await conn.fetch(
                """SELECT rs.station_id, rs.exercise, rs.state, now() AS now FROM rule_state rs
                   WHERE EXISTS (SELECT 1 FROM alerts a WHERE a.station_id = rs.station_id
                                 AND a.exercise = rs.exercise AND a.condition = $1 AND a.cleared_at IS NULL)
                   FOR UPDATE OF rs""", RIVER)
            if not rows:
                return 0
            stations = await self._stations(conn, sorted({r["station_id"] for r in rows}))
            changes: list[store.AlertChange] = []
            for r in rows:
                st = stations.get(r["station_id"])
                if st is None:
                    continue
                stored = json.loads(r["state"])
                machine = self._machine(st, r["exercise"], stored.get("machine"))
                transitions = machine.tick((now or r["now"]).timestamp())
                for t in transitions:
                    change = await store.apply_transition(conn, station_id=st.id, municipality_code=st.municipality_code,
                                                          exercise=r["exercise"], t=t)
                    if change is not None:
                        changes.append(change)
                        CHANGES.labels(change.kind).inc()
                if not transitions:
                    continue
                stored["machine"] = machine.to_json()
                await conn.execute(
                    """UPDATE rule_state SET state = $3::jsonb, updated_at = now()
                       WHERE station_id = $1 AND exercise = $2""", st.id, r["exercise"], json.dumps(stored))
        if changes:
            log.info("river levels lowered after the dwell without further readings",
                     extra={"changes": len(changes)})
        return len(changes)

    # -- registry changes ------------------------------------------------------------------------
    async def follow_registry(self, conn: asyncpg.Connection) -> int:
        """Make the open alerts and rule states of stations agree with the station registry. Returns the
        number of alert changes.

        Run when the registry announces a change (the ``stations`` trigger's NOTIFY ``names``, migration
        ``025_names_changed``) and with every silent-station check (a notification can be lost). Every
        change comes through here, whoever made it (a registry import, ``PATCH /api/v1/stations/{id}``,
        SQL). In this order:

        1. **A stream that stopped existing is ended.** A (station, exercise) stream exists while the
           station is registered and, for the real stream, while the station is not an exercise station
           (``stations.exercise``: its readings are drills). So its open alerts of every condition are
           cleared (:func:`alerting.store.apply_transition` with the alert's id: a new version, the CAP
           ``Cancel``, event ``cleared``, audit ``alert.cleared``, the alerts notification that drives
           MQTT, push and webhooks), with a reason saying why, and its rule state and checkpoints are
           dropped, so that a stream that exists again later starts afresh (a state still holding the old
           level would never raise it again) — except a real stream switched to exercise, which is
           *parked* (step 3): it keeps only the level readings its rules accepted, without a level:

           * **switched to exercise** (:data:`ENDED_EXERCISE`): the real alerts (``exercise`` false) of an
             exercise station, whenever they are found once ``exercise_grace_s`` (setting
             ``alerting.exercise_grace_s``, default 600 s) have passed since the switch
             (``stations.exercise_since``) — residents must never keep a real alert no reading can clear
             (:meth:`step` does not judge the real readings that arrive after the switch). **Within the
             grace** the real stream is left as it is: its alerts stay open, its state is neither parked nor
             stamped, and a station switched back to real within it goes on with the same alerts — same
             ids, versions and acknowledgements, no ``Cancel`` and no new ``Alert`` sent. Why: a station
             flapping between exercise and real (a mistaken toggle corrected, a registry import and a staff
             edit disagreeing) used to end and raise a real alert each time, with new ids, losing the
             acknowledgements; residents were sent a withdrawal of a flood that was still there, and a
             municipal disaster team must be able to trust that a real alert ends only when the river or a
             deliberate decision ends it. A withdrawal sent and then taken back cannot be unsent; a real alert
             held a few minutes longer for a drill that really began costs little (the drill's own alerts are
             raised meanwhile, and a real alert always decides where it is in force);
           * **switched to real** (:data:`ENDED_REAL`): the exercise alerts of a stream evaluated while
             its station was an exercise station (the registry as the worker last saw it is kept in the
             stream's ``rule_state``), and — whatever that state says (it may predate the switch: a worker
             restarted from an older state, a state lost) — every exercise alert raised before the flag last
             changed (``alerts.created_at`` < ``stations.exercise_since``: raised under the exercise
             registration); its drill stream's state is dropped with them; a later drill on the real gauge starts a new exercise stream, and a
             drill reading of the exercise registration judged only after the switch raises nothing
             (:meth:`_eligible`);
           * **deleted** (:data:`REMOVED`): the open alerts of a station deleted from the registry
             (``station_id`` set NULL by the foreign key), and the rule states of unregistered stations.

           The registry has no other flag that ends a stream (no retired or disabled station: a station
           leaves service by being deleted). Alerts are cleared in the municipality they are in, so the
           ``Cancel`` reaches those who were told, even when the station moved at the same time.
        2. **An open alert follows its station to another municipality** (staff edited its
           ``municipality_code``, or a registry import changed it) — any condition: river level,
           unconfirmed level, battery, fault, silence — (:func:`alerting.store.move_alert`: event
           ``moved``, new version), so the new municipality's staff, lists, feeds and event streams have
           it and the old one's no longer do.

           **Which municipality an alert change is recorded in** is the station's municipality in the
           registry when the worker applies the change — the rule for every condition. Cleared alerts keep
           theirs: an alert raised and cleared in a pass before the move (its readings taken, judged and
           told while the station was registered there) stays recorded in the old municipality, with its
           CAP ``Alert``/``Cancel`` sent for that municipality's area; moving it would rewrite to whom it
           was sent. The registry keeps no history of when a station moved, so a change is never
           attributed by its readings' time: readings evaluated after the move announced (the worker
           follows an announced change before the pass's readings) are recorded in the new one.
        3. **A changed ladder re-judges the level** (:meth:`_judge_again`): a stream whose station's
           ladder (the four 洪水予報 thresholds or the 危機管理型 three, its ``gauge_type``, or its ``kind``:
           only a ``river_level`` station has one) differs from the one it was last judged with gets its
           river level and unconfirmed level judged again under the new ladder, at once, from the stages its
           rules accepted — also on a silent or faulty gauge, whose held level is the judgement of those same
           stages (its ``silent`` alert tells staff they are old): a level cleared has reason :data:`REJUDGED`
           (withdrawn, not the river falling); a level raised, lowered or kept is told by what holds it under the
           new ladder, at the reading that put it in force (``threshold``: reached; ``trend``: forecast;
           :data:`~alerting.rules.HELD`: held while the river falls), with the note :data:`REJUDGED`
           (:data:`RESUMED` below) — a level lowered and held by a threshold its reading reached has reason
           :data:`REJUDGED` itself, worded as reached, never as the river falling (:meth:`_judge_again`); a level
           kept under the new ladder by another rule or threshold (a level 3 reached at 避難判断水位, kept by the
           trend rule once 避難判断水位 is above the
           stage) has its alert updated to the rule and threshold that hold it (an event ``re-evaluated``, a
           CAP ``Update``; :func:`alerting.store.apply_transition`). **A station real again** has its parked
           real stream judged the same way (note :data:`RESUMED`): residents see the level its real
           readings of before the drill show, if they are still fresh, not nothing until the next one.
        """
        changes: list[store.AlertChange] = []

        async def record(change: store.AlertChange | None) -> None:
            if change is not None:
                changes.append(change)
                CHANGES.labels(change.kind).inc()

        async with conn.transaction():
            now: datetime = await conn.fetchval("SELECT now()")
            # a switch to exercise ends real alerts only once the grace has passed since it (see step 1)
            grace_until = now - timedelta(seconds=self.exercise_grace_s)
            ended = await conn.fetch(
                """SELECT a.id, a.station_id, a.condition, a.level, a.exercise, s.id IS NULL AS deleted FROM alerts a
                   LEFT JOIN stations s ON s.id = a.station_id
                   LEFT JOIN rule_state rs ON rs.station_id = a.station_id AND rs.exercise = a.exercise
                   WHERE a.cleared_at IS NULL AND a.order_id IS NULL
                     AND (s.id IS NULL OR (NOT a.exercise AND s.exercise AND s.exercise_since <= $1)
                          OR (a.exercise AND NOT s.exercise AND ((rs.state->'registry'->>'exercise')::boolean
                                                                  OR a.created_at < s.exercise_since)))
                   ORDER BY a.id FOR UPDATE OF a""", grace_until)
            for r in ended:
                reason = REMOVED if r["deleted"] else ENDED_REAL if r["exercise"] else ENDED_EXERCISE
                t = Transition(r["condition"], r["level"], None, now.timestamp(), None, None, reason)
                await record(await store.apply_transition(conn, station_id="", municipality_code=None,
                                                          exercise=r["exercise"], t=t, alert_id=r["id"]))
            # the drill stream of the exercise registration starts afresh (its state may predate the switch
            # and say nothing of it): a drill on the real gauge later is a new stream
            drills = sorted({r["station_id"] for r in ended if r["exercise"] and not r["deleted"]})
            if drills:
                await conn.execute("DELETE FROM rule_state WHERE exercise AND station_id = ANY($1::text[])", drills)
                await conn.execute("DELETE FROM rule_checkpoints WHERE exercise AND station_id = ANY($1::text[])",
                                   drills)
            # (a real stream of an exercise station is parked, not dropped: _follow_ladders)
            gone = await conn.fetch(
                """DELETE FROM rule_state rs WHERE NOT EXISTS (
                       SELECT 1 FROM stations s WHERE s.id = rs.station_id
                       AND (rs.exercise = s.exercise OR NOT rs.exercise
                            OR (rs.exercise AND NOT coalesce((rs.state->'registry'->>'exercise')::boolean, false))))
                   RETURNING station_id, exercise""")
            if gone:
                await conn.execute(
                    """DELETE FROM rule_checkpoints c USING unnest($1::text[], $2::bool[]) AS g(s, e)
                       WHERE c.station_id = g.s AND c.exercise = g.e""",
                    [g["station_id"] for g in gone], [g["exercise"] for g in gone])
            moved = await conn.fetch(
                """SELECT a.id, s.municipality_code FROM alerts a JOIN stations s ON s.id = a.station_id
                   WHERE a.cleared_at IS NULL AND a.order_id IS NULL
                     AND a.municipality_code IS DISTINCT FROM s.municipality_code
                   ORDER BY a.id FOR UPDATE OF a""")
            for r in moved:
                await record(await store.move_alert(conn, r["id"], municipality_code=r["municipality_code"], at=now))
            for change in await self._follow_ladders(conn, now, grace_until=grace_until):
                await record(change)
        if changes:
            log.info("open alerts follow the station registry", extra={"changes": len(changes)})
        return len(changes)

    async def _follow_ladders(self, conn: asyncpg.Connection, now: datetime, *,
                              grace_until: datetime) -> list[store.AlertChange | None]:
        """Stamp every stream with its station's registry; park, resume or re-judge those it changed for (step 3
        of :meth:`follow_registry`). A real stream of a station switched to exercise after ``grace_until`` is
        left as it is (its grace, :meth:`follow_registry`). Call in its transaction."""
        rows = await conn.fetch(
            f"""SELECT rs.station_id, rs.exercise, rs.state->'registry' AS registry, s.exercise AS station_exercise,
                       s.exercise AND NOT rs.exercise AND s.exercise_since > $1 AS in_grace,
                       s.kind, s.gauge_type, {', '.join('s.' + f for f in THRESHOLD_FIELDS)}
                FROM rule_state rs JOIN stations s ON s.id = rs.station_id ORDER BY rs.station_id, rs.exercise""",
            grace_until)
        stale = [r for r in rows if not r["in_grace"] and (json.loads(r["registry"]) if r["registry"] else None)
                 != _registry_stamp(r["station_exercise"], _ladder_of(r), _gauge_of(r))]
        if not stale:
            return []
        stations = await self._stations(conn, sorted({r["station_id"] for r in stale}))
        out: list[store.AlertChange | None] = []
        for r in stale:
            st, exercise = stations[r["station_id"]], r["exercise"]
            stored = json.loads(await conn.fetchval(
                "SELECT state FROM rule_state WHERE station_id = $1 AND exercise = $2 FOR UPDATE", st.id, exercise))
            old = stored.get("registry")
            new = _registry_stamp(st.exercise, st.steps, st.gauge)
            judged: tuple[StationRules, list[Transition]] | None = None
            why = REJUDGED
            if not exercise and st.exercise:
                # switched to exercise: its real alerts ended (step 1); the stream keeps only the readings it
                # judged eligible, to be judged again should the station be real again while they are fresh
                if stored.get("machine"):
                    machine = self._machine(st, exercise, stored["machine"])
                    stored = {"parked": _eligible_points(machine), "last_any_ts": stored.get("last_any_ts")}
                    await self._drop_checkpoints(conn, st.id, exercise)
            elif not exercise and "parked" in stored:
                # real again: its level judged from the real readings it had before, if still fresh
                judged, why = self._judge_again(st, exercise, stored.pop("parked"), None, now, RESUMED,
                                                fresh_only=True), RESUMED
                stored.pop("machine", None)
            elif old is not None and (old["steps"] != new["steps"] or old.get("gauge", st.gauge) != st.gauge) \
                    and stored.get("machine"):
                current = self._machine(st, exercise, stored["machine"])
                # silent or not: the level it holds is judged again (_judge_again), never left to the old ladder
                judged = self._judge_again(st, exercise, _eligible_points(current), current, now, REJUDGED,
                                           fresh_only=False)
            if judged is not None:
                machine, transitions = judged
                for t in transitions:  # the registry change is the note of a change worded by its rule
                    out.append(await store.apply_transition(conn, station_id=st.id, municipality_code=st.municipality_code,
                                                            exercise=exercise, t=t, note=None if t.reason == why else why))
                if transitions:
                    log.info("registry changed: station judged again", extra={
                        "station": st.id, "exercise": exercise, "changes": len(transitions)})
                stored["machine"] = machine.to_json()
                stored.pop("cp_ts", None)
                await self._drop_checkpoints(conn, st.id, exercise)
            stored["registry"] = new
            await conn.execute("UPDATE rule_state SET state = $3::jsonb, updated_at = now() "
                               "WHERE station_id = $1 AND exercise = $2", st.id, exercise, json.dumps(stored))
        return out

    @staticmethod
    async def _drop_checkpoints(conn: asyncpg.Connection, station_id: str, exercise: bool) -> None:
        await conn.execute("DELETE FROM rule_checkpoints WHERE station_id = $1 AND exercise = $2", station_id, exercise)

    def _judge_again(self, st: _Station, exercise: bool, points: list[list[float]], current: StationRules | None,
                     now: datetime, reason: str, *, fresh_only: bool) -> tuple[StationRules, list[Transition]] | None:
        """The stream's river level judged again under the station's current ladder ``st.steps``, or None
        when there is nothing fresh to judge from.

        The rule, for changed thresholds (reason :data:`REJUDGED`) and a station real again (:data:`RESUMED`)
        alike: judge only from readings that were eligible to be judged when they arrived — the stream's
        accepted level readings of its last ``buffer_s`` as the live rules kept them, and the suspect reading
        waiting for confirmation (``points``: ``[[ts, m], …]``, :func:`_eligible_points`) — never from the
        stored readings table, which holds spikes the rules rejected and readings that arrived while the
        station was registered otherwise.

        **Fresh or not** (``fresh_only``). A changed ladder (``fresh_only`` false) is judged whatever the age of
        the points: the level a stream holds is the judgement of those same stages, so on a silent gauge (no
        reading for longer than the silent-gauge rule allows, :func:`alerting.rules.is_silent`) or a faulty one
        (only 欠測 values since: its newest *accepted* stage is old though data arrives) it cannot stay the
        judgement of a ladder staff have since corrected — found: a silent gauge kept 5.4 m on its alert through
        five threshold edits, and, its stream stamped with the new ladder unjudged, a fresh reading afterwards
        changed nothing either. Its ``silent`` alert tells staff the stage is old. A parked stream resumed
        (``fresh_only`` true: its real alerts were ended by the switch to exercise, and were told so) is judged
        only while the newest point is fresh by the silent-gauge rule (at most ``silent_factor`` ×
        ``expected_interval_s`` old at ``now``): an ended alert is not raised again from old stages; otherwise
        it starts afresh (None: no judgement). A fresh machine is fed the points and ticked
        to ``now``; its river level and unconfirmed level replace the live ones (``current``; device health is
        kept). Returns the new machine and the net transitions, each one true whole of time, stage, rule and
        threshold (never a stage of one reading dated at another):

        * a river level raised, lowered or kept: told by what holds it under the new ladder
          (:meth:`~alerting.rules.StationRules.standing`): the reading that put it in force (its time and stage)
          with its rule — ``threshold`` (reached: that stage is at or above the new threshold), ``trend`` (a
          level 3 forecast, with the 氾濫危険水位 it is forecast to reach) or :data:`~alerting.rules.HELD` (a level
          the replayed river was falling to: held while it falls) — and the registry change as the event's note
          (:meth:`_follow_ladders`). A level *lowered* and held by the threshold rule has ``reason`` itself
          (:data:`REJUDGED`): worded as reached, with that reading's stage and the new threshold, never as the
          river falling (:func:`alerting.texts.text_for`; the alert's state is ``de-escalated``, which says
          "falling" for a level rule). A level kept is updated only when what holds it differs from the alert's
          own rule and threshold (:func:`alerting.store.apply_transition`);
        * a level cleared, and an unconfirmed level ended: ``reason`` (withdrawn by the registry change, not the
          river falling), dated ``now`` (the change) without a stage: the alert keeps the stage and threshold
          it was told with;
        * an unconfirmed level raised or changed: :data:`~alerting.rules.IMPLAUSIBLE` at the suspect reading."""
        newest = max((t for t, _ in points), default=None)
        if newest is None or (fresh_only and now.timestamp() - newest > self.silent_factor * st.expected_interval_s):
            return None
        fresh = self._machine(st, exercise, None)
        fresh.feed_all(Reading("level", float(t), float(v)) for t, v in sorted(points))
        fresh.tick(now.timestamp())
        before: dict[str, int] = {}
        if current is not None:
            before = current.open_conditions()
            fresh.state.health = current.state.health
            if current.state.last_ts is not None:
                fresh.state.last_ts = max(fresh.state.last_ts or current.state.last_ts, current.state.last_ts)
        after = fresh.open_conditions()
        held = {t.condition: t for t in fresh.standing()}
        out = []
        for name in (RIVER, UNCONFIRMED):
            old, new = before.get(name), after.get(name)
            if old == new:
                continue
            rule = held.get(name)
            suspect = fresh.state.pending
            if new is not None and rule is not None:
                if old is not None and new < old and rule.reason == "threshold":
                    rule = replace(rule, reason=reason)  # lowered by the ladder, not the river: worded as reached
                out.append(replace(rule, old_level=old))
            elif new is not None and name == UNCONFIRMED and suspect is not None:
                out.append(Transition(name, old, new, suspect[0], suspect[1], threshold_of(st.steps, new),
                                      IMPLAUSIBLE))
            else:
                out.append(Transition(name, old, new, now.timestamp(), None,
                                      threshold_of(st.steps, new) if new is not None else None, reason))
        # a level kept: what holds it now (a level 3 kept by the trend rule under thresholds it no longer reaches
        # is forecast, with the 氾濫危険水位 it is forecast to reach), at the reading that put it in force; the
        # alert is updated only when that differs from its own (alerting.store.apply_transition)
        if current is not None and before.get(RIVER) is not None and before.get(RIVER) == after.get(RIVER):
            out += [replace(t, old_level=before[RIVER]) for t in fresh.standing()]
        return fresh, out

    # -- silent gauges ---------------------------------------------------------------------------
    async def check_silent(self, conn: asyncpg.Connection) -> int:
        """Raise and clear ``silent`` alerts by :func:`alerting.silence.station_silence` (the staff console's
        rows too). Returns the number of alert changes.

        The open alerts follow the registry, so that the console and the alerts never disagree: an alert of
        a stream the station no longer has (its exercise flag changed; a real one only once
        ``exercise_grace_s`` have passed, as :meth:`follow_registry` ends real alerts) or of a deleted station
        is cleared with the reason of :meth:`follow_registry`; one that stops being silent is cleared
        "data again" only when a reading arrived, otherwise with the switch that began its stream afresh
        (:attr:`alerting.silence.Silence.clear_reason`),
        and one of a station moved to another municipality is moved with it (:func:`alerting.store.move_alert`,
        as :meth:`follow_registry` moves every condition's)."""
        stations = await station_silence(conn, factor=self.silent_factor, grace_s=self.exercise_grace_s)
        watched = {(st.station_id, st.exercise): st for st in stations}
        registered = {st.station_id: st for st in stations}
        open_alerts: dict[tuple[str, bool], tuple[int, str | None]] = {}
        gone: list[tuple[int, str]] = []
        for r in await conn.fetch("SELECT id, station_id, exercise, municipality_code FROM alerts "
                                  "WHERE condition = $1 AND cleared_at IS NULL", SILENT):
            st = registered.get(r["station_id"])
            if (r["station_id"], r["exercise"]) in watched:
                open_alerts[(r["station_id"], r["exercise"])] = (r["id"], r["municipality_code"])
            elif st is None:
                gone.append((r["id"], REMOVED))
            elif r["exercise"]:
                gone.append((r["id"], ENDED_REAL))
            elif st.exercise_since is None or (st.now - st.exercise_since).total_seconds() >= self.exercise_grace_s:
                gone.append((r["id"], ENDED_EXERCISE))
            # else: a real silent alert of a station switched to exercise within the grace goes on, like its
            # other real alerts (follow_registry), and is still open should it be switched back to real
        changes: list[store.AlertChange] = []
        async with conn.transaction():
            now = stations[0].now if stations else await conn.fetchval("SELECT now()")
            for alert_id, reason in gone:
                t = Transition(SILENT, 0, None, now.timestamp(), None, None, reason)
                change = await store.apply_transition(conn, station_id="", municipality_code=None, exercise=False,
                                                      t=t, alert_id=alert_id)
                if change is not None:
                    changes.append(change)
            for st in stations:
                is_open = (st.station_id, st.exercise) in open_alerts
                if is_open and open_alerts[(st.station_id, st.exercise)][1] != st.municipality_code:
                    # moved like every open alert of the station (follow_registry), should this pass come first
                    change = await store.move_alert(conn, open_alerts[(st.station_id, st.exercise)][0],
                                                    municipality_code=st.municipality_code, at=st.now)
                    if change is not None:
                        changes.append(change)
                if st.silent == is_open:
                    continue
                t = Transition(SILENT, None if st.silent else 0, 0 if st.silent else None, st.now.timestamp(),
                               None, None, st.reason if st.silent else st.clear_reason)
                change = await store.apply_transition(conn, station_id=st.station_id,
                                                      municipality_code=st.municipality_code,
                                                      exercise=st.exercise, t=t)
                if change is not None:
                    changes.append(change)
            await conn.execute("DELETE FROM rule_checkpoints WHERE ts < now() - interval '3 days'")
        return len(changes)

    # -- MQTT ------------------------------------------------------------------------------------
    async def _publish(self, conn: asyncpg.Connection) -> None:
        """Publish the current state of every alert changed since the last time (from NOTIFY); on each
        new publisher connection (the first, after the broker was down at election, or a reconnect)
        the whole state instead: every active alert, and the clearing of every alert cleared in the
        last :data:`REPUBLISH_CLEARED` (so retained topics from before are updated or removed). Only public
        alerts are published (:func:`publish_alert`)."""
        client = self._mqtt
        if client is None:
            self._to_publish.clear()
            return
        if not client.is_connected:
            return  # keep the changed ids; they are sent once connected
        full = client.connections != self._published_connection
        if full:
            rows = await conn.fetch("SELECT id FROM alerts WHERE cleared_at IS NULL OR cleared_at > now() - $1::interval",
                                    REPUBLISH_CLEARED)
            self._to_publish |= {int(r["id"]) for r in rows}
            self._published_connection = client.connections
        if not self._to_publish:
            return
        ids, self._to_publish = sorted(self._to_publish), set()
        # the municipalities alerts moved out of (event "moved"): their retained copies there are removed
        left = {r["alert_id"]: r["codes"] for r in await conn.fetch(
            """SELECT alert_id, array_agg(DISTINCT old_municipality_code) AS codes FROM alert_events
               WHERE kind = 'moved' AND alert_id = ANY($1::bigint[]) GROUP BY alert_id""", ids)}
        for alert_id in ids:
            alert = await store.get_alert(conn, alert_id)
            # public alerts only; a staff-only one never reaches the tree, and the whole state removes any retained
            # copy of one (publish_alert) left by a version that published them
            if alert is not None and (full or is_published(alert)):
                await publish_alert(client, self.topic_root, alert, left=left.get(alert_id, ()))


def _steps_json(steps: tuple[Any, ...]) -> list[list[float]]:
    return [[step.level, step.threshold] for step in steps]


def _registry_stamp(exercise: bool, steps: tuple[Any, ...], gauge: str) -> dict[str, Any]:
    """What a stream was last judged with (``rule_state.state['registry']``): its station's exercise flag,
    ladder as ``[[level, threshold m], …]`` and ``kind/gauge_type``; :meth:`RulesWorker.follow_registry`
    compares it with the registry."""
    return {"exercise": exercise, "steps": _steps_json(steps), "gauge": gauge}


def _eligible_points(machine: StationRules) -> list[list[float]]:
    """The level readings a stream's rules accepted (of their last ``buffer_s``) and the suspect one waiting
    for confirmation, ``[[ts, m], …]`` in time order: what it may be judged again from
    (:meth:`RulesWorker._judge_again`)."""
    s = machine.state
    points = [[t, v] for t, v in s.buffer]
    if s.pending is not None:
        points.append([s.pending[0], s.pending[1]])
    return sorted(points)


def is_published(alert: dict[str, Any]) -> bool:
    """Whether ``alert`` (:func:`alerting.store.get_alert`) belongs on the retained MQTT alerts tree: a public
    alert (``audience`` public) that is not an unconfirmed level (staff only until confirmed), of a
    municipality: the tree is read by municipality, and one of a station registered in none has no topic there
    (found: a real level-4 alert retained at ``sonae/alerts/none/17``; ingest now refuses such a station's
    readings, :mod:`ingest.placement`, and an alert left from before is cleared from that topic, not sent)."""
    return (alert["audience"] == "public" and alert["condition"] != UNCONFIRMED
            and alert["municipality_code"] is not None)


def _alert_topic(topic_root: str, municipality_code: str | None, alert_id: int) -> str:
    return f"{topic_root}/{municipality_code or 'none'}/{alert_id}"


async def publish_alert(client: MqttClient, topic_root: str, alert: dict[str, Any],
                        left: Iterable[str | None] = ()) -> None:
    """Retained current state of an active alert; a cleared one is sent once and its retained copy removed.

    The tree ``{topic_root}/{municipality}/{id}`` carries **public** alerts only (:func:`is_published`): it is
    what devices and partners' viewers (signage) of a municipality read (``app.provisioning``: role ``viewer``
    and every device read their municipality's alerts), beside the public feeds. A staff-only alert (standby,
    device health, silent gauges, an unconfirmed level) is never published there; for one, only an empty
    retained message is sent to its topic, so a retained copy left there (an earlier version published staff
    alerts) is removed and a viewer shows nothing of it. Staff read staff-only alerts from the API.

    ``left``: municipalities the alert moved out of (:func:`alerting.store.move_alert`); the retained copy
    under each of their topics is removed, so that a viewer of the old municipality no longer shows it."""
    topic = _alert_topic(topic_root, alert["municipality_code"], alert["id"])
    if not is_published(alert):
        try:
            for code in {*left, alert["municipality_code"]}:
                await client.publish(_alert_topic(topic_root, code, alert["id"]), b"", qos=1, retain=True)
        except Exception as exc:
            log.warning("alert not published to MQTT", extra={"error": str(exc), "topic": topic})
        return
    # the retained topics are read by partners' devices (viewers): no staff identity on them
    public = {k: v for k, v in store.alert_json(alert).items() if k != "acknowledged_by"}
    body = json.dumps(public, ensure_ascii=False, separators=(",", ":"))
    try:
        for code in set(left) - {alert["municipality_code"]}:
            await client.publish(_alert_topic(topic_root, code, alert["id"]), b"", qos=1, retain=True)
        if alert["cleared_at"] is None:
            await client.publish(topic, body, qos=1, retain=True)
        else:
            await client.publish(topic, body, qos=1, retain=False)
            await client.publish(topic, b"", qos=1, retain=True)
    except Exception as exc:
        log.warning("alert not published to MQTT", extra={"error": str(exc), "topic": topic})


async def run_rules_worker(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Run a rules worker until ``stop`` is set (for ``sonae run`` / ``sonae ingest``)."""
    from sonae.workers import run_until_stopped

    worker = RulesWorker.from_settings(settings, pool)
    await run_until_stopped(worker.run(), stop, worker.stop)


def now_utc() -> datetime:
    return datetime.now(UTC)
