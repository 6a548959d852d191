//! Changes to keys reach the caches of other processes: two stores on one database, each with a
//! pool of its own as two processes would have, one serving requests through a layer (the
//! "server") and the other changing keys (the "tool": through the crate, or with plain SQL on a
//! connection of its own, as a support engineer would).
//!
//! The server's cache keeps keys for ten minutes, known or unknown, and the tool's in-process
//! announcements never reach the server's layer (each store has a handle of its own, and the
//! server's layer listens only on its store's): so a change the server honours within the test
//! travelled through the database's channel — PostgreSQL `LISTEN`/`NOTIFY`, or the SQLite log
//! table the server polls — or through the watcher emptying the caches when that channel is
//! lost and found again. (The tests of a lost channel check that premise: a revocation by the
//! tool is not honoured while the server's channel is down.)
//!
//! The rules every SQL store must follow are generic functions over [`Database`]; `rules!` makes
//! one `#[tokio::test]` per rule and database, so `cargo test --test invalidation sqlite::` or
//! `postgres::a_revocation` pick what to run. What only one database has (PostgreSQL's listener
//! connection, SQLite's log table) is tested in that database's module.
//!
//! SQLite runs on a real file; PostgreSQL on the real server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its own (`test_<random>`),
//! dropped at the end. When the server cannot be reached the PostgreSQL tests are skipped with a
//! message, unless `CI` is set: then they fail.
//!
//! Delays are printed (`--nocapture` shows them) and held only to a generous ceiling.
// Without a SQL store, the shared rules have no caller.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_macros)
)]

use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;
use tower_api_key::{AllowedNetworks, KeyLimits, RateLimit};
use tower_api_key::{
    ApiKeyLayer, ChannelHealth, Environment, KeyDigest, KeyFormat, KeyId, KeyRecord, KeyResolver,
    KeyStore, NewKey, PlaintextKey, Principal, RequireScopes, ResolveError, Scope, Watcher,
};
use tower_api_key::{Day, KeyIncrement, KeyOutcome, OutcomeCounts, UsageBatch};

const ORDERS_READ: Scope = Scope::from_static("orders:read");
const PRODUCTS_READ: Scope = Scope::from_static("products:read");
/// Long enough that only an invalidation can explain a change of answer within a test.
const CACHE_TTL: Duration = Duration::from_secs(600);
/// How long a wait may take before the test fails: what no working channel comes near.
const CEILING: Duration = Duration::from_secs(5);
/// The generous bound a change made elsewhere must be honoured within, channel up.
const PROMPTLY: Duration = Duration::from_secs(1);

fn om() -> KeyFormat {
    KeyFormat::new("om").unwrap()
}

/// `text` as a SQL string literal (the same in both databases).
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------------
// The serving process
// ---------------------------------------------------------------------------------------------

/// The server: a router behind a layer on the server's store, and the layer, to read its cache.
///
/// `/` answers with the principal's key name; `/orders` requires `orders:read`.
struct App {
    router: Router,
    layer: ApiKeyLayer,
}

impl App {
    fn new(store: impl KeyStore) -> App {
        let layer = ApiKeyLayer::builder(store)
            .cache_ttl(CACHE_TTL)
            .negative_cache_ttl(CACHE_TTL)
            .build();
        App::with_layer(layer)
    }

    fn with_layer(layer: ApiKeyLayer) -> App {
        let router = Router::new()
            .route(
                "/",
                get(|principal: Principal| async move { principal.name().to_owned() }),
            )
            .route(
                "/orders",
                get(|| async { "orders" }).route_layer(RequireScopes::all([ORDERS_READ])),
            )
            .layer(layer.clone());
        App { router, layer }
    }

    async fn call(&self, path: &str, key: &PlaintextKey) -> (StatusCode, String) {
        let request = Request::get(path)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", key.expose_secret()),
            )
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn status(&self, key: &PlaintextKey) -> StatusCode {
        self.call("/", key).await.0
    }

    /// Resolver calls the layer made so far: a request that adds none was served from cache.
    fn resolver_calls(&self) -> u64 {
        self.layer.cache_stats().resolver_calls
    }

    /// Makes sure `key` is accepted and then served from the cache, without the resolver.
    ///
    /// A watch that loses its channel empties the cache (and a lookup in flight then is not
    /// kept), which a loaded machine can make happen at any time: a few tries are allowed.
    async fn warm(&self, key: &PlaintextKey) {
        for _ in 0..5 {
            assert_eq!(self.status(key).await, StatusCode::OK);
            let calls = self.resolver_calls();
            assert_eq!(self.status(key).await, StatusCode::OK);
            if self.resolver_calls() == calls {
                return;
            }
        }
        panic!("the key is never served from cache");
    }

    /// Sends requests until `path` answers `status` (and `body`, if given) for `key`; how long
    /// that took. Fails past the ceiling.
    async fn until(
        &self,
        path: &str,
        key: &PlaintextKey,
        status: StatusCode,
        body: Option<&str>,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let (got, text) = self.call(path, key).await;
            if got == status && body.is_none_or(|body| body == text) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < CEILING,
                "{path} still answers {got} {text:?} after {CEILING:?}, expected {status} {body:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends requests until `key` is refused with 401; how long that took.
    async fn until_refused(&self, key: &PlaintextKey) -> Duration {
        self.until("/", key, StatusCode::UNAUTHORIZED, None).await
    }
}

/// Waits until `health` satisfies `condition`, and returns the health that did.
async fn wait_health(
    health: &mut watch::Receiver<ChannelHealth>,
    what: &str,
    within: Duration,
    condition: impl FnMut(&ChannelHealth) -> bool,
) -> ChannelHealth {
    let found = tokio::time::timeout(within, async {
        health
            .wait_for(condition)
            .await
            .expect("the watcher is running")
            .clone()
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "the channel is not {what} after {within:?}: {}",
            *health.borrow()
        )
    })
}

fn is_lost(health: &ChannelHealth) -> bool {
    matches!(health, ChannelHealth::Lost { .. })
}

async fn wait_connected(watcher: &Watcher) {
    let mut health = watcher.health_changes();
    wait_health(
        &mut health,
        "connected",
        CEILING,
        ChannelHealth::is_connected,
    )
    .await;
}

/// A key with `orders:read` and `products:read`, created by the tool.
async fn new_key(tool: &impl KeyStore, name: &str) -> (KeyId, PlaintextKey) {
    let created = tool
        .create(NewKey::new(name, Environment::Live).scopes([ORDERS_READ, PRODUCTS_READ]))
        .await
        .unwrap();
    (created.id().clone(), created.key)
}

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

/// A SQL database the rules run on, and what they need to change it behind the crate's back.
#[async_trait]
trait Database: Sized + Send + Sync + 'static {
    type Store: KeyStore + Clone;

    const NAME: &'static str;

    /// A fresh database, with the server's store and the tool's on it, each with a pool of its
    /// own; `None` when the database is not there (PostgreSQL, outside CI).
    async fn two_processes() -> Option<(Self, Self::Store, Self::Store)>;

    /// The server store's watch on the database's channel.
    fn watcher(store: &Self::Store) -> &Watcher;

    /// The key table, as plain SQL names it.
    fn keys(&self) -> String;

    /// The current time, as a value of the key table's time columns.
    fn now() -> String;

    /// `bytes` as a SQL literal.
    fn bytes(bytes: &[u8]) -> String;

    /// A statement that empties the key table the quickest way the database has.
    fn empty_table(&self) -> String;

    /// A statement that writes a row of `values` for `columns` (`id` first) in place of any row
    /// with that id: the database's own way to do it in one statement.
    fn replace_row(&self, columns: &[&str], values: &[String]) -> String;

    /// Runs `sql` on a connection of its own, outside both stores; the rows it changed.
    async fn execute(&self, sql: &str) -> u64;

    /// Runs `sql` in a transaction, on a connection of its own, and rolls it back; the rows it
    /// changed before that.
    async fn execute_and_roll_back(&self, sql: &str) -> u64;

    /// Starts watching what the database announces to other processes.
    async fn announcements(&self) -> Box<dyn Announcements>;
}

/// What a database announced since an observer started: each a digest in hex, or `all`.
#[async_trait]
trait Announcements: Send {
    /// Everything announced, up to the first announcement of `marker` (included): a change
    /// committed after every change the test looks at, since announcements come in commit
    /// order.
    async fn until(&mut self, marker: &KeyDigest) -> Vec<String>;
}

/// Every rule, as one test per database.
macro_rules! rules {
    ($db:ty) => {
        rules!($db;
            a_revocation_elsewhere_is_honoured,
            a_deletion_elsewhere_is_honoured,
            a_rotation_elsewhere_ends_the_old_key_at_once_with_no_grace,
            a_rename_elsewhere_is_served_under_the_new_name,
            a_change_of_limits_elsewhere_is_announced,
            a_revocation_in_plain_sql_is_honoured,
            a_scope_removed_in_plain_sql_gives_403,
            a_row_deleted_in_plain_sql_is_refused,
            emptying_the_table_in_plain_sql_refuses_every_key,
            a_change_that_rolls_back_is_never_announced,
            recording_use_announces_nothing,
            recording_usage_announces_nothing,
            a_key_inserted_after_its_digest_was_cached_as_unknown_is_accepted,
            a_row_replaced_in_plain_sql_refuses_the_key_it_held,
        );
    };
    ($db:ty; $($rule:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                super::rules::$rule::<$db>().await;
            }
        )+
    };
}

mod rules {
    use super::*;

    /// The server's app, with its watch connected.
    ///
    /// Start it after creating the test's keys: a creation the watch hears of drops the new
    /// key's digest (a cache may hold it as unknown), and when that news arrives after the key
    /// was first served, the next request looks it up again, which would blur what a test
    /// counts.
    pub(crate) async fn serve<D: Database>(server: &D::Store) -> App {
        let app = App::new(server.clone());
        wait_connected(D::watcher(server)).await;
        app
    }

    pub(crate) fn report<D: Database>(what: &str, took: Duration) {
        eprintln!(
            "{}: {what} honoured by the other process after {took:?}",
            D::NAME
        );
        assert!(took < PROMPTLY, "{}: {what} took {took:?}", D::NAME);
    }

    pub(crate) async fn a_revocation_elsewhere_is_honoured<D: Database>() {
        let Some((_db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let (_, other) = new_key(&tool, "Production").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        app.warm(&other).await;
        tool.revoke(&id).await.unwrap();
        report::<D>("revoke", app.until_refused(&key).await);
        // Only that key.
        let calls = app.resolver_calls();
        assert_eq!(app.status(&other).await, StatusCode::OK);
        assert_eq!(app.resolver_calls(), calls);
    }

    pub(crate) async fn a_deletion_elsewhere_is_honoured<D: Database>() {
        let Some((_db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        tool.delete(&id).await.unwrap();
        report::<D>("delete", app.until_refused(&key).await);
    }

    pub(crate) async fn a_rotation_elsewhere_ends_the_old_key_at_once_with_no_grace<D: Database>() {
        let Some((_db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, old) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&old).await;
        let rotation = tool.rotate(&id, Duration::ZERO).await.unwrap();
        report::<D>("rotate (grace 0)", app.until_refused(&old).await);
        let (status, name) = app.call("/", &rotation.new.key).await;
        assert_eq!((status, name.as_str()), (StatusCode::OK, "Webhook Server"));
    }

    pub(crate) async fn a_rename_elsewhere_is_served_under_the_new_name<D: Database>() {
        let Some((_db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        assert_eq!(app.call("/", &key).await.1, "Webhook Server");
        tool.rename(&id, "Webhook Server (old)").await.unwrap();
        let took = app
            .until("/", &key, StatusCode::OK, Some("Webhook Server (old)"))
            .await;
        report::<D>("rename", took);
    }

    /// A change to a key's limits goes through the triggers like any other change (SQLite's
    /// update trigger lists the limit columns; PostgreSQL's compares whole rows), so every
    /// process reads the key again and checks its next request against the new limits.
    pub(crate) async fn a_change_of_limits_elsewhere_is_announced<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let (marker_id, marker) = new_key(&tool, "Marker").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        let mut announced = db.announcements().await;
        let calls = app.resolver_calls();
        let limits = KeyLimits::none()
            .with_rate("100/s burst 20".parse::<RateLimit>().unwrap())
            .with_networks("203.0.113.0/24".parse::<AllowedNetworks>().unwrap());
        tool.set_limits(&id, limits.clone()).await.unwrap();
        tool.set_limits(&id, KeyLimits::none()).await.unwrap();
        tool.revoke(&marker_id).await.unwrap();
        let hex = key.digest().to_hex();
        assert_eq!(
            announced.until(&marker.digest()).await,
            [hex.clone(), hex, marker.digest().to_hex()]
        );
        // The server looks the key up again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.resolver_calls() == calls {
            assert!(
                Instant::now() < deadline,
                "the key was never looked up again"
            );
            assert_eq!(app.status(&key).await, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn a_revocation_in_plain_sql_is_honoured<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        let changed = db
            .execute(&format!(
                "UPDATE {} SET revoked_at = {} WHERE id = {}",
                db.keys(),
                D::now(),
                quote(id.as_str())
            ))
            .await;
        assert_eq!(changed, 1);
        report::<D>("plain SQL revoke", app.until_refused(&key).await);
    }

    pub(crate) async fn a_scope_removed_in_plain_sql_gives_403<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        assert_eq!(app.call("/orders", &key).await.0, StatusCode::OK);
        let changed = db
            .execute(&format!(
                "UPDATE {} SET scopes = 'products:read' WHERE id = {}",
                db.keys(),
                quote(id.as_str())
            ))
            .await;
        assert_eq!(changed, 1);
        let took = app
            .until("/orders", &key, StatusCode::FORBIDDEN, None)
            .await;
        report::<D>("plain SQL scope removal", took);
        // Still a valid key, for what it may still do.
        assert_eq!(app.status(&key).await, StatusCode::OK);
    }

    pub(crate) async fn a_row_deleted_in_plain_sql_is_refused<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        let changed = db
            .execute(&format!(
                "DELETE FROM {} WHERE id = {}",
                db.keys(),
                quote(id.as_str())
            ))
            .await;
        assert_eq!(changed, 1);
        report::<D>("plain SQL DELETE", app.until_refused(&key).await);
    }

    pub(crate) async fn emptying_the_table_in_plain_sql_refuses_every_key<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (_, first) = new_key(&tool, "Production").await;
        let (_, second) = new_key(&tool, "Staging").await;
        let app = serve::<D>(&server).await;
        app.warm(&first).await;
        app.warm(&second).await;
        db.execute(&db.empty_table()).await;
        let took = app.until_refused(&first).await;
        report::<D>(&db.empty_table(), took);
        assert_eq!(app.status(&second).await, StatusCode::UNAUTHORIZED);
    }

    pub(crate) async fn a_change_that_rolls_back_is_never_announced<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let (marker_id, marker) = new_key(&tool, "Marker").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        app.warm(&marker).await;
        let mut announced = db.announcements().await;
        let changed = db
            .execute_and_roll_back(&format!(
                "UPDATE {} SET revoked_at = {} WHERE id = {}",
                db.keys(),
                D::now(),
                quote(id.as_str())
            ))
            .await;
        assert_eq!(changed, 1, "the revocation took place before the rollback");
        let calls = app.resolver_calls();
        // Committed after the rollback: announcements come in commit order, so anything the
        // rolled-back change announced would come first.
        tool.revoke(&marker_id).await.unwrap();
        assert_eq!(
            announced.until(&marker.digest()).await,
            [marker.digest().to_hex()]
        );
        // The server too saw the marker, and nothing about the key before it.
        app.until_refused(&marker).await;
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(
            app.resolver_calls(),
            calls + 1,
            "only the marker was looked up"
        );
    }

    pub(crate) async fn recording_use_announces_nothing<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let (marker_id, marker) = new_key(&tool, "Marker").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        app.warm(&marker).await;
        let mut announced = db.announcements().await;
        let calls = app.resolver_calls();
        let used_at = std::time::SystemTime::now();
        tool.record_use(&id, used_at).await.unwrap();
        assert!(
            tool.get(&id).await.unwrap().last_used_at.is_some(),
            "the use was recorded"
        );
        tool.revoke(&marker_id).await.unwrap();
        assert_eq!(
            announced.until(&marker.digest()).await,
            [marker.digest().to_hex()]
        );
        app.until_refused(&marker).await;
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(
            app.resolver_calls(),
            calls + 1,
            "only the marker was looked up"
        );
    }

    /// A flush of usage counts writes a new table and `last_used_at`, neither of which any
    /// cache holds an answer about: it empties no cache anywhere.
    pub(crate) async fn recording_usage_announces_nothing<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let (marker_id, marker) = new_key(&tool, "Marker").await;
        let app = serve::<D>(&server).await;
        app.warm(&key).await;
        app.warm(&marker).await;
        let mut announced = db.announcements().await;
        let calls = app.resolver_calls();
        let now = std::time::SystemTime::now();
        let today = Day::of(now);
        let mut counts = OutcomeCounts::default();
        counts.add(KeyOutcome::Allowed, 3);
        let mut batch = UsageBatch::new();
        batch.keys = vec![KeyIncrement::new(id.clone(), today, counts)];
        batch.last_used = vec![(id.clone(), now)];
        tool.record_usage(&batch).await.unwrap();
        assert!(
            tool.get(&id).await.unwrap().last_used_at.is_some(),
            "the use was recorded"
        );
        assert_eq!(
            tool.usage(&id, today, today).await.unwrap()[0]
                .counts
                .total(),
            3
        );
        tool.revoke(&marker_id).await.unwrap();
        assert_eq!(
            announced.until(&marker.digest()).await,
            [marker.digest().to_hex()]
        );
        app.until_refused(&marker).await;
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(
            app.resolver_calls(),
            calls + 1,
            "only the marker was looked up"
        );
    }

    pub(crate) async fn a_key_inserted_after_its_digest_was_cached_as_unknown_is_accepted<
        D: Database,
    >() {
        let Some((db, server, _tool)) = D::two_processes().await else {
            return;
        };
        let app = serve::<D>(&server).await;
        // A well-formed key no store knows yet: the layer remembers it as unknown.
        let key = om().generate(Environment::Live).unwrap();
        assert_eq!(app.status(&key).await, StatusCode::UNAUTHORIZED);
        let calls = app.resolver_calls();
        assert_eq!(app.status(&key).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.resolver_calls(), calls, "remembered as unknown");
        assert_eq!(app.layer.cache_stats().negative_entries, 1);
        // A support engineer imports it with plain SQL.
        let changed = db
            .execute(&format!(
                "INSERT INTO {} (id, digest, hint, name, owner, environment, scopes, created_at) \
                 VALUES ('imported', {}, {}, 'Imported', '', 'live', 'orders:read', {})",
                db.keys(),
                D::bytes(key.digest().as_bytes()),
                quote(&key.hint()),
                D::now()
            ))
            .await;
        assert_eq!(changed, 1);
        let took = app.until("/", &key, StatusCode::OK, Some("Imported")).await;
        report::<D>("plain SQL INSERT of a key cached as unknown", took);
    }

    pub(crate) async fn a_row_replaced_in_plain_sql_refuses_the_key_it_held<D: Database>() {
        let Some((db, server, tool)) = D::two_processes().await else {
            return;
        };
        let (id, old) = new_key(&tool, "Webhook Server").await;
        let app = serve::<D>(&server).await;
        app.warm(&old).await;
        // A support engineer reissues the key under the same id, in one statement.
        let new = om().generate(Environment::Live).unwrap();
        let sql = db.replace_row(
            &[
                "id",
                "digest",
                "hint",
                "name",
                "owner",
                "environment",
                "scopes",
                "created_at",
            ],
            &[
                quote(id.as_str()),
                D::bytes(new.digest().as_bytes()),
                quote(&new.hint()),
                quote("Reissued"),
                quote(""),
                quote("live"),
                quote("orders:read"),
                D::now(),
            ],
        );
        db.execute(&sql).await;
        report::<D>(
            "plain SQL replacement of a row",
            app.until_refused(&old).await,
        );
        let (status, name) = app.call("/", &new).await;
        assert_eq!((status, name.as_str()), (StatusCode::OK, "Reissued"));
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::PathBuf;

    use tower_api_key::store::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use tower_api_key::store::sqlx::{self, Connection};
    use tower_api_key::SqliteStore;

    use super::rules::report;
    use super::*;

    /// A database file, removed with its directory when the test ends.
    struct Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Sqlite {
        fn new() -> Sqlite {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys.db");
            Sqlite { _dir: dir, path }
        }

        /// A connection of its own to the file, as another program would open.
        async fn connect(&self) -> SqliteConnection {
            let options = SqliteConnectOptions::new()
                .filename(&self.path)
                .busy_timeout(Duration::from_secs(5));
            SqliteConnection::connect_with(&options).await.unwrap()
        }

        /// The last `seq` of the log table.
        async fn last_seq(&self) -> i64 {
            let mut conn = self.connect().await;
            sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM api_key_invalidations")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }

    #[async_trait]
    impl Database for Sqlite {
        type Store = SqliteStore;
        const NAME: &'static str = "sqlite";

        async fn two_processes() -> Option<(Self, SqliteStore, SqliteStore)> {
            let db = Sqlite::new();
            let server = SqliteStore::open(&db.path, om()).await.unwrap();
            server.migrate().await.unwrap();
            let tool = SqliteStore::open_recorded(&db.path).await.unwrap();
            Some((db, server, tool))
        }

        fn watcher(store: &SqliteStore) -> &Watcher {
            store.watcher()
        }

        fn keys(&self) -> String {
            "api_keys".to_owned()
        }

        fn now() -> String {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros();
            micros.to_string()
        }

        fn bytes(bytes: &[u8]) -> String {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("X'{hex}'")
        }

        fn empty_table(&self) -> String {
            // SQLite has no TRUNCATE; with triggers on the table, this deletes row by row.
            "DELETE FROM api_keys".to_owned()
        }

        fn replace_row(&self, columns: &[&str], values: &[String]) -> String {
            format!(
                "INSERT OR REPLACE INTO api_keys ({}) VALUES ({})",
                columns.join(", "),
                values.join(", ")
            )
        }

        async fn execute(&self, sql: &str) -> u64 {
            let mut conn = self.connect().await;
            let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            done.rows_affected()
        }

        async fn execute_and_roll_back(&self, sql: &str) -> u64 {
            let mut conn = self.connect().await;
            let mut tx = conn.begin().await.unwrap();
            let done = sqlx::query(sql).execute(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            conn.close().await.unwrap();
            done.rows_affected()
        }

        async fn announcements(&self) -> Box<dyn Announcements> {
            Box::new(LogRows {
                conn: self.connect().await,
                after: self.last_seq().await,
            })
        }
    }

    /// The rows of the log table past the last one there was when it started.
    struct LogRows {
        conn: SqliteConnection,
        after: i64,
    }

    #[async_trait]
    impl Announcements for LogRows {
        async fn until(&mut self, marker: &KeyDigest) -> Vec<String> {
            // The marker's change has committed: its row is there.
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT lower(hex(digest)) FROM api_key_invalidations WHERE seq > ? ORDER BY seq",
            )
            .bind(self.after)
            .fetch_all(&mut self.conn)
            .await
            .unwrap();
            let end = rows
                .iter()
                .position(|row| *row == marker.to_hex())
                .unwrap_or_else(|| panic!("the marker is not in the log: {rows:?}"));
            rows[..=end].to_vec()
        }
    }

    rules!(Sqlite);

    async fn serve(server: &SqliteStore) -> App {
        super::rules::serve::<Sqlite>(server).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_is_honoured_within_a_short_poll_interval() {
        let db = Sqlite::new();
        let server = SqliteStore::open(&db.path, om())
            .await
            .unwrap()
            .with_poll_interval(Duration::from_millis(20));
        server.migrate().await.unwrap();
        let tool = SqliteStore::open_recorded(&db.path).await.unwrap();
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve(&server).await;
        app.warm(&key).await;
        tool.revoke(&id).await.unwrap();
        let took = app.until_refused(&key).await;
        eprintln!("sqlite: revoke honoured after {took:?} (polling every 20 ms)");
        assert!(took < PROMPTLY, "{took:?}");
    }

    /// An application's own resolver that wraps the store (to add a lookup of its own, say)
    /// names no invalidations of its own; its layer still hears of every change to the store's
    /// keys: from this process at once, and from other processes through the store's watch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resolver_that_wraps_a_store_keeps_its_invalidations() {
        struct Wrapper(SqliteStore);

        #[async_trait]
        impl KeyResolver for Wrapper {
            async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
                self.0.resolve(digest).await
            }
        }

        let db = Sqlite::new();
        let server = SqliteStore::open(&db.path, om())
            .await
            .unwrap()
            .with_poll_interval(Duration::from_millis(20));
        server.migrate().await.unwrap();
        let tool = SqliteStore::open_recorded(&db.path).await.unwrap();
        let (here, here_key) = new_key(&tool, "Revoked here").await;
        let (elsewhere, elsewhere_key) = new_key(&tool, "Revoked elsewhere").await;
        let layer = ApiKeyLayer::resolver_builder(om(), Wrapper(server.clone()))
            .cache_ttl(CACHE_TTL)
            .build();
        let app = App::with_layer(layer);
        // The wrapper's first lookup starts the store's watch, which empties the cache once it
        // is connected; wait for that, as a server would have after its first requests.
        assert_eq!(app.status(&here_key).await, StatusCode::OK);
        wait_connected(server.watcher()).await;
        app.warm(&here_key).await;
        app.warm(&elsewhere_key).await;

        server.revoke(&here).await.unwrap();
        assert_eq!(
            app.status(&here_key).await,
            StatusCode::UNAUTHORIZED,
            "the request right after the revocation in this process"
        );
        tool.revoke(&elsewhere).await.unwrap();
        let took = app.until_refused(&elsewhere_key).await;
        assert!(took < PROMPTLY, "{took:?}");
    }

    /// A store whose watch ran on a runtime that shut down (one runtime to set up, another to
    /// serve, as some test suites do) no longer hears of changes: its health must say so rather
    /// than keep reporting a connection nobody holds.
    #[test]
    fn a_watch_whose_runtime_shut_down_reports_that_it_stopped() {
        let setup = tokio::runtime::Runtime::new().unwrap();
        let (_db, server) = setup.block_on(async {
            let (db, server, _tool) = Sqlite::two_processes().await.unwrap();
            wait_connected(server.watcher()).await;
            (db, server)
        });
        drop(setup);
        let health = server.watcher().health();
        let ChannelHealth::Lost { error, .. } = &health else {
            panic!("a watch that stopped reports {health}");
        };
        assert!(error.contains("stopped"), "{health}");
    }

    /// The log table moves away and comes back: the poll fails, the watcher reports the loss,
    /// keeps the layer serving, and empties its cache once it reads the log again, so that a
    /// revocation made while it could not read is honoured then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_log_table_is_reported_and_changes_missed_meanwhile_are_honoured_once_back() {
        let (db, server, tool) = Sqlite::two_processes().await.unwrap();
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let (other_id, other) = new_key(&tool, "Production").await;
        let app = serve(&server).await;
        app.warm(&key).await;
        let mut health = server.watcher().health_changes();

        db.execute("ALTER TABLE api_key_invalidations RENAME TO api_key_invalidations_away")
            .await;
        let lost = wait_health(&mut health, "lost", CEILING, is_lost).await;
        eprintln!("sqlite: {lost}");
        // The cache was emptied: the key is looked up again, and still accepted.
        assert_eq!(app.layer.cache_stats().entries, 0);
        let calls = app.resolver_calls();
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(app.resolver_calls(), calls + 1);

        // Revoked while nobody reads the log: SQLite moved the triggers with the table, so the
        // change is logged there, where the server does not look.
        let logged = || async {
            let mut conn = db.connect().await;
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM api_key_invalidations_away WHERE digest = ?",
            )
            .bind(key.digest().as_bytes().as_slice())
            .fetch_one(&mut conn)
            .await
            .unwrap();
            count
        };
        let before = logged().await;
        tool.revoke(&id).await.unwrap();
        let logged = logged().await - before;
        assert_eq!(logged, 1, "the triggers followed the table");
        // Served from cache: the bound with the channel down is the cache's time-to-live.
        let calls = app.resolver_calls();
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(app.resolver_calls(), calls);

        // Retrying, but not in a busy loop.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ChannelHealth::Lost {
            since, attempts, ..
        } = server.watcher().health()
        else {
            panic!("not lost: {}", server.watcher().health())
        };
        let ChannelHealth::Lost {
            since: first_since, ..
        } = lost
        else {
            unreachable!()
        };
        assert_eq!(since, first_since, "one loss, however many attempts");
        assert!((2..=8).contains(&attempts), "{attempts} attempts in 1 s");

        db.execute("ALTER TABLE api_key_invalidations_away RENAME TO api_key_invalidations")
            .await;
        wait_health(
            &mut health,
            "connected",
            CEILING,
            ChannelHealth::is_connected,
        )
        .await;
        // At once: the watcher emptied the cache before it said it was connected.
        assert_eq!(app.status(&key).await, StatusCode::UNAUTHORIZED);

        // And it reads the log again.
        app.warm(&other).await;
        tool.revoke(&other_id).await.unwrap();
        app.until_refused(&other).await;
    }

    /// Rows are pruned past 10,000: a reader that finds the row it read last gone may have
    /// missed changes, and empties its whole cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_missed_pruned_rows_empties_its_whole_cache() {
        let started = Instant::now();
        let (db, server, tool) = Sqlite::two_processes().await.unwrap();
        let (_, untouched) = new_key(&tool, "Never Changed").await;
        let (marker_id, marker) = new_key(&tool, "Marker").await;
        let app = serve(&server).await;
        app.warm(&untouched).await;

        // Each statement commits its rows at once: the server reads all of them in one poll.
        let import = |from: u32, count: u32| {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n \
                 WHERE i < {from} + {count} - 1) \
                 INSERT INTO api_keys (id, digest, hint, name, owner, environment, scopes, \
                 created_at) \
                 SELECT 'bulk_' || i, randomblob(32), 'om_live_…bulk', 'Bulk ' || i, '', 'live', \
                 '', 0 FROM n"
            )
        };

        // Fewer than 10,000 rows: nothing the reader has not read is pruned, and it drops only
        // the keys it is told about.
        assert_eq!(db.execute(&import(1, 5_000)).await, 5_000);
        app.warm(&marker).await;
        let calls = app.resolver_calls();
        tool.revoke(&marker_id).await.unwrap();
        app.until_refused(&marker).await;
        assert_eq!(app.status(&untouched).await, StatusCode::OK);
        assert_eq!(
            app.resolver_calls(),
            calls + 1,
            "only the marker was looked up"
        );

        // More than 10,000 in one go: the row the reader read last is pruned.
        let last_read = db.last_seq().await;
        assert_eq!(db.execute(&import(5_001, 10_001)).await, 10_001);
        let (rows, first): (i64, i64) = {
            let mut conn = db.connect().await;
            sqlx::query_as("SELECT count(*), min(seq) FROM api_key_invalidations")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        };
        assert_eq!(rows, 10_000, "the log keeps 10,000 rows");
        assert!(
            first > last_read,
            "the row read last ({last_read}) is pruned"
        );
        // The untouched key is looked up again once the server has read the log.
        let calls = app.resolver_calls();
        let start = Instant::now();
        while app.resolver_calls() == calls {
            assert_eq!(app.status(&untouched).await, StatusCode::OK);
            assert!(start.elapsed() < CEILING, "the cache was not emptied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "sqlite: the whole cache emptied {:?} after the pruning; the test took {:?}",
            start.elapsed(),
            started.elapsed()
        );
    }

    /// `UPDATE OR REPLACE` deletes the row in its way without running the delete trigger
    /// (SQLite runs it only with `recursive_triggers` on, which a plain SQL session does not
    /// set): the key of that row must be announced all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_that_update_or_replace_deletes_is_announced() {
        let (db, server, tool) = Sqlite::two_processes().await.unwrap();
        let (moved_id, moved) = new_key(&tool, "Moved").await;
        let (taken_id, taken) = new_key(&tool, "Taken").await;
        let app = serve(&server).await;
        app.warm(&moved).await;
        app.warm(&taken).await;
        let changed = db
            .execute(&format!(
                "UPDATE OR REPLACE api_keys SET id = {} WHERE id = {}",
                quote(taken_id.as_str()),
                quote(moved_id.as_str())
            ))
            .await;
        assert_eq!(changed, 1);
        report::<Sqlite>("UPDATE OR REPLACE", app.until_refused(&taken).await);
        // The key that moved still works, under its new id.
        let (status, name) = app.call("/", &moved).await;
        assert_eq!((status, name.as_str()), (StatusCode::OK, "Moved"));
    }

    /// SQLite's update trigger names its columns: a migration that adds a column to `api_keys`
    /// must add it there too, or changes to it would never reach other processes.
    #[tokio::test]
    async fn the_update_trigger_lists_every_column_but_last_used_at() {
        let (db, _server, _tool) = Sqlite::two_processes().await.unwrap();
        let mut conn = db.connect().await;
        let mut columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('api_keys')")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert!(columns.contains(&"last_used_at".to_owned()), "{columns:?}");
        columns.retain(|column| column != "last_used_at");
        columns.sort();

        let trigger: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'api_keys_updated'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let flat = trigger.split_whitespace().collect::<Vec<_>>().join(" ");
        let listed = flat
            .split_once("AFTER UPDATE OF ")
            .and_then(|(_, rest)| rest.split_once(" ON api_keys"))
            .map(|(list, _)| list)
            .unwrap_or_else(|| panic!("unexpected trigger: {trigger}"));
        let mut listed: Vec<String> = listed
            .split(',')
            .map(|column| column.trim().to_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, columns);
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg;

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::OnceLock;

    use tower_api_key::store::sqlx::postgres::{
        PgConnectOptions, PgConnection, PgListener, PgPoolOptions,
    };
    use tower_api_key::store::sqlx::{self, Connection};
    use tower_api_key::PostgresStore;

    use super::*;

    /// 16 random hex digits, for names of schemas and roles.
    fn random_hex() -> String {
        om().generate(Environment::Test).unwrap().digest().to_hex()[..16].to_owned()
    }

    fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    fn connect_options() -> PgConnectOptions {
        url().parse().unwrap()
    }

    /// Whether the server is there; outside CI, says loudly that the tests are skipped, and
    /// under CI fails.
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
                         SKIPPING the PostgreSQL invalidation tests: {} is unreachable ({err}).\n\
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

    /// A schema of the test's own, and a role if the test made one: dropped when the test
    /// ends, even when it fails.
    struct Postgres {
        schema: String,
        role: Option<String>,
    }

    impl Postgres {
        fn new() -> Postgres {
            Postgres {
                schema: format!("test_{}", random_hex()),
                role: None,
            }
        }

        /// The `application_name` of the server's listener connection.
        fn listener_name(&self) -> String {
            format!("tower-api-key listener {}", self.schema)
        }

        async fn admin(&self) -> PgConnection {
            PgConnection::connect_with(&connect_options())
                .await
                .unwrap()
        }

        /// Runs `sql` as the superuser.
        async fn admin_sql(&self, sql: &str) {
            let mut conn = self.admin().await;
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }

        /// Ends the server's listener connection from the server side; fails unless there was
        /// exactly one.
        async fn terminate_listener(&self) {
            let mut conn = self.admin().await;
            let terminated: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
            )
            .bind(self.listener_name())
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert_eq!(terminated, [true], "one listener connection, terminated");
            conn.close().await.unwrap();
        }
    }

    impl Drop for Postgres {
        fn drop(&mut self) {
            let mut statements = vec![format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema)];
            if let Some(role) = &self.role {
                // The role's sessions first: a role with sessions cannot be dropped. Its name is
                // the test's own, made of letters, digits and underscores.
                statements.push(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
                ));
                statements.push(format!("DROP ROLE IF EXISTS \"{role}\""));
            }
            crate::pg::clean_up(url(), statements);
        }
    }

    #[async_trait]
    impl Database for Postgres {
        type Store = PostgresStore;
        const NAME: &'static str = "postgres";

        async fn two_processes() -> Option<(Self, PostgresStore, PostgresStore)> {
            if !available().await {
                return None;
            }
            let db = Postgres::new();
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect_options().application_name(&db.schema))
                .await
                .unwrap();
            let server = PostgresStore::from_pool(pool, om()).with_schema(&db.schema);
            server.migrate().await.unwrap();
            let tool = PostgresStore::connect_recorded(&url(), &db.schema)
                .await
                .unwrap();
            Some((db, server, tool))
        }

        fn watcher(store: &PostgresStore) -> &Watcher {
            store.watcher()
        }

        fn keys(&self) -> String {
            format!("\"{}\".api_keys", self.schema)
        }

        fn now() -> String {
            "now()".to_owned()
        }

        fn bytes(bytes: &[u8]) -> String {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("decode('{hex}', 'hex')")
        }

        fn empty_table(&self) -> String {
            // The usage counts refer to the keys: PostgreSQL empties both together or neither.
            format!("TRUNCATE {} CASCADE", self.keys())
        }

        fn replace_row(&self, columns: &[&str], values: &[String]) -> String {
            let updates = columns[1..]
                .iter()
                .map(|column| format!("{column} = excluded.{column}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {updates}",
                self.keys(),
                columns.join(", "),
                values.join(", ")
            )
        }

        async fn execute(&self, sql: &str) -> u64 {
            let mut conn = self.admin().await;
            let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            done.rows_affected()
        }

        async fn execute_and_roll_back(&self, sql: &str) -> u64 {
            let mut conn = self.admin().await;
            let mut tx = conn.begin().await.unwrap();
            let done = sqlx::query(sql).execute(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            conn.close().await.unwrap();
            done.rows_affected()
        }

        async fn announcements(&self) -> Box<dyn Announcements> {
            let mut listener = PgListener::connect(&url()).await.unwrap();
            listener.listen("tower_api_key").await.unwrap();
            Box::new(Notifications {
                listener,
                schema: self.schema.clone(),
            })
        }
    }

    /// The test's own `LISTEN tower_api_key`, keeping what is about its schema (the other tests
    /// notify on the same channel).
    struct Notifications {
        listener: PgListener,
        schema: String,
    }

    #[async_trait]
    impl Announcements for Notifications {
        async fn until(&mut self, marker: &KeyDigest) -> Vec<String> {
            let mut seen = Vec::new();
            loop {
                let notification = tokio::time::timeout(CEILING, self.listener.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no notification of the marker; saw {seen:?}"))
                    .unwrap();
                let Some((message, schema)) = notification.payload().split_once(' ') else {
                    panic!("not a payload of the trigger: {:?}", notification.payload());
                };
                if schema != self.schema {
                    continue;
                }
                let message = message.strip_prefix("key:").unwrap_or(message).to_owned();
                let done = message == marker.to_hex();
                seen.push(message);
                if done {
                    return seen;
                }
            }
        }
    }

    rules!(Postgres);

    async fn serve(server: &PostgresStore) -> App {
        super::rules::serve::<Postgres>(server).await
    }

    /// The server ends the listener's connection (an administrator, a failover, an idle
    /// timeout): the watcher reports the loss, empties the cache, keeps the layer serving,
    /// subscribes again, and changes made afterwards arrive as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_killed_by_the_server_is_reported_and_replaced() {
        let Some((db, server, tool)) = Postgres::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve(&server).await;
        app.warm(&key).await;
        let mut health = server.watcher().health_changes();
        let ChannelHealth::Connected { since: first, .. } = server.watcher().health() else {
            panic!("not connected: {}", server.watcher().health());
        };

        db.terminate_listener().await;
        let lost = wait_health(&mut health, "lost", CEILING, is_lost).await;
        eprintln!("postgres: {lost}");
        // Emptied: the key is looked up again, and still accepted.
        assert_eq!(app.layer.cache_stats().entries, 0);
        let calls = app.resolver_calls();
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(app.resolver_calls(), calls + 1);

        let connected = wait_health(
            &mut health,
            "connected",
            CEILING,
            ChannelHealth::is_connected,
        )
        .await;
        let ChannelHealth::Connected { since, .. } = connected else {
            unreachable!()
        };
        assert!(since > first, "a new subscription");
        assert_eq!(app.status(&key).await, StatusCode::OK);

        // The new subscription carries changes.
        app.warm(&key).await;
        tool.revoke(&id).await.unwrap();
        let took = app.until_refused(&key).await;
        eprintln!("postgres: revoke honoured {took:?} after it, on the new listener");
        assert!(took < PROMPTLY, "{took:?}");
    }

    /// The listener cannot reconnect for a while (its role may not log in; the serving pool's
    /// connections, made before, keep working): the watcher keeps trying without spinning, the
    /// layer serves from its cache within the time-to-live, and a revocation made in that window
    /// is honoured as soon as the listener is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_made_while_the_listener_cannot_reconnect_are_honoured_once_it_does() {
        if !available().await {
            return;
        }
        let mut db = Postgres::new();
        let role = format!("test_role_{}", random_hex());
        db.role = Some(role.clone());
        // The tool, as the superuser, creates the tables; the server only reads them.
        let tool = PostgresStore::connect(&url(), om())
            .await
            .unwrap()
            .with_schema(&db.schema);
        tool.migrate().await.unwrap();
        db.admin_sql(&format!(
            "CREATE ROLE \"{role}\" LOGIN; \
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\"; \
             GRANT SELECT ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\"",
            schema = db.schema
        ))
        .await;
        // Connections that are never recycled: made now, they outlive the role's NOLOGIN.
        let pool = PgPoolOptions::new()
            .min_connections(2)
            .max_connections(2)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(
                connect_options()
                    .username(&role)
                    .application_name(&db.schema),
            )
            .await
            .unwrap();
        {
            let (first, second) = tokio::join!(pool.acquire(), pool.acquire());
            drop((first.unwrap(), second.unwrap()));
        }
        let server = PostgresStore::from_pool(pool, om()).with_schema(&db.schema);
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve(&server).await;
        app.warm(&key).await;
        let mut health = server.watcher().health_changes();

        db.admin_sql(&format!("ALTER ROLE \"{role}\" NOLOGIN"))
            .await;
        db.terminate_listener().await;
        let lost = wait_health(&mut health, "lost", CEILING, is_lost).await;
        let ChannelHealth::Lost { since: first, .. } = lost else {
            unreachable!()
        };
        // Served, from the store (the cache was emptied), then from the cache.
        let calls = app.resolver_calls();
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(app.resolver_calls(), calls + 1);
        app.warm(&key).await;

        // Revoked while the listener is away: the notification reaches nobody.
        tool.revoke(&id).await.unwrap();
        let calls = app.resolver_calls();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let health_now = server.watcher().health();
        eprintln!("postgres: after 2 s without a listener: {health_now}");
        let ChannelHealth::Lost {
            since, attempts, ..
        } = health_now
        else {
            panic!("the listener is back while its role may not log in: {health_now}");
        };
        assert_eq!(since, first, "one loss, however many attempts");
        assert!((3..=8).contains(&attempts), "{attempts} attempts in 2 s");
        // The documented bound with the channel down: the cache's time-to-live.
        assert_eq!(app.status(&key).await, StatusCode::OK);
        assert_eq!(app.resolver_calls(), calls, "served from cache");

        db.admin_sql(&format!("ALTER ROLE \"{role}\" LOGIN")).await;
        // The pauses grow to 5 s at most.
        wait_health(
            &mut health,
            "connected",
            Duration::from_secs(10),
            ChannelHealth::is_connected,
        )
        .await;
        // At once: the watcher emptied the cache before it said it was connected.
        assert_eq!(app.status(&key).await, StatusCode::UNAUTHORIZED);
    }

    /// The trigger compares whole rows but for `last_used_at`: a column added by a later
    /// migration is covered without touching it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_to_a_column_added_later_is_announced_too() {
        let Some((db, server, tool)) = Postgres::two_processes().await else {
            return;
        };
        let (id, key) = new_key(&tool, "Webhook Server").await;
        let app = serve(&server).await;
        app.warm(&key).await;
        db.execute(&format!("ALTER TABLE {} ADD COLUMN note TEXT", db.keys()))
            .await;
        let mut announced = db.announcements().await;
        db.execute(&format!(
            "UPDATE {} SET note = 'moved to the new account' WHERE id = {}",
            db.keys(),
            quote(id.as_str())
        ))
        .await;
        assert_eq!(
            announced.until(&key.digest()).await,
            [key.digest().to_hex()]
        );
    }
}
