-- Shelters' and hazard areas' municipality codes in the 6-digit form with check digit (issue #14;
-- sonae_municipality_code() is defined by ingest/020_municipality_codes.sql).
UPDATE shelters SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
UPDATE hazard_areas SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
