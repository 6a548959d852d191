//! Throughput over loopback HTTP: an authenticated route against a bare one and against the
//! strongest hand-written middleware, on a server with one worker thread, loaded by `wrk`
//! (Debian package `wrk`) from a second process.
//!
//! ```text
//! cargo bench --bench loopback
//! ```
//!
//! All three routes get the same `Authorization` header: `/bare` has no layer, `/v1/products` is
//! behind the layer (with a scope check through the `Scoped` extractor), and `/handwritten` behind
//! the strongest hand-written middleware (`benches/baselines`). Each round loads the three routes
//! back to back, in a rotating order, and the figures are the medians of the rounds' ratios: a
//! shared machine's speed drifts over a run, and routes loaded close in time cancel most of that
//! drift. Where `taskset` exists (util-linux), the server runs on CPU 0 and `wrk` on CPU 1, so
//! they do not trade places. Every request goes to 127.0.0.1 and the run ends by itself.

// Only the strongest hand-written middleware is used here.
#[allow(dead_code)]
mod baselines;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tower_api_key::{
    scope_requirement, ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Scope,
    Scoped,
};

const PRODUCTS_READ: Scope = Scope::from_static("products:read");
const ROUNDS: usize = 12;
const SECONDS: u32 = 2;

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
    let pinned = pin_to_cpu(0);
    let (addr, key) = start_server();
    let header = format!("Authorization: Bearer {key}");
    // Bare, the layer, the strongest hand-written middleware.
    let urls = ["/bare", "/v1/products", "/handwritten"].map(|path| format!("http://{addr}{path}"));
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut auth_ratios = Vec::new();
    let mut handwritten_ratios = Vec::new();
    let mut against_handwritten = Vec::new();
    for round in 0..ROUNDS {
        let mut rate = [0.0; 3];
        for offset in 0..3 {
            let route = (round + offset) % 3;
            rate[route] = load(&urls[route], &header, pinned);
        }
        for (rates, rate) in rates.iter_mut().zip(rate) {
            rates.push(rate);
        }
        auth_ratios.push(rate[1] / rate[0]);
        handwritten_ratios.push(rate[2] / rate[0]);
        against_handwritten.push(rate[1] / rate[2]);
    }
    let [bare, auth, handwritten] = rates.map(|mut rates| median(&mut rates));
    println!("bare route:          {bare:>10.0} requests/s  (median of {ROUNDS} runs)");
    println!("authenticated route: {auth:>10.0} requests/s  (median of {ROUNDS} runs)");
    println!("hand-written route:  {handwritten:>10.0} requests/s  (median of {ROUNDS} runs)");
    for (name, ratios) in [
        ("authenticated / bare", &mut auth_ratios),
        ("hand-written / bare ", &mut handwritten_ratios),
    ] {
        let ratio = median(ratios);
        println!(
            "{name}: {:.1}%  (median of {ROUNDS} rounds; rounds from {:.1}% to {:.1}%); \
             cost per request {:.2} µs",
            100.0 * ratio,
            100.0 * ratios[0],
            100.0 * ratios[ROUNDS - 1],
            1e6 * (1.0 / (ratio * bare) - 1.0 / bare),
        );
    }
    let ratio = median(&mut against_handwritten);
    println!(
        "authenticated / hand-written: {:.1}%  (median of {ROUNDS} rounds; rounds from {:.1}% to \
         {:.1}%)",
        100.0 * ratio,
        100.0 * against_handwritten[0],
        100.0 * against_handwritten[ROUNDS - 1],
    );
}

/// Pins this process's main thread, and so the server thread it starts, to `cpu`, if `taskset`
/// is installed and there is a CPU left for `wrk`. Returns whether it did.
fn pin_to_cpu(cpu: u32) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pid = std::process::id().to_string();
    let pinned = cpus >= 2
        && Command::new("taskset")
            .args(["-p", "-c", &cpu.to_string(), &pid])
            .output()
            .is_ok_and(|output| output.status.success());
    if !pinned {
        eprintln!(
            "loopback: server and load generator are not pinned \
             (needs `taskset` and two CPUs; {cpus} available)"
        );
    }
    pinned
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
            let handwritten = moka::sync::Cache::new(10_000);
            let digest = Sha256::digest(created.key.expose_secret().as_bytes()).into();
            handwritten.insert(
                digest,
                Arc::new(baselines::HandwrittenPrincipal {
                    key_id: created.id().to_string(),
                    scopes: vec![PRODUCTS_READ.as_str().to_owned()],
                }),
            );
            let app = Router::new()
                .route("/v1/products", get(products))
                .route_layer(ApiKeyLayer::new(store))
                .merge(
                    Router::new()
                        .route("/handwritten", get(bare))
                        .route_layer(baselines::HandwrittenSyncLayer(Arc::new(handwritten))),
                )
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

/// Requests per second that `wrk` (one thread, 16 connections) gets from `url`; on CPU 1 when
/// `pinned`.
fn load(url: &str, header: &str, pinned: bool) -> f64 {
    let duration = format!("-d{SECONDS}s");
    let wrk = ["wrk", "-t1", "-c16", &duration, "-H", header, url];
    let mut command = if pinned {
        let mut command = Command::new("taskset");
        command.args(["-c", "1"]).args(wrk);
        command
    } else {
        let mut command = Command::new(wrk[0]);
        command.args(&wrk[1..]);
        command
    };
    let output = command.output().expect("wrk runs");
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
