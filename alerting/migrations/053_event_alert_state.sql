-- Each alert event keeps the alert as it was right after the event: alert_state is the alerts row
-- (to_jsonb) written in the event's own transaction (alerting.store._event). Whatever delivers an event
-- later — the notification fan-out (push, webhooks JSON and CAP, email, their audience filter), the
-- event stream and its Last-Event-ID replay — renders that state, not the alert's state when it happens
-- to read it: several events queued together (an ingest backlog, a receiver that was down, a replay)
-- are each told as they were (level, version, audience, value, texts), not all as the newest.
--
-- Events recorded before this migration get the best state that can be rebuilt: the alert row as it is
-- now, with what the event itself recorded (version, level, value, municipality, exercise), the state and
-- reading time of a level change, the highest level so far, no clearing before the 'cleared' event, and
-- the audience of the level then (public for river levels and orders at 警戒レベル 2-5: alerting.levels).
-- Plain PostgreSQL and TimescaleDB alike (alert_events is an ordinary table).
ALTER TABLE alert_events ADD COLUMN IF NOT EXISTS alert_state jsonb;

WITH old AS (
    SELECT e.id, to_jsonb(a) || jsonb_build_object(
        'version', e.version,
        'level', coalesce(CASE WHEN e.kind = 'cleared' THEN e.old_level ELSE e.level END, a.level),
        'max_level', greatest(so_far.top, coalesce(CASE WHEN e.kind = 'cleared' THEN e.old_level ELSE e.level END,
                                                   a.level)),
        'value', coalesce(e.value, a.value),
        'municipality_code', e.municipality_code,
        'exercise', e.exercise,
        'state', coalesce(change.kind, a.state),
        'changed_at', coalesce(change.at, a.changed_at),
        'cleared_at', CASE WHEN change.kind = 'cleared' THEN a.cleared_at END,
        'audience', CASE WHEN a.condition IN ('river_level', 'evacuation_order')
                          AND coalesce(CASE WHEN e.kind = 'cleared' THEN e.old_level ELSE e.level END, a.level)
                              BETWEEN 2 AND 5
                         THEN 'public' ELSE 'staff' END) AS state
    FROM alert_events e
    JOIN alerts a ON a.id = e.alert_id
    CROSS JOIN LATERAL (SELECT max(greatest(coalesce(p.level, 0), coalesce(p.old_level, 0))) AS top
                        FROM alert_events p WHERE p.alert_id = e.alert_id AND p.id <= e.id) so_far
    LEFT JOIN LATERAL (SELECT p.kind, coalesce(p.reading_ts, p.recorded_at) AS at FROM alert_events p
                       WHERE p.alert_id = e.alert_id AND p.id <= e.id
                         AND p.kind IN ('raised', 'escalated', 'de-escalated', 'cleared')
                       ORDER BY p.id DESC LIMIT 1) change ON true
    WHERE e.alert_state IS NULL)
UPDATE alert_events e SET alert_state = old.state FROM old WHERE e.id = old.id;
