//! Many processes on one store, as a user runs them: the built `ordermonk` demo (two instances on
//! one PostgreSQL schema, one on a SQLite file) and the built `tower-api-key` tool, each a
//! process of its own, talking over loopback HTTP. The demos cache found keys for ten minutes, so
//! only the watch for changes made elsewhere can explain a refusal.
//!
//! Besides its assertions, this binary measures how long each of 100 revocations took to be
//! honoured by every instance, from the moment the revoking call returned to the first `401`,
//! and prints p50, p99 and max:
//!
//! ```text
//! cargo test --all-features --test many_instances -- --nocapture
//! ```
//!
//! It asserts only a generous ceiling on them, which a broken channel (ten minutes) cannot meet.
//! PostgreSQL is found at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! each test in a schema of its own; when it cannot be reached the PostgreSQL test is skipped
//! with a message, unless `CI` is set: then it fails.

mod common;
#[path = "common/demo.rs"]
mod demo;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use demo::{om, Keys, Server, Tool};
use serde_json::json;
use tower_api_key::{Environment, KeyId, KeyStore, NewKey, PlaintextKey, Scope};

/// Longer than the test: a cached key is never looked up again by expiry.
const CACHE_TTL: Duration = Duration::from_secs(600);
/// What no working channel comes near; a broken one takes the cache TTL.
const CEILING: Duration = Duration::from_secs(2);
/// The demos' logging: what a production service would log, so that the timings are not a
/// measure of writing trace events to a pipe.
const QUIET: &[(&str, &str)] = &[("RUST_LOG", "info,tower_api_key=debug")];
/// How many revocations are timed.
const REVOCATIONS: usize = 100;

const ORDERS_READ: Scope = Scope::from_static("orders:read");

async fn status(addr: SocketAddr, key: &str) -> u16 {
    let auth = common::bearer(key);
    common::get(addr, "/v1/orders", &[auth.as_slice()])
        .await
        .status
}

/// Waits until the demo at `addr` says its watch is connected.
async fn connected(addr: SocketAddr) {
    let started = Instant::now();
    loop {
        let health = common::get(addr, "/health", &[]).await;
        assert_eq!(health.status, 200);
        if health.json() == json!({"invalidations": "connected"}) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the watch of {addr} is {}",
            health.body_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long after now `addr` keeps accepting `key`; panics past the ceiling.
async fn until_refused(addr: SocketAddr, key: &str, since: Instant) -> Duration {
    loop {
        match status(addr, key).await {
            401 => return since.elapsed(),
            // Still accepted (the dashboard key has a rate limit: a revoked key gets 401 first).
            200 | 429 => {}
            other => panic!("{addr} answered {other}"),
        }
        assert!(
            since.elapsed() < CEILING,
            "{addr} still accepts a key revoked {:?} ago",
            since.elapsed()
        );
    }
}

/// A random duration below `limit`.
fn random_below(limit: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    let micros = u64::from_le_bytes(bytes) % u64::try_from(limit.as_micros()).unwrap();
    Duration::from_micros(micros)
}

/// The `p`th percentile of sorted `samples` (nearest rank).
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let rank = (samples.len() * p).div_ceil(100).max(1);
    samples[rank - 1]
}

/// Revokes `REVOCATIONS` keys through `store`, each cached by every demo at `addrs` first, and
/// returns how long each demo took to refuse each key, sorted.
async fn time_revocations(store: &impl KeyStore, addrs: &[SocketAddr], what: &str) {
    let mut keys: Vec<(KeyId, PlaintextKey)> = Vec::new();
    for n in 0..REVOCATIONS {
        let created = store
            .create(NewKey::new(format!("timed {n}"), Environment::Live).scopes([ORDERS_READ]))
            .await
            .unwrap();
        keys.push((created.id().clone(), created.key));
    }
    let mut delays = Vec::new();
    for (id, key) in &keys {
        for &addr in addrs {
            assert_eq!(status(addr, key.expose_secret()).await, 200, "{addr}");
        }
        // At a random moment: right after the previous refusal, a polling process has just
        // polled, and every revocation would wait nearly a whole interval.
        tokio::time::sleep(random_below(Duration::from_millis(100))).await;
        store.revoke(id).await.unwrap();
        let revoked = Instant::now();
        let waits = addrs
            .iter()
            .map(|&addr| until_refused(addr, key.expose_secret(), revoked));
        delays.extend(futures_util::future::join_all(waits).await);
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: {} refusals ({REVOCATIONS} revocations x {} instances), from the revoking call's \
         return to the first 401: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        addrs.len(),
        ms(percentile(&delays, 50)),
        ms(percentile(&delays, 99)),
        ms(*delays.last().unwrap()),
    );
}

#[tokio::test]
async fn one_demo_on_sqlite_refuses_keys_revoked_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::Sqlite(dir.path().join("ordermonk.db"));
    let (mut server, banner) = Server::start(&keys, CACHE_TTL, QUIET);
    connected(banner.addr).await;
    assert!(
        banner
            .transcript
            .contains("this server reads the changes every 100 ms"),
        "{}",
        banner.transcript
    );

    // Another process on the same file, as the tool is.
    let store = tower_api_key::SqliteStore::open_recorded(dir.path().join("ordermonk.db"))
        .await
        .unwrap();
    time_revocations(&store, &[banner.addr], "SQLite, polled every 100 ms").await;

    let logs = server.stop();
    assert!(logs.contains("invalidation channel subscribed"), "{logs}");
}

/// Two demos, separate processes on one SQLite file, deciding rates in the real Redis: together
/// they never let the dashboard key (10/s burst 20) through more often than its rate allows,
/// whichever instance each request reaches, and they let through nearly that much.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demos_share_the_dashboard_keys_rate_through_redis() {
    if common::redis("the shared rate test").await.is_none() {
        return;
    }
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::Sqlite(dir.path().join("ordermonk.db"));
    let env = [("RUST_LOG", "info"), ("ORDERMONK_REDIS_URL", url.as_str())];
    let (mut first, banner) = Server::start(&keys, CACHE_TTL, &env);
    let (mut second, second_banner) = Server::start(&keys, CACHE_TTL, &env);
    for transcript in [&banner.transcript, &second_banner.transcript] {
        assert!(
            transcript.contains("Rate limits: shared through Redis (ORDERMONK_REDIS_URL)"),
            "{transcript}"
        );
    }
    let dashboard = banner.key("Read-only dashboard").to_owned();
    let addrs = [banner.addr, second_banner.addr];

    let started = Instant::now();
    let run_for = Duration::from_millis(1500);
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let (addr, key) = (addrs[task % 2], dashboard.clone());
            tokio::spawn(async move {
                let (mut allowed, mut refused) = (0u64, 0u64);
                while started.elapsed() < run_for {
                    match status(addr, &key).await {
                        200 => allowed += 1,
                        429 => refused += 1,
                        other => panic!("{addr} answered {other}"),
                    }
                }
                (allowed, refused)
            })
        })
        .collect();
    let (mut allowed, mut refused) = (0, 0);
    for task in tasks {
        let (ok, too_many) = task.await.unwrap();
        allowed += ok;
        refused += too_many;
    }
    let window = started.elapsed();
    // GCRA at 10/s with a burst of 20: at most 20 + one per 100 ms of the window.
    let most = 20 + window.as_millis() as u64 / 100;
    println!(
        "two demos sharing Redis: {allowed} let through, {refused} refused in {window:?}; the \
         dashboard key's rate allows at most {most}"
    );
    assert!(allowed <= most, "{allowed} let through, more than {most}");
    assert!(refused > 0, "the load was not over the rate");
    assert!(
        allowed * 4 >= most * 3,
        "only {allowed} of {most}: not one shared bucket"
    );
    first.stop();
    second.stop();
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sqlx::postgres::PgPoolOptions;
    use sqlx::PgPool;
    use tower_api_key::PostgresStore;

    fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A pool on the server, or `None` (with a message) when it is unreachable outside CI.
    async fn server() -> Option<PgPool> {
        let attempt = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url())
            .await;
        match attempt {
            Ok(pool) => Some(pool),
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!(
                    "PostgreSQL at {} is unreachable, and CI is set: {err}",
                    url()
                )
            }
            Err(err) => {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPING the PostgreSQL instances test: {} is unreachable ({err}).\n\
                     *** Start PostgreSQL or set DATABASE_URL; with CI set, this is a failure.\n",
                    url()
                );
                None
            }
        }
    }

    /// Drops the schema when the test ends, however it ends.
    struct Schema {
        name: String,
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
            // On a thread and a connection of its own: the test's runtime, which drives the
            // test's connections, is blocked here until this returns.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let pool = PgPoolOptions::new()
                            .max_connections(1)
                            .connect(&url())
                            .await?;
                        sqlx::query(&sql).execute(&pool).await
                    })
            })
            .join();
        }
    }

    #[tokio::test]
    async fn two_demos_on_one_schema_and_the_tool() {
        let Some(pool) = server().await else {
            return;
        };
        let random = om().generate(Environment::Live).unwrap().digest().to_hex();
        let schema = Schema {
            name: format!("test_{}", &random[..16]),
        };
        let keys = Keys::Postgres {
            url: url(),
            schema: schema.name.clone(),
        };
        // One after the other: the first creates the tables and the demo keys.
        let (mut first, banner) = Server::start(&keys, CACHE_TTL, QUIET);
        let (mut second, second_banner) = Server::start(&keys, CACHE_TTL, QUIET);
        let addrs = [banner.addr, second_banner.addr];
        for addr in addrs {
            connected(addr).await;
        }
        let production = banner.key("Production");
        for addr in addrs {
            assert_eq!(status(addr, production).await, 200);
        }

        // A key created by the tool works at once on every instance, and once the tool has
        // revoked it, every instance refuses it on the very next request.
        let tool = Tool::new(&keys);
        let created = tool.json(&[
            "create",
            "--name",
            "Made with the CLI",
            "--scope",
            "orders:read",
        ]);
        let key = created["plaintext_key"].as_str().unwrap().to_owned();
        let id = created["key"]["id"].as_str().unwrap().to_owned();
        for addr in addrs {
            assert_eq!(status(addr, &key).await, 200, "{addr}");
        }
        tool.run(&["revoke", &id]);
        for addr in addrs {
            assert_eq!(
                status(addr, &key).await,
                401,
                "{addr}: right after the tool"
            );
        }

        // A support engineer's plain SQL counts too.
        let dashboard = banner.key("Read-only dashboard");
        for addr in addrs {
            assert_eq!(status(addr, dashboard).await, 200);
        }
        let revoked = Instant::now();
        sqlx::query(&format!(
            "UPDATE \"{}\".api_keys SET revoked_at = now() WHERE name = 'Read-only dashboard'",
            schema.name
        ))
        .execute(&pool)
        .await
        .unwrap();
        for addr in addrs {
            let took = until_refused(addr, dashboard, revoked).await;
            println!("plain SQL revocation honoured by {addr} after {took:?}");
        }

        // The channel killed from the server side: each instance notices, empties its cache,
        // reconnects, and honours later revocations (and any made while it was away).
        let store = PostgresStore::connect_recorded(&url(), &schema.name)
            .await
            .unwrap();
        let during = store
            .create(NewKey::new("revoked while away", Environment::Live).scopes([ORDERS_READ]))
            .await
            .unwrap();
        let during = during.key.expose_secret();
        for addr in addrs {
            assert_eq!(status(addr, during).await, 200, "{addr}");
        }
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(format!("tower-api-key listener {}", schema.name))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(killed, vec![(true,), (true,)], "one listener per instance");
        sqlx::query(&format!(
            "UPDATE \"{}\".api_keys SET revoked_at = now() WHERE name = 'revoked while away'",
            schema.name
        ))
        .execute(&pool)
        .await
        .unwrap();
        for addr in addrs {
            connected(addr).await;
            assert_eq!(status(addr, during).await, 401, "{addr}");
            assert_eq!(status(addr, production).await, 200, "{addr} still serves");
        }

        time_revocations(&store, &addrs, "PostgreSQL, two instances").await;

        for server in [&mut first, &mut second] {
            let logs = server.stop();
            assert!(logs.contains("invalidation channel lost"), "{logs}");
            assert!(logs.contains("invalidation channel is back"), "{logs}");
        }
        drop(schema);
    }
}
