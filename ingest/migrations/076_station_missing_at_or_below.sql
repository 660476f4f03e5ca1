-- The stage at or below which a gauge's reading is 欠測 (a missing value), per station (ingest.registry.MISSING_RULE):
-- 0.0 as before for every station (telemetry exports write 欠測 as 0), NULL for a gauge without such a sentinel
-- (real gauges read below 0 m T.P.). No threshold may lie at or below it (Station.validate).
-- stations is a plain table under TimescaleDB too, so one file serves both variants.
ALTER TABLE stations ADD COLUMN IF NOT EXISTS missing_at_or_below double precision DEFAULT 0.0;
