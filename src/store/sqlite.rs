//! Keys in a SQLite file: [`SqliteStore`], the embedded store (feature `sqlite`).
//!
//! One process, or a few on one machine, keep their keys in a file. [`SqliteStore::open`] opens
//! the file (creating it if missing) in WAL mode, and [`SqliteStore::migrate`] creates or
//! updates the tables and records the key format in the file; call it once at start-up, it does
//! nothing when the tables are up to date. A file migrated with another format is refused with
//! [`StoreError::FormatMismatch`] rather than refusing every
//! key. [`SqliteStore::open_recorded`] opens a file with the format recorded in it, as the
//! command-line tool does, and [`SqliteStore::from_pool`] uses a pool you configured yourself.
//!
//! # Schema
//!
//! The table `api_keys` (see `migrations/sqlite/` in the crate) holds one row per key: `id`
//! (primary key), `digest` (SHA-256 of the key, 32 bytes, unique and indexed), `hint`, `name`,
//! `owner`, `environment` (`live` or `test`), `scopes` (names separated by spaces), `metadata`
//! (a JSON object of strings), the times `created_at`, `expires_at`, `revoked_at`,
//! `last_used_at`, `replaced_by` (the key that replaced it in a rotation), and the key's
//! [limits](crate::limit): `rate_requests`, `rate_period_ms` and `rate_burst` (integers, all
//! `NULL` for no rate limit, or all set; the period in milliseconds) and `allowed_networks` (CIDR
//! ranges separated by single spaces, such as `203.0.113.0/24 2001:db8::/32`, or `NULL` for
//! anywhere). Never the key itself. Times are UTC, as integers: microseconds since 1970-01-01T00:00:00Z (so times read
//! back are cut to the microsecond). The table `api_key_migrations` records the migrations
//! applied, and `api_key_settings` the key prefix. Triggers on `api_keys` append the digest of
//! every changed key to `api_key_invalidations` (a log with an increasing `seq`, pruned to its
//! newest 10,000 rows) in the transaction of the change, whether the change is made through a
//! store or with plain SQL (changes to `last_used_at` alone are not logged).
//!
//! Usage counts ([`KeyStore::record_usage`](crate::KeyStore::record_usage)) are in
//! `api_key_usage`: one row per key, day and outcome, with `key_id` (a foreign key to
//! `api_keys.id`, deleted with the key), `day` (an integer: days since 1970-01-01, UTC),
//! `outcome` (`allowed`, `insufficient_scope`, `revoked`, `expired` or `rate_limited`) and
//! `requests`, keyed and ordered by the first three; and in `api_key_anonymous_usage`, one row
//! per day and outcome (`missing`, `malformed`, `unknown`) of the requests whose key was not
//! known. A flush adds to `requests`, never overwrites it, and saturates at `i64::MAX`. Neither
//! table fires a trigger. `api_key_usage_batches` holds the id (`id`, 32 hexadecimal digits) and
//! time (`applied_at`, microseconds) of each batch applied, so that a batch written again is not
//! counted again; ids older than seven days are deleted.
//!
//! The [audit trail](crate::store::audit) ([`KeyStore::audit`](crate::KeyStore::audit)) is
//! `api_key_audit`: one row per change, written in the transaction of the change, with
//! `seq` (`INTEGER PRIMARY KEY AUTOINCREMENT`, never reused), `at` (microseconds), `action`
//! (`created`, `renamed`, `limits_changed`, `rotated`, `revoked` or `deleted`), `key_id`,
//! `owner`, `key_name`, `actor`, `address` (an IP address as text, or `NULL`) and `related_key`
//! (the other key of a rotation, or `NULL`), indexed by `(owner, seq)` and `(key_id, seq)`. It
//! has no foreign key to `api_keys`, so a deleted key's entries stay, and fires no trigger.
//! Never a key or a digest.
//!
//! # Several processes on one file
//!
//! A revocation through a store reaches the layers built on it before the call returns. Other
//! processes on the same file (a second server, or the command-line tool next to a server) read
//! the log every 100 ms ([`SqliteStore::with_poll_interval`] to change it) once a layer is built
//! on their store, and drop the keys it names: a key revoked anywhere is refused everywhere
//! within one interval. When nothing changed, a look reads one row (the last one read). See
//! [`SqliteStore::watcher`] and the [invalidation guide](crate::invalidation).
//!
//! Every change is one transaction with its audit entry: `rotate` shortens the old key's expiry
//! and inserts the new key together, and a failed call leaves nothing behind. A database that cannot
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

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{self, StreamExt};
use tokio::time::MissedTickBehavior;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Sqlite;

use super::settings::StoreSettings;
use super::sql::backend::{ColumnType, Dialect, Read};
use super::sql::{table::unavailable, SqlDatabase, SqlStore, DEFAULT_POLL, PROPAGATION_MARGIN};
use super::StoreError;
use crate::invalidation::{BusError, Invalidation, InvalidationBus, InvalidationStream};
use crate::key::KeyDigest;

/// Keys in a SQLite file. Clones share the connection pool and the settings.
///
/// See the [module docs](crate::store::sqlite) for the schema and an example, and [`SqlStore`]
/// for every method.
pub type SqliteStore = SqlStore<Sqlite>;

/// How long a call waits for a connection, or for another writer, before failing.
const WAIT: Duration = Duration::from_secs(5);

impl SqlStore<Sqlite> {
    /// Opens the database file at `path`, creating it if it does not exist, in WAL mode, for
    /// keys as `settings` says (a [`KeyFormat`](crate::KeyFormat) is enough). (For keys that need not outlive the
    /// process, use [`MemoryStore`](super::MemoryStore).)
    ///
    /// Calls wait up to 5 seconds for a connection or for another writer. Call
    /// [`migrate`](Self::migrate) before using a new file.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the file cannot be opened or created.
    pub async fn open(
        path: impl AsRef<Path>,
        settings: impl Into<StoreSettings>,
    ) -> Result<Self, StoreError> {
        Ok(SqlStore::from_pool(open(path).await?, settings))
    }

    /// Opens the database file at `path` with the key format that an earlier
    /// [`migrate`](Self::migrate) recorded in it: for a tool that manages the keys of whatever
    /// service uses the file.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoRecordedFormat`] if the file has none (it is new, or was never migrated
    /// by this version), and as [`open`](Self::open).
    pub async fn open_recorded(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        SqlStore::open_recorded_pool(open(path).await?, None).await
    }

    /// Asks the file for changes made by other processes every `interval` rather than every
    /// 100 ms: a key revoked elsewhere is refused here at most `interval` (and a few
    /// milliseconds) later. When nothing changed, each look is one read of the newest rows of
    /// a small log table. Call it before the store starts watching (see
    /// [`watcher`](Self::watcher)); a zero `interval` is taken as one millisecond.
    pub fn with_poll_interval(self, interval: Duration) -> Self {
        self.with_poll(interval.max(Duration::from_millis(1)))
    }
}

/// Reads the log that the migrations' triggers write, every `poll`: the bus of SQLite, which
/// cannot push a change to another process.
struct LogBus {
    pool: SqlitePool,
    poll: Duration,
}

/// The rows past the last one read, with the last one read if it is still there.
const READ_LOG: &str = "SELECT seq, digest FROM api_key_invalidations WHERE seq >= ?1 ORDER BY seq";

/// One look at the log: the rows from `seq` `last` on (the row `last` itself if it is still
/// there). What a watcher pays every interval; when nothing changed, one row of an index.
pub(crate) async fn read_log(
    pool: &SqlitePool,
    last: i64,
) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(READ_LOG).bind(last).fetch_all(pool).await
}

/// Where a subscription to the log stands.
struct LogReader {
    pool: SqlitePool,
    ticks: tokio::time::Interval,
    /// The last `seq` read (0: none, the log was empty).
    last: i64,
    /// Messages read and not yet handed out.
    pending: VecDeque<Invalidation>,
}

impl LogReader {
    /// The next message, reading the log as often as the ticks say until there is one.
    async fn next(&mut self) -> Result<Invalidation, BusError> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(message);
            }
            self.ticks.tick().await;
            let rows = read_log(&self.pool, self.last)
                .await
                .map_err(BusError::new)?;
            let Some(&(first, _)) = rows.first() else {
                continue;
            };
            // The row last read is kept until 10,000 newer ones exist; without it, rows this
            // reader never saw may have been pruned.
            let expected = if self.last == 0 { 1 } else { self.last };
            if first != expected {
                self.pending.push_back(Invalidation::All);
            }
            for (seq, digest) in rows {
                if seq == self.last {
                    continue;
                }
                self.last = seq;
                // A digest of the wrong length was written by hand: be safe.
                self.pending.push_back(
                    <[u8; 32]>::try_from(digest.as_slice()).map_or(Invalidation::All, |bytes| {
                        Invalidation::Key(KeyDigest::from_bytes(bytes))
                    }),
                );
            }
        }
    }
}

#[async_trait]
impl InvalidationBus for LogBus {
    async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
        // Subscribed from here: every row past this one is read.
        let (last,): (i64,) =
            sqlx::query_as("SELECT coalesce(max(seq), 0) FROM api_key_invalidations")
                .fetch_one(&self.pool)
                .await
                .map_err(BusError::new)?;
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let reader = LogReader {
            pool: self.pool.clone(),
            ticks,
            last,
            pending: VecDeque::new(),
        };
        // After an error the stream ends.
        let messages = stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(message) => Some((Ok(message), Some(reader))),
                Err(error) => Some((Err(error), None)),
            }
        });
        Ok(messages.boxed())
    }
}

/// A pool on the file at `path`, created if missing, in WAL mode.
async fn open(path: impl AsRef<Path>) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(WAIT);
    SqlitePoolOptions::new()
        .acquire_timeout(WAIT)
        .connect_with(options)
        .await
        .map_err(unavailable)
}

impl SqlDatabase for Sqlite {}

impl Dialect for Sqlite {
    const STORE_NAME: &'static str = "SqliteStore";
    const IS_POSTGRES: bool = false;
    const CREATE_MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS api_key_migrations (\
        version INTEGER NOT NULL PRIMARY KEY, \
        description TEXT NOT NULL, \
        applied_at INTEGER NOT NULL\
        ) STRICT";
    // Takes the write lock first, so that two processes cannot both read a row and then write
    // it, nor both decide to apply the same migration.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // The write lock covers every row already.
    const FOR_UPDATE: &'static str = "";
    const FOR_NO_KEY_UPDATE: &'static str = "";

    fn param(n: usize) -> String {
        format!("?{n}")
    }

    fn select(column: &str, _ty: ColumnType) -> String {
        column.to_owned()
    }

    fn from_rust(expr: &str, _ty: ColumnType) -> String {
        expr.to_owned()
    }

    fn json_rows(n: usize, columns: &[(&str, Read)]) -> String {
        let columns = columns
            .iter()
            .enumerate()
            .map(|(index, (name, _))| format!("json_extract(value, '$[{index}]') AS {name}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("(SELECT {columns} FROM json_each({}))", Self::param(n))
    }

    fn column_type(ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Text | ColumnType::Json => "TEXT",
            ColumnType::Bytes => "BLOB",
            ColumnType::Time | ColumnType::Day | ColumnType::Int => "INTEGER",
        }
    }

    fn later_of(column: &str, value: &str) -> String {
        format!("max(coalesce({column}, {value}), {value})")
    }

    fn table(_namespace: Option<&str>, name: &str) -> String {
        name.to_owned()
    }

    fn invalidation_bus(
        pool: &SqlitePool,
        _namespace: Option<&Arc<str>>,
        poll: Duration,
    ) -> (Box<dyn InvalidationBus>, String) {
        let bus = LogBus {
            pool: pool.clone(),
            poll,
        };
        (Box::new(bus), "sqlite log".to_owned())
    }

    fn propagated<'c>(
        _pool: &'c SqlitePool,
        _namespace: Option<&'c str>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        // A watcher reads the log at least once per interval, and drops the keys at once.
        tokio::time::sleep(DEFAULT_POLL + PROPAGATION_MARGIN)
            .map(Ok)
            .boxed()
    }

    fn is_missing_table(err: &dyn sqlx::error::DatabaseError) -> bool {
        err.message().starts_with("no such table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyFormat;

    /// The constructors' futures can move between threads, as `tokio::spawn` needs.
    #[allow(dead_code)]
    fn futures_are_send(format: KeyFormat) {
        fn send<T: Send>(_: T) {}
        send(SqliteStore::open("keys.db", format));
        send(SqliteStore::open_recorded("keys.db"));
    }
}
