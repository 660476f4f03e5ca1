-- Each audit row names the municipality (6-digit 団体コード) the action concerns, when it concerns one
-- (alerting.audit.record_audit's municipality_code): GET /api/v1/audit shows a municipal admin the rows about its
-- municipality or by its accounts (found: only rows by its accounts, so what a prefecture admin or the rule engine
-- did there was missing from its trail). NULL: an action about no municipality (a prefecture-wide account, map,
-- run), or an old row whose municipality cannot be told (below).
-- Plain PostgreSQL and TimescaleDB alike (audit_log is an ordinary table).
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS municipality_code text;
CREATE INDEX IF NOT EXISTS audit_log_municipality ON audit_log (municipality_code, id);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, id);

-- Backfill of the rows written before, from what tells their municipality reliably, first match kept. Codes in
-- old details may be 5-digit (before issue #14): sonae_municipality_code() (ingest 020) gives the 6-digit code.
-- 1. An order's rows: its order (an order's municipality never changes).
UPDATE audit_log l SET municipality_code = o.municipality_code
    FROM evacuation_orders o
    WHERE l.municipality_code IS NULL AND l.object_type = 'evacuation_order' AND l.object_id = o.id::text;
-- 2. An alert moved (alert.moved): the municipality it moved to.
UPDATE audit_log SET municipality_code = sonae_municipality_code(detail->>'to')
    WHERE municipality_code IS NULL AND action = 'alert.moved' AND detail->>'to' ~ '^[0-9]{5,6}$';
-- 3. Any other row of an alert: the municipality it had then, i.e. the one the next alert.moved row of that alert
--    says it left, or, with no later move, the alert's municipality now (an alert changes municipality only by
--    move_alert, which writes alert.moved).
UPDATE audit_log l SET municipality_code = coalesce(
        (SELECT sonae_municipality_code(m.detail->>'from') FROM audit_log m
          WHERE m.object_type = 'alert' AND m.object_id = l.object_id AND m.action = 'alert.moved' AND m.id > l.id
          ORDER BY m.id LIMIT 1),
        a.municipality_code)
    FROM alerts a
    WHERE l.municipality_code IS NULL AND l.object_type = 'alert' AND l.action <> 'alert.moved'
      AND l.object_id = a.id::text
      AND NOT EXISTS (SELECT 1 FROM audit_log m WHERE m.object_type = 'alert' AND m.object_id = l.object_id
                        AND m.action = 'alert.moved' AND m.id > l.id AND m.detail->>'from' IS NULL);
-- 4. A municipality named by the row itself: hazard_area.added, account.created, roster.updated/removed,
--    webhook.created (detail municipality_code); a station edit that moved the station (detail to).
UPDATE audit_log SET municipality_code = sonae_municipality_code(detail->>'municipality_code')
    WHERE municipality_code IS NULL AND detail->>'municipality_code' ~ '^[0-9]{5,6}$';
UPDATE audit_log SET municipality_code = sonae_municipality_code(detail->'to'->>'municipality_code')
    WHERE municipality_code IS NULL AND action = 'station.updated'
      AND detail->'to'->>'municipality_code' ~ '^[0-9]{5,6}$';
-- 5. A webhook deleted: the municipality its webhook.created row names.
UPDATE audit_log l SET municipality_code = c.municipality_code
    FROM audit_log c
    WHERE l.municipality_code IS NULL AND l.action = 'webhook.deleted' AND c.action = 'webhook.created'
      AND c.object_id = l.object_id AND c.municipality_code IS NOT NULL;
-- 6. Tables of later components (api's accounts, notify's webhooks, evac's hazard areas), when they exist (a database being created
--    has no audit rows yet, and no such tables when alerting's migrations run).
DO $$
BEGIN
    IF to_regclass('hazard_areas') IS NOT NULL THEN
        -- a hazard area keeps the municipality it was drawn in
        EXECUTE $q$UPDATE audit_log l SET municipality_code = h.municipality_code FROM hazard_areas h
                   WHERE l.municipality_code IS NULL AND l.object_type = 'hazard_area' AND l.object_id = h.id::text$q$;
    END IF;
    IF to_regclass('webhooks') IS NOT NULL THEN
        -- a webhook keeps its municipality (deleted ones too: their row stays, deleted_at set)
        EXECUTE $q$UPDATE audit_log l SET municipality_code = w.municipality_code FROM webhooks w
                   WHERE l.municipality_code IS NULL AND l.object_type = 'webhook' AND l.object_id = w.id::text$q$;
    END IF;
    IF to_regclass('accounts') IS NOT NULL THEN
        -- an account's rows (login, password, disabled, real injection): the account's municipality, which never
        -- changes
        EXECUTE $q$UPDATE audit_log l SET municipality_code = a.municipality_code FROM accounts a
                   WHERE l.municipality_code IS NULL AND l.object_type = 'account' AND l.object_id = a.username$q$;
        -- 7. Whatever a municipal account did was in its municipality (its scope allows nothing else)
        EXECUTE $q$UPDATE audit_log l SET municipality_code = a.municipality_code FROM accounts a
                   WHERE l.municipality_code IS NULL AND l.actor = a.username$q$;
    END IF;
END
$$;
-- What stays NULL: what a prefecture admin or `command line` did to a station that it did not move, a shelter,
-- a hazard map or a simulation (the station's and shelter's municipality now may not be the one they had: the
-- registry and the shelter import change them without an audit row; a map or run may be prefecture-wide); the
-- rows of an alert or hazard area since deleted; rows of accounts without a municipality.
