//! One conformance suite for every store: the rules of the `KeyStore` trait, written once and run
//! against `MemoryStore`, `SqliteStore` (feature `sqlite`, on a real file) and `PostgresStore`
//! (feature `postgres`, on the real server).
//!
//! Each rule is a generic async function in `rules`; the `suite!` macro makes one `#[tokio::test]`
//! per rule and store, so `cargo test memory::`, `cargo test sqlite::` or `cargo test
//! postgres::revoke` pick what to run. Time is a `ManualClock` shared by the store and the layer.
//!
//! PostgreSQL is found at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! every test works in a schema of its own (`test_<random>`), dropped afterwards, so tests run in
//! parallel. When the server cannot be reached the PostgreSQL tests are skipped with a message,
//! unless `CI` is set: then they fail.
// Without a SQL store, the SQL-only rules and outage helpers have no caller.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_api_key::store::{MAX_ACTOR_LEN, MAX_SERIES_DAYS};
use tower_api_key::{
    Actor, AllowedNetworks, AnonymousIncrement, AnonymousOutcome, ApiKeyLayer, AuditAction,
    AuditEvent, AuditQuery, BatchId, CreatedKey, DailyUsage, Day, Environment, Invalidations,
    KeyDigest, KeyFormat, KeyId, KeyIncrement, KeyLimits, KeyOutcome, KeyRecord, KeyResolver,
    KeyStore, MemoryStore, NewKey, OutcomeCounts, Principal, RateLimit, ResolveError, Scope,
    ScopeCatalog, StoreError, UsageBatch,
};
use tower_api_key::{ChannelHealth, Clock, ManualClock};

const ORDERS_READ: Scope = Scope::from_static("orders:read");
const PRODUCTS_READ: Scope = Scope::from_static("products:read");
const PRODUCTS_WRITE: Scope = Scope::from_static("products:write");

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn om() -> KeyFormat {
    KeyFormat::new("om").unwrap()
}

/// 2023-11-14T22:13:20.123456789Z: with nanoseconds on purpose, which the SQL stores cut to
/// microseconds; what a store hands back must still equal what it reads back later.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
}

// ---------------------------------------------------------------------------------------------
// The clock
// ---------------------------------------------------------------------------------------------

/// A `ManualClock` that can also tick forward by a millisecond on every reading, so that
/// concurrent calls each see a different time.
#[derive(Clone, Debug)]
struct TestClock {
    manual: ManualClock,
    ticking: Arc<AtomicBool>,
}

impl TestClock {
    fn new() -> Self {
        TestClock {
            manual: ManualClock::new(t0()),
            ticking: Arc::new(AtomicBool::new(false)),
        }
    }

    fn advance(&self, by: Duration) {
        self.manual.advance(by);
    }

    fn tick_on_every_reading(&self) {
        self.ticking.store(true, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        if self.ticking.load(Ordering::SeqCst) {
            self.manual.advance(Duration::from_millis(1));
        }
        self.manual.now()
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A kind of store, and what the suite needs to look inside it.
#[async_trait]
trait Backend: Sized + Send + Sync + 'static {
    type Store: KeyStore + Clone;

    /// Whether the store's database is there (PostgreSQL may not be, outside CI).
    async fn available() -> bool {
        true
    }

    /// A new, empty store.
    async fn open(clock: TestClock, catalog: Option<ScopeCatalog>) -> (Self, Self::Store);

    /// Every cell of the key table as bytes (and, for SQLite, the database files themselves);
    /// for `MemoryStore`, what its `Debug` and listings show.
    async fn cells(&self, store: &Self::Store) -> Vec<Vec<u8>>;

    /// The same keys through another handle, as another instance of the service would hold
    /// them: a pool of its own on the same database (for `MemoryStore`, a clone).
    async fn another_instance(&self, store: &Self::Store) -> Self::Store;

    /// Whether `cells` reads a real table, which then holds the digest and the hint.
    const HAS_TABLE: bool;

    /// Every row of the audit trail as text, read as plainly as the backend allows (for the SQL
    /// stores, a raw `SELECT *` of `api_key_audit`); for `MemoryStore`, the `Debug` of every
    /// entry.
    async fn audit_rows(&self, store: &Self::Store) -> Vec<String>;
}

/// A backend whose rows can be corrupted by hand, as an operator with a SQL prompt might.
#[async_trait]
trait SqlBackend: Backend {
    async fn corrupt(&self, store: &Self::Store, id: &KeyId, corruption: Corruption);

    /// Makes every later insert into the key table fail, with a trigger.
    async fn refuse_inserts(&self, store: &Self::Store);

    /// Makes every later change to a key's `last_used_at` fail, with a trigger.
    async fn refuse_last_uses(&self, store: &Self::Store);

    /// Writes usage rows by hand as a later version of the crate could: key `id`'s requests of
    /// the outcome `teleported` on `day`, and anonymous ones of the outcome `spoofed`.
    async fn add_unknown_outcomes(&self, store: &Self::Store, id: &KeyId, day: Day);

    /// Makes key `id`'s count of allowed requests on `day` negative, past the table's check.
    async fn make_count_negative(&self, store: &Self::Store, id: &KeyId, day: Day);

    /// The same database opened again for keys of `format`, and migrated.
    async fn reopen(&self, format: KeyFormat) -> Result<Self::Store, StoreError>;

    /// The same database opened with the key format recorded in it.
    async fn open_recorded(&self) -> Result<Self::Store, StoreError>;

    /// A database of the same kind that was never migrated, opened with the format recorded in
    /// it.
    async fn open_recorded_fresh() -> Result<Self::Store, StoreError>;

    /// Makes every later insert into the audit trail fail, with a trigger.
    async fn refuse_audit_entries(&self, store: &Self::Store);

    /// Edits every row of the audit trail by hand: `UPDATE api_key_audit SET <assignment>`.
    async fn edit_audit(&self, store: &Self::Store, assignment: &str);
}

#[derive(Clone, Copy, Debug)]
enum Corruption {
    Environment,
    Scope,
    DigestLength,
    Metadata,
    /// A rate of zero requests.
    RateCount,
    /// A negative rate period.
    RatePeriod,
    /// A rate with its burst missing.
    PartialRate,
    /// An allowlist with a network that is not one.
    Network,
}

impl Corruption {
    const ALL: [Corruption; 8] = [
        Corruption::Environment,
        Corruption::Scope,
        Corruption::DigestLength,
        Corruption::Metadata,
        Corruption::RateCount,
        Corruption::RatePeriod,
        Corruption::PartialRate,
        Corruption::Network,
    ];

    fn column(self) -> &'static str {
        match self {
            Corruption::Environment => "environment",
            Corruption::Scope => "scopes",
            Corruption::DigestLength => "digest",
            Corruption::Metadata => "metadata",
            Corruption::RateCount => "rate_requests",
            Corruption::RatePeriod => "rate_period_ms",
            Corruption::PartialRate => "rate_burst",
            Corruption::Network => "allowed_networks",
        }
    }

    /// The assignments of the corruption's `UPDATE`, but for the digest's, which each database
    /// writes its own way.
    fn assignment(self) -> &'static str {
        match self {
            Corruption::Environment => "environment = 'prod'",
            Corruption::Scope => "scopes = 'orders:read orders'",
            Corruption::DigestLength => "",
            Corruption::Metadata => "metadata = '[\"not\", \"an\", \"object\"]'",
            Corruption::RateCount => "rate_requests = 0, rate_period_ms = 1000, rate_burst = 1",
            Corruption::RatePeriod => "rate_requests = 1, rate_period_ms = -5, rate_burst = 1",
            Corruption::PartialRate => "rate_requests = 10, rate_period_ms = 1000",
            Corruption::Network => "allowed_networks = '203.0.113.0/24 10.0.0.0/33'",
        }
    }
}

struct Memory;

#[async_trait]
impl Backend for Memory {
    type Store = MemoryStore;
    const HAS_TABLE: bool = false;

    async fn open(clock: TestClock, catalog: Option<ScopeCatalog>) -> (Self, MemoryStore) {
        let mut store = MemoryStore::new(om()).with_clock(clock);
        if let Some(catalog) = catalog {
            store = store.with_catalog(catalog);
        }
        (Memory, store)
    }

    async fn cells(&self, store: &MemoryStore) -> Vec<Vec<u8>> {
        let listed = store.list(None).await.unwrap();
        vec![
            format!("{store:?}").into_bytes(),
            format!("{listed:?}").into_bytes(),
        ]
    }

    async fn another_instance(&self, store: &MemoryStore) -> MemoryStore {
        store.clone()
    }

    async fn audit_rows(&self, store: &MemoryStore) -> Vec<String> {
        let trail = store.audit(&AuditQuery::all()).await.unwrap();
        trail.iter().map(|event| format!("{event:?}")).collect()
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_backend {
    use std::path::{Path, PathBuf};

    use tower_api_key::store::sqlx::{self, sqlite::SqliteConnectOptions, SqlitePool};
    use tower_api_key::SqliteStore;

    use super::*;

    pub(crate) struct Sqlite {
        // Removed with its files when the test ends.
        _dir: tempfile::TempDir,
        pub(crate) path: PathBuf,
    }

    impl Sqlite {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys.db");
            Sqlite { _dir: dir, path }
        }
    }

    #[async_trait]
    impl Backend for Sqlite {
        type Store = SqliteStore;
        const HAS_TABLE: bool = true;

        async fn open(clock: TestClock, catalog: Option<ScopeCatalog>) -> (Self, SqliteStore) {
            let backend = Sqlite::new();
            let mut store = SqliteStore::open(&backend.path, om())
                .await
                .unwrap()
                .with_clock(clock);
            if let Some(catalog) = catalog {
                store = store.with_catalog(catalog);
            }
            store.migrate().await.unwrap();
            (backend, store)
        }

        async fn cells(&self, store: &SqliteStore) -> Vec<Vec<u8>> {
            let pool = store.pool();
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info('api_keys')")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            assert!(columns.len() >= 12, "{columns:?}");
            let mut cells = Vec::new();
            for column in columns {
                let values: Vec<Option<Vec<u8>>> =
                    sqlx::query_scalar(&format!("SELECT CAST(\"{column}\" AS BLOB) FROM api_keys"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                cells.extend(values.into_iter().flatten());
            }
            // The files too: free pages and the write-ahead log must not hold a key either.
            for file in [self.path.clone(), wal(&self.path)] {
                if let Ok(bytes) = std::fs::read(&file) {
                    cells.push(bytes);
                }
            }
            cells
        }

        async fn another_instance(&self, _store: &SqliteStore) -> SqliteStore {
            SqliteStore::open(&self.path, om()).await.unwrap()
        }

        async fn audit_rows(&self, store: &SqliteStore) -> Vec<String> {
            let pool = store.pool();
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info('api_key_audit')")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            assert_eq!(columns.len(), 9, "{columns:?}");
            // Every column of every row, cast to text and joined: SQLite has no row-to-text.
            let row = columns
                .iter()
                .map(|column| format!("coalesce(CAST(\"{column}\" AS TEXT), 'NULL')"))
                .collect::<Vec<_>>()
                .join(" || ' | ' || ");
            sqlx::query_scalar(&format!("SELECT {row} FROM api_key_audit ORDER BY seq"))
                .fetch_all(pool)
                .await
                .unwrap()
        }
    }

    #[async_trait]
    impl SqlBackend for Sqlite {
        async fn reopen(&self, format: KeyFormat) -> Result<SqliteStore, StoreError> {
            let store = SqliteStore::open(&self.path, format).await.unwrap();
            store.migrate().await.map(|()| store)
        }

        async fn open_recorded(&self) -> Result<SqliteStore, StoreError> {
            SqliteStore::open_recorded(&self.path).await
        }

        async fn open_recorded_fresh() -> Result<SqliteStore, StoreError> {
            SqliteStore::open_recorded(&Sqlite::new().path).await
        }

        async fn corrupt(&self, store: &SqliteStore, id: &KeyId, corruption: Corruption) {
            let assignment = match corruption {
                Corruption::DigestLength => "digest = substr(digest, 1, 31)",
                other => other.assignment(),
            };
            let mut conn = store.pool().acquire().await.unwrap();
            // The table's CHECK constraints would refuse the first and third.
            sqlx::query("PRAGMA ignore_check_constraints = ON")
                .execute(&mut *conn)
                .await
                .unwrap();
            let done = sqlx::query(&format!("UPDATE api_keys SET {assignment} WHERE id = ?"))
                .bind(id.as_str())
                .execute(&mut *conn)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1);
            sqlx::query("PRAGMA ignore_check_constraints = OFF")
                .execute(&mut *conn)
                .await
                .unwrap();
        }

        async fn refuse_inserts(&self, store: &SqliteStore) {
            refuse(
                store,
                "refuse_inserts",
                "INSERT ON api_keys",
                "inserts are refused",
            )
            .await;
        }

        async fn add_unknown_outcomes(&self, store: &SqliteStore, id: &KeyId, day: Day) {
            sqlx::query(
                "INSERT INTO api_key_usage (key_id, day, outcome, requests) \
                 VALUES (?1, ?2, 'teleported', 5); \
                 INSERT INTO api_key_anonymous_usage (day, outcome, requests) \
                 VALUES (?2, 'spoofed', 5)",
            )
            .bind(id.as_str())
            .bind(day.days_since_epoch())
            .execute(store.pool())
            .await
            .unwrap();
        }

        async fn make_count_negative(&self, store: &SqliteStore, id: &KeyId, day: Day) {
            let mut conn = store.pool().acquire().await.unwrap();
            sqlx::query("PRAGMA ignore_check_constraints = ON")
                .execute(&mut *conn)
                .await
                .unwrap();
            let done = sqlx::query(
                "UPDATE api_key_usage SET requests = -1 \
                 WHERE key_id = ? AND day = ? AND outcome = 'allowed'",
            )
            .bind(id.as_str())
            .bind(day.days_since_epoch())
            .execute(&mut *conn)
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
            sqlx::query("PRAGMA ignore_check_constraints = OFF")
                .execute(&mut *conn)
                .await
                .unwrap();
        }

        async fn refuse_last_uses(&self, store: &SqliteStore) {
            let event = "UPDATE OF last_used_at ON api_keys";
            refuse(store, "refuse_last_uses", event, "last uses are refused").await;
        }

        async fn refuse_audit_entries(&self, store: &SqliteStore) {
            let event = "INSERT ON api_key_audit";
            refuse(
                store,
                "refuse_audit_entries",
                event,
                "audit entries are refused",
            )
            .await;
        }

        async fn edit_audit(&self, store: &SqliteStore, assignment: &str) {
            sqlx::raw_sql(&format!("UPDATE api_key_audit SET {assignment}"))
                .execute(store.pool())
                .await
                .unwrap();
        }
    }

    /// Creates the trigger `name`, which makes every `event` (such as `INSERT ON api_keys`)
    /// fail with `message`.
    async fn refuse(store: &SqliteStore, name: &str, event: &str, message: &str) {
        sqlx::raw_sql(&format!(
            "CREATE TRIGGER {name} BEFORE {event} \
             BEGIN SELECT RAISE(ABORT, '{message}'); END"
        ))
        .execute(store.pool())
        .await
        .unwrap();
    }

    pub(crate) fn wal(path: &Path) -> PathBuf {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// A pool that opens a new connection for every call and closes it afterwards, and never
    /// creates the file: so a database file that goes away is noticed at once.
    pub(crate) async fn fresh_connection_pool(path: &Path) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(5));
        sqlx::sqlite::SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .after_release(|_, _| Box::pin(async { Ok(false) }))
            .connect_with(options)
            .await
            .unwrap()
    }
}

#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg;

#[cfg(feature = "postgres")]
mod postgres_backend {
    use std::sync::OnceLock;

    use tower_api_key::store::sqlx;
    use tower_api_key::store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use tower_api_key::PostgresStore;

    use super::*;

    pub(crate) fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    pub(crate) fn connect_options() -> PgConnectOptions {
        url().parse().unwrap()
    }

    /// A fresh schema name, `test_` and 16 random hex digits.
    pub(crate) fn new_schema() -> String {
        let random = om().generate(Environment::Test).unwrap().digest().to_hex();
        format!("test_{}", &random[..16])
    }

    pub(crate) struct Postgres {
        /// Dropped, with everything in it, when the test ends; so is `<schema>_away`, where the
        /// outage tests move it.
        pub(crate) schema: String,
    }

    impl Drop for Postgres {
        fn drop(&mut self) {
            let schema = &self.schema;
            crate::pg::clean_up(
                url(),
                vec![format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\", \"{schema}_away\" CASCADE"
                )],
            );
        }
    }

    #[async_trait]
    impl Backend for Postgres {
        type Store = PostgresStore;
        const HAS_TABLE: bool = true;

        async fn available() -> bool {
            static AVAILABLE: OnceLock<bool> = OnceLock::new();
            if let Some(available) = AVAILABLE.get() {
                return *available;
            }
            let attempt = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(connect_options())
                .await;
            let available = match attempt {
                Ok(pool) => {
                    pool.close().await;
                    true
                }
                Err(err) if std::env::var_os("CI").is_some() => {
                    panic!(
                        "PostgreSQL at {} is unreachable, and CI is set: {err}",
                        url()
                    )
                }
                Err(err) => {
                    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        use std::io::Write as _;
                        let _ = writeln!(
                            std::io::stderr(),
                            "\n\
                             ************************************************************************\n\
                             SKIPPING the PostgreSQL store tests: {} is unreachable ({err}).\n\
                             Start PostgreSQL or set DATABASE_URL; with CI set, this is a failure.\n\
                             ************************************************************************\n",
                            url()
                        );
                    });
                    false
                }
            };
            let _ = AVAILABLE.set(available);
            available
        }

        async fn open(clock: TestClock, catalog: Option<ScopeCatalog>) -> (Self, PostgresStore) {
            let backend = Postgres {
                schema: new_schema(),
            };
            let pool = PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect_options().application_name(&backend.schema))
                .await
                .unwrap();
            let mut store = PostgresStore::from_pool(pool, om())
                .with_schema(&backend.schema)
                .with_clock(clock);
            if let Some(catalog) = catalog {
                store = store.with_catalog(catalog);
            }
            store.migrate().await.unwrap();
            (backend, store)
        }

        async fn cells(&self, store: &PostgresStore) -> Vec<Vec<u8>> {
            let pool = store.pool();
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = 'api_keys'",
            )
            .bind(&self.schema)
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(columns.len() >= 12, "{columns:?}");
            let table = format!("\"{}\".api_keys", self.schema);
            let mut cells = Vec::new();
            for (column, data_type) in columns {
                if data_type == "bytea" {
                    let values: Vec<Option<Vec<u8>>> =
                        sqlx::query_scalar(&format!("SELECT \"{column}\" FROM {table}"))
                            .fetch_all(pool)
                            .await
                            .unwrap();
                    cells.extend(values.into_iter().flatten());
                } else {
                    let values: Vec<Option<String>> =
                        sqlx::query_scalar(&format!("SELECT \"{column}\"::text FROM {table}"))
                            .fetch_all(pool)
                            .await
                            .unwrap();
                    cells.extend(values.into_iter().flatten().map(String::into_bytes));
                }
            }
            cells
        }

        async fn another_instance(&self, _store: &PostgresStore) -> PostgresStore {
            PostgresStore::connect(&url(), om())
                .await
                .unwrap()
                .with_schema(&self.schema)
        }

        async fn audit_rows(&self, store: &PostgresStore) -> Vec<String> {
            sqlx::query_scalar(&format!(
                "SELECT a::text FROM \"{}\".api_key_audit AS a ORDER BY seq",
                self.schema
            ))
            .fetch_all(store.pool())
            .await
            .unwrap()
        }
    }

    impl Postgres {
        /// Creates the trigger `name` (and its function), which makes every `event` (such as
        /// `INSERT ON {schema}.api_keys`, `{schema}` standing for the test's schema) fail with
        /// `message`.
        async fn refuse(&self, store: &PostgresStore, name: &str, event: &str, message: &str) {
            let schema = format!("\"{}\"", self.schema);
            let event = event.replace("{schema}", &schema);
            sqlx::raw_sql(&format!(
                "CREATE FUNCTION {schema}.{name}() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$; \
                 CREATE TRIGGER {name} BEFORE {event} \
                 FOR EACH ROW EXECUTE FUNCTION {schema}.{name}();"
            ))
            .execute(store.pool())
            .await
            .unwrap();
        }
    }

    #[async_trait]
    impl SqlBackend for Postgres {
        async fn reopen(&self, format: KeyFormat) -> Result<PostgresStore, StoreError> {
            let store = PostgresStore::connect(&url(), format)
                .await
                .unwrap()
                .with_schema(&self.schema);
            store.migrate().await.map(|()| store)
        }

        async fn open_recorded(&self) -> Result<PostgresStore, StoreError> {
            PostgresStore::connect_recorded(&url(), &self.schema).await
        }

        async fn open_recorded_fresh() -> Result<PostgresStore, StoreError> {
            let fresh = Postgres {
                schema: new_schema(),
            };
            PostgresStore::connect_recorded(&url(), &fresh.schema).await
        }

        async fn corrupt(&self, store: &PostgresStore, id: &KeyId, corruption: Corruption) {
            let table = format!("\"{}\".api_keys", self.schema);
            let assignment = match corruption {
                Corruption::DigestLength => "digest = substring(digest from 1 for 31)",
                other => other.assignment(),
            };
            // The table's CHECK constraints would refuse the first and third.
            sqlx::raw_sql(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT api_keys_environment_check, \
                 DROP CONSTRAINT api_keys_digest_check"
            ))
            .execute(store.pool())
            .await
            .unwrap();
            let done = sqlx::query(&format!("UPDATE {table} SET {assignment} WHERE id = $1"))
                .bind(id.as_str())
                .execute(store.pool())
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }

        async fn refuse_inserts(&self, store: &PostgresStore) {
            let event = "INSERT ON {schema}.api_keys";
            self.refuse(store, "refuse_inserts", event, "inserts are refused")
                .await;
        }

        async fn add_unknown_outcomes(&self, store: &PostgresStore, id: &KeyId, day: Day) {
            let schema = format!("\"{}\"", self.schema);
            let day = format!("DATE '1970-01-01' + {}", day.days_since_epoch());
            sqlx::query(&format!(
                "INSERT INTO {schema}.api_key_usage (key_id, day, outcome, requests) \
                 VALUES ($1, {day}, 'teleported', 5)"
            ))
            .bind(id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
            sqlx::raw_sql(&format!(
                "INSERT INTO {schema}.api_key_anonymous_usage (day, outcome, requests) \
                 VALUES ({day}, 'spoofed', 5)"
            ))
            .execute(store.pool())
            .await
            .unwrap();
        }

        async fn make_count_negative(&self, store: &PostgresStore, id: &KeyId, day: Day) {
            let table = format!("\"{}\".api_key_usage", self.schema);
            sqlx::raw_sql(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT api_key_usage_requests_check"
            ))
            .execute(store.pool())
            .await
            .unwrap();
            let done = sqlx::query(&format!(
                "UPDATE {table} SET requests = -1 WHERE key_id = $1 \
                 AND day = DATE '1970-01-01' + $2 AND outcome = 'allowed'"
            ))
            .bind(id.as_str())
            .bind(day.days_since_epoch())
            .execute(store.pool())
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }

        async fn refuse_last_uses(&self, store: &PostgresStore) {
            let event = "UPDATE OF last_used_at ON {schema}.api_keys";
            self.refuse(store, "refuse_last_uses", event, "last uses are refused")
                .await;
        }

        async fn refuse_audit_entries(&self, store: &PostgresStore) {
            let event = "INSERT ON {schema}.api_key_audit";
            self.refuse(
                store,
                "refuse_audit_entries",
                event,
                "audit entries are refused",
            )
            .await;
        }

        async fn edit_audit(&self, store: &PostgresStore, assignment: &str) {
            sqlx::raw_sql(&format!(
                "UPDATE \"{}\".api_key_audit SET {assignment}",
                self.schema
            ))
            .execute(store.pool())
            .await
            .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What every rule starts from
// ---------------------------------------------------------------------------------------------

/// A fresh store of backend `B`, its clock, and a layer in front of it.
struct Test<B: Backend> {
    store: B::Store,
    clock: TestClock,
    app: Router,
    // Last: dropping it deletes the database.
    backend: B,
}

impl<B: Backend> Test<B> {
    async fn new() -> Self {
        Test::open(None).await
    }

    async fn with_catalog(catalog: ScopeCatalog) -> Self {
        Test::open(Some(catalog)).await
    }

    async fn open(catalog: Option<ScopeCatalog>) -> Self {
        let clock = TestClock::new();
        let (backend, store) = B::open(clock.clone(), catalog).await;
        let app = app(store.clone(), &clock);
        Test {
            store,
            clock,
            app,
            backend,
        }
    }

    async fn create(&self, new: NewKey) -> CreatedKey {
        self.store.create(new).await.unwrap()
    }

    async fn count(&self) -> usize {
        self.store.list(None).await.unwrap().len()
    }

    /// What the store itself holds, as bytes.
    async fn cells(&self) -> Vec<Vec<u8>> {
        self.backend.cells(&self.store).await
    }
}

/// `GET /v1/me` behind an `ApiKeyLayer` on `store`, answering with the key's name.
fn app(store: impl KeyStore + Clone, clock: &TestClock) -> Router {
    Router::new()
        .route(
            "/v1/me",
            get(|principal: Principal| async move { principal.name().to_owned() }),
        )
        .layer(
            ApiKeyLayer::builder(store)
                .realm("OrderMonk API")
                .clock(clock.clone())
                .build(),
        )
}

async fn call(app: &Router, key: &CreatedKey) -> Response<Body> {
    call_with(app, key.key.expose_secret()).await
}

async fn call_with(app: &Router, key: &str) -> Response<Body> {
    let request = Request::get("/v1/me")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap()
}

async fn status(app: &Router, key: &CreatedKey) -> StatusCode {
    call(app, key).await.status()
}

/// The name the handler saw, after checking the request was let through.
async fn name_seen(app: &Router, key: &CreatedKey) -> String {
    let response = call(app, key).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn assert_unknown<T: std::fmt::Debug>(result: Result<T, StoreError>, id: &KeyId) {
    match result {
        Err(StoreError::UnknownKey(unknown)) => assert_eq!(&unknown, id),
        other => panic!("expected UnknownKey({id}), got {other:?}"),
    }
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(err @ StoreError::Unavailable(_)) => err.to_string(),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// `a` and `b` are less than a microsecond apart: the SQL stores keep microseconds.
fn assert_close(a: SystemTime, b: SystemTime) {
    let gap = a.duration_since(b).unwrap_or_else(|e| e.duration());
    assert!(gap < Duration::from_micros(1), "{a:?} vs {b:?}");
}

fn unknown_id() -> KeyId {
    KeyId::from("key_doesnotexist000")
}

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

mod rules {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    pub(crate) async fn create_hands_out_the_plaintext_once_and_keeps_the_rest<B: Backend>() {
        let t = Test::<B>::new().await;
        let expires_at = t0() + Duration::from_secs(30 * 24 * 3600);
        let created = t
            .create(
                NewKey::new("  Production  ", Environment::Live)
                    .owner("acct_1")
                    .scopes([PRODUCTS_WRITE, PRODUCTS_READ, PRODUCTS_READ])
                    .expires_at(expires_at)
                    .metadata("team", "integrations")
                    .metadata("ticket", "OPS-1 \"quoted\" ✓"),
            )
            .await;
        let text = created.key.expose_secret();
        let parsed = om().parse(text).unwrap();
        assert_eq!(parsed.environment(), Environment::Live);
        assert_eq!(parsed.digest(), created.key.digest());

        let record = &created.stored.record;
        assert!(record.id.as_str().starts_with("key_"), "{:?}", record.id);
        assert_eq!(record.name, "Production", "the name is trimmed");
        assert_eq!(record.owner, "acct_1");
        assert_eq!(record.environment, Environment::Live);
        let scopes: Vec<&str> = record.scopes.iter().map(Scope::as_str).collect();
        assert_eq!(scopes, ["products:read", "products:write"]);
        assert!(record.revoked_at.is_none());
        assert!(created.stored.last_used_at.is_none());
        assert_eq!(created.stored.metadata["team"], "integrations");
        assert_eq!(created.stored.metadata["ticket"], "OPS-1 \"quoted\" ✓");
        assert_close(created.stored.created_at, t0());
        assert_close(record.expires_at.unwrap(), expires_at);

        // What the store hands back is what it reads back, to the nanosecond.
        assert_eq!(t.store.get(created.id()).await.unwrap(), created.stored);
        assert_eq!(
            t.store.list(None).await.unwrap(),
            vec![created.stored.clone()]
        );
        let resolved = t.store.resolve(&created.key.digest()).await.unwrap();
        assert_eq!(resolved.as_ref(), Some(record));
        assert_eq!(name_seen(&t.app, &created).await, "Production");
    }

    pub(crate) async fn create_refuses_bad_names_and_writes_nothing<B: Backend>() {
        let t = Test::<B>::new().await;
        let long = "x".repeat(101);
        type Check = fn(&StoreError) -> bool;
        let cases: [(&str, Check); 7] = [
            ("", |e| matches!(e, StoreError::EmptyName)),
            ("   \t ", |e| matches!(e, StoreError::EmptyName)),
            (&long, |e| matches!(e, StoreError::NameTooLong)),
            ("two\nlines", |e| {
                matches!(e, StoreError::NameHasControlCharacters)
            }),
            ("bell\u{7}", |e| {
                matches!(e, StoreError::NameHasControlCharacters)
            }),
            ("nul\0", |e| {
                matches!(e, StoreError::NameHasControlCharacters)
            }),
            ("del\u{7f}", |e| {
                matches!(e, StoreError::NameHasControlCharacters)
            }),
        ];
        for (name, expected) in cases {
            let err = t
                .store
                .create(NewKey::new(name, Environment::Live))
                .await
                .unwrap_err();
            assert!(expected(&err), "{name:?} gave {err:?}");
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(t.count().await, 0, "a refused create wrote something");

        // The limit counts characters, not bytes.
        let longest = "é".repeat(100);
        let created = t.create(NewKey::new(&longest, Environment::Live)).await;
        assert_eq!(
            t.store.get(created.id()).await.unwrap().record.name,
            longest
        );
    }

    pub(crate) async fn create_checks_scopes_against_the_catalog<B: Backend>() {
        let t = Test::<B>::with_catalog(ScopeCatalog::new([ORDERS_READ, PRODUCTS_READ])).await;
        let err = t
            .store
            .create(NewKey::new("Reports", Environment::Live).scopes([ORDERS_READ, PRODUCTS_WRITE]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidScope(_)), "{err:?}");
        assert!(err.to_string().contains("products:write"), "{err}");
        assert_eq!(t.count().await, 0, "a refused create wrote something");
        t.create(NewKey::new("Reports", Environment::Live).scopes([ORDERS_READ]))
            .await;
        assert_eq!(t.count().await, 1);

        // Without a catalogue, any well-formed scope is kept.
        let open = Test::<B>::new().await;
        let created = open
            .create(
                NewKey::new("Anything", Environment::Test).scopes([Scope::new("x.y:z-1").unwrap()]),
            )
            .await;
        assert!(open
            .store
            .get(created.id())
            .await
            .unwrap()
            .record
            .scopes
            .contains_str("x.y:z-1"));
    }

    pub(crate) async fn create_refuses_an_expiry_that_is_not_in_the_future<B: Backend>() {
        let t = Test::<B>::new().await;
        for expires_at in [t0() - HOUR, t0() - Duration::from_micros(1), t0()] {
            let err = t
                .store
                .create(NewKey::new("Old", Environment::Live).expires_at(expires_at))
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::ExpiryInPast), "{err:?}");
        }
        assert_eq!(t.count().await, 0, "a refused create wrote something");
        t.create(NewKey::new("Soon", Environment::Live).expires_at(t0() + SECOND))
            .await;
        assert_eq!(t.count().await, 1);
    }

    pub(crate) async fn get_and_every_change_refuse_an_unknown_id<B: Backend>() {
        let t = Test::<B>::new().await;
        t.create(NewKey::new("Present", Environment::Live)).await;
        let id = unknown_id();
        assert_unknown(t.store.get(&id).await, &id);
        assert_unknown(t.store.rename(&id, "New").await, &id);
        assert_unknown(t.store.set_limits(&id, KeyLimits::none()).await, &id);
        assert_unknown(t.store.revoke(&id).await, &id);
        assert_unknown(t.store.rotate(&id, HOUR).await, &id);
        assert_unknown(t.store.delete(&id).await, &id);
        assert_unknown(t.store.record_use(&id, t0()).await, &id);
        assert_eq!(t.count().await, 1);
    }

    pub(crate) async fn list_gives_one_owners_keys_newest_first<B: Backend>() {
        let t = Test::<B>::new().await;
        let a1 = t
            .create(NewKey::new("a1", Environment::Live).owner("acct_a"))
            .await;
        t.clock.advance(SECOND);
        let b1 = t
            .create(NewKey::new("b1", Environment::Test).owner("acct_b"))
            .await;
        t.clock.advance(SECOND);
        let a2 = t
            .create(NewKey::new("a2", Environment::Live).owner("acct_a"))
            .await;
        // Created in the same instant: ordered by id.
        let a3 = t
            .create(NewKey::new("a3", Environment::Test).owner("acct_a"))
            .await;

        let mut same_instant = [a2.id().clone(), a3.id().clone()];
        same_instant.sort();
        let ids = |listed: Vec<tower_api_key::StoredKey>| -> Vec<KeyId> {
            listed.into_iter().map(|stored| stored.record.id).collect()
        };
        assert_eq!(
            ids(t.store.list(Some("acct_a")).await.unwrap()),
            [
                same_instant[0].clone(),
                same_instant[1].clone(),
                a1.id().clone()
            ]
        );
        assert_eq!(
            ids(t.store.list(Some("acct_b")).await.unwrap()),
            [b1.id().clone()]
        );
        assert_eq!(
            ids(t.store.list(None).await.unwrap()),
            [
                same_instant[0].clone(),
                same_instant[1].clone(),
                b1.id().clone(),
                a1.id().clone()
            ]
        );
        assert!(t.store.list(Some("acct_nobody")).await.unwrap().is_empty());
    }

    pub(crate) async fn listings_show_a_hint_never_the_key<B: Backend>() {
        let t = Test::<B>::new().await;
        for environment in Environment::ALL {
            let created = t.create(NewKey::new("Hinted", environment)).await;
            let text = created.key.expose_secret();
            let expected = format!("om_{environment}_…{}", &text[text.len() - 4..]);
            assert_eq!(created.stored.hint, expected);
            assert_eq!(t.store.get(created.id()).await.unwrap().hint, expected);
        }
        for stored in t.store.list(None).await.unwrap() {
            assert!(stored.hint.starts_with("om_") && stored.hint.contains('…'));
        }
    }

    pub(crate) async fn the_store_never_holds_the_plaintext<B: Backend>() {
        let t = Test::<B>::new().await;
        let mut keys = Vec::new();
        for (name, environment) in [("Live", Environment::Live), ("Sandbox", Environment::Test)] {
            keys.push(
                t.create(
                    NewKey::new(name, environment)
                        .owner("acct_1")
                        .scopes([ORDERS_READ])
                        .metadata("purpose", "plaintext scan"),
                )
                .await,
            );
        }
        let rotation = t.store.rotate(keys[0].id(), HOUR).await.unwrap();
        t.store.revoke(keys[1].id()).await.unwrap();
        keys.push(rotation.new);

        let cells = t.cells().await;
        assert!(!cells.is_empty());
        for created in &keys {
            let text = created.key.expose_secret().as_bytes();
            // The random middle alone must not be there either.
            for secret in [text, &text[8..40]] {
                assert!(
                    !cells.iter().any(|cell| contains(cell, secret)),
                    "the store holds (part of) the key {}",
                    created.stored.hint
                );
            }
            if B::HAS_TABLE {
                // The scan reads the real table: the digest and the hint are there.
                let digest = created.key.digest();
                assert!(cells.iter().any(|cell| cell == digest.as_bytes()));
                assert!(cells
                    .iter()
                    .any(|cell| cell == created.stored.hint.as_bytes()));
            }
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    pub(crate) async fn rename_changes_only_the_name_and_reaches_the_layer<B: Backend>() {
        let t = Test::<B>::new().await;
        let created = t
            .create(NewKey::new("Staging", Environment::Live).scopes([ORDERS_READ]))
            .await;
        assert_eq!(name_seen(&t.app, &created).await, "Staging");

        let renamed = t
            .store
            .rename(created.id(), "  Webhook Server ")
            .await
            .unwrap();
        assert_eq!(renamed.record.name, "Webhook Server");
        let mut expected = created.stored.clone();
        expected.record.name = "Webhook Server".to_owned();
        assert_eq!(renamed, expected);
        assert_eq!(t.store.get(created.id()).await.unwrap(), expected);
        // The cached principal was dropped: the next request sees the new name.
        assert_eq!(name_seen(&t.app, &created).await, "Webhook Server");

        for bad in ["", "  ", "tab\tname"] {
            assert!(t.store.rename(created.id(), bad).await.is_err(), "{bad:?}");
        }
        let err = t
            .store
            .rename(created.id(), &"y".repeat(101))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NameTooLong), "{err:?}");
        assert_eq!(t.store.get(created.id()).await.unwrap(), expected);
    }

    pub(crate) async fn revoke_is_idempotent_and_keeps_the_first_time<B: Backend>() {
        let t = Test::<B>::new().await;
        let created = t.create(NewKey::new("Production", Environment::Live)).await;
        let other = t.create(NewKey::new("Other", Environment::Live)).await;
        t.clock.advance(MINUTE);
        let first = t.store.revoke(created.id()).await.unwrap();
        let revoked_at = first.record.revoked_at.expect("revoked");
        assert!(revoked_at >= t0() + MINUTE - Duration::from_micros(1));

        t.clock.advance(HOUR);
        let second = t.store.revoke(created.id()).await.unwrap();
        assert_eq!(second.record.revoked_at, Some(revoked_at));
        assert_eq!(second, first);
        assert_eq!(t.store.get(created.id()).await.unwrap(), first);

        // Nothing else changed, here or in the other key.
        let mut expected = created.stored.clone();
        expected.record.revoked_at = Some(revoked_at);
        assert_eq!(first, expected);
        assert_eq!(t.store.get(other.id()).await.unwrap(), other.stored);

        // The resolver reports the revoked key as it is; the layer refuses it.
        let resolved = t
            .store
            .resolve(&created.key.digest())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resolved.revoked_at, Some(revoked_at));
        assert_eq!(status(&t.app, &created).await, StatusCode::UNAUTHORIZED);
    }

    pub(crate) async fn revoke_through_the_store_is_honoured_on_the_next_request<B: Backend>() {
        let t = Test::<B>::new().await;
        let created = t.create(NewKey::new("Production", Environment::Live)).await;
        let kept = t.create(NewKey::new("Kept", Environment::Live)).await;
        // Both are cached now.
        assert_eq!(status(&t.app, &created).await, StatusCode::OK);
        assert_eq!(status(&t.app, &kept).await, StatusCode::OK);
        t.store.revoke(created.id()).await.unwrap();
        let refused = call(&t.app, &created).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="OrderMonk API", error="invalid_token""#
        );
        assert_eq!(status(&t.app, &kept).await, StatusCode::OK);
    }

    pub(crate) async fn rotate_copies_the_key_and_never_widens_it<B: Backend>() {
        let t = Test::<B>::new().await;
        let expires_at = t0() + Duration::from_secs(7 * 24 * 3600);
        let old = t
            .create(
                NewKey::new("Webhook Server", Environment::Test)
                    .owner("acct_9")
                    .scopes([ORDERS_READ, PRODUCTS_READ])
                    .expires_at(expires_at)
                    .metadata("team", "integrations")
                    .limits(limits()),
            )
            .await;
        let untouched = t.create(NewKey::new("Untouched", Environment::Live)).await;
        t.clock.advance(MINUTE);
        let rotation = t.store.rotate(old.id(), HOUR).await.unwrap();
        let new = &rotation.new.stored;
        let old_record = &old.stored.record;

        assert_ne!(new.record.id, old_record.id);
        assert_ne!(rotation.new.key.expose_secret(), old.key.expose_secret());
        assert_ne!(rotation.new.key.digest(), old.key.digest());
        assert_eq!(new.record.name, old_record.name);
        assert_eq!(new.record.owner, old_record.owner);
        assert_eq!(new.record.environment, old_record.environment);
        assert_eq!(new.record.scopes, old_record.scopes);
        assert_eq!(new.metadata, old.stored.metadata);
        assert_eq!(new.record.limits, limits(), "the limits are copied");
        assert!(new.record.revoked_at.is_none());
        assert!(new.created_at > old.stored.created_at);
        assert_eq!(
            new.record.expires_at, old_record.expires_at,
            "the new key expires when the old one would have"
        );
        assert!(rotation.new.key.expose_secret().starts_with("om_test_"));

        // The old key now ends with the grace period.
        let old_expiry = rotation.old.record.expires_at.unwrap();
        let grace_end = t0() + MINUTE + HOUR;
        assert_close(old_expiry, grace_end);
        let mut expected_old = old.stored.clone();
        expected_old.record.expires_at = Some(old_expiry);
        expected_old.replaced_by = Some(rotation.new.id().clone());
        assert_eq!(rotation.old, expected_old);

        // Both read back as handed out.
        assert_eq!(t.store.get(old.id()).await.unwrap(), rotation.old);
        assert_eq!(t.store.get(rotation.new.id()).await.unwrap(), *new);
        assert_eq!(t.store.get(untouched.id()).await.unwrap(), untouched.stored);
        assert_eq!(t.store.list(Some("acct_9")).await.unwrap().len(), 2);
        let resolved = t.store.resolve(&rotation.new.key.digest()).await.unwrap();
        assert_eq!(resolved.as_ref(), Some(&new.record));

        // A key without expiry gives a key without expiry.
        let forever = t.create(NewKey::new("Forever", Environment::Live)).await;
        let rotation = t.store.rotate(forever.id(), HOUR).await.unwrap();
        assert_eq!(rotation.new.stored.record.expires_at, None);
        assert!(rotation.old.record.expires_at.is_some());
    }

    pub(crate) async fn the_old_key_works_through_the_grace_period_then_dies<B: Backend>() {
        let t = Test::<B>::new().await;
        let old = t
            .create(NewKey::new("Production", Environment::Live).scopes([ORDERS_READ]))
            .await;
        assert_eq!(status(&t.app, &old).await, StatusCode::OK);

        let rotation = t.store.rotate(old.id(), HOUR).await.unwrap();
        let new = &rotation.new;
        assert_eq!(
            status(&t.app, &old).await,
            StatusCode::OK,
            "within the grace period"
        );
        assert_eq!(status(&t.app, new).await, StatusCode::OK);

        t.clock.advance(HOUR - SECOND);
        assert_eq!(
            status(&t.app, &old).await,
            StatusCode::OK,
            "a second before the end"
        );
        t.clock.advance(2 * SECOND);
        assert_eq!(
            status(&t.app, &old).await,
            StatusCode::UNAUTHORIZED,
            "after the grace period"
        );
        assert_eq!(status(&t.app, new).await, StatusCode::OK);

        // And for good: a year later, through a fresh lookup, too.
        t.clock.advance(Duration::from_secs(365 * 24 * 3600));
        let fresh_app = app(t.store.clone(), &t.clock);
        assert_eq!(status(&fresh_app, &old).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&fresh_app, new).await, StatusCode::OK);
    }

    pub(crate) async fn the_grace_period_never_outlives_the_old_keys_expiry<B: Backend>() {
        let t = Test::<B>::new().await;
        let expires_at = t0() + 30 * MINUTE;
        let old = t
            .create(NewKey::new("Short-lived", Environment::Live).expires_at(expires_at))
            .await;
        let rotation = t.store.rotate(old.id(), 24 * HOUR).await.unwrap();
        assert_eq!(rotation.old.record.expires_at, old.stored.record.expires_at);
        assert_eq!(
            rotation.new.stored.record.expires_at,
            old.stored.record.expires_at
        );
        assert_eq!(
            t.store.get(old.id()).await.unwrap().record.expires_at,
            old.stored.record.expires_at
        );

        assert_eq!(status(&t.app, &old).await, StatusCode::OK);
        t.clock.advance(31 * MINUTE);
        assert_eq!(status(&t.app, &old).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&t.app, &rotation.new).await,
            StatusCode::UNAUTHORIZED,
            "rotation does not extend expiry"
        );

        // A zero grace period ends the old key at once.
        let t = Test::<B>::new().await;
        let old = t.create(NewKey::new("Now", Environment::Live)).await;
        let rotation = t.store.rotate(old.id(), Duration::ZERO).await.unwrap();
        assert_eq!(status(&t.app, &old).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&t.app, &rotation.new).await, StatusCode::OK);
    }

    pub(crate) async fn a_key_in_its_grace_period_cannot_be_rotated_again<B: Backend>() {
        let t = Test::<B>::new().await;
        let old = t
            .create(NewKey::new("Production", Environment::Live).scopes([ORDERS_READ]))
            .await;
        let rotation = t.store.rotate(old.id(), HOUR).await.unwrap();
        let replacement = rotation.new.id().clone();
        assert_eq!(
            t.store.get(old.id()).await.unwrap().replaced_by.as_ref(),
            Some(&replacement)
        );
        assert_eq!(t.store.get(&replacement).await.unwrap().replaced_by, None);

        // A second "Rotate" on the old key would give a key that dies with the old one.
        t.clock.advance(MINUTE);
        let before = t.store.list(None).await.unwrap();
        let err = t.store.rotate(old.id(), HOUR).await.unwrap_err();
        match &err {
            StoreError::AlreadyRotated {
                id,
                replacement: named,
            } => {
                assert_eq!(id, old.id());
                assert_eq!(named, &replacement);
            }
            other => panic!("expected AlreadyRotated, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(replacement.as_str()), "{message}");
        assert!(message.contains(old.id().as_str()), "{message}");
        assert_eq!(t.store.list(None).await.unwrap(), before, "nothing changed");

        // The replacement rotates as any key does, and keeps its own expiry (none).
        let next = t.store.rotate(&replacement, HOUR).await.unwrap();
        assert_eq!(next.new.stored.record.expires_at, None);
        assert_eq!(next.old.replaced_by.as_ref(), Some(next.new.id()));
        assert_eq!(status(&t.app, &next.new).await, StatusCode::OK);
    }

    pub(crate) async fn a_revoked_or_expired_key_cannot_be_rotated<B: Backend>() {
        let t = Test::<B>::new().await;
        let revoked = t.create(NewKey::new("Revoked", Environment::Live)).await;
        let revoked = t.store.revoke(revoked.id()).await.unwrap();
        let expiring = t
            .create(NewKey::new("Expiring", Environment::Live).expires_at(t0() + MINUTE))
            .await;
        t.clock.advance(MINUTE);

        let err = t.store.rotate(&revoked.record.id, HOUR).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Revoked(id) if *id == revoked.record.id),
            "{err:?}"
        );
        let err = t.store.rotate(expiring.id(), HOUR).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Expired(id) if id == expiring.id()),
            "{err:?}"
        );

        // Nothing was written: no new key, the old ones as they were.
        assert_eq!(t.count().await, 2);
        assert_eq!(t.store.get(&revoked.record.id).await.unwrap(), revoked);
        assert_eq!(t.store.get(expiring.id()).await.unwrap(), expiring.stored);
    }

    pub(crate) async fn delete_removes_the_key_for_good<B: Backend>() {
        let t = Test::<B>::new().await;
        let deleted = t.create(NewKey::new("Deleted", Environment::Live)).await;
        let kept = t.create(NewKey::new("Kept", Environment::Live)).await;
        assert_eq!(status(&t.app, &deleted).await, StatusCode::OK);

        t.store.delete(deleted.id()).await.unwrap();
        assert_unknown(t.store.get(deleted.id()).await, deleted.id());
        assert_unknown(t.store.delete(deleted.id()).await, deleted.id());
        assert!(t
            .store
            .resolve(&deleted.key.digest())
            .await
            .unwrap()
            .is_none());
        assert_eq!(t.store.list(None).await.unwrap(), vec![kept.stored.clone()]);
        assert_eq!(
            status(&t.app, &deleted).await,
            StatusCode::UNAUTHORIZED,
            "on the next request"
        );
        assert_eq!(status(&t.app, &kept).await, StatusCode::OK);
    }

    pub(crate) async fn record_use_only_moves_forward<B: Backend>() {
        let t = Test::<B>::new().await;
        let created = t.create(NewKey::new("Used", Environment::Live)).await;
        let other = t.create(NewKey::new("Unused", Environment::Live)).await;
        let last_used = |t: &Test<B>| {
            let store = t.store.clone();
            let id = created.id().clone();
            async move { store.get(&id).await.unwrap().last_used_at }
        };
        assert_eq!(last_used(&t).await, None);
        t.store
            .record_use(created.id(), t0() + 5 * MINUTE)
            .await
            .unwrap();
        assert_close(last_used(&t).await.unwrap(), t0() + 5 * MINUTE);
        t.store
            .record_use(created.id(), t0() + 3 * MINUTE)
            .await
            .unwrap();
        assert_close(last_used(&t).await.unwrap(), t0() + 5 * MINUTE);
        t.store
            .record_use(created.id(), t0() + 7 * MINUTE)
            .await
            .unwrap();
        assert_close(last_used(&t).await.unwrap(), t0() + 7 * MINUTE);
        assert_eq!(t.store.get(other.id()).await.unwrap().last_used_at, None);
    }

    pub(crate) async fn the_resolver_reports_revoked_and_expired_keys_as_they_are<B: Backend>() {
        let t = Test::<B>::new().await;
        let revoked = t.create(NewKey::new("Revoked", Environment::Live)).await;
        t.store.revoke(revoked.id()).await.unwrap();
        let expired = t
            .create(NewKey::new("Expired", Environment::Test).expires_at(t0() + SECOND))
            .await;
        t.clock.advance(MINUTE);
        let record = t
            .store
            .resolve(&revoked.key.digest())
            .await
            .unwrap()
            .unwrap();
        assert!(record.revoked_at.is_some());
        let record = t
            .store
            .resolve(&expired.key.digest())
            .await
            .unwrap()
            .unwrap();
        assert!(record.is_expired_at(t0() + MINUTE));
        let never_stored = om().generate(Environment::Live).unwrap();
        assert!(t
            .store
            .resolve(&never_stored.digest())
            .await
            .unwrap()
            .is_none());
        assert!(KeyResolver::invalidations(&t.store).is_some());
    }

    pub(crate) async fn concurrent_creates_are_all_kept<B: Backend>() {
        let t = Test::<B>::new().await;
        let creates = (0..50).map(|i| {
            let store = t.store.clone();
            tokio::spawn(async move {
                store
                    .create(NewKey::new(format!("Key {i}"), Environment::Live).owner("acct_busy"))
                    .await
            })
        });
        let created: Vec<CreatedKey> = futures_util::future::join_all(creates)
            .await
            .into_iter()
            .map(|joined| joined.unwrap().unwrap())
            .collect();
        let ids: HashSet<KeyId> = created.iter().map(|c| c.id().clone()).collect();
        let digests: HashSet<[u8; 32]> =
            created.iter().map(|c| *c.key.digest().as_bytes()).collect();
        assert_eq!(ids.len(), 50);
        assert_eq!(digests.len(), 50);
        let listed: HashSet<KeyId> = t
            .store
            .list(Some("acct_busy"))
            .await
            .unwrap()
            .into_iter()
            .map(|stored| stored.record.id)
            .collect();
        assert_eq!(listed, ids);
        for key in created.iter().step_by(7) {
            assert_eq!(status(&t.app, key).await, StatusCode::OK);
        }
    }

    pub(crate) async fn concurrent_revokes_agree_on_the_first_time<B: Backend>() {
        let t = Test::<B>::new().await;
        let created = t.create(NewKey::new("Contested", Environment::Live)).await;
        assert_eq!(status(&t.app, &created).await, StatusCode::OK);
        // Every call now reads a different time.
        t.clock.tick_on_every_reading();
        let revokes = (0..20).map(|_| {
            let store = t.store.clone();
            let id = created.id().clone();
            tokio::spawn(async move { store.revoke(&id).await })
        });
        let results: Vec<_> = futures_util::future::join_all(revokes)
            .await
            .into_iter()
            .map(|joined| joined.unwrap().unwrap())
            .collect();
        let first = results[0].record.revoked_at.expect("revoked");
        for result in &results {
            assert_eq!(
                result.record.revoked_at,
                Some(first),
                "every revoke reports the first time"
            );
        }
        let stored = t.store.get(created.id()).await.unwrap();
        assert_eq!(stored.record.revoked_at, Some(first));
        assert_eq!(status(&t.app, &created).await, StatusCode::UNAUTHORIZED);
        // One revocation happened, so one is recorded, at its time.
        let trail = t.store.audit(&AuditQuery::all()).await.unwrap();
        let revoked: Vec<_> = trail
            .iter()
            .filter(|event| event.action == AuditAction::Revoked)
            .collect();
        assert_eq!(revoked.len(), 1, "{trail:#?}");
        assert_eq!(revoked[0].at, first);
    }

    pub(crate) async fn metadata_and_owners_round_trip<B: Backend>() {
        let t = Test::<B>::new().await;
        let mut metadata = BTreeMap::new();
        let mut new = NewKey::new("Metadata", Environment::Live).owner("org/ünïcode 42");
        for (key, value) in [
            ("a", ""),
            ("json", "{\"nested\": [1, 2]}"),
            ("emoji", "🔑"),
            ("quote", "'; DROP TABLE api_keys; --"),
        ] {
            metadata.insert(key.to_owned(), value.to_owned());
            new = new.metadata(key, value);
        }
        let created = t.create(new).await;
        let stored = t.store.get(created.id()).await.unwrap();
        assert_eq!(stored.metadata, metadata);
        assert_eq!(stored.record.owner, "org/ünïcode 42");
        assert_eq!(t.store.list(Some("org/ünïcode 42")).await.unwrap().len(), 1);
        // Nothing dropped a table.
        assert_eq!(t.count().await, 1);
    }

    // --- Usage ---------------------------------------------------------------------------------

    /// The day of [`t0`]: 2023-11-14.
    fn today() -> Day {
        Day::of(t0())
    }

    fn counts(of: &[(KeyOutcome, u64)]) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for &(outcome, count) in of {
            counts.add(outcome, count);
        }
        counts
    }

    fn increment(key: &CreatedKey, day: Day, of: &[(KeyOutcome, u64)]) -> KeyIncrement {
        KeyIncrement::new(key.id().clone(), day, counts(of))
    }

    fn batch(keys: Vec<KeyIncrement>) -> UsageBatch {
        let mut batch = UsageBatch::new();
        batch.keys = keys;
        batch
    }

    fn last_used(uses: &[(&KeyId, SystemTime)]) -> UsageBatch {
        let mut batch = UsageBatch::new();
        batch.last_used = uses.iter().map(|(id, at)| ((*id).clone(), *at)).collect();
        batch
    }

    fn anonymous(of: &[(Day, AnonymousOutcome, u64)]) -> UsageBatch {
        let mut batch = UsageBatch::new();
        batch.anonymous = of
            .iter()
            .map(|&(day, outcome, count)| AnonymousIncrement::new(day, outcome, count))
            .collect();
        batch
    }

    /// The most a store keeps for one key, day and outcome.
    const MAX_COUNT: u64 = i64::MAX.unsigned_abs();

    use KeyOutcome::{Allowed, Expired, InsufficientScope, RateLimited, Revoked};

    pub(crate) async fn usage_counts_add_up_and_every_day_is_in_the_series<B: Backend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Counted", Environment::Live)).await;
        let other = t.create(NewKey::new("Other", Environment::Live)).await;
        let d = today();
        let zero = OutcomeCounts::default();

        // Never used: every day is there, with zeros.
        assert_eq!(
            t.store.usage(key.id(), d.add_days(-1), d).await.unwrap(),
            [
                DailyUsage::new(d.add_days(-1), zero),
                DailyUsage::new(d, zero)
            ]
        );
        t.store
            .record_usage(&batch(vec![
                increment(&key, d, &[(Allowed, 3), (InsufficientScope, 1)]),
                increment(&other, d, &[(Allowed, 1)]),
                // The same key and day twice in one batch add up too.
                increment(&key, d, &[(Allowed, 2)]),
            ]))
            .await
            .unwrap();
        t.store
            .record_usage(&batch(vec![
                increment(&key, d, &[(Allowed, 4)]),
                increment(
                    &key,
                    d.add_days(-2),
                    &[(Revoked, 1), (Expired, 2), (RateLimited, 5)],
                ),
            ]))
            .await
            .unwrap();
        t.store.record_usage(&UsageBatch::new()).await.unwrap();

        assert_eq!(
            t.store
                .usage(key.id(), d.add_days(-3), d.add_days(1))
                .await
                .unwrap(),
            [
                DailyUsage::new(d.add_days(-3), zero),
                DailyUsage::new(
                    d.add_days(-2),
                    counts(&[(Revoked, 1), (Expired, 2), (RateLimited, 5)])
                ),
                DailyUsage::new(d.add_days(-1), zero),
                DailyUsage::new(d, counts(&[(Allowed, 9), (InsufficientScope, 1)])),
                DailyUsage::new(d.add_days(1), zero),
            ]
        );
        assert_eq!(
            t.store.usage(other.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 1)]))]
        );
        // A range that ends before it starts has no days; an unknown key is unknown.
        assert_eq!(
            t.store.usage(key.id(), d, d.add_days(-1)).await.unwrap(),
            []
        );
        assert_unknown(t.store.usage(&unknown_id(), d, d).await, &unknown_id());
        assert_unknown(
            t.store.usage(&unknown_id(), d, d.add_days(-1)).await,
            &unknown_id(),
        );
        // The longest series there is, and one day more.
        let longest = i32::try_from(MAX_SERIES_DAYS).unwrap();
        let series = t
            .store
            .usage(key.id(), d.add_days(1 - longest), d)
            .await
            .unwrap();
        assert_eq!(series.len(), usize::try_from(MAX_SERIES_DAYS).unwrap());
        assert_eq!(series.last().unwrap().counts.total(), 10);
        let too_long = t.store.usage(key.id(), d.add_days(-longest), d).await;
        assert!(
            matches!(too_long, Err(StoreError::SeriesTooLong)),
            "{too_long:?}"
        );
    }

    /// Two instances of a service flush into one database at once, naming the same keys in
    /// different orders: every count is kept, none twice.
    pub(crate) async fn flushes_from_two_instances_at_once_add_up_exactly<B: Backend>() {
        let t = Test::<B>::new().await;
        let a = t.create(NewKey::new("A", Environment::Live)).await;
        let b = t.create(NewKey::new("B", Environment::Live)).await;
        let other = t.backend.another_instance(&t.store).await;
        let d = today();
        let flushes = (0..100u32).map(|i| {
            let store = if i % 2 == 0 {
                t.store.clone()
            } else {
                other.clone()
            };
            let mut flush = batch(vec![
                increment(&a, d, &[(Allowed, 1)]),
                increment(&b, d, &[(Allowed, 2)]),
                increment(&a, d.add_days(-1), &[(Revoked, 1)]),
            ]);
            flush.anonymous = vec![
                AnonymousIncrement::new(d, AnonymousOutcome::Missing, 3),
                AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 1),
            ];
            flush.last_used = vec![
                (a.id().clone(), t0() + u32::min(i, 98) * SECOND),
                (b.id().clone(), t0()),
            ];
            if i % 4 >= 2 {
                flush.keys.reverse();
                flush.anonymous.reverse();
                flush.last_used.reverse();
            }
            tokio::spawn(async move { store.record_usage(&flush).await })
        });
        for flushed in futures_util::future::join_all(flushes).await {
            flushed.unwrap().unwrap();
        }
        assert_eq!(
            t.store.usage(a.id(), d.add_days(-1), d).await.unwrap(),
            [
                DailyUsage::new(d.add_days(-1), counts(&[(Revoked, 100)])),
                DailyUsage::new(d, counts(&[(Allowed, 100)])),
            ]
        );
        assert_eq!(
            other.usage(b.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 200)]))]
        );
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap(),
            [
                AnonymousIncrement::new(d, AnonymousOutcome::Missing, 300),
                AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 100),
            ]
        );
        let a_last_used = t.store.get(a.id()).await.unwrap().last_used_at.unwrap();
        assert_close(a_last_used, t0() + 98 * SECOND);
    }

    pub(crate) async fn counts_of_deleted_and_unknown_keys_are_dropped<B: Backend>() {
        let t = Test::<B>::new().await;
        let kept = t.create(NewKey::new("Kept", Environment::Live)).await;
        let deleted = t.create(NewKey::new("Deleted", Environment::Live)).await;
        let d = today();
        t.store
            .record_usage(&batch(vec![
                increment(&kept, d, &[(Allowed, 1)]),
                increment(&deleted, d, &[(Allowed, 1)]),
            ]))
            .await
            .unwrap();
        t.store.delete(deleted.id()).await.unwrap();

        // Counted before the deletion, flushed after it; and keys no store has.
        let mut late = batch(vec![
            increment(&deleted, d, &[(Allowed, 2)]),
            increment(&kept, d, &[(Allowed, 2)]),
            KeyIncrement::new(unknown_id(), d, counts(&[(Allowed, 7)])),
            KeyIncrement::new(KeyId::from("key_\0nul"), d, counts(&[(Allowed, 7)])),
        ]);
        late.last_used = vec![
            (deleted.id().clone(), t0()),
            (unknown_id(), t0()),
            (KeyId::from("key_'; DROP TABLE api_keys; --"), t0()),
            (kept.id().clone(), t0()),
        ];
        t.store.record_usage(&late).await.unwrap();

        assert_eq!(
            t.store.usage(kept.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 3)]))]
        );
        assert_close(
            t.store.get(kept.id()).await.unwrap().last_used_at.unwrap(),
            t0(),
        );
        assert_unknown(t.store.usage(deleted.id(), d, d).await, deleted.id());
        assert_unknown(t.store.usage(&unknown_id(), d, d).await, &unknown_id());
        let summary = t.store.usage_summary(None, d, d).await.unwrap();
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].id, *kept.id());
        // The deleted key's counts went with it: pruning every day finds only the kept key's.
        assert_eq!(t.store.prune_usage(d.add_days(1)).await.unwrap(), 1);
    }

    pub(crate) async fn record_usage_moves_last_used_only_forward<B: Backend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Used", Environment::Live)).await;
        let other = t.create(NewKey::new("Unused", Environment::Live)).await;
        let id = key.id();
        let stored_last_use = || async { t.store.get(id).await.unwrap().last_used_at };

        t.store
            .record_usage(&last_used(&[(id, t0() + 5 * MINUTE)]))
            .await
            .unwrap();
        assert_close(stored_last_use().await.unwrap(), t0() + 5 * MINUTE);
        t.store
            .record_usage(&last_used(&[(id, t0() + 3 * MINUTE)]))
            .await
            .unwrap();
        assert_close(stored_last_use().await.unwrap(), t0() + 5 * MINUTE);
        // In one batch, the latest use counts, wherever it is.
        t.store
            .record_usage(&last_used(&[
                (id, t0() + 9 * MINUTE),
                (id, t0() + 7 * MINUTE),
            ]))
            .await
            .unwrap();
        assert_close(stored_last_use().await.unwrap(), t0() + 9 * MINUTE);
        // `record_use` and `record_usage` agree.
        t.store.record_use(id, t0() + 8 * MINUTE).await.unwrap();
        assert_close(stored_last_use().await.unwrap(), t0() + 9 * MINUTE);

        let listed = t.store.list(None).await.unwrap();
        let listed_key = listed.iter().find(|k| k.record.id == *id).unwrap();
        assert_close(listed_key.last_used_at.unwrap(), t0() + 9 * MINUTE);
        assert_eq!(t.store.get(other.id()).await.unwrap().last_used_at, None);
        // A last use is not a change a cache must hear of: the key keeps working as it was.
        assert_eq!(name_seen(&t.app, &key).await, "Used");
    }

    pub(crate) async fn usage_summary_lists_an_owners_keys_with_totals_and_last_use<B: Backend>() {
        let t = Test::<B>::new().await;
        let owned = |name: &str| NewKey::new(name, Environment::Live).owner("acct_1");
        let busy = t.create(owned("Busy")).await;
        t.clock.advance(SECOND);
        let idle = t.create(owned("Idle")).await;
        t.clock.advance(SECOND);
        let stale = t.create(owned("Stale")).await;
        t.clock.advance(SECOND);
        let elsewhere = t
            .create(NewKey::new("Elsewhere", Environment::Live).owner("acct_2"))
            .await;
        let d = today();
        let day = Duration::from_secs(86_400);
        let mut flush = batch(vec![
            increment(&busy, d, &[(Allowed, 10)]),
            increment(
                &busy,
                d.add_days(-1),
                &[(Allowed, 5), (InsufficientScope, 2)],
            ),
            increment(&busy, d.add_days(-40), &[(Allowed, 1)]),
            increment(&stale, d.add_days(-40), &[(Allowed, 3)]),
            increment(&elsewhere, d, &[(Allowed, 1)]),
        ]);
        flush.last_used = vec![
            (busy.id().clone(), t0()),
            (stale.id().clone(), t0() - 40 * day),
            (elsewhere.id().clone(), t0()),
        ];
        t.store.record_usage(&flush).await.unwrap();
        t.store.revoke(stale.id()).await.unwrap();

        let summary = t
            .store
            .usage_summary(Some("acct_1"), d.add_days(-29), d)
            .await
            .unwrap();
        let listed = t.store.list(Some("acct_1")).await.unwrap();
        let ids = |ids: Vec<&KeyId>| ids.into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            ids(summary.iter().map(|s| &s.id).collect()),
            ids(listed.iter().map(|k| &k.record.id).collect()),
            "ordered as list orders them"
        );
        assert_eq!(
            ids(summary.iter().map(|s| &s.id).collect()),
            [stale.id(), idle.id(), busy.id()].map(Clone::clone)
        );
        for (summary, stored) in summary.iter().zip(&listed) {
            assert_eq!(summary.name, stored.record.name);
            assert_eq!(summary.created_at, stored.created_at);
            assert_eq!(summary.last_used_at, stored.last_used_at);
            assert_eq!(summary.revoked_at, stored.record.revoked_at);
        }
        let [stale_summary, idle_summary, busy_summary] = &summary[..] else {
            panic!("{summary:?}");
        };
        assert_eq!(
            busy_summary.totals,
            counts(&[(Allowed, 15), (InsufficientScope, 2)])
        );
        assert!(!busy_summary.never_used());
        assert!(!busy_summary.unused_since(t0() - 30 * day));
        assert_eq!(idle_summary.totals, OutcomeCounts::default());
        assert!(idle_summary.never_used());
        assert!(idle_summary.unused_since(t0() - 30 * day));
        assert_eq!(stale_summary.totals, OutcomeCounts::default());
        assert!(!stale_summary.never_used());
        assert!(stale_summary.unused_since(t0() - 30 * day));
        assert!(stale_summary.revoked_at.is_some());

        // Over 41 days, the old requests are in.
        let longer = t
            .store
            .usage_summary(Some("acct_1"), d.add_days(-40), d)
            .await
            .unwrap();
        let totals: Vec<u64> = longer.iter().map(|s| s.totals.total()).collect();
        assert_eq!(totals, [3, 0, 18]);
        // Everyone's keys, as list gives them; an owner with no keys; no days at all.
        let everyone = t.store.usage_summary(None, d, d).await.unwrap();
        let all_listed = t.store.list(None).await.unwrap();
        assert_eq!(
            ids(everyone.iter().map(|s| &s.id).collect()),
            ids(all_listed.iter().map(|k| &k.record.id).collect())
        );
        assert_eq!(everyone[0].id, *elsewhere.id());
        assert_eq!(everyone[0].totals, counts(&[(Allowed, 1)]));
        assert!(t
            .store
            .usage_summary(Some("acct_nobody"), d, d)
            .await
            .unwrap()
            .is_empty());
        let no_days = t
            .store
            .usage_summary(Some("acct_1"), d, d.add_days(-1))
            .await
            .unwrap();
        assert_eq!(no_days.len(), 3);
        assert!(no_days.iter().all(|s| s.totals.is_empty()));
    }

    pub(crate) async fn anonymous_counts_are_kept_per_day_and_outcome<B: Backend>() {
        let t = Test::<B>::new().await;
        let d = today();
        t.store
            .record_usage(&anonymous(&[
                (d, AnonymousOutcome::Unknown, 2),
                (d, AnonymousOutcome::Missing, 1),
                (d.add_days(-1), AnonymousOutcome::Malformed, 4),
                (d, AnonymousOutcome::Unknown, 3),
                (d.add_days(-5), AnonymousOutcome::Missing, 0),
            ]))
            .await
            .unwrap();
        t.store
            .record_usage(&anonymous(&[(d, AnonymousOutcome::Missing, 1)]))
            .await
            .unwrap();
        assert_eq!(
            t.store
                .anonymous_usage(d.add_days(-10), d.add_days(10))
                .await
                .unwrap(),
            [
                AnonymousIncrement::new(d.add_days(-1), AnonymousOutcome::Malformed, 4),
                AnonymousIncrement::new(d, AnonymousOutcome::Missing, 2),
                AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 5),
            ]
        );
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap().len(),
            2,
            "only the days asked for"
        );
        assert_eq!(
            t.store.anonymous_usage(d, d.add_days(-1)).await.unwrap(),
            []
        );
        assert_eq!(
            t.store
                .anonymous_usage(d.add_days(-10), d.add_days(-2))
                .await
                .unwrap(),
            []
        );
        // Never per key: no key has any of it.
        let key = t.create(NewKey::new("Innocent", Environment::Live)).await;
        assert_eq!(
            t.store.usage(key.id(), d, d).await.unwrap()[0]
                .counts
                .total(),
            0
        );
    }

    pub(crate) async fn pruning_removes_only_the_days_before<B: Backend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Pruned", Environment::Live)).await;
        let d = today();
        let mut flush = batch(vec![
            increment(&key, d.add_days(-2), &[(Allowed, 1)]),
            increment(&key, d.add_days(-1), &[(Allowed, 1), (Revoked, 1)]),
            increment(&key, d, &[(Allowed, 1)]),
        ]);
        flush.anonymous = vec![
            AnonymousIncrement::new(d.add_days(-1), AnonymousOutcome::Unknown, 1),
            AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 1),
        ];
        flush.last_used = vec![(key.id().clone(), t0())];
        t.store.record_usage(&flush).await.unwrap();

        assert_eq!(t.store.prune_usage(d.add_days(-1)).await.unwrap(), 1);
        assert_eq!(t.store.prune_usage(d).await.unwrap(), 3);
        assert_eq!(t.store.prune_usage(d).await.unwrap(), 0);
        let zero = OutcomeCounts::default();
        assert_eq!(
            t.store.usage(key.id(), d.add_days(-2), d).await.unwrap(),
            [
                DailyUsage::new(d.add_days(-2), zero),
                DailyUsage::new(d.add_days(-1), zero),
                DailyUsage::new(d, counts(&[(Allowed, 1)])),
            ]
        );
        assert_eq!(
            t.store.anonymous_usage(d.add_days(-2), d).await.unwrap(),
            [AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 1)]
        );
        // The last use stays.
        assert!(t.store.get(key.id()).await.unwrap().last_used_at.is_some());
        assert_eq!(name_seen(&t.app, &key).await, "Pruned");
    }

    /// A flush whose acknowledgement was lost is written again as it was: the store applies it
    /// once. Batches without an id, and other ids, are applied every time.
    pub(crate) async fn a_batch_with_an_id_is_applied_once<B: Backend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Retried", Environment::Live)).await;
        let d = today();
        let allowed = |n| DailyUsage::new(d, counts(&[(Allowed, n)]));
        let mut flush = batch(vec![increment(&key, d, &[(Allowed, 2)])]);
        flush.anonymous = vec![AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 1)];
        flush.last_used = vec![(key.id().clone(), t0() + MINUTE)];
        let flush = flush.with_id(BatchId::random());

        t.store.record_usage(&flush).await.unwrap();
        t.store.record_usage(&flush).await.unwrap();
        assert_eq!(t.store.usage(key.id(), d, d).await.unwrap(), [allowed(2)]);
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap(),
            [AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 1)]
        );

        // Without an id: every time.
        let plain = batch(vec![increment(&key, d, &[(Allowed, 1)])]);
        t.store.record_usage(&plain).await.unwrap();
        t.store.record_usage(&plain).await.unwrap();
        assert_eq!(t.store.usage(key.id(), d, d).await.unwrap(), [allowed(4)]);

        // The same counts under another id are another flush.
        let again = flush.clone().with_id(BatchId::random());
        t.store.record_usage(&again).await.unwrap();
        assert_eq!(t.store.usage(key.id(), d, d).await.unwrap(), [allowed(6)]);

        // Still known days later, pruning or not.
        t.clock.advance(6 * 24 * HOUR);
        t.store.prune_usage(d.add_days(-30)).await.unwrap();
        t.store.record_usage(&flush).await.unwrap();
        t.store.record_usage(&again).await.unwrap();
        assert_eq!(t.store.usage(key.id(), d, d).await.unwrap(), [allowed(6)]);
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap(),
            [AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 2)]
        );
    }

    pub(crate) async fn counts_saturate_and_no_batch_makes_a_store_fail_or_panic<B: Backend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Flooded", Environment::Live)).await;
        let d = today();
        let everything = KeyOutcome::ALL.map(|outcome| (outcome, u64::MAX));
        let mut flood = batch(vec![
            increment(&key, d, &everything),
            increment(&key, d, &everything),
            increment(&key, d.add_days(-1), &everything),
        ]);
        flood.anonymous = vec![
            AnonymousIncrement::new(d, AnonymousOutcome::Unknown, u64::MAX),
            AnonymousIncrement::new(d, AnonymousOutcome::Unknown, u64::MAX),
        ];
        t.store.record_usage(&flood).await.unwrap();
        // Again, on top of counts already at the most a store keeps.
        t.store.record_usage(&flood).await.unwrap();
        let at_most = counts(&KeyOutcome::ALL.map(|outcome| (outcome, MAX_COUNT)));
        assert_eq!(
            t.store.usage(key.id(), d.add_days(-1), d).await.unwrap(),
            [
                DailyUsage::new(d.add_days(-1), at_most),
                DailyUsage::new(d, at_most)
            ]
        );
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap(),
            [AnonymousIncrement::new(
                d,
                AnonymousOutcome::Unknown,
                MAX_COUNT
            )]
        );
        // Totals are exact past i64::MAX, then saturate.
        let two_days = t
            .store
            .usage_summary(None, d.add_days(-1), d)
            .await
            .unwrap();
        assert_eq!(two_days[0].totals.get(Allowed), 2 * MAX_COUNT);
        assert_eq!(two_days[0].totals.total(), u64::MAX);
        t.store
            .record_usage(&batch(vec![increment(&key, d.add_days(-2), &everything)]))
            .await
            .unwrap();
        let three_days = t
            .store
            .usage_summary(None, d.add_days(-2), d)
            .await
            .unwrap();
        assert_eq!(three_days[0].totals.get(Revoked), u64::MAX);

        // Days and times far beyond any calendar the service runs on.
        let far = t.create(NewKey::new("Far", Environment::Live)).await;
        let (first, last) = (
            Day::from_days_since_epoch(i32::MIN),
            Day::from_days_since_epoch(i32::MAX),
        );
        let mut extreme = batch(vec![
            increment(&far, first, &[(Allowed, 1)]),
            increment(&far, last, &[(Allowed, 1)]),
            increment(&far, last.add_days(-1), &[(Allowed, 1)]),
        ]);
        extreme.anonymous = vec![
            AnonymousIncrement::new(first, AnonymousOutcome::Missing, 1),
            AnonymousIncrement::new(last, AnonymousOutcome::Missing, 1),
        ];
        extreme.last_used = vec![
            (far.id().clone(), SystemTime::UNIX_EPOCH),
            (
                key.id().clone(),
                SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000),
            ),
        ];
        t.store.record_usage(&extreme).await.unwrap();
        let everything_ever = t.store.usage_summary(None, first, last).await.unwrap();
        let far_summary = everything_ever.iter().find(|s| s.id == *far.id()).unwrap();
        assert_eq!(far_summary.totals.get(Allowed), 3);
        assert!(far_summary.last_used_at.is_some());
        assert_eq!(t.store.anonymous_usage(first, last).await.unwrap().len(), 3);
        assert!(t
            .store
            .usage(far.id(), last.add_days(-1), last)
            .await
            .is_ok());
        assert!(matches!(
            t.store.usage(far.id(), first, last).await,
            Err(StoreError::SeriesTooLong)
        ));
        assert!(t.store.get(key.id()).await.unwrap().last_used_at.is_some());
        assert_eq!(t.store.prune_usage(first).await.unwrap(), 0);
        assert!(t.store.prune_usage(last).await.unwrap() > 0);
        assert_eq!(name_seen(&t.app, &key).await, "Flooded");
    }

    // --- SQL stores only -----------------------------------------------------------------------
    // -----------------------------------------------------------------------------------------
    // The audit trail
    // -----------------------------------------------------------------------------------------

    // -----------------------------------------------------------------------------------------
    // Limits
    // -----------------------------------------------------------------------------------------

    fn rate(text: &str) -> RateLimit {
        text.parse().unwrap()
    }

    fn networks(text: &str) -> AllowedNetworks {
        text.parse().unwrap()
    }

    /// A rate with a burst, and an allowlist of IPv4 and IPv6 ranges.
    fn limits() -> KeyLimits {
        KeyLimits::none()
            .with_rate(rate("100/s burst 20"))
            .with_networks(networks("203.0.113.0/24 2001:db8::/32"))
    }

    /// A resolver in front of a store that remembers the last record it gave the layer: what the
    /// layer checks a request against.
    #[derive(Clone)]
    struct Seen<S> {
        store: S,
        last: Arc<std::sync::Mutex<Option<KeyRecord>>>,
    }

    #[async_trait]
    impl<S: KeyStore> KeyResolver for Seen<S> {
        async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
            let found = self.store.resolve(digest).await?;
            *self.last.lock().unwrap() = found.clone();
            Ok(found)
        }

        fn invalidations(&self) -> Option<Invalidations> {
            self.store.invalidations()
        }
    }

    impl<S: KeyStore + Clone> Seen<S> {
        fn new(store: &S) -> Self {
            Seen {
                store: store.clone(),
                last: Arc::default(),
            }
        }

        /// The limits the layer read from the store for `key`'s next request; `None` if it
        /// asked nothing (it held the key in its cache).
        async fn read_for_a_request(&self, app: &Router, key: &CreatedKey) -> Option<KeyLimits> {
            *self.last.lock().unwrap() = None;
            assert_eq!(status(app, key).await, StatusCode::OK);
            let last = self.last.lock().unwrap().take();
            last.map(|record| record.limits)
        }

        /// `GET /v1/me` behind a layer on this resolver.
        fn app(&self, clock: &TestClock) -> Router {
            Router::new()
                .route("/v1/me", get(|_: Principal| async { "ok" }))
                .layer(
                    ApiKeyLayer::resolver_builder(om(), self.clone())
                        .clock(clock.clone())
                        .build(),
                )
                // Every request comes from an address the allowlists set here name, so that the
                // layer, which enforces them, lets it through.
                .layer(axum::middleware::map_request(
                    |mut request: axum::extract::Request| async move {
                        request
                            .extensions_mut()
                            .insert(tower_api_key::PeerAddress("203.0.113.7".parse().unwrap()));
                        request
                    },
                ))
        }
    }

    /// A key's limits are kept with it: handed back by `create`, read back by `get`, `list` and
    /// the resolver exactly as given; a key made without limits has none.
    pub(crate) async fn limits_round_trip_through_create_get_list_and_resolve<B: Backend>() {
        let t = Test::<B>::new().await;
        let limited = t
            .create(
                NewKey::new("Limited", Environment::Live)
                    .rate_limit(rate("10/30s burst 2"))
                    .allowed_networks(networks("198.51.100.7 2001:db8::/32 10.1.2.3/8")),
            )
            .await;
        let record = &limited.stored.record;
        assert_eq!(record.limits.rate, Some(rate("10/30s burst 2")));
        assert_eq!(
            record.limits.networks.as_ref().unwrap().to_string(),
            "10.0.0.0/8 198.51.100.7/32 2001:db8::/32"
        );
        t.clock.advance(SECOND);
        let whole = t
            .create(NewKey::new("Whole", Environment::Live).limits(limits()))
            .await;
        assert_eq!(whole.stored.record.limits, limits());
        t.clock.advance(SECOND);
        let rate_only = t
            .create(NewKey::new("Rate only", Environment::Live).rate_limit(rate("5000/h")))
            .await;
        assert_eq!(rate_only.stored.record.limits.networks, None);
        t.clock.advance(SECOND);
        let open = t.create(NewKey::new("Open", Environment::Live)).await;
        assert!(open.stored.record.limits.is_none());

        let created = [&open, &rate_only, &whole, &limited];
        for key in created {
            assert_eq!(t.store.get(key.id()).await.unwrap(), key.stored);
            let resolved = t.store.resolve(&key.key.digest()).await.unwrap();
            assert_eq!(resolved.as_ref(), Some(&key.stored.record));
        }
        let listed = t.store.list(None).await.unwrap();
        assert_eq!(listed, created.map(|key| key.stored.clone()));
    }

    /// `set_limits` replaces both limits (a `None` clears one), changes nothing else, records
    /// `limits_changed` with its actor, and reaches the layer: the next request is checked
    /// against the new limits.
    pub(crate) async fn set_limits_replaces_and_clears_is_audited_and_reaches_the_layer<
        B: Backend,
    >() {
        let t = Test::<B>::new().await;
        let seen = Seen::new(&t.store);
        let app = seen.app(&t.clock);
        let key = t
            .create(
                NewKey::new("Webhook Server", Environment::Live)
                    .owner("acct_1")
                    .scopes([ORDERS_READ])
                    .rate_limit(rate("1000/s")),
            )
            .await;
        let other = t.create(NewKey::new("Other", Environment::Live)).await;
        let before = KeyLimits::none().with_rate(rate("1000/s"));
        assert_eq!(seen.read_for_a_request(&app, &key).await, Some(before));
        // Then cached: the layer stops asking (once a SQL store's watch has read back the
        // creations, which drop the key too).
        let mut cached = false;
        for _ in 0..100 {
            if seen.read_for_a_request(&app, &key).await.is_none() {
                cached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cached, "the layer never cached the key");

        let mut expected = key.stored.clone();
        let steps = [
            (limits(), alice()),
            (
                KeyLimits::none().with_networks(networks("192.0.2.0/24 203.0.113.7")),
                bob(),
            ),
            (KeyLimits::none(), carol()),
        ];
        for (at, (limits, actor)) in steps.into_iter().enumerate() {
            t.clock.advance(SECOND);
            let changed = t
                .store
                .set_limits_by(key.id(), limits.clone(), &actor)
                .await;
            expected.record.limits = limits.clone();
            assert_eq!(changed.unwrap(), expected, "{at}");
            assert_eq!(t.store.get(key.id()).await.unwrap(), expected, "{at}");
            let read = seen.read_for_a_request(&app, &key).await;
            assert_eq!(read, Some(limits), "{at}: the layer read the key again");

            let entry = &trail(&t, AuditQuery::all().key(key.id().clone())).await[0];
            assert_eq!(entry.action, AuditAction::LimitsChanged);
            assert_eq!(entry.action.as_str(), "limits_changed");
            assert_eq!(
                (entry.actor.as_str(), entry.address),
                (actor.id(), actor.address())
            );
            assert_eq!(
                (entry.owner.as_str(), entry.key_name.as_str()),
                ("acct_1", "Webhook Server")
            );
            assert_close(entry.at, t0() + SECOND * (at as u32 + 1));
        }
        let actions: Vec<AuditAction> = trail(&t, AuditQuery::all().key(key.id().clone()))
            .await
            .iter()
            .map(|event| event.action)
            .collect();
        use AuditAction::{Created, LimitsChanged};
        assert_eq!(
            actions,
            [LimitsChanged, LimitsChanged, LimitsChanged, Created]
        );
        assert_eq!(t.store.get(other.id()).await.unwrap(), other.stored);
        assert_eq!(
            AuditAction::from_name("limits_changed"),
            Some(LimitsChanged)
        );
        assert!(AuditAction::ALL.contains(&LimitsChanged));

        // A failed change changes nothing, and records nothing.
        let trail_before = trail(&t, AuditQuery::all()).await;
        let id = unknown_id();
        assert_unknown(t.store.set_limits_by(&id, limits(), &alice()).await, &id);
        let refused = t
            .store
            .set_limits_by(key.id(), limits(), &Actor::new(" "))
            .await;
        assert!(
            matches!(refused, Err(StoreError::InvalidActor)),
            "{refused:?}"
        );
        assert_eq!(t.store.get(key.id()).await.unwrap(), expected);
        assert_eq!(trail(&t, AuditQuery::all()).await, trail_before);
    }

    fn alice() -> Actor {
        Actor::new("user:alice").from_address("203.0.113.7".parse().unwrap())
    }

    fn bob() -> Actor {
        Actor::new("bob@example.com").from_address("2001:db8::1".parse().unwrap())
    }

    fn carol() -> Actor {
        Actor::new("cli:carol")
    }

    async fn trail<B: Backend>(t: &Test<B>, query: AuditQuery) -> Vec<AuditEvent> {
        t.store.audit(&query).await.unwrap()
    }

    /// Each entry's action and key.
    fn actions(trail: &[AuditEvent]) -> Vec<(AuditAction, &str)> {
        trail
            .iter()
            .map(|event| (event.action, event.key_id.as_str()))
            .collect()
    }

    /// Every change is recorded once, newest first, with who made it, from where, the key's
    /// owner and name, and the other key of a rotation; revoking a revoked key records nothing.
    pub(crate) async fn every_change_is_in_the_audit_trail_with_its_actor<B: Backend>() {
        use AuditAction::{Created, Deleted, Renamed, Revoked, Rotated};

        let t = Test::<B>::new().await;
        let new_key = |name: &str| NewKey::new(name, Environment::Live).owner("acct_1");
        let a = t.store.create_by(new_key("Production"), &alice()).await;
        let a = a.unwrap();
        t.clock.advance(SECOND);
        t.store.rename_by(a.id(), "Prod EU", &bob()).await.unwrap();
        t.clock.advance(SECOND);
        let b = t.store.create_by(new_key("Webhook Server"), &carol()).await;
        let b = b.unwrap();
        t.clock.advance(SECOND);
        let rotation = t.store.rotate_by(b.id(), HOUR, &alice()).await.unwrap();
        let new = rotation.new.id();
        t.clock.advance(SECOND);
        t.store.revoke_by(a.id(), &bob()).await.unwrap();
        t.clock.advance(SECOND);
        // Revoked already: nothing changes, nothing is recorded.
        t.store.revoke_by(a.id(), &carol()).await.unwrap();
        t.store.delete_by(a.id(), &carol()).await.unwrap();

        let trail = trail(&t, AuditQuery::all()).await;
        let expected = [
            (Deleted, a.id(), "Prod EU", carol(), None, 5),
            (Revoked, a.id(), "Prod EU", bob(), None, 4),
            (Created, new, "Webhook Server", alice(), Some(b.id()), 3),
            (Rotated, b.id(), "Webhook Server", alice(), Some(new), 3),
            (Created, b.id(), "Webhook Server", carol(), None, 2),
            (Renamed, a.id(), "Prod EU", bob(), None, 1),
            (Created, a.id(), "Production", alice(), None, 0),
        ];
        assert_eq!(trail.len(), expected.len(), "{trail:#?}");
        for (event, (action, key, name, actor, related, seconds)) in trail.iter().zip(expected) {
            assert_eq!(event.action, action, "{event:?}");
            assert_eq!(&event.key_id, key, "{event:?}");
            assert_eq!(event.owner, "acct_1", "{event:?}");
            assert_eq!(event.key_name, name, "{event:?}");
            assert_eq!(event.actor, actor.id(), "{event:?}");
            assert_eq!(event.address, actor.address(), "{event:?}");
            assert_eq!(event.related_key.as_ref(), related, "{event:?}");
            assert_close(event.at, t0() + SECOND * seconds);
        }
        assert!(
            trail.windows(2).all(|pair| pair[0].seq > pair[1].seq),
            "{trail:#?}"
        );
    }

    /// One owner's or one key's entries (a deleted key's included), a page at a time: the
    /// pages are disjoint, newest first, and together hold every entry.
    pub(crate) async fn the_audit_trail_is_read_per_owner_and_per_key_a_page_at_a_time<
        B: Backend,
    >() {
        use AuditAction::{Created, Deleted, Renamed, Revoked};

        let t = Test::<B>::new().await;
        let mut keys = Vec::new();
        for i in 0..4 {
            let owner = if i % 2 == 0 { "acct_1" } else { "acct_2" };
            let key = t
                .create(NewKey::new(format!("Key {i}"), Environment::Live).owner(owner))
                .await;
            t.clock.advance(SECOND);
            t.store
                .rename(key.id(), &format!("Key {i}, renamed"))
                .await
                .unwrap();
            keys.push(key);
        }
        let gone = keys[0].id();
        t.store.revoke(gone).await.unwrap();
        t.store.delete(gone).await.unwrap();

        let all = trail(&t, AuditQuery::all()).await;
        assert_eq!(all.len(), 10, "{all:#?}");
        for owner in ["acct_1", "acct_2"] {
            let expected: Vec<AuditEvent> = all
                .iter()
                .filter(|event| event.owner == owner)
                .cloned()
                .collect();
            assert_eq!(trail(&t, AuditQuery::all().owner(owner)).await, expected);
        }
        assert_eq!(trail(&t, AuditQuery::all().owner("acct_1")).await.len(), 6);
        let gone_trail = trail(&t, AuditQuery::all().key(gone.clone())).await;
        assert_eq!(
            actions(&gone_trail),
            [Deleted, Revoked, Renamed, Created].map(|action| (action, gone.as_str()))
        );
        let both = AuditQuery::all().owner("acct_1").key(keys[2].id().clone());
        assert_eq!(
            actions(&trail(&t, both).await),
            [Renamed, Created].map(|action| (action, keys[2].id().as_str()))
        );
        let elsewhere = AuditQuery::all().owner("acct_2").key(keys[2].id().clone());
        assert_eq!(trail(&t, elsewhere).await, []);
        assert_eq!(trail(&t, AuditQuery::all().owner("acct_3")).await, []);
        assert_eq!(trail(&t, AuditQuery::all().key(unknown_id())).await, []);

        for (size, owner) in [(1, None), (3, None), (4, None), (10, None), (11, None)]
            .into_iter()
            .chain([(4, Some("acct_1")), (5, Some("acct_2"))])
        {
            let query = || {
                let query = AuditQuery::all().limit(size);
                match owner {
                    Some(owner) => query.owner(owner),
                    None => query,
                }
            };
            let mut read: Vec<AuditEvent> = Vec::new();
            let mut next = query();
            for _ in 0..=all.len() {
                let page = trail(&t, next.clone()).await;
                assert!(page.len() <= size as usize, "{size}: {page:#?}");
                let Some(last) = page.last() else {
                    break;
                };
                next = query().before(last.seq);
                read.extend(page);
            }
            let expected: Vec<AuditEvent> = all
                .iter()
                .filter(|event| owner.is_none_or(|owner| event.owner == owner))
                .cloned()
                .collect();
            assert_eq!(read, expected, "pages of {size} for {owner:?}");
        }
        assert_eq!(trail(&t, AuditQuery::all().limit(0)).await, all[..1]);
        assert_eq!(trail(&t, AuditQuery::all().limit(u32::MAX)).await, all);
        let oldest = all.last().unwrap().seq;
        assert_eq!(trail(&t, AuditQuery::all().before(oldest)).await, []);
        assert_eq!(trail(&t, AuditQuery::all().before(u64::MAX)).await, all);
        assert_eq!(
            trail(&t, AuditQuery::all().before(all[0].seq)).await,
            all[1..]
        );
    }

    /// An actor id that is blank, holds control characters or is over 200 characters long is
    /// refused before anything is written: no change, no entry.
    pub(crate) async fn an_invalid_actor_refuses_the_change_and_writes_nothing<B: Backend>() {
        let t = Test::<B>::new().await;
        let key = t
            .create(NewKey::new("Production", Environment::Live).owner("acct_1"))
            .await;
        let before = trail(&t, AuditQuery::all()).await;
        assert_eq!(before.len(), 1);
        let too_long = "a".repeat(MAX_ACTOR_LEN + 1);
        let ids = ["", "   ", "user\n42", "tab\there", "\u{1b}[2J", &too_long];
        fn refused<T: std::fmt::Debug>(result: Result<T, StoreError>, id: &str) {
            assert!(
                matches!(result, Err(StoreError::InvalidActor)),
                "{id:?}: {result:?}"
            );
        }
        for id in ids {
            let actor = Actor::new(id).from_address("192.0.2.1".parse().unwrap());
            let new = NewKey::new("Other", Environment::Live).owner("acct_1");
            refused(t.store.create_by(new, &actor).await, id);
            refused(t.store.rename_by(key.id(), "Renamed", &actor).await, id);
            let limits = KeyLimits::none().with_rate(rate("1/s"));
            refused(t.store.set_limits_by(key.id(), limits, &actor).await, id);
            refused(t.store.revoke_by(key.id(), &actor).await, id);
            refused(t.store.rotate_by(key.id(), HOUR, &actor).await, id);
            refused(t.store.delete_by(key.id(), &actor).await, id);
            // The actor is checked before anything else.
            refused(t.store.rename_by(&unknown_id(), "", &actor).await, id);
        }
        assert_eq!(t.store.list(None).await.unwrap(), vec![key.stored.clone()]);
        assert_eq!(trail(&t, AuditQuery::all()).await, before);
        assert_eq!(status(&t.app, &key).await, StatusCode::OK);

        // 200 characters, two bytes each, are fine.
        let longest = "é".repeat(MAX_ACTOR_LEN);
        let actor = Actor::new(longest.clone());
        t.store
            .rename_by(key.id(), "Renamed", &actor)
            .await
            .unwrap();
        assert_eq!(trail(&t, AuditQuery::all()).await[0].actor, longest);
    }

    /// The lifecycle methods without an actor record `system`, from no address.
    pub(crate) async fn the_plain_methods_record_the_system_actor<B: Backend>() {
        let t = Test::<B>::new().await;
        let a = t.create(NewKey::new("A", Environment::Live)).await;
        let b = t.create(NewKey::new("B", Environment::Live)).await;
        t.store.rename(a.id(), "A2").await.unwrap();
        t.store.set_limits(a.id(), limits()).await.unwrap();
        t.store.revoke(a.id()).await.unwrap();
        t.store.rotate(b.id(), HOUR).await.unwrap();
        t.store.delete(a.id()).await.unwrap();
        let trail = trail(&t, AuditQuery::all()).await;
        assert_eq!(trail.len(), 8, "{trail:#?}");
        for event in &trail {
            assert_eq!(event.actor, "system", "{event:?}");
            assert_eq!(event.address, None, "{event:?}");
        }
    }

    /// No entry holds a key's text or digest: neither what the store keeps, nor what `audit`
    /// returns, nor its `Debug`.
    pub(crate) async fn the_audit_trail_never_holds_the_plaintext<B: Backend>() {
        let t = Test::<B>::new().await;
        let created = t
            .create(NewKey::new("Production", Environment::Live).owner("acct_1"))
            .await;
        let rotation = t
            .store
            .rotate_by(created.id(), HOUR, &alice())
            .await
            .unwrap();
        t.store.rename(rotation.new.id(), "Renamed").await.unwrap();
        t.store.revoke_by(rotation.new.id(), &bob()).await.unwrap();
        t.store.delete(created.id()).await.unwrap();

        let trail = trail(&t, AuditQuery::all()).await;
        let rows = t.backend.audit_rows(&t.store).await;
        assert_eq!(rows.len(), 6, "{rows:#?}");
        assert!(
            rows.iter().any(|row| row.contains(created.id().as_str())),
            "{rows:#?}"
        );
        let mut texts = rows;
        texts.push(format!("{trail:?}"));
        texts.push(format!("{trail:#?}"));
        for key in [&created.key, &rotation.new.key] {
            let plaintext = key.expose_secret();
            let secret_part = &plaintext["om_live_".len()..];
            let digest = key.digest().to_hex();
            for text in &texts {
                assert!(!text.contains(plaintext), "{text}");
                assert!(!text.contains(secret_part), "{text}");
                assert!(!text.contains(&digest), "{text}");
            }
        }
    }

    pub(crate) async fn migrate_records_the_key_format_and_refuses_another<B: SqlBackend>() {
        let t = Test::<B>::new().await;
        let kept = t.create(NewKey::new("Kept", Environment::Live)).await;

        // Opened again for another product's keys: refused before any key is refused.
        let Err(err) = t.backend.reopen(KeyFormat::new("acme").unwrap()).await else {
            panic!("a store for other keys was migrated");
        };
        match &err {
            StoreError::FormatMismatch {
                recorded,
                configured,
            } => assert_eq!((recorded.as_str(), configured.as_str()), ("om", "acme")),
            other => panic!("expected FormatMismatch, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("`om`") && message.contains("`acme`"),
            "{message}"
        );

        // Opened with the same format, or with the recorded one: as before.
        assert!(t.backend.reopen(om()).await.is_ok());
        let recorded = t.backend.open_recorded().await.unwrap();
        assert_eq!(recorded.format(), &om());
        assert_eq!(recorded.get(kept.id()).await.unwrap(), kept.stored);
        assert_eq!(
            recorded.resolve(&kept.key.digest()).await.unwrap(),
            Some(kept.stored.record.clone())
        );

        // A database never migrated has no format to open with.
        let fresh = B::open_recorded_fresh().await.map(|_| ());
        assert!(
            matches!(fresh, Err(StoreError::NoRecordedFormat)),
            "{fresh:?}"
        );
        assert!(StoreError::NoRecordedFormat
            .to_string()
            .contains("no key format recorded"));
    }

    /// Rotation shortens the old key and inserts the new one in one transaction: when the insert
    /// fails, the old key keeps its expiry.
    pub(crate) async fn a_failed_rotation_changes_nothing<B: SqlBackend>() {
        let t = Test::<B>::new().await;
        let old = t
            .create(NewKey::new("Production", Environment::Live).expires_at(t0() + 24 * HOUR))
            .await;
        assert_eq!(status(&t.app, &old).await, StatusCode::OK);
        t.backend.refuse_inserts(&t.store).await;

        let message = assert_unavailable(t.store.rotate(old.id(), MINUTE).await);
        assert!(message.contains("inserts are refused"), "{message}");
        assert_unavailable(t.store.create(NewKey::new("New", Environment::Live)).await);
        assert_eq!(t.store.list(None).await.unwrap(), vec![old.stored.clone()]);
        let trail = t.store.audit(&AuditQuery::all()).await.unwrap();
        assert_eq!(
            trail.len(),
            1,
            "a failed change left an audit entry: {trail:#?}"
        );
        t.clock.advance(HOUR);
        assert_eq!(
            status(&t.app, &old).await,
            StatusCode::OK,
            "the old key was cut short"
        );
    }

    /// A flush is one transaction: when its last statement fails, the counts its first ones
    /// added are gone with it, and the same batch can be sent again.
    pub(crate) async fn a_failed_flush_writes_nothing<B: SqlBackend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Flushed", Environment::Live)).await;
        let d = today();
        let mut first = batch(vec![increment(&key, d, &[(Allowed, 1)])]);
        first.last_used = vec![(key.id().clone(), t0())];
        t.store.record_usage(&first).await.unwrap();
        t.backend.refuse_last_uses(&t.store).await;

        let mut failing = batch(vec![increment(&key, d, &[(Allowed, 5)])]);
        failing.anonymous = vec![AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 5)];
        failing.last_used = vec![(key.id().clone(), t0() + HOUR)];
        let message = assert_unavailable(t.store.record_usage(&failing).await);
        assert!(message.contains("last uses are refused"), "{message}");
        assert_eq!(
            t.store.usage(key.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 1)]))]
        );
        assert_eq!(t.store.anonymous_usage(d, d).await.unwrap(), []);
        assert_close(
            t.store.get(key.id()).await.unwrap().last_used_at.unwrap(),
            t0(),
        );
        // Without the last use, the rest goes through: nothing of the failed try is left over.
        failing.last_used.clear();
        t.store.record_usage(&failing).await.unwrap();
        assert_eq!(
            t.store.usage(key.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 6)]))]
        );
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap(),
            [AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 5)]
        );
    }

    /// A change and its audit entry are one transaction: when the entry cannot be written,
    /// the change is not made either.
    pub(crate) async fn a_change_whose_audit_entry_fails_changes_nothing<B: SqlBackend>() {
        let t = Test::<B>::new().await;
        let key = t
            .create(NewKey::new("Production", Environment::Live).expires_at(t0() + 24 * HOUR))
            .await;
        let revoked = t.create(NewKey::new("Revoked", Environment::Live)).await;
        t.store.revoke(revoked.id()).await.unwrap();
        let revoked = t.store.get(revoked.id()).await.unwrap();
        assert_eq!(status(&t.app, &key).await, StatusCode::OK);
        let before = t.store.audit(&AuditQuery::all()).await.unwrap();
        t.backend.refuse_audit_entries(&t.store).await;

        let message =
            assert_unavailable(t.store.create(NewKey::new("New", Environment::Live)).await);
        assert!(message.contains("audit entries are refused"), "{message}");
        assert_unavailable(t.store.rename(key.id(), "Renamed").await);
        assert_unavailable(t.store.revoke(key.id()).await);
        assert_unavailable(t.store.rotate(key.id(), MINUTE).await);
        assert_unavailable(t.store.delete(key.id()).await);
        // Revoking a revoked key changes nothing and records nothing: it still succeeds.
        assert_eq!(t.store.revoke(&revoked.record.id).await.unwrap(), revoked);

        assert_eq!(t.count().await, 2);
        assert_eq!(t.store.get(key.id()).await.unwrap(), key.stored);
        assert_eq!(t.store.audit(&AuditQuery::all()).await.unwrap(), before);
        t.clock.advance(HOUR);
        assert_eq!(
            status(&t.app, &key).await,
            StatusCode::OK,
            "the key was revoked, deleted or cut short"
        );
    }

    /// Audit rows no version of the crate writes give a clear error naming the entry and the
    /// column, never a panic, and spoil nothing else.
    pub(crate) async fn audit_rows_edited_by_hand_give_a_clear_error_never_a_panic<
        B: SqlBackend,
    >() {
        for (assignment, column) in [
            ("action = 'exploded'", "action"),
            ("address = 'localhost'", "address"),
            ("address = '10.0.0.300'", "address"),
        ] {
            let t = Test::<B>::new().await;
            let key = t.create(NewKey::new("Production", Environment::Live)).await;
            t.backend.edit_audit(&t.store, assignment).await;
            let message = assert_unavailable(t.store.audit(&AuditQuery::all()).await);
            assert!(message.contains("api_key_audit"), "{message}");
            assert!(message.contains("corrupted"), "{message}");
            assert!(message.contains(&format!("`{column}`")), "{message}");
            assert_eq!(t.store.get(key.id()).await.unwrap(), key.stored);
            assert_eq!(status(&t.app, &key).await, StatusCode::OK);
            // Changes are still made, and recorded.
            t.store.revoke(key.id()).await.unwrap();
            let newest = t.store.audit(&AuditQuery::all().limit(1)).await.unwrap();
            assert_eq!(newest[0].action, AuditAction::Revoked);
        }
    }

    /// Rows a newer version of the crate could write are skipped; rows no version writes give a
    /// clear error naming the table, never a panic, and spoil nothing else.
    pub(crate) async fn usage_rows_edited_by_hand_are_read_defensively<B: SqlBackend>() {
        let t = Test::<B>::new().await;
        let key = t.create(NewKey::new("Edited", Environment::Live)).await;
        let other = t.create(NewKey::new("Untouched", Environment::Live)).await;
        let d = today();
        let mut flush = batch(vec![
            increment(&key, d, &[(Allowed, 3)]),
            increment(&other, d, &[(Allowed, 1)]),
        ]);
        flush.anonymous = vec![AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 2)];
        t.store.record_usage(&flush).await.unwrap();

        t.backend.add_unknown_outcomes(&t.store, key.id(), d).await;
        assert_eq!(
            t.store.usage(key.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 3)]))]
        );
        let summary = t.store.usage_summary(None, d, d).await.unwrap();
        assert_eq!(summary.len(), 2);
        assert!(summary.iter().all(|s| s.totals.get(Allowed) > 0));
        assert_eq!(summary.iter().map(|s| s.totals.total()).sum::<u64>(), 4);
        assert_eq!(
            t.store.anonymous_usage(d, d).await.unwrap(),
            [AnonymousIncrement::new(d, AnonymousOutcome::Unknown, 2)]
        );

        t.backend.make_count_negative(&t.store, key.id(), d).await;
        for message in [
            assert_unavailable(t.store.usage(key.id(), d, d).await),
            assert_unavailable(t.store.usage_summary(None, d, d).await),
        ] {
            assert!(
                message.contains("`api_key_usage` is corrupted"),
                "{message}"
            );
        }
        assert_eq!(
            t.store.usage(other.id(), d, d).await.unwrap(),
            [DailyUsage::new(d, counts(&[(Allowed, 1)]))]
        );
        // Flushing, pruning and deleting still work.
        t.store
            .record_usage(&batch(vec![increment(&other, d, &[(Allowed, 1)])]))
            .await
            .unwrap();
        t.store.delete(key.id()).await.unwrap();
        assert_eq!(
            t.store.usage_summary(None, d, d).await.unwrap()[0]
                .totals
                .get(Allowed),
            2
        );
        assert_eq!(t.store.prune_usage(d.add_days(1)).await.unwrap(), 3);
    }

    pub(crate) async fn a_corrupted_row_gives_a_clear_error_never_a_panic<B: SqlBackend>() {
        for corruption in Corruption::ALL {
            let t = Test::<B>::new().await;
            let created = t
                .create(NewKey::new("Victim", Environment::Live).owner("acct_1"))
                .await;
            let sound = t
                .create(NewKey::new("Sound", Environment::Live).owner("acct_2"))
                .await;
            t.backend.corrupt(&t.store, created.id(), corruption).await;

            let message = assert_unavailable(t.store.get(created.id()).await);
            assert!(message.contains(created.id().as_str()), "{message}");
            assert!(message.contains(corruption.column()), "{message}");
            assert!(message.contains("corrupted"), "{message}");
            assert_unavailable(t.store.list(None).await);
            assert_unavailable(t.store.list(Some("acct_1")).await);
            // The other owner's listing and key are fine.
            assert_eq!(
                t.store.list(Some("acct_2")).await.unwrap(),
                vec![sound.stored.clone()]
            );
            assert_eq!(status(&t.app, &sound).await, StatusCode::OK);

            if !matches!(corruption, Corruption::DigestLength) {
                let err = t.store.resolve(&created.key.digest()).await.unwrap_err();
                assert!(err.to_string().contains(corruption.column()), "{err}");
                // A store failure is 503 in the layer, never 401.
                let response = call(&t.app, &created).await;
                assert_eq!(
                    response.status(),
                    StatusCode::SERVICE_UNAVAILABLE,
                    "{corruption:?}"
                );
            }
            // A corrupted key can still be revoked and deleted.
            assert!(t.store.delete(created.id()).await.is_ok(), "{corruption:?}");
            assert_eq!(t.store.list(None).await.unwrap().len(), 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------------

/// A way to take a store's database away and bring it back.
#[async_trait]
trait Outage: Send + Sync {
    async fn begin(&self);
    async fn end(&self);
}

/// During an outage every call gives `Unavailable` and the layer `503` (never `401`) for keys it
/// has not cached; afterwards everything works again, without any restart, and the calls that
/// failed changed nothing.
///
/// When the outage `cuts_the_watch` for changes made elsewhere too, the watch reports the loss
/// and the layer forgets every cached key (a revocation may have been missed), so even a key
/// cached before gets `503` while the database is down. Otherwise a key cached before the outage
/// keeps working.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn outage_then_recovery<DB: tower_api_key::SqlDatabase>(
    store: tower_api_key::SqlStore<DB>,
    clock: &TestClock,
    outage: impl Outage,
    cuts_the_watch: bool,
) {
    let app = app(store.clone(), clock);
    let watch = cuts_the_watch.then(|| store.watcher().health_changes());
    if let Some(mut watch) = watch.clone() {
        tokio::time::timeout(SECOND * 5, watch.wait_for(ChannelHealth::is_connected))
            .await
            .expect("the watch connects")
            .unwrap();
    }
    let cached = store
        .create(NewKey::new("Cached", Environment::Live))
        .await
        .unwrap();
    let fresh = store
        .create(NewKey::new("Fresh", Environment::Live))
        .await
        .unwrap();
    // The creations are announced to the watch too, and would drop the key cached next if they
    // arrived after it.
    store.propagated().await.unwrap();
    assert_eq!(status(&app, &cached).await, StatusCode::OK);

    outage.begin().await;
    let message = assert_unavailable(store.create(NewKey::new("During", Environment::Live)).await);
    assert!(
        message.starts_with("the key store is unavailable"),
        "{message}"
    );
    assert_unavailable(store.get(fresh.id()).await);
    assert_unavailable(store.list(None).await);
    assert_unavailable(store.rename(fresh.id(), "Renamed").await);
    assert_unavailable(store.revoke(fresh.id()).await);
    assert_unavailable(store.rotate(fresh.id(), HOUR).await);
    assert_unavailable(store.delete(fresh.id()).await);
    assert_unavailable(store.record_use(fresh.id(), t0()).await);
    let today = Day::of(t0());
    let mut flush = UsageBatch::new();
    flush.keys = vec![KeyIncrement::new(
        fresh.id().clone(),
        today,
        OutcomeCounts::default(),
    )];
    flush.keys[0].counts.add(KeyOutcome::Allowed, 1);
    flush.last_used = vec![(fresh.id().clone(), t0())];
    assert_unavailable(store.record_usage(&flush).await);
    assert_unavailable(store.usage(fresh.id(), today, today).await);
    assert_unavailable(store.usage_summary(None, today, today).await);
    assert_unavailable(store.anonymous_usage(today, today).await);
    assert_unavailable(store.prune_usage(today).await);
    assert_unavailable(store.audit(&AuditQuery::all()).await);
    assert!(store.resolve(&fresh.key.digest()).await.is_err());

    let response = call(&app, &fresh).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
    // Again: errors are not cached, each request asks the store.
    assert_eq!(status(&app, &fresh).await, StatusCode::SERVICE_UNAVAILABLE);
    match watch.clone() {
        Some(mut watch) => {
            tokio::time::timeout(SECOND * 5, watch.wait_for(|health| !health.is_connected()))
                .await
                .expect("the watch notices the outage")
                .unwrap();
            // Forgotten with the channel: the database must be asked, and it is down.
            assert_eq!(status(&app, &cached).await, StatusCode::SERVICE_UNAVAILABLE);
        }
        // A key cached before the outage keeps working until its entry expires.
        None => assert_eq!(status(&app, &cached).await, StatusCode::OK),
    }

    outage.end().await;
    if let Some(mut watch) = watch {
        tokio::time::timeout(SECOND * 10, watch.wait_for(ChannelHealth::is_connected))
            .await
            .expect("the watch reconnects by itself")
            .unwrap();
    }
    assert_eq!(
        status(&app, &fresh).await,
        StatusCode::OK,
        "the layer did not recover"
    );
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.len(), 2, "a failed call wrote something");
    let trail = store.audit(&AuditQuery::all()).await.unwrap();
    assert_eq!(
        trail.len(),
        2,
        "a failed call wrote an audit entry: {trail:#?}"
    );
    for stored in &listed {
        assert!(stored.record.revoked_at.is_none());
        assert!(stored.last_used_at.is_none());
        assert!(["Cached", "Fresh"].contains(&stored.record.name.as_str()));
    }
    assert_eq!(
        store.usage(fresh.id(), today, today).await.unwrap()[0]
            .counts
            .total(),
        0,
        "a failed flush wrote counts"
    );
    // The flush that failed goes through once the database is back.
    store.record_usage(&flush).await.unwrap();
    assert_eq!(
        store.usage(fresh.id(), today, today).await.unwrap()[0]
            .counts
            .total(),
        1
    );
    store.revoke(fresh.id()).await.unwrap();
    assert_eq!(status(&app, &fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, &cached).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// One test per rule and store
// ---------------------------------------------------------------------------------------------

macro_rules! tests {
    ($backend:ty; $($rule:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                if <$backend as Backend>::available().await {
                    super::rules::$rule::<$backend>().await;
                }
            }
        )*
    };
}

/// Every rule of the `KeyStore` trait, for one backend.
macro_rules! suite {
    ($backend:ty) => {
        tests!($backend;
            create_hands_out_the_plaintext_once_and_keeps_the_rest,
            create_refuses_bad_names_and_writes_nothing,
            create_checks_scopes_against_the_catalog,
            create_refuses_an_expiry_that_is_not_in_the_future,
            get_and_every_change_refuse_an_unknown_id,
            list_gives_one_owners_keys_newest_first,
            listings_show_a_hint_never_the_key,
            the_store_never_holds_the_plaintext,
            rename_changes_only_the_name_and_reaches_the_layer,
            limits_round_trip_through_create_get_list_and_resolve,
            set_limits_replaces_and_clears_is_audited_and_reaches_the_layer,
            revoke_is_idempotent_and_keeps_the_first_time,
            revoke_through_the_store_is_honoured_on_the_next_request,
            rotate_copies_the_key_and_never_widens_it,
            the_old_key_works_through_the_grace_period_then_dies,
            the_grace_period_never_outlives_the_old_keys_expiry,
            a_revoked_or_expired_key_cannot_be_rotated,
            a_key_in_its_grace_period_cannot_be_rotated_again,
            delete_removes_the_key_for_good,
            record_use_only_moves_forward,
            the_resolver_reports_revoked_and_expired_keys_as_they_are,
            concurrent_creates_are_all_kept,
            concurrent_revokes_agree_on_the_first_time,
            metadata_and_owners_round_trip,
            usage_counts_add_up_and_every_day_is_in_the_series,
            flushes_from_two_instances_at_once_add_up_exactly,
            counts_of_deleted_and_unknown_keys_are_dropped,
            record_usage_moves_last_used_only_forward,
            usage_summary_lists_an_owners_keys_with_totals_and_last_use,
            anonymous_counts_are_kept_per_day_and_outcome,
            pruning_removes_only_the_days_before,
            counts_saturate_and_no_batch_makes_a_store_fail_or_panic,
            a_batch_with_an_id_is_applied_once,
            every_change_is_in_the_audit_trail_with_its_actor,
            the_audit_trail_is_read_per_owner_and_per_key_a_page_at_a_time,
            an_invalid_actor_refuses_the_change_and_writes_nothing,
            the_plain_methods_record_the_system_actor,
            the_audit_trail_never_holds_the_plaintext,
        );
    };
}

mod memory {
    use super::*;

    suite!(Memory);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use tower_api_key::store::sqlx;
    use tower_api_key::SqliteStore;

    use super::sqlite_backend::{fresh_connection_pool, wal, Sqlite};
    use super::*;

    suite!(Sqlite);
    tests!(Sqlite;
        a_corrupted_row_gives_a_clear_error_never_a_panic,
        a_failed_rotation_changes_nothing,
        a_failed_flush_writes_nothing,
        usage_rows_edited_by_hand_are_read_defensively,
        migrate_records_the_key_format_and_refuses_another,
        a_change_whose_audit_entry_fails_changes_nothing,
        audit_rows_edited_by_hand_give_a_clear_error_never_a_panic,
    );

    #[tokio::test]
    async fn keys_outlive_the_process_that_made_them() {
        let backend = Sqlite::new();
        let store = SqliteStore::open(&backend.path, om()).await.unwrap();
        store.migrate().await.unwrap();
        let created = store
            .create(NewKey::new("Persistent", Environment::Live).scopes([ORDERS_READ]))
            .await
            .unwrap();
        store.pool().close().await;
        drop(store);

        let reopened = SqliteStore::open(&backend.path, om()).await.unwrap();
        reopened.migrate().await.unwrap();
        assert_eq!(reopened.get(created.id()).await.unwrap(), created.stored);
        let record = reopened.resolve(&created.key.digest()).await.unwrap();
        assert_eq!(record.as_ref(), Some(&created.stored.record));
    }

    #[tokio::test]
    async fn open_creates_the_file_in_wal_mode_and_migrate_is_idempotent() {
        let backend = Sqlite::new();
        assert!(!backend.path.exists());
        let store = SqliteStore::open(&backend.path, om()).await.unwrap();
        assert!(backend.path.is_file());
        for _ in 0..3 {
            store.migrate().await.unwrap();
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM api_key_migrations")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
        // Two processes migrating at once wait for each other.
        let other = SqliteStore::open(&backend.path, om()).await.unwrap();
        let (a, b) = tokio::join!(store.migrate(), other.migrate());
        a.unwrap();
        b.unwrap();
    }

    #[tokio::test]
    async fn times_are_stored_as_utc_microseconds_and_the_digest_as_32_bytes() {
        let clock = TestClock::new();
        let (backend, store) = Sqlite::open(clock, None).await;
        let created = store
            .create(NewKey::new("Timed", Environment::Live).expires_at(t0() + HOUR))
            .await
            .unwrap();
        let (created_type, created_at, expires_at, digest): (String, i64, i64, Vec<u8>) =
            sqlx::query_as(
                "SELECT typeof(created_at), created_at, expires_at, digest FROM api_keys",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(created_type, "integer");
        assert_eq!(created_at, 1_700_000_000_123_456);
        assert_eq!(expires_at, 1_700_003_600_123_456);
        assert_eq!(digest, created.key.digest().as_bytes());
        drop(backend);
    }

    #[tokio::test]
    async fn a_missing_database_file_gives_unavailable_and_503_until_it_is_back() {
        struct MovedAway {
            path: std::path::PathBuf,
            store: SqliteStore,
        }

        #[async_trait]
        impl Outage for MovedAway {
            async fn begin(&self) {
                // Connections close on release in a task of their own; wait for the last.
                for _ in 0..200 {
                    if self.store.pool().size() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert_eq!(self.store.pool().size(), 0, "a connection stayed open");
                assert!(
                    !wal(&self.path).exists(),
                    "the last connection checkpoints the log"
                );
                std::fs::rename(&self.path, away(&self.path)).unwrap();
            }

            async fn end(&self) {
                std::fs::rename(away(&self.path), &self.path).unwrap();
            }
        }

        fn away(path: &std::path::Path) -> std::path::PathBuf {
            path.with_extension("away")
        }

        let backend = Sqlite::new();
        let clock = TestClock::new();
        let setup = SqliteStore::open(&backend.path, om()).await.unwrap();
        setup.migrate().await.unwrap();
        setup.pool().close().await;
        let store = SqliteStore::from_pool(fresh_connection_pool(&backend.path).await, om())
            .with_clock(clock.clone());
        let outage = MovedAway {
            path: backend.path.clone(),
            store: store.clone(),
        };
        outage_then_recovery(store, &clock, outage, true).await;
    }

    #[tokio::test]
    async fn a_closed_pool_gives_unavailable_and_503() {
        let clock = TestClock::new();
        let (_backend, store) = Sqlite::open(clock.clone(), None).await;
        let created = store
            .create(NewKey::new("Closed", Environment::Live))
            .await
            .unwrap();
        let app = app(store.clone(), &clock);
        store.pool().close().await;
        assert_unavailable(store.get(created.id()).await);
        assert_unavailable(store.create(NewKey::new("New", Environment::Live)).await);
        assert_eq!(
            status(&app, &created).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_gives_unavailable() {
        let backend = Sqlite::new();
        std::fs::write(
            &backend.path,
            b"this is not a SQLite database, just text\n".repeat(100),
        )
        .unwrap();
        let opened = match SqliteStore::open(&backend.path, om()).await {
            Ok(store) => store.migrate().await,
            Err(err) => Err(err),
        };
        let message = assert_unavailable(opened);
        assert!(message.contains("not a database"), "{message}");
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tower_api_key::store::sqlx::postgres::PgPoolOptions;
    use tower_api_key::store::sqlx::{self};
    use tower_api_key::PostgresStore;

    use super::postgres_backend::{connect_options, new_schema, url, Postgres};
    use super::*;

    suite!(Postgres);
    tests!(Postgres;
        a_corrupted_row_gives_a_clear_error_never_a_panic,
        a_failed_rotation_changes_nothing,
        a_failed_flush_writes_nothing,
        usage_rows_edited_by_hand_are_read_defensively,
        migrate_records_the_key_format_and_refuses_another,
        a_change_whose_audit_entry_fails_changes_nothing,
        audit_rows_edited_by_hand_give_a_clear_error_never_a_panic,
    );

    /// Skips the test (or fails it under CI) when PostgreSQL is not there.
    async fn postgres() -> bool {
        Postgres::available().await
    }

    #[tokio::test]
    async fn migrate_creates_the_schema_and_is_idempotent_even_when_concurrent() {
        if !postgres().await {
            return;
        }
        let backend = Postgres {
            schema: new_schema(),
        };
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(connect_options())
            .await
            .unwrap();
        let store = PostgresStore::from_pool(pool.clone(), om()).with_schema(&backend.schema);
        assert_eq!(store.schema(), backend.schema);
        let migrations = (0..4).map(|_| {
            let store = store.clone();
            async move { store.migrate().await }
        });
        for result in futures_util::future::join_all(migrations).await {
            result.unwrap();
        }
        store.migrate().await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT version FROM \"{}\".api_key_migrations",
            backend.schema
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
        // The tables are where they were asked to be, and nowhere else.
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT table_schema::text FROM information_schema.tables \
             WHERE table_name = 'api_keys' AND table_schema = $1",
        )
        .bind(&backend.schema)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(schemas, [backend.schema.as_str()]);
    }

    #[tokio::test]
    async fn schema_names_that_postgresql_would_cut_are_refused_and_never_share_a_table() {
        if !postgres().await {
            return;
        }
        // Two tenants whose schema names share their first 63 bytes: PostgreSQL would cut both
        // to one name, and tenant A's keys would work on tenant B's API.
        let base = new_schema();
        let long = |tenant: char| format!("{base}_{}{tenant}", "x".repeat(63 - base.len()));
        let (a, b) = (long('a'), long('b'));
        assert!(a.len() > 63 && a[..63] == b[..63]);
        let cut = Postgres {
            schema: a[..63].to_owned(),
        };
        let nul = format!("{base}\0tenant");
        for name in [&a, &b, &nul] {
            let clock = TestClock::new();
            let store = PostgresStore::connect(&url(), om())
                .await
                .unwrap()
                .with_schema(name.as_str());
            let refused = |result: Result<(), StoreError>| match result {
                Err(StoreError::InvalidSchemaName(reason)) => reason,
                other => panic!("{name:?}: expected InvalidSchemaName, got {other:?}"),
            };
            let reason = refused(store.migrate().await);
            assert!(
                reason.contains("63 bytes") || reason.contains("NUL"),
                "{reason}"
            );
            refused(
                store
                    .create(NewKey::new("A", Environment::Live))
                    .await
                    .map(drop),
            );
            refused(store.list(None).await.map(drop));
            // A layer on it answers 503: the store cannot tell whether a key is valid.
            let key = om().generate(Environment::Live).unwrap();
            let response = call_with(&app(store, &clock), key.expose_secret()).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let refused = PostgresStore::connect_recorded(&url(), &a).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidSchemaName(_))),
            "{refused:?}"
        );
        // Nothing was created under the cut name.
        let pool = PgPoolOptions::new()
            .connect_with(connect_options())
            .await
            .unwrap();
        let found: Vec<String> =
            sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
                .bind(&cut.schema)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(found.is_empty(), "{found:?}");

        // 63 bytes exactly is kept whole and works.
        let whole = Postgres {
            schema: cut.schema.clone(),
        };
        let store = PostgresStore::from_pool(pool, om()).with_schema(&whole.schema);
        store.migrate().await.unwrap();
        let created = store
            .create(NewKey::new("Tenant", Environment::Live))
            .await
            .unwrap();
        assert_eq!(store.get(created.id()).await.unwrap(), created.stored);
        drop(cut);
    }

    #[tokio::test]
    async fn times_are_timestamptz_in_utc_and_the_digest_is_32_bytes() {
        if !postgres().await {
            return;
        }
        let (backend, store) = Postgres::open(TestClock::new(), None).await;
        let created = store
            .create(NewKey::new("Timed", Environment::Live).expires_at(t0() + HOUR))
            .await
            .unwrap();
        let (created_type, created_at, expires_at, digest): (String, String, String, Vec<u8>) =
            sqlx::query_as(&format!(
                "SELECT pg_typeof(created_at)::text, \
                 to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), \
                 to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), \
                 digest FROM \"{}\".api_keys",
                backend.schema
            ))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(created_type, "timestamp with time zone");
        assert_eq!(created_at, "2023-11-14T22:13:20.123456");
        assert_eq!(expires_at, "2023-11-14T23:13:20.123456");
        assert_eq!(digest, created.key.digest().as_bytes());
    }

    #[tokio::test]
    async fn an_unreachable_server_gives_unavailable_and_503() {
        // Nothing listens on port 1.
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy_with(connect_options().host("127.0.0.1").port(1));
        let clock = TestClock::new();
        let store = PostgresStore::from_pool(pool, om())
            .with_schema(new_schema())
            .with_clock(clock.clone());
        let message = assert_unavailable(
            store
                .create(NewKey::new("Nowhere", Environment::Live))
                .await,
        );
        assert!(
            message.starts_with("the key store is unavailable"),
            "{message}"
        );
        assert_unavailable(store.list(None).await);
        assert_unavailable(store.migrate().await);

        // A key the layer has never seen: the store cannot tell, so 503, not 401.
        let key = om().generate(Environment::Live).unwrap();
        let response = call_with(&app(store, &clock), key.expose_secret()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    /// A TCP relay to the server that can be cut and restored: the database "goes away" for the
    /// store (connections dropped, new ones refused) without touching the shared server.
    struct Relay {
        addr: SocketAddr,
        target: SocketAddr,
        tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    }

    impl Relay {
        async fn start(target: SocketAddr) -> Relay {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let relay = Relay {
                addr: listener.local_addr().unwrap(),
                target,
                tasks: Arc::default(),
            };
            relay.serve(listener);
            relay
        }

        fn serve(&self, listener: TcpListener) {
            let target = self.target;
            let tasks = self.tasks.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    tasks.lock().unwrap().push(pipe);
                }
            });
            self.tasks.lock().unwrap().push(accept);
        }

        /// Drops every connection and stops listening: connecting is refused.
        fn cut(&self) {
            for task in self.tasks.lock().unwrap().drain(..) {
                task.abort();
            }
        }

        async fn restore(&self) {
            // The port was just ours; nothing else on this machine takes it in between.
            let mut listener = None;
            for _ in 0..100 {
                match TcpListener::bind(self.addr).await {
                    Ok(bound) => {
                        listener = Some(bound);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            self.serve(listener.expect("the relay's port can be bound again"));
        }
    }

    #[async_trait]
    impl Outage for Relay {
        async fn begin(&self) {
            self.cut();
            // Let the aborted tasks drop their sockets.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        async fn end(&self) {
            self.restore().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_gives_unavailable_and_503_and_the_layer_recovers_by_itself() {
        if !postgres().await {
            return;
        }
        let options = connect_options();
        let target = tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await
            .unwrap()
            .next()
            .unwrap();
        let relay = Relay::start(target).await;
        let backend = Postgres {
            schema: new_schema(),
        };
        let pool = PgPoolOptions::new()
            .max_connections(3)
            // Long enough for a reconnection on a busy machine; each call during the cut waits
            // this long, retrying.
            .acquire_timeout(Duration::from_secs(1))
            .connect_with(options.host("127.0.0.1").port(relay.addr.port()))
            .await
            .unwrap();
        let clock = TestClock::new();
        let store = PostgresStore::from_pool(pool, om())
            .with_schema(&backend.schema)
            .with_clock(clock.clone());
        store.migrate().await.unwrap();
        // The watch's connection goes through the relay too.
        outage_then_recovery(store, &clock, relay, true).await;
    }

    /// The schema is moved away under the store, and its connections are cut so that none runs
    /// a statement prepared before; then the schema is moved back.
    struct SchemaMovedAway {
        schema: String,
        admin: sqlx::PgPool,
    }

    #[async_trait]
    impl Outage for SchemaMovedAway {
        async fn begin(&self) {
            sqlx::raw_sql(&format!(
                "ALTER SCHEMA \"{0}\" RENAME TO \"{0}_away\"",
                self.schema
            ))
            .execute(&self.admin)
            .await
            .unwrap();
            let terminated: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&self.schema)
            .fetch_all(&self.admin)
            .await
            .unwrap();
            assert!(terminated.iter().all(|done| *done));
        }

        async fn end(&self) {
            sqlx::raw_sql(&format!(
                "ALTER SCHEMA \"{0}_away\" RENAME TO \"{0}\"",
                self.schema
            ))
            .execute(&self.admin)
            .await
            .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_gone_from_under_the_store_gives_unavailable_and_503_until_it_is_back() {
        if !postgres().await {
            return;
        }
        let clock = TestClock::new();
        let (backend, store) = Postgres::open(clock.clone(), None).await;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(connect_options())
            .await
            .unwrap();
        let outage = SchemaMovedAway {
            schema: backend.schema.clone(),
            admin,
        };
        // The watch's own connection is not cut, and listens still: the cached key stays.
        outage_then_recovery(store, &clock, outage, false).await;
    }
}
