//! Throughput over loopback HTTP: an authenticated route against a bare one, on a server with
//! one worker thread, loaded by `wrk` (Debian package `wrk`) from a second process.
//!
//! ```text
//! cargo bench --bench loopback
//! ```
//!
//! Both routes get the same `Authorization` header; only `/v1/products` is behind the layer (with
//! a scope check through the `Scoped` extractor). Each round loads both routes back to back, in
//! alternating order, and the figure is the median of the rounds' ratios: a shared machine's
//! speed drifts over a run, and pairs close in time cancel most of that drift. Where `taskset`
//! exists (util-linux), the server runs on CPU 0 and `wrk` on CPU 1, so they do not trade places.
//! Every request goes to 127.0.0.1 and the run ends by itself.

use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
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
    let (bare_url, auth_url) = (
        format!("http://{addr}/bare"),
        format!("http://{addr}/v1/products"),
    );
    let mut bare_rates = Vec::new();
    let mut auth_rates = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let (bare, auth) = if round % 2 == 0 {
            let bare = load(&bare_url, &header, pinned);
            (bare, load(&auth_url, &header, pinned))
        } else {
            let auth = load(&auth_url, &header, pinned);
            (load(&bare_url, &header, pinned), auth)
        };
        bare_rates.push(bare);
        auth_rates.push(auth);
        ratios.push(auth / bare);
    }
    let (bare, auth) = (median(&mut bare_rates), median(&mut auth_rates));
    println!("bare route:          {bare:>10.0} requests/s  (median of {ROUNDS} runs)");
    println!("authenticated route: {auth:>10.0} requests/s  (median of {ROUNDS} runs)");
    let ratio = median(&mut ratios);
    println!(
        "authenticated / bare: {:.1}%  (median of {ROUNDS} rounds; rounds from {:.1}% to {:.1}%)",
        100.0 * ratio,
        100.0 * ratios[0],
        100.0 * ratios[ROUNDS - 1],
    );
    println!(
        "the layer's cost per request: {:.2} µs",
        1e6 * (1.0 / (ratio * bare) - 1.0 / bare)
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
            let app = Router::new()
                .route("/v1/products", get(products))
                .route_layer(ApiKeyLayer::new(store))
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
