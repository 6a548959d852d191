-- tower-api-key: every change to a key, logged in the transaction that makes it (SQLite).
--
-- Each process that caches keys reads the rows past the last `seq` it saw, every 100 ms by
-- default, and drops those keys from its cache. Triggers write the rows, so that a change made
-- with plain SQL (`UPDATE api_keys SET revoked_at = ...`) counts as much as one made by the
-- crate, and a change that rolls back leaves no row. `digest` is the key's SHA-256, never the
-- key. AUTOINCREMENT: a `seq` is never used twice, even after rows are deleted, so that a
-- process can tell when rows it has not read yet were pruned (it then empties its cache).

CREATE TABLE api_key_invalidations (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    digest BLOB NOT NULL
) STRICT;

-- A new key: a cache may hold "no such key" for its digest.
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
BEGIN
    INSERT INTO api_key_invalidations (digest) VALUES (NEW.digest);
    DELETE FROM api_key_invalidations
     WHERE seq <= (SELECT max(seq) FROM api_key_invalidations) - 10000;
END;

-- Every column but `last_used_at`, which changes no answer a cache holds. A migration that adds
-- a column to api_keys recreates this trigger with the column in the list (a test checks it).
CREATE TRIGGER api_keys_updated AFTER UPDATE OF
    id, digest, hint, name, owner, environment, scopes, metadata, created_at, expires_at,
    revoked_at, replaced_by
ON api_keys
BEGIN
    INSERT INTO api_key_invalidations (digest) VALUES (OLD.digest);
    INSERT INTO api_key_invalidations (digest) SELECT NEW.digest WHERE NEW.digest IS NOT OLD.digest;
    DELETE FROM api_key_invalidations
     WHERE seq <= (SELECT max(seq) FROM api_key_invalidations) - 10000;
END;

-- A row that REPLACE deletes to make room (`INSERT OR REPLACE` with the id of another key,
-- `UPDATE OR REPLACE ... SET id = ...`) runs no delete trigger: SQLite runs those only with
-- `recursive_triggers` on, which a plain SQL session does not set. So the key in the way is
-- logged before the write; a row in the way by its digest needs nothing more, since the new row
-- logs that digest. A write that fails takes this row back with it (or, under OR IGNORE and
-- OR FAIL, may leave it: one needless drop from the caches).
CREATE TRIGGER api_keys_replacing BEFORE INSERT ON api_keys
BEGIN
    INSERT INTO api_key_invalidations (digest)
        SELECT digest FROM api_keys WHERE id = NEW.id AND digest IS NOT NEW.digest;
END;

CREATE TRIGGER api_keys_replacing_on_update BEFORE UPDATE OF id ON api_keys
BEGIN
    INSERT INTO api_key_invalidations (digest)
        SELECT digest FROM api_keys WHERE id = NEW.id AND id IS NOT OLD.id;
END;

CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN
    INSERT INTO api_key_invalidations (digest) VALUES (OLD.digest);
    DELETE FROM api_key_invalidations
     WHERE seq <= (SELECT max(seq) FROM api_key_invalidations) - 10000;
END;
