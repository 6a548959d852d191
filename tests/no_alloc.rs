//! Reading the `Authorization` header, parsing a presented key and hashing it allocate nothing.

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
