//! Usage recording, seen from outside: what the layer hands its store, when, and what it does
//! when the store fails. The store here is a `MemoryStore` for the keys with a recording of every
//! usage batch in front of it, so that a test sees each batch and can make writes fail.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{header, Request, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tower::ServiceExt;
use tower_api_key::{
    scope_requirement, Actor, AnonymousOutcome, ApiKeyLayer, ApiKeyLayerBuilder, Clock, CreatedKey,
    Day, Environment, Invalidations, KeyDigest, KeyFormat, KeyId, KeyLimits, KeyOutcome, KeyRecord,
    KeyResolver, KeyStore, ManualClock, MemoryStore, NewKey, OutcomeCounts, RequireScopes,
    ResolveError, Rotation, Scope, Scoped, StoreError, StoredKey, UsageBatch, UsageSettings,
};

const ORDERS_READ: Scope = Scope::from_static("orders:read");
const PRODUCTS_WRITE: Scope = Scope::from_static("products:write");

scope_requirement! { struct WriteProducts = all(PRODUCTS_WRITE); }

// ---------------------------------------------------------------------------------------------
// A store that records usage batches
// ---------------------------------------------------------------------------------------------

/// Keys in a `MemoryStore`; usage batches recorded as they come, or refused as told.
#[derive(Clone)]
struct Recording {
    keys: MemoryStore,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    batches: Vec<UsageBatch>,
    /// Writes still to refuse as if the database were down.
    outage: u32,
    /// Writes still to apply and then refuse, as a write whose commit succeeded but whose
    /// acknowledgement was lost (a timeout, a dropped connection) looks.
    lost_acks: u32,
    /// Whether to answer that no usage is kept.
    keeps_none: bool,
    /// Every `record_usage` call, refused or not.
    calls: u32,
    refused: u32,
    /// The days given to `prune_usage`.
    prunes: Vec<Day>,
}

impl Recording {
    fn new() -> Self {
        common::init_tracing();
        Recording {
            keys: MemoryStore::new(KeyFormat::new("om").unwrap()),
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Every count written, added up per key and day.
    fn totals(&self) -> HashMap<(KeyId, Day), OutcomeCounts> {
        let mut totals: HashMap<(KeyId, Day), OutcomeCounts> = HashMap::new();
        for batch in &self.state().batches {
            for increment in &batch.keys {
                totals
                    .entry((increment.id.clone(), increment.day))
                    .or_default()
                    .add_all(&increment.counts);
            }
        }
        totals
    }

    /// One key's counts, all days together.
    fn key_total(&self, id: &KeyId) -> OutcomeCounts {
        let mut total = OutcomeCounts::default();
        for ((key, _), counts) in self.totals() {
            if &key == id {
                total.add_all(&counts);
            }
        }
        total
    }

    /// Requests written for keys not known, per outcome, all days together.
    fn anonymous(&self) -> HashMap<AnonymousOutcome, u64> {
        let mut totals = HashMap::new();
        for batch in &self.state().batches {
            for increment in &batch.anonymous {
                *totals.entry(increment.outcome).or_default() += increment.count;
            }
        }
        totals
    }

    /// Every request written, known keys and not.
    fn requests(&self) -> u64 {
        self.totals()
            .values()
            .map(OutcomeCounts::total)
            .sum::<u64>()
            + self.anonymous().values().sum::<u64>()
    }

    /// Each last use written for `id`, in order.
    fn last_used(&self, id: &KeyId) -> Vec<SystemTime> {
        self.state()
            .batches
            .iter()
            .flat_map(|batch| batch.last_used.iter())
            .filter(|(key, _)| key == id)
            .map(|(_, at)| *at)
            .collect()
    }

    async fn key(&self, name: &str, environment: Environment, scopes: &[Scope]) -> CreatedKey {
        self.create(NewKey::new(name, environment).scopes(scopes.iter().cloned()))
            .await
            .unwrap()
    }
}

#[async_trait]
impl KeyResolver for Recording {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        self.keys.resolve(digest).await
    }

    fn invalidations(&self) -> Option<Invalidations> {
        self.keys.invalidations()
    }
}

#[async_trait]
impl KeyStore for Recording {
    fn format(&self) -> &KeyFormat {
        self.keys.format()
    }
    async fn create_by(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError> {
        self.keys.create_by(new, actor).await
    }
    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        self.keys.get(id).await
    }
    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError> {
        self.keys.list(owner).await
    }
    async fn rename_by(
        &self,
        id: &KeyId,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        self.keys.rename_by(id, name, actor).await
    }
    async fn set_limits_by(
        &self,
        id: &KeyId,
        limits: KeyLimits,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        self.keys.set_limits_by(id, limits, actor).await
    }
    async fn revoke_by(&self, id: &KeyId, actor: &Actor) -> Result<StoredKey, StoreError> {
        self.keys.revoke_by(id, actor).await
    }
    async fn rotate_by(
        &self,
        id: &KeyId,
        grace: Duration,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        self.keys.rotate_by(id, grace, actor).await
    }
    async fn delete_by(&self, id: &KeyId, actor: &Actor) -> Result<(), StoreError> {
        self.keys.delete_by(id, actor).await
    }
    async fn record_use(&self, id: &KeyId, at: SystemTime) -> Result<(), StoreError> {
        self.keys.record_use(id, at).await
    }

    async fn record_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let lose_ack = {
            let mut state = self.state();
            state.calls += 1;
            if state.keeps_none {
                return Err(StoreError::UsageNotKept);
            }
            if state.outage > 0 {
                state.outage -= 1;
                state.refused += 1;
                return Err(StoreError::unavailable("connection refused"));
            }
            state.batches.push(batch.clone());
            let lose_ack = state.lost_acks > 0;
            state.lost_acks = state.lost_acks.saturating_sub(1);
            lose_ack
        };
        // Applied by a real store too, which knows batches by their id.
        self.keys.record_usage(batch).await?;
        if lose_ack {
            return Err(StoreError::unavailable("connection reset after the commit"));
        }
        Ok(())
    }

    async fn prune_usage(&self, before: Day) -> Result<u64, StoreError> {
        self.state().prunes.push(before);
        Ok(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn bearer(key: &CreatedKey) -> String {
    format!("Bearer {}", key.key.expose_secret())
}

/// Sends `GET path` with `authorization` through `app`; the status.
async fn send(app: &Router, path: &str, authorization: Option<&str>) -> StatusCode {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

async fn send_times(
    app: &Router,
    times: usize,
    path: &str,
    authorization: Option<&str>,
) -> StatusCode {
    let mut status = StatusCode::OK;
    for _ in 0..times {
        status = send(app, path, authorization).await;
    }
    status
}

/// Waits (up to 10 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The routes every test uses: one with no scope, one requiring `products:write` with
/// `RequireScopes`, one with the `Scoped` extractor.
fn routes() -> Router {
    Router::new()
        .route("/open", get(|| async { "open" }))
        .route(
            "/write",
            get(|| async { "written" }).route_layer(RequireScopes::all([PRODUCTS_WRITE])),
        )
        .route(
            "/scoped",
            get(|_: Scoped<WriteProducts>| async { "written" }),
        )
}

/// A usage setting that flushes often, for tests that watch the background flush.
fn often() -> UsageSettings {
    UsageSettings::new().flush_interval(Duration::from_millis(10))
}

/// A clock at the real time, so that days are today's.
fn clock() -> ManualClock {
    ManualClock::new(SystemTime::now())
}

/// The value of the series of `name` whose labels contain every one of `labels`, in
/// `rendered` Prometheus text.
fn metric(rendered: &str, name: &str, labels: &[&str]) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let (series, value) = rest.rsplit_once(' ')?;
        labels
            .iter()
            .all(|label| series.contains(label))
            .then(|| value.parse().unwrap())
    })
}

/// A layer built with `builder` reporting to a recorder of its own.
fn with_metrics(builder: ApiKeyLayerBuilder) -> (ApiKeyLayer, PrometheusRecorder) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let layer = metrics::with_local_recorder(&recorder, || builder.build());
    (layer, recorder)
}

// ---------------------------------------------------------------------------------------------
// What is counted
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_outcome_is_counted_per_key_and_day_and_unknown_keys_only_in_aggregate() {
    let store = Recording::new();
    let clock = clock();
    let reader = store.key("Reader", Environment::Live, &[ORDERS_READ]).await;
    let revoked = store
        .key("Revoked", Environment::Live, &[ORDERS_READ])
        .await;
    store.revoke(revoked.id()).await.unwrap();
    let expiring = store
        .create(
            NewKey::new("Expiring", Environment::Live)
                .expires_at(SystemTime::now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let sandbox = store
        .key("Sandbox", Environment::Test, &[ORDERS_READ])
        .await;
    let unknown = store.format().generate(Environment::Live).unwrap();
    let mut malformed = reader.key.expose_secret().to_owned().into_bytes();
    malformed[20] = if malformed[20] == b'a' { b'b' } else { b'a' };
    let malformed = String::from_utf8(malformed).unwrap();

    let layer = ApiKeyLayer::builder(store.clone())
        .environments([Environment::Live])
        .clock(clock.clone())
        .build();
    let app = routes().layer(layer.clone());

    let reader_auth = bearer(&reader);
    assert_eq!(send_times(&app, 7, "/open", Some(&reader_auth)).await, 200);
    assert_eq!(send_times(&app, 3, "/write", Some(&reader_auth)).await, 403);
    assert_eq!(
        send_times(&app, 2, "/scoped", Some(&reader_auth)).await,
        403
    );
    assert_eq!(
        send_times(&app, 4, "/open", Some(&bearer(&revoked))).await,
        401
    );
    assert_eq!(
        send_times(&app, 1, "/open", Some(&bearer(&expiring))).await,
        200
    );
    clock.advance(Duration::from_secs(7200));
    assert_eq!(
        send_times(&app, 5, "/open", Some(&bearer(&expiring))).await,
        401
    );
    assert_eq!(send_times(&app, 6, "/open", None).await, 401);
    assert_eq!(
        send_times(&app, 1, "/open", Some("Basic dXNlcg==")).await,
        401
    );
    assert_eq!(
        send_times(&app, 2, "/open", Some(&format!("Bearer {malformed}"))).await,
        401
    );
    assert_eq!(send_times(&app, 1, "/open", Some("Bearer a b")).await, 400);
    assert_eq!(
        send_times(
            &app,
            8,
            "/open",
            Some(&format!("Bearer {}", unknown.expose_secret()))
        )
        .await,
        401
    );
    // A key of an environment this layer does not accept counts as unknown.
    assert_eq!(
        send_times(&app, 2, "/open", Some(&bearer(&sandbox))).await,
        401
    );

    layer.flush_usage().await.unwrap();
    let today = Day::of(clock.now());
    let totals = store.totals();
    let reader_counts = totals[&(reader.id().clone(), today)];
    assert_eq!(reader_counts.allowed, 7);
    assert_eq!(reader_counts.insufficient_scope, 3 + 2);
    assert_eq!(reader_counts.total(), 12);
    assert_eq!(totals[&(revoked.id().clone(), today)].revoked, 4);
    assert_eq!(totals[&(revoked.id().clone(), today)].total(), 4);
    // The clock moved by two hours: the expired requests may fall on the next day.
    let expiring_counts = store.key_total(expiring.id());
    assert_eq!(
        (expiring_counts.allowed, expiring_counts.expired),
        (1, 5),
        "{expiring_counts:?}"
    );
    assert!(
        !totals.keys().any(|(id, _)| id == sandbox.id()),
        "a key of a refused environment is not counted per key"
    );
    let anonymous = store.anonymous();
    assert_eq!(anonymous[&AnonymousOutcome::Missing], 7);
    assert_eq!(anonymous[&AnonymousOutcome::Malformed], 3);
    assert_eq!(anonymous[&AnonymousOutcome::Unknown], 10);
    assert_eq!(store.requests(), 7 + 5 + 4 + 6 + 7 + 3 + 10);

    // Last uses: keys let through (or refused only by a route's scope), never refused keys.
    assert_eq!(store.last_used(reader.id()).len(), 1);
    assert_eq!(store.last_used(expiring.id()).len(), 1);
    assert!(store.last_used(revoked.id()).is_empty());
    common::assert_logs_clean(&[
        reader.key.expose_secret(),
        revoked.key.expose_secret(),
        unknown.expose_secret(),
    ]);
}

#[tokio::test]
async fn a_layer_on_a_resolver_records_usage_only_into_a_store_it_is_given() {
    let store = Recording::new();
    let key = store.key("Reader", Environment::Live, &[]).await;
    let without = ApiKeyLayer::resolver_builder(store.format().clone(), store.clone()).build();
    let with = ApiKeyLayer::resolver_builder(store.format().clone(), store.clone())
        .usage_store(store.clone())
        .build();
    let off = ApiKeyLayer::builder(store.clone())
        .usage(UsageSettings::off())
        .build();
    for layer in [&without, &with, &off] {
        let app = routes().layer(layer.clone());
        assert_eq!(send_times(&app, 3, "/open", Some(&bearer(&key))).await, 200);
        layer.flush_usage().await.unwrap();
    }
    assert_eq!(store.key_total(key.id()).allowed, 3, "only `with` recorded");
    assert_eq!(store.state().calls, 1);
}

// ---------------------------------------------------------------------------------------------
// Many requests, two layers, one store
// ---------------------------------------------------------------------------------------------

/// 10,000 requests over two layers, one on `store` and one on `other` (separate stacks on one
/// database, as two instances would be), from many tasks on a multi-threaded runtime while the
/// background flushes run; then both layers flush. Returns the keys and how many requests each
/// got, per outcome; 500 of the requests have no key.
async fn ten_thousand_requests_over_two_layers<S: KeyStore + Clone>(
    store: S,
    other: S,
) -> Vec<(KeyId, OutcomeCounts)> {
    let reader = store
        .create(NewKey::new("Reader", Environment::Live).scopes([ORDERS_READ]))
        .await
        .unwrap();
    let writer = store
        .create(NewKey::new("Writer", Environment::Live).scopes([PRODUCTS_WRITE]))
        .await
        .unwrap();
    let settings = UsageSettings::new().flush_interval(Duration::from_millis(20));
    let layers = [
        ApiKeyLayer::builder(store.clone())
            .usage(settings.clone())
            .build(),
        ApiKeyLayer::builder(other).usage(settings).build(),
    ];
    let apps = layers.clone().map(|layer| routes().layer(layer));
    let auth = [bearer(&reader), bearer(&writer)];
    let mut tasks = Vec::new();
    for task in 0..20usize {
        let app = apps[task % 2].clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500usize {
                // Readers on `/open` (allowed) and `/write` (insufficient scope), writers on
                // `/write` (allowed); every twentieth request has no key.
                if i % 20 == 19 {
                    send(&app, "/open", None).await;
                    continue;
                }
                let (key, path) = match (task + i) % 4 {
                    0 | 1 => (0, "/open"),
                    2 => (0, "/write"),
                    _ => (1, "/write"),
                };
                send(&app, path, Some(&auth[key])).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for layer in &layers {
        layer.flush_usage().await.unwrap();
    }
    // Per task, 475 requests with a key, spread over the four cases by `(task + i) % 4`.
    let mut expected = [[0u64; 4]; 1];
    for task in 0..20usize {
        for i in (0..500usize).filter(|i| i % 20 != 19) {
            expected[0][(task + i) % 4] += 1;
        }
    }
    let [cases] = expected;
    let mut reader_counts = OutcomeCounts::default();
    reader_counts.add(KeyOutcome::Allowed, cases[0] + cases[1]);
    reader_counts.add(KeyOutcome::InsufficientScope, cases[2]);
    let mut writer_counts = OutcomeCounts::default();
    writer_counts.add(KeyOutcome::Allowed, cases[3]);
    assert_eq!(cases.iter().sum::<u64>(), 9_500);
    vec![
        (reader.id().clone(), reader_counts),
        (writer.id().clone(), writer_counts),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_requests_over_two_layers_add_up_exactly() {
    let store = Recording::new();
    let expected = ten_thousand_requests_over_two_layers(store.clone(), store.clone()).await;
    for (id, counts) in expected {
        assert_eq!(store.key_total(&id), counts);
    }
    assert_eq!(store.anonymous()[&AnonymousOutcome::Missing], 500);
    assert_eq!(store.requests(), 10_000);
    assert!(
        store.state().batches.len() >= 2,
        "both layers wrote, and the background flushes ran"
    );
}

/// What `store` kept: each key's counts from `from` to today, all days together, and the
/// requests without a key.
async fn kept(
    store: &impl KeyStore,
    expected: &[(KeyId, OutcomeCounts)],
    from: Day,
) -> (Vec<(KeyId, OutcomeCounts)>, u64) {
    let today = Day::today();
    let mut kept = Vec::new();
    for (id, _) in expected {
        let mut total = OutcomeCounts::default();
        for day in store.usage(id, from, today).await.unwrap() {
            total.add_all(&day.counts);
        }
        kept.push((id.clone(), total));
    }
    let missing = store
        .anonymous_usage(from, today)
        .await
        .unwrap()
        .iter()
        .filter(|increment| increment.outcome == AnonymousOutcome::Missing)
        .map(|increment| increment.count)
        .sum();
    (kept, missing)
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_requests_over_two_layers_on_one_sqlite_file_add_up_exactly() {
    use tower_api_key::SqliteStore;

    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let format = KeyFormat::new("om").unwrap();
    let one = SqliteStore::open(&path, format.clone()).await.unwrap();
    one.migrate().await.unwrap();
    // A second store on the same file: another process's, as far as the layers can tell.
    let other = SqliteStore::open(&path, format).await.unwrap();
    let from = Day::today();
    let expected = ten_thousand_requests_over_two_layers(one.clone(), other).await;
    let (kept, missing) = kept(&one, &expected, from).await;
    assert_eq!(kept, expected);
    assert_eq!(missing, 500);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_requests_over_two_layers_on_one_postgres_database_add_up_exactly() {
    use tower_api_key::PostgresStore;

    common::init_tracing();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let format = KeyFormat::new("om").unwrap();
    let schema = format!(
        "test_usage_{}",
        &format
            .generate(Environment::Test)
            .unwrap()
            .digest()
            .to_hex()[..12]
    );
    let connect = || async {
        PostgresStore::connect(&url, format.clone())
            .await
            .map(|store| store.with_schema(&schema))
    };
    let one = match connect().await {
        Ok(store) => store,
        Err(err) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: PostgreSQL at {url} is unreachable ({err})");
            return;
        }
        Err(err) => panic!("PostgreSQL at {url} is unreachable, and CI is set: {err}"),
    };
    one.migrate().await.unwrap();
    // A second store with its own pool: another instance, as far as the layers can tell.
    let other = connect().await.unwrap();
    let from = Day::today();
    let expected = ten_thousand_requests_over_two_layers(one.clone(), other.clone()).await;
    let (kept, missing) = kept(&one, &expected, from).await;
    tower_api_key::store::sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(one.pool())
        .await
        .unwrap();
    assert_eq!(kept, expected);
    assert_eq!(missing, 500);
}

// ---------------------------------------------------------------------------------------------
// Flushes: shutdown, outages, last uses, stores that keep nothing, pruning
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_background_task_flushes_and_dropping_the_layer_writes_what_is_left() {
    let store = Recording::new();
    let key = store.key("Reader", Environment::Live, &[]).await;
    let layer = ApiKeyLayer::builder(store.clone()).usage(often()).build();
    let app = routes().layer(layer.clone());
    send_times(&app, 5, "/open", Some(&bearer(&key))).await;
    eventually("a background flush", || {
        store.key_total(key.id()).allowed == 5
    })
    .await;

    // With a flush interval far longer than the test, only the layer's end can write these.
    let layer = ApiKeyLayer::builder(store.clone())
        .usage(UsageSettings::new().flush_interval(Duration::from_secs(3600)))
        .build();
    let app = routes().layer(layer.clone());
    send_times(&app, 3, "/open", Some(&bearer(&key))).await;
    assert_eq!(store.key_total(key.id()).allowed, 5);
    drop((app, layer));
    eventually("the final flush", || store.key_total(key.id()).allowed == 8).await;
}

#[tokio::test]
async fn the_background_task_does_not_keep_the_layer_or_its_store_alive() {
    let store = Recording::new();
    let key = store.key("Reader", Environment::Live, &[]).await;
    let layer = ApiKeyLayer::builder(store.clone()).usage(often()).build();
    let app = routes().layer(layer.clone());
    send_times(&app, 2, "/open", Some(&bearer(&key))).await;
    let state = Arc::downgrade(&store.state);
    let keys = store.keys.clone();
    drop((app, layer, store));
    eventually("the store let go by the layer's task", || {
        state.strong_count() == 0
    })
    .await;
    drop(keys);
}

#[tokio::test]
async fn a_store_outage_during_flushes_loses_nothing_and_is_retried() {
    let store = Recording::new();
    let key = store.key("Reader", Environment::Live, &[]).await;
    store.state().outage = u32::MAX;
    let (layer, recorder) = with_metrics(ApiKeyLayer::builder(store.clone()).usage(often()));
    let app = routes().layer(layer.clone());
    for round in 0..5 {
        send_times(&app, 100, "/open", Some(&bearer(&key))).await;
        send_times(&app, 10, "/open", None).await;
        let refused = store.state().refused;
        eventually("a refused flush", || store.state().refused > refused).await;
        assert!(store.state().batches.is_empty(), "round {round}");
    }
    assert!(matches!(
        layer.flush_usage().await,
        Err(StoreError::Unavailable(_))
    ));
    let rendered = recorder.handle().render();
    assert!(
        metric(&rendered, "tower_api_key_usage_flushes_total", &["failed"]).unwrap() >= 5.0,
        "{rendered}"
    );
    assert!(common::logs().contains("usage counts could not be written to the key store"));

    // The database is back.
    store.state().outage = 0;
    eventually("the counts written", || store.requests() == 550).await;
    assert_eq!(store.key_total(key.id()).allowed, 500);
    assert_eq!(store.anonymous()[&AnonymousOutcome::Missing], 50);
    layer.flush_usage().await.unwrap();
    assert_eq!(store.requests(), 550, "written once");
    let rendered = recorder.handle().render();
    assert!(metric(&rendered, "tower_api_key_usage_flushes_total", &["\"ok\""]).unwrap() >= 1.0);
    assert_eq!(
        metric(&rendered, "tower_api_key_usage_dropped_requests_total", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_write_whose_acknowledgement_was_lost_is_not_counted_twice() {
    let store = Recording::new();
    let key = store.key("Reader", Environment::Live, &[]).await;
    store.state().lost_acks = 1;
    let layer = ApiKeyLayer::builder(store.clone())
        .usage(UsageSettings::new().flush_interval(Duration::from_secs(3600)))
        .build();
    let app = routes().layer(layer.clone());
    send_times(&app, 3, "/open", Some(&bearer(&key))).await;
    send_times(&app, 1, "/open", None).await;
    // Committed, but the layer cannot know.
    assert!(matches!(
        layer.flush_usage().await,
        Err(StoreError::Unavailable(_))
    ));
    send_times(&app, 2, "/open", Some(&bearer(&key))).await;
    layer.flush_usage().await.unwrap();

    let today = Day::today();
    let kept = store.keys.usage(key.id(), today, today).await.unwrap();
    assert_eq!(kept[0].counts.allowed, 5, "counted once");
    let anonymous = store.keys.anonymous_usage(today, today).await.unwrap();
    assert_eq!(anonymous.len(), 1);
    assert_eq!(anonymous[0].count, 1);
    // The failed batch again as it was, then the newer counts in a batch of their own.
    let batches = store.state().batches.clone();
    assert_eq!(batches.len(), 3);
    assert!(batches[0].id.is_some());
    assert_eq!(batches[1], batches[0]);
    assert_ne!(batches[2].id, batches[0].id);
    assert_eq!(batches[2].keys[0].counts.allowed, 2);
}

#[tokio::test]
async fn past_the_cap_new_counts_are_dropped_counted_and_logged() {
    let store = Recording::new();
    let mut keys = Vec::new();
    for i in 0..5 {
        keys.push(store.key(&format!("Key {i}"), Environment::Live, &[]).await);
    }
    store.state().outage = u32::MAX;
    let (layer, recorder) = with_metrics(
        ApiKeyLayer::builder(store.clone()).usage(UsageSettings::new().max_pending(4)),
    );
    let app = routes().layer(layer.clone());
    for key in &keys {
        send_times(&app, 10, "/open", Some(&bearer(key))).await;
    }
    assert!(layer.flush_usage().await.is_err());
    // Five keys' counts and last uses do not fit in four entries.
    let rendered = recorder.handle().render();
    let dropped = metric(&rendered, "tower_api_key_usage_dropped_requests_total", &[]).unwrap();
    assert!(dropped >= 10.0 && dropped % 10.0 == 0.0, "{dropped}");
    assert!(common::logs().contains("usage counts dropped"));

    // Held counts keep adding up; what was dropped stays dropped.
    for key in &keys {
        send_times(&app, 1, "/open", Some(&bearer(key))).await;
    }
    store.state().outage = 0;
    layer.flush_usage().await.unwrap();
    let rendered = recorder.handle().render();
    let dropped_now = metric(&rendered, "tower_api_key_usage_dropped_requests_total", &[]).unwrap();
    assert_eq!(
        store.requests() as f64 + dropped_now,
        55.0,
        "every request written or counted as dropped"
    );
}

#[tokio::test]
async fn last_used_is_written_at_most_once_a_minute_per_key() {
    let store = Recording::new();
    let key = store.key("Busy", Environment::Live, &[]).await;
    let clock = clock();
    let start = clock.now();
    let layer = ApiKeyLayer::builder(store.clone())
        .clock(clock.clone())
        .usage(often())
        .build();
    let app = routes().layer(layer.clone());
    let flushed = |allowed: u64| {
        let store = store.clone();
        let id = key.id().clone();
        move || store.key_total(&id).allowed == allowed
    };

    send_times(&app, 1_000, "/open", Some(&bearer(&key))).await;
    eventually("the first flush", flushed(1_000)).await;
    // Whole seconds: the layer keeps last uses to the second.
    let second = |at: SystemTime| at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(
        store
            .last_used(key.id())
            .iter()
            .map(|at| second(*at))
            .collect::<Vec<_>>(),
        [second(start)]
    );

    // Half a minute later: counted, but the last use is not written again.
    clock.advance(Duration::from_secs(30));
    send_times(&app, 1_000, "/open", Some(&bearer(&key))).await;
    eventually("the second flush", flushed(2_000)).await;
    assert_eq!(store.last_used(key.id()).len(), 1);

    // A minute after the one written: written again, once.
    clock.advance(Duration::from_secs(31));
    send_times(&app, 1_000, "/open", Some(&bearer(&key))).await;
    eventually("the third flush", flushed(3_000)).await;
    let written: Vec<u64> = store
        .last_used(key.id())
        .iter()
        .map(|at| second(*at))
        .collect();
    assert_eq!(written, [second(start), second(start) + 61]);
    // Shutdown writes the latest whatever its age; nothing is newer here.
    layer.flush_usage().await.unwrap();
    assert_eq!(store.last_used(key.id()).len(), 2);
    clock.advance(Duration::from_secs(5));
    send_times(&app, 1, "/open", Some(&bearer(&key))).await;
    layer.flush_usage().await.unwrap();
    assert_eq!(store.last_used(key.id()).len(), 3);
}

#[tokio::test]
async fn a_store_that_keeps_no_usage_is_told_once_and_counting_stops() {
    let store = Recording::new();
    store.state().keeps_none = true;
    let key = store.key("Reader", Environment::Live, &[]).await;
    let layer = ApiKeyLayer::builder(store.clone()).build();
    let app = routes().layer(layer.clone());
    send_times(&app, 3, "/open", Some(&bearer(&key))).await;
    assert!(matches!(
        layer.flush_usage().await,
        Err(StoreError::UsageNotKept)
    ));
    send_times(&app, 3, "/open", Some(&bearer(&key))).await;
    layer.flush_usage().await.unwrap();
    layer.flush_usage().await.unwrap();
    assert_eq!(store.state().calls, 1, "asked once");
    assert!(common::logs().contains("the key store keeps no usage counts"));
}

#[tokio::test]
async fn old_counts_are_pruned_past_the_retention() {
    let store = Recording::new();
    let clock = clock();
    let layer = ApiKeyLayer::builder(store.clone())
        .clock(clock.clone())
        .usage(
            often()
                .retention_days(Some(30))
                .prune_interval(Duration::from_millis(20)),
        )
        .build();
    // The task starts with the layer, in a runtime; requests are not needed.
    eventually("two prunes", || store.state().prunes.len() >= 2).await;
    let today = Day::of(clock.now());
    assert!(store
        .state()
        .prunes
        .iter()
        .all(|&day| day == today.add_days(-29)));
    drop(layer);

    let kept = Recording::new();
    let layer = ApiKeyLayer::builder(kept.clone())
        .usage(often().retention_days(None))
        .build();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(kept.state().prunes.is_empty(), "kept for ever");
    drop(layer);
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_requests_by_outcome_and_environment_and_per_key_only_when_asked() {
    let store = Recording::new();
    let live = store.key("Live", Environment::Live, &[]).await;
    let test = store.key("Test", Environment::Test, &[]).await;
    let revoked = store.key("Gone", Environment::Live, &[]).await;
    store.revoke(revoked.id()).await.unwrap();
    let (layer, recorder) = with_metrics(ApiKeyLayer::builder(store.clone()));
    let app = routes().layer(layer.clone());
    send_times(&app, 4, "/open", Some(&bearer(&live))).await;
    send_times(&app, 2, "/write", Some(&bearer(&live))).await;
    send_times(&app, 3, "/open", Some(&bearer(&test))).await;
    send_times(&app, 1, "/open", Some(&bearer(&revoked))).await;
    send_times(&app, 5, "/open", None).await;

    let rendered = recorder.handle().render();
    let requests = |outcome: &str, environment: &str| {
        metric(
            &rendered,
            "tower_api_key_requests_total",
            &[
                &format!("outcome=\"{outcome}\""),
                &format!("environment=\"{environment}\""),
            ],
        )
    };
    assert_eq!(requests("allowed", "live"), Some(4.0), "{rendered}");
    assert_eq!(requests("insufficient_scope", "live"), Some(2.0));
    assert_eq!(requests("allowed", "test"), Some(3.0));
    assert_eq!(requests("revoked", "live"), Some(1.0));
    assert_eq!(requests("missing", "none"), Some(5.0));
    assert_eq!(requests("unknown", "live"), Some(0.0));
    assert_eq!(
        requests("allowed", "none"),
        None,
        "no series that cannot move"
    );
    // Three keys, each looked up once; the rest from the cache.
    assert_eq!(
        metric(&rendered, "tower_api_key_cache_misses_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        metric(&rendered, "tower_api_key_cache_hits_total", &[]),
        Some(7.0)
    );
    assert!(metric(
        &rendered,
        "tower_api_key_resolver_duration_seconds_count",
        &[]
    )
    .is_some());
    assert!(!rendered.contains("key_id"), "no key ids unless asked");
    for key in [&live, &test, &revoked] {
        assert!(!rendered.contains(key.key.expose_secret()));
    }

    let (layer, recorder) = with_metrics(ApiKeyLayer::builder(store.clone()).metrics_per_key());
    // Per-key series are made at each flush, with the recorder installed then: in a program,
    // the global one; here, this thread's (the flush runs on it, in this runtime).
    let _installed = metrics::set_default_local_recorder(&recorder);
    let app = routes().layer(layer.clone());
    send_times(&app, 4, "/open", Some(&bearer(&live))).await;
    send_times(&app, 1, "/write", Some(&bearer(&live))).await;
    layer.flush_usage().await.unwrap();
    let rendered = recorder.handle().render();
    let id = format!("key_id=\"{}\"", live.id());
    assert_eq!(
        metric(
            &rendered,
            "tower_api_key_key_requests_total",
            &[&id, "outcome=\"allowed\""]
        ),
        Some(4.0),
        "{rendered}"
    );
    assert_eq!(
        metric(
            &rendered,
            "tower_api_key_key_requests_total",
            &[&id, "outcome=\"insufficient_scope\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_cache_gauges_follow_the_cache() {
    let store = Recording::new();
    let key = store.key("Reader", Environment::Live, &[]).await;
    let unknown = store.format().generate(Environment::Live).unwrap();
    let (layer, recorder) = with_metrics(ApiKeyLayer::builder(store.clone()).usage(often()));
    let app = routes().layer(layer.clone());
    send(&app, "/open", Some(&bearer(&key))).await;
    send(
        &app,
        "/open",
        Some(&format!("Bearer {}", unknown.expose_secret())),
    )
    .await;
    let entries = |kind: &str| {
        metric(
            &recorder.handle().render(),
            "tower_api_key_cache_entries",
            &[&format!("kind=\"{kind}\"")],
        )
    };
    eventually("the gauges", || {
        entries("found") == Some(1.0) && entries("unknown") == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn a_failing_resolver_is_counted_as_unavailable_with_its_errors() {
    common::init_tracing();
    let format = KeyFormat::new("om").unwrap();
    let key = format.generate(Environment::Live).unwrap();
    let failing =
        |_: KeyDigest| async { Err::<Option<KeyRecord>, _>(ResolveError::new("database down")) };
    let (layer, recorder) = with_metrics(ApiKeyLayer::resolver_builder(format, failing));
    let app = routes().layer(layer);
    let status = send(
        &app,
        "/open",
        Some(&format!("Bearer {}", key.expose_secret())),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let rendered = recorder.handle().render();
    assert_eq!(
        metric(
            &rendered,
            "tower_api_key_requests_total",
            &["outcome=\"unavailable\"", "environment=\"live\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &rendered,
            "tower_api_key_resolver_errors_total",
            &["reason=\"error\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn each_invalidation_watcher_reports_its_connection_by_name() {
    use futures_util::StreamExt;
    use tower_api_key::{BusError, ChannelHealth, InvalidationBus, InvalidationStream, Watcher};

    /// Subscribes once, holds the subscription until told to drop it, then refuses.
    struct Once(Arc<tokio::sync::Notify>, Arc<Mutex<bool>>);

    #[async_trait]
    impl InvalidationBus for Once {
        async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
            if std::mem::replace(&mut *self.1.lock().unwrap(), true) {
                return Err(BusError::new("connection refused"));
            }
            let lost = self.0.clone();
            Ok(futures_util::stream::once(async move {
                lost.notified().await;
                Err(BusError::new("connection reset"))
            })
            .boxed())
        }
    }

    common::init_tracing();
    let recorder = PrometheusBuilder::new().build_recorder();
    let lose = Arc::new(tokio::sync::Notify::new());
    let watcher = metrics::with_local_recorder(&recorder, || {
        Watcher::builder()
            .name("orders-bus")
            .backoff(Duration::from_millis(5), Duration::from_millis(10))
            .spawn(Once(lose.clone(), Arc::default()), Invalidations::new())
    });
    let gauge = || {
        metric(
            &recorder.handle().render(),
            "tower_api_key_invalidation_channel_connected",
            &["watcher=\"orders-bus\""],
        )
    };
    let mut health = watcher.health_changes();
    health.wait_for(ChannelHealth::is_connected).await.unwrap();
    assert_eq!(gauge(), Some(1.0));
    lose.notify_one();
    health
        .wait_for(|health| !health.is_connected())
        .await
        .unwrap();
    eventually("the gauge down", || gauge() == Some(0.0)).await;
    let losses = metric(
        &recorder.handle().render(),
        "tower_api_key_invalidation_channel_losses_total",
        &["watcher=\"orders-bus\""],
    );
    assert!(losses >= Some(1.0), "{losses:?}");
}
