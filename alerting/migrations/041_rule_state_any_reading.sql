-- rule_state.last_ts is the newest reading of ANY kind of a (station, exercise) stream: the input of the
-- silent-station rule shared by the rules worker and the staff console (alerting/silence.py). Before,
-- the worker recorded only level, battery and status readings, and only for streams it had read since
-- it first ran; so that no reporting station (a rain gauge, a telemetry-only device) is alerted silent
-- after this upgrade merely for lacking a row, each station's own stream is filled in once from its
-- readings: the newest reading per kind through the readings' key (station_id, kind, exercise, ts), a
-- few index probes per station rather than a scan of the (possibly compressed) hypertable. The kinds
-- are those ingest accepts (ingest/contract.py PLAUSIBLE). Later readings are recorded by the worker.
INSERT INTO rule_state AS rs (station_id, exercise, state, last_ts)
SELECT s.id, s.exercise, '{}'::jsonb, latest.ts
FROM stations s
CROSS JOIN LATERAL (
    SELECT max(r.ts) AS ts
    FROM unnest(ARRAY['level', 'rain', 'battery_pct', 'battery_v', 'rssi_dbm', 'temperature_c', 'status']) AS k(kind)
    CROSS JOIN LATERAL (SELECT ts FROM readings
                        WHERE station_id = s.id AND kind = k.kind AND exercise = s.exercise
                        ORDER BY ts DESC LIMIT 1) r
) latest
WHERE latest.ts IS NOT NULL
ON CONFLICT (station_id, exercise) DO UPDATE SET last_ts = greatest(rs.last_ts, EXCLUDED.last_ts);
