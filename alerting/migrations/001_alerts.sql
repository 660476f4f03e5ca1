-- Alerts, their history, acknowledgements, evacuation orders, the audit log, and the rules worker's
-- own state (owned by alerting).
--
-- An alert is one condition of one station (or one evacuation order) over its life: at most one open
-- alert per (station, condition, exercise). Exercise is part of the identity: a drill never touches a
-- real alert, and every output (CAP status, MQTT, API) carries the flag.
CREATE TABLE IF NOT EXISTS evacuation_orders (
    id                bigserial PRIMARY KEY,
    municipality_code text NOT NULL,
    area              jsonb,                  -- GeoJSON Polygon/MultiPolygon; NULL = the whole municipality
    area_desc         text,
    level             smallint NOT NULL CHECK (level BETWEEN 3 AND 5),
    note              text,
    exercise          boolean NOT NULL DEFAULT false,
    issued_by         text NOT NULL,
    issued_at         timestamptz NOT NULL DEFAULT now(),
    cancelled_by      text,
    cancelled_at      timestamptz,
    cancel_note       text
);
CREATE INDEX IF NOT EXISTS evacuation_orders_active ON evacuation_orders (municipality_code) WHERE cancelled_at IS NULL;

CREATE TABLE IF NOT EXISTS alerts (
    id                bigserial PRIMARY KEY,
    station_id        text REFERENCES stations (id) ON DELETE SET NULL,
    order_id          bigint REFERENCES evacuation_orders (id),
    condition         text NOT NULL CHECK (condition IN ('river_level', 'low_battery', 'fault', 'silent',
                                                         'evacuation_order')),
    exercise          boolean NOT NULL DEFAULT false,
    audience          text NOT NULL CHECK (audience IN ('public', 'staff')),
    municipality_code text,
    level             smallint NOT NULL,      -- 0 staff condition, 1 standby, 2..5 警戒レベルN相当
    max_level         smallint NOT NULL,
    state             text NOT NULL CHECK (state IN ('raised', 'escalated', 'de-escalated', 'cleared')),
    reason            text NOT NULL DEFAULT '',
    value             double precision,       -- the reading that caused the last change
    threshold         double precision,
    raised_at         timestamptz NOT NULL,   -- reading time
    changed_at        timestamptz NOT NULL,   -- reading time of the last change
    cleared_at        timestamptz,            -- reading time (or wall time for orders and silence)
    version           integer NOT NULL DEFAULT 1,   -- one per CAP message (Alert, Update…, Cancel)
    acknowledged_by   text,
    acknowledged_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open
    ON alerts (station_id, condition, exercise) WHERE cleared_at IS NULL AND station_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_per_order ON alerts (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_active ON alerts (municipality_code) WHERE cleared_at IS NULL;
CREATE INDEX IF NOT EXISTS alerts_changed ON alerts (updated_at);

-- Every change of every alert, in order: the SSE stream's ids (Last-Event-ID) and the CAP references.
CREATE TABLE IF NOT EXISTS alert_events (
    id           bigserial PRIMARY KEY,
    alert_id     bigint NOT NULL REFERENCES alerts (id),
    kind         text NOT NULL CHECK (kind IN ('raised', 'escalated', 'de-escalated', 'cleared',
                                               'acknowledged', 're-evaluated')),
    version      integer NOT NULL,            -- alerts.version after this event
    level        smallint,
    old_level    smallint,
    reading_ts   timestamptz,
    value        double precision,
    reason       text,
    actor        text,                        -- 'rules' or a staff user
    note         text,
    exercise     boolean NOT NULL,
    municipality_code text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, id);

CREATE TABLE IF NOT EXISTS alert_acknowledgements (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    user_name text NOT NULL,
    note      text,
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_object ON audit_log (object_type, object_id, at);

-- The rules worker's state: per (station, exercise) stream, the rule state machine as JSON, and
-- checkpoints of it to re-evaluate from when a late reading arrives.
CREATE TABLE IF NOT EXISTS rule_state (
    station_id  text NOT NULL,
    exercise    boolean NOT NULL,
    state       jsonb NOT NULL,
    last_ts     timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, exercise)
);
CREATE TABLE IF NOT EXISTS rule_checkpoints (
    station_id  text NOT NULL,
    exercise    boolean NOT NULL,
    ts          timestamptz NOT NULL,
    state       jsonb NOT NULL,
    PRIMARY KEY (station_id, exercise, ts)
);
CREATE TABLE IF NOT EXISTS rule_watermark (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    received_at timestamptz NOT NULL
);
