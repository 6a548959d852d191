//! The whole layer: an axum `Router` behind `ApiKeyLayer` over a `MemoryStore`, driven with
//! arbitrary `Authorization` bytes.
//!
//! Input: the values of the `Authorization` fields, separated by `\n`; pieces that are not valid
//! header values are dropped, and an empty input sends no field. Since no fuzzer can forge a
//! key that the store holds, or easily a checksum, control bytes (which no header value can
//! hold) stand for them:
//!
//! | byte | replaced by |
//! |---|---|
//! | `0x01` | the store's live key |
//! | `0x02` | the store's test (sandbox) key |
//! | `0x03` | a revoked key |
//! | `0x04` | an expired key |
//! | `0x05` | a well-formed key the store does not hold |
//! | `0x06` | the base62 CRC32 checksum of the (at most 40) bytes before it, by the model |
//!
//! so `Bearer om_test_<32 characters>\x06` is a key with a valid checksum whatever the 32
//! characters are. Each answer must be the one the models in `tower_api_key_fuzz` predict: the
//! fields read as RFC 9110 and RFC 6750 say; no credentials or another scheme get `401` with a
//! bare challenge; malformed ones `400 invalid_request`; a Bearer token `200` with the handler's
//! answer (the key's name) if it is the live or the test key, and `401 invalid_token` otherwise.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_api_key::{Clock, ManualClock};
use tower_api_key::Credentials;
use tower_api_key::{
    ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Principal,
};
use tower_api_key_fuzz::{header, key};

struct Fixture {
    runtime: Runtime,
    app: Router,
    /// The keys `0x01` to `0x05` stand for.
    keys: [String; 5],
}

/// The names of the keys `0x01` and `0x02` stand for, the only ones that authenticate: the
/// handler answers with the name.
const GOOD: [&str; 2] = ["Live", "Test"];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let format = KeyFormat::new("om").expect("valid prefix");
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let store = MemoryStore::new(format.clone()).with_clock(clock.clone());
        let keys = runtime.block_on(async {
            let create = |new: NewKey| async { store.create(new).await.expect("created") };
            let live = create(NewKey::new(GOOD[0], Environment::Live)).await;
            let test = create(NewKey::new(GOOD[1], Environment::Test)).await;
            let revoked = create(NewKey::new("Revoked", Environment::Live)).await;
            store.revoke(revoked.id()).await.expect("revoked");
            let expiring = NewKey::new("Expired", Environment::Live)
                .expires_at(clock.now() + Duration::from_secs(60));
            let expired = create(expiring).await;
            clock.advance(Duration::from_secs(120));
            let unknown = format.generate(Environment::Live).expect("generated");
            [&live.key, &test.key, &revoked.key, &expired.key, &unknown]
                .map(|key| key.expose_secret().to_owned())
        });
        let layer = ApiKeyLayer::builder(store)
            .realm("fuzz")
            .clock(clock)
            .build();
        let app = Router::new()
            .route(
                "/",
                get(|principal: Principal| async move { principal.name().to_owned() }),
            )
            .layer(layer);
        Fixture { runtime, app, keys }
    })
}

/// `data` with the control bytes replaced, as the module docs say.
fn expand(data: &[u8], keys: &[String; 5]) -> Vec<u8> {
    let mut expanded = Vec::with_capacity(data.len() + 64);
    for &byte in data {
        match byte {
            0x01..=0x05 => expanded.extend_from_slice(keys[usize::from(byte - 1)].as_bytes()),
            0x06 => {
                let body = &expanded[expanded.len().saturating_sub(40)..];
                let checksum = key::checksum_of(body);
                expanded.extend_from_slice(&checksum);
            }
            _ => expanded.push(byte),
        }
    }
    expanded
}

/// What the layer must answer.
enum Answer {
    /// `200` with the handler's body: the key's name.
    Ok(&'static str),
    /// A refusal with this status and `WWW-Authenticate` challenge.
    Refused(StatusCode, &'static str),
}

/// The answer the header model and the store's keys predict for `fields`.
fn expected(fields: &[&[u8]], keys: &[String; 5]) -> Answer {
    const BARE: &str = r#"Bearer realm="fuzz""#;
    const INVALID_REQUEST: &str = r#"Bearer realm="fuzz", error="invalid_request""#;
    const INVALID_TOKEN: &str = r#"Bearer realm="fuzz", error="invalid_token""#;
    match header::credentials(fields) {
        Credentials::Missing | Credentials::OtherScheme => {
            Answer::Refused(StatusCode::UNAUTHORIZED, BARE)
        }
        Credentials::Malformed(_) => Answer::Refused(StatusCode::BAD_REQUEST, INVALID_REQUEST),
        Credentials::Bearer(token) => {
            match GOOD
                .into_iter()
                .zip(keys)
                .find(|(_, key)| key.as_bytes() == token)
            {
                Some((name, _)) => Answer::Ok(name),
                None => Answer::Refused(StatusCode::UNAUTHORIZED, INVALID_TOKEN),
            }
        }
        other => panic!("the model gave {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let expanded = expand(data, &f.keys);
    let mut request = Request::get("/").body(Body::empty()).expect("a request");
    let mut fields = Vec::new();
    if !expanded.is_empty() {
        for piece in expanded.split(|&b| b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(piece) {
                request.headers_mut().append(AUTHORIZATION, value);
                fields.push(piece);
            }
        }
    }
    let answer = expected(&fields, &f.keys);
    let response = f
        .runtime
        .block_on(f.app.clone().oneshot(request))
        .unwrap_or_else(|never| match never {});
    let challenge = response.headers().get(WWW_AUTHENTICATE).cloned();
    match answer {
        Answer::Ok(name) => {
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "for the fields {}",
                header::show(&fields)
            );
            assert_eq!(challenge, None);
            let body = f
                .runtime
                .block_on(axum::body::to_bytes(response.into_body(), 1024))
                .expect("a body");
            assert_eq!(body, name.as_bytes());
        }
        Answer::Refused(status, expected) => {
            assert_eq!(
                response.status(),
                status,
                "for the fields {}",
                header::show(&fields)
            );
            assert_eq!(
                challenge.as_ref().map(HeaderValue::as_bytes),
                Some(expected.as_bytes()),
                "for the fields {}",
                header::show(&fields)
            );
        }
    }
});
