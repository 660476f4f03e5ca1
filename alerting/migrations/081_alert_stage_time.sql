-- A step-down by time (alerting.rules.STEPPED_DOWN: no reading at or above the level for the dwell, none since) is
-- dated when it applies (changed_at) and carries the stage of the last reading, read earlier: value_at is that
-- reading's time, dwell_s the dwell it waited for (seconds). Both NULL when the stage was read when the alert changed
-- (every other change). Each event's alert_state (migration 053) keeps them as the row had them.
-- Plain PostgreSQL and TimescaleDB alike (alerts is an ordinary table).
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS value_at timestamptz;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS dwell_s double precision;
