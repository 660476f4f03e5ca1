-- Per-gauge options of the alert rules (owned by ingest's registry, read by alerting).
-- stations is a plain table under TimescaleDB too, so one file serves both variants.
--
-- max_rate_m_per_h: the fastest change of stage taken as physically plausible for this gauge's river
--   (NULL = the rules' default, see alerting.rules.RuleConfig); a faster change raises only a
--   staff-only unconfirmed alert until the next reading confirms it.
-- exercise_time_scale: how many times faster than real time this station's exercise scenario runs;
--   the rules shrink their hold times by it for the station's EXERCISE readings only (1 = real time).
ALTER TABLE stations ADD COLUMN IF NOT EXISTS max_rate_m_per_h double precision;
ALTER TABLE stations ADD COLUMN IF NOT EXISTS exercise_time_scale double precision NOT NULL DEFAULT 1;
ALTER TABLE stations DROP CONSTRAINT IF EXISTS stations_max_rate_check;
ALTER TABLE stations ADD CONSTRAINT stations_max_rate_check
    CHECK (max_rate_m_per_h IS NULL OR max_rate_m_per_h > 0);
ALTER TABLE stations DROP CONSTRAINT IF EXISTS stations_exercise_time_scale_check;
ALTER TABLE stations ADD CONSTRAINT stations_exercise_time_scale_check
    CHECK (exercise_time_scale >= 1 AND (exercise_time_scale = 1 OR exercise));
