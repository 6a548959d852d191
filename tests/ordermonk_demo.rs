//! End to end: runs the `ordermonk` example binary and talks to it over loopback HTTP, as a
//! user following its banner would.
//!
//! The binary is the one cargo builds next to this test (`target/<profile>/examples/ordermonk`).
//! Each run gets a fresh SQLite file, and the example is started twice on it: the first start
//! prints new keys, the second only says how many there are, and the first start's keys still
//! work. While the first runs, the command-line tool (`target/<profile>/tower-api-key`) creates
//! a key in the same file, which the running demo accepts, then revokes it, which the demo
//! honours on the very next request, although it caches found keys for ten minutes in this test.

mod common;
#[path = "common/demo.rs"]
mod demo;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::RawResponse;
use demo::{om, scanner, Keys, Server, Tool};
use serde_json::{json, Value};
use tower_api_key::{Day, Environment, KeyStore, SqliteStore};

const OWNER: &str = "acct_ordermonk_demo";
/// How long the example caches a found key (`ORDERMONK_CACHE_TTL`, in seconds): longer than the
/// test, so that only the watch for changes made by other processes can explain a refusal.
const CACHE_TTL: Duration = Duration::from_secs(600);

#[tokio::test]
async fn ordermonk_demo_end_to_end() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let db = dir.path().join("ordermonk.db");

    let (mut server, banner) = Server::start(&Keys::Sqlite(db.clone()), CACHE_TTL, &[]);
    let addr = banner.addr;
    let production = banner.key("Production");
    let dashboard = banner.key("Read-only dashboard");
    let sandbox = banner.key("Sandbox");
    assert!(
        production.starts_with("om_live_"),
        "Production is a live key"
    );
    assert!(
        dashboard.starts_with("om_live_"),
        "the dashboard key is a live key"
    );
    assert!(sandbox.starts_with("om_test_"), "Sandbox is a test key");

    the_watch_for_other_processes_is_healthy(addr).await;
    let unknown = requests_without_a_valid_key_are_refused(addr).await;
    production_key_reads_and_writes_live_data(addr, production).await;
    read_only_key_cannot_write(addr, dashboard, production).await;
    sandbox_key_never_changes_live_data(addr, sandbox, production).await;
    me_describes_the_key_without_showing_it(addr, sandbox).await;
    let made_with_the_tool = the_tool_manages_the_running_demos_keys(addr, &db, production).await;

    let logs = server.stop();
    assert!(!logs.is_empty(), "the example logged nothing to stderr");
    assert!(
        logs.contains("tower_api_key"),
        "the crate's own events are missing from the logs, so checking them proves little"
    );
    assert_no_key_in(
        &logs,
        &[
            production,
            dashboard,
            sandbox,
            unknown.expose_secret(),
            &made_with_the_tool,
        ],
    );

    the_keys_outlive_a_restart(&db, production, dashboard).await;
}

/// `GET /health` needs no key and says that changes made by other processes reach the demo;
/// the banner says how.
async fn the_watch_for_other_processes_is_healthy(addr: SocketAddr) {
    let started = Instant::now();
    loop {
        let health = common::get(addr, "/health", &[]).await;
        assert_eq!(health.status, 200, "{}", health.body_text());
        if health.json() == json!({"invalidations": "connected"}) {
            break;
        }
        assert_eq!(health.json(), json!({"invalidations": "starting"}));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second start on the same database prints no new key, says how many keys there are, and
/// the keys printed by the first start still work, revocations aside.
async fn the_keys_outlive_a_restart(db: &Path, production: &str, dashboard: &str) {
    let (mut server, banner) = Server::start(&Keys::Sqlite(db.to_owned()), CACHE_TTL, &[]);
    assert!(
        banner.keys.is_empty(),
        "a restart printed keys again:\n{}",
        banner.transcript
    );
    assert!(
        !scanner().is_match(&banner.transcript),
        "a restart printed something shaped like a key"
    );
    assert!(
        banner.transcript.contains("3 keys in"),
        "a restart does not say how many keys there are:\n{}",
        banner.transcript
    );
    for how in [
        "KeyStore::create",
        "cargo run --features cli --bin tower-api-key -- --db ",
    ] {
        assert!(
            banner.transcript.contains(how),
            "a restart does not say how to make more keys ({how}):\n{}",
            banner.transcript
        );
    }

    let addr = banner.addr;
    let products = get_as(addr, production, "/v1/products").await;
    assert_eq!(products.status, 200, "{}", products.body_text());
    let orders = get_as(addr, dashboard, "/v1/orders").await;
    assert_eq!(orders.status, 200, "{}", orders.body_text());
    let refused = get_as(
        addr,
        "om_live_not_a_key_at_all_not_a_key_at_all00",
        "/v1/orders",
    )
    .await;
    assert_eq!(refused.status, 401);

    let logs = server.stop();
    assert_no_key_in(&logs, &[production, dashboard]);
}

/// No key, a forged key and an unknown key all get `401`. Returns the unknown key, which must
/// not reach the logs either.
async fn requests_without_a_valid_key_are_refused(addr: SocketAddr) -> tower_api_key::PlaintextKey {
    let missing = common::get(addr, "/v1/products", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        r#"Bearer realm="OrderMonk API""#
    );

    // The right shape, a wrong checksum: refused without a lookup.
    let forged = format!("om_live_{}", "x".repeat(38));
    // A real key of the right format that the store has never seen: refused after a lookup.
    let unknown = om()
        .generate(Environment::Live)
        .expect("a key can be generated");
    for key in [forged.as_str(), unknown.expose_secret()] {
        let refused = get_as(addr, key, "/v1/products").await;
        assert_eq!(refused.status, 401);
        assert_eq!(
            refused.header("www-authenticate"),
            r#"Bearer realm="OrderMonk API", error="invalid_token""#
        );
    }
    unknown
}

async fn production_key_reads_and_writes_live_data(addr: SocketAddr, production: &str) {
    let products = get_as(addr, production, "/v1/products").await;
    assert_eq!(products.status, 200, "{}", products.body_text());
    let names = product_names(&products);
    assert!(
        names.iter().any(|name| name == "Stoneware Coffee Mug"),
        "{names:?}"
    );
    assert!(
        names.iter().all(|name| !name.contains("sandbox")),
        "a live key saw sandbox products: {names:?}"
    );

    let lamp = json!({"sku": "LAMP-500", "name": "Brass Desk Lamp", "price_cents": 8900});
    let created = send_as(addr, production, "POST", "/v1/products", &lamp).await;
    assert!(
        created.status == 201 || created.status == 200,
        "{}: {}",
        created.status,
        created.body_text()
    );
    assert_eq!(created.json()["sku"], "LAMP-500");

    let products = get_as(addr, production, "/v1/products").await;
    assert!(skus(&products).contains(&"LAMP-500".to_owned()));
}

async fn read_only_key_cannot_write(addr: SocketAddr, dashboard: &str, production: &str) {
    let orders = get_as(addr, dashboard, "/v1/orders").await;
    assert_eq!(orders.status, 200, "{}", orders.body_text());
    let orders = orders.json();
    let orders = orders.as_array().expect("orders are a JSON array");
    assert!(!orders.is_empty(), "the live shop has orders");

    let before = get_as(addr, production, "/v1/products").await.json();
    let pen = json!({"sku": "PEN-007", "name": "Gel Pen", "price_cents": 350});
    let refused = send_as(addr, dashboard, "POST", "/v1/products", &pen).await;
    assert_eq!(refused.status, 403, "{}", refused.body_text());
    assert_eq!(
        refused.header("www-authenticate"),
        r#"Bearer realm="OrderMonk API", error="insufficient_scope", scope="products:write""#
    );
    let after = get_as(addr, production, "/v1/products").await.json();
    assert_eq!(before, after, "a refused write changed the product list");
}

async fn sandbox_key_never_changes_live_data(addr: SocketAddr, sandbox: &str, production: &str) {
    let products = get_as(addr, sandbox, "/v1/products").await;
    assert_eq!(products.status, 200, "{}", products.body_text());
    let names = product_names(&products);
    assert!(!names.is_empty(), "the sandbox has products");
    assert!(
        names.iter().all(|name| name.starts_with("[sandbox]")),
        "a test key saw live products: {names:?}"
    );
    assert!(
        !skus(&products).contains(&"LAMP-500".to_owned()),
        "a product created with a live key appeared in the sandbox"
    );

    let live_before = get_as(addr, production, "/v1/inventory").await;
    assert_eq!(live_before.status, 200, "{}", live_before.body_text());
    let live_before = live_before.json();
    assert_ne!(
        stock_of(&live_before, "MUG-001"),
        7,
        "pick another quantity"
    );

    let update = json!({"quantity": 7});
    let updated = send_as(addr, sandbox, "PUT", "/v1/inventory/MUG-001", &update).await;
    assert_eq!(updated.status, 200, "{}", updated.body_text());
    assert_eq!(updated.json()["quantity"], 7);

    let sandbox_after = get_as(addr, sandbox, "/v1/inventory").await.json();
    assert_eq!(stock_of(&sandbox_after, "MUG-001"), 7);
    let live_after = get_as(addr, production, "/v1/inventory").await.json();
    assert_eq!(
        live_before, live_after,
        "a sandbox key changed live inventory"
    );
}

async fn me_describes_the_key_without_showing_it(addr: SocketAddr, sandbox: &str) {
    let me = get_as(addr, sandbox, "/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.body_text());
    let body = me.body_text();
    assert!(!body.contains(sandbox), "/v1/me showed the key");
    assert!(
        !body.contains(&sandbox[8..40]),
        "/v1/me showed part of the key"
    );

    let me = me.json();
    assert_eq!(me["environment"], "test");
    assert_eq!(me["name"], "Sandbox");
    assert_eq!(me["owner"], OWNER);
    assert!(me["key_id"].is_string(), "{me}");
    let scopes = me["scopes"].as_array().expect("scopes are a JSON array");
    assert!(scopes.contains(&json!("products:write")), "{me}");
    assert!(
        me["expires_at"].is_u64() || me["expires_at"].is_null(),
        "{me}"
    );
}

/// A key created with the command-line tool in the demo's file works in the running demo at
/// once, with the scopes given; revoked with the tool, it is refused from the next request on,
/// although the demo holds a cached copy for ten minutes. The tool then deletes it, so that the demo's file holds its three keys again.
/// Returns the key, which must not reach the logs either.
async fn the_tool_manages_the_running_demos_keys(
    addr: SocketAddr,
    db: &Path,
    production: &str,
) -> String {
    let tool = Tool::new(&Keys::Sqlite(db.to_owned()));
    let created = tool.json(&[
        "create",
        "--name",
        "Made with the CLI",
        "--owner",
        OWNER,
        "--scope",
        "orders:read",
    ]);
    let key = created["plaintext_key"]
        .as_str()
        .expect("create --json prints plaintext_key")
        .to_owned();
    let id = created["key"]["id"]
        .as_str()
        .expect("create --json prints key.id");

    let orders = get_as(addr, &key, "/v1/orders").await;
    assert_eq!(orders.status, 200, "{}", orders.body_text());
    let me = get_as(addr, &key, "/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.body_text());
    assert_eq!(me.json()["key_id"], id);
    assert_eq!(me.json()["name"], "Made with the CLI");
    let pen = json!({"sku": "PEN-008", "name": "Gel Pen", "price_cents": 350});
    let refused = send_as(addr, &key, "POST", "/v1/products", &pen).await;
    assert_eq!(refused.status, 403, "{}", refused.body_text());

    // The tool lists the demo's keys too, without any key in its output.
    let listed = tool.run(&["list", "--owner", OWNER]);
    assert_eq!(
        listed.lines().count(),
        5,
        "a header and four keys:\n{listed}"
    );
    for name in [
        "Production",
        "Read-only dashboard",
        "Sandbox",
        "Made with the CLI",
    ] {
        assert!(listed.contains(name), "{name} is not listed:\n{listed}");
    }
    assert!(
        !scanner().is_match(&listed),
        "list printed a key:\n{listed}"
    );

    // Limits set with the tool hold from the next request on, cached copy or not: an
    // allowlist that leaves out loopback refuses the key...
    tool.run(&["limits", id, "--allow-ip", "203.0.113.0/24"]);
    let refused = get_as(addr, &key, "/v1/orders").await;
    assert_eq!(refused.status, 403, "{}", refused.body_text());
    assert_eq!(
        refused.body_text(),
        r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"This API key may not be used from this network."}"#
    );
    // ...and a rate of one an hour lets one request through, then answers 429.
    tool.run(&["limits", id, "--any-ip", "--rate", "1/h"]);
    let shown = tool.json(&["show", id]);
    assert_eq!(shown["rate_limit"]["text"], "1/h", "{shown}");
    assert_eq!(
        shown["allowed_networks"],
        serde_json::Value::Null,
        "{shown}"
    );
    assert_eq!(get_as(addr, &key, "/v1/orders").await.status, 200);
    let limited = get_as(addr, &key, "/v1/orders").await;
    assert_eq!(limited.status, 429, "{}", limited.body_text());
    assert_eq!(limited.header("retry-after"), "3600");
    assert_eq!(limited.header("ratelimit-policy"), r#""key";q=1;w=3600"#);
    tool.run(&["limits", id, "--no-rate"]);

    // Cached now: the demo does not ask the database again for ten minutes...
    let orders = get_as(addr, &key, "/v1/orders").await;
    assert_eq!(orders.status, 200, "{}", orders.body_text());
    // ...but the tool's revocation reaches it, and the tool returns only once it has.
    tool.run(&["revoke", id]);
    let response = get_as(addr, &key, "/v1/orders").await;
    assert_eq!(
        response.status,
        401,
        "the request right after `tower-api-key revoke` returned: {}",
        response.body_text()
    );
    assert_eq!(
        response.header("www-authenticate"),
        r#"Bearer realm="OrderMonk API", error="invalid_token""#
    );
    // Other keys are untouched.
    let products = get_as(addr, production, "/v1/products").await;
    assert_eq!(products.status, 200, "{}", products.body_text());

    tool.run(&["delete", id, "--yes"]);
    let refused = get_as(addr, &key, "/v1/orders").await;
    assert_eq!(refused.status, 401);
    key
}

/// Fails if any of `keys`, the random middle of one, or anything shaped like a key is in `logs`.
fn assert_no_key_in(logs: &str, keys: &[&str]) {
    for key in keys {
        assert!(!logs.contains(key), "a key reached the logs");
        assert!(
            !logs.contains(&key[8..40]),
            "part of a key reached the logs"
        );
    }
    assert!(
        !scanner().is_match(logs),
        "something shaped like a key reached the logs"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

async fn get_as(addr: SocketAddr, key: &str, path: &str) -> RawResponse {
    let auth = common::bearer(key);
    common::get(addr, path, &[auth.as_slice()]).await
}

async fn send_as(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> RawResponse {
    let auth = common::bearer(key);
    let body = body.to_string();
    common::request(addr, method, path, &[auth.as_slice()], Some(&body)).await
}

fn product_names(products: &RawResponse) -> Vec<String> {
    field_of_each(products, "name")
}

fn skus(products: &RawResponse) -> Vec<String> {
    field_of_each(products, "sku")
}

fn field_of_each(response: &RawResponse, field: &str) -> Vec<String> {
    response
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("no string {field:?} in {item}"))
                .to_owned()
        })
        .collect()
}

/// The quantity of `sku` in a `GET /v1/inventory` body.
fn stock_of(inventory: &Value, sku: &str) -> u64 {
    inventory
        .as_array()
        .expect("inventory is a JSON array")
        .iter()
        .find(|level| level["sku"] == sku)
        .and_then(|level| level["quantity"].as_u64())
        .unwrap_or_else(|| panic!("no stock level for {sku} in {inventory}"))
}

/// The value of the series of `name` whose labels contain each of `labels`, in the Prometheus
/// text `metrics` (0 when the series is not there yet).
fn metric(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            (labels.iter().all(|label| series.contains(label))
                && (series.is_empty() || series.starts_with('{')))
            .then(|| value.parse().expect("a metric value is a number"))
        })
        .unwrap_or(0.0)
}

async fn scrape(metrics: SocketAddr) -> String {
    let response = common::get(metrics, "/metrics", &[]).await;
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert!(response.header("content-type").starts_with("text/plain"));
    response.body_text().to_owned()
}

/// The demo counts each key's requests, shows a key its own (`GET /v1/me/usage`), serves
/// metrics in the Prometheus text format whose counters move with the requests, and writes the
/// counts it holds when it is stopped with Ctrl-C.
#[tokio::test]
async fn ordermonk_demo_records_usage_and_serves_metrics() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let db = dir.path().join("ordermonk.db");
    let keys = Keys::Sqlite(db.clone());
    let (mut server, banner) =
        Server::start(&keys, CACHE_TTL, &[("ORDERMONK_USAGE_FLUSH_MS", "50")]);
    let addr = banner.addr;
    let production = banner.key("Production").to_owned();
    let dashboard = banner.key("Read-only dashboard").to_owned();
    let metrics = banner.metrics.unwrap_or_else(|| {
        panic!(
            "the banner says where the metrics are:\n{}",
            banner.transcript
        )
    });

    let before = scrape(metrics).await;
    let allowed = ["outcome=\"allowed\"", "environment=\"live\""];
    let refused = ["outcome=\"insufficient_scope\"", "environment=\"live\""];
    let missing = ["outcome=\"missing\"", "environment=\"none\""];
    let requests = "tower_api_key_requests_total";
    for _ in 0..3 {
        assert_eq!(get_as(addr, &dashboard, "/v1/orders").await.status, 200);
    }
    let write = json!({"sku": "PEN-001", "name": "Fountain Pen", "price_cents": 2500});
    assert_eq!(
        send_as(addr, &dashboard, "POST", "/v1/products", &write)
            .await
            .status,
        403
    );
    assert_eq!(common::get(addr, "/v1/orders", &[]).await.status, 401);

    let after = scrape(metrics).await;
    assert_eq!(
        metric(&after, requests, &allowed) - metric(&before, requests, &allowed),
        3.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, requests, &refused) - metric(&before, requests, &refused),
        1.0
    );
    assert_eq!(
        metric(&after, requests, &missing) - metric(&before, requests, &missing),
        1.0
    );
    assert!(metric(&after, "tower_api_key_cache_misses_total", &[]) >= 1.0);
    assert!(metric(&after, "tower_api_key_cache_hits_total", &[]) >= 3.0);
    assert!(
        after.contains("tower_api_key_resolver_duration_seconds_bucket"),
        "the resolver's latency is a histogram with buckets:\n{after}"
    );
    assert!(
        after.contains("tower_api_key_invalidation_channel_connected"),
        "{after}"
    );
    assert!(
        !after.contains("key_id"),
        "no key ids in the demo's metrics"
    );
    assert_no_key_in(&after, &[&production, &dashboard]);

    // The dashboard key's own usage, once the layer flushed (every 50 ms here).
    let started = Instant::now();
    let today = loop {
        let usage = get_as(addr, &dashboard, "/v1/me/usage").await;
        assert_eq!(usage.status, 200, "{}", usage.body_text());
        let usage = usage.json();
        let today = usage["days"].as_array().expect("days").last().cloned();
        let today = today.expect("today is in the days");
        // Its requests so far: three orders, one refused write, and the earlier usage looks.
        if today["allowed"].as_u64() >= Some(3) && today["insufficient_scope"] == 1 {
            assert!(usage["last_used_at"].is_u64(), "{usage}");
            assert_eq!(usage["days"].as_array().unwrap().len(), 7);
            break today;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the usage never showed up: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(today["revoked"], 0);
    let flushes = scrape(metrics).await;
    assert!(
        metric(
            &flushes,
            "tower_api_key_usage_flushes_total",
            &["result=\"ok\""]
        ) >= 1.0
    );
    server.stop();

    // A server that would flush only after an hour: Ctrl-C writes what it counted.
    let (mut server, banner) =
        Server::start(&keys, CACHE_TTL, &[("ORDERMONK_USAGE_FLUSH_MS", "3600000")]);
    let store = SqliteStore::open(&db, om())
        .await
        .expect("the demo's file opens");
    let production_id = store
        .list(Some(OWNER))
        .await
        .expect("the keys can be listed")
        .into_iter()
        .find(|key| key.record.name == "Production")
        .expect("the production key")
        .record
        .id;
    let today = Day::today();
    let before = allowed_on(&store, &production_id, today).await;
    for _ in 0..5 {
        assert_eq!(
            get_as(banner.addr, &production, "/v1/products")
                .await
                .status,
            200
        );
    }
    assert_eq!(allowed_on(&store, &production_id, today).await, before);
    let (exited, logs) = server.interrupt();
    assert!(exited, "the demo did not exit cleanly on SIGINT:\n{logs}");
    assert!(logs.contains("usage counts written"), "{logs}");
    assert_eq!(
        allowed_on(&store, &production_id, Day::today()).await
            + if Day::today() == today {
                0
            } else {
                allowed_on(&store, &production_id, today).await
            },
        before + 5,
        "the shutdown wrote every request"
    );
    assert!(store
        .get(&production_id)
        .await
        .expect("the key")
        .last_used_at
        .is_some());
    assert_no_key_in(&logs, &[&production, &dashboard]);
}

async fn allowed_on(store: &SqliteStore, id: &tower_api_key::KeyId, day: Day) -> u64 {
    store
        .usage(id, day, day)
        .await
        .expect("usage can be read")
        .iter()
        .map(|day| day.counts.allowed)
        .sum()
}
