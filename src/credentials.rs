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
//! use tower_api_key::credentials::bearer_token;
//! use tower_api_key::{Credentials, InvalidRequest};
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

use http::header::{Entry, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

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
    match read(field) {
        Credentials::Bearer(token) if !is_b64token(token) => {
            Credentials::Malformed(InvalidRequest::MalformedToken)
        }
        credentials => credentials,
    }
}

/// [`bearer_token`] as the layer runs it on every request: it also marks every `Authorization`
/// field sensitive, so that layers further in never print it (`HeaderMap`'s `Debug` shows
/// `Sensitive`), in the same look-up; and it leaves the `b64token` check of the token to the
/// caller, because a well-formed key always passes it: [`is_b64token`] only needs to run for a
/// token that is not a key.
pub(crate) fn bearer_for_layer(headers: &mut HeaderMap) -> Credentials<'_> {
    let mut fields = match headers.entry(AUTHORIZATION) {
        Entry::Occupied(fields) => fields,
        Entry::Vacant(_) => return Credentials::Missing,
    };
    let mut count = 0;
    for field in fields.iter_mut() {
        field.set_sensitive(true);
        count += 1;
    }
    if count > 1 {
        return Credentials::Malformed(InvalidRequest::MultipleAuthorizationFields);
    }
    read(fields.into_mut())
}

/// The credentials in one field, with the token not yet checked against `b64token`.
fn read(field: &HeaderValue) -> Credentials<'_> {
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
pub(crate) fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    // One table look-up per byte, and no early exit: no branch to mispredict.
    body_len > 0
        && token[..body_len]
            .iter()
            .fold(true, |ok, &b| ok & B64TOKEN[usize::from(b)])
}

/// Which bytes may appear in a `b64token` before its `=` padding.
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

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

    #[test]
    fn the_layer_reads_alike_and_marks_every_field_sensitive() {
        let cases: &[&[&[u8]]] = &[
            &[],
            &[b"Bearer abc"],
            &[b"  bearer   a-b.c_d~e+f/g== "],
            &[b"Basic dXNlcg=="],
            &[b""],
            &[b"Bearer"],
            &[b"Bearer a b"],
            &[b"Bearer caf\xc3\xa9"],
            &[b"Bearer a", b"Bearer b"],
        ];
        for &values in cases {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            }
            let expected = format!("{:?}", bearer_token(&headers));
            let mut marked = headers.clone();
            let read = match bearer_for_layer(&mut marked) {
                Credentials::Bearer(token) if !is_b64token(token) => {
                    Credentials::Malformed(InvalidRequest::MalformedToken)
                }
                credentials => credentials,
            };
            assert_eq!(format!("{read:?}"), expected, "{values:?}");
            assert!(marked
                .get_all(AUTHORIZATION)
                .iter()
                .all(HeaderValue::is_sensitive));
        }
    }
}
