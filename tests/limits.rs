//! Per-key limits seen from outside, over real HTTP on loopback: allowlists by network (IPv4,
//! IPv6, IPv4-mapped IPv6), trusted and untrusted proxies, forged forwarding headers.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower_api_key::{
    AllowedNetworks, ApiKeyLayer, Environment, KeyDigest, KeyFormat, KeyLimits, KeyRecord,
    PlaintextKey, ResolveError, ScopeSet, TrustedProxies,
};

use common::{bearer, get as http_get, RawResponse};

const FORBIDDEN_BODY: &str = r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"This API key may not be used from this network."}"#;

/// Keys with the limits given, served by a resolver of the test's own.
struct Keys {
    format: KeyFormat,
    records: HashMap<KeyDigest, KeyRecord>,
}

impl Keys {
    fn new() -> Self {
        Keys {
            format: KeyFormat::new("om").unwrap(),
            records: HashMap::new(),
        }
    }

    fn add(&mut self, name: &str, limits: KeyLimits) -> PlaintextKey {
        let key = self.format.generate(Environment::Live).unwrap();
        let record = KeyRecord::new(format!("key_{name}"), Environment::Live, ScopeSet::empty())
            .with_name(name)
            .with_limits(limits);
        self.records.insert(key.digest(), record);
        key
    }

    fn layer(self, proxies: TrustedProxies) -> ApiKeyLayer {
        let records = Arc::new(self.records);
        let format = self.format.clone();
        ApiKeyLayer::resolver_builder(format, move |digest: KeyDigest| {
            let records = records.clone();
            async move { Ok::<_, ResolveError>(records.get(&digest).cloned()) }
        })
        .trusted_proxies(proxies)
        .build()
    }
}

fn networks(text: &str) -> KeyLimits {
    KeyLimits::none().with_networks(text.parse::<AllowedNetworks>().unwrap())
}

/// Serves `layer` at `bind` with each connection's address, as axum applications do.
async fn serve(bind: &str, layer: ApiKeyLayer) -> SocketAddr {
    let app = Router::new()
        .route("/v1/orders", get(|| async { "orders" }))
        .layer(layer);
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

async fn call(addr: SocketAddr, key: &PlaintextKey, extra: &[&str]) -> RawResponse {
    let auth = bearer(key.expose_secret());
    let mut headers: Vec<&[u8]> = vec![&auth];
    headers.extend(extra.iter().map(|h| h.as_bytes()));
    http_get(addr, "/v1/orders", &headers).await
}

fn assert_refused(response: &RawResponse) {
    assert_eq!(response.status, 403);
    assert_eq!(response.header("content-type"), "application/problem+json");
    assert_eq!(response.body_text(), FORBIDDEN_BODY);
    // Not a matter of credentials: no challenge, and nothing of the list.
    assert!(!response.has_header("www-authenticate"));
}

#[tokio::test]
async fn an_allowlist_lets_its_networks_in_and_refuses_the_rest_over_ipv4() {
    let mut keys = Keys::new();
    let loopback = keys.add("loopback", networks("127.0.0.0/8"));
    let elsewhere = keys.add("elsewhere", networks("203.0.113.0/24 2001:db8::/32"));
    let anywhere = keys.add("anywhere", KeyLimits::none());
    let addr = serve("127.0.0.1:0", keys.layer(TrustedProxies::none())).await;

    assert_eq!(call(addr, &loopback, &[]).await.status, 200);
    assert_eq!(call(addr, &anywhere, &[]).await.status, 200);
    assert_refused(&call(addr, &elsewhere, &[]).await);
    // A forwarding header from a peer nobody trusts changes nothing, either way.
    assert_refused(&call(addr, &elsewhere, &["X-Forwarded-For: 203.0.113.9"]).await);
    assert_refused(&call(addr, &elsewhere, &["Forwarded: for=203.0.113.9"]).await);
    assert_eq!(
        call(addr, &loopback, &["X-Forwarded-For: 198.51.100.1"])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn ipv6_and_ipv4_mapped_peers_match_their_networks() {
    let mut keys = Keys::new();
    let v6 = keys.add("v6", networks("::1/128"));
    let v4 = keys.add("v4", networks("127.0.0.1"));
    let layer = keys.layer(TrustedProxies::none());
    // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses.
    let addr = serve("[::]:0", layer).await;
    let over_v6: SocketAddr = format!("[::1]:{}", addr.port()).parse().unwrap();
    let over_v4: SocketAddr = format!("127.0.0.1:{}", addr.port()).parse().unwrap();

    assert_eq!(call(over_v6, &v6, &[]).await.status, 200);
    assert_refused(&call(over_v6, &v4, &[]).await);
    // From 127.0.0.1, seen as ::ffff:127.0.0.1: the IPv4 range matches, ::1 does not.
    assert_eq!(call(over_v4, &v4, &[]).await.status, 200);
    assert_refused(&call(over_v4, &v6, &[]).await);
}

#[tokio::test]
async fn behind_trusted_proxies_the_nearest_untrusted_forwarded_address_counts() {
    let mut keys = Keys::new();
    let office = keys.add("office", networks("203.0.113.0/24"));
    // The test's client stands for a proxy at 127.0.0.1, trusted, and 10.0.0.0/8 behind it.
    let proxies = TrustedProxies::x_forwarded_for([
        "127.0.0.0/8".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ])
    .unwrap();
    let addr = serve("127.0.0.1:0", keys.layer(proxies)).await;

    assert_eq!(
        call(addr, &office, &["X-Forwarded-For: 203.0.113.9"])
            .await
            .status,
        200
    );
    assert_eq!(
        call(addr, &office, &["X-Forwarded-For: 203.0.113.9, 10.1.2.3"])
            .await
            .status,
        200
    );
    // A client that writes an office address before its own: the proxy appended the real one.
    assert_refused(
        &call(
            addr,
            &office,
            &["X-Forwarded-For: 203.0.113.9, 198.51.100.7"],
        )
        .await,
    );
    // Not an address: no guess.
    assert_refused(&call(addr, &office, &["X-Forwarded-For: unknown"]).await);
    // Only the proxy itself (no header): the proxy is not in the office.
    assert_refused(&call(addr, &office, &[]).await);
    // The proxies write X-Forwarded-For: a Forwarded header is the client's own.
    assert_refused(&call(addr, &office, &["Forwarded: for=203.0.113.9"]).await);

    let mut keys = Keys::new();
    let office = keys.add("office", networks("2001:db8::/32"));
    let proxies = TrustedProxies::forwarded(["127.0.0.0/8".parse().unwrap()]).unwrap();
    let addr = serve("127.0.0.1:0", keys.layer(proxies)).await;
    assert_eq!(
        call(
            addr,
            &office,
            &[r#"Forwarded: for="[2001:db8::7]:4711";proto=https"#]
        )
        .await
        .status,
        200
    );
    assert_refused(&call(addr, &office, &["X-Forwarded-For: 2001:db8::7"]).await);
}

#[tokio::test]
async fn without_the_connections_address_a_key_with_an_allowlist_is_refused() {
    let mut keys = Keys::new();
    let limited = keys.add("limited", networks("127.0.0.0/8"));
    let free = keys.add("free", KeyLimits::none());
    let app = Router::new()
        .route("/v1/orders", get(|| async { "orders" }))
        .layer(keys.layer(TrustedProxies::none()));
    // Served without `ConnectInfo`: the layer cannot tell where a request comes from.
    let addr = common::serve(app).await;
    assert_refused(&call(addr, &limited, &[]).await);
    assert_eq!(call(addr, &free, &[]).await.status, 200);
}
