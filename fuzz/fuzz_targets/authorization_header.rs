//! The `Authorization` header parser, `credentials::bearer_token`, on arbitrary header bytes.
//!
//! Input: the values of the `Authorization` fields, separated by `\n` (a byte no header value can
//! hold); pieces that are not valid header values are dropped, and an empty input sends no field.
//! Besides "never panics", every answer is checked against what the header held.
#![no_main]

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use tower_api_key::credentials::{bearer_token, Credentials};
use tower_api_key::rejection::InvalidRequest;

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn is_b64token(token: &[u8]) -> bool {
    let body = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body > 0
        && token[..body]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut values = Vec::new();
    if !data.is_empty() {
        for piece in data.split(|&b| b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(piece) {
                headers.append(AUTHORIZATION, value.clone());
                values.push(value);
            }
        }
    }
    let credentials = bearer_token(&headers);
    let shown = format!("{credentials:?}");
    match credentials {
        Credentials::Missing => assert!(values.is_empty()),
        Credentials::Malformed(InvalidRequest::MultipleAuthorizationFields) => {
            assert!(values.len() > 1)
        }
        Credentials::Bearer(token) => {
            assert_eq!(values.len(), 1);
            assert!(is_b64token(token));
            // `OWS scheme 1*SP token OWS`, the scheme being "bearer" in any case.
            let value = trim_ows(values[0].as_bytes());
            assert!(value.ends_with(token));
            let head = &value[..value.len() - token.len()];
            assert!(head.len() > 6 && head[..6].eq_ignore_ascii_case(b"bearer"));
            assert!(head[6..].iter().all(|&b| b == b' '));
            // No run of 9 token characters fits in `Bearer(<N bytes redacted>)`.
            if token.len() >= 9 {
                assert!(!shown.as_bytes().windows(token.len()).any(|w| w == token));
            }
        }
        Credentials::OtherScheme => {
            assert_eq!(values.len(), 1);
            let value = trim_ows(values[0].as_bytes());
            let scheme = value.split(|&b| b == b' ').next().unwrap_or_default();
            assert!(!value.is_empty() && !scheme.eq_ignore_ascii_case(b"bearer"));
        }
        Credentials::Malformed(_) => assert_eq!(values.len(), 1),
        _ => {}
    }
});
