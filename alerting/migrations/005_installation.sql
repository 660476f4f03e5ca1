-- This installation's id (issue #15 item 6): part of every CAP identifier and Atom id, so two
-- installations (two municipalities, or one rebuilt from scratch) never publish the same sender +
-- identifier for different events. Made once, here; `cap.installation_id` overrides it.
CREATE TABLE IF NOT EXISTS sonae_installation (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    installation_id text NOT NULL CHECK (installation_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    created_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sonae_installation (id, installation_id)
VALUES (true, replace(gen_random_uuid()::text, '-', ''))
ON CONFLICT (id) DO NOTHING;
