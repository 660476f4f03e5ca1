-- Dead letters keep a bounded prefix of the raw bytes (ingest.dead_letter_max_bytes) with the full
-- length and SHA-256 of the payload, and one row per message however often it is delivered: a
-- message is identified by message_key = SHA-256(topic, 0x00, payload) and its reason; a redelivery
-- counts in `deliveries` and `last_received_at` instead of adding a row (issues #15 item 7, #23 item 5).
-- dead_letters is a plain table on TimescaleDB too, so this one file serves both.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS payload_length integer,
    ADD COLUMN IF NOT EXISTS payload_sha256 bytea,
    ADD COLUMN IF NOT EXISTS message_key bytea,
    ADD COLUMN IF NOT EXISTS deliveries integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS last_received_at timestamptz;

-- Rows kept before: their payload is whole, so length and hashes are exact.
UPDATE dead_letters
SET payload_length = octet_length(payload),
    payload_sha256 = sha256(payload),
    message_key = sha256(convert_to(topic, 'UTF8') || '\x00'::bytea || payload),
    last_received_at = received_at
WHERE message_key IS NULL;

-- Redeliveries stored twice before: keep the first row, counting the others in it.
WITH ranked AS (
    SELECT id, first_value(id) OVER w AS keep, count(*) OVER w AS n, max(received_at) OVER w AS last
    FROM dead_letters
    WINDOW w AS (PARTITION BY message_key, reason ORDER BY id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
), kept AS (
    UPDATE dead_letters d SET deliveries = r.n, last_received_at = r.last
    FROM ranked r WHERE d.id = r.id AND r.id = r.keep AND r.n > 1
)
DELETE FROM dead_letters d USING ranked r WHERE d.id = r.id AND r.id <> r.keep;

-- The default bound (4 KiB) for rows kept whole before; length and hash above still describe the whole.
UPDATE dead_letters SET payload = substring(payload FROM 1 FOR 4096) WHERE octet_length(payload) > 4096;

ALTER TABLE dead_letters
    ALTER COLUMN payload_length SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL,
    ALTER COLUMN message_key SET NOT NULL,
    ALTER COLUMN last_received_at SET NOT NULL,
    ALTER COLUMN last_received_at SET DEFAULT now();

CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_message ON dead_letters (message_key, reason);
-- retention (ingest.dead_letter_retention_days) deletes by the last delivery
CREATE INDEX IF NOT EXISTS dead_letters_last_received ON dead_letters (last_received_at);
