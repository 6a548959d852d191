//! The cache's coherence rules, seen from outside: one resolver call per key under load,
//! revocation on the very next request even against a slow in-flight lookup, expiry checked on
//! cache hits, errors never cached, and floods of unknown keys kept away from real ones.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use common::{Behaviour, Probe};
use http::{header, Request, StatusCode};
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_api_key::{
    ApiKeyLayer, ApiKeyLayerBuilder, Environment, KeyFormat, KeyStore, MemoryStore, NewKey,
};
use tower_api_key::{Clock, ManualClock};

const INVALID_TOKEN: &str = r#"Bearer realm="api", error="invalid_token""#;

fn format() -> KeyFormat {
    KeyFormat::new("om").unwrap()
}

fn app(layer: ApiKeyLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

fn builder(probe: &Probe) -> ApiKeyLayerBuilder {
    ApiKeyLayer::resolver_builder(format(), probe.clone())
}

async fn status(app: &Router, key: &str) -> (StatusCode, Option<String>) {
    let request = Request::get("/")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), challenge)
}

async fn setup() -> (Probe, String, tower_api_key::KeyId) {
    common::init_tracing();
    let store = MemoryStore::new(format());
    let created = store
        .create(NewKey::new("Production", Environment::Live))
        .await
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    (Probe::new(store), key, created.id().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_first_requests_make_one_resolver_call() {
    let (probe, key, _) = setup().await;
    probe.set(Behaviour::Delay(Duration::from_millis(100)));
    let layer = builder(&probe).build();
    let app = app(layer.clone());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let app = app.clone();
            let key = key.clone();
            tokio::spawn(async move { status(&app, &key).await.0 })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(probe.calls(), 1);
    assert_eq!(layer.cache_stats().resolver_calls, 1);
    common::assert_logs_clean(&[&key]);
}

#[tokio::test]
async fn revoking_a_cached_key_takes_effect_on_the_next_request() {
    let (probe, key, id) = setup().await;
    let app = app(builder(&probe).build());
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    assert_eq!(probe.calls(), 1, "the second request was a cache hit");

    probe.store.revoke(&id).await.unwrap();
    assert_eq!(
        status(&app, &key).await,
        (StatusCode::UNAUTHORIZED, Some(INVALID_TOKEN.to_owned()))
    );
    assert_eq!(probe.calls(), 2);
    common::assert_logs_clean(&[&key]);
}

/// Starts a request whose lookup reads the store, then waits until `release` is notified.
/// Returns once the lookup has read the store.
async fn start_stalled_request(
    probe: &Probe,
    app: &Router,
    key: &str,
) -> (tokio::task::JoinHandle<StatusCode>, Arc<Notify>) {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    probe.set(Behaviour::GateFirst {
        entered: entered.clone(),
        release: release.clone(),
    });
    let request = tokio::spawn({
        let (app, key) = (app.clone(), key.to_owned());
        async move { status(&app, &key).await.0 }
    });
    entered.notified().await;
    (request, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_began_before_a_revocation_and_ends_after_it_is_not_trusted() {
    let (probe, key, id) = setup().await;
    let app = app(builder(&probe).build());
    // Request A's lookup reads the key as valid, then stalls.
    let (first, release) = start_stalled_request(&probe, &app, &key).await;

    // The key is revoked while A's lookup is still out.
    probe.store.revoke(&id).await.unwrap();

    // A request that starts now must not join A's stale lookup.
    assert_eq!(
        status(&app, &key).await,
        (StatusCode::UNAUTHORIZED, Some(INVALID_TOKEN.to_owned()))
    );
    assert_eq!(probe.calls(), 2);

    // A's lookup ends after the revocation. A itself began before it, so it may pass...
    release.notify_one();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // ...but its stale answer must not have been cached.
    assert_eq!(status(&app, &key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(probe.calls(), 2, "the revoked verdict came from the cache");
    common::assert_logs_clean(&[&key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lookup_that_finishes_after_the_revocation_is_not_cached() {
    let (probe, key, id) = setup().await;
    let app = app(builder(&probe).build());
    let (first, release) = start_stalled_request(&probe, &app, &key).await;
    probe.store.revoke(&id).await.unwrap();
    release.notify_one();
    first.await.unwrap();

    // The first request after the stale lookup finished: refused, after a fresh lookup.
    assert_eq!(
        status(&app, &key).await,
        (StatusCode::UNAUTHORIZED, Some(INVALID_TOKEN.to_owned()))
    );
    assert_eq!(probe.calls(), 2);
    common::assert_logs_clean(&[&key]);
}

#[tokio::test]
async fn expiry_is_enforced_on_cache_hits() {
    common::init_tracing();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let store = MemoryStore::new(format()).with_clock(clock.clone());
    let created = store
        .create(
            NewKey::new("Expiring", Environment::Test)
                .expires_at(clock.now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let key = created.key.expose_secret();
    let probe = Probe::new(store);
    let app = app(builder(&probe)
        .clock(clock.clone())
        .cache_ttl(Duration::from_secs(86_400))
        .build());
    assert_eq!(status(&app, key).await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(3599));
    assert_eq!(status(&app, key).await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        status(&app, key).await,
        (StatusCode::UNAUTHORIZED, Some(INVALID_TOKEN.to_owned()))
    );
    assert_eq!(probe.calls(), 1, "all three answers came from one lookup");
    common::assert_logs_clean(&[key]);
}

#[tokio::test]
async fn errors_and_timeouts_are_never_cached() {
    let (probe, key, _) = setup().await;
    let layer = builder(&probe)
        .resolver_timeout(Duration::from_millis(50))
        .build();
    let app = app(layer.clone());
    probe.set(Behaviour::Fail);
    assert_eq!(status(&app, &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&app, &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(probe.calls(), 2);
    probe.set(Behaviour::Hang);
    assert_eq!(status(&app, &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&app, &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(probe.calls(), 4);
    let stats = layer.cache_stats();
    assert_eq!(
        (stats.entries, stats.negative_entries, stats.in_flight),
        (0, 0, 0)
    );
    probe.set(Behaviour::Normal);
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    assert_eq!(probe.calls(), 5);
    common::assert_logs_clean(&[&key]);
}

#[tokio::test]
async fn a_panicking_resolver_gives_503_and_the_key_recovers() {
    let (probe, key, _) = setup().await;
    let layer = builder(&probe).build();
    let app = app(layer.clone());
    probe.set(Behaviour::Panic);
    assert_eq!(status(&app, &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&app, &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(layer.cache_stats().in_flight, 0);
    probe.set(Behaviour::Normal);
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    assert_eq!(probe.calls(), 3);
    common::assert_logs_clean(&[&key]);
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_cancel_the_lookup() {
    let (probe, key, _) = setup().await;
    probe.set(Behaviour::Delay(Duration::from_millis(100)));
    let app = app(builder(&probe).build());
    // Give up on the first request long before the resolver answers.
    let abandoned = tokio::time::timeout(Duration::from_millis(10), status(&app, &key)).await;
    assert!(abandoned.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The lookup finished on its own and its answer was cached.
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    assert_eq!(probe.calls(), 1);
    common::assert_logs_clean(&[&key]);
}

#[tokio::test]
async fn unknown_keys_are_cached_negatively_and_briefly() {
    let (probe, key, _) = setup().await;
    let unknown = format().generate(Environment::Live).unwrap();
    let unknown = unknown.expose_secret();
    let layer = builder(&probe)
        .negative_cache_ttl(Duration::from_millis(300))
        .build();
    let app = app(layer.clone());
    for _ in 0..5 {
        assert_eq!(status(&app, unknown).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(probe.calls(), 1);
    let stats = layer.cache_stats();
    assert_eq!((stats.entries, stats.negative_entries), (0, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&app, unknown).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(probe.calls(), 2, "the negative entry expired");
    common::assert_logs_clean(&[&key, unknown]);
}

#[tokio::test]
async fn a_flood_of_unknown_keys_leaves_good_keys_cached_and_the_caches_bounded() {
    let (probe, key, _) = setup().await;
    // About eviction, not expiry: a TTL longer than the test however slow the machine.
    let layer = builder(&probe).cache_ttl(Duration::from_secs(3600)).build();
    let app = app(layer.clone());
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);

    let format = format();
    let flood: Vec<String> = (0..100_000)
        .map(|_| {
            format
                .generate(Environment::Live)
                .unwrap()
                .expose_secret()
                .to_owned()
        })
        .collect();
    for chunk in flood.chunks(1_000) {
        let requests = chunk.iter().map(|unknown| status(&app, unknown));
        for (code, _) in futures_util::future::join_all(requests).await {
            assert_eq!(code, StatusCode::UNAUTHORIZED);
        }
    }
    // Malformed keys on top: never looked up.
    for i in 0..10_000u32 {
        let mut forged = flood[i as usize].clone().into_bytes();
        forged[10] = if forged[10] == b'x' { b'y' } else { b'x' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(status(&app, &forged).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        probe.calls(),
        1 + 100_000,
        "one lookup per distinct well-formed key"
    );

    // The good key is still cached: no new lookup.
    assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    assert_eq!(probe.calls(), 1 + 100_000);
    let stats = layer.cache_stats();
    assert_eq!(
        stats.entries, 1,
        "unknown keys never enter the cache of found keys"
    );
    assert!(stats.negative_entries <= 10_000, "{stats:?}");
    assert!(stats.negative_entries > 0, "{stats:?}");
    common::assert_logs_clean(&[&key]);
}

#[tokio::test]
async fn good_keys_keep_a_hit_rate_above_99_percent_through_a_random_key_flood() {
    common::init_tracing();
    let format = format();
    let store = MemoryStore::new(format.clone());
    let mut good = Vec::new();
    for i in 0..1_000 {
        let created = store
            .create(NewKey::new(format!("Integration {i}"), Environment::Live))
            .await
            .unwrap();
        good.push(created.key.expose_secret().to_owned());
    }
    // Counts lookups of good keys and of everything else apart.
    let good_digests: std::collections::HashSet<[u8; 32]> = good
        .iter()
        .map(|key| *tower_api_key::KeyDigest::of(key.as_bytes()).as_bytes())
        .collect();
    let good_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let other_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let resolver = {
        let (store, good_calls, other_calls) =
            (store.clone(), good_calls.clone(), other_calls.clone());
        move |digest: tower_api_key::KeyDigest| {
            let counter = if good_digests.contains(digest.as_bytes()) {
                &good_calls
            } else {
                &other_calls
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let store = store.clone();
            async move { tower_api_key::KeyResolver::resolve(&store, &digest).await }
        }
    };
    // About eviction, not expiry: a TTL longer than the test however slow the machine.
    let layer = ApiKeyLayer::resolver_builder(format.clone(), resolver)
        .cache_ttl(Duration::from_secs(3600))
        .build();
    let app = app(layer.clone());
    for key in &good {
        assert_eq!(status(&app, key).await.0, StatusCode::OK);
    }
    let warm = good_calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(warm, 1_000);

    // 100,000 flood requests: half well-formed unknown keys, half random bytes of the right
    // shape (which fail the checksum), with a good key every tenth request.
    let mut good_requests = 0;
    let mut well_formed = 0;
    for i in 0..100_000usize {
        let flood = if i % 2 == 0 {
            well_formed += 1;
            format
                .generate(Environment::Live)
                .unwrap()
                .expose_secret()
                .to_owned()
        } else {
            let mut random = format
                .generate(Environment::Live)
                .unwrap()
                .expose_secret()
                .as_bytes()
                .to_vec();
            random[30] = if random[30] == b'Q' { b'R' } else { b'Q' };
            String::from_utf8(random).unwrap()
        };
        assert_eq!(status(&app, &flood).await.0, StatusCode::UNAUTHORIZED);
        if i % 10 == 0 {
            good_requests += 1;
            assert_eq!(status(&app, &good[i % good.len()]).await.0, StatusCode::OK);
        }
    }
    let misses = good_calls.load(std::sync::atomic::Ordering::SeqCst) - warm;
    let hit_rate = 1.0 - misses as f64 / good_requests as f64;
    assert!(
        hit_rate > 0.99,
        "good keys' hit rate fell to {hit_rate:.4} ({misses} misses)"
    );
    // Malformed keys made no lookup; each well-formed unknown key made at most one.
    assert!(other_calls.load(std::sync::atomic::Ordering::SeqCst) <= well_formed);
    assert_eq!(layer.cache_stats().entries, 1_000);
    common::assert_logs_clean(&good.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A layer can outlive the runtime that started one of its lookups (a layer shared by several
/// runtimes, or kept across tests). The cancelled lookup must not stay "in flight", or every
/// later request for that key would join it and get `503` for good.
#[test]
fn a_lookup_cancelled_with_its_runtime_does_not_leave_the_key_stuck() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let (probe, key, _) = first.block_on(setup());
    let layer = builder(&probe).build();
    let app = app(layer.clone());
    probe.set(Behaviour::Hang);
    first.block_on(async {
        let started = tokio::time::timeout(Duration::from_millis(20), status(&app, &key)).await;
        assert!(started.is_err(), "the lookup hangs");
    });
    assert_eq!(layer.cache_stats().in_flight, 1);
    // Shutting the runtime down cancels the lookup task.
    drop(first);

    probe.set(Behaviour::Normal);
    runtime().block_on(async {
        // A request that joins the dead lookup is told to retry, never refused...
        let (joined, _) = status(&app, &key).await;
        assert_eq!(joined, StatusCode::SERVICE_UNAVAILABLE);
        // ...and the next one makes a fresh lookup.
        assert_eq!(status(&app, &key).await.0, StatusCode::OK);
        assert_eq!(status(&app, &key).await.0, StatusCode::OK);
    });
    assert_eq!(layer.cache_stats().in_flight, 0);
    assert_eq!(probe.calls(), 2);
    common::assert_logs_clean(&[&key]);
}

/// A key kept outside the crate's stores: changing it announces nothing, as with a manual
/// `UPDATE` or another process. Each lookup reads the key when it starts, then takes `delay`.
#[derive(Clone)]
struct SlowOutsideResolver {
    record: Arc<std::sync::Mutex<Option<tower_api_key::KeyRecord>>>,
    digest: tower_api_key::KeyDigest,
    delay: Duration,
}

#[async_trait::async_trait]
impl tower_api_key::KeyResolver for SlowOutsideResolver {
    async fn resolve(
        &self,
        digest: &tower_api_key::KeyDigest,
    ) -> Result<Option<tower_api_key::KeyRecord>, tower_api_key::ResolveError> {
        let read = if *digest == self.digest {
            self.record.lock().unwrap().clone()
        } else {
            None
        };
        tokio::time::sleep(self.delay).await;
        Ok(read)
    }
}

/// A layer with 300 ms TTLs on a key kept outside the crate whose lookups take 1.5 s, and a
/// request A whose lookup reads the key (valid if `exists`, unknown if not); 100 ms later the
/// key is revoked, or created, outside the crate. Returns the app, the key, A, and when the
/// change was made.
async fn slow_lookup_then_outside_change(
    exists: bool,
) -> (
    Router,
    tower_api_key::PlaintextKey,
    tokio::task::JoinHandle<StatusCode>,
    tokio::time::Instant,
) {
    common::init_tracing();
    let key = format().generate(Environment::Live).unwrap();
    let record = tower_api_key::KeyRecord::new(
        "key_outside",
        Environment::Live,
        tower_api_key::ScopeSet::empty(),
    );
    let resolver = SlowOutsideResolver {
        record: Arc::new(std::sync::Mutex::new(exists.then(|| record.clone()))),
        digest: key.digest(),
        delay: Duration::from_millis(1_500),
    };
    let layer = ApiKeyLayer::resolver_builder(format(), resolver.clone())
        .cache_ttl(Duration::from_millis(300))
        .negative_cache_ttl(Duration::from_millis(300))
        .build();
    let app = app(layer);
    let a = send(&app, &key);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let changed = if exists {
        record.with_revoked_at(SystemTime::now())
    } else {
        record
    };
    *resolver.record.lock().unwrap() = Some(changed);
    (app, key, a, tokio::time::Instant::now())
}

fn send(app: &Router, key: &tower_api_key::PlaintextKey) -> tokio::task::JoinHandle<StatusCode> {
    let (app, key) = (app.clone(), key.expose_secret().to_owned());
    tokio::spawn(async move { status(&app, &key).await.0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_ttl_of_a_lookup_in_flight_does_not_join_it() {
    let (app, key, a, changed) = slow_lookup_then_outside_change(true).await;
    // 500 ms after the change, more than the TTL: B must not join A's lookup, which began
    // before the change (and began more than the TTL before B).
    tokio::time::sleep_until(changed + Duration::from_millis(500)).await;
    let b = send(&app, &key);
    assert_eq!(
        a.await.unwrap(),
        StatusCode::OK,
        "A's lookup began before the change"
    );
    assert_eq!(
        b.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "B began 500 ms after it"
    );
    common::assert_logs_clean(&[key.expose_secret()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_ttl_is_not_served_from_the_cache() {
    let (app, key, a, changed) = slow_lookup_then_outside_change(true).await;
    assert_eq!(
        a.await.unwrap(),
        StatusCode::OK,
        "A's lookup began before the change"
    );
    // A's answer came 1.5 s after its lookup began, past the TTL counted from that start: it
    // was not cached, so C, 1.55 s after the change, is not served from it.
    tokio::time::sleep_until(changed + Duration::from_millis(1_550)).await;
    let c = send(&app, &key);
    assert_eq!(
        c.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "C began 1.55 s after it"
    );
    common::assert_logs_clean(&[key.expose_secret()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_answer_slower_than_the_negative_ttl_is_not_served_from_the_cache() {
    // The key does not exist when A's lookup reads, and is created outside 100 ms later.
    let (app, key, a, changed) = slow_lookup_then_outside_change(false).await;
    assert_eq!(
        a.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "A's lookup began before it"
    );
    tokio::time::sleep_until(changed + Duration::from_millis(1_550)).await;
    let c = send(&app, &key);
    assert_eq!(c.await.unwrap(), StatusCode::OK, "C began 1.55 s after it");
    common::assert_logs_clean(&[key.expose_secret()]);
}
