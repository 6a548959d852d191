//! Reading the `Authorization` header, parsing a presented key and hashing it allocate nothing,
//! and counting a cache hit's usage adds no allocation to the layer's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use tower_api_key::credentials::bearer_token;
use tower_api_key::Credentials;
use tower_api_key::{Environment, KeyFormat};

/// Counts the allocations made on the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn parsing_and_hashing_a_key_do_not_allocate() {
    let format = KeyFormat::new("om").unwrap();
    let key = format.generate(Environment::Live).unwrap();
    let text = key.expose_secret().as_bytes().to_vec();
    let mut broken = text.clone();
    broken[12] ^= 1;
    let long = vec![b'a'; 10_000];

    let count = allocations_during(|| {
        let parsed = format.parse_bytes(&text).unwrap();
        assert_eq!(parsed.environment(), Environment::Live);
        std::hint::black_box(parsed.digest());
        assert!(format.parse_bytes(&broken).is_err());
        assert!(format.parse_bytes(&long).is_err());
        assert!(format.parse_bytes(&[0xff; 46]).is_err());
    });
    assert_eq!(count, 0);
    // The counter works: building a string allocates.
    assert!(allocations_during(|| drop(std::hint::black_box(String::from("x")))) > 0);
}

#[test]
fn reading_the_authorization_header_does_not_allocate() {
    let headers_with = |values: &[&[u8]]| {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    };
    let long = [&b"Bearer "[..], &[b'a'; 10_000]].concat();
    let cases = [
        headers_with(&[]),
        headers_with(&[b"  Bearer    om_live_abc\t"]),
        headers_with(&[b"Basic dXNlcg=="]),
        headers_with(&[b"Bearer \xff"]),
        headers_with(&[b"Bearer a", b"Bearer b"]),
        headers_with(&[&long]),
    ];
    let count = allocations_during(|| {
        for headers in &cases {
            std::hint::black_box(bearer_token(headers));
        }
        assert_eq!(bearer_token(&cases[1]), Credentials::Bearer(b"om_live_abc"));
    });
    assert_eq!(count, 0);
}

/// Allocations of `hits` cache hits through `layer`, after a miss and two usage flushes (so
/// that the recorder's lists have grown to what one key needs).
async fn allocations_per_hits(layer: tower_api_key::ApiKeyLayer, key: &str, hits: usize) -> usize {
    use tower::{Layer, Service, ServiceExt};

    let inner = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
    });
    let mut service = layer.layer(inner);
    let authorization = HeaderValue::try_from(format!("Bearer {key}")).unwrap();
    let request = || {
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert(AUTHORIZATION, authorization.clone());
        request
    };
    for _ in 0..3 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // The memory store keeps no usage counts; the per-key metrics keep the counting on.
        let _ = layer.flush_usage().await;
    }
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..hits {
        let request = request();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        std::hint::black_box(response);
    }
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn recording_usage_adds_no_allocation_to_a_cache_hit() {
    use tower_api_key::{ApiKeyLayer, KeyStore, MemoryStore, NewKey, UsageSettings};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = MemoryStore::new(KeyFormat::new("om").unwrap());
        let created = store
            .create(NewKey::new("Hot", Environment::Live))
            .await
            .unwrap();
        let key = created.key.expose_secret();
        let off = ApiKeyLayer::builder(store.clone())
            .usage(UsageSettings::off())
            .build();
        let on = ApiKeyLayer::builder(store.clone())
            .usage(UsageSettings::new().flush_interval(std::time::Duration::from_secs(3600)))
            .metrics_per_key()
            .build();
        let without = allocations_per_hits(off, key, 1_000).await;
        let with = allocations_per_hits(on, key, 1_000).await;
        assert_eq!(
            with,
            without,
            "counting usage allocated {} times in 1,000 hits",
            with.saturating_sub(without)
        );
    });
}
