//! Keys in a SQLite file: [`SqliteStore`], the embedded store (feature `sqlite`).
//!
//! One process, or a few on one machine, keep their keys in a file. [`SqliteStore::open`] opens
//! the file (creating it if missing) in WAL mode, and [`SqliteStore::migrate`] creates or
//! updates the `api_keys` table; call it once at start-up, it does nothing when the table is up
//! to date. [`SqliteStore::from_pool`] uses a pool you configured yourself.
//!
//! # Schema
//!
//! The table `api_keys` (see `migrations/sqlite/` in the crate) holds one row per key: `id`
//! (primary key), `digest` (SHA-256 of the key, 32 bytes, unique and indexed), `hint`, `name`,
//! `owner`, `environment` (`live` or `test`), `scopes` (names separated by spaces), `metadata`
//! (a JSON object of strings), and the times `created_at`, `expires_at`, `revoked_at`,
//! `last_used_at`. Never the key itself. Times are UTC, as integers: microseconds since
//! 1970-01-01T00:00:00Z (so times read back are cut to the microsecond). The table
//! `api_key_migrations` records the migrations applied.
//!
//! Every change is one statement or one transaction: `rotate` shortens the old key's expiry and
//! inserts the new key together, and a failed call leaves nothing behind. A database that cannot
//! be opened, is locked past the busy timeout or fails gives [`StoreError::Unavailable`], and a
//! layer in front answers `503` until it works again.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_api_key::{Environment, KeyFormat, KeyResolver, KeyStore, NewKey, Scope, SqliteStore};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("keys.db");
//!
//! let store = SqliteStore::open(&path, KeyFormat::new("om").unwrap()).await.unwrap();
//! store.migrate().await.unwrap();
//!
//! let created = store
//!     .create(
//!         NewKey::new("Webhook Server", Environment::Live)
//!             .owner("acct_42")
//!             .scopes([Scope::from_static("orders:read")]),
//!     )
//!     .await
//!     .unwrap();
//! println!("your key: {}", created.key.expose_secret());
//!
//! // The file keeps the key's digest, never the key: a later process finds it again.
//! drop(store);
//! let reopened = SqliteStore::open(&path, KeyFormat::new("om").unwrap()).await.unwrap();
//! reopened.migrate().await.unwrap();
//! let found = reopened.resolve(&created.key.digest()).await.unwrap().unwrap();
//! assert_eq!(found.name, "Webhook Server");
//!
//! let rotation = reopened.rotate(created.id(), Duration::from_secs(3600)).await.unwrap();
//! assert_eq!(rotation.new.stored.record.scopes, created.stored.record.scopes);
//! # });
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
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
    sql: include_str!("../../migrations/sqlite/0001_create_api_keys.sql"),
}];

/// How long a call waits for a connection, or for another writer, before failing.
const WAIT: Duration = Duration::from_secs(5);

/// The columns of a key, in the order [`raw_row`] reads them.
macro_rules! columns {
    () => {
        "id, digest, hint, name, owner, environment, scopes, metadata, \
         created_at, expires_at, revoked_at, last_used_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO api_keys (",
    columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
);
const BY_ID: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = ?");
const BY_DIGEST: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE digest = ?");
const ALL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM api_keys ORDER BY created_at DESC, id ASC"
);
const BY_OWNER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM api_keys WHERE owner = ? ORDER BY created_at DESC, id ASC"
);
const RENAME: &str = concat!(
    "UPDATE api_keys SET name = ? WHERE id = ? RETURNING ",
    columns!()
);
// The first revocation time is kept.
const REVOKE: &str = concat!(
    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING ",
    columns!()
);
const SHORTEN: &str = "UPDATE api_keys SET expires_at = ? WHERE id = ?";
const DELETE: &str = "DELETE FROM api_keys WHERE id = ? RETURNING digest";
// Matches the row whatever its time, so that no match means no such key; moves only forward.
const RECORD_USE: &str =
    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, ?1), ?1) WHERE id = ?2";

/// Keys in a SQLite database. Clones share the connection pool and the invalidations.
///
/// See the [module docs](crate::store::sqlite) for the schema and an example.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    format: KeyFormat,
    catalog: Option<ScopeCatalog>,
    invalidations: Invalidations,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it if it does not exist, in WAL mode.
    /// (For keys that need not outlive the process, use [`MemoryStore`](super::MemoryStore).)
    ///
    /// Calls wait up to 5 seconds for a connection or for another writer. Call
    /// [`migrate`](Self::migrate) before using a new file.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the file cannot be opened or created.
    pub async fn open(path: impl AsRef<Path>, format: KeyFormat) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(WAIT);
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(WAIT)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        Ok(SqliteStore::from_pool(pool, format))
    }

    /// A store on a pool you configured, creating keys of `format`.
    ///
    /// Give the pool a `busy_timeout`, so that concurrent writers wait for each other rather
    /// than fail.
    pub fn from_pool(pool: SqlitePool, format: KeyFormat) -> Self {
        SqliteStore {
            pool,
            format,
            catalog: None,
            invalidations: Invalidations::new(),
            clock: Arc::new(SystemClock),
        }
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
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies the migrations shipped with the crate that the database has not had yet, in one
    /// transaction. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database fails; nothing is changed then.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock first, so that two processes migrating at once wait
        // for each other instead of both deciding to apply the same migration.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        // Through `Executor::execute`, whose boxed future is `Send`; the compiler cannot prove
        // that of `RawSql::execute`'s, which would make `migrate` unusable in `tokio::spawn`.
        (&mut *tx)
            .execute(sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS api_key_migrations (\
                version INTEGER NOT NULL PRIMARY KEY, \
                description TEXT NOT NULL, \
                applied_at INTEGER NOT NULL\
             ) STRICT",
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
            sqlx::query(
                "INSERT INTO api_key_migrations (version, description, applied_at) \
                 VALUES (?, ?, ?)",
            )
            .bind(migration.version)
            .bind(migration.description)
            .bind(to_micros(SystemTime::now()))
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
    fn announce(&self, id: &KeyId, row: Option<SqliteRow>) -> Result<StoredKey, StoreError> {
        let row = row.ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
        let digest: Vec<u8> = row.try_get(1).map_err(unavailable)?;
        if let Some(digest) = sql::digest_of(&digest) {
            // After the write: a lookup that starts now reads the changed row.
            self.invalidations.invalidate(&digest);
        }
        Ok(stored(&row)?.1)
    }
}

/// Reads the columns listed by `columns!`.
fn raw_row(row: &SqliteRow) -> Result<RawRow, sqlx::Error> {
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
fn stored(row: &SqliteRow) -> Result<(KeyDigest, StoredKey), StoreError> {
    Ok(raw_row(row).map_err(unavailable)?.decode()?)
}

/// The row of key `id`, or [`StoreError::UnknownKey`].
fn found(id: &KeyId, row: Option<SqliteRow>) -> Result<(KeyDigest, StoredKey), StoreError> {
    let row = row.ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
    stored(&row)
}

/// Binds a new key's columns to [`INSERT`].
async fn insert<'c, E>(executor: E, created: &CreatedKey) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let stored = &created.stored;
    let record = &stored.record;
    sqlx::query(INSERT)
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

#[async_trait]
impl KeyStore for SqliteStore {
    fn format(&self) -> &KeyFormat {
        &self.format
    }

    async fn create(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        let created = prepare_row(&self.format, new, self.now(), self.catalog.as_ref())?;
        insert(&self.pool, &created).await?;
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let row = sqlx::query(BY_ID)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(found(id, row)?.1)
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError> {
        let query = match owner {
            Some(owner) => sqlx::query(BY_OWNER).bind(owner),
            None => sqlx::query(ALL),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|row| stored(row).map(|(_, stored)| stored))
            .collect()
    }

    async fn rename(&self, id: &KeyId, name: &str) -> Result<StoredKey, StoreError> {
        let name = validate_name(name)?;
        let row = sqlx::query(RENAME)
            .bind(name)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        self.announce(id, row)
    }

    async fn revoke(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let now = to_micros(self.now());
        let row = sqlx::query(REVOKE)
            .bind(now)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        self.announce(id, row)
    }

    async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<Rotation, StoreError> {
        let now = sql::normalize(self.now());
        // IMMEDIATE takes the write lock before reading, so that the old key cannot change
        // between the read and the writes.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let row = sqlx::query(BY_ID)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let (old_digest, mut old) = found(id, row)?;
        let (new, old_expires_at) = plan_rotation(&self.format, &old, grace, now)?;
        let old_expires_at = sql::normalize(old_expires_at);
        sqlx::query(SHORTEN)
            .bind(to_micros(old_expires_at))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        insert(&mut *tx, &new).await?;
        tx.commit().await.map_err(unavailable)?;

        old.record.expires_at = Some(old_expires_at);
        self.invalidations.invalidate(&old_digest);
        Ok(Rotation { new, old })
    }

    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        let digest: Option<Vec<u8>> = sqlx::query_scalar(DELETE)
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
        let done = sqlx::query(RECORD_USE)
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
impl KeyResolver for SqliteStore {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        let row = sqlx::query(BY_DIGEST)
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

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("format", &self.format)
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
    fn futures_are_send(store: &SqliteStore, format: KeyFormat) {
        fn send<T: Send>(_: T) {}
        send(SqliteStore::open("keys.db", format));
        send(store.migrate());
    }
}
