-- Accounts' municipality codes in the 6-digit form with check digit (issue #14; see
-- ingest/020_municipality_codes.sql for sonae_municipality_code()).
UPDATE accounts SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
