-- An admin may allow one operator to inject real (non-exercise) readings (issue #16); off by default.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS may_inject_real boolean NOT NULL DEFAULT false;
