//! Properties of the real layer, checked in process with proptest.
//!
//! - For any `Authorization` bytes (zero, one or several fields) the answer is `200`, `400` or
//!   `401`, never a panic, and it is the one a model of the response contract predicts; `200`
//!   only for a provisioned key that is neither revoked nor expired.
//! - For any scopes a key holds and any requirement (all-of or any-of) over a small alphabet of
//!   look-alike scopes, `RequireScopes` lets the request through exactly when the requirement
//!   holds, and otherwise names what is required and what is missing.
//!
//! Case counts are kept so that the file runs in a few seconds in debug mode.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use regex::bytes::Regex;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_api_key::{
    ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Rejection, RequireScopes,
    Scope,
};
use tower_api_key::{Clock, ManualClock};

const HEADER_CASES: u32 = 4_000;
const SCOPE_CASES: u32 = 2_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
}

fn send(runtime: &Runtime, app: &Router, path: &str, fields: &[Vec<u8>]) -> Response<Body> {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    for field in fields {
        let value = HeaderValue::from_bytes(field).expect("the strategies make valid values");
        request.headers_mut().append(AUTHORIZATION, value);
    }
    runtime.block_on(app.clone().oneshot(request)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Any header bytes

/// A store with keys in every state, and the layer in front of one route.
struct Keys {
    runtime: Runtime,
    app: Router,
    /// Provisioned, not revoked, not expired: a live and a test key.
    good: Vec<String>,
    /// Revoked, expired, and well-formed but never provisioned.
    bad: Vec<String>,
}

fn keys() -> Keys {
    let runtime = runtime();
    let format = KeyFormat::new("om").unwrap();
    let clock = clock();
    let store = MemoryStore::new(format.clone()).with_clock(clock.clone());
    let (good, bad) = runtime.block_on(async {
        let create = |new: NewKey| {
            let store = store.clone();
            async move { store.create(new).await.unwrap() }
        };
        let live = create(NewKey::new("Live", Environment::Live)).await;
        let test = create(NewKey::new("Test", Environment::Test)).await;
        let revoked = create(NewKey::new("Revoked", Environment::Live)).await;
        store.revoke(revoked.id()).await.unwrap();
        let expired = create(
            NewKey::new("Expired", Environment::Test)
                .expires_at(clock.now() + Duration::from_secs(60)),
        )
        .await;
        let unknown = format.generate(Environment::Live).unwrap();
        let text = |key: &tower_api_key::PlaintextKey| key.expose_secret().to_owned();
        (
            vec![text(&live.key), text(&test.key)],
            vec![text(&revoked.key), text(&expired.key), text(&unknown)],
        )
    });
    // Past the expired key's expiry, well before anything else's.
    clock.advance(Duration::from_secs(120));
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ApiKeyLayer::builder(store)
            .realm("props")
            .clock(clock)
            .build(),
    );
    Keys {
        runtime,
        app,
        good,
        bad,
    }
}

/// The status the response contract gives a request with these `Authorization` fields, written
/// from the README's table with regular expressions rather than from the parser's code:
///
/// - no field: `401`; several fields: `400`;
/// - one field, once optional whitespace (spaces, tabs) around it is ignored: empty is `400`;
///   `bearer` in any case, one or more spaces and an RFC 6750 `b64token` is `200` for a good key
///   and `401` for anything else; `bearer` alone or followed by a space and anything else is
///   `400`; any other scheme is `401`.
fn expected_status(fields: &[Vec<u8>], good: &[String]) -> StatusCode {
    static RULES: OnceLock<[Regex; 3]> = OnceLock::new();
    let [blank, bearer_token, bearer_other] = RULES.get_or_init(|| {
        [
            Regex::new(r"(?s-u)^[ \t]*$").unwrap(),
            Regex::new(r"(?s-u)^[ \t]*(?i:bearer) +([A-Za-z0-9\-._~+/]+=*)[ \t]*$").unwrap(),
            Regex::new(r"(?s-u)^[ \t]*(?i:bearer)(?:[ \t]*| .*)$").unwrap(),
        ]
    });
    match fields {
        [] => StatusCode::UNAUTHORIZED,
        [value] if blank.is_match(value) => StatusCode::BAD_REQUEST,
        [value] => match bearer_token.captures(value) {
            Some(token) if good.iter().any(|key| key.as_bytes() == &token[1]) => StatusCode::OK,
            Some(_) => StatusCode::UNAUTHORIZED,
            None if bearer_other.is_match(value) => StatusCode::BAD_REQUEST,
            None => StatusCode::UNAUTHORIZED,
        },
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Any byte a header value may hold: tab, visible ASCII and space, and obs-text.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
}

fn whitespace() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![3 => Just(b' '), 1 => Just(b'\t')], 0..4)
}

/// What separates the scheme from the token: mostly spaces, as RFC 9110 wants, sometimes tabs or
/// nothing.
fn separator() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(Just(b' '), 1..4),
        1 => whitespace(),
    ]
}

/// `bearer` with each letter's case chosen at random, or another scheme.
fn scheme() -> impl Strategy<Value = Vec<u8>> {
    let bearer = any::<u8>().prop_map(|mask| {
        b"bearer"
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if mask & (1 << i) != 0 {
                    b.to_ascii_uppercase()
                } else {
                    b
                }
            })
            .collect::<Vec<u8>>()
    });
    prop_oneof![
        6 => bearer,
        1 => select(vec!["Basic", "Token", "Bearerx", "Bear", "", "Bearer\t", "Digest"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// A small change to a key: what typos, truncated pastes and forgeries look like.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    ToggleCase(Index),
    Truncate(Index),
    Append(Vec<u8>),
    Twice,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        4 => select(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".to_vec()),
        1 => header_byte(),
    ];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<Index>(), byte.clone()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::ToggleCase),
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(byte, 1..3).prop_map(Mutation::Append),
        Just(Mutation::Twice),
    ]
}

fn mutate(key: &str, mutation: &Mutation) -> Vec<u8> {
    let mut bytes = key.as_bytes().to_vec();
    match mutation {
        Mutation::Replace(at, b) => {
            let at = at.index(bytes.len());
            bytes[at] = *b;
        }
        Mutation::Insert(at, b) => {
            let at = at.index(bytes.len() + 1);
            bytes.insert(at, *b);
        }
        Mutation::Delete(at) => {
            let at = at.index(bytes.len());
            bytes.remove(at);
        }
        Mutation::ToggleCase(at) => {
            let at = at.index(bytes.len());
            bytes[at] = if bytes[at].is_ascii_uppercase() {
                bytes[at].to_ascii_lowercase()
            } else {
                bytes[at].to_ascii_uppercase()
            };
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Append(tail) => bytes.extend_from_slice(tail),
        Mutation::Twice => bytes.extend_from_slice(key.as_bytes()),
    }
    bytes
}

/// What follows the scheme: a real key as it is or slightly changed, or random token characters.
fn candidate(keys: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let exact = select(keys.clone()).prop_map(String::into_bytes);
    let mutated = (select(keys), mutation()).prop_map(|(key, m)| mutate(&key, &m));
    let token_chars = prop::collection::vec(select(b"abcXYZ019-._~+/=_ ".to_vec()), 0..60);
    prop_oneof![3 => exact, 4 => mutated, 1 => token_chars]
}

/// One `Authorization` value: random bytes, or `OWS scheme sep candidate OWS` with every part
/// varied.
fn field(keys: Vec<String>) -> BoxedStrategy<Vec<u8>> {
    let structured = (
        whitespace(),
        scheme(),
        separator(),
        candidate(keys),
        whitespace(),
    )
        .prop_map(|(lead, scheme, sep, candidate, trail)| {
            [lead, scheme, sep, candidate, trail].concat()
        });
    let random = prop::collection::vec(header_byte(), 0..80);
    prop_oneof![5 => structured, 1 => random].boxed()
}

fn fields(keys: Vec<String>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let one = field(keys);
    prop_oneof![
        1 => Just(Vec::new()),
        10 => one.clone().prop_map(|field| vec![field]),
        2 => prop::collection::vec(one, 2..4),
    ]
}

#[test]
fn the_model_agrees_with_the_contract_on_known_cases() {
    let good = vec!["om_live_GOOD".to_owned()];
    let cases: &[(&[&[u8]], u16)] = &[
        (&[], 401),
        (&[b"Bearer om_live_GOOD"], 200),
        (&[b" \tbEaReR    om_live_GOOD\t "], 200),
        (&[b"Bearer om_live_OTHER"], 401),
        (&[b"Bearer\tom_live_GOOD"], 401),
        (&[b"Bearer \tom_live_GOOD"], 400),
        (&[b"Bearer om_live_GOOD", b"Bearer om_live_GOOD"], 400),
        (&[b"Basic dXNlcg=="], 401),
        (&[b"Bearer"], 400),
        (&[b"Bearer   "], 400),
        (&[b"  "], 400),
        (&[b"Bearer a b"], 400),
        (&[b"Bearer =="], 400),
        (&[b"Bearer caf\xc3\xa9"], 400),
        (&[b"Bearerom_live_GOOD"], 401),
    ];
    for (fields, status) in cases {
        let fields: Vec<Vec<u8>> = fields.iter().map(|f| f.to_vec()).collect();
        assert_eq!(
            expected_status(&fields, &good).as_u16(),
            *status,
            "{fields:?}"
        );
    }
}

#[test]
fn any_authorization_bytes_get_the_status_the_contract_gives() {
    let keys = keys();
    let all: Vec<String> = keys.good.iter().chain(&keys.bad).cloned().collect();
    let config = ProptestConfig {
        cases: HEADER_CASES,
        ..ProptestConfig::default()
    };
    proptest!(config, |(fields in fields(all))| {
        let response = send(&keys.runtime, &keys.app, "/", &fields);
        let status = response.status();
        prop_assert!(
            [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED].contains(&status),
            "status {}", status
        );
        prop_assert_eq!(status, expected_status(&fields, &keys.good));
        if status == StatusCode::OK {
            // Only ever a provisioned, unrevoked, unexpired key.
            prop_assert_eq!(fields.len(), 1);
            let presented = String::from_utf8_lossy(&fields[0]);
            prop_assert!(keys.good.iter().any(|key| presented.trim().ends_with(key.as_str())));
            prop_assert!(!keys.bad.iter().any(|key| presented.contains(key.as_str())));
        } else {
            let challenge = response.headers().get(WWW_AUTHENTICATE);
            prop_assert!(challenge.is_some_and(|c| c.as_bytes().starts_with(br#"Bearer realm="props""#)));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Any scopes and any requirement

/// Scopes that differ by case, by one letter, or by action: an exact, case-sensitive check must
/// tell every one of them apart.
const ALPHABET_LEN: usize = 5;
const ALPHABET: [Scope; ALPHABET_LEN] = [
    Scope::from_static("products:read"),
    Scope::from_static("products:write"),
    Scope::from_static("Products:read"),
    Scope::from_static("products:reads"),
    Scope::from_static("orders:read"),
];
/// How many subsets the alphabet has.
const SETS: u8 = 1 << ALPHABET_LEN;

fn scopes_in(mask: u8) -> Vec<Scope> {
    ALPHABET
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, scope)| scope.clone())
        .collect()
}

/// Names of the scopes in `mask`, sorted as the challenge lists them.
fn names_in(mask: u8) -> Vec<String> {
    let mut names: Vec<String> = scopes_in(mask).iter().map(|s| s.to_string()).collect();
    names.sort();
    names
}

/// One key per subset of the alphabet, and a route per requirement: `/all/{mask}` and
/// `/any/{mask}` for every non-empty subset.
struct Scoped {
    runtime: Runtime,
    app: Router,
    /// `keys[mask]` holds exactly the scopes in `mask`.
    keys: Vec<String>,
}

fn scoped() -> Scoped {
    let runtime = runtime();
    let format = KeyFormat::new("om").unwrap();
    let store = MemoryStore::new(format.clone());
    let keys = runtime.block_on(async {
        let mut keys = Vec::new();
        for mask in 0..SETS {
            let new = NewKey::new(format!("set {mask}"), Environment::Live).scopes(scopes_in(mask));
            let created = store.create(new).await.unwrap();
            keys.push(created.key.expose_secret().to_owned());
        }
        keys
    });
    let mut app = Router::new();
    for mask in 1..SETS {
        app = app
            .route(
                &format!("/all/{mask}"),
                get(|| async { "ok" }).route_layer(RequireScopes::all(scopes_in(mask))),
            )
            .route(
                &format!("/any/{mask}"),
                get(|| async { "ok" }).route_layer(RequireScopes::any(scopes_in(mask))),
            );
    }
    let app = app.layer(ApiKeyLayer::new(store));
    Scoped { runtime, app, keys }
}

#[test]
fn require_scopes_grants_exactly_when_the_requirement_holds() {
    let scoped = scoped();
    let config = ProptestConfig {
        cases: SCOPE_CASES,
        ..ProptestConfig::default()
    };
    proptest!(config, |(granted in 0..SETS, required in 1..SETS, all in any::<bool>())| {
        // The model: all-of needs every required scope, any-of at least one.
        let holds = if all {
            required & !granted == 0
        } else {
            required & granted != 0
        };
        let path = format!("/{}/{required}", if all { "all" } else { "any" });
        let field = format!("Bearer {}", scoped.keys[usize::from(granted)]).into_bytes();
        let response = send(&scoped.runtime, &scoped.app, &path, &[field]);
        if holds {
            prop_assert_eq!(response.status(), StatusCode::OK);
            return Ok(());
        }
        prop_assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let challenge = format!(
            r#"Bearer realm="api", error="insufficient_scope", scope="{}""#,
            names_in(required).join(" ")
        );
        prop_assert_eq!(response.headers()[WWW_AUTHENTICATE].to_str().unwrap(), challenge);
        let Some(Rejection::InsufficientScope(refused)) = response.extensions().get::<Rejection>()
        else {
            return Err(TestCaseError::fail("a 403 without its InsufficientScope"));
        };
        // All-of names the scopes the key lacks; a failed any-of names every alternative.
        let missing = if all { required & !granted } else { required };
        let named: Vec<String> = refused.missing().iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(named, names_in(missing));
    });
}
