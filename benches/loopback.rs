//! Throughput over loopback HTTP: an authenticated route against a bare one, on a server with
//! one worker thread, loaded by `wrk` (Debian package `wrk`) from a second process.
//!
//! ```text
//! cargo bench --bench loopback
//! ```
//!
//! Both routes get the same `Authorization` header; only `/v1/products` is behind the layer (with
//! a scope check through the `Scoped` extractor). Rounds alternate bare and authenticated runs,
//! and the medians are compared. Every request goes to 127.0.0.1 and the run ends by itself.

use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tower_api_key::{
    scope_requirement, ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Scope,
    Scoped,
};

const PRODUCTS_READ: Scope = Scope::from_static("products:read");
const ROUNDS: usize = 3;
const SECONDS: u32 = 5;

scope_requirement! {
    struct ReadProducts = all(PRODUCTS_READ);
}

async fn bare() -> &'static str {
    "ok"
}

async fn products(_: Scoped<ReadProducts>) -> &'static str {
    "ok"
}

fn main() {
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with("--") && arg != "loopback")
    {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("loopback: `wrk` is not installed (apt-get install wrk); skipping");
        return;
    }
    let (addr, key) = start_server();
    let header = format!("Authorization: Bearer {key}");
    let mut bare_rates = Vec::new();
    let mut auth_rates = Vec::new();
    for _ in 0..ROUNDS {
        bare_rates.push(load(&format!("http://{addr}/bare"), &header));
        auth_rates.push(load(&format!("http://{addr}/v1/products"), &header));
    }
    let (bare, auth) = (median(&mut bare_rates), median(&mut auth_rates));
    println!("bare route:          {bare:>10.0} requests/s  (runs: {bare_rates:.0?})");
    println!("authenticated route: {auth:>10.0} requests/s  (runs: {auth_rates:.0?})");
    println!("authenticated / bare: {:.1}%", 100.0 * auth / bare);
}

/// Serves both routes on a fresh port from a thread running a `current_thread` runtime.
fn start_server() -> (std::net::SocketAddr, String) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let format = KeyFormat::new("om").expect("a valid prefix");
            let store = MemoryStore::new(format.clone());
            let created = store
                .create(NewKey::new("Load test", Environment::Live).scopes([PRODUCTS_READ]))
                .await
                .expect("a key");
            let app = Router::new()
                .route("/v1/products", get(products))
                .route_layer(ApiKeyLayer::new(format, store))
                .route("/bare", get(bare));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("an address");
            ready_tx
                .send((addr, created.key.expose_secret().to_owned()))
                .expect("the main thread waits");
            axum::serve(listener, app).await.expect("the server runs");
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server starts")
}

/// Requests per second that `wrk` (one thread, 16 connections) gets from `url`.
fn load(url: &str, header: &str) -> f64 {
    let output = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{SECONDS}s"), "-H", header, url])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"))
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
