-- tower-api-key: requests per key and day, and of unknown keys per day (PostgreSQL).
--
-- Runs with `search_path` set to the store's schema. Written by `record_usage` as increments
-- (`requests = requests + ...`), never overwritten, so that every instance flushing its counts
-- into the schema adds up. `day` is a UTC calendar day. `outcome` is what became of the
-- requests: for a key, `allowed`, `insufficient_scope`, `revoked`, `expired` or
-- `rate_limited`; for requests whose key was not known, `missing`, `malformed` or `unknown`
-- (counted per day only, never per key or digest). Outcomes a version of the crate does not
-- know are skipped when it reads, so that a newer version can add some. Only what happened is
-- kept: no row holds zero.
--
-- Neither table is `api_keys`, so writing them fires none of its triggers: usage never empties
-- a cache. `last_used_at` stays in `api_keys`, whose trigger ignores changes to it alone.

CREATE TABLE api_key_usage (
    -- The key's counts go with it, however it is deleted (emptying api_keys by hand takes
    -- `TRUNCATE api_keys CASCADE`).
    key_id   TEXT   NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day      DATE   NOT NULL,
    outcome  TEXT   NOT NULL,
    requests BIGINT NOT NULL CHECK (requests > 0),
    -- One key's days in order: its series, its owner's summary (through api_keys), and the
    -- cascade above.
    PRIMARY KEY (key_id, day, outcome)
-- Every flush updates the day's rows in place: room on each page lets PostgreSQL do it without
-- touching the indexes (a HOT update, as `requests` is in none of them).
) WITH (fillfactor = 80);

-- Pruning old days.
CREATE INDEX api_key_usage_day ON api_key_usage (day);

CREATE TABLE api_key_anonymous_usage (
    day      DATE   NOT NULL,
    outcome  TEXT   NOT NULL,
    requests BIGINT NOT NULL CHECK (requests > 0),
    PRIMARY KEY (day, outcome)
) WITH (fillfactor = 80);
