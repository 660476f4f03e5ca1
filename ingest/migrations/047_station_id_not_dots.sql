-- A station id is not dots only (ingest.contract.STATION_ID, the one rule: ".", ".." are path steps wherever
-- an id becomes part of a path; found: ".." was accepted by the API and by `sonae devices add --station ..`).
-- NOT VALID: a row written before the rule does not stop the upgrade; new and changed rows are checked.
ALTER TABLE stations ADD CONSTRAINT stations_id_not_dots CHECK (id !~ '^\.+$') NOT VALID;
