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
use tower_api_key::Environment;

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
