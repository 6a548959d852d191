//! Heap bytes per cached key: fills a layer's cache with one million keys and counts the bytes
//! the process holds before and after, with a counting global allocator.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Each key goes through the layer once (a cache miss, then cached), from a resolver that builds a
//! fresh record per key the way a database-backed store does: its own id, name, owner and a set
//! of two scopes. The keys themselves are generated and dropped as the run goes, so they are not
//! counted; the figure is what the cache holds per key: moka's entry and bookkeeping plus the
//! principal.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_api_key::{
    ApiKeyLayer, Environment, KeyDigest, KeyFormat, KeyRecord, Principal, ResolveError, Scope,
    ScopeSet,
};

/// Live heap bytes of the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: usize = 1_000_000;

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes us means: do nothing.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with("--") && arg != "memory")
    {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let format = KeyFormat::new("om").expect("a valid prefix");
    let resolver = |digest: KeyDigest| async move {
        let scopes: ScopeSet = [
            Scope::from_static("products:read"),
            Scope::from_static("orders:read"),
        ]
        .into_iter()
        .collect();
        let record = KeyRecord::new(
            format!("key_{}", &digest.to_hex()[..16]),
            Environment::Live,
            scopes,
        )
        .with_name("Production")
        .with_owner("acct_0000000042");
        Ok::<_, ResolveError>(Some(record))
    };
    let layer = ApiKeyLayer::resolver_builder(format.clone(), resolver)
        .cache_capacity(KEYS as u64 + 1_000)
        .build();
    let mut service =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(|request: Request<()>| async move {
                let found = request.extensions().get::<Principal>().is_some();
                Ok::<_, Infallible>(Response::new(bytes::Bytes::from_static(if found {
                    b"ok"
                } else {
                    b""
                })))
            });

    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..KEYS {
        let key = format.generate(Environment::Live).expect("a key");
        let mut request = Request::new(());
        let value =
            HeaderValue::try_from(format!("Bearer {}", key.expose_secret())).expect("ASCII");
        request.headers_mut().insert(AUTHORIZATION, value);
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("infallible");
        assert_eq!(response.body().as_ref(), b"ok");
    }
    let stats = layer.cache_stats();
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(stats.entries, KEYS as u64, "every key is cached");
    let per_key = (after - before) as f64 / KEYS as f64;
    println!(
        "{KEYS} cached keys: {:.1} MiB, {per_key:.0} bytes per key (filled in {:.1?})",
        (after - before) as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
}
