-- Official information (気象庁防災情報XML): raw telegrams, what Sonae read from them, feed state.
CREATE TABLE IF NOT EXISTS jma_telegrams (
    id            bigserial PRIMARY KEY,
    link          text NOT NULL UNIQUE,          -- Atom entry link, or file:<sha256> for files
    sha256        text NOT NULL,
    raw           bytea NOT NULL,                 -- the telegram as received
    received_at   timestamptz NOT NULL DEFAULT now(),
    telegram_time timestamptz,                    -- Control/DateTime
    type          text,
    status        text,                           -- 通常 / 訓練 / 試験
    info_type     text,                           -- 発表 / 訂正 / 取消
    event_key     text,
    serial        int,
    title         text,
    outcome       text NOT NULL,                  -- applied / stale / ignored_test / failed
    error_reason  text,
    error_detail  text,
    parsed        jsonb
);
CREATE INDEX IF NOT EXISTS jma_telegrams_event ON jma_telegrams (event_key, serial);

-- The newest applied telegram per event (type | EventID | exercise): orders updates.
CREATE TABLE IF NOT EXISTS jma_events (
    event_key   text PRIMARY KEY,
    report_time timestamptz NOT NULL,
    serial      int NOT NULL,
    telegram_id bigint NOT NULL REFERENCES jma_telegrams (id)
);

-- Official information in force, per municipality (rows of an event are replaced by each newer telegram).
CREATE TABLE IF NOT EXISTS jma_official_info (
    event_key         text NOT NULL,
    municipality_code text NOT NULL,
    phenomenon        text NOT NULL,              -- 土砂災害 / 洪水 / 大雨 / 高潮 / 津波
    kind              text NOT NULL,              -- as JMA names it (氾濫危険情報, レベル４土砂災害危険警報 …)
    level             int NOT NULL CHECK (level BETWEEN 1 AND 5),
    status            text NOT NULL,              -- 発表 / 継続
    area_code         text NOT NULL,
    area_name         text NOT NULL,
    title             text NOT NULL,
    headline          text NOT NULL,
    editorial_office  text NOT NULL,
    exercise          boolean NOT NULL,
    telegram_id       bigint NOT NULL REFERENCES jma_telegrams (id),
    valid_from        timestamptz NOT NULL,
    valid_until       timestamptz,
    PRIMARY KEY (event_key, municipality_code, phenomenon, kind, area_code)
);
CREATE INDEX IF NOT EXISTS jma_official_info_muni ON jma_official_info (municipality_code);

-- Area codes no table maps (reported, never guessed).
CREATE TABLE IF NOT EXISTS jma_unknown_areas (
    area_type  text NOT NULL,
    area_code  text NOT NULL,
    area_name  text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    seen       bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (area_type, area_code)
);

-- Conditional GET state per feed URL.
CREATE TABLE IF NOT EXISTS jma_feeds (
    url           text PRIMARY KEY,
    etag          text,
    last_modified text,
    checked_at    timestamptz,
    error         text
);
