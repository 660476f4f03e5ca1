-- When the station's exercise flag last changed (its registration as a real or an exercise station began):
-- the rules worker judges a reading only if it arrived under the registration the station has now
-- (readings.received_at >= exercise_since; alerting.worker.RulesWorker). A real reading that arrived while the
-- station was an exercise station was a drill and never judged; a drill reading of the exercise registration
-- that arrives at the worker after the switch to real must not raise a drill alert on the real gauge.
-- '-infinity' for a station whose flag never changed since registration (every reading is its own).
-- stations is a plain table under TimescaleDB too, so one file serves both variants.
ALTER TABLE stations ADD COLUMN IF NOT EXISTS exercise_since timestamptz NOT NULL DEFAULT '-infinity';

CREATE OR REPLACE FUNCTION sonae_station_exercise_since() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.exercise_since := '-infinity';
    ELSIF NEW.exercise IS DISTINCT FROM OLD.exercise THEN
        NEW.exercise_since := now();
    ELSE
        NEW.exercise_since := OLD.exercise_since;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS station_exercise_since ON stations;
CREATE TRIGGER station_exercise_since BEFORE INSERT OR UPDATE ON stations
    FOR EACH ROW EXECUTE FUNCTION sonae_station_exercise_since();
