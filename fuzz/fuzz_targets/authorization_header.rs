//! The `Authorization` header parser, `credentials::bearer_token`, on arbitrary header bytes.
//!
//! Input: the values of the `Authorization` fields, separated by `\n` (a byte no header value can
//! hold); pieces that are not valid header values are dropped, and an empty input sends no field.
//! Every answer must be exactly what the model of RFC 9110 and RFC 6750 in
//! `tower_api_key_fuzz::header` reads from the same fields (the same variant, the same reason,
//! the same token bytes), and `Debug` must never show the token.
#![no_main]

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use tower_api_key::credentials::bearer_token;
use tower_api_key::Credentials;
use tower_api_key_fuzz::header;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut fields = Vec::new();
    if !data.is_empty() {
        for piece in data.split(|&b| b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(piece) {
                headers.append(AUTHORIZATION, value);
                fields.push(piece);
            }
        }
    }
    let credentials = bearer_token(&headers);
    let expected = header::credentials(&fields);
    assert_eq!(
        credentials,
        expected,
        "for the fields {}",
        header::show(&fields)
    );
    if let Credentials::Bearer(token) = credentials {
        // No run of 9 token characters fits in `Bearer(<N bytes redacted>)`.
        let shown = format!("{credentials:?}");
        if token.len() >= 9 {
            assert!(!shown.as_bytes().windows(token.len()).any(|w| w == token));
        }
    }
});
