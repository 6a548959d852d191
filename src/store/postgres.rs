//! Keys in PostgreSQL: [`PostgresStore`], the shared store for several instances (feature
//! `postgres`).
//!
//! Every instance of a service points its store at the same database. [`PostgresStore::connect`]
//! connects to a URL, [`PostgresStore::from_pool`] uses a pool you configured, and
//! [`PostgresStore::migrate`] creates or updates the tables (and the schema, if missing); call it
//! at start-up, it does nothing when they are up to date, and instances starting together wait
//! for each other. Needs PostgreSQL 14 or later.
//!
//! A revocation through one instance's store reaches that instance's layers at once. Other
//! instances notice when their cached copy expires (the layer's `cache_ttl`, 30 seconds by
//! default); making that immediate across instances is separate work.
//!
//! # Schema
//!
//! The tables live in the schema `public` unless [`PostgresStore::with_schema`] names another
//! (one per tenant, or one per test). The table `api_keys` (see `migrations/postgres/` in the
//! crate) holds one row per key: `id` (primary key), `digest` (`bytea`, SHA-256 of the key,
//! unique and indexed), `hint`, `name`, `owner`, `environment` (`live` or `test`), `scopes`
//! (names separated by spaces), `metadata` (`jsonb`, an object of strings), and the times
//! `created_at`, `expires_at`, `revoked_at`, `last_used_at` as `timestamptz` (so times read back
//! are cut to the microsecond). Never the key itself. The table `api_key_migrations` records
//! the migrations applied.
//!
//! Every change is one statement or one transaction: `rotate` locks the old key's row, shortens
//! its expiry and inserts the new key together, and a failed call leaves nothing behind. A
//! database that is unreachable or fails gives [`StoreError::Unavailable`], and a layer in front
//! answers `503` until it is back; the pool reconnects by itself.
//!
//! # Example
//!
//! ```no_run
//! use tower_api_key::{ApiKeyLayer, Environment, KeyFormat, KeyStore, NewKey, PostgresStore, Scope};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let format = KeyFormat::new("om")?;
//! let store = PostgresStore::connect("postgres://app@db.internal/app", format.clone())
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

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor as _, Row};

use super::sql::{self, prepare_row, to_micros, unavailable, Migration, RawRow};
use super::{
    plan_rotation, validate_name, CreatedKey, KeyStore, NewKey, Rotation, StoreError, StoredKey,
};
use crate::clock::{Clock, SystemClock};
use crate::invalidation::Invalidations;
use crate::key::{KeyDigest, KeyFormat};
use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};
use crate::scope::ScopeCatalog;

/// The migrations shipped with the crate, in order.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "create api_keys",
    sql: include_str!("../../migrations/postgres/0001_create_api_keys.sql"),
}];

/// How long a call waits for a connection before failing, with the pool of
/// [`PostgresStore::connect`].
const WAIT: Duration = Duration::from_secs(5);

/// The schema used unless [`PostgresStore::with_schema`] says otherwise.
const DEFAULT_SCHEMA: &str = "public";

/// Keys in a PostgreSQL database. Clones share the connection pool and the invalidations.
///
/// See the [module docs](crate::store::postgres) for the schema and an example.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    format: KeyFormat,
    catalog: Option<ScopeCatalog>,
    invalidations: Invalidations,
    clock: Arc<dyn Clock>,
    schema: Arc<str>,
    queries: Arc<Queries>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/database`), creating keys of
    /// `format`.
    ///
    /// Calls wait up to 5 seconds for a connection. Call [`migrate`](Self::migrate) before
    /// using a new database or schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is invalid or the database cannot be reached.
    pub async fn connect(url: &str, format: KeyFormat) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(WAIT)
            .connect(url)
            .await
            .map_err(unavailable)?;
        Ok(PostgresStore::from_pool(pool, format))
    }

    /// A store on a pool you configured, creating keys of `format`.
    pub fn from_pool(pool: PgPool, format: KeyFormat) -> Self {
        PostgresStore {
            pool,
            format,
            catalog: None,
            invalidations: Invalidations::new(),
            clock: Arc::new(SystemClock),
            schema: Arc::from(DEFAULT_SCHEMA),
            queries: Arc::new(Queries::new(DEFAULT_SCHEMA)),
        }
    }

    /// Keeps the tables in `schema` instead of `public`. [`migrate`](Self::migrate) creates the
    /// schema if it does not exist.
    ///
    /// The name is quoted, so it is taken as written, case included.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        let schema = schema.into();
        self.queries = Arc::new(Queries::new(&schema));
        self.schema = Arc::from(schema);
        self
    }

    /// Only accepts keys whose scopes are in `catalog`.
    pub fn with_catalog(mut self, catalog: ScopeCatalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Uses `clock` for creation, revocation and rotation times.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema that holds the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Creates the schema if it is missing and applies the migrations shipped with the crate
    /// that it has not had yet, in one transaction. Calling it again does nothing; instances
    /// calling it at the same time wait for each other.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database fails or refuses (for example, the user may
    /// not create the schema); nothing is changed then.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // One migration at a time per schema, across every instance; released at commit.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("tower_api_key migrate {}", self.schema))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let schema_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&*self.schema)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let schema = quote_identifier(&self.schema);
        if !schema_exists {
            // Through `Executor::execute`, whose boxed future is `Send`; the compiler cannot
            // prove that of `RawSql::execute`'s, which would make `migrate` unusable in
            // `tokio::spawn`.
            (&mut *tx)
                .execute(sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")))
                .await
                .map_err(unavailable)?;
        }
        // The migrations name their tables without a schema; this applies until the commit.
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!("SET LOCAL search_path TO {schema}")))
            .await
            .map_err(unavailable)?;
        (&mut *tx)
            .execute(sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS api_key_migrations (\
                version BIGINT NOT NULL PRIMARY KEY, \
                description TEXT NOT NULL, \
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()\
             )",
            ))
            .await
            .map_err(unavailable)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM api_key_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        for migration in MIGRATIONS {
            if applied.contains(&migration.version) {
                continue;
            }
            (&mut *tx)
                .execute(sqlx::raw_sql(migration.sql))
                .await
                .map_err(unavailable)?;
            sqlx::query("INSERT INTO api_key_migrations (version, description) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(migration.description)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Announces the key of a row just changed on the invalidations, then decodes it.
    ///
    /// The announcement comes first and needs only the digest, so that a change to a row that
    /// is otherwise corrupted still reaches the layers.
    fn announce(&self, id: &KeyId, row: Option<PgRow>) -> Result<StoredKey, StoreError> {
        let row = row.ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
        let digest: Vec<u8> = row.try_get(1).map_err(unavailable)?;
        if let Some(digest) = sql::digest_of(&digest) {
            // After the write: a lookup that starts now reads the changed row.
            self.invalidations.invalidate(&digest);
        }
        Ok(stored(&row)?.1)
    }

    /// Inserts a new key.
    async fn insert<'c, E>(&self, executor: E, created: &CreatedKey) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Postgres>,
    {
        let stored = &created.stored;
        let record = &stored.record;
        sqlx::query(&self.queries.insert)
            .bind(record.id.as_str())
            .bind(&created.key.digest().as_bytes()[..])
            .bind(stored.hint.as_str())
            .bind(record.name.as_str())
            .bind(record.owner.as_str())
            .bind(record.environment.as_str())
            .bind(sql::encode_scopes(&record.scopes))
            .bind(sql::encode_metadata(&stored.metadata)?)
            .bind(to_micros(stored.created_at))
            .bind(record.expires_at.map(to_micros))
            .bind(record.revoked_at.map(to_micros))
            .bind(stored.last_used_at.map(to_micros))
            .execute(executor)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// `name` as a quoted SQL identifier: any text is safe in it.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A `timestamptz` from a parameter holding microseconds since the epoch, computed exactly.
fn timestamp(param: &str) -> String {
    format!(
        "(TIMESTAMPTZ 'epoch' + ({param}::int8 / 1000000) * INTERVAL '1 second' \
         + ({param}::int8 % 1000000) * INTERVAL '1 microsecond')"
    )
}

/// Microseconds since the epoch from a `timestamptz` column, exactly (PostgreSQL 14 or later).
fn micros(column: &str) -> String {
    format!("(EXTRACT(EPOCH FROM {column}) * 1000000)::int8")
}

/// The statements, with the schema's name in them.
struct Queries {
    insert: String,
    by_id: String,
    by_id_for_update: String,
    by_digest: String,
    all: String,
    by_owner: String,
    rename: String,
    revoke: String,
    shorten: String,
    delete: String,
    record_use: String,
}

impl Queries {
    fn new(schema: &str) -> Self {
        let table = format!("{}.api_keys", quote_identifier(schema));
        // In the order `raw_row` reads them.
        let columns = format!(
            "id, digest, hint, name, owner, environment, scopes, metadata::text, {}, {}, {}, {}",
            micros("created_at"),
            micros("expires_at"),
            micros("revoked_at"),
            micros("last_used_at"),
        );
        let select = format!("SELECT {columns} FROM {table}");
        Queries {
            insert: format!(
                "INSERT INTO {table} (id, digest, hint, name, owner, environment, scopes, \
                 metadata, created_at, expires_at, revoked_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, {}, {}, {}, {})",
                timestamp("$9"),
                timestamp("$10"),
                timestamp("$11"),
                timestamp("$12"),
            ),
            by_id: format!("{select} WHERE id = $1"),
            // Holds the row until the transaction ends, so that concurrent rotations of one key
            // run one after the other.
            by_id_for_update: format!("{select} WHERE id = $1 FOR UPDATE"),
            by_digest: format!("{select} WHERE digest = $1"),
            all: format!("{select} ORDER BY created_at DESC, id ASC"),
            by_owner: format!("{select} WHERE owner = $1 ORDER BY created_at DESC, id ASC"),
            rename: format!("UPDATE {table} SET name = $1 WHERE id = $2 RETURNING {columns}"),
            // The first revocation time is kept.
            revoke: format!(
                "UPDATE {table} SET revoked_at = coalesce(revoked_at, {}) WHERE id = $2 \
                 RETURNING {columns}",
                timestamp("$1"),
            ),
            shorten: format!(
                "UPDATE {table} SET expires_at = {} WHERE id = $2",
                timestamp("$1")
            ),
            delete: format!("DELETE FROM {table} WHERE id = $1 RETURNING digest"),
            // Matches the row whatever its time, so that no match means no such key; moves only
            // forward (`greatest` ignores NULL).
            record_use: format!(
                "UPDATE {table} SET last_used_at = greatest(last_used_at, {}) WHERE id = $2",
                timestamp("$1"),
            ),
        }
    }
}

/// Reads the columns of [`Queries`], in order.
fn raw_row(row: &PgRow) -> Result<RawRow, sqlx::Error> {
    Ok(RawRow {
        id: row.try_get(0)?,
        digest: row.try_get(1)?,
        hint: row.try_get(2)?,
        name: row.try_get(3)?,
        owner: row.try_get(4)?,
        environment: row.try_get(5)?,
        scopes: row.try_get(6)?,
        metadata: row.try_get(7)?,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        revoked_at: row.try_get(10)?,
        last_used_at: row.try_get(11)?,
    })
}

/// Decodes a row for a lifecycle call.
fn stored(row: &PgRow) -> Result<(KeyDigest, StoredKey), StoreError> {
    Ok(raw_row(row).map_err(unavailable)?.decode()?)
}

/// The row of key `id`, or [`StoreError::UnknownKey`].
fn found(id: &KeyId, row: Option<PgRow>) -> Result<(KeyDigest, StoredKey), StoreError> {
    let row = row.ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
    stored(&row)
}

#[async_trait]
impl KeyStore for PostgresStore {
    fn format(&self) -> &KeyFormat {
        &self.format
    }

    async fn create(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        let created = prepare_row(&self.format, new, self.now(), self.catalog.as_ref())?;
        self.insert(&self.pool, &created).await?;
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let row = sqlx::query(&self.queries.by_id)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(found(id, row)?.1)
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError> {
        let query = match owner {
            Some(owner) => sqlx::query(&self.queries.by_owner).bind(owner),
            None => sqlx::query(&self.queries.all),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|row| stored(row).map(|(_, stored)| stored))
            .collect()
    }

    async fn rename(&self, id: &KeyId, name: &str) -> Result<StoredKey, StoreError> {
        let name = validate_name(name)?;
        let row = sqlx::query(&self.queries.rename)
            .bind(name)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        self.announce(id, row)
    }

    async fn revoke(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let row = sqlx::query(&self.queries.revoke)
            .bind(to_micros(self.now()))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        self.announce(id, row)
    }

    async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<Rotation, StoreError> {
        let now = sql::normalize(self.now());
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let row = sqlx::query(&self.queries.by_id_for_update)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let (old_digest, mut old) = found(id, row)?;
        let (new, old_expires_at) = plan_rotation(&self.format, &old, grace, now)?;
        let old_expires_at = sql::normalize(old_expires_at);
        sqlx::query(&self.queries.shorten)
            .bind(to_micros(old_expires_at))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        self.insert(&mut *tx, &new).await?;
        tx.commit().await.map_err(unavailable)?;

        old.record.expires_at = Some(old_expires_at);
        self.invalidations.invalidate(&old_digest);
        Ok(Rotation { new, old })
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let digest: Option<Vec<u8>> = sqlx::query_scalar(&self.queries.delete)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let digest = digest.ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
        if let Some(digest) = sql::digest_of(&digest) {
            self.invalidations.invalidate(&digest);
        }
        Ok(())
    }

    async fn record_use(&self, id: &KeyId, at: SystemTime) -> Result<(), StoreError> {
        let done = sqlx::query(&self.queries.record_use)
            .bind(to_micros(at))
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownKey(id.clone()));
        }
        Ok(())
    }
}

#[async_trait]
impl KeyResolver for PostgresStore {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        let row = sqlx::query(&self.queries.by_digest)
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(ResolveError::new)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (_, stored) = raw_row(&row).map_err(ResolveError::new)?.decode()?;
        Ok(Some(stored.record))
    }

    fn invalidations(&self) -> Option<Invalidations> {
        Some(self.invalidations.clone())
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("format", &self.format)
            .field("schema", &self.schema)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The futures of the inherent methods can move between threads, as `tokio::spawn` and axum
    /// handlers need (the trait's are boxed as `Send` by `async_trait`).
    #[allow(dead_code)]
    fn futures_are_send(store: &PostgresStore, format: KeyFormat) {
        fn send<T: Send>(_: T) {}
        send(PostgresStore::connect("postgres://localhost/db", format));
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
}
