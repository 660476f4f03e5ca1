-- TimescaleDB: readings become a hypertable (with the rows already there, when a database first
-- migrated as plain PostgreSQL gets the extension later: this file then runs on top of
-- 003_timeseries.plain.sql, so every statement here must also apply to that state).
-- Chunk interval 1 day: a prefecture-scale fleet (~3,000 gauges and devices, 10-minute data plus
-- telemetry, report-by-exception bursts at 1 minute) writes on the order of 1-5 M rows a day, so a
-- day's chunk with its indexes stays well within 25 % of memory on a modest server, and queries for
-- "the last 24 hours" touch one or two chunks.
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);

-- Compression: segment by station (and kind/exercise) so one station's series decompresses alone;
-- order by time for delta-of-delta encoding. Chunks are compressed after 7 days; late readings into
-- compressed chunks still work (TimescaleDB >= 2.18.1: see deploy/README.md for the version floor).
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'station_id, kind, exercise',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => true);

-- Rollups are tables of their own on both backends, refreshed by ingest.rollups from the buckets that
-- newly received readings touch (not continuous aggregates: their policies refresh fixed windows, so
-- backfilled history and late readings outside a window never reached them, and a window reaching
-- past the retention horizon emptied them; see ingest/rollups.py).
CREATE TABLE IF NOT EXISTS readings_10m (
    station_id text NOT NULL, kind text NOT NULL, exercise boolean NOT NULL, bucket timestamptz NOT NULL,
    min double precision, max double precision, avg double precision, last double precision, n bigint,
    PRIMARY KEY (station_id, kind, exercise, bucket)
);
CREATE TABLE IF NOT EXISTS readings_1h (LIKE readings_10m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS readings_1d (LIKE readings_10m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS rollup_watermark (
    id boolean PRIMARY KEY DEFAULT true CHECK (id), refreshed_to timestamptz NOT NULL
);

-- The rollup refresh and the alert-rule watermark read readings by arrival time. (TimescaleDB also
-- keeps min/max received_at per compressed batch for an indexed column, so compressed chunks are
-- skipped by those reads without being decompressed.)
CREATE INDEX IF NOT EXISTS readings_received ON readings (received_at);
