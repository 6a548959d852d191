//! What every admin request passes: who it acts for (the host's [`AdminIdentity`]), whether a
//! write comes from the page's own origin, and JSON bodies read into typed requests with the
//! field at fault named.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::problem::{FieldError, Problem};
use super::AdminIdentity;
use crate::store::Actor;

/// The owner and actor of a request, from the [`AdminIdentity`] the host's login put on it, with
/// the peer's address when the host gave none.
pub(crate) struct Caller {
    pub(crate) owner: String,
    pub(crate) actor: Actor,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(identity) = parts.extensions.get::<AdminIdentity>() else {
            return Err(Problem::not_signed_in());
        };
        if identity.owner.trim().is_empty() {
            tracing::error!("admin API: the host's AdminIdentity has a blank owner; refused");
            return Err(Problem::not_signed_in());
        }
        let mut actor = identity.actor.clone();
        if actor.address().is_none() {
            if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
                actor = actor.from_address(peer.ip().to_canonical());
            }
        }
        Ok(Caller {
            owner: identity.owner.clone(),
            actor,
        })
    }
}

/// Refuses writes that a browser sent from another site, and writes whose body is not JSON.
///
/// A write (any method but `GET`, `HEAD` and `OPTIONS`) passes when its `Origin` is one the
/// application trusts, or else when the browser says it is same-origin (`Sec-Fetch-Site:
/// same-origin` or `none`), or else, without `Sec-Fetch-Site`, when its `Origin` names the
/// request's own host. A request without either header is not from a browser script and
/// cannot carry a victim's cookies by itself. Writes must also have `Content-Type:
/// application/json`, which an HTML form on another site cannot send.
pub(crate) async fn same_origin(
    State(trusted): State<std::sync::Arc<[String]>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    if let Err(problem) = check_origin(request.headers(), request.uri(), &trusted) {
        return problem.into_response();
    }
    if !is_json(request.headers()) {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the body as JSON, with `Content-Type: application/json`.",
        )
        .into_response();
    }
    next.run(request).await
}

fn check_origin(
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    trusted: &[String],
) -> Result<(), Problem> {
    let refused = || {
        Problem::new(
            StatusCode::FORBIDDEN,
            "Cross-site request refused: API keys are managed from this site's own pages.",
        )
    };
    let origin = match headers.get(header::ORIGIN) {
        Some(origin) => Some(origin.to_str().map_err(|_| refused())?),
        None => None,
    };
    if origin.is_some_and(|origin| trusted.iter().any(|t| t.eq_ignore_ascii_case(origin))) {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ => Err(refused()),
        };
    }
    let Some(origin) = origin else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(refused()),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// A JSON body read into `T`; a body that is not JSON is a 400, one with a field of the wrong
/// type, a missing or an unknown field a 422 naming it.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                Problem::new(rejection.status(), "The request body could not be read.")
            })?;
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut json).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if !inner.is_data() {
                return Problem::new(StatusCode::BAD_REQUEST, "The request body is not JSON.");
            }
            let message = without_position(&inner.to_string());
            let field = if path == "." {
                // A missing or unknown field is reported on the object: its name is in the
                // message, between backticks.
                between_backticks(&message).unwrap_or("body").to_owned()
            } else {
                path
            };
            Problem::invalid(vec![FieldError::new(field, message)])
        })?;
        json.end()
            .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "The request body is not JSON."))?;
        Ok(JsonBody(value))
    }
}

/// serde_json's message without its ` at line 1 column 9`.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn between_backticks(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn origins() {
        let uri = axum::http::Uri::from_static("/v1/keys");
        let trusted = [String::from("https://admin.example")];
        let ok = |pairs| check_origin(&headers(pairs), &uri, &trusted).is_ok();
        assert!(ok(&[]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(ok(&[("sec-fetch-site", "none")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(!ok(&[("sec-fetch-site", "same-site")]));
        assert!(ok(&[
            ("origin", "http://shop.test:8080"),
            ("host", "shop.test:8080")
        ]));
        assert!(!ok(&[
            ("origin", "http://evil.test"),
            ("host", "shop.test:8080")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "shop.test")]));
        assert!(ok(&[
            ("origin", "https://admin.example"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!ok(&[
            ("origin", "http://shop.test"),
            ("host", "shop.test"),
            ("sec-fetch-site", "cross-site")
        ]));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )])));
        assert!(!is_json(&headers(&[])));
    }

    #[test]
    fn messages() {
        assert_eq!(
            without_position("missing field `name` at line 1 column 2"),
            "missing field `name`"
        );
        assert_eq!(between_backticks("unknown field `x`, expected"), Some("x"));
        assert_eq!(between_backticks("no name"), None);
    }
}
