//! Reading Bearer credentials from the `Authorization` header: no allocation, no panic.

use http::header::{Entry, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

use crate::rejection::InvalidRequest;

/// What a request's `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials<'a> {
    /// No `Authorization` field.
    Missing,
    /// A scheme other than Bearer (`Basic`, `Digest`, ...).
    OtherScheme,
    /// Bearer credentials without a token, or several fields.
    Malformed(InvalidRequest),
    /// A Bearer token, not yet checked against RFC 6750's `b64token` syntax: a well-formed key
    /// always is one, so [`is_b64token`] only needs to run when the token is not a key.
    Bearer(&'a [u8]),
}

/// Reads the single `Authorization` field of `headers`, and marks every `Authorization` field
/// sensitive so that layers further in never print it (`HeaderMap`'s `Debug` shows `Sensitive`).
///
/// The scheme is matched case-insensitively and may be followed by any number of spaces
/// (RFC 9110 §11.4: `auth-scheme 1*SP token68`); optional whitespace around the value is ignored.
pub(crate) fn bearer(headers: &mut HeaderMap) -> Credentials<'_> {
    // One look-up for both jobs: marking and reading.
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
    let field: &HeaderValue = fields.into_mut();
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

    /// What the layer makes of the header: `bearer`, then `is_b64token` for the token.
    fn parse(values: &[&[u8]]) -> Credentials<'static> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        // Leak for the test's convenience: the result borrows from the map.
        let headers: &'static mut HeaderMap = Box::leak(Box::new(headers));
        match bearer(headers) {
            Credentials::Bearer(token) if !is_b64token(token) => {
                Credentials::Malformed(InvalidRequest::MalformedToken)
            }
            credentials => credentials,
        }
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
}
