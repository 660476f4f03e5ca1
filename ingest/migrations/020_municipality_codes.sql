-- One municipality code everywhere (issue #14): the 6-digit 全国地方公共団体コード with its JIS X 0402
-- check digit. sonae_municipality_code() turns a stored 5-digit code into the 6-digit one (the same rule
-- as sonae/municipality_code.py: weights 6,5,4,3,2, check digit = (11 - sum mod 11) mod 10) and the drill
-- town's former code 079999, which failed the check digit, into 079995 (see evac/drilltown.py). Other
-- values are returned unchanged. Later migrations of every package use it on their own tables.
CREATE OR REPLACE FUNCTION sonae_municipality_code(code text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN code = '079999' THEN '079995'
        WHEN code ~ '^[0-9]{5}$' THEN code || ((11 - (substr(code, 1, 1)::int * 6 + substr(code, 2, 1)::int * 5
            + substr(code, 3, 1)::int * 4 + substr(code, 4, 1)::int * 3 + substr(code, 5, 1)::int * 2) % 11) % 10)::text
        ELSE code
    END
$$;

-- The shipped list (ingest/data/municipalities.csv.gz) has names in kana as well.
ALTER TABLE municipalities ADD COLUMN IF NOT EXISTS name_kana text;

-- A 5-digit row whose 6-digit twin exists goes; the others are renamed.
DELETE FROM municipalities m WHERE sonae_municipality_code(m.code) <> m.code
    AND EXISTS (SELECT 1 FROM municipalities t WHERE t.code = sonae_municipality_code(m.code));
UPDATE municipalities SET code = sonae_municipality_code(code) WHERE sonae_municipality_code(code) <> code;
UPDATE stations SET municipality_code = sonae_municipality_code(municipality_code)
    WHERE sonae_municipality_code(municipality_code) <> municipality_code;

-- Municipal boundaries (国土数値情報 N03 行政区域, simplified; see ingest/boundaries.py): one
-- (Multi)Polygon in lon/lat per municipality, loaded from the package data into an empty database.
CREATE TABLE IF NOT EXISTS municipality_boundaries (
    code        text PRIMARY KEY,                 -- 6-digit 団体コード
    name        text NOT NULL DEFAULT '',
    geometry    jsonb NOT NULL CHECK (geometry ->> 'type' IN ('Polygon', 'MultiPolygon')),
    source      text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
