-- Hazard maps imported from national formats (PLATEAU, 国土数値情報) and what they are linked to.
-- A map's polygons are rows of hazard_areas (map_id) carrying their national attributes. A linked map's
-- areas use the gauge mechanism of hazard_areas (source 'gauge', station_id = the link's level key,
-- activation_level = at_level); an unlinked map's areas are source 'import' and not in force.
--   link_kind 'gauge'    link_ref = station id            level key: the station id
--   link_kind 'river'    link_ref = river name            level key: 'river:' || name (max of its gauges)
--   link_kind 'jma_area' link_ref = municipality code    level key: 'jma_area:' || code || ':' || phenomenon
CREATE TABLE IF NOT EXISTS hazard_maps (
    id                text PRIMARY KEY,
    title             text NOT NULL,
    hazard            text NOT NULL CHECK (hazard IN ('flood', 'landslide', 'storm_surge', 'earthquake', 'tsunami',
                                                      'large_fire', 'inland_flooding', 'volcano')),
    format            text NOT NULL CHECK (format IN ('plateau', 'ksj')),
    source_file       text NOT NULL DEFAULT '',
    attribution       text NOT NULL DEFAULT '',
    features          integer NOT NULL DEFAULT 0 CHECK (features >= 0),
    link_kind         text CHECK (link_kind IN ('gauge', 'river', 'jma_area')),
    link_ref          text,
    link_phenomenon   text,
    at_level          smallint CHECK (at_level IS NULL OR at_level BETWEEN 1 AND 5),
    municipality_code text,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((link_kind IS NULL) = (link_ref IS NULL) AND (link_kind IS NULL) = (at_level IS NULL))
);

ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS map_id text REFERENCES hazard_maps (id) ON DELETE CASCADE;
ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS depth_rank smallint;
ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS depth_min_m double precision;
ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS depth_max_m double precision;
ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS zone_class text;
ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS phenomenon text;
ALTER TABLE hazard_areas ADD COLUMN IF NOT EXISTS attributes jsonb;
CREATE INDEX IF NOT EXISTS hazard_areas_map ON hazard_areas (map_id) WHERE map_id IS NOT NULL;
