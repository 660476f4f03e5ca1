-- Notifications (owned by notify): Web Push subscriptions, partner webhooks, the staff on-call roster,
-- and the delivery queue they all share.
--
-- Privacy: a push subscription stores the push service endpoint and its keys, the language, the
-- drills opt-in and the chosen areas — nothing else. A circle's centre is a position the resident
-- chose; it is stored rounded to 0.001° (about 110 m north-south, 90 m east-west in Fukushima) and
-- never logged. No position history exists: changing areas means a new subscription.

CREATE TABLE IF NOT EXISTS push_subscriptions (
    id           bigserial PRIMARY KEY,
    endpoint     text NOT NULL UNIQUE,           -- the push service's URL for this browser
    p256dh       bytea NOT NULL,                 -- the browser's P-256 public key (65 bytes, uncompressed)
    auth         bytea NOT NULL,                 -- the 16-byte authentication secret
    lang         text NOT NULL CHECK (lang IN ('ja-JP', 'en-US', 'ja-JP-x-easy')),
    drills       boolean NOT NULL DEFAULT false, -- also receive exercise (訓練) alerts
    token_hash   bytea NOT NULL,                 -- SHA-256 of the unsubscribe token
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_sent_at timestamptz
);

-- One row per chosen area: a municipality (団体コード), or a circle (rounded centre, radius).
-- near_municipality: the municipality of the shelter nearest to a circle's centre, computed once
-- at subscription time, so that whole-municipality orders reach circles inside it.
CREATE TABLE IF NOT EXISTS push_areas (
    subscription_id   bigint NOT NULL REFERENCES push_subscriptions (id) ON DELETE CASCADE,
    municipality_code text,
    lat               double precision CHECK (lat BETWEEN -90 AND 90),
    lon               double precision CHECK (lon BETWEEN -180 AND 180),
    radius_m          integer CHECK (radius_m BETWEEN 100 AND 20000),
    near_municipality text,
    CHECK ((municipality_code IS NOT NULL AND lat IS NULL AND lon IS NULL AND radius_m IS NULL)
           OR (municipality_code IS NULL AND lat IS NOT NULL AND lon IS NOT NULL AND radius_m IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS push_areas_subscription ON push_areas (subscription_id);
CREATE INDEX IF NOT EXISTS push_areas_municipality ON push_areas (municipality_code) WHERE municipality_code IS NOT NULL;
CREATE INDEX IF NOT EXISTS push_areas_near ON push_areas (near_municipality) WHERE near_municipality IS NOT NULL;
CREATE INDEX IF NOT EXISTS push_areas_lat ON push_areas (lat) WHERE lat IS NOT NULL;

-- The application server's VAPID key pair (RFC 8292) when none is configured: made once, shared by
-- every process. `notify.vapid_private_key` overrides it.
CREATE TABLE IF NOT EXISTS push_vapid (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    private_pem text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Partner systems (LINE/Slack relays, a broadcaster's L-Alert gateway, the prefecture's data platform).
CREATE TABLE IF NOT EXISTS webhooks (
    id                bigserial PRIMARY KEY,
    url               text NOT NULL CHECK (url ~ '^https?://'),
    description       text NOT NULL DEFAULT '',
    secret            text NOT NULL,                 -- HMAC-SHA256 key (needed in clear to sign)
    format            text NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'cap')),
    municipality_code text,                          -- filter and scope; NULL: the whole prefecture
    min_level         smallint NOT NULL DEFAULT 0,
    conditions        text[],                        -- NULL: every condition
    include_staff     boolean NOT NULL DEFAULT false, -- also staff-only alerts (standby, device health)
    drills            boolean NOT NULL DEFAULT false,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);

-- Staff duty roster: on-call staff of a municipality get level >= 3 alerts by email.
CREATE TABLE IF NOT EXISTS notify_roster (
    account_id        integer PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    municipality_code text NOT NULL,
    email             text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    lang              text NOT NULL DEFAULT 'ja-JP' CHECK (lang IN ('ja-JP', 'en-US', 'ja-JP-x-easy')),
    on_call           boolean NOT NULL DEFAULT false,
    drills            boolean NOT NULL DEFAULT true,
    updated_by        text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notify_roster_municipality ON notify_roster (municipality_code) WHERE on_call;

-- The delivery queue: one row per (target, alert event). It survives restarts; workers claim rows
-- with FOR UPDATE SKIP LOCKED and lease them by moving next_attempt_at forward while they send.
-- state: queued (waiting or leased) → sent | dead (dead letter after the last try) | gone (the
-- subscription or webhook was removed).
CREATE TABLE IF NOT EXISTS notify_queue (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('push', 'webhook', 'email')),
    target_id       bigint NOT NULL,
    alert_event_id  bigint NOT NULL,
    alert_id        bigint NOT NULL,
    exercise        boolean NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'dead', 'gone')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    event_at        timestamptz NOT NULL,            -- when the alert changed (latency is measured from it)
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_status     integer,
    last_error      text,
    UNIQUE (kind, target_id, alert_event_id)
);
CREATE INDEX IF NOT EXISTS notify_queue_due ON notify_queue (next_attempt_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS notify_queue_target ON notify_queue (kind, target_id, id);

-- Every attempt of a webhook or email delivery (the delivery log staff read). Push attempts are not
-- logged one by one (there may be tens of thousands); their queue rows say what happened.
CREATE TABLE IF NOT EXISTS notify_attempts (
    id          bigserial PRIMARY KEY,
    queue_id    bigint NOT NULL REFERENCES notify_queue (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,
    error       text,
    duration_ms integer
);
CREATE INDEX IF NOT EXISTS notify_attempts_queue ON notify_attempts (queue_id, id);

-- Which alert events have been fanned out. Events above `floor` that are not in notify_fanout are
-- still to do; the floor moves up over rows older than a few minutes (see notify.store.fan_out).
CREATE TABLE IF NOT EXISTS notify_fanout (
    event_id  bigint PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS notify_cursor (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    floor  bigint NOT NULL
);
-- A new installation starts after the events that exist: no flood of old alerts.
INSERT INTO notify_cursor (id, floor) SELECT true, coalesce(max(id), 0) FROM alert_events ON CONFLICT DO NOTHING;
