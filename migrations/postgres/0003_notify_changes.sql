-- tower-api-key: every change to a key, announced with NOTIFY in the transaction that makes it
-- (PostgreSQL).
--
-- Runs with `search_path` set to the store's schema. Each process that caches keys LISTENs on
-- the channel `tower_api_key` and drops the keys it is told about. PostgreSQL delivers a
-- notification only when its transaction commits, so a change that rolls back announces
-- nothing, and one that commits is never missed by a listener that is connected. Triggers send
-- it, so that a change made with plain SQL (`UPDATE api_keys SET revoked_at = ...`) counts as
-- much as one made by the crate.
--
-- The payload is `key:<the digest in hex> <schema>`, or `all <schema>` after a TRUNCATE: one
-- channel for every schema (a channel name is limited to 63 bytes, a schema name may use them
-- all), and listeners skip other schemas. `digest` is the key's SHA-256, never the key.

CREATE FUNCTION api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('tower_api_key', 'all ' || TG_TABLE_SCHEMA);
    ELSIF TG_OP = 'INSERT' THEN
        -- A cache may hold "no such key" for the new key's digest.
        PERFORM pg_notify('tower_api_key', 'key:' || encode(NEW.digest, 'hex') || ' ' || TG_TABLE_SCHEMA);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tower_api_key', 'key:' || encode(OLD.digest, 'hex') || ' ' || TG_TABLE_SCHEMA);
    -- Any column but `last_used_at`, which changes no answer a cache holds; columns added later
    -- are covered without touching this function.
    ELSIF (to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at') THEN
        PERFORM pg_notify('tower_api_key', 'key:' || encode(OLD.digest, 'hex') || ' ' || TG_TABLE_SCHEMA);
        IF NEW.digest IS DISTINCT FROM OLD.digest THEN
            PERFORM pg_notify('tower_api_key', 'key:' || encode(NEW.digest, 'hex') || ' ' || TG_TABLE_SCHEMA);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_key_changed();
CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_key_changed();
