-- tower-api-key: requests per key and day, and of unknown keys per day (SQLite).
--
-- Written by `record_usage` as increments (`requests = requests + ...`), never overwritten, so
-- that every process flushing its counts into the file adds up. `day` is a UTC calendar day as
-- days since 1970-01-01 (0 is 1970-01-01). `outcome` is what became of the requests: for a key,
-- `allowed`, `insufficient_scope`, `revoked`, `expired` or `rate_limited`; for requests whose
-- key was not known, `missing`, `malformed` or `unknown` (counted per day only, never per key
-- or digest). Outcomes a version of the crate does not know are skipped when it reads, so that
-- a newer version can add some. Only what happened is kept: no row holds zero.
--
-- Neither table is `api_keys`, so writing them fires none of its triggers: usage never empties
-- a cache. `last_used_at` stays in `api_keys`, whose update trigger leaves it out.

CREATE TABLE api_key_usage (
    -- The key's counts go with it (foreign keys are on in every connection the crate opens).
    key_id   TEXT    NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day      INTEGER NOT NULL,
    outcome  TEXT    NOT NULL,
    requests INTEGER NOT NULL CHECK (requests > 0),
    -- One key's days in order: its series, its owner's summary (through api_keys), and the
    -- cascade above.
    PRIMARY KEY (key_id, day, outcome)
) STRICT, WITHOUT ROWID;

-- Pruning old days.
CREATE INDEX api_key_usage_day ON api_key_usage (day);

CREATE TABLE api_key_anonymous_usage (
    day      INTEGER NOT NULL,
    outcome  TEXT    NOT NULL,
    requests INTEGER NOT NULL CHECK (requests > 0),
    PRIMARY KEY (day, outcome)
) STRICT, WITHOUT ROWID;
