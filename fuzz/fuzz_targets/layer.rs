//! The whole layer: an axum `Router` behind `ApiKeyLayer` over a `MemoryStore`, driven with
//! arbitrary `Authorization` bytes.
//!
//! Input: the values of the `Authorization` fields, separated by `\n`; pieces that are not valid
//! header values are dropped, and an empty input sends no field. Since no fuzzer can forge a
//! checksum-valid key that the store holds, the control bytes `0x01` to `0x05` (which no header
//! value can hold) stand for the store's keys:
//!
//! | byte | key |
//! |---|---|
//! | `0x01` | a live key |
//! | `0x02` | a test (sandbox) key |
//! | `0x03` | a revoked key |
//! | `0x04` | an expired key |
//! | `0x05` | a well-formed key the store does not hold |
//!
//! The answer must be `200`, `400` or `401`; `200` only for exactly one field that reads
//! `OWS bearer 1*SP key OWS` (scheme in any case) with the live or the test key; every refusal
//! carries the layer's challenge.
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
use tower_api_key::clock::{Clock, ManualClock};
use tower_api_key::{ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey};

struct Fixture {
    runtime: Runtime,
    app: Router,
    /// The keys `0x01` to `0x05` stand for; the first two are the only ones that authenticate.
    keys: [String; 5],
}

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
            let live = create(NewKey::new("Live", Environment::Live)).await;
            let test = create(NewKey::new("Test", Environment::Test)).await;
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
        let layer = ApiKeyLayer::builder(format, store)
            .realm("fuzz")
            .clock(clock)
            .build();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(layer);
        Fixture { runtime, app, keys }
    })
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether `value` is `OWS bearer 1*SP key OWS` for one of the keys that authenticate.
fn presents_a_good_key(value: &[u8], good: &[String]) -> bool {
    let value = trim_ows(value);
    good.iter().any(|key| {
        let Some(head) = value.strip_suffix(key.as_bytes()) else {
            return false;
        };
        head.len() > 6
            && head[..6].eq_ignore_ascii_case(b"bearer")
            && head[6..].iter().all(|&b| b == b' ')
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut expanded = Vec::with_capacity(data.len());
    for &byte in data {
        match byte {
            0x01..=0x05 => expanded.extend_from_slice(f.keys[usize::from(byte - 1)].as_bytes()),
            _ => expanded.push(byte),
        }
    }
    let mut request = Request::get("/").body(Body::empty()).expect("a request");
    let mut values = Vec::new();
    if !expanded.is_empty() {
        for piece in expanded.split(|&b| b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(piece) {
                request.headers_mut().append(AUTHORIZATION, value.clone());
                values.push(value);
            }
        }
    }
    let response = f
        .runtime
        .block_on(f.app.clone().oneshot(request))
        .unwrap_or_else(|never| match never {});
    let status = response.status();
    match status {
        StatusCode::OK => {
            assert_eq!(values.len(), 1, "200 with {} fields", values.len());
            assert!(
                presents_a_good_key(values[0].as_bytes(), &f.keys[..2]),
                "200 for a value that is not a good key: {:?}",
                values[0]
            );
        }
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .expect("a challenge");
            assert!(challenge.as_bytes().starts_with(br#"Bearer realm="fuzz""#));
        }
        other => panic!("unexpected status {other}"),
    }
});
