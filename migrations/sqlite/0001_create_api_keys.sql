-- tower-api-key: the key table (SQLite).
--
-- One row per key. The key itself is never stored: `digest` is SHA-256 of the whole key.
-- Times are UTC, as signed microseconds since 1970-01-01T00:00:00Z.
-- `scopes` holds scope names separated by single spaces; `metadata` a JSON object of strings.

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    digest       BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    hint         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    environment  TEXT    NOT NULL CHECK (environment IN ('live', 'test')),
    scopes       TEXT    NOT NULL,
    metadata     TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
) STRICT;

-- One owner's keys, newest first. The UNIQUE constraint indexes `digest`.
CREATE INDEX api_keys_owner_created_at ON api_keys (owner, created_at DESC);
