-- The names an alert is shown with (station, river, municipality, order area) live in other tables than
-- the alert itself. A change to them is announced on the alerts channel with the payload 'names', so
-- readers that keep answers per version of the alert state (api/answers.py: /api/v1/alerts) drop them
-- although no alert event was written. Statement-level: one notification per statement, delivered at
-- commit (PostgreSQL folds identical notifications of one transaction into one).
CREATE OR REPLACE FUNCTION sonae_alert_names_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sonae_alerts', 'names');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS alert_names_stations ON stations;
CREATE TRIGGER alert_names_stations AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stations
    FOR EACH STATEMENT EXECUTE FUNCTION sonae_alert_names_changed();
DROP TRIGGER IF EXISTS alert_names_municipalities ON municipalities;
CREATE TRIGGER alert_names_municipalities AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON municipalities
    FOR EACH STATEMENT EXECUTE FUNCTION sonae_alert_names_changed();
DROP TRIGGER IF EXISTS alert_names_orders ON evacuation_orders;
CREATE TRIGGER alert_names_orders AFTER UPDATE OR DELETE OR TRUNCATE ON evacuation_orders
    FOR EACH STATEMENT EXECUTE FUNCTION sonae_alert_names_changed();
