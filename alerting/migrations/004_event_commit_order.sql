-- Commit order of alert events (issue #15 item 4).
--
-- alert_events.id comes from a sequence when the row is inserted, but rows become visible when their
-- transaction commits: two staff issuing orders at the same moment can commit id 12 after id 13, and a
-- reader that follows `id > last` (the SSE hub, Last-Event-ID replay, notification fan-out) has
-- already moved past 12 for good. `pos` is a second number, given at COMMIT time by a deferred
-- constraint trigger that first takes a transaction-scoped advisory lock: the lock is released only
-- after the transaction is visible (PostgreSQL releases locks after ProcArrayEndTransaction), so the
-- next writer's positions come strictly after it. Every row with pos <= N is therefore committed
-- before any row with pos > N can be, and `pos > last` never skips.
--
-- Why not a snapshot horizon (pg_snapshot_xmin of pg_current_snapshot()): xmin is cluster-wide, so any
-- long transaction anywhere (a TimescaleDB compression job, a long COPY, a migration, another
-- database's work) would hold back public alerts for its whole duration. The lock here serialises only
-- the last moment of transactions that wrote alert events, a few per minute even in a flood.
-- Plain PostgreSQL and TimescaleDB alike (alert_events is an ordinary table).
ALTER TABLE alert_events ADD COLUMN IF NOT EXISTS pos bigint;
UPDATE alert_events SET pos = id WHERE pos IS NULL;  -- rows committed before this migration keep their order
CREATE SEQUENCE IF NOT EXISTS alert_events_pos_seq;
SELECT setval('alert_events_pos_seq', coalesce((SELECT max(pos) FROM alert_events), 0) + 1, false);
CREATE UNIQUE INDEX IF NOT EXISTS alert_events_pos ON alert_events (pos);

CREATE OR REPLACE FUNCTION alert_events_commit_pos() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- 1397641039 = 0x534E4F4F ("SNOO"): alerting.store.COMMIT_ORDER_LOCK
    PERFORM pg_advisory_xact_lock(1397641039);
    UPDATE alert_events SET pos = nextval('alert_events_pos_seq') WHERE id = NEW.id AND pos IS NULL;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS alert_events_commit_pos ON alert_events;
CREATE CONSTRAINT TRIGGER alert_events_commit_pos AFTER INSERT ON alert_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION alert_events_commit_pos();
