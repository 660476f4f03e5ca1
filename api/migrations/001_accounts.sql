-- Staff, operator and admin accounts (owned by api). A NULL municipality means prefecture-wide scope.
CREATE TABLE IF NOT EXISTS accounts (
    id                serial PRIMARY KEY,
    username          text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{3,64}$'),
    display_name      text,
    password_hash     text NOT NULL,                 -- argon2id (memory-hard)
    role              text NOT NULL CHECK (role IN ('staff', 'operator', 'admin')),
    municipality_code text,                          -- NULL: every municipality (the prefecture)
    disabled          boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens: only their SHA-256 is stored.
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash  bytea PRIMARY KEY,
    account_id  integer NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS access_tokens_account ON access_tokens (account_id);

-- Municipalities are data: codes (団体コード) and names, imported (see `sonae municipalities import`).
-- The table itself is created by ingest (001_registry.sql).
