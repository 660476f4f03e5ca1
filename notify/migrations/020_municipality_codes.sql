-- Municipality codes in the 6-digit form with check digit (issue #14; sonae_municipality_code() is
-- defined by ingest/020_municipality_codes.sql), and a circle's municipalities from real boundaries:
-- near_municipalities lists every municipality the circle touches (computed at subscription time from
-- municipality_boundaries). Existing circles keep the one municipality they had (that of the shelter
-- nearest their centre) until they subscribe again.
ALTER TABLE push_areas ADD COLUMN IF NOT EXISTS near_municipalities text[];
UPDATE push_areas SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'push_areas' AND column_name = 'near_municipality') THEN
        UPDATE push_areas SET near_municipalities = ARRAY[sonae_municipality_code(near_municipality)]
            WHERE near_municipality IS NOT NULL AND near_municipalities IS NULL;
    END IF;
END $$;
DROP INDEX IF EXISTS push_areas_near;
ALTER TABLE push_areas DROP COLUMN IF EXISTS near_municipality;
CREATE INDEX IF NOT EXISTS push_areas_near_municipalities ON push_areas USING gin (near_municipalities)
    WHERE near_municipalities IS NOT NULL;
UPDATE webhooks SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
UPDATE notify_roster SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE municipality_code ~ '^[0-9]{5}$' OR municipality_code = '079999';
