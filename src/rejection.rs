//! Rejections: what a client sees when a request is refused, and how to change it.
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no `Authorization`, or a scheme other than Bearer | 401 | `Bearer realm="…"` |
//! | Bearer present but malformed, or several `Authorization` fields | 400 | `Bearer realm="…", error="invalid_request"` |
//! | wrong format, wrong environment, unknown, revoked or expired key | 401 | `Bearer realm="…", error="invalid_token"` (identical bytes for every cause) |
//! | authenticated, scopes missing | 403 | `Bearer realm="…", error="insufficient_scope", scope="…"` |
//! | resolver failed or timed out | 503 | none; `Retry-After` set |
//!
//! Bodies are RFC 9457 `application/problem+json` from [`ProblemJson`]. Nothing from the request
//! is echoed. Every rejection response carries its [`Rejection`] in its extensions, so a logging
//! or metrics layer further out can see the cause (a revoked key, a database error) that the
//! client is not told.
//!
//! # Custom responses
//!
//! Give the layer any [`Responder`]; a closure works. The layer adds the `WWW-Authenticate`
//! challenge to `400`, `401` and `403` answers and `Retry-After` to `503` answers that do not set
//! their own.
//!
//! Build the body from the status and the RFC 6750 error code, never from the rejection's
//! `Display` text: that says *why* a key was refused (revoked, expired, unknown, which check of
//! the format failed), which a client must not learn. Log it instead; it is in the response's
//! extensions for a logging layer further out.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use bytes::Bytes;
//! use http::{header, Request, Response, StatusCode};
//! use tower::ServiceExt;
//! use tower_api_key::{ApiKeyLayer, KeyFormat, MemoryStore, Rejection};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! let layer = ApiKeyLayer::builder(store)
//!     .realm("OrderMonk API")
//!     .responder(|rejection: &Rejection| {
//!         // Only what the client may know: the status and the RFC 6750 code.
//!         let body = format!(
//!             r#"{{"error":"{}"}}"#,
//!             rejection.error_code().unwrap_or("unavailable")
//!         );
//!         let mut response = Response::new(Bytes::from(body));
//!         *response.status_mut() = rejection.status();
//!         response
//!             .headers_mut()
//!             .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
//!         response
//!     })
//!     .build();
//! let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
//!
//! let response = app
//!     .oneshot(Request::get("/").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="OrderMonk API""#);
//! // The cause, for the server's logs only.
//! assert!(matches!(
//!     response.extensions().get::<Rejection>(),
//!     Some(Rejection::MissingCredentials)
//! ));
//! # });
//! ```
//!
//! # Testing a responder
//!
//! Every [`Rejection`] can be built in a test, so a custom responder can be checked for each
//! case, the `403` included:
//!
//! ```
//! use tower_api_key::{
//!     InsufficientScope, InvalidKey, InvalidRequest, KeyId, MalformedKey, ProblemJson,
//!     Rejection, ResolveError, Responder, Scope, ScopeRequirement, ScopeSet,
//! };
//!
//! let granted: ScopeSet = [Scope::from_static("products:read")].into_iter().collect();
//! let required = ScopeRequirement::all([Scope::from_static("products:write")]).unwrap();
//! let cases = [
//!     Rejection::MissingCredentials,
//!     Rejection::InvalidRequest(InvalidRequest::MultipleAuthorizationFields),
//!     Rejection::InvalidKey(InvalidKey::Malformed(MalformedKey::Checksum)),
//!     Rejection::InvalidKey(InvalidKey::Revoked { key_id: KeyId::from("key_1") }),
//!     Rejection::InsufficientScope(InsufficientScope::new("key_1", required, &granted)),
//!     Rejection::Unavailable(ResolveError::new("database down")),
//! ];
//! for rejection in cases {
//!     let response = ProblemJson.respond(&rejection);
//!     assert_eq!(response.status(), rejection.status());
//!     let body = std::str::from_utf8(response.body()).unwrap();
//!     // Nothing the client must not learn: no key id, no database error.
//!     assert!(!body.contains("key_1") && !body.contains("database down"));
//! }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Extensions, HeaderName, HeaderValue, Response, StatusCode};

use crate::key::{Environment, MalformedKey};
use crate::limit::rules::{ceil_seconds, policy_header, rate_limit_header};
use crate::limit::RateDecision;
use crate::resolver::{KeyId, ResolveError};
use crate::scope::{Scope, ScopeRequirement, ScopeSet};

/// Why a request was refused. Attached to every rejection response's extensions.
///
/// The variants follow the response contract in the [module docs](crate::rejection).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization` header, or a scheme other than Bearer: `401` with a bare challenge.
    MissingCredentials,
    /// Bearer credentials that are not syntactically valid, or several `Authorization` fields:
    /// `400 invalid_request`.
    InvalidRequest(InvalidRequest),
    /// A key that does not authenticate: `401 invalid_token`, with the same bytes whatever the
    /// cause.
    InvalidKey(InvalidKey),
    /// A valid key without the scopes the route requires: `403 insufficient_scope`.
    InsufficientScope(InsufficientScope),
    /// The resolver failed or timed out: `503` with `Retry-After`. Never cached.
    Unavailable(ResolveError),
    /// A valid key over its rate (or its owner's): `429 Too Many Requests`, with `Retry-After`
    /// and the `RateLimit-Policy` and `RateLimit` fields.
    RateLimited(Box<RateLimited>),
    /// A valid key used from a network its allowlist does not name (or from an address that
    /// cannot be told): `403`, with a body that does not reveal the list.
    NetworkNotAllowed {
        /// The key that was refused.
        key_id: KeyId,
    },
}

impl Rejection {
    /// The status the default responses use.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingCredentials | Rejection::InvalidKey(_) => StatusCode::UNAUTHORIZED,
            Rejection::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::InsufficientScope(_) | Rejection::NetworkNotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The RFC 6750 error code, if the challenge carries one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Rejection::MissingCredentials
            | Rejection::Unavailable(_)
            | Rejection::RateLimited(_)
            | Rejection::NetworkNotAllowed { .. } => None,
            Rejection::InvalidRequest(_) => Some("invalid_request"),
            Rejection::InvalidKey(_) => Some("invalid_token"),
            Rejection::InsufficientScope(_) => Some("insufficient_scope"),
        }
    }

    /// The identifier of the key involved, when the key was found.
    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            Rejection::InvalidKey(InvalidKey::Revoked { key_id })
            | Rejection::InvalidKey(InvalidKey::Expired { key_id }) => Some(key_id),
            Rejection::InsufficientScope(insufficient) => Some(&insufficient.key_id),
            Rejection::NetworkNotAllowed { key_id } => Some(key_id),
            Rejection::RateLimited(limited) => Some(&limited.key_id),
            _ => None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::MissingCredentials => f.write_str("no API key was presented"),
            Rejection::InvalidRequest(reason) => write!(f, "malformed credentials: {reason}"),
            Rejection::InvalidKey(reason) => write!(f, "invalid API key: {reason}"),
            Rejection::InsufficientScope(insufficient) => write!(
                f,
                "API key {} lacks the required scopes: {}",
                insufficient.key_id, insufficient.requirement
            ),
            Rejection::Unavailable(err) => write!(f, "API keys cannot be checked: {err}"),
            Rejection::NetworkNotAllowed { key_id } => {
                write!(f, "API key {key_id} may not be used from this network")
            }
            Rejection::RateLimited(limited) => write!(
                f,
                "API key {} is over the {} rate {}",
                limited.key_id, limited.policy_name, limited.decision.limit
            ),
        }
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Rejection::Unavailable(err) => Some(err),
            _ => None,
        }
    }
}

/// How the `Authorization` header was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidRequest {
    /// More than one `Authorization` field.
    MultipleAuthorizationFields,
    /// An `Authorization` field with nothing in it.
    EmptyAuthorization,
    /// `Bearer` with no token after it.
    MissingToken,
    /// A token with characters that RFC 6750 does not allow, such as non-ASCII bytes.
    MalformedToken,
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidRequest::MultipleAuthorizationFields => "several Authorization fields",
            InvalidRequest::EmptyAuthorization => "empty Authorization field",
            InvalidRequest::MissingToken => "Bearer scheme without a token",
            InvalidRequest::MalformedToken => "token is not RFC 6750 token syntax",
        })
    }
}

/// Why a key did not authenticate. The client sees the same response for all of these.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidKey {
    /// Not a well-formed key of the layer's format; no lookup was made.
    Malformed(MalformedKey),
    /// A well-formed key for an environment this layer does not accept; no lookup was made.
    WrongEnvironment(Environment),
    /// No key has this digest.
    Unknown,
    /// The key was revoked.
    Revoked {
        /// The revoked key.
        key_id: KeyId,
    },
    /// The key expired.
    Expired {
        /// The expired key.
        key_id: KeyId,
    },
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidKey::Malformed(reason) => write!(f, "malformed: {reason}"),
            InvalidKey::WrongEnvironment(environment) => {
                write!(f, "{environment} keys are not accepted here")
            }
            InvalidKey::Unknown => f.write_str("unknown key"),
            InvalidKey::Revoked { key_id } => write!(f, "key {key_id} is revoked"),
            InvalidKey::Expired { key_id } => write!(f, "key {key_id} is expired"),
        }
    }
}

/// A key lacked the scopes a route requires.
#[derive(Clone, Debug)]
pub struct InsufficientScope {
    pub(crate) key_id: KeyId,
    pub(crate) requirement: ScopeRequirement,
    pub(crate) missing: Vec<Scope>,
}

impl InsufficientScope {
    /// The refusal of key `key_id`, which grants `granted`, on a route that requires
    /// `requirement`. The layer builds these itself; this is for testing a [`Responder`].
    pub fn new(
        key_id: impl Into<KeyId>,
        requirement: ScopeRequirement,
        granted: &ScopeSet,
    ) -> Self {
        InsufficientScope {
            key_id: key_id.into(),
            missing: requirement.missing_from(granted),
            requirement,
        }
    }

    /// The key that was refused.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// What the route requires.
    pub fn requirement(&self) -> &ScopeRequirement {
        &self.requirement
    }

    /// The required scopes the key lacks (for an any-of requirement, all of them).
    pub fn missing(&self) -> &[Scope] {
        &self.missing
    }
}

/// A key went over a rate: its own, or its owner's.
#[derive(Clone, Debug)]
pub struct RateLimited {
    pub(crate) key_id: KeyId,
    pub(crate) decision: RateDecision,
    pub(crate) policy_name: &'static str,
    pub(crate) policy: HeaderValue,
}

impl RateLimited {
    /// The refusal of key `key_id` by `decision` under the policy named `policy_name` (`key` or
    /// `owner`). The layer builds these itself; this is for testing a [`Responder`].
    pub fn new(
        key_id: impl Into<KeyId>,
        decision: RateDecision,
        policy_name: &'static str,
    ) -> Self {
        let policy = policy_header([(policy_name, Some(decision.limit))]);
        RateLimited {
            key_id: key_id.into(),
            decision,
            policy_name,
            policy,
        }
    }

    /// The key that was refused.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// What the limiter decided: the rate, and when to retry.
    pub fn decision(&self) -> &RateDecision {
        &self.decision
    }

    /// `key` for the key's own rate, `owner` for the rate its owner's keys share.
    pub fn policy_name(&self) -> &'static str {
        self.policy_name
    }
}

/// Turns a [`Rejection`] into the response the client gets.
///
/// Implemented by [`ProblemJson`] (the default) and by any
/// `Fn(&Rejection) -> http::Response<Bytes>`. See the [module docs](crate::rejection).
pub trait Responder: Send + Sync + 'static {
    /// The response for `rejection`. It must not contain anything taken from the request.
    fn respond(&self, rejection: &Rejection) -> Response<Bytes>;
}

impl<F> Responder for F
where
    F: Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
{
    fn respond(&self, rejection: &Rejection) -> Response<Bytes> {
        (self)(rejection)
    }
}

/// The default responses: RFC 9457 `application/problem+json` bodies.
///
/// ```text
/// {"type":"about:blank","title":"Unauthorized","status":401,
///  "detail":"The API key is not valid: it may be mistyped, revoked or expired."}
/// ```
///
/// A `403` body also lists `required_scopes` and `missing_scopes`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProblemJson;

const BODY_MISSING: &str = r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"An API key is required: send it as `Authorization: Bearer <key>`."}"#;
const BODY_INVALID_REQUEST: &str = r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"The Authorization header is malformed: send exactly one `Authorization: Bearer <key>`."}"#;
const BODY_INVALID_KEY: &str = r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"The API key is not valid: it may be mistyped, revoked or expired."}"#;
const BODY_NETWORK: &str = r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"This API key may not be used from this network."}"#;
const BODY_RATE_LIMITED: &str = r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"This API key is over its rate limit: retry after the number of seconds in Retry-After."}"#;
const BODY_UNAVAILABLE: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"API keys cannot be checked right now. Retry later."}"#;

/// The IETF `RateLimit-Policy` field: each policy's quota and window.
pub(crate) const RATE_LIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The IETF `RateLimit` field: what remains of the policy that decided, and when it resets.
pub(crate) const RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");

const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

impl Responder for ProblemJson {
    fn respond(&self, rejection: &Rejection) -> Response<Bytes> {
        let body = match rejection {
            Rejection::MissingCredentials => Bytes::from_static(BODY_MISSING.as_bytes()),
            Rejection::InvalidRequest(_) => Bytes::from_static(BODY_INVALID_REQUEST.as_bytes()),
            Rejection::InvalidKey(_) => Bytes::from_static(BODY_INVALID_KEY.as_bytes()),
            Rejection::Unavailable(_) => Bytes::from_static(BODY_UNAVAILABLE.as_bytes()),
            Rejection::NetworkNotAllowed { .. } => Bytes::from_static(BODY_NETWORK.as_bytes()),
            Rejection::RateLimited(_) => Bytes::from_static(BODY_RATE_LIMITED.as_bytes()),
            Rejection::InsufficientScope(insufficient) => Bytes::from(forbidden_body(insufficient)),
        };
        let mut response = Response::new(body);
        *response.status_mut() = rejection.status();
        response.headers_mut().insert(CONTENT_TYPE, PROBLEM_JSON);
        response
    }
}

fn forbidden_body(insufficient: &InsufficientScope) -> String {
    // Scope names are letters, digits, `_`, `-`, `.` and `:` (see `Scope`), so they need no JSON
    // escaping.
    fn list<'a>(scopes: impl Iterator<Item = &'a Scope>) -> String {
        let quoted: Vec<String> = scopes.map(|s| format!("\"{s}\"")).collect();
        format!("[{}]", quoted.join(","))
    }
    format!(
        r#"{{"type":"about:blank","title":"Forbidden","status":403,"detail":"This API key lacks the scopes this operation requires.","required_scopes":{},"missing_scopes":{}}}"#,
        list(insufficient.requirement.scopes().iter()),
        list(insufficient.missing.iter()),
    )
}

/// No [`ApiKeyLayer`](crate::ApiKeyLayer) ran for a request that needs one: a
/// [`Principal`](crate::Principal) extractor, a [`Scoped`](crate::Scoped) extractor or a
/// [`RequireScopes`](crate::RequireScopes) layer found no principal and no sign of the layer.
///
/// That is a mistake in the program, not the client's: the response is `500` with a plain-text
/// body naming the missing layer, and an `ERROR` event is logged. Nothing gets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingLayer;

const MISSING_LAYER: &str = "Missing request extension: `Principal` was not found. \
    Is `tower_api_key::ApiKeyLayer` applied outside this route (for example with `Router::layer`)?";

impl MissingLayer {
    /// `500 Internal Server Error`.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The plain-text body of the response.
    pub fn body_text(&self) -> &'static str {
        MISSING_LAYER
    }

    /// The response, with any body type a tower service answers with; logs the mistake.
    pub(crate) fn into_http_response<B: From<Bytes>>(self) -> Response<B> {
        tracing::error!(target: "tower_api_key", "{MISSING_LAYER}");
        let mut response = Response::new(B::from(Bytes::from_static(MISSING_LAYER.as_bytes())));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl fmt::Display for MissingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MISSING_LAYER)
    }
}

impl std::error::Error for MissingLayer {}

/// A [`Rejection`] decided after the layer, by a scope check or an extractor, answered the way
/// the layer that saw the request answers: through its [`Responder`], with its challenge.
pub struct Refused {
    rejection: Rejection,
    responses: Arc<Responses>,
}

impl Refused {
    pub(crate) fn new(rejection: Rejection, responses: Arc<Responses>) -> Self {
        Refused {
            rejection,
            responses,
        }
    }

    /// Why the request was refused.
    pub fn rejection(&self) -> &Rejection {
        &self.rejection
    }

    /// The status the default responses use for it ([`Rejection::status`]).
    pub fn status(&self) -> StatusCode {
        self.rejection.status()
    }

    /// The layer's response, with the [`Rejection`] in its extensions.
    pub(crate) fn into_http_response<B: From<Bytes>>(self) -> Response<B> {
        self.responses.respond(self.rejection)
    }
}

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Refused").field(&self.rejection).finish()
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rejection.fmt(f)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.rejection)
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for MissingLayer {
    fn into_response(self) -> axum_core::response::Response {
        self.into_http_response()
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Refused {
    fn into_response(self) -> axum_core::response::Response {
        self.into_http_response()
    }
}

/// A layer's way of answering: its responder, realm, and the challenges it precomputed.
pub(crate) struct Responses {
    responder: Arc<dyn Responder>,
    /// `realm="…"`, quoted and escaped once.
    realm_param: String,
    missing: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
    retry_after: HeaderValue,
}

impl Responses {
    /// # Panics
    ///
    /// If `realm` has characters other than printable ASCII.
    pub(crate) fn new(responder: Arc<dyn Responder>, realm: &str, retry_after: Duration) -> Self {
        assert!(
            realm.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "the realm of an ApiKeyLayer must be printable ASCII"
        );
        let mut realm_param = String::with_capacity(realm.len() + 8);
        realm_param.push_str("realm=\"");
        for c in realm.chars() {
            if c == '"' || c == '\\' {
                realm_param.push('\\');
            }
            realm_param.push(c);
        }
        realm_param.push('"');
        let challenge = |error: Option<&str>| {
            let text = match error {
                None => format!("Bearer {realm_param}"),
                Some(code) => format!("Bearer {realm_param}, error=\"{code}\""),
            };
            header_value(text)
        };
        Responses {
            missing: challenge(None),
            invalid_request: challenge(Some("invalid_request")),
            invalid_token: challenge(Some("invalid_token")),
            retry_after: HeaderValue::from(retry_after.as_secs().max(1)),
            realm_param,
            responder,
        }
    }

    fn challenge(&self, rejection: &Rejection) -> Option<HeaderValue> {
        match rejection {
            Rejection::MissingCredentials => Some(self.missing.clone()),
            Rejection::InvalidRequest(_) => Some(self.invalid_request.clone()),
            Rejection::InvalidKey(_) => Some(self.invalid_token.clone()),
            Rejection::InsufficientScope(insufficient) => Some(header_value(format!(
                "Bearer {}, error=\"insufficient_scope\", scope=\"{}\"",
                self.realm_param,
                insufficient.requirement.scopes()
            ))),
            Rejection::Unavailable(_)
            | Rejection::NetworkNotAllowed { .. }
            | Rejection::RateLimited(_) => None,
        }
    }

    /// The response for `rejection`, with the challenge or `Retry-After` added where the
    /// responder left them out, and the rejection attached to the extensions.
    pub(crate) fn respond<B: From<Bytes>>(&self, rejection: Rejection) -> Response<B> {
        self.respond_reusing(rejection, Extensions::new())
    }

    /// [`respond`](Self::respond) for a request the caller owns and drops: `spare` are its
    /// extensions, which are emptied and become the response's. Attaching the rejection then
    /// reuses the map that the router allocated for the request (axum puts its own extensions in
    /// every request) rather than allocating one for the response.
    pub(crate) fn respond_reusing<B: From<Bytes>>(
        &self,
        rejection: Rejection,
        mut spare: Extensions,
    ) -> Response<B> {
        let mut response = self.responder.respond(&rejection);
        let status = response.status();
        let headers = response.headers_mut();
        if matches!(status.as_u16(), 400 | 401 | 403) && !headers.contains_key(WWW_AUTHENTICATE) {
            if let Some(challenge) = self.challenge(&rejection) {
                headers.insert(WWW_AUTHENTICATE, challenge);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(RETRY_AFTER) {
            headers.insert(RETRY_AFTER, self.retry_after.clone());
        }
        if let Rejection::RateLimited(limited) = &rejection {
            if !headers.contains_key(RETRY_AFTER) {
                let seconds = ceil_seconds(limited.decision.retry_after).max(1);
                headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            if !headers.contains_key(&RATE_LIMIT_POLICY) {
                headers.insert(RATE_LIMIT_POLICY, limited.policy.clone());
            }
            if !headers.contains_key(&RATE_LIMIT) {
                headers.insert(
                    RATE_LIMIT,
                    rate_limit_header(limited.policy_name, &limited.decision),
                );
            }
        }
        // Nothing of the request's goes out with the response; what the responder attached does.
        spare.clear();
        spare.extend(std::mem::take(response.extensions_mut()));
        spare.insert(rejection);
        *response.extensions_mut() = spare;
        response.map(B::from)
    }
}

impl fmt::Debug for Responses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responses")
            .field("realm", &self.realm_param)
            .finish_non_exhaustive()
    }
}

/// A header value from text that is printable ASCII by construction (an escaped realm, error
/// codes, scope names).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| {
        // Unreachable: every part was checked to be printable ASCII.
        HeaderValue::from_static("Bearer")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(realm: &str) -> Responses {
        Responses::new(Arc::new(ProblemJson), realm, Duration::from_secs(5))
    }

    #[test]
    fn realm_is_quoted_and_escaped() {
        let r = responses(r#"Order "Monk" \ API"#);
        assert_eq!(
            r.missing.to_str().unwrap(),
            r#"Bearer realm="Order \"Monk\" \\ API""#
        );
        assert_eq!(
            r.invalid_token.to_str().unwrap(),
            r#"Bearer realm="Order \"Monk\" \\ API", error="invalid_token""#
        );
    }

    #[test]
    #[should_panic(expected = "printable ASCII")]
    fn realm_with_control_characters_is_refused() {
        responses("bad\r\nrealm");
    }

    #[test]
    fn forbidden_lists_required_and_missing_scopes() {
        let requirement =
            ScopeRequirement::all([Scope::from_static("a:read"), Scope::from_static("b:write")])
                .unwrap();
        let rejection = Rejection::InsufficientScope(InsufficientScope {
            key_id: "key_1".into(),
            missing: vec![Scope::from_static("b:write")],
            requirement,
        });
        let response: Response<Bytes> = responses("api").respond(rejection);
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="api", error="insufficient_scope", scope="a:read b:write""#
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body["required_scopes"],
            serde_json::json!(["a:read", "b:write"])
        );
        assert_eq!(body["missing_scopes"], serde_json::json!(["b:write"]));
    }

    #[test]
    fn a_rate_limited_refusal_built_for_a_responder_test_carries_the_layers_fields() {
        let limit: crate::RateLimit = "100/m burst 5".parse().unwrap();
        let decision = RateDecision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::from_millis(2_400),
            retry_after: Duration::from_millis(600),
        };
        let rejection =
            Rejection::RateLimited(Box::new(RateLimited::new("key_1", decision, "owner")));
        let response: Response<Bytes> = responses("api").respond(rejection);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[RATE_LIMIT_POLICY],
            r#""owner";q=100;w=60"#
        );
        assert_eq!(response.headers()[RATE_LIMIT], r#""owner";r=0;t=3"#);
        assert!(!response.headers().contains_key(WWW_AUTHENTICATE));
        assert_eq!(response.body(), BODY_RATE_LIMITED.as_bytes());
    }

    #[test]
    fn default_bodies_are_valid_problem_json() {
        for (body, status) in [
            (BODY_MISSING, 401),
            (BODY_INVALID_REQUEST, 400),
            (BODY_INVALID_KEY, 401),
            (BODY_UNAVAILABLE, 503),
            (BODY_NETWORK, 403),
            (BODY_RATE_LIMITED, 429),
        ] {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(value["status"], status);
            assert_eq!(value["type"], "about:blank");
        }
    }
}
