-- Rollups as tables of their own on both backends, with Japan-time days and a sum (issue #17).
-- Numbered 017 (the issue) so it cannot collide with other branches' next ingest migration.
--
-- 1. Databases migrated by the former 003_timeseries.timescale.sql hold continuous aggregates under
--    these names: keep what they hold as plain tables (their policies go with them).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['readings_10m', 'readings_1h', 'readings_1d'] LOOP
        IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                   WHERE c.relname = t AND s.nspname = current_schema() AND c.relkind = 'v') THEN
            EXECUTE format('CREATE TABLE %I AS SELECT station_id, kind, exercise, bucket, min, max, avg, last, n '
                           'FROM %I WHERE bucket IS NOT NULL', t || '_017', t);
            EXECUTE format('DROP MATERIALIZED VIEW %I CASCADE', t);
            EXECUTE format('ALTER TABLE %I RENAME TO %I', t || '_017', t);
            EXECUTE format('ALTER TABLE %I ALTER COLUMN station_id SET NOT NULL, ALTER COLUMN kind SET NOT NULL, '
                           'ALTER COLUMN exercise SET NOT NULL, ALTER COLUMN bucket SET NOT NULL, '
                           'ADD PRIMARY KEY (station_id, kind, exercise, bucket)', t);
        END IF;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS rollup_watermark (
    id boolean PRIMARY KEY DEFAULT true CHECK (id), refreshed_to timestamptz NOT NULL
);

-- 2. The sum of each bucket (daily rainfall is the sum of a Japanese day); existing rows get avg × n.
ALTER TABLE readings_10m ADD COLUMN IF NOT EXISTS sum double precision;
ALTER TABLE readings_1h ADD COLUMN IF NOT EXISTS sum double precision;
ALTER TABLE readings_1d ADD COLUMN IF NOT EXISTS sum double precision;
UPDATE readings_10m SET sum = avg * n WHERE sum IS NULL;
UPDATE readings_1h SET sum = avg * n WHERE sum IS NULL;

-- 3. Days were UTC days (09:00-09:00 JST); they become Japanese days (00:00-24:00 JST). The hourly
--    rollups nest in both, so the days are rebuilt from them (this keeps days whose raw readings
--    retention has already dropped). 10-minute and hourly buckets do not move.
DELETE FROM readings_1d;
INSERT INTO readings_1d (station_id, kind, exercise, bucket, min, max, avg, sum, last, n)
SELECT station_id, kind, exercise,
       date_bin(INTERVAL '1 day', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+09') AS day,
       min(min), max(max), sum(sum) / nullif(sum(n), 0), sum(sum), (array_agg(last ORDER BY bucket DESC))[1],
       sum(n)::bigint
FROM readings_1h GROUP BY station_id, kind, exercise, day;

-- 4. Recompute every bucket that still has raw readings at the next refresh (continuous aggregates
--    missed backfilled and late data).
DELETE FROM rollup_watermark;
