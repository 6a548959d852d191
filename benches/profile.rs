//! Runs one variant of the layer benchmark many times, for `valgrind --tool=callgrind`.
//! Usage: `profile <variant> <iterations>`, the variants as in `VARIANTS`.
//! `scripts/bench.sh` shows how it is run, and how SHA-256 is left out of the counts.
mod baselines;

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Body;
use axum::handler::Handler;
use axum::routing::{get, MethodRouter};
use axum::Router;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use tower::ServiceExt;
use tower_api_key::{
    scope_requirement, ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey,
    RateLimit, RequireScopes, Scope, Scoped, UsageSettings,
};

const PRODUCTS_READ: Scope = Scope::from_static("products:read");

/// Every variant, and what it sends a request through.
const VARIANTS: &[(&str, &str)] = &[
    ("bare", "a bare router"),
    (
        "static",
        "a static bearer check written by hand (tower-http style)",
    ),
    (
        "handwritten",
        "the first hand-written middleware (moka future cache, boxed future)",
    ),
    (
        "strongest",
        "the strongest hand-written middleware (moka sync cache, nothing boxed)",
    ),
    (
        "noscope",
        "the layer, no scope check (usage recorded, the default)",
    ),
    (
        "noscope_usage_off",
        "the layer, no scope check, usage not recorded",
    ),
    (
        "noscope_flush",
        "the layer, no scope check, usage recorded and flushed to the store after every request",
    ),
    (
        "noscope_prometheus",
        "the layer, no scope check, usage recorded, a Prometheus recorder behind the metrics",
    ),
    (
        "ratekey",
        "the layer, no scope check, a key with a rate no request reaches (fields on, the default)",
    ),
    (
        "ratekey_fields_off",
        "the layer, no scope check, the same key, no `RateLimit` fields on responses",
    ),
    (
        "ratekey_owner",
        "the layer, no scope check, the same key, and an owner rate no request reaches",
    ),
    (
        "extractor",
        "the layer, scope checked by the `Scoped` extractor",
    ),
    (
        "handlerscope",
        "the layer, `RequireScopes` on the handler (`Handler::layer`)",
    ),
    (
        "routescope",
        "the layer, `RequireScopes` with `route_layer`",
    ),
    (
        "handleridentity",
        "probe: the layer, a zero-sized layer on the handler",
    ),
    (
        "handlerpassthrough",
        "probe: the layer, a layer holding a value on the handler",
    ),
    (
        "routepassthrough",
        "probe: the layer, a layer holding a value with `route_layer`",
    ),
    ("unknown", "the layer, an unknown key (negative cache hit)"),
    ("malformed", "the layer, a key with a broken checksum"),
];

scope_requirement! { struct ReadProducts = all(PRODUCTS_READ); }

async fn handler() -> &'static str {
    "ok"
}

async fn scoped_handler(_: Scoped<ReadProducts>) -> &'static str {
    "ok"
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map(String::as_str).unwrap_or("routescope");
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    if !VARIANTS.iter().any(|(name, _)| *name == variant) {
        eprintln!("usage: profile <variant> <iterations>; variants:");
        for (name, what) in VARIANTS {
            eprintln!("  {name:<20} {what}");
        }
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let format = KeyFormat::new("om").unwrap();
    let store = MemoryStore::new(format.clone());
    // A million requests a second with a burst of 4,294,967,295: every check lets its request
    // through.
    let unreachable = RateLimit::per_second(NonZeroU32::new(1_000_000).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::MAX);
    let mut new_key = NewKey::new("P", Environment::Live).scopes([PRODUCTS_READ]);
    if variant.starts_with("ratekey") {
        new_key = new_key.rate_limit(unreachable);
    }
    let created = rt.block_on(store.create(new_key)).unwrap();
    let key = created.key.expose_secret().to_owned();
    let header = match variant {
        "unknown" => format!(
            "Bearer {}",
            format.generate(Environment::Live).unwrap().expose_secret()
        ),
        "malformed" => {
            let mut k = key.clone().into_bytes();
            k[20] = if k[20] == b'a' { b'b' } else { b'a' };
            format!("Bearer {}", String::from_utf8(k).unwrap())
        }
        _ => format!("Bearer {key}"),
    };
    let header = HeaderValue::try_from(header).unwrap();
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()).into();
    let principal = Arc::new(baselines::HandwrittenPrincipal {
        key_id: "k".into(),
        scopes: vec![],
    });
    let route = |method_router: MethodRouter| Router::new().route("/v1/products", method_router);
    // The background flush (every 10 s by default) would wake during some runs and not
    // others, and callgrind counts are compared between a run of 11,000 requests and one of
    // 1,000: it is kept out of both. What one flush costs is counted apart (`flush`).
    let quiet = UsageSettings::new().flush_interval(std::time::Duration::from_secs(3600));
    let layer = match variant {
        "noscope_usage_off" => ApiKeyLayer::builder(store)
            .usage(UsageSettings::off().flush_interval(std::time::Duration::from_secs(3600)))
            .build(),
        "noscope_prometheus" => {
            // Only here: building it calibrates a clock, a varying number of instructions.
            // (The layer's handles keep what they count alive.)
            let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&prometheus, || {
                ApiKeyLayer::builder(store).usage(quiet).build()
            })
        }
        "ratekey_fields_off" => ApiKeyLayer::builder(store)
            .usage(quiet)
            .rate_limit_headers(false)
            .build(),
        "ratekey_owner" => ApiKeyLayer::builder(store)
            .usage(quiet)
            .owner_rate_limit(unreachable)
            .build(),
        _ => ApiKeyLayer::builder(store).usage(quiet).build(),
    };
    let flush_each = (variant == "noscope_flush").then(|| layer.clone());
    let app = match variant {
        "bare" => route(get(handler)),
        "static" => route(get(handler)).layer(baselines::StaticBearerLayer(header.clone())),
        "handwritten" => {
            let cache = moka::future::Cache::new(10_000);
            rt.block_on(cache.insert(digest, principal));
            route(get(handler)).layer(baselines::HandwrittenLayer(cache))
        }
        "strongest" => {
            let cache = moka::sync::Cache::new(10_000);
            cache.insert(digest, principal);
            route(get(handler)).layer(baselines::HandwrittenSyncLayer(Arc::new(cache)))
        }
        "extractor" => route(get(scoped_handler)).layer(layer),
        "handlerscope" => {
            route(get(handler.layer(RequireScopes::all([PRODUCTS_READ])))).layer(layer)
        }
        "routescope" => {
            route(get(handler).route_layer(RequireScopes::all([PRODUCTS_READ]))).layer(layer)
        }
        "handleridentity" => {
            route(get(handler.layer(tower::layer::util::Identity::new()))).layer(layer)
        }
        "handlerpassthrough" => route(get(
            handler.layer(baselines::PassthroughLayer("products:read"))
        ))
        .layer(layer),
        "routepassthrough" => {
            route(get(handler).route_layer(baselines::PassthroughLayer("products:read")))
                .layer(layer)
        }
        // `noscope` (and its usage and metrics variants), the `ratekey` variants, `unknown`,
        // `malformed`: the layer alone.
        _ => route(get(handler)).layer(layer),
    };
    // As `axum::serve` does: turn every handler into a route once, not per request.
    let app = app.with_state(());
    rt.block_on(async {
        for _ in 0..n {
            let mut req = Request::get("/v1/products").body(Body::empty()).unwrap();
            req.headers_mut().insert(AUTHORIZATION, header.clone());
            let res = app.clone().oneshot(req).await.unwrap();
            std::hint::black_box(res);
            if let Some(layer) = &flush_each {
                layer.flush_usage().await.unwrap();
            }
        }
    });
}
