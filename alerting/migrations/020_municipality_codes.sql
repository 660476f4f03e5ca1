-- Stored 5-digit municipality codes (and the drill town's 079999) become 6-digit codes with their check
-- digit (issue #14); sonae_municipality_code() is defined by ingest/020_municipality_codes.sql.
UPDATE evacuation_orders SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
UPDATE alerts SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
UPDATE alert_events SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
