//! The authenticating layer.
//!
//! [`ApiKeyLayer`] wraps a service. For each request it reads the `Authorization: Bearer` header,
//! checks the key's format and checksum (no I/O), hashes it, asks its cache and, on a miss, its
//! [`KeyResolver`](crate::KeyResolver), checks revocation and expiry, and then either puts a
//! [`Principal`](crate::Principal) into the request extensions and calls the inner service, or
//! answers with the [rejection](crate::rejection) the response contract prescribes.
//!
//! It works with `Router::layer`, `Router::route_layer`, `Handler::layer`,
//! `tower::ServiceBuilder`, and any tower service whose response body can be built from
//! [`Bytes`](bytes::Bytes). It needs a Tokio runtime.
//!
//! A layer built on a store records each key's [usage](crate::usage) in it, and every layer
//! reports [metrics](crate::metrics) to the recorder installed when it is built. Both need a
//! background task per layer, which starts with the first request inside a Tokio runtime and
//! ends when the layer is dropped; [`ApiKeyLayer::flush_usage`] writes the usage counts on a
//! graceful shutdown.
//!
//! # Example
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{header, Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_api_key::{ApiKeyLayer, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Principal};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! let created = store.create(NewKey::new("Production", Environment::Live)).await.unwrap();
//!
//! let app = Router::new()
//!     .route("/v1/ping", get(|principal: Principal| async move { principal.name().to_owned() }))
//!     .layer(
//!         ApiKeyLayer::builder(store.clone())
//!             .realm("OrderMonk API")
//!             .environments([Environment::Live])
//!             .build(),
//!     );
//!
//! let request = |auth: Option<String>| {
//!     let mut request = Request::get("/v1/ping");
//!     if let Some(auth) = auth {
//!         request = request.header(header::AUTHORIZATION, auth);
//!     }
//!     request.body(Body::empty()).unwrap()
//! };
//!
//! let bearer = format!("Bearer {}", created.key.expose_secret());
//! let ok = app.clone().oneshot(request(Some(bearer.clone()))).await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//!
//! let missing = app.clone().oneshot(request(None)).await.unwrap();
//! assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="OrderMonk API""#);
//!
//! // Revocation through the store takes effect on the very next request.
//! store.revoke(created.id()).await.unwrap();
//! let revoked = app.oneshot(request(Some(bearer))).await.unwrap();
//! assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     revoked.headers()[header::WWW_AUTHENTICATE],
//!     r#"Bearer realm="OrderMonk API", error="invalid_token""#
//! );
//! # });
//! ```

mod authenticator;
mod builder;
mod future;
mod housekeeping;
mod service;

pub use self::builder::{ApiKeyLayer, ApiKeyLayerBuilder};
pub use self::future::ApiKeyResponseFuture;
pub use self::service::ApiKeyService;
