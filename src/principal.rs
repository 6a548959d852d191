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
//!     .layer(ApiKeyLayer::new(store));
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
//! conversion from a [`KeyRecord`](crate::KeyRecord), no `Default`. Both of these fail to
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
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::cache::CachedKey;
use crate::key::Environment;
use crate::rejection::{MissingLayer, Refused, Rejection, Responses};
use crate::resolver::KeyId;
use crate::scope::{Scope, ScopeRequirement, ScopeSet};

/// The authenticated caller: the key's id, name, owner, environment, scopes and expiry.
///
/// Cheap to clone. See the [module docs](crate::principal).
#[derive(Clone)]
pub struct Principal {
    /// What the resolver said about the key, shared with the layer's cache.
    key: Arc<CachedKey>,
    /// How the layer that made this principal answers rejections, so that scope checks further
    /// in answer the same way.
    responses: Arc<Responses>,
}

impl Principal {
    /// The principal of a key the layer looked up, answering rejections with `responses`.
    pub(crate) fn new(key: Arc<CachedKey>, responses: Arc<Responses>) -> Self {
        Principal { key, responses }
    }

    /// The key's identifier.
    pub fn key_id(&self) -> &KeyId {
        &self.key.id
    }

    /// The key's descriptive name, such as `"Production"`.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The account or user that owns the key.
    pub fn owner(&self) -> &str {
        &self.key.owner
    }

    /// `Live` for production keys, `Test` for sandbox keys: choose the data accordingly.
    pub fn environment(&self) -> Environment {
        self.key.environment
    }

    /// The scopes the key grants.
    pub fn scopes(&self) -> &ScopeSet {
        &self.key.scopes
    }

    /// When the key expires, if ever.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.key.expires_at
    }

    /// Whether the key grants `scope`.
    pub fn has_scope(&self, scope: &Scope) -> bool {
        self.key.scopes.contains(scope)
    }

    /// Whether the key meets `requirement`.
    pub fn satisfies(&self, requirement: &ScopeRequirement) -> bool {
        requirement.is_satisfied_by(&self.key.scopes)
    }

    pub(crate) fn responses(&self) -> &Arc<Responses> {
        &self.responses
    }

    /// The cache entry behind the principal.
    pub(crate) fn cached_key(&self) -> &Arc<CachedKey> {
        &self.key
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        f.debug_struct("Principal")
            .field("key_id", &key.id)
            .field("name", &key.name)
            .field("owner", &key.owner)
            .field("environment", &key.environment)
            .field("scopes", &key.scopes)
            .field("expires_at", &key.expires_at)
            .finish()
    }
}

/// Marks a request that a layer in optional mode let through without credentials.
#[derive(Clone)]
pub(crate) struct Anonymous(pub(crate) Arc<Responses>);

/// Why the [`Principal`] or [`Scoped`](crate::Scoped) extractor, or a
/// [`RequireScopes`](crate::RequireScopes) layer, refused a request.
///
/// With the `axum` feature it is an `IntoResponse`; match on it to answer differently.
#[derive(Debug)]
#[non_exhaustive]
pub enum PrincipalRejection {
    /// No [`ApiKeyLayer`](crate::ApiKeyLayer) ran for this request: a mistake in the program,
    /// answered with `500`.
    MissingLayer(MissingLayer),
    /// The request was refused as the layer answers refusals: `401` for a request without
    /// credentials behind a layer in optional mode, `403 insufficient_scope` for a key without
    /// the scopes required.
    Refused(Refused),
}

impl PrincipalRejection {
    /// The status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            PrincipalRejection::MissingLayer(missing) => missing.status(),
            PrincipalRejection::Refused(refused) => refused.status(),
        }
    }

    /// The [`Rejection`] behind a refusal; `None` for a missing layer.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            PrincipalRejection::MissingLayer(_) => None,
            PrincipalRejection::Refused(refused) => Some(refused.rejection()),
        }
    }

    /// The response, with any body type a tower service answers with.
    pub(crate) fn into_http_response<B: From<Bytes>>(self) -> Response<B> {
        match self {
            PrincipalRejection::MissingLayer(missing) => missing.into_http_response(),
            PrincipalRejection::Refused(refused) => refused.into_http_response(),
        }
    }
}

impl fmt::Display for PrincipalRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalRejection::MissingLayer(missing) => missing.fmt(f),
            PrincipalRejection::Refused(refused) => refused.fmt(f),
        }
    }
}

impl std::error::Error for PrincipalRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrincipalRejection::MissingLayer(missing) => Some(missing),
            PrincipalRejection::Refused(refused) => Some(refused),
        }
    }
}

impl From<MissingLayer> for PrincipalRejection {
    fn from(missing: MissingLayer) -> Self {
        PrincipalRejection::MissingLayer(missing)
    }
}

impl From<Refused> for PrincipalRejection {
    fn from(refused: Refused) -> Self {
        PrincipalRejection::Refused(refused)
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::request::Parts;

    use super::{Anonymous, Principal, PrincipalRejection};
    use crate::rejection::{MissingLayer, Refused, Rejection};

    impl IntoResponse for PrincipalRejection {
        fn into_response(self) -> Response {
            self.into_http_response()
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
                Some(Anonymous(responses)) => Err(PrincipalRejection::Refused(Refused::new(
                    Rejection::MissingCredentials,
                    responses.clone(),
                ))),
                None => Err(PrincipalRejection::MissingLayer(MissingLayer)),
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
            Err(PrincipalRejection::MissingLayer(MissingLayer))
        }
    }
}
