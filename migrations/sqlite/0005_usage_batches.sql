-- tower-api-key: the usage batches applied, so that each is applied once (SQLite).
--
-- `record_usage` inserts a batch's id in the transaction that adds its counts; a batch whose id
-- is already here was applied (its acknowledgement was lost and the recorder wrote it again),
-- and is skipped. `id` is 32 hexadecimal digits; `applied_at` is UTC, in signed microseconds
-- since 1970-01-01T00:00:00Z. Rows older than seven days are deleted by `prune_usage` and now
-- and then by `record_usage`: a batch is retried seconds apart, never days.

CREATE TABLE api_key_usage_batches (
    id         TEXT    NOT NULL PRIMARY KEY,
    applied_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Deleting old ids.
CREATE INDEX api_key_usage_batches_applied_at ON api_key_usage_batches (applied_at);
