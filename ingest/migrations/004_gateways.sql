-- Gateways: a station id a gateway publishes under, whose SenML packs may carry readings of other
-- stations. Any other device may only report for the station of its own topic.
ALTER TABLE stations DROP CONSTRAINT IF EXISTS stations_kind_check;
ALTER TABLE stations ADD CONSTRAINT stations_kind_check
    CHECK (kind IN ('river_level', 'rainfall', 'device', 'gateway'));
