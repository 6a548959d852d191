-- tower-api-key: the key table (PostgreSQL).
--
-- Runs with `search_path` set to the store's schema, so names here are unqualified.
-- One row per key. The key itself is never stored: `digest` is SHA-256 of the whole key.
-- `scopes` holds scope names separated by single spaces; `metadata` a JSON object of strings.

CREATE TABLE api_keys (
    id           TEXT        NOT NULL PRIMARY KEY,
    digest       BYTEA       NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    hint         TEXT        NOT NULL,
    name         TEXT        NOT NULL,
    owner        TEXT        NOT NULL,
    environment  TEXT        NOT NULL CHECK (environment IN ('live', 'test')),
    scopes       TEXT        NOT NULL,
    metadata     JSONB       NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- One owner's keys, newest first. The UNIQUE constraint indexes `digest`.
CREATE INDEX api_keys_owner_created_at ON api_keys (owner, created_at DESC);
