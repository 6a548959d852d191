//! Keys in PostgreSQL: [`PostgresStore`], the shared store for several instances (feature
//! `postgres`).
//!
//! Every instance of a service points its store at the same database. [`PostgresStore::connect`]
//! connects to a URL, [`PostgresStore::from_pool`] uses a pool you configured, and
//! [`PostgresStore::migrate`] creates or updates the tables (and the schema, if missing) and
//! records the key format in them; call it at start-up, it does nothing when they are up to
//! date, and instances starting together wait for each other. A schema migrated with another
//! format is refused with [`StoreError::FormatMismatch`]
//! rather than refusing every key. [`PostgresStore::connect_recorded`] connects with the format
//! recorded in the schema, as the command-line tool does. Needs PostgreSQL 14 or later.
//!
//! A revocation through one instance's store reaches that instance's layers before the call
//! returns, and every other instance within milliseconds: a trigger on `api_keys` sends a
//! `NOTIFY` in the transaction of every change (so a change made with plain SQL counts, and one
//! that rolls back announces nothing), and each store `LISTEN`s on a connection of its own as
//! soon as a layer is built on it (see [`PostgresStore::watcher`] and the
//! [invalidation guide](crate::invalidation)). Nothing runs besides the database. While
//! that connection is lost, an instance keeps keys no longer than the layer's `cache_ttl` (30
//! seconds by default).
//!
//! # Schema
//!
//! The tables live in the schema `public` unless [`PostgresStore::with_schema`] names another
//! (one per tenant, or one per test). PostgreSQL cuts names to 63 bytes, so two longer names
//! that begin alike would share one schema: a name over 63 bytes, or with a NUL, is refused with
//! [`StoreError::InvalidSchemaName`] by every call. The table `api_keys` (see `migrations/postgres/` in the
//! crate) holds one row per key: `id` (primary key), `digest` (`bytea`, SHA-256 of the key,
//! unique and indexed), `hint`, `name`, `owner`, `environment` (`live` or `test`), `scopes`
//! (names separated by spaces), `metadata` (`jsonb`, an object of strings), and the times
//! `created_at`, `expires_at`, `revoked_at`, `last_used_at` as `timestamptz` (so times read back
//! are cut to the microsecond), `replaced_by` (the key that replaced it in a rotation), and the
//! key's [limits](crate::limit): `rate_requests`, `rate_period_ms` and `rate_burst` (`bigint`,
//! all `NULL` for no rate limit, or all set; the period in milliseconds) and `allowed_networks`
//! (CIDR ranges separated by single spaces, such as `203.0.113.0/24 2001:db8::/32`, or `NULL` for
//! anywhere). Never the key itself. The table `api_key_migrations` records the migrations applied, and
//! `api_key_settings` the key prefix. The trigger function `api_key_changed()` announces each
//! change to a key on the channel `tower_api_key`, with the key's digest in hex and the schema
//! (changes to `last_used_at` alone are not announced).
//!
//! Usage counts ([`KeyStore::record_usage`](crate::KeyStore::record_usage)) are in
//! `api_key_usage`: one row per key, day and outcome, with `key_id` (a foreign key to
//! `api_keys.id`, `ON DELETE CASCADE`), `day` (a `date`, UTC), `outcome` (`allowed`,
//! `insufficient_scope`, `revoked`, `expired` or `rate_limited`) and `requests` (`bigint`),
//! keyed and ordered by the first three; and in `api_key_anonymous_usage`, one row per day and
//! outcome (`missing`, `malformed`, `unknown`) of the requests whose key was not known. A flush
//! adds to `requests` (`requests = requests + ...`, saturating at `i64::MAX`), never overwrites
//! it, so every instance's counts add up; it locks the rows of the keys it counts, in order, so
//! concurrent flushes wait for each other briefly instead of deadlocking. Neither table has a
//! trigger. Since the counts refer to the keys, emptying the key table by hand takes
//! `TRUNCATE api_keys CASCADE` (a plain `TRUNCATE` is refused); it empties both, and every
//! instance drops every key it cached. `api_key_usage_batches` holds the id (`id`, 32
//! hexadecimal digits) and time (`applied_at`, `timestamptz`) of each batch applied, so that a
//! batch written again is not counted again; ids older than seven days are deleted.
//!
//! The [audit trail](crate::store::audit) ([`KeyStore::audit`](crate::KeyStore::audit)) is
//! `api_key_audit`: one row per
//! change, written in the transaction of the change, with `seq` (`bigserial`; a change that rolls
//! back may leave a gap), `at` (`timestamptz`), `action` (`created`, `renamed`,
//! `limits_changed`, `rotated`, `revoked` or `deleted`), `key_id`, `owner`, `key_name`, `actor`,
//! `address` (an IP address as text, or `NULL`) and `related_key` (the other key of a rotation,
//! or `NULL`), indexed by
//! `(owner, seq)` and `(key_id, seq)`. It has no foreign key to `api_keys`, so a deleted key's
//! entries stay (and `TRUNCATE api_keys CASCADE` leaves them), and no trigger. Never a key or a
//! digest.
//!
//! Every change is one transaction with its audit entry: `rotate` locks the old key's row,
//! shortens its expiry and inserts the new key together, and a failed call leaves nothing
//! behind. A
//! database that is unreachable or fails gives [`StoreError::Unavailable`], and a layer in front
//! answers `503` until it is back; the pool reconnects by itself.
//!
//! # Example
//!
//! ```no_run
//! use tower_api_key::{ApiKeyLayer, Environment, KeyFormat, KeyStore, NewKey, PostgresStore, Scope};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect("postgres://app@db.internal/app", KeyFormat::new("om")?)
//!     .await?
//!     .with_schema("api_keys");
//! store.migrate().await?;
//!
//! let created = store
//!     .create(
//!         NewKey::new("Webhook Server", Environment::Live)
//!             .owner("acct_42")
//!             .scopes([Scope::from_static("orders:read")]),
//!     )
//!     .await?;
//! println!("your key: {}", created.key.expose_secret());
//!
//! let layer = ApiKeyLayer::builder(store.clone()).realm("OrderMonk API").build();
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{self, StreamExt};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::settings::StoreSettings;
use super::sql::backend::{Cell, ColumnType, Dialect, Driver, Param, Read};
use super::sql::{table::unavailable, SqlDatabase, SqlStore, PROPAGATION_MARGIN};
use super::StoreError;
use crate::invalidation::{BusError, Invalidation, InvalidationBus, InvalidationStream};
use crate::key::KeyDigest;

/// Keys in PostgreSQL. Clones share the connection pool and the settings.
///
/// See the [module docs](crate::store::postgres) for the schema and an example, and
/// [`SqlStore`] for every method.
pub type PostgresStore = SqlStore<Postgres>;

/// How long a call waits for a connection before failing.
const WAIT: Duration = Duration::from_secs(5);
/// The schema of a store that names none.
const DEFAULT_SCHEMA: &str = "public";
/// The longest name PostgreSQL keeps whole (`NAMEDATALEN - 1`); it cuts longer ones.
const MAX_NAME_BYTES: usize = 63;

impl SqlStore<Postgres> {
    /// Connects to the database at `url` (`postgres://user@host/database`), for keys as
    /// `settings` says (a [`KeyFormat`](crate::KeyFormat) is enough).
    ///
    /// Calls wait up to 5 seconds for a connection. Call [`migrate`](Self::migrate) before
    /// using a new database or schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is invalid or the database cannot be reached.
    pub async fn connect(
        url: &str,
        settings: impl Into<StoreSettings>,
    ) -> Result<Self, StoreError> {
        Ok(SqlStore::from_pool(connect(url).await?, settings))
    }

    /// Connects to the database at `url` with the key format that an earlier
    /// [`migrate`](Self::migrate) recorded in `schema`: for a tool that manages the keys of
    /// whatever service uses the schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoRecordedFormat`] if the schema has none (it is new, or was never
    /// migrated by this version), [`StoreError::InvalidSchemaName`], and as
    /// [`connect`](Self::connect).
    pub async fn connect_recorded(url: &str, schema: &str) -> Result<Self, StoreError> {
        SqlStore::open_recorded_pool(connect(url).await?, Some(Arc::from(schema))).await
    }

    /// Keeps the tables in `schema` instead of `public`. [`migrate`](Self::migrate) creates the
    /// schema if it does not exist.
    ///
    /// The name is quoted, so it is taken as written, case included. A name PostgreSQL cannot
    /// hold exactly (over 63 bytes, or with a NUL) makes every call of the store fail with
    /// [`StoreError::InvalidSchemaName`], starting with `migrate`.
    pub fn with_schema(self, schema: impl Into<String>) -> Self {
        self.in_schema(Arc::from(schema.into()))
    }

    /// The schema that holds the tables.
    pub fn schema(&self) -> &str {
        self.namespace().unwrap_or(DEFAULT_SCHEMA)
    }
}

async fn connect(url: &str) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .acquire_timeout(WAIT)
        .connect(url)
        .await
        .map_err(unavailable)
}

/// The channel on which the migrations' trigger announces changes to keys, for every schema.
const CHANNEL: &str = "tower_api_key";

/// Listens for the notifications the migrations' trigger sends when a key in `schema` changes:
/// the bus of PostgreSQL.
struct NotifyBus {
    pool: PgPool,
    schema: Arc<str>,
}

/// A listener on a connection of its own, outside the store's pool (which would otherwise lose
/// one for as long as the listener lives, and get it back still listening); named so that an
/// administrator can tell it in `pg_stat_activity`.
async fn listener(pool: &PgPool, name: &str) -> Result<PgListener, sqlx::Error> {
    let options = (*pool.connect_options()).clone().application_name(name);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(WAIT)
        .connect_lazy_with(options);
    PgListener::connect_with(&own).await
}

/// The message of a notification's `payload` (`<message> <schema>`), if it is about `schema`.
/// A payload about it that is not a message empties the caches, to be safe.
fn message_for(schema: &str, payload: &str) -> Option<Invalidation> {
    let (message, about) = payload.split_once(' ')?;
    (about == schema).then(|| message.parse().unwrap_or(Invalidation::All))
}

#[async_trait]
impl InvalidationBus for NotifyBus {
    async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
        let name = format!("tower-api-key listener {}", self.schema);
        let mut listener = listener(&self.pool, &name).await.map_err(BusError::new)?;
        // A lost connection ends the stream; the watcher subscribes again, knowing what it
        // may have missed. Left to itself, the listener would reconnect without a word.
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await.map_err(BusError::new)?;
        let state = Some((listener, self.schema.clone()));
        let messages = stream::unfold(state, |state| async move {
            let (mut listener, schema) = state?;
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if let Some(message) = message_for(&schema, notification.payload()) {
                            return Some((Ok(message), Some((listener, schema))));
                        }
                    }
                    Ok(None) => {
                        let lost = BusError::new("the connection to PostgreSQL was lost");
                        return Some((Err(lost), None));
                    }
                    Err(error) => return Some((Err(BusError::new(error)), None)),
                }
            }
        });
        Ok(messages.boxed())
    }
}

/// `name` as a quoted SQL identifier: any text is safe in it.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A `timestamptz` from `micros`, microseconds since the epoch, computed exactly.
fn timestamp(micros: &str) -> String {
    format!(
        "(TIMESTAMPTZ 'epoch' + ({micros}::int8 / 1000000) * INTERVAL '1 second' \
         + ({micros}::int8 % 1000000) * INTERVAL '1 microsecond')"
    )
}

impl SqlDatabase for Postgres {}

impl Dialect for Postgres {
    const STORE_NAME: &'static str = "PostgresStore";
    const IS_POSTGRES: bool = true;
    const DEFAULT_NAMESPACE: Option<&'static str> = Some(DEFAULT_SCHEMA);
    const CREATE_MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS api_key_migrations (\
        version BIGINT NOT NULL PRIMARY KEY, \
        description TEXT NOT NULL, \
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()\
        )";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_NO_KEY_UPDATE: &'static str = " FOR NO KEY UPDATE";

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn select(column: &str, ty: ColumnType) -> String {
        match ty {
            ColumnType::Text | ColumnType::Bytes => column.to_owned(),
            ColumnType::Json => format!("{column}::text"),
            // Microseconds since the epoch, exactly (PostgreSQL 14 or later).
            ColumnType::Time => format!("(EXTRACT(EPOCH FROM {column}) * 1000000)::int8"),
            ColumnType::Day => format!("({column} - DATE '1970-01-01')::int8"),
            ColumnType::Int => column.to_owned(),
        }
    }

    fn from_rust(expr: &str, ty: ColumnType) -> String {
        match ty {
            ColumnType::Text | ColumnType::Bytes | ColumnType::Int => expr.to_owned(),
            ColumnType::Json => format!("{expr}::jsonb"),
            ColumnType::Time => timestamp(expr),
            ColumnType::Day => format!("(DATE '1970-01-01' + ({expr})::int4)"),
        }
    }

    fn json_rows(n: usize, columns: &[(&str, Read)]) -> String {
        let columns = columns
            .iter()
            .enumerate()
            .map(|(index, (name, read))| match read {
                Read::Int => format!("(e->>{index})::int8 AS {name}"),
                Read::Text | Read::Bytes => format!("e->>{index} AS {name}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "(SELECT {columns} FROM jsonb_array_elements({}::jsonb) AS e)",
            Self::param(n)
        )
    }

    fn column_type(ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Text => "TEXT",
            ColumnType::Bytes => "BYTEA",
            ColumnType::Time => "TIMESTAMPTZ",
            ColumnType::Json => "JSONB",
            ColumnType::Day => "DATE",
            ColumnType::Int => "BIGINT",
        }
    }

    fn later_of(column: &str, value: &str) -> String {
        // `greatest` ignores NULL.
        format!("greatest({column}, {value})")
    }

    fn table(namespace: Option<&str>, name: &str) -> String {
        let schema = quote_identifier(namespace.unwrap_or(DEFAULT_SCHEMA));
        format!("{schema}.{name}")
    }

    fn check_namespace(schema: &str) -> Result<(), StoreError> {
        if schema.len() > MAX_NAME_BYTES {
            return Err(StoreError::InvalidSchemaName(format!(
                "a PostgreSQL schema name is at most {MAX_NAME_BYTES} bytes long (PostgreSQL \
                 cuts longer names, so two of them could share one schema); this one has {}",
                schema.len()
            )));
        }
        if schema.contains('\0') {
            return Err(StoreError::InvalidSchemaName(
                "a PostgreSQL schema name cannot contain a NUL character".to_owned(),
            ));
        }
        Ok(())
    }

    fn invalidation_bus(
        pool: &PgPool,
        namespace: Option<&Arc<str>>,
        _poll: Duration,
    ) -> (Box<dyn InvalidationBus>, String) {
        let schema = namespace
            .cloned()
            .unwrap_or_else(|| Arc::from(DEFAULT_SCHEMA));
        let name = format!("postgres LISTEN ({schema})");
        let bus = NotifyBus {
            pool: pool.clone(),
            schema,
        };
        (Box::new(bus), name)
    }

    fn propagated<'c>(
        pool: &'c PgPool,
        _namespace: Option<&'c str>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        async move {
            let mut listener = listener(pool, "tower-api-key propagation").await?;
            listener.listen(CHANNEL).await?;
            // Watchers take the random part for a schema that is not theirs, and skip it.
            let mut nonce = [0u8; 16];
            getrandom::fill(&mut nonce).map_err(|err| sqlx::Error::Protocol(err.to_string()))?;
            let payload = format!("propagated {}", KeyDigest::of(&nonce).to_hex());
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(pool)
                .await?;
            let wait = async {
                loop {
                    let notification = listener.recv().await?;
                    if notification.payload() == payload {
                        return Ok::<_, sqlx::Error>(());
                    }
                }
            };
            tokio::time::timeout(WAIT, wait).await.map_err(|_| {
                sqlx::Error::Protocol(format!(
                    "a notification did not come back within {} s",
                    WAIT.as_secs()
                ))
            })??;
            // Every listener was sent the changes before this; give them time to drop the keys.
            tokio::time::sleep(PROPAGATION_MARGIN).await;
            Ok(())
        }
        .boxed()
    }

    fn is_missing_table(err: &dyn sqlx::error::DatabaseError) -> bool {
        // undefined_table, invalid_schema_name
        matches!(err.code().as_deref(), Some("42P01" | "3F000"))
    }

    fn prepare_migration<'c>(
        connection: &'c mut Self::Connection,
        namespace: Option<&'c str>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        async move {
            let schema = namespace.unwrap_or(DEFAULT_SCHEMA);
            // One migration at a time per schema, across every instance; released at commit.
            let lock = format!("tower_api_key migrate {schema}");
            Self::fetch(
                connection,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[Param::Text(Some(&lock))],
                &[],
            )
            .await?;
            let exists = Self::fetch(
                connection,
                "SELECT 1::int8 FROM pg_namespace WHERE nspname = $1",
                &[Param::Text(Some(schema))],
                &[Read::Int],
            )
            .await?;
            let quoted = quote_identifier(schema);
            // Checked first: a user who may not create schemas can still migrate an existing one.
            if !matches!(
                exists.first().and_then(|row| row.first()),
                Some(Cell::Int(Some(1)))
            ) {
                Self::run_script(connection, &format!("CREATE SCHEMA {quoted}")).await?;
            }
            // The migrations name their tables without a schema; this applies until the commit.
            Self::run_script(connection, &format!("SET LOCAL search_path TO {quoted}")).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyFormat;

    /// The futures of the inherent methods can move between threads, as `tokio::spawn` and axum
    /// handlers need (the trait's are boxed as `Send` by `async_trait`).
    #[allow(dead_code)]
    fn futures_are_send(store: &PostgresStore, format: KeyFormat) {
        fn send<T: Send>(_: T) {}
        send(PostgresStore::connect("postgres://localhost/db", format));
        send(PostgresStore::connect_recorded(
            "postgres://localhost/db",
            "s",
        ));
        send(store.migrate());
    }

    #[test]
    fn identifiers_are_quoted_whatever_they_hold() {
        assert_eq!(quote_identifier("public"), "\"public\"");
        assert_eq!(
            quote_identifier("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
    }

    #[test]
    fn schema_names_postgresql_would_cut_or_refuse_are_refused() {
        assert!(Postgres::check_namespace(&"s".repeat(63)).is_ok());
        // 63 bytes, but in multi-byte characters: still whole.
        assert!(Postgres::check_namespace(&"é".repeat(31)).is_ok());
        for bad in ["s".repeat(64), "é".repeat(32), "a\0b".to_owned()] {
            let err = Postgres::check_namespace(&bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidSchemaName(_)), "{bad:?}");
        }
    }
}
