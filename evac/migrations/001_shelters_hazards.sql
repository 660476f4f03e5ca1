-- Shelters and hazard areas (owned by evac). The database is the source of truth; every API process
-- keeps an in-memory engine built from these rows and reloads when pg_notify('sonae_evac', ...) says so.
--
-- Who changed a row is recorded in it (updated_by / created_by / removed_by); authentication, staff
-- roles and municipality scoping are the API's business.

CREATE TABLE IF NOT EXISTS shelters (
    id                text PRIMARY KEY,              -- GSI 共通ID when imported from GSI data
    name              text NOT NULL DEFAULT '',
    address           text NOT NULL DEFAULT '',
    lat               double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon               double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    municipality_code text NOT NULL DEFAULT '',
    hazards           text[] NOT NULL DEFAULT '{}' CHECK (hazards <@ ARRAY['flood', 'landslide', 'storm_surge',
                          'earthquake', 'tsunami', 'large_fire', 'inland_flooding', 'volcano']::text[]),
    capacity          integer CHECK (capacity IS NULL OR capacity >= 0),   -- NULL: unknown, never full
    occupancy         integer NOT NULL DEFAULT 0 CHECK (occupancy >= 0),
    is_open           boolean NOT NULL DEFAULT true,
    source            text NOT NULL DEFAULT 'import',   -- import | gsi | staff | drilltown
    updated_by        text NOT NULL DEFAULT '',
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shelters_municipality ON shelters (municipality_code);

-- A hazard area: a GeoJSON (Multi)Polygon in lon/lat where a hazard is, or may become, active.
--   source 'gauge':  in force while the linked gauge's alert level >= activation_level (and active)
--   source 'staff' / 'import': in force while active
-- 'active' is therefore "armed" for a gauge area and "in force" for the others. Removal is soft
-- (removed_at), so the history of what was drawn when stays.
CREATE TABLE IF NOT EXISTS hazard_areas (
    id                text PRIMARY KEY,
    hazard            text NOT NULL CHECK (hazard IN ('flood', 'landslide', 'storm_surge', 'earthquake', 'tsunami',
                                                      'large_fire', 'inland_flooding', 'volcano')),
    geometry          jsonb NOT NULL CHECK (geometry ->> 'type' IN ('Polygon', 'MultiPolygon')),
    severity          text NOT NULL DEFAULT 'blocked' CHECK (severity IN ('blocked', 'penalty')),
    penalty_factor    double precision NOT NULL DEFAULT 1 CHECK (penalty_factor >= 1),
    source            text NOT NULL CHECK (source IN ('gauge', 'staff', 'import')),
    station_id        text,
    activation_level  smallint CHECK (activation_level IS NULL OR activation_level BETWEEN 1 AND 5),
    active            boolean NOT NULL DEFAULT true,
    exercise          boolean NOT NULL DEFAULT false,
    label             text NOT NULL DEFAULT '',
    municipality_code text,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    removed_by        text,
    removed_at        timestamptz,
    CHECK (source <> 'gauge' OR (station_id IS NOT NULL AND activation_level IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS hazard_areas_current ON hazard_areas (hazard) WHERE removed_at IS NULL;
CREATE INDEX IF NOT EXISTS hazard_areas_station ON hazard_areas (station_id) WHERE removed_at IS NULL;
