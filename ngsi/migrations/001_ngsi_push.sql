-- The NGSI-LD push to a context broker (owned by ngsi; ngsi/push.py). One row per entity the broker
-- should hold: what to send (op, entity, digest), whether it is sent, and its retries. A row whose
-- tries are used up is the dead-letter list (state 'dead'); it is queued again when the entity changes.
CREATE TABLE IF NOT EXISTS ngsi_push_queue (
    entity_id       text PRIMARY KEY,
    entity_type     text NOT NULL,
    op              text NOT NULL CHECK (op IN ('upsert', 'delete')),
    entity          jsonb,                     -- normalized NGSI-LD, without @context (added when sent)
    digest          text NOT NULL,             -- of what is to be sent
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    changed_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_status     integer,
    last_error      text
);
CREATE INDEX IF NOT EXISTS ngsi_push_queue_due ON ngsi_push_queue (next_attempt_at) WHERE state = 'queued';
