-- Plain PostgreSQL: BRIN indexes on the append-mostly time columns, and the rollup tables that the
-- service refreshes (ingest.rollups.refresh_rollups), the same on TimescaleDB.
CREATE INDEX IF NOT EXISTS readings_ts_brin ON readings USING brin (ts);
CREATE INDEX IF NOT EXISTS readings_received_brin ON readings USING brin (received_at);

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
