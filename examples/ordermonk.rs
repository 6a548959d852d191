//! OrderMonk: a small commerce API protected by `tower-api-key`.
//!
//! This is the crate's main demo. In one file it shows what a service built on the crate looks
//! like:
//!
//! - one `ApiKeyLayer` around the whole router, backed by a key store that keeps only digests;
//! - every scope declared once as a constant, and each route requiring its scope with
//!   `RequireScopes`, so a misspelt scope is a compile error;
//! - handlers that take the `Principal` and choose live or sandbox data from the key's
//!   environment, so an `om_test_` key can never change live data;
//! - keys kept in a database (a SQLite file, or PostgreSQL), created on the first start and
//!   shown exactly once;
//! - usage per key, counted by the layer in memory and written to the same database in batches
//!   (`GET /v1/me/usage` shows a key its own), and metrics in the Prometheus text format on an
//!   address of their own;
//! - the ready-made Settings → API page and its admin API (`tower_api_key::admin`), mounted at
//!   `/settings/api` behind the demo's own sign-in, as a platform mounts it behind its login.
//!
//! # Running it
//!
//! ```text
//! cargo run --example ordermonk
//! ```
//!
//! The keys live in the SQLite file `ordermonk.db` in the current directory (set `ORDERMONK_DB`
//! for another path), or in PostgreSQL when `DATABASE_URL` is set and the example is built with
//! `--features postgres` (in the schema `ordermonk`, or `ORDERMONK_SCHEMA`). On a database with
//! no keys, the server creates three keys for a demo account and prints each of them once with
//! `curl` lines to try; on later starts it says how many keys there are, and the keys printed the
//! first time keep working. It listens on `127.0.0.1:3000`. Set `ORDERMONK_ADDR` to listen
//! elsewhere (`127.0.0.1:0` picks a free port), `ORDERMONK_CACHE_TTL` to cache found keys for
//! that many seconds instead of the crate's default 30, and `RUST_LOG` to change the logging,
//! which goes to stderr (default: `info,tower_api_key=debug`). Stop it with Ctrl-C: the server
//! finishes the requests in flight, then writes the usage counts it holds before it exits.
//!
//! # Usage and metrics
//!
//! The layer counts each key's requests per day and outcome (allowed, insufficient scope,
//! revoked, expired) in memory and writes them to the key database every 10 seconds (set
//! `ORDERMONK_USAGE_FLUSH_MS` for another interval) and on Ctrl-C; a key's `last_used_at` at
//! most once a minute. `GET /v1/me/usage` shows the calling key its last seven days.
//!
//! Metrics (requests by outcome and environment, cache hits, misses and entries, resolver
//! latency and errors, usage flushes, the watch for changes) are served in the Prometheus text
//! format at `http://127.0.0.1:9100/metrics`, with no key: set `ORDERMONK_METRICS_ADDR` to serve
//! them elsewhere (`127.0.0.1:0` picks a free port), or to `off`. The banner says where.
//!
//! The command-line tool manages the same keys while the server runs:
//!
//! ```text
//! cargo run --features cli --bin tower-api-key -- create --name "My integration" \
//!     --owner acct_ordermonk_demo --scope products:read
//! cargo run --features cli --bin tower-api-key -- list
//! cargo run --features cli --bin tower-api-key -- revoke key_…
//! ```
//!
//! A key it creates works at once, and one it revokes, deletes or rotates is refused on the
//! next request, although the tool is another process and the server caches keys: the change
//! is recorded in the same transaction, and the server hears of it within milliseconds
//! (PostgreSQL `LISTEN`/`NOTIFY`) or reads it from the SQLite file every 100 ms (set
//! `ORDERMONK_POLL_MS` for another interval), then drops its cached copy. The tool returns once
//! a server watching with the default settings has had time to see the change. Several servers
//! on one PostgreSQL schema behave the same: a key revoked through any of them, through the
//! tool, or with plain SQL is refused by all of them. `GET /health` (no key needed) shows how
//! the server's watch for such changes is doing.
//!
//! # Rate limits
//!
//! The read-only dashboard key is held to 10 requests a second with a burst of 20. Each instance
//! counts on its own, unless `ORDERMONK_REDIS_URL` names a Redis (build with `--features redis`):
//! then every instance using it shares one bucket per key, as instances behind a load balancer
//! must.
//!
//! # Settings → API
//!
//! The page where the demo account's people manage its keys (generate, list, revoke, rotate, see
//! usage and the audit trail) is at `http://127.0.0.1:3000/settings/api`. The crate never owns
//! the login, so the demo has a minimal one: sign in at `/login` with the password printed at
//! start-up (a new random one on every start, or `ORDERMONK_DEMO_PASSWORD`), which sets an
//! `HttpOnly`, `SameSite=Strict` session cookie kept in memory; `POST /logout` ends it. The
//! demo's middleware tells the admin router who is signed in (`AdminIdentity`: the account
//! `acct_ordermonk_demo`, the actor `demo@ordermonk.test`). Neither needs an API key.
//!
//! # Routes
//!
//! | route | scope |
//! |---|---|
//! | `GET /v1/products`, `GET /v1/products/{sku}` | `products:read` |
//! | `POST /v1/products`, `DELETE /v1/products/{sku}` | `products:write` |
//! | `GET /v1/inventory` | `inventory:read` |
//! | `PUT /v1/inventory/{sku}` | `inventory:write` |
//! | `GET /v1/orders` | `orders:read` |
//! | `GET /v1/keywords`, `GET /v1/keywords/suggestions` | `keywords:read` |
//! | `POST /v1/keywords/suggestions/{id}/accept` | `keywords:write` |
//! | `GET /v1/analytics` | `analytics:read` |
//! | `GET /v1/me`, `GET /v1/me/usage` | any valid key |
//!
//! A request without a key gets `401`, one with a key that is unknown, revoked or expired gets
//! `401 invalid_token`, and one with a key that lacks the route's scope gets
//! `403 insufficient_scope`.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{OriginalUri, Path, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_api_key::admin::{AdminIdentity, AdminRouter};
use tower_api_key::{
    Actor, ApiKeyLayer, ApiKeyLayerBuilder, ChannelHealth, CreatedKey, Day, Environment, KeyFormat,
    KeyStore, NewKey, Principal, RequireScopes, SqliteStore, StoreError, UsageSettings,
};
use tracing_subscriber::EnvFilter;

/// The scopes of the OrderMonk API, declared once.
///
/// `Scope::from_static` checks each name when the program is compiled, and routes and keys use
/// these constants, so a misspelt scope does not compile.
mod scopes {
    use tower_api_key::Scope;

    pub const PRODUCTS_READ: Scope = Scope::from_static("products:read");
    pub const PRODUCTS_WRITE: Scope = Scope::from_static("products:write");
    pub const INVENTORY_READ: Scope = Scope::from_static("inventory:read");
    pub const INVENTORY_WRITE: Scope = Scope::from_static("inventory:write");
    pub const ORDERS_READ: Scope = Scope::from_static("orders:read");
    pub const KEYWORDS_READ: Scope = Scope::from_static("keywords:read");
    pub const KEYWORDS_WRITE: Scope = Scope::from_static("keywords:write");
    pub const ANALYTICS_READ: Scope = Scope::from_static("analytics:read");

    /// Every scope, for keys with full access.
    pub const ALL: [Scope; 8] = [
        PRODUCTS_READ,
        PRODUCTS_WRITE,
        INVENTORY_READ,
        INVENTORY_WRITE,
        ORDERS_READ,
        KEYWORDS_READ,
        KEYWORDS_WRITE,
        ANALYTICS_READ,
    ];

    /// Every scope with what it grants, as the Settings → API page shows them.
    pub const DESCRIBED: [(Scope, &str); 8] = [
        (PRODUCTS_READ, "View products and catalog data"),
        (PRODUCTS_WRITE, "Create, update, delete products"),
        (INVENTORY_READ, "View inventory levels"),
        (INVENTORY_WRITE, "Update inventory levels"),
        (ORDERS_READ, "View orders"),
        (KEYWORDS_READ, "View keyword data and suggestions"),
        (KEYWORDS_WRITE, "Act on keyword suggestions"),
        (ANALYTICS_READ, "View reports and analytics"),
    ];

    /// The scopes that only read, for dashboards and reports.
    pub const READ_ONLY: [Scope; 5] = [
        PRODUCTS_READ,
        INVENTORY_READ,
        ORDERS_READ,
        KEYWORDS_READ,
        ANALYTICS_READ,
    ];
}

/// The account that owns the demo keys.
const OWNER: &str = "acct_ordermonk_demo";
/// The SQLite file that keeps the keys unless `ORDERMONK_DB` says otherwise.
const DEFAULT_DB: &str = "ordermonk.db";
/// Where the server listens unless `ORDERMONK_ADDR` says otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:3000";
/// How many days the demo's sandbox key lives.
const SANDBOX_KEY_DAYS: u64 = 30;
/// Where the metrics are served unless `ORDERMONK_METRICS_ADDR` says otherwise.
const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9100";
/// How many days `GET /v1/me/usage` shows, today included.
const USAGE_DAYS: i32 = 7;
/// The rate the read-only dashboard key is held to: a dashboard polls, it does not hammer.
const DASHBOARD_RATE: &str = "10/s burst 20";
/// Where the Settings → API page and its admin API are mounted.
const ADMIN_PATH: &str = "/settings/api";
/// The person signed in to the demo's Settings → API page.
const DEMO_ACTOR: &str = "demo@ordermonk.test";

#[tokio::main]
async fn main() {
    init_tracing();
    // Before the layer is built: the layer takes its metric handles from the recorder installed
    // when it is built.
    let metrics = install_metrics_recorder();

    let format = KeyFormat::new("om").expect("`om` is a valid key prefix");
    let (store, location, watch) = key_store(&format).await;

    let mut builder = ApiKeyLayer::builder(store.clone()).realm("OrderMonk API");
    if let Some(ttl) = cache_ttl() {
        builder = builder.cache_ttl(ttl);
    }
    let flush_every = usage_flush_interval().unwrap_or(Duration::from_secs(10));
    builder = builder.usage(UsageSettings::new().flush_interval(flush_every));
    let (builder, rates) = shared_rates(builder);
    // Kept, to write the usage counts on shutdown.
    let layer = builder.build();
    let sessions = Sessions::new();
    let app = routes()
        .with_state(Shops::seeded())
        .route("/v1/me/usage", get(my_usage).with_state(store.clone()))
        .layer(layer.clone())
        // Added after the layer, so that they need no key.
        .route("/health", get(health).with_state(watch.clone()))
        .merge(settings_api(store.clone(), sessions.clone()));

    let addr = std::env::var("ORDERMONK_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|err| panic!("cannot listen on {addr}: {err}"));
    let local = listener
        .local_addr()
        .expect("a bound listener has a local address");

    let existing = store
        .list(None)
        .await
        .unwrap_or_else(|err| fail(&format!("cannot list the keys in {location}: {err}")));
    if existing.is_empty() {
        let keys = create_demo_keys(&*store).await;
        print_keys(&keys, &format!("http://{local}"));
        // The plaintexts are not needed any more; dropping them zeroizes them.
        drop(keys);
    } else {
        print_existing_keys(existing.len(), &location);
    }

    println!("{}", watch.described);
    println!("Health of that watch, no key needed: curl http://{local}/health");
    println!(
        "Usage: each key's requests are counted in memory and written to {location} every {} \
         and on Ctrl-C; a key sees its last {USAGE_DAYS} days at GET /v1/me/usage.",
        human(flush_every)
    );
    match serve_metrics(metrics).await {
        Ok(Some(addr)) => {
            println!("Metrics, Prometheus text format, no key needed: curl http://{addr}/metrics")
        }
        Ok(None) => println!("Metrics: not served (ORDERMONK_METRICS_ADDR=off)."),
        Err(problem) => println!("Metrics: not served: {problem}"),
    }
    println!("{rates}");
    println!(
        "Settings → API page: http://{local}{ADMIN_PATH} (sign in at http://{local}/login with \
         password {})",
        sessions.password
    );
    println!();
    println!("listening on http://{local}");
    std::io::stdout().flush().expect("stdout can be written to");
    tracing::info!(%local, "OrderMonk API started");

    // With each connection's address, which the audit trail records for changes made on the page.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .expect("the server failed");

    // No request is in flight any more: write what the layer counted since its last flush.
    match layer.flush_usage().await {
        Ok(()) => tracing::info!("usage counts written; stopped"),
        Err(err) => tracing::warn!(error = %err, "usage counts could not be written; stopped"),
    }
}

/// Rate limits decided in Redis at `ORDERMONK_REDIS_URL` (with the `redis` feature), shared by
/// every instance that uses it; otherwise each instance counts alone. Says which.
fn shared_rates(builder: ApiKeyLayerBuilder) -> (ApiKeyLayerBuilder, String) {
    let Ok(url) = std::env::var("ORDERMONK_REDIS_URL") else {
        return (
            builder,
            "Rate limits: counted in this process (ORDERMONK_REDIS_URL shares them through Redis)."
                .to_owned(),
        );
    };
    #[cfg(feature = "redis")]
    {
        use tower_api_key::{RedisDownPolicy, RedisLimiter};
        let limiter = RedisLimiter::open(&url)
            .unwrap_or_else(|err| fail(&format!("cannot use ORDERMONK_REDIS_URL: {err}")));
        (
            builder.shared_rate_limiter(limiter, RedisDownPolicy::Local),
            "Rate limits: shared through Redis (ORDERMONK_REDIS_URL) by every instance using it; \
             while Redis cannot answer, each instance counts alone."
                .to_owned(),
        )
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        fail("ORDERMONK_REDIS_URL needs the `redis` feature: cargo run --features redis --example ordermonk")
    }
}

/// The Prometheus recorder, installed for the whole process; its handle renders the text format.
fn install_metrics_recorder() -> PrometheusHandle {
    let lookups = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        3.0,
    ];
    PrometheusBuilder::new()
        // Resolver latency as a histogram with buckets, rather than the exporter's summary.
        .set_buckets_for_metric(
            Matcher::Full(tower_api_key::metrics::RESOLVER_DURATION.to_owned()),
            &lookups,
        )
        .expect("the buckets are not empty")
        .install_recorder()
        .expect("no other metrics recorder is installed")
}

/// Serves `GET /metrics` at `ORDERMONK_METRICS_ADDR`: the address it listens on, `None` when
/// turned off, or why it could not.
async fn serve_metrics(metrics: PrometheusHandle) -> Result<Option<std::net::SocketAddr>, String> {
    let addr =
        std::env::var("ORDERMONK_METRICS_ADDR").unwrap_or_else(|_| DEFAULT_METRICS_ADDR.to_owned());
    if addr == "off" {
        return Ok(None);
    }
    // Another program (node_exporter likes 9100) may hold the address: the API runs anyway.
    let listener = TcpListener::bind(&addr).await.map_err(|err| {
        format!("cannot listen on {addr} ({err}); set ORDERMONK_METRICS_ADDR to another address")
    })?;
    let local = listener
        .local_addr()
        .map_err(|err| format!("no local address: {err}"))?;
    // The exporter's histograms drain on upkeep.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || async move {
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                metrics.render(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "the metrics server stopped");
        }
    });
    Ok(Some(local))
}

/// `10 s`, or `250 ms` for what is not whole seconds.
fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && !duration.is_zero() {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// `ORDERMONK_USAGE_FLUSH_MS`, in milliseconds, if set.
fn usage_flush_interval() -> Option<Duration> {
    let millis = std::env::var("ORDERMONK_USAGE_FLUSH_MS").ok()?;
    match millis.parse() {
        Ok(millis) => Some(Duration::from_millis(millis)),
        Err(_) => fail("ORDERMONK_USAGE_FLUSH_MS must be a whole number of milliseconds"),
    }
}

/// Logs to stderr, filtered by `RUST_LOG`. The crate logs key ids, never keys.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_api_key=debug"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `ORDERMONK_POLL_MS`, in milliseconds, if set.
fn poll_interval() -> Option<Duration> {
    let millis = std::env::var("ORDERMONK_POLL_MS").ok()?;
    match millis.parse() {
        Ok(millis) => Some(Duration::from_millis(millis)),
        Err(_) => fail("ORDERMONK_POLL_MS must be a whole number of milliseconds"),
    }
}

/// `ORDERMONK_CACHE_TTL`, in seconds, if set.
fn cache_ttl() -> Option<Duration> {
    let seconds = std::env::var("ORDERMONK_CACHE_TTL").ok()?;
    match seconds.parse() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => fail("ORDERMONK_CACHE_TTL must be a whole number of seconds"),
    }
}

/// Where the keys live, and how to say it to people: a description (never the URL, which may
/// hold a password), and the options that point the command-line tool at it. PostgreSQL when
/// `DATABASE_URL` is set, otherwise the SQLite file `ORDERMONK_DB`. The tables are created or
/// updated on the way.
async fn key_store(format: &KeyFormat) -> (Arc<dyn KeyStore>, Location, Watch) {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        #[cfg(feature = "postgres")]
        return postgres_store(format, &url).await;
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            eprintln!(
                "WARNING: DATABASE_URL is set, but this build has no PostgreSQL support, so the \
                 keys go to a SQLite file instead. Run with `--features postgres` to use \
                 PostgreSQL, or unset DATABASE_URL to silence this warning."
            );
        }
    }
    let path = std::env::var("ORDERMONK_DB").unwrap_or_else(|_| DEFAULT_DB.to_owned());
    let location = Location {
        description: format!("the SQLite file {path}"),
        // The tool's default file is the demo's; a `--db` also wins over a `DATABASE_URL` this
        // build could not use.
        cli_options: if path == DEFAULT_DB && std::env::var_os("DATABASE_URL").is_none() {
            String::new()
        } else {
            format!(" --db {}", shell_quoted(&path))
        },
    };
    let mut store = SqliteStore::open(&path, format.clone())
        .await
        .unwrap_or_else(|err| fail(&format!("cannot open {location}: {err}")));
    let every = poll_interval().unwrap_or(Duration::from_millis(100));
    store = store.with_poll_interval(every);
    store
        .migrate()
        .await
        .unwrap_or_else(|err| fail(&format!("cannot create the tables in {location}: {err}")));
    let watch = Watch {
        described: format!(
            "Revocations: a key revoked, deleted or rotated by the tool or another process is \
             refused on the next request (this server reads the changes every {} ms).",
            every.as_millis()
        ),
        store: Arc::new(store.clone()),
    };
    (Arc::new(store), location, watch)
}

/// The store's watch for changes made by other processes, for `GET /health` and the banner.
#[derive(Clone)]
struct Watch {
    described: String,
    store: Arc<dyn Watched>,
}

/// A store whose watch can be asked how it is doing.
trait Watched: Send + Sync {
    fn health(&self) -> ChannelHealth;
}

impl<DB: tower_api_key::SqlDatabase> Watched for tower_api_key::SqlStore<DB> {
    fn health(&self) -> ChannelHealth {
        self.watcher().health()
    }
}

/// `GET /health`: whether changes made by other processes reach this server's cache now.
async fn health(State(watch): State<Watch>) -> Json<serde_json::Value> {
    let health = watch.store.health();
    let mut body = serde_json::json!({ "invalidations": health.as_str() });
    if let ChannelHealth::Lost {
        error, attempts, ..
    } = &health
    {
        body["error"] = error.to_string().into();
        body["attempts"] = (*attempts).into();
    }
    Json(body)
}

/// Where the keys live, for people.
struct Location {
    /// Such as "the SQLite file ordermonk.db"; never a URL, which may hold a password.
    description: String,
    /// The options of `tower-api-key` that point it at the same store, each after a space.
    cli_options: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// `text` quoted for a POSIX shell, if it needs quoting.
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(feature = "postgres")]
async fn postgres_store(format: &KeyFormat, url: &str) -> (Arc<dyn KeyStore>, Location, Watch) {
    let schema = std::env::var("ORDERMONK_SCHEMA").unwrap_or_else(|_| "ordermonk".to_owned());
    let location = Location {
        description: format!("PostgreSQL (DATABASE_URL), schema {schema}"),
        // The tool reads DATABASE_URL too, and its default schema is the demo's.
        cli_options: if schema == "ordermonk" {
            String::new()
        } else {
            format!(" --schema {}", shell_quoted(&schema))
        },
    };
    let store = tower_api_key::PostgresStore::connect(url, format.clone())
        .await
        .unwrap_or_else(|err| fail(&format!("cannot connect to {location}: {err}")))
        .with_schema(schema);
    store
        .migrate()
        .await
        .unwrap_or_else(|err| fail(&format!("cannot create the tables in {location}: {err}")));
    let watch = Watch {
        described: "Revocations: a key revoked, deleted or rotated by the tool, another instance \
                    or plain SQL is refused on the next request (this server LISTENs for changes)."
            .to_owned(),
        store: Arc::new(store.clone()),
    };
    (Arc::new(store), location, watch)
}

/// Stops the program with `message`: a start-up problem the user has to fix.
fn fail(message: &str) -> ! {
    eprintln!("ordermonk: {message}");
    std::process::exit(1)
}

/// Waits for Ctrl-C, then lets the server finish the requests in flight.
async fn shutdown_signal() {
    tokio::signal::ctrl_c()
        .await
        .expect("a Ctrl-C handler can be installed");
    tracing::info!("Ctrl-C received, shutting down");
}

// ---------------------------------------------------------------------------------------------
// Settings → API: the crate's admin router, behind the demo's own sign-in
// ---------------------------------------------------------------------------------------------

/// The Settings → API page and its admin API at [`ADMIN_PATH`], behind the demo's sign-in, and
/// the sign-in itself. None of it needs an API key: people sign in, programs use keys.
fn settings_api(store: Arc<dyn KeyStore>, sessions: Sessions) -> Router {
    let mut admin = AdminRouter::new(store);
    for (scope, grants) in scopes::DESCRIBED {
        admin = admin.grant(scope, grants);
    }
    let admin: Router = admin
        .environments([Environment::Live, Environment::Test])
        .build();
    Router::new()
        .route("/login", get(login_page).post(sign_in))
        .route("/logout", post(sign_out))
        .route("/login.css", get(login_css))
        // The banner's address, with its slash, leads to the page too.
        .route(
            &format!("{ADMIN_PATH}/"),
            get(|| async { Redirect::to(ADMIN_PATH) }),
        )
        .with_state(sessions.clone())
        .nest(
            ADMIN_PATH,
            admin.layer(middleware::from_fn_with_state(sessions, require_sign_in)),
        )
}

/// The name of the demo's session cookie.
const SESSION_COOKIE: &str = "ordermonk_session";
/// The page's policy, for the sign-in page too: nothing inline, nothing from elsewhere.
const CSP: &str = tower_api_key::admin::CONTENT_SECURITY_POLICY;

/// The demo's password and its signed-in sessions, in memory: a restart signs everyone out.
#[derive(Clone)]
struct Sessions {
    password: Arc<str>,
    tokens: Arc<Mutex<HashSet<String>>>,
}

impl Sessions {
    /// `ORDERMONK_DEMO_PASSWORD` if set (for tests), otherwise a new random password.
    fn new() -> Self {
        let password = std::env::var("ORDERMONK_DEMO_PASSWORD")
            .ok()
            .filter(|password| !password.is_empty())
            .unwrap_or_else(|| random_text(9));
        Sessions {
            password: password.into(),
            tokens: Arc::default(),
        }
    }

    fn tokens(&self) -> MutexGuard<'_, HashSet<String>> {
        // Inserting or removing a string cannot leave the set half-changed.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the request's session cookie names a signed-in session.
    fn signed_in(&self, headers: &HeaderMap) -> bool {
        session_token(headers).is_some_and(|token| self.tokens().contains(token))
    }
}

/// `bytes` random bytes as lowercase hex, from the operating system's CSPRNG.
fn random_text(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).unwrap_or_else(|err| fail(&format!("no randomness: {err}")));
    random.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value of the session cookie, if the request has one.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| {
            let (name, value) = cookie.trim().split_once('=')?;
            (name == SESSION_COOKIE).then_some(value)
        })
}

/// In front of the admin router: a signed-in request goes on with the demo's identity; any
/// other is sent to `/login` (the page) or refused with `401` (the JSON API).
async fn require_sign_in(
    State(sessions): State<Sessions>,
    mut request: Request,
    next: Next,
) -> Response {
    if sessions.signed_in(request.headers()) {
        // The router records the connection's address with each change (`ConnectInfo`).
        request
            .extensions_mut()
            .insert(AdminIdentity::new(OWNER, Actor::new(DEMO_ACTOR)));
        return next.run(request).await;
    }
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(request.uri().path(), |original| original.path());
    if path.starts_with(&format!("{ADMIN_PATH}/v1/")) {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "Sign in at /login first.",
        });
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
    }
    Redirect::to("/login").into_response()
}

/// `GET /login`: the sign-in form.
async fn login_page() -> Response {
    login_form(StatusCode::OK, "")
}

/// The body of `POST /login`.
#[derive(Deserialize)]
struct SignIn {
    password: String,
}

/// `POST /login`: with the right password, a new session and the page; otherwise the form again.
async fn sign_in(State(sessions): State<Sessions>, Form(form): Form<SignIn>) -> Response {
    use subtle::ConstantTimeEq;
    let right: bool = form
        .password
        .as_bytes()
        .ct_eq(sessions.password.as_bytes())
        .into();
    if !right {
        return login_form(
            StatusCode::UNAUTHORIZED,
            r#"<p class="error" role="alert">Wrong password: it is printed when the demo starts.</p>"#,
        );
    }
    let token = random_text(32);
    sessions.tokens().insert(token.clone());
    // No `Secure`: the demo serves plain HTTP on loopback. A real platform serves HTTPS and adds it.
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to(ADMIN_PATH)).into_response()
}

/// `POST /logout`: ends the session, and back to the sign-in form.
async fn sign_out(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        sessions.tokens().remove(token);
    }
    let expired = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, expired)], Redirect::to("/login")).into_response()
}

/// The sign-in page, with `notice` (trusted HTML, never from the request) above the form.
fn login_form(status: StatusCode, notice: &str) -> Response {
    let html = LOGIN_HTML.replace("<!-- notice -->", notice);
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn login_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        LOGIN_CSS,
    )
}

const LOGIN_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · OrderMonk demo</title>
<link rel="stylesheet" href="/login.css">
</head>
<body>
<main>
  <h1>OrderMonk demo</h1>
  <p>Sign in to manage the demo account's API keys under Settings → API.</p>
  <!-- notice -->
  <form method="post" action="/login">
    <label for="password">Password</label>
    <input id="password" name="password" type="password" required autofocus
           autocomplete="current-password">
    <button id="sign-in" type="submit">Sign in</button>
  </form>
  <p class="hint">The demo prints its password when it starts (or set ORDERMONK_DEMO_PASSWORD).</p>
</main>
</body>
</html>
"#;

const LOGIN_CSS: &str = "\
body { margin: 0; font-family: system-ui, sans-serif; background: #f4f6f9; color: #1d2330; }
main { max-width: 24rem; margin: 4rem auto; padding: 1.5rem; background: #fff;
  border: 1px solid #d9dee7; border-radius: 8px; }
h1 { font-size: 1.4rem; margin-top: 0; }
label { display: block; font-weight: 600; margin-bottom: 0.25rem; }
input { font: inherit; width: 100%; box-sizing: border-box; padding: 0.45rem 0.6rem;
  border: 1px solid #9aa3b2; border-radius: 6px; margin-bottom: 0.75rem; }
button { font: inherit; padding: 0.45rem 1rem; border-radius: 6px; border: 1px solid #2454d6;
  background: #2454d6; color: #fff; font-weight: 600; cursor: pointer; }
:focus-visible, input:focus, button:focus { outline: 3px solid #ffb020; outline-offset: 2px; }
.error { color: #b3261e; font-weight: 600; }
.hint { color: #5b6475; font-size: 0.9rem; }
";

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The demo account's keys, as created: the only time their plaintexts exist.
struct DemoKeys {
    production: CreatedKey,
    dashboard: CreatedKey,
    sandbox: CreatedKey,
}

/// Creates the demo account's keys, each with only the scopes its integration needs.
async fn create_demo_keys(store: &dyn KeyStore) -> DemoKeys {
    let create = |new: NewKey| async move {
        store
            .create(new.owner(OWNER))
            .await
            .expect("the demo keys have valid names and expiries")
    };
    DemoKeys {
        production: create(NewKey::new("Production", Environment::Live).scopes(scopes::ALL)).await,
        dashboard: create(
            NewKey::new("Read-only dashboard", Environment::Live)
                .scopes(scopes::READ_ONLY)
                .rate_limit(
                    DASHBOARD_RATE
                        .parse()
                        .expect("the dashboard's rate is written correctly"),
                ),
        )
        .await,
        sandbox: create(
            NewKey::new("Sandbox", Environment::Test)
                .scopes(scopes::ALL)
                .expires_at(
                    SystemTime::now() + Duration::from_secs(SANDBOX_KEY_DAYS * 24 * 60 * 60),
                ),
        )
        .await,
    }
}

/// Shows each key once, with `curl` lines to try against the server at `base`.
fn print_keys(keys: &DemoKeys, base: &str) {
    println!();
    println!("OrderMonk demo API: three keys for account {OWNER}");
    println!();
    println!("WARNING: each key is shown once, here, and cannot be shown again: the server keeps");
    println!("only its SHA-256 digest. Copy the keys you want to use now.");

    let production = &keys.production;
    print_key(production, "live, all scopes");
    println!(
        "  curl -s {base}/v1/products -H 'Authorization: Bearer {}'",
        production.key.expose_secret()
    );

    let dashboard = &keys.dashboard;
    print_key(
        dashboard,
        &format!(
            "live, read-only: {}; rate limit {DASHBOARD_RATE}",
            dashboard.stored.record.scopes
        ),
    );
    println!(
        "  curl -s {base}/v1/orders -H 'Authorization: Bearer {}'",
        dashboard.key.expose_secret()
    );
    println!("  # no products:write, so this write gets 403 insufficient_scope:");
    println!(
        "  curl -si -X POST {base}/v1/products -H 'Authorization: Bearer {}' \
         -H 'Content-Type: application/json' \
         -d '{{\"sku\":\"PEN-007\",\"name\":\"Gel Pen\",\"price_cents\":350}}'",
        dashboard.key.expose_secret()
    );
    println!(
        "  # rate-limited to {DASHBOARD_RATE}: of 30 requests at once, the last ones get 429 \
         Too Many Requests (see Retry-After and RateLimit):"
    );
    println!(
        "  for i in $(seq 30); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/v1/orders \
         -H 'Authorization: Bearer {}'; done; echo",
        dashboard.key.expose_secret()
    );
    println!("  # what this key did, day by day (written every few seconds):");
    println!(
        "  curl -s {base}/v1/me/usage -H 'Authorization: Bearer {}'",
        dashboard.key.expose_secret()
    );

    let sandbox = &keys.sandbox;
    print_key(
        sandbox,
        &format!("test, all scopes, sandbox data only, expires in {SANDBOX_KEY_DAYS} days"),
    );
    println!(
        "  curl -s {base}/v1/products -H 'Authorization: Bearer {}'",
        sandbox.key.expose_secret()
    );
    println!();
}

/// What a start on a database that has keys says instead of printing keys: how many there are,
/// and how to make more. Keys are shown only when they are created.
fn print_existing_keys(count: usize, location: &Location) {
    let keys = if count == 1 { "key" } else { "keys" };
    let tool = format!(
        "cargo run --features cli --bin tower-api-key --{}",
        location.cli_options
    );
    println!();
    println!("OrderMonk demo API: {count} {keys} in {location}.");
    println!();
    println!("Each key was shown once, when it was created, and cannot be shown again: use the");
    println!("keys printed on the first start, or manage keys with the command-line tool while");
    println!("the server runs:");
    println!();
    println!("  {tool} list");
    println!("  {tool} create --name \"My integration\" --owner {OWNER} --scope products:read");
    println!("  {tool} revoke <key id>");
    println!();
    println!("Programs can use the store's API (`KeyStore::create`). Start on an empty database");
    println!("to have new demo keys printed.");
    println!();
}

/// The key's name and what it may do, then the key on a line of its own.
fn print_key(created: &CreatedKey, summary: &str) {
    println!();
    println!("Key \"{}\" ({summary})", created.stored.record.name);
    println!("  {}", created.key.expose_secret());
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

/// Every route, each requiring its scope. Paths with several methods layer each handler on its
/// own, so that each method gets its own scope.
fn routes() -> Router<Shops> {
    Router::new()
        .route(
            "/v1/products",
            get(list_products.layer(RequireScopes::all([scopes::PRODUCTS_READ])))
                .post(create_product.layer(RequireScopes::all([scopes::PRODUCTS_WRITE]))),
        )
        .route(
            "/v1/products/{sku}",
            get(get_product.layer(RequireScopes::all([scopes::PRODUCTS_READ])))
                .delete(delete_product.layer(RequireScopes::all([scopes::PRODUCTS_WRITE]))),
        )
        .route(
            "/v1/inventory",
            get(list_inventory.layer(RequireScopes::all([scopes::INVENTORY_READ]))),
        )
        .route(
            "/v1/inventory/{sku}",
            put(set_inventory.layer(RequireScopes::all([scopes::INVENTORY_WRITE]))),
        )
        .route(
            "/v1/orders",
            get(list_orders.layer(RequireScopes::all([scopes::ORDERS_READ]))),
        )
        .route(
            "/v1/keywords",
            get(list_keywords.layer(RequireScopes::all([scopes::KEYWORDS_READ]))),
        )
        .route(
            "/v1/keywords/suggestions",
            get(list_suggestions.layer(RequireScopes::all([scopes::KEYWORDS_READ]))),
        )
        .route(
            "/v1/keywords/suggestions/{id}/accept",
            post(accept_suggestion.layer(RequireScopes::all([scopes::KEYWORDS_WRITE]))),
        )
        .route(
            "/v1/analytics",
            get(analytics.layer(RequireScopes::all([scopes::ANALYTICS_READ]))),
        )
        // Any valid key may ask who it is: no scope required.
        .route("/v1/me", get(me))
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn list_products(State(shops): State<Shops>, principal: Principal) -> Json<Vec<Product>> {
    let shop = shops.for_environment(principal.environment());
    Json(shop.products.values().cloned().collect())
}

async fn get_product(
    State(shops): State<Shops>,
    principal: Principal,
    Path(sku): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let shop = shops.for_environment(principal.environment());
    let product = shop.products.get(&sku).ok_or(ApiError::UNKNOWN_SKU)?;
    Ok(Json(product.clone()))
}

async fn create_product(
    State(shops): State<Shops>,
    principal: Principal,
    Json(new): Json<NewProduct>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    if !is_valid_sku(&new.sku) {
        return Err(ApiError::Unprocessable(
            "A SKU is 1 to 32 ASCII letters, digits or hyphens.",
        ));
    }
    if new.name.trim().is_empty() {
        return Err(ApiError::Unprocessable("A product needs a name."));
    }
    let mut shop = shops.for_environment(principal.environment());
    if shop.products.contains_key(&new.sku) {
        return Err(ApiError::Conflict(
            "A product with this SKU already exists.",
        ));
    }
    let product = Product {
        sku: new.sku,
        name: new.name.trim().to_owned(),
        price_cents: new.price_cents,
    };
    shop.products.insert(product.sku.clone(), product.clone());
    shop.inventory.insert(product.sku.clone(), 0);
    tracing::info!(
        key_id = %principal.key_id(),
        environment = %principal.environment(),
        sku = %product.sku,
        "product created"
    );
    Ok((StatusCode::CREATED, Json(product)))
}

async fn delete_product(
    State(shops): State<Shops>,
    principal: Principal,
    Path(sku): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut shop = shops.for_environment(principal.environment());
    shop.products.remove(&sku).ok_or(ApiError::UNKNOWN_SKU)?;
    shop.inventory.remove(&sku);
    tracing::info!(
        key_id = %principal.key_id(),
        environment = %principal.environment(),
        sku = %sku,
        "product deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn list_inventory(State(shops): State<Shops>, principal: Principal) -> Json<Vec<StockLevel>> {
    let shop = shops.for_environment(principal.environment());
    let levels = shop
        .inventory
        .iter()
        .map(|(sku, &quantity)| StockLevel {
            sku: sku.clone(),
            quantity,
        })
        .collect();
    Json(levels)
}

async fn set_inventory(
    State(shops): State<Shops>,
    principal: Principal,
    Path(sku): Path<String>,
    Json(update): Json<SetQuantity>,
) -> Result<Json<StockLevel>, ApiError> {
    let mut shop = shops.for_environment(principal.environment());
    if !shop.products.contains_key(&sku) {
        return Err(ApiError::UNKNOWN_SKU);
    }
    shop.inventory.insert(sku.clone(), update.quantity);
    tracing::info!(
        key_id = %principal.key_id(),
        environment = %principal.environment(),
        sku = %sku,
        quantity = update.quantity,
        "inventory updated"
    );
    Ok(Json(StockLevel {
        sku,
        quantity: update.quantity,
    }))
}

async fn list_orders(State(shops): State<Shops>, principal: Principal) -> Json<Vec<Order>> {
    let shop = shops.for_environment(principal.environment());
    Json(shop.orders.clone())
}

async fn list_keywords(State(shops): State<Shops>, principal: Principal) -> Json<Vec<Keyword>> {
    let shop = shops.for_environment(principal.environment());
    Json(shop.keywords.clone())
}

async fn list_suggestions(
    State(shops): State<Shops>,
    principal: Principal,
) -> Json<Vec<Suggestion>> {
    let shop = shops.for_environment(principal.environment());
    Json(shop.suggestions.clone())
}

/// Accepts a keyword suggestion: the keyword is tracked from now on. Accepting twice is harmless.
async fn accept_suggestion(
    State(shops): State<Shops>,
    principal: Principal,
    Path(id): Path<u32>,
) -> Result<Json<Suggestion>, ApiError> {
    let mut guard = shops.for_environment(principal.environment());
    let shop = &mut *guard;
    let suggestion = shop
        .suggestions
        .iter_mut()
        .find(|suggestion| suggestion.id == id)
        .ok_or(ApiError::NotFound("No keyword suggestion has this id."))?;
    suggestion.status = SuggestionStatus::Accepted;
    if !shop
        .keywords
        .iter()
        .any(|k| k.keyword == suggestion.keyword)
    {
        shop.keywords.push(Keyword {
            keyword: suggestion.keyword.clone(),
            monthly_searches: suggestion.monthly_searches,
            rank: None,
        });
    }
    tracing::info!(
        key_id = %principal.key_id(),
        environment = %principal.environment(),
        suggestion = id,
        "keyword suggestion accepted"
    );
    Ok(Json(suggestion.clone()))
}

async fn analytics(State(shops): State<Shops>, principal: Principal) -> Json<Analytics> {
    let shop = shops.for_environment(principal.environment());
    let revenue_cents: u64 = shop.orders.iter().map(|order| order.total_cents).sum();
    let orders = shop.orders.len() as u64;
    Json(Analytics {
        orders,
        units_sold: shop.orders.iter().map(|order| order.quantity).sum(),
        revenue_cents,
        average_order_cents: revenue_cents.checked_div(orders).unwrap_or(0),
    })
}

/// Who is calling: everything the key's record says, never the key itself.
async fn me(principal: Principal) -> Json<Me> {
    Json(Me {
        key_id: principal.key_id().to_string(),
        name: principal.name().to_owned(),
        owner: principal.owner().to_owned(),
        environment: principal.environment().as_str(),
        scopes: principal.scopes().iter().map(ToString::to_string).collect(),
        expires_at: principal.expires_at().map(unix_seconds),
    })
}

/// `GET /v1/me/usage`: the calling key's requests on each of the last days, and its last use,
/// as written by the layer's last flush (the request asking is not in them yet).
async fn my_usage(
    State(store): State<Arc<dyn KeyStore>>,
    principal: Principal,
) -> Result<Json<MyUsage>, ApiError> {
    let today = Day::today();
    let days = store
        .usage(principal.key_id(), today.add_days(1 - USAGE_DAYS), today)
        .await
        .map_err(ApiError::store)?;
    let key = store
        .get(principal.key_id())
        .await
        .map_err(ApiError::store)?;
    Ok(Json(MyUsage {
        key_id: principal.key_id().to_string(),
        last_used_at: key.last_used_at.map(unix_seconds),
        days: days
            .into_iter()
            .map(|day| UsageDay {
                day: day.day.to_string(),
                allowed: day.counts.allowed,
                insufficient_scope: day.counts.insufficient_scope,
                revoked: day.counts.revoked,
                expired: day.counts.expired,
            })
            .collect(),
    }))
}

fn is_valid_sku(sku: &str) -> bool {
    (1..=32).contains(&sku.len()) && sku.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A refusal by the API itself, answered with an RFC 9457 `application/problem+json` body like
/// the crate's own refusals. Nothing from the request is echoed.
#[derive(Debug)]
enum ApiError {
    NotFound(&'static str),
    Conflict(&'static str),
    Unprocessable(&'static str),
    Unavailable(&'static str),
}

impl ApiError {
    const UNKNOWN_SKU: ApiError = ApiError::NotFound("No product has this SKU.");

    /// The key database failed: logged here, told to the client without details.
    fn store(err: StoreError) -> ApiError {
        tracing::warn!(error = %err, "the key database failed");
        ApiError::Unavailable("The key database is unavailable; try again shortly.")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ApiError::NotFound(detail) => (StatusCode::NOT_FOUND, detail),
            ApiError::Conflict(detail) => (StatusCode::CONFLICT, detail),
            ApiError::Unprocessable(detail) => (StatusCode::UNPROCESSABLE_ENTITY, detail),
            ApiError::Unavailable(detail) => (StatusCode::SERVICE_UNAVAILABLE, detail),
        };
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason(),
            "status": status.as_u16(),
            "detail": detail,
        });
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// The shop's data: one set reached by live keys, another reached by sandbox keys.
#[derive(Clone)]
struct Shops {
    live: Arc<Mutex<Shop>>,
    sandbox: Arc<Mutex<Shop>>,
}

impl Shops {
    fn seeded() -> Self {
        Shops {
            live: Arc::new(Mutex::new(Shop::seeded(Environment::Live))),
            sandbox: Arc::new(Mutex::new(Shop::seeded(Environment::Test))),
        }
    }

    /// The data a key of `environment` reaches: `om_test_` keys only ever reach the sandbox.
    fn for_environment(&self, environment: Environment) -> MutexGuard<'_, Shop> {
        let shop = match environment {
            Environment::Live => &self.live,
            Environment::Test => &self.sandbox,
        };
        // No handler panics halfway through a change, so a poisoned shop is still consistent.
        shop.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One environment's products, stock levels, orders and keyword data.
struct Shop {
    products: BTreeMap<String, Product>,
    inventory: BTreeMap<String, u32>,
    orders: Vec<Order>,
    keywords: Vec<Keyword>,
    suggestions: Vec<Suggestion>,
}

/// The catalogue both environments start from: SKU, name, price in cents, live stock.
const CATALOG: [(&str, &str, u64, u32); 4] = [
    ("MUG-001", "Stoneware Coffee Mug", 1_800, 42),
    ("TEE-014", "Organic Cotton T-Shirt", 2_400, 130),
    ("BAG-203", "Canvas Tote Bag", 1_500, 8),
    ("NBK-310", "Dot-Grid Notebook", 1_200, 64),
];

/// Stock of every product in the sandbox, so that test orders never run out.
const SANDBOX_STOCK: u32 = 1_000;

impl Shop {
    /// Plausible starting data. Sandbox products are named `[sandbox] …` and sandbox orders
    /// `ord_test_…`, so a response shows at a glance which data a key reached.
    fn seeded(environment: Environment) -> Shop {
        let sandbox = environment == Environment::Test;
        let mut products = BTreeMap::new();
        let mut inventory = BTreeMap::new();
        for (sku, name, price_cents, live_stock) in CATALOG {
            let name = if sandbox {
                format!("[sandbox] {name}")
            } else {
                name.to_owned()
            };
            products.insert(
                sku.to_owned(),
                Product {
                    sku: sku.to_owned(),
                    name,
                    price_cents,
                },
            );
            inventory.insert(
                sku.to_owned(),
                if sandbox { SANDBOX_STOCK } else { live_stock },
            );
        }

        let order_lines: &[(&str, &str, u32, OrderStatus)] = if sandbox {
            &[("ord_test_0001", "BAG-203", 1, OrderStatus::Paid)]
        } else {
            &[
                ("ord_1001", "MUG-001", 2, OrderStatus::Shipped),
                ("ord_1002", "TEE-014", 1, OrderStatus::Shipped),
                ("ord_1003", "NBK-310", 3, OrderStatus::Paid),
                ("ord_1004", "MUG-001", 1, OrderStatus::Paid),
            ]
        };
        let orders = order_lines
            .iter()
            .map(|&(id, sku, quantity, status)| Order {
                id: id.to_owned(),
                sku: sku.to_owned(),
                quantity,
                total_cents: products[sku].price_cents * u64::from(quantity),
                status,
            })
            .collect();

        let keywords = vec![
            Keyword::ranked("coffee mug", 40_500, 7),
            Keyword::ranked("canvas tote bag", 22_200, 12),
            Keyword::ranked("dot grid notebook", 9_900, 3),
        ];
        let suggestions = vec![
            Suggestion::pending(1, "ceramic coffee mug", "MUG-001", 14_800),
            Suggestion::pending(2, "organic cotton tee", "TEE-014", 6_600),
            Suggestion::pending(3, "bullet journal notebook", "NBK-310", 33_100),
        ];

        Shop {
            products,
            inventory,
            orders,
            keywords,
            suggestions,
        }
    }
}

#[derive(Clone, Serialize)]
struct Product {
    sku: String,
    name: String,
    price_cents: u64,
}

/// The body of `POST /v1/products`.
#[derive(Deserialize)]
struct NewProduct {
    sku: String,
    name: String,
    price_cents: u64,
}

#[derive(Serialize)]
struct StockLevel {
    sku: String,
    quantity: u32,
}

/// The body of `PUT /v1/inventory/{sku}`.
#[derive(Deserialize)]
struct SetQuantity {
    quantity: u32,
}

#[derive(Clone, Serialize)]
struct Order {
    id: String,
    sku: String,
    quantity: u32,
    total_cents: u64,
    status: OrderStatus,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum OrderStatus {
    Paid,
    Shipped,
}

/// A search keyword the shop tracks, and where its products rank for it (if they do yet).
#[derive(Clone, Serialize)]
struct Keyword {
    keyword: String,
    monthly_searches: u32,
    rank: Option<u32>,
}

impl Keyword {
    fn ranked(keyword: &str, monthly_searches: u32, rank: u32) -> Self {
        Keyword {
            keyword: keyword.to_owned(),
            monthly_searches,
            rank: Some(rank),
        }
    }
}

/// A keyword OrderMonk suggests tracking for a product.
#[derive(Clone, Serialize)]
struct Suggestion {
    id: u32,
    keyword: String,
    sku: String,
    monthly_searches: u32,
    status: SuggestionStatus,
}

impl Suggestion {
    fn pending(id: u32, keyword: &str, sku: &str, monthly_searches: u32) -> Self {
        Suggestion {
            id,
            keyword: keyword.to_owned(),
            sku: sku.to_owned(),
            monthly_searches,
            status: SuggestionStatus::Pending,
        }
    }
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum SuggestionStatus {
    Pending,
    Accepted,
}

#[derive(Serialize)]
struct Analytics {
    orders: u64,
    units_sold: u32,
    revenue_cents: u64,
    average_order_cents: u64,
}

/// The body of `GET /v1/me`.
#[derive(Serialize)]
struct Me {
    key_id: String,
    name: String,
    owner: String,
    environment: &'static str,
    scopes: Vec<String>,
    /// Unix seconds, or `null` for a key that does not expire.
    expires_at: Option<u64>,
}

/// The body of `GET /v1/me/usage`.
#[derive(Serialize)]
struct MyUsage {
    key_id: String,
    /// Unix seconds, or `null` for a key never used (as of the last flush).
    last_used_at: Option<u64>,
    /// The last days, oldest first, today last.
    days: Vec<UsageDay>,
}

/// One day of a key's requests.
#[derive(Serialize)]
struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    day: String,
    allowed: u64,
    insufficient_scope: u64,
    revoked: u64,
    expired: u64,
}
