//! The cost of the layer per request, side by side with a bare router and hand-written
//! baselines, in one run. Each variant sends one request through `Router::oneshot` on a
//! `current_thread` runtime, building the request in each iteration with the same
//! `Authorization` header length.
//!
//! After criterion's own report, a table gives each variant's median and its ratio to the bare
//! router measured in the same run. Criterion measures one variant after another, so on a shared
//! machine whose speed drifts the ratios drift with it; a second table therefore times the
//! variants in interleaved passes (every variant once per pass, in a rotating order) and gives
//! the median over the passes of each variant's ratio to the bare router of the same pass, and
//! of its overhead over bare as a share of the strongest hand-written middleware's overhead in
//! the same pass. Three probes of axum's own plumbing for a layer on one route (no work of
//! ours) run only in the passes. See BENCHMARKS.md for figures and how to reproduce them.
//!
//! The rate-limit variants send a key with a rate of its own that no request reaches through
//! the same layers; what the limiter adds to a cache hit is printed as a share of the layer's own
//! overhead (`hit_no_scope` over `bare`). With the `redis` feature, a layer deciding rates in
//! Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`) is measured by criterion too (not in
//! the passes), and skipped with a message when Redis cannot be reached.
//!
//! ```text
//! cargo bench --bench layer
//! cargo bench --bench layer --features redis
//! ```

mod baselines;
mod report;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::handler::Handler;
use axum::routing::get;
use axum::Router;
use baselines::{
    HandwrittenLayer, HandwrittenPrincipal, HandwrittenSyncLayer, PassthroughLayer,
    StaticBearerLayer,
};
use criterion::{BatchSize, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_api_key::{
    ApiKeyLayer, Environment, KeyDigest, KeyFormat, KeyRecord, KeyStore, MemoryStore, NewKey,
    RateLimit, RequireScopes, ResolveError, Scope, Scoped, UsageSettings,
};

const PRODUCTS_READ: Scope = Scope::from_static("products:read");
const GROUP: &str = "layer";

async fn handler() -> &'static str {
    "ok"
}

fn request(authorization: &HeaderValue) -> Request<Body> {
    let mut request = Request::get("/v1/products")
        .body(Body::empty())
        .expect("a valid request");
    request
        .headers_mut()
        .insert(AUTHORIZATION, authorization.clone());
    request
}

fn bearer(key: &str) -> HeaderValue {
    HeaderValue::try_from(format!("Bearer {key}")).expect("a key is a valid header value")
}

/// Builds the request, sends it through `app`, and checks the status, like a real client would.
async fn send(app: &Router, authorization: &HeaderValue, expected: StatusCode) {
    let response = app
        .clone()
        .oneshot(request(authorization))
        .await
        .expect("routers are infallible");
    assert_eq!(response.status(), expected);
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let variants = benches(&mut criterion);
    criterion.final_summary();
    print_ratios();
    // Only when benchmarks run, not under `cargo test --benches`.
    if std::env::args().any(|arg| arg == "--bench") {
        interleaved_passes(&variants);
    }
}

/// A router and a request for it, as the interleaved passes send them.
struct Variant {
    name: &'static str,
    app: Router,
    authorization: HeaderValue,
    expected: StatusCode,
}

/// How many interleaved passes, and how long each variant runs in one pass.
const PASSES: usize = 41;
const SLICE: Duration = Duration::from_millis(20);

/// The baseline whose overhead the others are compared with.
const STRONGEST: &str = "handwritten_strongest";

/// Pairs of variants whose difference, as a share of the second one's overhead over bare (the
/// layer's own overhead), is what one feature costs a cache hit: usage recording (a hit with
/// usage recorded, the default, against the same with recording off), and the in-process rate
/// limiter (a key with a rate no request reaches against the same key without a rate).
const SHARES: &[(&str, &str, &str)] = &[
    ("usage recording", "hit_no_scope", "hit_no_scope_usage_off"),
    ("key rate", "hit_rate_key", "hit_no_scope"),
    (
        "key rate, fields off",
        "hit_rate_key_fields_off",
        "hit_no_scope",
    ),
    ("key and owner rates", "hit_rate_key_owner", "hit_no_scope"),
];

/// The widest rate there is: a million requests a second with a burst of 4,294,967,295, which
/// no request of a benchmark reaches, so every rate check lets its request through.
fn unreachable_rate() -> RateLimit {
    RateLimit::per_second(NonZeroU32::new(1_000_000).expect("not zero"))
        .expect("a million a second is valid")
        .with_burst(NonZeroU32::MAX)
}

/// Times every variant in each of [`PASSES`] passes, rotating which goes first, and prints the
/// median over the passes of each variant's time divided by the bare router's in the same pass,
/// and of its overhead divided by [`STRONGEST`]'s in the same pass.
fn interleaved_passes(variants: &[Variant]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // As many requests as the bare router answers in one slice.
    let bare = &variants[0];
    let started = std::time::Instant::now();
    let mut calibration = 0u32;
    while started.elapsed() < SLICE {
        runtime.block_on(send(&bare.app, &bare.authorization, bare.expected));
        calibration += 1;
    }
    let strongest = variants
        .iter()
        .position(|variant| variant.name == STRONGEST)
        .expect("the strongest baseline is measured");
    let position = |name: &str| variants.iter().position(|variant| variant.name == name);
    let pairs: Vec<_> = SHARES
        .iter()
        .filter_map(|&(what, on, off)| Some((what, on, off, position(on)?, position(off)?)))
        .collect();
    let mut pair_shares = vec![Vec::with_capacity(PASSES); pairs.len()];
    let mut ratios = vec![Vec::with_capacity(PASSES); variants.len()];
    let mut shares = vec![Vec::with_capacity(PASSES); variants.len()];
    let mut bare_ns = Vec::with_capacity(PASSES);
    // Each variant's fastest slice: interference only ever adds time, so the fastest slices are
    // the ones it touched least.
    let mut best = vec![f64::INFINITY; variants.len()];
    for pass in 0..PASSES {
        let mut times = vec![0.0; variants.len()];
        for offset in 0..variants.len() {
            let index = (pass + offset) % variants.len();
            let variant = &variants[index];
            let started = std::time::Instant::now();
            runtime.block_on(async {
                for _ in 0..calibration {
                    send(&variant.app, &variant.authorization, variant.expected).await;
                }
            });
            times[index] = started.elapsed().as_nanos() as f64 / f64::from(calibration);
        }
        bare_ns.push(times[0]);
        for (shares, &(.., on, off)) in pair_shares.iter_mut().zip(&pairs) {
            shares.push((times[on] - times[off]) / (times[off] - times[0]));
        }
        let strongest_overhead = times[strongest] - times[0];
        for (((ratios, shares), best), time) in ratios
            .iter_mut()
            .zip(&mut shares)
            .zip(&mut best)
            .zip(&times)
        {
            ratios.push(time / times[0]);
            shares.push((time - times[0]) / strongest_overhead);
            *best = best.min(*time);
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let bare = median(&mut bare_ns);
    let best_bare = best[0];
    println!();
    let best_strongest = best[strongest] - best_bare;
    println!(
        "{PASSES} interleaved passes: median ratio to bare in the same pass (range); \
         fastest slice against bare's fastest;"
    );
    println!(
        "overhead over bare as a share of {STRONGEST}'s: median over the passes, and of the \
         fastest slices"
    );
    println!(
        "{:<30} {:>12} {:>8} {:>17} {:>12} {:>8} {:>9} {:>9}",
        "variant", "over bare", "ratio", "range", "best over", "ratio", "share", "best"
    );
    for (((variant, ratios), shares), best) in
        variants.iter().zip(&mut ratios).zip(&mut shares).zip(&best)
    {
        let ratio = median(ratios);
        println!(
            "{:<30} {:>9.0} ns {:>7.2}x {:>8.2}-{:.2}x {:>9.0} ns {:>7.2}x {:>9.2} {:>9.2}",
            variant.name,
            (ratio - 1.0) * bare,
            ratio,
            ratios[0],
            ratios[PASSES - 1],
            best - best_bare,
            best / best_bare,
            median(shares),
            (best - best_bare) / best_strongest,
        );
    }
    println!("(bare: median {bare:.0} ns, fastest {best_bare:.0} ns per request)");
    for (shares, &(what, on_name, off_name, on, off)) in pair_shares.iter_mut().zip(&pairs) {
        let fastest = (best[on] - best[off]) / (best[off] - best_bare);
        let median_share = median(shares);
        println!(
            "{what} on a cache hit ({on_name} against {off_name}): {median_share:+.3} of the \
             layer's own overhead (median of the passes; {fastest:+.3} between the fastest slices)"
        );
    }
}

/// Runs the criterion benchmarks and returns the variants for the interleaved passes, the bare
/// router first.
fn benches(c: &mut Criterion) -> Vec<Variant> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let format = KeyFormat::new("om").expect("a valid prefix");
    let store = MemoryStore::new(format.clone());
    let created = runtime
        .block_on(
            store.create(NewKey::new("Production", Environment::Live).scopes([PRODUCTS_READ])),
        )
        .expect("a key");
    let key = created.key.expose_secret().to_owned();
    let good = bearer(&key);
    // The same kind of key (same length), with a rate of its own that no request reaches.
    let rated = runtime
        .block_on(
            store.create(
                NewKey::new("Rated", Environment::Live)
                    .scopes([PRODUCTS_READ])
                    .rate_limit(unreachable_rate()),
            ),
        )
        .expect("a key");
    let rated = bearer(rated.key.expose_secret());
    let unknown = bearer(
        format
            .generate(Environment::Live)
            .expect("a key")
            .expose_secret(),
    );
    let mut broken = key.clone().into_bytes();
    broken[20] = if broken[20] == b'a' { b'b' } else { b'a' };
    let malformed = bearer(std::str::from_utf8(&broken).expect("ASCII"));

    let route = || Router::new().route("/v1/products", get(handler));
    let scoped = || {
        Router::new().route(
            "/v1/products",
            get(handler).route_layer(RequireScopes::all([PRODUCTS_READ])),
        )
    };
    // Every router is finished with `with_state(())`, as `axum::serve` does, so that handlers
    // become routes once rather than in every request.

    let mut group = c.benchmark_group(GROUP);

    let bare = route().with_state(());
    group.bench_function("bare", |b| {
        b.to_async(&runtime)
            .iter(|| send(&bare, &good, StatusCode::OK))
    });

    let static_token = route()
        .layer(StaticBearerLayer(good.clone()))
        .with_state(());
    group.bench_function("static_bearer", |b| {
        b.to_async(&runtime)
            .iter(|| send(&static_token, &good, StatusCode::OK))
    });

    let handwritten_cache = moka::future::Cache::new(10_000);
    runtime.block_on(handwritten_cache.insert(
        Sha256::digest(key.as_bytes()).into(),
        Arc::new(HandwrittenPrincipal {
            key_id: "key_1".into(),
            scopes: vec!["products:read".into()],
        }),
    ));
    let handwritten = route()
        .layer(HandwrittenLayer(handwritten_cache))
        .with_state(());
    group.bench_function("handwritten_middleware", |b| {
        b.to_async(&runtime)
            .iter(|| send(&handwritten, &good, StatusCode::OK))
    });

    let strongest_cache = moka::sync::Cache::new(10_000);
    strongest_cache.insert(
        Sha256::digest(key.as_bytes()).into(),
        Arc::new(HandwrittenPrincipal {
            key_id: "key_1".into(),
            scopes: vec!["products:read".into()],
        }),
    );
    let strongest = route()
        .layer(HandwrittenSyncLayer(Arc::new(strongest_cache)))
        .with_state(());
    group.bench_function("handwritten_strongest", |b| {
        b.to_async(&runtime)
            .iter(|| send(&strongest, &good, StatusCode::OK))
    });

    // Usage is recorded into the store by default, as in the other layered variants.
    let layer = ApiKeyLayer::new(store.clone());
    let no_scope = route().layer(layer.clone()).with_state(());
    runtime.block_on(send(&no_scope, &good, StatusCode::OK));
    group.bench_function("hit_no_scope", |b| {
        b.to_async(&runtime)
            .iter(|| send(&no_scope, &good, StatusCode::OK))
    });

    let unrecorded = route()
        .layer(
            ApiKeyLayer::builder(store.clone())
                .usage(UsageSettings::off())
                .build(),
        )
        .with_state(());
    runtime.block_on(send(&unrecorded, &good, StatusCode::OK));
    group.bench_function("hit_no_scope_usage_off", |b| {
        b.to_async(&runtime)
            .iter(|| send(&unrecorded, &good, StatusCode::OK))
    });

    // The same with a Prometheus recorder behind the metrics (the layer takes its handles from
    // the recorder installed when it is built).
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let observed = route()
        .layer(metrics::with_local_recorder(&prometheus, || {
            ApiKeyLayer::new(store.clone())
        }))
        .with_state(());
    runtime.block_on(send(&observed, &good, StatusCode::OK));
    group.bench_function("hit_no_scope_prometheus", |b| {
        b.to_async(&runtime)
            .iter(|| send(&observed, &good, StatusCode::OK))
    });

    // The rate-limit variants: the key with a rate of its own through the same layer (the
    // `RateLimit-Policy` and `RateLimit` fields on, the default), through a layer that writes no
    // fields, and through a layer with an owner rate too (both rates no request reaches).
    runtime.block_on(send(&no_scope, &rated, StatusCode::OK));
    group.bench_function("hit_rate_key", |b| {
        b.to_async(&runtime)
            .iter(|| send(&no_scope, &rated, StatusCode::OK))
    });

    let fields_off = route()
        .layer(
            ApiKeyLayer::builder(store.clone())
                .rate_limit_headers(false)
                .build(),
        )
        .with_state(());
    runtime.block_on(send(&fields_off, &rated, StatusCode::OK));
    group.bench_function("hit_rate_key_fields_off", |b| {
        b.to_async(&runtime)
            .iter(|| send(&fields_off, &rated, StatusCode::OK))
    });

    let with_owner = route()
        .layer(
            ApiKeyLayer::builder(store.clone())
                .owner_rate_limit(unreachable_rate())
                .build(),
        )
        .with_state(());
    runtime.block_on(send(&with_owner, &rated, StatusCode::OK));
    group.bench_function("hit_rate_key_owner", |b| {
        b.to_async(&runtime)
            .iter(|| send(&with_owner, &rated, StatusCode::OK))
    });

    redis(&mut group, &runtime, &store);

    let hit = scoped().layer(layer.clone()).with_state(());
    group.bench_function("hit_with_scope_route_layer", |b| {
        b.to_async(&runtime)
            .iter(|| send(&hit, &good, StatusCode::OK))
    });

    let handler_layer = Router::new()
        .route(
            "/v1/products",
            get(handler.layer(RequireScopes::all([PRODUCTS_READ]))),
        )
        .layer(layer.clone())
        .with_state(());
    group.bench_function("hit_with_scope_handler_layer", |b| {
        b.to_async(&runtime)
            .iter(|| send(&handler_layer, &good, StatusCode::OK))
    });

    tower_api_key::scope_requirement! { struct ReadProducts = all(PRODUCTS_READ); }
    async fn scoped_handler(_: Scoped<ReadProducts>) -> &'static str {
        "ok"
    }
    let extractor = Router::new()
        .route("/v1/products", get(scoped_handler))
        .layer(layer.clone())
        .with_state(());
    group.bench_function("hit_with_scope_extractor", |b| {
        b.to_async(&runtime)
            .iter(|| send(&extractor, &good, StatusCode::OK))
    });

    group.bench_function("miss_memory_store", |b| {
        b.to_async(&runtime).iter_batched(
            || layer.clear_cache(),
            |()| send(&hit, &good, StatusCode::OK),
            BatchSize::PerIteration,
        )
    });

    runtime.block_on(send(&hit, &unknown, StatusCode::UNAUTHORIZED));
    group.bench_function("unknown_negative_hit", |b| {
        b.to_async(&runtime)
            .iter(|| send(&hit, &unknown, StatusCode::UNAUTHORIZED))
    });

    group.bench_function("malformed_checksum", |b| {
        b.to_async(&runtime)
            .iter(|| send(&hit, &malformed, StatusCode::UNAUTHORIZED))
    });

    let failing =
        |_: KeyDigest| async { Err::<Option<KeyRecord>, _>(ResolveError::new("database is down")) };
    let unavailable = scoped()
        .layer(ApiKeyLayer::resolver_builder(format.clone(), failing).build())
        .with_state(());
    group.bench_function("unavailable_503", |b| {
        b.to_async(&runtime)
            .iter(|| send(&unavailable, &good, StatusCode::SERVICE_UNAVAILABLE))
    });

    group.finish();

    // The parts of the work, alone.
    let mut parts = c.benchmark_group("parts");
    let text = key.as_bytes();
    parts.bench_function("parse_key", |b| {
        b.iter(|| format.parse_bytes(std::hint::black_box(text)).is_ok())
    });
    let parsed = format.parse_bytes(text).expect("a valid key");
    parts.bench_function("sha256_digest", |b| {
        b.iter(|| std::hint::black_box(parsed).digest())
    });
    let moka_cache: moka::sync::Cache<[u8; 32], Arc<HandwrittenPrincipal>> =
        moka::sync::Cache::new(100_000);
    let digest: [u8; 32] = parsed.digest().as_bytes().to_owned();
    moka_cache.insert(
        digest,
        Arc::new(HandwrittenPrincipal {
            key_id: "key_1".into(),
            scopes: Vec::new(),
        }),
    );
    parts.bench_function("moka_sync_get", |b| {
        b.iter(|| moka_cache.get(std::hint::black_box(&digest)).is_some())
    });
    let principal = Arc::new(0u64);
    parts.bench_function("extension_insert_into_request", |b| {
        b.iter_batched(
            || request(&good),
            |mut request| {
                request.extensions_mut().insert(principal.clone());
                request
            },
            BatchSize::SmallInput,
        )
    });
    parts.finish();

    // Probes of axum's own cost for a layer on one route, behind the same `ApiKeyLayer`: a
    // zero-sized layer on the handler (axum builds the layered handler's service per request),
    // a layer holding a value on the handler (axum also clones the route holding it), and the
    // same on the method router (axum boxes another route). Only in the interleaved passes.
    let probe = |method_router| {
        let app = Router::new()
            .route("/v1/products", method_router)
            .layer(layer.clone())
            .with_state(());
        runtime.block_on(send(&app, &good, StatusCode::OK));
        app
    };
    let handler_identity = probe(get(handler.layer(tower::layer::util::Identity::new())));
    let handler_passthrough = probe(get(handler.layer(PassthroughLayer("products:read"))));
    let route_passthrough = probe(get(handler).route_layer(PassthroughLayer("products:read")));

    let variant = |name, app: &Router, authorization: &HeaderValue, expected| Variant {
        name,
        app: app.clone(),
        authorization: authorization.clone(),
        expected,
    };
    vec![
        variant("bare", &bare, &good, StatusCode::OK),
        variant("static_bearer", &static_token, &good, StatusCode::OK),
        variant(
            "handwritten_middleware",
            &handwritten,
            &good,
            StatusCode::OK,
        ),
        variant("handwritten_strongest", &strongest, &good, StatusCode::OK),
        variant("hit_no_scope", &no_scope, &good, StatusCode::OK),
        variant("hit_no_scope_usage_off", &unrecorded, &good, StatusCode::OK),
        variant("hit_no_scope_prometheus", &observed, &good, StatusCode::OK),
        variant("hit_rate_key", &no_scope, &rated, StatusCode::OK),
        variant(
            "hit_rate_key_fields_off",
            &fields_off,
            &rated,
            StatusCode::OK,
        ),
        variant("hit_rate_key_owner", &with_owner, &rated, StatusCode::OK),
        variant("hit_with_scope_route_layer", &hit, &good, StatusCode::OK),
        variant(
            "hit_with_scope_handler_layer",
            &handler_layer,
            &good,
            StatusCode::OK,
        ),
        variant(
            "hit_with_scope_extractor",
            &extractor,
            &good,
            StatusCode::OK,
        ),
        variant(
            "probe_handler_identity",
            &handler_identity,
            &good,
            StatusCode::OK,
        ),
        variant(
            "probe_handler_passthrough",
            &handler_passthrough,
            &good,
            StatusCode::OK,
        ),
        variant(
            "probe_route_passthrough",
            &route_passthrough,
            &good,
            StatusCode::OK,
        ),
        variant(
            "unknown_negative_hit",
            &hit,
            &unknown,
            StatusCode::UNAUTHORIZED,
        ),
        variant(
            "malformed_checksum",
            &hit,
            &malformed,
            StatusCode::UNAUTHORIZED,
        ),
        variant(
            "unavailable_503",
            &unavailable,
            &good,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ]
}

/// A cache hit through a layer that decides rates in Redis at `REDIS_URL` (a key with a rate of
/// its own that no request reaches, a million a second), and through a layer that decides them
/// in process, for comparison with `hit_no_scope`; skipped with a message when Redis cannot be
/// reached. Criterion only: at tens of microseconds a request, it would stretch the passes.
#[cfg(feature = "redis")]
fn redis(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    store: &MemoryStore,
) {
    use tower_api_key::{RedisDownPolicy, RedisLimiter};

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // Buckets under a prefix of their own; at a million a second with a burst of as many, each
    // expires within a second of the last request.
    let prefix = format!(
        "tower-api-key-bench:{:016x}:",
        getrandom::u64().expect("random bytes")
    );
    let limiter = match RedisLimiter::open(&url) {
        // A timeout well above loopback's, so that a stall of the shared machine is not a 503.
        Ok(limiter) => limiter
            .with_prefix(prefix)
            .with_timeout(Duration::from_secs(1)),
        Err(error) => {
            println!("REDIS_URL is not a Redis URL ({error}): skipping the Redis variant");
            return;
        }
    };
    let rate: RateLimit = "1000000/s".parse().expect("a valid rate");
    let created = runtime
        .block_on(
            store.create(
                NewKey::new("Shared", Environment::Live)
                    .scopes([PRODUCTS_READ])
                    .rate_limit(rate),
            ),
        )
        .expect("a key");
    let shared = bearer(created.key.expose_secret());
    let key_id = created.id().clone();
    if let Err(error) = runtime.block_on(limiter.check(&key_id, &rate, None)) {
        println!("Redis at {url} cannot be reached ({error}): skipping the Redis variant");
        return;
    }
    let app = Router::new()
        .route("/v1/products", get(handler))
        .layer(
            ApiKeyLayer::builder(store.clone())
                .shared_rate_limiter(limiter, RedisDownPolicy::Refuse)
                .build(),
        )
        .with_state(());
    runtime.block_on(send(&app, &shared, StatusCode::OK));
    group.bench_function("hit_rate_key_redis", |b| {
        b.to_async(runtime)
            .iter(|| send(&app, &shared, StatusCode::OK))
    });
}

#[cfg(not(feature = "redis"))]
fn redis(
    _: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    _: &tokio::runtime::Runtime,
    _: &MemoryStore,
) {
    println!("built without the `redis` feature: skipping the Redis variant");
}

/// Each variant's median, its ratio to `bare`, and its overhead as a share of [`STRONGEST`]'s,
/// from criterion's estimates of this run; then what each rate limiter adds to a cache hit.
fn print_ratios() {
    let median = |name: &str| report::median(GROUP, name);
    let Some(bare) = median("bare") else {
        return;
    };
    let strongest = median(STRONGEST).map(|ns| ns - bare);
    println!();
    println!(
        "{:<30} {:>12} {:>12} {:>8} {:>9}",
        "variant", "median", "over bare", "ratio", "share"
    );
    for name in [
        "bare",
        "static_bearer",
        "handwritten_middleware",
        STRONGEST,
        "hit_no_scope",
        "hit_no_scope_usage_off",
        "hit_no_scope_prometheus",
        "hit_rate_key",
        "hit_rate_key_fields_off",
        "hit_rate_key_owner",
        "hit_rate_key_redis",
        "hit_with_scope_extractor",
        "hit_with_scope_handler_layer",
        "hit_with_scope_route_layer",
        "miss_memory_store",
        "unknown_negative_hit",
        "malformed_checksum",
        "unavailable_503",
    ] {
        if let Some(ns) = median(name) {
            // The overhead over bare as a share of the strongest baseline's.
            let share = strongest.map_or(f64::NAN, |strongest| (ns - bare) / strongest);
            println!(
                "{name:<30} {:>9.0} ns {:>9.0} ns {:>7.2}x {:>9.2}",
                ns,
                ns - bare,
                ns / bare,
                share
            );
        }
    }
    // What each limiter adds to a cache hit of a key without a rate, as a share of the layer's
    // own overhead there (its time over bare).
    let Some(hit) = median("hit_no_scope") else {
        return;
    };
    println!();
    println!(
        "{:<30} {:>12} {:>8} {:>9}   (against hit_no_scope: {:.0} ns, {:.0} ns over bare)",
        "rate limiter on a cache hit",
        "adds",
        "ratio",
        "share",
        hit,
        hit - bare
    );
    for name in [
        "hit_rate_key",
        "hit_rate_key_fields_off",
        "hit_rate_key_owner",
        "hit_rate_key_redis",
    ] {
        if let Some(ns) = median(name) {
            println!(
                "{name:<30} {:>9.0} ns {:>7.2}x {:>9.3}",
                ns - hit,
                ns / hit,
                (ns - hit) / (hit - bare)
            );
        }
    }
}
