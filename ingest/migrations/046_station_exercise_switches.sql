-- The times of the station's last changes of its exercise flag, oldest first (at most 32; the newest is
-- exercise_since). alerting.rules.stream_start reads them: a stream is watched for silence from the switch
-- that began it, except that a switch back within the grace (setting alerting.exercise_grace_s) after a short
-- period in the other registration does not begin a new stream (the real alerts outlive such a flap, so the
-- silence clock must too). Empty for a station whose flag never changed since registration.
-- stations is a plain table under TimescaleDB too, so one file serves both variants.
ALTER TABLE stations ADD COLUMN IF NOT EXISTS exercise_switches timestamptz[] NOT NULL DEFAULT '{}';
UPDATE stations SET exercise_switches = ARRAY[exercise_since]
 WHERE exercise_since <> '-infinity' AND exercise_switches = '{}';

CREATE OR REPLACE FUNCTION sonae_station_exercise_since() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.exercise_since := '-infinity';
        NEW.exercise_switches := '{}';
    ELSIF NEW.exercise IS DISTINCT FROM OLD.exercise THEN
        NEW.exercise_since := now();
        NEW.exercise_switches := (OLD.exercise_switches || now())[greatest(1, cardinality(OLD.exercise_switches) - 30):];
    ELSE
        NEW.exercise_since := OLD.exercise_since;
        NEW.exercise_switches := OLD.exercise_switches;
    END IF;
    RETURN NEW;
END $$;
