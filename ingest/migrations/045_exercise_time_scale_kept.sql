-- exercise_time_scale is the clock of the station's exercise scenario and applies while the station is an
-- exercise station (alerting.worker: an exercise stream of an exercise station); a station switched to real
-- keeps it, unused, so that switching it back to exercise runs its drills on their clock again (before, the
-- constraint below forced it to 1 on every switch to real and it stayed 1 after the switch back).
-- A station file still refuses a scale on a real station (ingest.registry.station_from_mapping).
ALTER TABLE stations DROP CONSTRAINT IF EXISTS stations_exercise_time_scale_check;
ALTER TABLE stations ADD CONSTRAINT stations_exercise_time_scale_check CHECK (exercise_time_scale >= 1);
