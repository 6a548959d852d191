//! Changes to keys reach the caches of other processes: two stores on one database, each with a
//! pool of its own as two processes would have, one serving requests through a layer and the
//! other changing keys (through the crate, or with plain SQL as a support engineer would).
//!
//! SQLite runs on a real file; PostgreSQL on the real server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its own. When the server
//! cannot be reached the PostgreSQL tests are skipped with a message, unless `CI` is set: then
//! they fail.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{header, Request, StatusCode};
use tower::ServiceExt;
use tower_api_key::{
    ApiKeyLayer, ChannelHealth, Environment, KeyFormat, KeyId, KeyStore, NewKey, PlaintextKey,
    Scope,
};

const ORDERS_READ: Scope = Scope::from_static("orders:read");
/// Long enough that only an invalidation can explain a refusal.
const CACHE_TTL: Duration = Duration::from_secs(600);
/// What no working channel comes near.
const CEILING: Duration = Duration::from_secs(5);

fn om() -> KeyFormat {
    KeyFormat::new("om").unwrap()
}

/// A service on `store` whose cache keeps keys for ten minutes.
fn app(store: impl KeyStore) -> Router {
    let layer = ApiKeyLayer::builder(store).cache_ttl(CACHE_TTL).build();
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

async fn status(app: &Router, key: &PlaintextKey) -> StatusCode {
    let request = Request::get("/")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", key.expose_secret()),
        )
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

/// How long after `change` the app refuses `key`; panics past the ceiling.
async fn refused_after<F: Future<Output = ()>>(
    app: &Router,
    key: &PlaintextKey,
    change: F,
) -> Duration {
    change.await;
    let start = Instant::now();
    while status(app, key).await != StatusCode::UNAUTHORIZED {
        assert!(start.elapsed() < CEILING, "the key is still accepted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

async fn new_key(store: &impl KeyStore) -> (KeyId, PlaintextKey) {
    let created = store
        .create(NewKey::new("Webhook Server", Environment::Live).scopes([ORDERS_READ]))
        .await
        .unwrap();
    (created.id().clone(), created.key)
}

async fn wait_connected(health: tokio::sync::watch::Receiver<ChannelHealth>) {
    let mut health = health;
    tokio::time::timeout(CEILING, health.wait_for(ChannelHealth::is_connected))
        .await
        .expect("the watch connects")
        .unwrap();
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use tower_api_key::SqliteStore;

    async fn two_processes() -> (tempfile::TempDir, SqliteStore, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let server = SqliteStore::open(&path, om()).await.unwrap();
        server.migrate().await.unwrap();
        let tool = SqliteStore::open_recorded(&path).await.unwrap();
        (dir, server, tool)
    }

    #[tokio::test]
    async fn a_key_revoked_by_another_process_is_refused_within_the_poll_interval() {
        let (_dir, server, tool) = two_processes().await;
        let server = server.with_poll_interval(Duration::from_millis(20));
        let app = app(server.clone());
        wait_connected(server.watcher().health_changes()).await;
        let (id, key) = new_key(&tool).await;
        assert_eq!(status(&app, &key).await, StatusCode::OK);
        let took = refused_after(&app, &key, async {
            tool.revoke(&id).await.unwrap();
        })
        .await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sqlx::postgres::PgPoolOptions;
    use tower_api_key::PostgresStore;

    fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    async fn two_processes() -> Option<(PostgresStore, PostgresStore)> {
        let schema = format!("test_{}", &KeyDigestHex::random()[..16]);
        let server = match PostgresStore::connect(&url(), om()).await {
            Ok(store) => store.with_schema(&schema),
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!(
                    "PostgreSQL at {} is unreachable, and CI is set: {err}",
                    url()
                )
            }
            Err(err) => {
                eprintln!("SKIPPING: PostgreSQL at {} is unreachable: {err}", url());
                return None;
            }
        };
        server.migrate().await.unwrap();
        let tool = PostgresStore::connect_recorded(&url(), &schema)
            .await
            .unwrap();
        Some((server, tool))
    }

    struct KeyDigestHex;
    impl KeyDigestHex {
        fn random() -> String {
            om().generate(Environment::Live).unwrap().digest().to_hex()
        }
    }

    #[tokio::test]
    async fn a_key_revoked_by_another_instance_is_refused_within_milliseconds() {
        let Some((server, tool)) = two_processes().await else {
            return;
        };
        let app = app(server.clone());
        wait_connected(server.watcher().health_changes()).await;
        let (id, key) = new_key(&tool).await;
        assert_eq!(status(&app, &key).await, StatusCode::OK);
        let took = refused_after(&app, &key, async {
            tool.revoke(&id).await.unwrap();
        })
        .await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        let _ = PgPoolOptions::new();
    }
}
