//! Per-key limits seen from outside, over real HTTP on loopback: allowlists by network (IPv4,
//! IPv6, IPv4-mapped IPv6), trusted and untrusted proxies, forged forwarding headers; rates per
//! key, per owner and by default, their 429 and their fields.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tower_api_key::{
    AllowedNetworks, ApiKeyLayer, Environment, KeyDigest, KeyFormat, KeyLimits, KeyRecord,
    KeyStore, PlaintextKey, RateLimit, ResolveError, ScopeSet, TrustedProxies,
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
    common::serve_with_peers(bind, app).await
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

fn rate(text: &str) -> KeyLimits {
    KeyLimits::none().with_rate(text.parse::<RateLimit>().unwrap())
}

const TOO_MANY_BODY: &str = r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"This API key is over its rate limit: retry after the number of seconds in Retry-After."}"#;

#[tokio::test]
async fn over_its_rate_a_key_gets_429_with_retry_after_and_the_ratelimit_fields() {
    let mut keys = Keys::new();
    let limited = keys.add("limited", rate("2/10s"));
    let other = keys.add("other", rate("2/10s"));
    let addr = serve("127.0.0.1:0", keys.layer(TrustedProxies::none())).await;

    // Within the rate: the fields say what is left (the reset rounded up to whole seconds).
    let first = call(addr, &limited, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body_text(), "orders");
    assert_eq!(first.header("ratelimit-policy"), r#""key";q=2;w=10"#);
    assert_eq!(first.header("ratelimit"), r#""key";r=1;t=5"#);
    let second = call(addr, &limited, &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("ratelimit"), r#""key";r=0;t=10"#);

    // Over it: refused before the handler, with the exact bytes.
    let third = call(addr, &limited, &[]).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.header("content-type"), "application/problem+json");
    assert_eq!(third.body_text(), TOO_MANY_BODY);
    assert_eq!(third.header("retry-after"), "5");
    assert_eq!(third.header("ratelimit-policy"), r#""key";q=2;w=10"#);
    assert_eq!(third.header("ratelimit"), r#""key";r=0;t=10"#);
    assert!(!third.has_header("www-authenticate"));

    // Another key has its own bucket.
    assert_eq!(call(addr, &other, &[]).await.status, 200);
}

#[tokio::test]
async fn an_owners_rate_is_shared_by_all_its_keys() {
    let mut keys = Keys::new();
    let first = keys.add("first", KeyLimits::none());
    let second = keys.add("second", KeyLimits::none());
    let layer = {
        let records = Arc::new(keys.records);
        ApiKeyLayer::resolver_builder(keys.format.clone(), move |digest: KeyDigest| {
            let records = records.clone();
            async move {
                Ok::<_, ResolveError>(
                    records
                        .get(&digest)
                        .cloned()
                        .map(|record| record.with_owner("acct_1")),
                )
            }
        })
        .owner_rate_limit("3/m".parse().unwrap())
        .build()
    };
    let addr = serve("127.0.0.1:0", layer).await;
    let statuses = [
        call(addr, &first, &[]).await,
        call(addr, &second, &[]).await,
        call(addr, &first, &[]).await,
        call(addr, &second, &[]).await,
    ];
    let codes: Vec<u16> = statuses.iter().map(|r| r.status).collect();
    assert_eq!(codes, [200, 200, 200, 429], "a new key adds no allowance");
    assert_eq!(
        statuses[0].header("ratelimit-policy"),
        r#""owner";q=3;w=60"#
    );
    assert_eq!(statuses[3].header("ratelimit"), r#""owner";r=0;t=60"#);
}

#[tokio::test]
async fn defaults_per_layer_and_environment_and_the_fields_can_be_left_out() {
    let mut keys = Keys::new();
    let own = keys.add("own", rate("5/s"));
    let plain = keys.add("plain", KeyLimits::none());
    let records = Arc::new(keys.records);
    let layer = ApiKeyLayer::resolver_builder(keys.format.clone(), move |digest: KeyDigest| {
        let records = records.clone();
        async move { Ok::<_, ResolveError>(records.get(&digest).cloned()) }
    })
    .rate_limit("100/s".parse().unwrap())
    .rate_limit_for(Environment::Live, "1/h".parse().unwrap())
    .rate_limit_headers(false)
    .build();
    let addr = serve("127.0.0.1:0", layer).await;
    // The environment's default holds a key without a rate of its own.
    let ok = call(addr, &plain, &[]).await;
    assert_eq!(ok.status, 200);
    assert!(!ok.has_header("ratelimit") && !ok.has_header("ratelimit-policy"));
    let refused = call(addr, &plain, &[]).await;
    assert_eq!(refused.status, 429);
    // A 429 always says why, fields included.
    assert_eq!(refused.header("ratelimit-policy"), r#""key";q=1;w=3600"#);
    // A key's own rate wins over the defaults.
    for _ in 0..5 {
        assert_eq!(call(addr, &own, &[]).await.status, 200);
    }
    assert_eq!(call(addr, &own, &[]).await.status, 429);
}

#[tokio::test]
async fn rate_limited_requests_are_counted_as_such() {
    let store = tower_api_key::MemoryStore::new(KeyFormat::new("om").unwrap());
    let created = store
        .create(
            tower_api_key::NewKey::new("Limited", Environment::Live)
                .rate_limit("1/h".parse().unwrap()),
        )
        .await
        .unwrap();
    let layer = ApiKeyLayer::new(store.clone());
    let addr = serve("127.0.0.1:0", layer.clone()).await;
    assert_eq!(call(addr, &created.key, &[]).await.status, 200);
    assert_eq!(call(addr, &created.key, &[]).await.status, 429);
    assert_eq!(call(addr, &created.key, &[]).await.status, 429);
    layer.flush_usage().await.unwrap();
    let today = tower_api_key::Day::today();
    let usage = store.usage(created.id(), today, today).await.unwrap();
    assert_eq!(usage[0].counts.get(tower_api_key::KeyOutcome::Allowed), 1);
    assert_eq!(
        usage[0].counts.get(tower_api_key::KeyOutcome::RateLimited),
        2
    );
}

#[tokio::test]
async fn each_owner_can_have_its_own_shared_rate() {
    let mut keys = Keys::new();
    let small = keys.add("small", KeyLimits::none());
    let large = keys.add("large", KeyLimits::none());
    let records = Arc::new(keys.records);
    let owners: HashMap<String, &str> = [
        (small_id(&records, &small), "acct_small"),
        (small_id(&records, &large), "acct_large"),
    ]
    .into_iter()
    .collect();
    let owners = Arc::new(owners);
    let layer = ApiKeyLayer::resolver_builder(keys.format.clone(), move |digest: KeyDigest| {
        let (records, owners) = (records.clone(), owners.clone());
        async move {
            Ok::<_, ResolveError>(records.get(&digest).cloned().map(|record| {
                let owner = owners[record.id.as_str()];
                record.with_owner(owner)
            }))
        }
    })
    .owner_rate_limit_with(|owner| match owner {
        "acct_small" => Some("1/h".parse().unwrap()),
        "acct_large" => Some("3/h".parse().unwrap()),
        _ => None,
    })
    .build();
    let addr = serve("127.0.0.1:0", layer).await;
    let mut small_codes = Vec::new();
    let mut large_codes = Vec::new();
    for _ in 0..4 {
        small_codes.push(call(addr, &small, &[]).await.status);
        large_codes.push(call(addr, &large, &[]).await.status);
    }
    assert_eq!(small_codes, [200, 429, 429, 429]);
    assert_eq!(large_codes, [200, 200, 200, 429]);
}

/// The id of the record `key` resolves to.
fn small_id(records: &HashMap<KeyDigest, KeyRecord>, key: &PlaintextKey) -> String {
    records[&key.digest()].id.as_str().to_owned()
}
