-- tower-api-key: the audit trail, one row per change to a key (PostgreSQL).
--
-- Runs with `search_path` set to the store's schema. Written by the store in the transaction of
-- the change itself, so that a change and its entry are kept or lost together. `seq` numbers the
-- entries in the order they were written (a change that rolls back may leave a gap); `at` is
-- UTC. `action` is `created`, `renamed`, `rotated`, `revoked` or `deleted`; `owner` and
-- `key_name` are the key's after the change (before it, for a deletion); `actor` is who asked
-- for it and `address` where from (an IP address, as text), as the application told the store;
-- `related_key` is the other key of a rotation. Never a key's text or digest.
--
-- No foreign key to `api_keys`: a deleted key's trail stays. Nothing here fires a trigger.

CREATE TABLE api_key_audit (
    seq         BIGSERIAL   NOT NULL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    action      TEXT        NOT NULL,
    key_id      TEXT        NOT NULL,
    owner       TEXT        NOT NULL,
    key_name    TEXT        NOT NULL,
    actor       TEXT        NOT NULL,
    address     TEXT,
    related_key TEXT
);
