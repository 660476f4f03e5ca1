-- Raw readings: one row per (station, kind, exercise, reading time). The primary key makes redelivered
-- MQTT messages harmless (INSERT ... ON CONFLICT DO NOTHING) and contains the time column, as
-- TimescaleDB requires of unique indexes on a hypertable.
CREATE TABLE IF NOT EXISTS readings (
    station_id  text NOT NULL,
    kind        text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    exercise    boolean NOT NULL DEFAULT false,
    seq         bigint,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, kind, exercise, ts)
);

-- Messages that could not be stored, kept with their raw bytes and the reason.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, received_at);

-- Readings of stations not (yet) in the registry, held until the station is registered.
CREATE TABLE IF NOT EXISTS quarantined_readings (
    station_id  text NOT NULL,
    kind        text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    exercise    boolean NOT NULL DEFAULT false,
    seq         bigint,
    topic       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, kind, exercise, ts)
);
