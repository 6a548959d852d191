//! Reading Bearer credentials from the `Authorization` header: no allocation, no panic.
//!
//! [`bearer_token`] is the parser [`ApiKeyLayer`](crate::ApiKeyLayer) runs on every request. It is
//! public so that code that cannot sit behind the layer (a WebSocket upgrade, a tonic interceptor,
//! a custom extractor) reads credentials by exactly the same rules, and so that it can be fuzzed
//! on its own. A token it returns is only syntactically valid; check it with
//! [`KeyFormat::parse_bytes`](crate::KeyFormat::parse_bytes) and look up its digest before
//! trusting it.
//!
//! ```
//! use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
//! use tower_api_key::credentials::{bearer_token, Credentials};
//! use tower_api_key::rejection::InvalidRequest;
//!
//! let mut headers = HeaderMap::new();
//! assert_eq!(bearer_token(&headers), Credentials::Missing);
//!
//! headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer   om_live_abc"));
//! assert_eq!(bearer_token(&headers), Credentials::Bearer(b"om_live_abc"));
//!
//! headers.append(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcg=="));
//! assert_eq!(
//!     bearer_token(&headers),
//!     Credentials::Malformed(InvalidRequest::MultipleAuthorizationFields)
//! );
//! ```

use std::fmt;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::rejection::InvalidRequest;

/// What a request's `Authorization` header holds. See [`bearer_token`].
///
/// `Debug` never shows the token, only its length.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials<'a> {
    /// No `Authorization` field: the layer answers `401` with a bare challenge.
    Missing,
    /// A scheme other than Bearer (`Basic`, `Digest`, ...): treated like [`Missing`](Self::Missing).
    OtherScheme,
    /// Bearer credentials that break RFC 6750, or several fields: `400 invalid_request`.
    Malformed(InvalidRequest),
    /// A syntactically valid Bearer token (RFC 6750 `b64token`), borrowed from the header.
    Bearer(&'a [u8]),
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Missing => f.write_str("Missing"),
            Credentials::OtherScheme => f.write_str("OtherScheme"),
            Credentials::Malformed(reason) => f.debug_tuple("Malformed").field(reason).finish(),
            Credentials::Bearer(token) => f
                .debug_tuple("Bearer")
                .field(&format_args!("<{} bytes redacted>", token.len()))
                .finish(),
        }
    }
}

/// Reads the single `Authorization` field of `headers`, as the layer does.
///
/// The scheme is matched case-insensitively and may be followed by any number of spaces
/// (RFC 9110 §11.4: `auth-scheme 1*SP token68`); optional whitespace (spaces and tabs) around the
/// value is ignored. Several `Authorization` fields are malformed, whatever they hold. Never
/// allocates and never panics. See the [module docs](crate::credentials).
pub fn bearer_token(headers: &HeaderMap) -> Credentials<'_> {
    let mut fields = headers.get_all(AUTHORIZATION).iter();
    let Some(field) = fields.next() else {
        return Credentials::Missing;
    };
    if fields.next().is_some() {
        return Credentials::Malformed(InvalidRequest::MultipleAuthorizationFields);
    }
    let value = trim_ows(field.as_bytes());
    if value.is_empty() {
        return Credentials::Malformed(InvalidRequest::EmptyAuthorization);
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => value.split_at(space),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Credentials::OtherScheme;
    }
    let token = trim_leading_spaces(rest);
    if token.is_empty() {
        return Credentials::Malformed(InvalidRequest::MissingToken);
    }
    if !is_b64token(token) {
        return Credentials::Malformed(InvalidRequest::MalformedToken);
    }
    Credentials::Bearer(token)
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

fn trim_leading_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0
        && token[..body_len].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Credentials<'static> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        // Leak for the test's convenience: the result borrows from the map.
        let headers: &'static HeaderMap = Box::leak(Box::new(headers));
        bearer_token(headers)
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(parse(&[b"Bearer abc"]), Credentials::Bearer(b"abc"));
        assert_eq!(parse(&[b"bearer abc"]), Credentials::Bearer(b"abc"));
        assert_eq!(parse(&[b"BEARER abc"]), Credentials::Bearer(b"abc"));
        assert_eq!(parse(&[b"Bearer     abc"]), Credentials::Bearer(b"abc"));
        assert_eq!(parse(&[b"  Bearer abc \t"]), Credentials::Bearer(b"abc"));
        assert_eq!(
            parse(&[b"Bearer a-b.c_d~e+f/g=="]),
            Credentials::Bearer(b"a-b.c_d~e+f/g==")
        );
    }

    #[test]
    fn missing_and_other_schemes() {
        assert_eq!(parse(&[]), Credentials::Missing);
        assert_eq!(parse(&[b"Basic dXNlcjpwYXNz"]), Credentials::OtherScheme);
        assert_eq!(parse(&[b"Bearerabc"]), Credentials::OtherScheme);
        assert_eq!(parse(&[b"Token abc"]), Credentials::OtherScheme);
    }

    #[test]
    fn malformed_bearer_credentials() {
        use InvalidRequest::*;
        assert_eq!(
            parse(&[b"Bearer a", b"Bearer b"]),
            Credentials::Malformed(MultipleAuthorizationFields)
        );
        assert_eq!(parse(&[b""]), Credentials::Malformed(EmptyAuthorization));
        assert_eq!(parse(&[b"   "]), Credentials::Malformed(EmptyAuthorization));
        assert_eq!(parse(&[b"Bearer"]), Credentials::Malformed(MissingToken));
        assert_eq!(parse(&[b"Bearer   "]), Credentials::Malformed(MissingToken));
        for token in [
            &b"Bearer a b"[..],
            b"Bearer a\tb",
            b"Bearer \xff\xfe",
            b"Bearer caf\xc3\xa9",
            b"Bearer a=b",
            b"Bearer ==",
            b"Bearer \"abc\"",
            b"Bearer a,b",
        ] {
            assert_eq!(
                parse(&[token]),
                Credentials::Malformed(MalformedToken),
                "{token:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = b"om_live_secretsecretsecret";
        let shown = format!("{:?}", Credentials::Bearer(token));
        assert_eq!(shown, "Bearer(<26 bytes redacted>)");
        assert!(!shown.contains("secret"));
        assert_eq!(
            format!("{:?}", Credentials::Malformed(InvalidRequest::MissingToken)),
            "Malformed(MissingToken)"
        );
    }
}
