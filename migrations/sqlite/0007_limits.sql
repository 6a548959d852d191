-- tower-api-key: each key's limits (SQLite). The columns themselves are added by the store
-- (`ALTER TABLE api_keys ADD COLUMN`): `rate_requests`, `rate_period_ms` and `rate_burst`
-- (INTEGER; all NULL for no rate limit, or all set) and `allowed_networks` (TEXT: CIDR ranges
-- separated by single spaces, or NULL for anywhere).
--
-- The update trigger names its columns, so it is made again with the new ones: a change to a
-- key's limits reaches every process's cache like any other change.

DROP TRIGGER api_keys_updated;

CREATE TRIGGER api_keys_updated AFTER UPDATE OF
    id, digest, hint, name, owner, environment, scopes, metadata, created_at, expires_at,
    revoked_at, replaced_by, rate_requests, rate_period_ms, rate_burst, allowed_networks
ON api_keys
BEGIN
    INSERT INTO api_key_invalidations (digest) VALUES (OLD.digest);
    INSERT INTO api_key_invalidations (digest) SELECT NEW.digest WHERE NEW.digest IS NOT OLD.digest;
    DELETE FROM api_key_invalidations
     WHERE seq <= (SELECT max(seq) FROM api_key_invalidations) - 10000;
END;
