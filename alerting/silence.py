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
  ``stations.exercise_since`` when its exercise flag changed since registration: a stream is watched from
  the switch when that is later (a drill station switched to real is silent 3 intervals after the switch
  without a real reading, not at once because it was registered long ago; likewise real to exercise);
* **the configured factor** (setting ``alerting.silent_factor``),

and decide with :func:`alerting.rules.is_silent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from alerting.rules import SILENT_FACTOR, is_silent

_SILENCE = """
SELECT s.id, s.kind, s.municipality_code, s.exercise, s.expected_interval_s, s.created_at,
       nullif(s.exercise_since, '-infinity'::timestamptz) AS exercise_since, rs.last_ts, now() AS now
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

    @property
    def seconds_since_data(self) -> float | None:
        return None if self.last_data is None else (self.now - self.last_data).total_seconds()

    @property
    def reason(self) -> str:
        """Why it is silent, for the alert's event."""
        since = self.registered_at if self.last_data is None else self.last_data
        if self.exercise_since is not None and self.exercise_since > since:
            became = "an exercise" if self.exercise else "a real"
            return f"no data since it became {became} station at {self.exercise_since.isoformat()}"
        if self.last_data is None:
            return f"no data since registration at {self.registered_at.isoformat()}"
        return f"no data since {self.last_data.isoformat()}"


async def station_silence(conn: asyncpg.Connection, *, factor: float = SILENT_FACTOR,
                          municipality_code: str | None = None) -> list[Silence]:
    """Every registered station (of one municipality, or all) with its silent verdict, ordered by id.

    ``factor`` is the setting ``alerting.silent_factor`` (intervals without data). One query, one row
    per station; see the module docstring for the inputs and :func:`alerting.rules.is_silent` for the rule.
    """
    out = []
    for r in await conn.fetch(_SILENCE, municipality_code):
        since_data = None if r["last_ts"] is None else (r["now"] - r["last_ts"]).total_seconds()
        since_switch = None if r["exercise_since"] is None else (r["now"] - r["exercise_since"]).total_seconds()
        silent = is_silent(station_kind=r["kind"], seconds_since_data=since_data,
                           seconds_since_registered=(r["now"] - r["created_at"]).total_seconds(),
                           expected_interval_s=r["expected_interval_s"], factor=factor,
                           seconds_since_switch=since_switch)
        out.append(Silence(r["id"], r["municipality_code"], r["exercise"], r["expected_interval_s"],
                           r["created_at"], r["last_ts"], r["now"], silent, r["exercise_since"]))
    return out
