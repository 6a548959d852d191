//! The credentials in `Authorization` fields, from RFC 9110 and RFC 6750.
//!
//! - RFC 9110 §5.5: a field value does not include leading or trailing whitespace, and §5.6.3:
//!   `OWS = *( SP / HTAB )`.
//! - RFC 9110 §11.6.2 and §5.3: `Authorization = credentials` is a singleton field; several of
//!   them are a malformed request (RFC 6750 §3.1 `invalid_request`: "uses more than one method
//!   for including an access token, or is otherwise malformed").
//! - RFC 9110 §11.4: `credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`, the scheme
//!   compared case-insensitively (§11.1). Only SP may follow the scheme: a value that starts with
//!   `bearer` followed by anything else (a tab, a comma, more letters) does not name the Bearer
//!   scheme, so it carries no Bearer credentials.
//! - RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, with
//!   `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
//!   Bearer with nothing after it is a missing token; anything after it that is not exactly one
//!   `b64token` is a malformed one.
//! - RFC 6750 §3.1: a request with no credentials, or with another scheme, gets a challenge with
//!   no error code.

use tower_api_key::Credentials;
use tower_api_key::InvalidRequest;

/// The credentials that `fields`, the values of every `Authorization` field of a request, carry.
pub fn credentials<'a>(fields: &[&'a [u8]]) -> Credentials<'a> {
    match fields {
        [] => Credentials::Missing,
        [field] => one_field(field),
        [_, _, ..] => Credentials::Malformed(InvalidRequest::MultipleAuthorizationFields),
    }
}

fn one_field(field: &[u8]) -> Credentials<'_> {
    let value = field_value(field);
    if value.is_empty() {
        // `credentials` starts with a scheme of at least one character.
        return Credentials::Malformed(InvalidRequest::EmptyAuthorization);
    }
    let Some(after_scheme) = after_bearer_scheme(value) else {
        return Credentials::OtherScheme;
    };
    // `1*SP`: the field value ends with no whitespace, so spaces alone mean no token at all.
    let token = match after_scheme.iter().position(|&b| b != b' ') {
        Some(start) => &after_scheme[start..],
        None => return Credentials::Malformed(InvalidRequest::MissingToken),
    };
    if is_b64token(token) {
        Credentials::Bearer(token)
    } else {
        Credentials::Malformed(InvalidRequest::MalformedToken)
    }
}

/// `fields` in a readable form for assertion messages, such as `["Bearer a\tb", "Basic \xff"]`.
pub fn show(fields: &[&[u8]]) -> String {
    let shown: Vec<String> = fields
        .iter()
        .map(|field| format!("\"{}\"", field.escape_ascii()))
        .collect();
    format!("[{}]", shown.join(", "))
}

/// The field value without the leading and trailing `OWS`.
fn field_value(field: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    match field.iter().position(|b| !is_ows(b)) {
        Some(first) => {
            let last = field.iter().rposition(|b| !is_ows(b)).unwrap_or(first);
            &field[first..=last]
        }
        None => &[],
    }
}

/// What follows `Bearer` when `value` names the Bearer scheme: the end, or `SP` and the rest.
fn after_bearer_scheme(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"Bearer";
    if value.len() < SCHEME.len() {
        return None;
    }
    let (scheme, rest) = value.split_at(SCHEME.len());
    match rest.first() {
        None | Some(b' ') if scheme.eq_ignore_ascii_case(SCHEME) => Some(rest),
        _ => None,
    }
}

/// RFC 6750 §2.1 `b64token`, read left to right: one or more token characters, then only `=`.
pub fn is_b64token(token: &[u8]) -> bool {
    let mut characters = 0;
    let mut in_padding = false;
    for &b in token {
        let token_character = matches!(
            b,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' | b'/'
        );
        if token_character && !in_padding {
            characters += 1;
        } else if b == b'=' && characters > 0 {
            in_padding = true;
        } else {
            return false;
        }
    }
    characters > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &[u8]) -> Credentials<'_> {
        credentials(&[value])
    }

    #[test]
    fn examples_from_the_rfcs_and_around_them() {
        use InvalidRequest::*;
        // RFC 6750 §2.1's own example.
        assert_eq!(
            one(b"Bearer mF_9.B5f-4.1JqM"),
            Credentials::Bearer(b"mF_9.B5f-4.1JqM")
        );
        assert_eq!(
            one(b" \tbEaReR   a~b+c/d== \t"),
            Credentials::Bearer(b"a~b+c/d==")
        );
        assert_eq!(credentials(&[]), Credentials::Missing);
        assert_eq!(
            credentials(&[b"Bearer a", b"Bearer a"]),
            Credentials::Malformed(MultipleAuthorizationFields)
        );
        assert_eq!(one(b" \t "), Credentials::Malformed(EmptyAuthorization));
        assert_eq!(one(b"Bearer"), Credentials::Malformed(MissingToken));
        assert_eq!(one(b"bearer  \t"), Credentials::Malformed(MissingToken));
        for other in [
            &b"Basic dXNlcg=="[..],
            b"Bearer\tabc",
            b"Bearerabc",
            b"Bear",
            b"B",
        ] {
            assert_eq!(one(other), Credentials::OtherScheme, "{other:?}");
        }
        for malformed in [
            &b"Bearer a b"[..],
            b"Bearer \tabc",
            b"Bearer =",
            b"Bearer a=b",
            b"Bearer a,b",
            b"Bearer \"a\"",
            b"Bearer caf\xc3\xa9",
        ] {
            assert_eq!(
                one(malformed),
                Credentials::Malformed(MalformedToken),
                "{malformed:?}"
            );
        }
    }
}
