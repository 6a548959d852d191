//! The principal: who is calling, as the handler sees it.
//!
//! [`ApiKeyLayer`](crate::ApiKeyLayer) puts a [`Principal`] into the request extensions of
//! every request it lets through with a key. With the `axum` feature (on by default) handlers
//! take it as an extractor: `Principal` where a key is required, `Option<Principal>` behind a
//! layer in [optional mode](crate::ApiKeyLayerBuilder::optional).
//!
//! Only the layer creates principals. Nothing a client sends (no header, no query parameter)
//! can create or change one.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{header, Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_api_key::{ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Principal};
//!
//! async fn whoami(principal: Principal) -> String {
//!     format!("{} ({}) for {}", principal.name(), principal.environment(), principal.owner())
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let format = KeyFormat::new("om").unwrap();
//! let store = MemoryStore::new(format.clone());
//! let created = store
//!     .create(NewKey::new("Staging", Environment::Test).owner("acct_42"))
//!     .await
//!     .unwrap();
//! let app = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(ApiKeyLayer::new(format, store));
//!
//! let request = Request::get("/whoami")
//!     .header(header::AUTHORIZATION, format!("Bearer {}", created.key.expose_secret()))
//!     .body(Body::empty())
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
//! assert_eq!(&body[..], b"Staging (test) for acct_42");
//! # });
//! ```
//!
//! There is no way to make a `Principal` outside the layer: no public constructor, no
//! conversion from a [`KeyRecord`], no `Default`. Both of these fail to
//! compile:
//!
//! ```compile_fail
//! use tower_api_key::{Environment, KeyRecord, Principal, ScopeSet};
//! let record = KeyRecord::new("key_1", Environment::Live, ScopeSet::empty());
//! let forged = Principal::from(record);
//! ```
//!
//! ```compile_fail
//! let forged = tower_api_key::Principal::default();
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::key::Environment;
use crate::rejection::Responses;
use crate::resolver::{KeyId, KeyRecord};
use crate::scope::{Scope, ScopeRequirement, ScopeSet};

/// The authenticated caller: the key's id, name, owner, environment, scopes and expiry.
///
/// Cheap to clone. See the [module docs](crate::principal).
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

struct Inner {
    key_id: KeyId,
    name: Box<str>,
    owner: Box<str>,
    environment: Environment,
    scopes: ScopeSet,
    expires_at: Option<SystemTime>,
    /// Whether the key was revoked when the layer looked it up. A revoked key's principal is
    /// cached so the next request is refused at once, and never handed to a handler.
    revoked: bool,
    /// When the layer looked the key up, which bounds how long it may be cached.
    loaded_at: Instant,
    /// How the layer that made this principal answers rejections, so that scope checks further
    /// in answer the same way.
    responses: Arc<Responses>,
}

impl Principal {
    /// The principal of `record`, looked up at `loaded_at`, holding `scopes` (the record's, or an
    /// equal shared set).
    pub(crate) fn new(
        record: KeyRecord,
        scopes: ScopeSet,
        responses: Arc<Responses>,
        loaded_at: Instant,
    ) -> Self {
        Principal(Arc::new(Inner {
            revoked: record.revoked_at.is_some(),
            loaded_at,
            key_id: record.id,
            name: record.name.into_boxed_str(),
            owner: record.owner.into_boxed_str(),
            environment: record.environment,
            scopes,
            expires_at: record.expires_at,
            responses,
        }))
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.0.revoked
    }

    pub(crate) fn loaded_at(&self) -> Instant {
        self.0.loaded_at
    }

    /// The key's identifier.
    pub fn key_id(&self) -> &KeyId {
        &self.0.key_id
    }

    /// The key's descriptive name, such as `"Production"`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The account or user that owns the key.
    pub fn owner(&self) -> &str {
        &self.0.owner
    }

    /// `Live` for production keys, `Test` for sandbox keys: choose the data accordingly.
    pub fn environment(&self) -> Environment {
        self.0.environment
    }

    /// The scopes the key grants.
    pub fn scopes(&self) -> &ScopeSet {
        &self.0.scopes
    }

    /// When the key expires, if ever.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }

    /// Whether the key grants `scope`.
    pub fn has_scope(&self, scope: &Scope) -> bool {
        self.0.scopes.contains(scope)
    }

    /// Whether the key meets `requirement`.
    pub fn satisfies(&self, requirement: &ScopeRequirement) -> bool {
        requirement.is_satisfied_by(&self.0.scopes)
    }

    pub(crate) fn responses(&self) -> &Arc<Responses> {
        &self.0.responses
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("key_id", &self.0.key_id)
            .field("name", &self.0.name)
            .field("owner", &self.0.owner)
            .field("environment", &self.0.environment)
            .field("scopes", &self.0.scopes)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}

/// Marks a request that a layer in optional mode let through without credentials.
#[derive(Clone)]
pub(crate) struct Anonymous(pub(crate) Arc<Responses>);

#[cfg(feature = "axum")]
mod extract {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use bytes::Bytes;
    use http::request::Parts;
    use http::{header, HeaderValue, StatusCode};

    use super::{Anonymous, Principal};
    use crate::rejection::Rejection;

    /// Why the [`Principal`] extractor failed.
    #[non_exhaustive]
    pub enum PrincipalRejection {
        /// No [`ApiKeyLayer`](crate::ApiKeyLayer) ran for this request: a server
        /// misconfiguration, answered with `500`.
        MissingLayer,
        /// The layer is in optional mode and the request had no credentials: answered with the
        /// layer's `401`.
        Unauthenticated(Response),
    }

    impl std::fmt::Debug for PrincipalRejection {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                PrincipalRejection::MissingLayer => f.write_str("MissingLayer"),
                PrincipalRejection::Unauthenticated(_) => f.write_str("Unauthenticated"),
            }
        }
    }

    impl std::fmt::Display for PrincipalRejection {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                PrincipalRejection::MissingLayer => f.write_str(MISSING_LAYER),
                PrincipalRejection::Unauthenticated(_) => {
                    f.write_str("this route requires an API key and none was presented")
                }
            }
        }
    }

    impl std::error::Error for PrincipalRejection {}

    const MISSING_LAYER: &str = "Missing request extension: `Principal` was not found. \
        Is `tower_api_key::ApiKeyLayer` applied to this route (for example with `Router::layer`)?";

    impl IntoResponse for PrincipalRejection {
        fn into_response(self) -> Response {
            match self {
                PrincipalRejection::MissingLayer => {
                    tracing::error!(target: "tower_api_key", "{MISSING_LAYER}");
                    let mut response =
                        Response::new(Bytes::from_static(MISSING_LAYER.as_bytes()).into());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    response
                }
                PrincipalRejection::Unauthenticated(response) => response,
            }
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Principal {
        type Rejection = PrincipalRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            if let Some(principal) = parts.extensions.get::<Principal>() {
                return Ok(principal.clone());
            }
            match parts.extensions.get::<Anonymous>() {
                Some(Anonymous(responses)) => Err(PrincipalRejection::Unauthenticated(
                    responses.respond(Rejection::MissingCredentials),
                )),
                None => Err(PrincipalRejection::MissingLayer),
            }
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
        type Rejection = PrincipalRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            if let Some(principal) = parts.extensions.get::<Principal>() {
                return Ok(Some(principal.clone()));
            }
            if parts.extensions.get::<Anonymous>().is_some() {
                return Ok(None);
            }
            Err(PrincipalRejection::MissingLayer)
        }
    }
}

#[cfg(feature = "axum")]
pub use self::extract::PrincipalRejection;
