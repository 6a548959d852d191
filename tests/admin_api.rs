//! The admin API over real HTTP on loopback, on a SQLite file: who may see and change which key,
//! what creation may grant, how bad input is answered, cross-site writes, pagination, the audit
//! trail, the OpenAPI description (checked by an independent validator) and the page's headers.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_api_key::admin::{AdminIdentity, AdminRouter, CONTENT_SECURITY_POLICY};
use tower_api_key::{
    Actor, ApiKeyLayer, AuditAction, AuditQuery, Environment, KeyFormat, KeyStore, Scope,
    SqliteStore,
};

use common::{bearer, get as http_get, request, RawResponse};

const BASE: &str = "/settings/api";

/// A host application: the admin router under `/settings/api` behind a stand-in login that
/// reads the account and actor from test headers, and an API guarded by the key layer.
struct Host {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Host {
    async fn start() -> Host {
        Host::start_with(|admin| admin).await
    }

    async fn start_with(configure: impl FnOnce(AdminRouter) -> AdminRouter) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("keys.db"), KeyFormat::new("om").unwrap())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let store = Arc::new(store);
        let admin = configure(
            AdminRouter::new(store.clone())
                .grant(
                    Scope::from_static("products:read"),
                    "View products and catalog data",
                )
                .grant(Scope::from_static("orders:read"), "View orders")
                .environments([Environment::Live]),
        )
        .build()
        .layer(axum::middleware::from_fn(login));
        let api = Router::new()
            .route("/v1/orders", get(|| async { "orders" }))
            .layer(ApiKeyLayer::new(store.clone()));
        let app = Router::new().nest(BASE, admin).merge(api);
        let addr = common::serve_with_peers("127.0.0.1:0", app).await;
        Host {
            addr,
            store,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        account: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> RawResponse {
        let account = format!("X-Test-Account: {account}");
        let actor = "X-Test-Actor: alice@example.com";
        request(
            self.addr,
            method,
            &format!("{BASE}{path}"),
            &[account.as_bytes(), actor.as_bytes()],
            body,
        )
        .await
    }

    async fn create(&self, account: &str, name: &str) -> (String, String) {
        let body = json!({"name": name, "environment": "live", "scopes": ["orders:read"]});
        let response = self
            .call(account, "POST", "/v1/keys", Some(&body.to_string()))
            .await;
        assert_eq!(response.status, 201, "{}", response.body_text());
        let json = response.json();
        (
            json["key"]["id"].as_str().unwrap().to_owned(),
            json["secret"].as_str().unwrap().to_owned(),
        )
    }
}

/// The stand-in login: `X-Test-Account` and `X-Test-Actor` say who is signed in.
async fn login(mut request: Request, next: Next) -> axum::response::Response {
    let (account, actor) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        (header("x-test-account"), header("x-test-actor"))
    };
    if let (Some(account), Some(actor)) = (account, actor) {
        request
            .extensions_mut()
            .insert(AdminIdentity::new(account, Actor::new(actor)));
    }
    next.run(request).await
}

/// A request with any body and headers, written as given.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> RawResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    common::parse_response(&response)
}

fn assert_problem(response: &RawResponse, status: u16) -> Value {
    assert_eq!(response.status, status, "{}", response.body_text());
    assert_eq!(response.header("content-type"), "application/problem+json");
    let json = response.json();
    assert_eq!(json["status"], status);
    json
}

/// The fields a 422 names, in order.
fn fields(response: &RawResponse) -> Vec<String> {
    let json = assert_problem(response, 422);
    json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn another_owners_keys_answer_exactly_as_unknown_ones_on_every_endpoint() {
    let host = Host::start().await;
    let (theirs, secret) = host.create("acct_a", "Production").await;

    for id in [theirs.as_str(), "key_0000000000000000"] {
        let calls: [(&str, String, Option<&str>); 6] = [
            ("GET", format!("/v1/keys/{id}"), None),
            (
                "PATCH",
                format!("/v1/keys/{id}"),
                Some(r#"{"name":"Mine now"}"#),
            ),
            ("POST", format!("/v1/keys/{id}/revoke"), Some("{}")),
            ("POST", format!("/v1/keys/{id}/rotate"), Some("{}")),
            ("GET", format!("/v1/keys/{id}/usage"), None),
            ("GET", format!("/v1/keys/{id}/audit"), None),
        ];
        for (method, path, body) in calls {
            let response = host.call("acct_b", method, &path, body).await;
            let json = assert_problem(&response, 404);
            assert_eq!(
                response.body_text(),
                r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"No key of yours has this id."}"#,
                "{method} {path}: {json}"
            );
        }
    }
    // Nothing of theirs is listed, nor in the other owner's audit trail.
    let listed = host.call("acct_b", "GET", "/v1/keys", None).await.json();
    assert_eq!(listed["keys"], json!([]));
    let audit = host.call("acct_b", "GET", "/v1/audit", None).await.json();
    assert_eq!(audit["events"], json!([]));
    // And the key is as it was: same name, not revoked, not rotated, still working.
    let stored = host.store.get(&theirs.as_str().into()).await.unwrap();
    assert_eq!(stored.record.name, "Production");
    assert!(stored.record.revoked_at.is_none() && stored.replaced_by.is_none());
    let orders = http_get(host.addr, "/v1/orders", &[&bearer(&secret)]).await;
    assert_eq!(orders.status, 200);
}

#[tokio::test]
async fn without_an_identity_every_endpoint_answers_401() {
    let host = Host::start().await;
    for (method, path, body) in [
        ("GET", "/v1/me", None),
        ("GET", "/v1/scopes", None),
        ("GET", "/v1/keys", None),
        (
            "POST",
            "/v1/keys",
            Some(r#"{"name":"x","environment":"live","scopes":["orders:read"]}"#),
        ),
        ("GET", "/v1/audit", None),
    ] {
        let response = request(host.addr, method, &format!("{BASE}{path}"), &[], body).await;
        assert_problem(&response, 401);
    }
    assert!(host.store.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn creation_grants_only_the_configured_scopes_and_environments() {
    let host = Host::start().await;
    let cases = [
        (
            json!({"name": "W", "environment": "live", "scopes": ["products:write"]}),
            "scopes[0]",
        ),
        (
            json!({"name": "W", "environment": "live", "scopes": ["orders:read", "admin:all"]}),
            "scopes[1]",
        ),
        (
            json!({"name": "W", "environment": "live", "scopes": ["not a scope"]}),
            "scopes[0]",
        ),
        (
            json!({"name": "W", "environment": "test", "scopes": ["orders:read"]}),
            "environment",
        ),
        (
            json!({"name": "W", "environment": "staging", "scopes": ["orders:read"]}),
            "environment",
        ),
    ];
    for (body, field) in cases {
        let response = host
            .call("acct_a", "POST", "/v1/keys", Some(&body.to_string()))
            .await;
        assert_eq!(fields(&response), [field], "{body}");
    }
    assert!(
        host.store.list(None).await.unwrap().is_empty(),
        "nothing was created"
    );

    let scopes = host.call("acct_a", "GET", "/v1/scopes", None).await.json();
    assert_eq!(
        scopes,
        json!({
            "scopes": [
                {"name": "products:read", "resource": "products", "description": "View products and catalog data"},
                {"name": "orders:read", "resource": "orders", "description": "View orders"},
            ],
            "environments": ["live"],
        })
    );
}

#[tokio::test]
async fn bad_input_answers_422_naming_each_field_and_writes_nothing() {
    let host = Host::start().await;
    let long = "x".repeat(101);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (json!({"name": "  ", "environment": "live", "scopes": ["orders:read"]}).to_string(), vec!["name"]),
        (json!({"name": long, "environment": "live", "scopes": ["orders:read"]}).to_string(), vec!["name"]),
        (json!({"name": "a\nb", "environment": "live", "scopes": ["orders:read"]}).to_string(), vec!["name"]),
        (json!({"environment": "live", "scopes": ["orders:read"]}).to_string(), vec!["name"]),
        (json!({"name": 5, "environment": "live", "scopes": ["orders:read"]}).to_string(), vec!["name"]),
        (json!({"name": "W", "environment": "live", "scopes": "orders:read"}).to_string(), vec!["scopes"]),
        (json!({"name": "W", "environment": "live", "scopes": []}).to_string(), vec!["scopes"]),
        (json!({"name": "W", "environment": "live", "scopes": ["orders:read"], "owner": "acct_b"}).to_string(), vec!["owner"]),
        (json!({"name": "W", "environment": "live", "scopes": ["orders:read"], "expires_at": "2001-01-01T00:00:00Z"}).to_string(), vec!["expires_at"]),
        (json!({"name": "W", "environment": "live", "scopes": ["orders:read"], "expires_at": "next week"}).to_string(), vec!["expires_at"]),
        (json!({"name": "", "environment": "prod", "scopes": [], "expires_at": "2001-01-01T00:00:00Z"}).to_string(), vec!["name", "environment", "scopes", "expires_at"]),
    ];
    for (body, expected) in cases {
        let response = host.call("acct_a", "POST", "/v1/keys", Some(&body)).await;
        assert_eq!(fields(&response), expected, "{body}");
        assert_eq!(response.header("cache-control"), "no-store");
    }
    // Not JSON at all: 400.
    let response = host
        .call("acct_a", "POST", "/v1/keys", Some("{\"name\":"))
        .await;
    assert_problem(&response, 400);
    assert!(
        host.store.list(None).await.unwrap().is_empty(),
        "nothing was created"
    );

    // The same for a rename and a rotation: the key is unchanged.
    let (id, _) = host.create("acct_a", "Production").await;
    let response = host
        .call(
            "acct_a",
            "PATCH",
            &format!("/v1/keys/{id}"),
            Some(r#"{"name":""}"#),
        )
        .await;
    assert_eq!(fields(&response), ["name"]);
    let response = host
        .call(
            "acct_a",
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            Some(r#"{"grace_seconds":99999999}"#),
        )
        .await;
    assert_eq!(fields(&response), ["grace_seconds"]);
    let response = host
        .call(
            "acct_a",
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            Some(r#"{"grace_seconds":-1}"#),
        )
        .await;
    assert_eq!(fields(&response), ["grace_seconds"]);
    let stored = host.store.get(&id.as_str().into()).await.unwrap();
    assert_eq!(stored.record.name, "Production");
    assert!(stored.replaced_by.is_none());
    assert_eq!(host.store.list(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_new_keys_text_is_only_in_its_creation_and_never_stored_by_caches() {
    common::init_tracing();
    let host = Host::start().await;
    let body = json!({"name": "Webhook Server", "environment": "live", "scopes": ["orders:read", "products:read"], "expires_at": "2099-01-01T00:00:00Z"});
    let response = host
        .call("acct_a", "POST", "/v1/keys", Some(&body.to_string()))
        .await;
    assert_eq!(response.status, 201);
    assert_eq!(response.header("cache-control"), "no-store");
    assert_eq!(response.header("content-type"), "application/json");
    let created = response.json();
    let secret = created["secret"].as_str().unwrap();
    let shape = regex::Regex::new("^om_live_[0-9A-Za-z]{38}$").unwrap();
    assert!(shape.is_match(secret), "a key of the om format");
    let key = &created["key"];
    assert_eq!(key["name"], "Webhook Server");
    assert_eq!(key["status"], "active");
    assert_eq!(key["environment"], "live");
    assert_eq!(key["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(key["scopes"], json!(["orders:read", "products:read"]));
    assert_eq!(
        key["hint"],
        format!("om_live_…{}", &secret[secret.len() - 4..])
    );
    let id = key["id"].as_str().unwrap();

    // A rotation hands out the replacement's text the same way.
    let response = host
        .call(
            "acct_a",
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            Some(r#"{"grace_seconds":60}"#),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.body_text());
    assert_eq!(response.header("cache-control"), "no-store");
    let rotated = response.json();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["replaced"]["status"], "rotated");
    assert_eq!(rotated["replaced"]["replaced_by"], rotated["key"]["id"]);

    // Nothing else ever shows either text.
    let new_id = rotated["key"]["id"].as_str().unwrap().to_owned();
    for path in [
        "/v1/keys".to_owned(),
        format!("/v1/keys/{id}"),
        format!("/v1/keys/{new_id}"),
        format!("/v1/keys/{id}/audit"),
        "/v1/audit".to_owned(),
        format!("/v1/keys/{id}/usage"),
    ] {
        let response = host.call("acct_a", "GET", &path, None).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.header("cache-control"), "no-store", "{path}");
        let text = response.body_text();
        assert!(
            !text.contains(secret) && !text.contains(new_secret),
            "{path}"
        );
    }
    let trail = format!("{:?}", host.store.audit(&AuditQuery::all()).await.unwrap());
    assert!(!trail.contains(secret) && !trail.contains(new_secret));
    // The admin API logged the changes (at INFO), and neither key.
    assert!(common::logs().contains("key changed through the admin API"));
    common::assert_logs_clean(&[secret, new_secret]);
}

#[tokio::test]
async fn cross_site_writes_are_refused_and_change_nothing() {
    let host = Host::start().await;
    let (id, secret) = host.create("acct_a", "Production").await;
    let who = ["X-Test-Account: acct_a", "X-Test-Actor: mallory"];
    let create = br#"{"name":"CSRF","environment":"live","scopes":["orders:read"]}"#;
    let path = format!("{BASE}/v1/keys");
    let revoke = format!("{BASE}/v1/keys/{id}/revoke");
    let with = |extra: &'static [&'static str]| {
        let mut headers = who.to_vec();
        headers.extend_from_slice(extra);
        headers
    };
    // What an HTML form on another site can send: refused for its content type.
    for content_type in [
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: text/plain",
        "Content-Type: multipart/form-data; boundary=x",
    ] {
        let mut headers = who.to_vec();
        headers.push(content_type);
        let response = raw(host.addr, "POST", &path, &headers, create).await;
        assert_problem(&response, 415);
        let response = raw(host.addr, "POST", &revoke, &headers, b"{}").await;
        assert_problem(&response, 415);
    }
    // A script on another site: refused for where it comes from.
    for extra in [
        &[
            "Content-Type: application/json",
            "Origin: http://evil.example",
        ][..],
        &[
            "Content-Type: application/json",
            "Sec-Fetch-Site: cross-site",
        ][..],
        &[
            "Content-Type: application/json",
            "Sec-Fetch-Site: same-site",
        ][..],
        &["Content-Type: application/json", "Origin: null"][..],
        &[
            "Content-Type: application/json",
            "Origin: http://localhost",
            "Sec-Fetch-Site: cross-site",
        ][..],
    ] {
        let mut headers = who.to_vec();
        headers.extend_from_slice(extra);
        let response = raw(host.addr, "POST", &path, &headers, create).await;
        let json = assert_problem(&response, 403);
        assert_eq!(
            json["detail"],
            "Cross-site request refused: API keys are managed from this site's own pages."
        );
        let response = raw(host.addr, "POST", &revoke, &headers, b"{}").await;
        assert_problem(&response, 403);
    }
    assert_eq!(
        host.store.list(None).await.unwrap().len(),
        1,
        "nothing was created"
    );
    let orders = http_get(host.addr, "/v1/orders", &[&bearer(&secret)]).await;
    assert_eq!(orders.status, 200, "the key was not revoked");

    // The page's own requests pass.
    let same = with(&[
        "Content-Type: application/json",
        "Origin: http://localhost",
        "Sec-Fetch-Site: same-origin",
    ]);
    let response = raw(host.addr, "POST", &path, &same, create).await;
    assert_eq!(response.status, 201, "{}", response.body_text());
    let same = with(&["Content-Type: application/json", "Origin: http://localhost"]);
    let response = raw(host.addr, "POST", &path, &same, create).await;
    assert_eq!(response.status, 201, "{}", response.body_text());

    // A trusted origin passes too.
    let host = Host::start_with(|admin| admin.trusted_origin("https://dashboard.example")).await;
    let trusted = with(&[
        "Content-Type: application/json",
        "Origin: https://dashboard.example",
        "Sec-Fetch-Site: cross-site",
    ]);
    let response = raw(host.addr, "POST", &path, &trusted, create).await;
    assert_eq!(response.status, 201, "{}", response.body_text());
}

#[tokio::test]
async fn the_list_is_paginated_newest_first() {
    let host = Host::start().await;
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(host.create("acct_a", &format!("Key {n}")).await.0);
    }
    host.create("acct_b", "Not theirs").await;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/keys?limit=3&cursor={cursor}"),
            None => "/v1/keys?limit=3".to_owned(),
        };
        let page = host.call("acct_a", "GET", &path, None).await.json();
        let keys = page["keys"].as_array().unwrap();
        pages.push(keys.len());
        seen.extend(keys.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3, 1]);
    let listed: Vec<String> = host
        .store
        .list(Some("acct_a"))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.record.id.as_str().to_owned())
        .collect();
    assert_eq!(
        seen, listed,
        "every key once, in the store's newest-first order"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    created.sort();
    assert_eq!(sorted, created);

    for bad in ["limit=0", "limit=101", "limit=x"] {
        let response = host
            .call("acct_a", "GET", &format!("/v1/keys?{bad}"), None)
            .await;
        assert_eq!(fields(&response), ["limit"], "{bad}");
    }
    let response = host
        .call("acct_a", "GET", "/v1/keys?cursor=key_nope", None)
        .await;
    assert_eq!(fields(&response), ["cursor"]);
    let response = host
        .call("acct_a", "GET", "/v1/keys/x/usage?days=0", None)
        .await;
    assert_eq!(fields(&response), ["days"]);
}

#[tokio::test]
async fn every_change_is_in_the_audit_trail_with_actor_and_address_and_never_a_key() {
    let host = Host::start().await;
    let (id, secret) = host.create("acct_a", "Production").await;
    let renamed = host
        .call(
            "acct_a",
            "PATCH",
            &format!("/v1/keys/{id}"),
            Some(r#"{"name":"Staging"}"#),
        )
        .await;
    assert_eq!(renamed.status, 200);
    assert_eq!(renamed.json()["name"], "Staging");
    let rotated = host
        .call(
            "acct_a",
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            Some("{}"),
        )
        .await
        .json();
    let new_id = rotated["key"]["id"].as_str().unwrap().to_owned();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let revoked = host
        .call(
            "acct_a",
            "POST",
            &format!("/v1/keys/{new_id}/revoke"),
            Some("{}"),
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.json()["status"], "revoked");
    // Revoking again changes nothing and records nothing.
    host.call(
        "acct_a",
        "POST",
        &format!("/v1/keys/{new_id}/revoke"),
        Some("{}"),
    )
    .await;

    let trail = host.call("acct_a", "GET", "/v1/audit", None).await;
    let text = trail.body_text().to_owned();
    assert!(!text.contains(&secret) && !text.contains(&new_secret));
    let events = trail.json()["events"].as_array().unwrap().clone();
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["key_id"].as_str().unwrap().to_owned(),
                e["key_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row =
        |action: &str, id: &str, name: &str| (action.to_owned(), id.to_owned(), name.to_owned());
    assert_eq!(
        summary,
        [
            row("revoked", &new_id, "Staging"),
            row("created", &new_id, "Staging"),
            row("rotated", &id, "Staging"),
            row("renamed", &id, "Staging"),
            row("created", &id, "Production"),
        ]
    );
    for event in &events {
        assert_eq!(event["actor"], "alice@example.com");
        assert_eq!(event["address"], "127.0.0.1");
        assert!(event["at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(events[1]["related_key"], id.as_str());
    assert_eq!(events[2]["related_key"], new_id.as_str());

    // Per key, and a page at a time.
    let first = host
        .call(
            "acct_a",
            "GET",
            &format!("/v1/keys/{id}/audit?limit=2"),
            None,
        )
        .await
        .json();
    let actions: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rotated", "renamed"]);
    let before = first["next_before"].as_u64().unwrap();
    let rest = host
        .call(
            "acct_a",
            "GET",
            &format!("/v1/keys/{id}/audit?limit=2&before={before}"),
            None,
        )
        .await
        .json();
    let actions: Vec<&str> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created"]);
    assert_eq!(rest["next_before"], Value::Null);

    // The store holds the same, and no key text.
    let stored = host
        .store
        .audit(&AuditQuery::all().owner("acct_a"))
        .await
        .unwrap();
    assert_eq!(stored.len(), 5);
    assert_eq!(stored[0].action, AuditAction::Revoked);
    assert_eq!(stored[0].address, Some("127.0.0.1".parse().unwrap()));
    let debug = format!("{stored:?}");
    assert!(!debug.contains(&secret) && !debug.contains(&new_secret));
}

#[tokio::test]
async fn a_key_revoked_through_the_api_is_refused_on_the_next_request() {
    let host = Host::start().await;
    let (id, secret) = host.create("acct_a", "Production").await;
    let orders = http_get(host.addr, "/v1/orders", &[&bearer(&secret)]).await;
    assert_eq!(orders.status, 200);
    let revoked = host
        .call(
            "acct_a",
            "POST",
            &format!("/v1/keys/{id}/revoke"),
            Some("{}"),
        )
        .await;
    assert_eq!(revoked.status, 200);
    let orders = http_get(host.addr, "/v1/orders", &[&bearer(&secret)]).await;
    assert_eq!(orders.status, 401);
    assert_eq!(
        orders.header("www-authenticate"),
        r#"Bearer realm="api", error="invalid_token""#
    );
}

#[tokio::test]
async fn usage_lists_every_day_of_the_range() {
    let host = Host::start().await;
    let (id, _) = host.create("acct_a", "Production").await;
    let usage = host
        .call(
            "acct_a",
            "GET",
            &format!("/v1/keys/{id}/usage?days=7"),
            None,
        )
        .await
        .json();
    let days = usage["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    assert_eq!(days[6]["day"], usage["to"]);
    assert_eq!(days[0]["day"], usage["from"]);
    assert_eq!(
        usage["outcomes"],
        json!([
            "allowed",
            "insufficient_scope",
            "revoked",
            "expired",
            "rate_limited"
        ])
    );
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_under_a_strict_policy() {
    let host = Host::start().await;
    // The page is at the mount point itself.
    for path in ["", "/assets/app.css", "/assets/app.js"] {
        let response = http_get(host.addr, &format!("{BASE}{path}"), &[]).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(response.header("x-content-type-options"), "nosniff");
        assert_eq!(response.header("x-frame-options"), "DENY");
    }
    let page = http_get(host.addr, BASE, &[]).await;
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let html = page.body_text();
    assert!(!html.contains("__BASE__"));
    assert!(html.contains(r#"data-base="/settings/api""#));
    assert!(html.contains(r#"src="/settings/api/assets/app.js""#));
}

#[tokio::test]
async fn the_openapi_description_is_served_and_valid_by_an_independent_validator() {
    let host = Host::start().await;
    let response = http_get(host.addr, &format!("{BASE}/v1/openapi.json"), &[]).await;
    assert_eq!(response.status, 200);
    let document = response.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["servers"][0]["url"], BASE);
    assert_eq!(document, {
        let mut built: Value = serde_json::from_str(&AdminRouter::openapi_json()).unwrap();
        built["servers"] = json!([{"url": BASE}]);
        built
    });

    // openapi-spec-validator (Python, from PyPI), which knows nothing of this crate.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, response.body_text()).unwrap();
    let run = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output();
    let installed = matches!(&run, Ok(output) if !String::from_utf8_lossy(&output.stderr).contains("No module named"));
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: openapi-spec-validator is missing (pip install openapi-spec-validator)"
        );
        eprintln!(
            "SKIPPED: openapi-spec-validator is not installed (pip install openapi-spec-validator)"
        );
        return;
    }
    let output = run.unwrap();
    assert!(
        output.status.success(),
        "the validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));

    // And a broken document is refused by it, so the check can fail.
    let mut broken = document.clone();
    broken["paths"]["/v1/keys"]["get"]["responses"] = json!("none");
    std::fs::write(&file, broken.to_string()).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the validator accepts anything");
}

#[tokio::test]
async fn a_key_shows_its_limits() {
    let host = Host::start().await;
    let (id, _) = host.create("acct_a", "Partner").await;
    let limits = tower_api_key::KeyLimits::none()
        .with_rate(
            "100/s burst 20"
                .parse::<tower_api_key::RateLimit>()
                .unwrap(),
        )
        .with_networks(
            "2001:db8::/32 203.0.113.0/24"
                .parse::<tower_api_key::AllowedNetworks>()
                .unwrap(),
        );
    host.store
        .set_limits(&id.as_str().into(), limits)
        .await
        .unwrap();
    let key = host
        .call("acct_a", "GET", &format!("/v1/keys/{id}"), None)
        .await
        .json();
    assert_eq!(key["rate_limit"], "100/s burst 20");
    assert_eq!(
        key["allowed_networks"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
}
