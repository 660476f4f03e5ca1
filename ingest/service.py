"""The ingestor: MQTT → batches → PostgreSQL, acknowledging each message only after its batch commits.

At-least-once end to end, and idempotent storage, give "exactly once" in the table:

* QoS 1 on a persistent session (stable client id, clean start off, session expiry set) with a *plain*
  subscription, so messages published while the ingestor is down, or while it reconnects after a
  broker restart, wait in the broker (a shared subscription is not queued for by Mosquitto or EMQX
  while its members are offline: see :mod:`ingest.partition` for scale-out without it);
* manual acks sent after the commit of the batch holding the message, so a crash (``kill -9``)
  before the commit makes the broker deliver the message again;
* the primary key (station, kind, exercise, ts) with ``ON CONFLICT DO NOTHING`` skips redeliveries,
  and a dead letter is unique per message and reason (:mod:`ingest.store`); a skipped reading whose value
  differs from the stored one is no redelivery but a conflict, kept as a dead letter ``conflicting_value``.

One message never stops the service: what the parser refuses is a dead letter with its reason; an
unexpected exception while parsing one message makes it a dead letter ``internal_error``; a reading the
database refuses makes its message a dead letter ``db_rejected`` while the rest of the batch is stored.

Memory stays bounded for any database outage: at most ``ingest.max_inflight`` messages are
unacknowledged (MQTT 5 Receive Maximum asks the broker to stop sending, and the client stops reading
its socket at the limit in any case while keeping the connection alive with its own PINGREQs, so the
keep-alive never drops it), redeliveries of held messages are not queued twice (:mod:`sonae.mqtt`),
and while the database is down the batch in hand is retried with exponential backoff, so nothing
more is taken from the inbox; the rest waits in the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg

from ingest import metrics
from ingest.contract import Parser, PayloadError, Reading, parse_topic, subscription
from ingest.municipalities import uncovered
from ingest.partition import REFRESH_S, Partition, registered_municipalities
from ingest.placement import Place, misplaced
from ingest.registry import known_station_ids, release_quarantine, station_places
from ingest.store import DEAD_LETTER_BYTES, Conflict, DeadLetter, WriteResult, write_batch
from sonae.config import Settings
from sonae.db import is_transient_db_error
from sonae.mqtt import Message, MqttClient, bound_client_id
from sonae.municipality_code import DRILL_TOWN_CODE
from sonae.retry import Backoff, count_failure

log = logging.getLogger("sonae.ingest")

#: messages parsed between two yields to the event loop
DRAIN_CHUNK = 10
#: batches written through the staging table after one held a duplicate (redeliveries come in runs)
STAGED_AFTER_CONFLICT = 20



@dataclass
class _Parsed:
    """What a batch of messages yielded: readings (with their message) and dead letters."""

    pairs: list[tuple[Reading, Message]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class Ingestor:
    """One ingest process. Run several with ``partition`` ``"0/n"`` … ``"n-1/n"`` to share the stream."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        mqtt_url: str,
        client_id: str,
        protocol: str = "5",
        prefix: str = "sonae/v1",
        shared_group: str = "",
        partition: str = "",
        batch_size: int = 5000,
        batch_age_ms: int = 200,
        max_inflight: int = 20000,
        unknown_stations: str = "quarantine",
        max_future_s: int = 300,
        max_payload_bytes: int = 262144,
        keepalive_s: int = 30,
        dead_letter_max_bytes: int = DEAD_LETTER_BYTES,
    ) -> None:
        self.pool = pool
        self.parser = Parser(prefix=prefix, max_future_s=max_future_s, max_payload_bytes=max_payload_bytes)
        self.client = MqttClient(mqtt_url, client_id=client_id, protocol=protocol, persistent=True,
                                 manual_ack=True, max_inflight=max_inflight, keepalive=keepalive_s,
                                 target="mqtt-ingest")
        self.prefix = prefix
        self.partition = Partition.parse(partition)
        if self.partition is not None and shared_group:
            raise ValueError("a partitioned ingestor subscribes plainly: leave shared_group empty")
        #: the whole tree, or (partitioned) this partition's municipalities once read from the registry
        self.topic_filter = subscription(prefix, shared_group)
        self.topic_filters: list[str] = [] if self.partition else [self.topic_filter]
        metrics.INFLIGHT.set_function(lambda: self.client.unacked)
        metrics.INBOX.set_function(lambda: self.client.waiting)
        metrics.INFLIGHT_PEAK.set_function(lambda: self.client.peak_unacked)
        metrics.REDELIVERIES_DROPPED.set_function(lambda: self.client.redeliveries_dropped)
        metrics.MQTT_CONNECTIONS.set_function(lambda: self.client.connections)
        self.batch_size = batch_size
        self.batch_age = batch_age_ms / 1000
        self.unknown_stations = unknown_stations
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.ready = asyncio.Event()
        self._known: set[str] = set()
        self._checked_unknown: dict[str, float] = {}
        self._staged_batches_left = 0
        self._stopping = False
        self._same_size_batches = 0
        self._last_batch_size = -1
        self._warned_throttle = False
        self.totals = {"messages": 0, "inserted": 0, "duplicates": 0, "quarantined": 0, "dead_letters": 0}

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, *, instance: str = "0") -> Ingestor:
        client_id = settings["mqtt.client_id"] or bound_client_id("ingest", settings["mqtt.url"], instance)
        return cls(
            pool=pool, mqtt_url=settings["mqtt.url"], client_id=client_id, protocol=settings["mqtt.protocol"],
            prefix=settings["mqtt.topic_prefix"], shared_group=settings["ingest.shared_group"],
            partition=settings["ingest.partition"],
            batch_size=settings["ingest.batch_size"], batch_age_ms=settings["ingest.batch_age_ms"],
            max_inflight=settings["ingest.max_inflight"], unknown_stations=settings["ingest.unknown_stations"],
            max_future_s=settings["ingest.max_future_s"], max_payload_bytes=settings["ingest.max_payload_bytes"],
            keepalive_s=settings["mqtt.keepalive_s"],
            dead_letter_max_bytes=settings["ingest.dead_letter_max_bytes"],
        )

    def stop(self) -> None:
        self._stopping = True
        self.client.interrupt()  # wake the batch loop

    async def run(self) -> None:
        """Consume until :meth:`stop`; the last batch in hand is committed and acknowledged first."""
        loop = asyncio.get_running_loop()
        async with self.client as client:
            # A persistent session starts delivering its backlog at once, and the SUBACK may queue
            # behind it: consume while subscribing, or both sides would wait for each other.
            subscribing = asyncio.create_task(self._subscribe_all())
            subscribing.add_done_callback(self._subscribed)
            maintenance = asyncio.create_task(self._maintenance())
            try:
                # Two stages overlap: while one batch is being written (PostgreSQL busy on its own
                # core), the next is drained and parsed here. Commits, and so acks, stay in order.
                committing: asyncio.Task[WriteResult] | None = None
                while not self._stopping:
                    if subscribing.done() and not subscribing.cancelled() and subscribing.exception() is not None:
                        raise subscribing.exception()  # type: ignore[misc]
                    await client.wait_message()
                    batch: list[Message] = []
                    parsed = _Parsed()
                    deadline = loop.time() + self.batch_age
                    closed_by_age = False
                    while not self._stopping:
                        # parse in small chunks and yield in between, so the commit in flight gets
                        # its turn on the loop and a batch stops at batch_size readings, not messages
                        fresh = client.drain(min(self.batch_size - len(batch), DRAIN_CHUNK))
                        batch.extend(fresh)
                        self._parse_into(parsed, fresh)
                        if len(batch) >= self.batch_size or len(parsed.pairs) >= self.batch_size:
                            break
                        await asyncio.sleep(0)
                        if client.waiting:
                            continue
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            closed_by_age = True
                            break
                        try:
                            await asyncio.wait_for(client.wait_message(), remaining)
                        except TimeoutError:
                            closed_by_age = True
                            break
                    if committing is not None:
                        await committing
                        committing = None
                    if batch:
                        committing = asyncio.create_task(self._commit(batch, parsed))
                        self._watch_throttle(len(batch), closed_by_age)
                if committing is not None:
                    await committing
            finally:
                subscribing.cancel()
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance

    async def _subscribe_all(self) -> None:
        """Subscribe to the whole tree, or (partitioned) to this partition's municipalities, and then
        follow the registry for new ones (subscriptions are only ever added)."""
        if self.partition is None:
            await self.client.subscribe(self.topic_filter, qos=1, timeout=600)
            return
        first = True
        while True:
            async def read() -> set[str]:
                async with self.pool.acquire() as conn:
                    return await registered_municipalities(conn)
            wanted = self.partition.filters(self.prefix, await self._retrying(read))
            for topic in wanted:
                if topic not in self.topic_filters:
                    await self.client.subscribe(topic, qos=1, timeout=600)
                    self.topic_filters.append(topic)
                    if not first:
                        log.info("ingest partition follows a new municipality", extra={"filter": topic})
            if first:
                first = False
                if not wanted:
                    log.warning("ingest partition %s has no registered municipality yet: it receives nothing "
                                "until one is registered", self.partition)
                self._subscribed_now()
            await asyncio.sleep(REFRESH_S)

    def _subscribed(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.client.interrupt()
            return
        self._subscribed_now()

    def _subscribed_now(self) -> None:
        if self.ready.is_set():
            return
        log.info("ingest subscribed", extra={"filters": self.topic_filters[:20], "n_filters": len(self.topic_filters),
                                             "partition": str(self.partition or ""),
                                             "client_id": self.client.client_id,
                                             "session_present": self.client.session_present})
        self.ready.set()

    def _watch_throttle(self, size: int, closed_by_age: bool) -> None:
        """Warn when the broker seems to cap unacknowledged messages (mosquitto's default is 20)."""
        if self._warned_throttle:
            return
        # A cap shows as batches of exactly the broker's limit, closed by age: messages stop coming
        # until we acknowledge. 20 is mosquitto's default max_inflight_messages.
        if closed_by_age and size == self._last_batch_size == 20 and size < self.batch_size:
            self._same_size_batches += 1
        else:
            self._same_size_batches = 0
        self._last_batch_size = size
        if self._same_size_batches >= 10:
            self._warned_throttle = True
            log.warning(
                "the broker appears to cap unacknowledged messages at %d per client; with acks held until "
                "commit this throttles ingest. Set max_inflight_messages 0 and a large max_queued_messages "
                "in mosquitto.conf (see deploy/mosquitto)", size, extra={"cap": size})

    async def _maintenance(self) -> None:
        """Release quarantined readings of stations registered since (every 30 s)."""
        while True:
            await asyncio.sleep(30)
            try:
                async with self.pool.acquire() as conn:
                    ids = [r["station_id"] for r in await conn.fetch(
                        "SELECT DISTINCT station_id FROM quarantined_readings LIMIT 1000")]
                    if ids:
                        await release_quarantine(conn, ids)
            except Exception as exc:
                log.warning("quarantine release failed", extra={"error": str(exc)})

    async def _classify_stations(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` are unknown to the registry (with a 5 s negative cache)."""
        now = time.monotonic()
        to_check = [i for i in ids if i not in self._known and now - self._checked_unknown.get(i, -1e9) > 5]
        if to_check:
            async with self.pool.acquire() as conn:
                found = await known_station_ids(conn, to_check)
            self._known |= found
            for i in to_check:
                if i not in found:
                    self._checked_unknown[i] = now
        return {i for i in ids if i not in self._known}

    async def process(self, batch: Sequence[Message]) -> WriteResult:
        """Parse, store and acknowledge one batch of messages."""
        parsed = _Parsed()
        self._parse_into(parsed, batch)
        return await self._commit(batch, parsed)

    def _parse_into(self, parsed: _Parsed, batch: Sequence[Message]) -> None:
        now = datetime.now(UTC)
        pairs, dead = parsed.pairs, parsed.dead
        for msg in batch:
            try:
                result = self.parser.parse(msg.topic, msg.payload, now=now)
            except PayloadError as exc:
                dead.append(DeadLetter(msg.topic, msg.payload, exc.reason, exc.detail))
                continue
            except Exception as exc:  # a bug the parser's tests missed costs one message, not the service
                dead.append(_internal_error(msg, exc, "parsing"))
                continue
            pairs.extend((r, msg) for r in result.readings)
            if result.problems:
                first = result.problems[0]
                detail = "; ".join(p.detail for p in result.problems[:10])
                dead.append(DeadLetter(msg.topic, msg.payload, "partial_" + first.reason,
                                       f"{len(result.problems)} record(s) not stored: {detail}"))

    async def _commit(self, batch: Sequence[Message], parsed: _Parsed) -> WriteResult:
        """Store a parsed batch and acknowledge its messages."""
        metrics.MESSAGES_RECEIVED.inc(len(batch))
        pairs, dead = parsed.pairs, list(parsed.dead)
        pairs = await self._refuse_misplaced(pairs, dead)
        readings: list[Reading] = []
        sources: list[Message] = []  # the message of each reading, for a dead letter if it cannot be written
        quarantine: list[tuple[Reading, str]] = []
        held: list[Message] = []  # the message of each quarantined reading
        unknown = await self._retrying(self._classify_stations, {r.station_id for r, _ in pairs}) if pairs else set()
        if unknown and self.unknown_stations == "accept":
            where: dict[str, str] = {}  # station → the 6-digit code of the first topic naming it
            for reading, msg in pairs:
                if reading.station_id in unknown and reading.station_id not in where:
                    where[reading.station_id] = parse_topic(msg.topic, self.parser.prefix).municipality
            refused = await self._retrying(self._register_minimal, where)
            unknown = set()
        else:
            refused = {}
        rejected_msgs: set[int] = set()
        for reading, msg in pairs:
            if reading.station_id in refused:  # could not be registered: kept with the reason, never lost
                if id(msg) not in rejected_msgs:
                    rejected_msgs.add(id(msg))
                    dead.append(DeadLetter(msg.topic, msg.payload, "uncovered_municipality",
                                           f"station {reading.station_id!r} could not be registered: "
                                           f"{refused[reading.station_id]}"))
            elif reading.station_id not in unknown:
                readings.append(reading)
                sources.append(msg)
            elif self.unknown_stations == "quarantine":
                quarantine.append((reading, msg.topic))
                held.append(msg)
            elif id(msg) not in rejected_msgs:
                rejected_msgs.add(id(msg))
                dead.append(DeadLetter(msg.topic, msg.payload, "unknown_station",
                                       f"station {reading.station_id!r} is not in the registry"))

        result = await self._write(readings, sources, quarantine, dead)
        if result.conflicts:
            letters = await self._keep_conflicts(result.conflicts, readings, sources, [r for r, _ in quarantine], held)
            dead += letters  # counted in the metrics below
            result = replace(result, dead_letters=result.dead_letters + len(letters))
        metrics.LAST_COMMIT.set(time.time())
        committed = datetime.now(UTC)
        for r in readings[:: max(1, len(readings) // 200)]:  # sample: lag is a distribution, not a sum
            metrics.LAG_SECONDS.observe(max(0.0, (committed - r.ts).total_seconds()))
        acked = sum(1 for msg in batch if self.client.ack(msg))
        metrics.MESSAGES_ACKED.inc(acked)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.ROWS_WRITTEN.inc(result.inserted)
        metrics.DUPLICATES.inc(result.duplicates)
        metrics.QUARANTINED.inc(result.quarantined)
        for d in dead:
            metrics.DEAD_LETTERS.labels(d.reason).inc()
        self.totals["messages"] += len(batch)
        self.totals["inserted"] += result.inserted
        self.totals["duplicates"] += result.duplicates
        self.totals["quarantined"] += result.quarantined
        self.totals["dead_letters"] += result.dead_letters
        return result

    async def _refuse_misplaced(self, pairs: list[tuple[Reading, Message]],
                                dead: list[DeadLetter]) -> list[tuple[Reading, Message]]:
        """Keep the readings whose topic may carry them (:func:`ingest.placement.misplaced`); the message of
        any other becomes a dead letter ``foreign_station``, ``wrong_municipality`` or ``real_in_drill_town``.

        The registry is read once a batch for the stations and senders in it, so a station moved to
        another municipality, or a device made a gateway, is followed from the next batch.
        """
        if not pairs:
            return pairs
        topics: dict[str, tuple[str, str]] = {}  # topic → (municipality, sender)
        for _, m in pairs:
            if m.topic not in topics:
                t = parse_topic(m.topic, self.parser.prefix)  # parsed before: cannot fail
                topics[m.topic] = (t.municipality, t.station)
        ids = {r.station_id for r, _ in pairs} | {sender for _, sender in topics.values()}

        async def load() -> dict[str, Place]:
            async with self.pool.acquire() as conn:
                return await station_places(conn, sorted(ids))
        places = await self._retrying(load)
        self._known |= set(places)
        verdicts: dict[tuple[str, str, bool], tuple[str, str] | None] = {}  # (station, topic, exercise) → verdict
        refused: set[int] = set()
        kept = []
        for r, m in pairs:
            key = (r.station_id, m.topic, r.exercise)
            if key in verdicts:
                problem = verdicts[key]
            else:
                municipality, sender = topics[m.topic]
                problem = verdicts[key] = misplaced(station=r.station_id, sender=sender, municipality=municipality,
                                                    exercise=r.exercise, places=places)
            if problem is None:
                kept.append((r, m))
            elif id(m) not in refused:
                refused.add(id(m))
                dead.append(DeadLetter(m.topic, m.payload, *problem))
        return kept

    async def _keep_conflicts(self, conflicts: Sequence[Conflict], readings: list[Reading], sources: list[Message],
                              quarantined: list[Reading], held: list[Message]) -> list[DeadLetter]:
        """Keep the message of each conflicting reading (:class:`ingest.store.Conflict`) as a dead letter
        ``conflicting_value`` naming the value stored, one per message.

        Written after the batch's own transaction and before its acks: if the process dies in between, the
        broker delivers the message again and the conflict is found again (the dead letter is unique per
        message and reason, so it is kept once).
        """
        details: dict[int, tuple[Message, list[str]]] = {}
        for c in conflicts:
            r, msg = (quarantined[c.index], held[c.index]) if c.quarantined else (readings[c.index], sources[c.index])
            where = "quarantined" if c.quarantined else "stored"
            details.setdefault(id(msg), (msg, []))[1].append(
                f"{r.station_id} {r.kind} at {r.ts.isoformat()}: {r.value!r} differs from the {where} {c.stored!r}")
        letters = [DeadLetter(msg.topic, msg.payload, "conflicting_value",
                              f"{len(lines)} reading(s) not stored, another value is kept for the same time: "
                              + "; ".join(lines[:10]) + "; a correction is a staff edit, not a resend")
                   for msg, lines in details.values()]

        async def keep() -> WriteResult:
            async with self.pool.acquire() as conn:
                return await write_batch(conn, [], dead_letters=letters, dead_letter_bytes=self.dead_letter_max_bytes)
        await self._retrying(keep)
        return letters

    async def _register_minimal(self, municipality_of: dict[str, str]) -> dict[str, str]:
        """Register unknown stations by id, in the municipality of their topic (6-digit code); one in the drill
        town as an exercise station, the only kind it holds (``ingest.municipalities.uncovered``; found: a
        real station could be put there).

        A station is registered only where every other registration may put it, by the same coverage rule
        (:func:`ingest.municipalities.uncovered`, as ``upsert_stations`` and the API apply it): a municipality
        in the list and, when boundaries are loaded, with one (found: ``…/472018/…``, 那覇市 with no boundary,
        and ``…/479993/…``, a code in no list, registered stations there). Returns ``{station: why}`` for
        those refused, whose readings the caller keeps as dead letters ``uncovered_municipality``.
        """
        refused: dict[str, str] = {}
        async with self.pool.acquire() as conn:
            verdicts: dict[str, str | None] = {}
            for code in sorted(set(municipality_of.values())):
                verdicts[code] = await uncovered(conn, code, exercise=code == DRILL_TOWN_CODE)
            for station, code in municipality_of.items():
                if (why := verdicts[code]) is not None:
                    refused[station] = why
            await conn.executemany(
                "INSERT INTO stations (id, name, municipality_code, source, exercise) "
                "VALUES ($1, $1, $2, 'auto-registered by ingest', $2 = $3) ON CONFLICT (id) DO NOTHING",
                [(station, code, DRILL_TOWN_CODE) for station, code in sorted(municipality_of.items())
                 if station not in refused])
        self._known |= set(municipality_of) - set(refused)
        return refused

    async def _retrying(self, fn, *args):  # type: ignore[no-untyped-def]
        backoff = Backoff(base=0.1, cap=10.0)
        while True:
            try:
                return await fn(*args)
            except Exception as exc:
                if not is_transient_db_error(exc):  # the one classification (sonae.db): 08, 53, 57P0x, FATAL 55000 …
                    raise
                metrics.DB_ERRORS.inc()
                count_failure("postgres")
                delay = backoff.next_delay()
                log.warning("database unavailable; retrying", extra={"error": str(exc)[:200], "retry_s": delay})
                await asyncio.sleep(delay)

    async def _write(self, readings: list[Reading], sources: list[Message], quarantine: list[tuple[Reading, str]],
                     dead: list[DeadLetter]) -> WriteResult:
        started = time.perf_counter()

        async def attempt() -> WriteResult:
            async with self.pool.acquire() as conn:
                return await write_batch(conn, readings, quarantine=quarantine, dead_letters=dead,
                                         try_direct=self._staged_batches_left == 0,
                                         dead_letter_bytes=self.dead_letter_max_bytes)

        try:
            result: WriteResult = await self._retrying(attempt)
        except Exception as exc:  # not transient (those are retried above)
            # A value PostgreSQL rejects despite validation, or a bug: store what it accepts, reading by
            # reading, and keep the message of each reading it refuses as a dead letter.
            log.error("batch rejected by the database; writing readings one by one",
                      extra={"error": _describe(exc)})
            result = await self._write_one_by_one(readings, sources, quarantine, dead)
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        if result.duplicates:
            self._staged_batches_left = STAGED_AFTER_CONFLICT
        elif self._staged_batches_left:
            self._staged_batches_left -= 1
        return result

    async def _write_one_by_one(self, readings: list[Reading], sources: list[Message],
                                quarantine: list[tuple[Reading, str]], dead: list[DeadLetter]) -> WriteResult:
        """The batch again, one reading a transaction; a reading refused makes its message a dead letter.

        The quarantine and dead letters go last, together; if even they cannot be written the error
        propagates and nothing of the batch is acknowledged, so the broker delivers it again.
        """
        inserted = duplicates = 0
        conflicts: list[Conflict] = []
        extra_dead: list[DeadLetter] = []
        refused: set[int] = set()
        for index, (r, msg) in enumerate(zip(readings, sources, strict=True)):
            try:
                res = await self._retrying(self._write_readings, [r])
                inserted += res.inserted
                duplicates += res.duplicates
                conflicts += [replace(c, index=index) for c in res.conflicts]
            except Exception as exc:  # not transient: this reading, not the database, is the problem
                if id(msg) not in refused:
                    refused.add(id(msg))
                    extra_dead.append(DeadLetter(msg.topic, msg.payload, "db_rejected",
                                                 f"{r.kind} at {r.ts.isoformat()}: {_describe(exc)}"))

        async def rest() -> WriteResult:
            async with self.pool.acquire() as conn:
                return await write_batch(conn, [], quarantine=quarantine, dead_letters=[*dead, *extra_dead],
                                         dead_letter_bytes=self.dead_letter_max_bytes)

        res = await self._retrying(rest)
        return WriteResult(inserted, duplicates, res.quarantined, res.dead_letters, (*conflicts, *res.conflicts))

    async def _write_readings(self, readings: list[Reading]) -> WriteResult:
        async with self.pool.acquire() as conn:
            return await write_batch(conn, readings)


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, never raising itself (a message may be a device's text)."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__
        text = "(no message)"
    return f"{type(exc).__name__}: {text[:300]}"


def _internal_error(msg: Message, exc: Exception, stage: str) -> DeadLetter:
    """The dead letter of a message whose handling raised unexpectedly (a bug in Sonae, not the device)."""
    log.error("unexpected error while %s a message; kept as a dead letter", stage,
              exc_info=exc, extra={"topic": msg.topic[:200], "payload_bytes": len(msg.payload)})
    return DeadLetter(msg.topic, msg.payload, "internal_error", f"{stage}: {_describe(exc)}")
