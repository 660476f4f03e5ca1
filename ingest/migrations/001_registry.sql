-- Station and device registry (owned by ingest).
CREATE TABLE IF NOT EXISTS municipalities (
    code        text PRIMARY KEY,               -- 6-digit 団体コード, e.g. 072036 (郡山市)
    name_ja     text NOT NULL,
    name_en     text,
    prefecture  text
);

CREATE TABLE IF NOT EXISTS stations (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name                text NOT NULL,
    name_en             text,
    kana                text,
    kind                text NOT NULL DEFAULT 'river_level'
                        CHECK (kind IN ('river_level', 'rainfall', 'device')),
    -- flood_forecast: 洪水予報/水位周知河川 gauges with the four thresholds;
    -- crisis: 危機管理型水位計 with up to three (観測開始水位, 危険水位, 氾濫開始水位).
    gauge_type          text NOT NULL DEFAULT 'flood_forecast'
                        CHECK (gauge_type IN ('flood_forecast', 'crisis', 'none')),
    river               text,
    municipality_code   text,
    lat                 double precision CHECK (lat BETWEEN -90 AND 90),
    lon                 double precision CHECK (lon BETWEEN -180 AND 180),
    unit                text NOT NULL DEFAULT 'm',
    datum               text,                    -- gauge zero or elevation (T.P.); thresholds use the same datum
    expected_interval_s integer NOT NULL DEFAULT 600 CHECK (expected_interval_s > 0),
    th_standby          double precision,        -- 水防団待機水位
    th_caution          double precision,        -- 氾濫注意水位
    th_evacuation       double precision,        -- 避難判断水位
    th_danger           double precision,        -- 氾濫危険水位
    th_obs_start        double precision,        -- 観測開始水位 (crisis gauges)
    th_crisis           double precision,        -- 危険水位 (crisis gauges)
    th_overflow         double precision,        -- 氾濫開始水位 (crisis gauges)
    exercise            boolean NOT NULL DEFAULT false,  -- exists only for drills
    source              text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stations_municipality ON stations (municipality_code);
