//! Runs one variant of the layer benchmark many times, for `valgrind --tool=callgrind`.
//! Usage: `profile <variant> <iterations>` with variant one of `bare`, `static`, `handwritten`,
//! `noscope`, `extractor`, `handlerscope`, `hit` (route layer), `unknown`, `malformed`.
//! `scripts/bench.sh` shows how it is run.
mod baselines;

use std::sync::Arc;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use tower::ServiceExt;
use tower_api_key::{
    ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, RequireScopes, Scope,
};

const PRODUCTS_READ: Scope = Scope::from_static("products:read");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map(String::as_str).unwrap_or("hit").to_owned();
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let format = KeyFormat::new("om").unwrap();
    let store = MemoryStore::new(format.clone());
    let created = rt
        .block_on(store.create(NewKey::new("P", Environment::Live).scopes([PRODUCTS_READ])))
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    let header = match variant.as_str() {
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
    let app = if variant == "static" {
        Router::new()
            .route("/v1/products", get(|| async { "ok" }))
            .layer(baselines::StaticBearerLayer(header.clone()))
    } else if variant == "handwritten" {
        let cache = moka::future::Cache::new(10_000);
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()).into();
        rt.block_on(cache.insert(
            digest,
            Arc::new(baselines::HandwrittenPrincipal {
                key_id: "k".into(),
                scopes: vec![],
            }),
        ));
        Router::new()
            .route("/v1/products", get(|| async { "ok" }))
            .layer(baselines::HandwrittenLayer(cache))
    } else if variant == "bare" {
        Router::new().route("/v1/products", get(|| async { "ok" }))
    } else if variant == "noscope" {
        Router::new()
            .route("/v1/products", get(|| async { "ok" }))
            .layer(ApiKeyLayer::new(store))
    } else if variant == "extractor" {
        tower_api_key::scope_requirement! { struct Read = all(PRODUCTS_READ); }
        async fn list(_: tower_api_key::Scoped<Read>) -> &'static str {
            "ok"
        }
        Router::new()
            .route("/v1/products", get(list))
            .layer(ApiKeyLayer::new(store))
    } else if variant == "handlerscope" {
        use axum::handler::Handler;
        Router::new()
            .route(
                "/v1/products",
                get((|| async { "ok" }).layer(RequireScopes::all([PRODUCTS_READ]))),
            )
            .layer(ApiKeyLayer::new(store))
    } else {
        Router::new()
            .route(
                "/v1/products",
                get(|| async { "ok" }).route_layer(RequireScopes::all([PRODUCTS_READ])),
            )
            .layer(ApiKeyLayer::new(store))
    };
    // As `axum::serve` does: turn every handler into a route once, not per request.
    let app = app.with_state(());
    rt.block_on(async {
        for _ in 0..n {
            let mut req = Request::get("/v1/products").body(Body::empty()).unwrap();
            req.headers_mut().insert(AUTHORIZATION, header.clone());
            let res = app.clone().oneshot(req).await.unwrap();
            std::hint::black_box(res);
        }
    });
}
