-- An open alert follows its station into another municipality (the registry's municipality_code changed):
-- the alert keeps its id, acknowledgement and history, takes the station's new code, and the change is an
-- alert event of kind 'moved' — a new version (a CAP Update whose area's geocode is the new code), like a
-- change of level. old_municipality_code is the code before the event, as old_level is the level before:
-- the old municipality's history and event streams show that the alert left it. Cleared alerts keep the
-- municipality they had (alerting.store.move_alert; alerting.worker.RulesWorker.follow_registry).
ALTER TABLE alert_events ADD COLUMN IF NOT EXISTS old_municipality_code text;
ALTER TABLE alert_events DROP CONSTRAINT IF EXISTS alert_events_kind_check;
ALTER TABLE alert_events ADD CONSTRAINT alert_events_kind_check
    CHECK (kind IN ('raised', 'escalated', 'de-escalated', 'cleared', 'acknowledged', 're-evaluated', 'moved'));
