-- Which GSI designations a site has: 指定緊急避難場所 (a place to flee to, rated per hazard) and/or
-- 指定避難所 (a place to stay). A site in both GSI files is one row with both (evac.shelters.merge_sites).
ALTER TABLE shelters ADD COLUMN IF NOT EXISTS designations text[] NOT NULL DEFAULT '{}';
