"""Which stations are silent now: the one query behind the ``silent`` alert and the staff console.

The rules worker (:meth:`alerting.worker.RulesWorker.check_silent`) raises and clears ``silent`` alerts
from :func:`station_silence`, and ``GET /api/v1/sensors/health`` shows the same rows, so staff never see
a station marked silent without its alert, or the other way round. Both read:

* **every registered station** (:func:`alerting.rules.is_silent` watches those expected to send readings of
  their own), each in its own stream (an exercise station's exercise readings, a real
  station's real ones: exercise readings of a real station are a drill and never make it look alive);
* **its newest reading of any kind**, from ``rule_state.last_ts``: the rules worker records there the
  newest reading time of every (station, exercise) stream it has read (all kinds: level, rain,
  telemetry). That is one row per station instead of a search of the readings hypertable every 30 s
  (the readings' key starts with the kind, so "newest of any kind" would be a probe per kind and chunk);
  the worker reads every committed reading before each check, so the column is as fresh as the rules;
* **the database's clock** (``now()``), ``stations.created_at`` for a station that never reported, and
  the beginning of its stream when its exercise flag changed since registration
  (:func:`alerting.rules.stream_start` of ``stations.exercise_switches``): a stream is watched from its
  beginning when that is later (a drill station switched to real is silent 3 intervals after the switch
  without a real reading, not at once because it was registered long ago; likewise real to exercise), and
  a switch back within the grace after a short excursion begins nothing (a silent real station flapped to
  exercise and back keeps its clock and its alert, as its river alerts are kept);
* **the configured factor and grace** (settings ``alerting.silent_factor``, ``alerting.exercise_grace_s``),

and decide with :func:`alerting.rules.is_silent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from alerting.rules import SILENT_FACTOR, is_silent, stream_start
from alerting.texts import DATA_AGAIN, NOT_SILENT_BY_INTERVAL, STREAM_AFRESH

_SILENCE = """
SELECT s.id, s.kind, s.municipality_code, s.exercise, s.expected_interval_s, s.created_at,
       nullif(s.exercise_since, '-infinity'::timestamptz) AS exercise_since, s.exercise_switches,
       rs.last_ts, now() AS now
FROM stations s
LEFT JOIN rule_state rs ON rs.station_id = s.id AND rs.exercise = s.exercise
WHERE ($1::text IS NULL OR s.municipality_code = $1)
ORDER BY s.id
"""


@dataclass(frozen=True, slots=True)
class Silence:
    """One station's silent-gauge verdict and its inputs (times from the database clock)."""

    station_id: str
    municipality_code: str | None
    exercise: bool
    expected_interval_s: int
    registered_at: datetime
    last_data: datetime | None  # newest reading of any kind in the station's stream; None: never reported
    now: datetime
    silent: bool
    #: when the station's exercise flag last changed (``stations.exercise_since``); None: never since registration
    exercise_since: datetime | None = None
    #: when its stream began (:func:`alerting.rules.stream_start`: the last switch, unless it only ended a
    #: flap shorter than the grace); None: at registration
    stream_since: datetime | None = None
    factor: float = SILENT_FACTOR

    @property
    def seconds_since_data(self) -> float | None:
        return None if self.last_data is None else (self.now - self.last_data).total_seconds()

    @property
    def reason(self) -> str:
        """Why it is silent, for the alert's event."""
        since = self.registered_at if self.last_data is None else self.last_data
        if self.stream_since is not None and self.stream_since > since:
            became = "an exercise" if self.exercise else "a real"
            return f"no data since it became {became} station at {self.stream_since.isoformat()}"
        if self.last_data is None:
            return f"no data since registration at {self.registered_at.isoformat()}"
        return f"no data since {self.last_data.isoformat()}"

    @property
    def data_again(self) -> bool:
        """Is it not silent because data arrived (a reading within ``factor`` intervals), rather than
        because its stream began again (a switch of its exercise flag)?"""
        age = self.seconds_since_data
        return age is not None and age <= self.factor * self.expected_interval_s

    @property
    def clear_reason(self) -> str:
        """Why a ``silent`` alert of this stream ends now that it is not silent: :data:`~alerting.texts.DATA_AGAIN`
        only when a reading arrived, otherwise the switch that began its stream afresh."""
        if self.data_again:
            return DATA_AGAIN
        if self.stream_since is None:  # no reading, no switch: its expected interval or the factor grew
            return NOT_SILENT_BY_INTERVAL
        became = "an exercise" if self.exercise else "a real"
        return STREAM_AFRESH.format(became=became, at=self.stream_since.isoformat())


async def station_silence(conn: asyncpg.Connection, *, factor: float = SILENT_FACTOR, grace_s: float = 600.0,
                          municipality_code: str | None = None) -> list[Silence]:
    """Every registered station (of one municipality, or all) with its silent verdict, ordered by id.

    ``factor`` is the setting ``alerting.silent_factor`` (intervals without data), ``grace_s`` the setting
    ``alerting.exercise_grace_s`` (seconds: a shorter excursion to the other registration is a flap, see
    :func:`alerting.rules.stream_start`). One query, one row per station; see the module docstring for the
    inputs and :func:`alerting.rules.is_silent` for the rule.
    """
    out = []
    for r in await conn.fetch(_SILENCE, municipality_code):
        since_data = None if r["last_ts"] is None else (r["now"] - r["last_ts"]).total_seconds()
        switches = [t.timestamp() for t in r["exercise_switches"]]
        start = stream_start(switches, grace_s=grace_s)
        began = None if start is None else next(t for t in r["exercise_switches"] if t.timestamp() == start)
        silent = is_silent(station_kind=r["kind"], seconds_since_data=since_data,
                           seconds_since_registered=(r["now"] - r["created_at"]).total_seconds(),
                           expected_interval_s=r["expected_interval_s"], factor=factor,
                           seconds_since_switch=None if began is None else (r["now"] - began).total_seconds())
        out.append(Silence(r["id"], r["municipality_code"], r["exercise"], r["expected_interval_s"],
                           r["created_at"], r["last_ts"], r["now"], silent, r["exercise_since"], began, factor))
    return out
