-- TimescaleDB: readings become a hypertable.
-- Chunk interval 1 day: a prefecture-scale fleet (~3,000 gauges and devices, 10-minute data plus
-- telemetry, report-by-exception bursts at 1 minute) writes on the order of 1-5 M rows a day, so a
-- day's chunk with its indexes stays well within 25 % of memory on a modest server, and queries for
-- "the last 24 hours" touch one or two chunks.
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);

-- Compression: segment by station (and kind/exercise) so one station's series decompresses alone;
-- order by time for delta-of-delta encoding. Chunks are compressed after 7 days, beyond the window in
-- which late gauge data (危機管理型 daily reports, back-filled telemetry) still arrives.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'station_id, kind, exercise',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => true);

-- Continuous aggregates, refreshed by TimescaleDB policies (real-time aggregation on, so the newest
-- bucket includes readings not yet materialised).
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_10m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, kind, exercise, time_bucket(INTERVAL '10 minutes', ts) AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, last(value, ts) AS last, count(*) AS n
FROM readings GROUP BY station_id, kind, exercise, bucket
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, kind, exercise, time_bucket(INTERVAL '1 hour', ts) AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, last(value, ts) AS last, count(*) AS n
FROM readings GROUP BY station_id, kind, exercise, bucket
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, kind, exercise, time_bucket(INTERVAL '1 day', ts) AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, last(value, ts) AS last, count(*) AS n
FROM readings GROUP BY station_id, kind, exercise, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_10m', start_offset => INTERVAL '2 days',
       end_offset => INTERVAL '10 minutes', schedule_interval => INTERVAL '1 minute', if_not_exists => true);
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '7 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '10 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('readings_1d', start_offset => INTERVAL '30 days',
       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour', if_not_exists => true);

-- The plain path's indexes on received_at serve the alert-rule watermark here too.
CREATE INDEX IF NOT EXISTS readings_received ON readings (received_at);
