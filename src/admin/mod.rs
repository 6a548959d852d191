//! Key management, ready-made: a JSON API, its OpenAPI description and the Settings → API page,
//! as an axum [`Router`] the application mounts behind its own login.
//!
//! The crate never signs anyone in. The application's own authentication (a session cookie, a
//! single sign-on proxy) decides who is asking and puts an [`AdminIdentity`] into the request's
//! extensions: the **owner** whose keys are managed (an account id, as [`NewKey::owner`](crate::NewKey::owner) sets
//! it) and the **actor** recorded in the audit trail. Every call acts for that owner only: a
//! key of another owner answers `404` exactly as an id that does not exist, so ids can be
//! neither seen nor guessed. Without an identity every call answers `401`.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /` | the Settings → API page (HTML, CSS and a little JavaScript; strict CSP): at the mount point itself, such as `/settings/api` |
//! | `GET /v1/me` | who the API acts for |
//! | `GET /v1/scopes` | the scopes and environments keys may be created with |
//! | `GET /v1/keys?limit&cursor` | the owner's keys, newest first, a page at a time |
//! | `POST /v1/keys` | creates a key: its text is in this response only (`Cache-Control: no-store`) |
//! | `GET /v1/keys/{id}` | one key |
//! | `PATCH /v1/keys/{id}` | renames it |
//! | `POST /v1/keys/{id}/revoke` | revokes it: the next request with it gets 401 |
//! | `POST /v1/keys/{id}/rotate` | replaces it; the old one works for a grace period |
//! | `GET /v1/keys/{id}/usage?days` | its requests per day, by outcome |
//! | `GET /v1/keys/{id}/audit`, `GET /v1/audit` | the audit trail of a key, of the owner |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 description of all of the above |
//!
//! Keys are created only with the scopes the application [grants](AdminRouter::grant), for the
//! [environments](AdminRouter::environments) it allows. Bad input answers `422` with an RFC 9457
//! problem naming each field at fault (`errors: [{"field": "name", "message": …}]`); nothing is
//! written. A store outage answers `503` with `Retry-After`, never a half-done change.
//!
//! **Cross-site requests.** Writes must carry `Content-Type: application/json` (which an HTML
//! form on another site cannot send) and, when a browser says where they come from
//! (`Sec-Fetch-Site`, `Origin`), come from the page's own origin or one the application
//! [trusts](AdminRouter::trusted_origin). A host that signs users in with cookies can mount the
//! router without a CSRF token of its own.
//!
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_api_key::admin::{AdminIdentity, AdminRouter};
//! use tower_api_key::{Actor, Environment, KeyFormat, MemoryStore, Scope};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! let admin = AdminRouter::new(store)
//!     .grant(Scope::from_static("orders:read"), "View orders")
//!     .environments([Environment::Live, Environment::Test])
//!     .build();
//! // Mounted behind the application's login, which says who is asking:
//! let app = axum::Router::new().nest("/settings/api", admin).layer(
//!     axum::middleware::from_fn(|mut request: Request<Body>, next: axum::middleware::Next| {
//!         request
//!             .extensions_mut()
//!             .insert(AdminIdentity::new("acct_42", Actor::new("alice@example.com")));
//!         next.run(request)
//!     }),
//! );
//!
//! let create = Request::post("/settings/api/v1/keys")
//!     .header("content-type", "application/json")
//!     .body(Body::from(
//!         r#"{"name":"Webhook Server","environment":"live","scopes":["orders:read"]}"#,
//!     ))
//!     .unwrap();
//! let response = app.clone().oneshot(create).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! assert_eq!(response.headers()["cache-control"], "no-store");
//!
//! // A scope the deployment does not grant is refused, naming the field.
//! let greedy = Request::post("/settings/api/v1/keys")
//!     .header("content-type", "application/json")
//!     .body(Body::from(
//!         r#"{"name":"Greedy","environment":"live","scopes":["orders:write"]}"#,
//!     ))
//!     .unwrap();
//! let response = app.oneshot(greedy).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
//! # });
//! ```

mod api;
mod body;
mod guard;
mod openapi;
mod page;
mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use crate::key::Environment;
use crate::scope::Scope;
use crate::store::{Actor, KeyStore};

pub use self::page::CONTENT_SECURITY_POLICY;

/// Who an admin request acts for: the owner whose keys it manages, and the actor the audit
/// trail records. The application's login middleware inserts it into the request's extensions.
///
/// If the actor has no [address](Actor::from_address), the router records the connection's
/// (from axum's `ConnectInfo<SocketAddr>`, when the server provides it). Behind a proxy, give
/// the client's address yourself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminIdentity {
    owner: String,
    actor: Actor,
}

impl AdminIdentity {
    /// Acting for `owner` (such as `acct_42`), as `actor`. A blank owner is refused with `401`:
    /// it would be the owner of keys created without one.
    pub fn new(owner: impl Into<String>, actor: Actor) -> Self {
        AdminIdentity {
            owner: owner.into(),
            actor,
        }
    }

    /// The owner whose keys are managed.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Who is acting.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }
}

/// Builds the admin [`Router`]: the JSON API and the page, over a [`KeyStore`].
///
/// See the [module docs](self).
#[must_use]
pub struct AdminRouter {
    store: Arc<dyn KeyStore>,
    grants: Vec<(Scope, String)>,
    environments: Vec<Environment>,
    default_grace: Duration,
    max_grace: Duration,
    trusted_origins: Vec<String>,
    page: bool,
}

impl AdminRouter {
    /// The admin API over `store` (an `Arc` of a store works too). Until scopes are
    /// [granted](Self::grant), no key can be created; both environments are allowed.
    pub fn new<S: KeyStore>(store: S) -> Self {
        AdminRouter {
            store: Arc::new(store),
            grants: Vec::new(),
            environments: Environment::ALL.to_vec(),
            default_grace: Duration::from_secs(24 * 60 * 60),
            max_grace: Duration::from_secs(30 * 24 * 60 * 60),
            trusted_origins: Vec::new(),
            page: true,
        }
    }

    /// Lets keys be created with `scope`; `description` says what it grants (the page shows
    /// it beside the checkbox). The page groups scopes by resource, in the order granted.
    pub fn grant(mut self, scope: Scope, description: impl Into<String>) -> Self {
        let description = description.into();
        match self.grants.iter_mut().find(|(s, _)| *s == scope) {
            Some(grant) => grant.1 = description,
            None => self.grants.push((scope, description)),
        }
        self
    }

    /// The environments keys may be created for (both unless told otherwise).
    pub fn environments(mut self, environments: impl IntoIterator<Item = Environment>) -> Self {
        self.environments = Vec::new();
        for environment in environments {
            if !self.environments.contains(&environment) {
                self.environments.push(environment);
            }
        }
        self
    }

    /// How long an old key keeps working after a rotation when the request does not say (a day
    /// unless told otherwise), and the longest a request may ask for (30 days).
    pub fn grace(mut self, default: Duration, max: Duration) -> Self {
        self.default_grace = default.min(max);
        self.max_grace = max;
        self
    }

    /// Also accepts writes from pages at `origin` (such as `https://dashboard.example.com`),
    /// when the API is called from another origin than the one serving it.
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// Serves only the JSON API, not the page.
    pub fn without_page(mut self) -> Self {
        self.page = false;
        self
    }

    /// The OpenAPI 3.1 description of the API, as JSON (also served at `GET /v1/openapi.json`,
    /// with the mount point as its server).
    pub fn openapi_json() -> String {
        openapi::document()
            .to_pretty_json()
            .unwrap_or_else(|_| String::from("{}"))
    }

    /// The router, to [`nest`](Router::nest) under the application's login.
    pub fn build(self) -> Router {
        let admin = Arc::new(api::Admin {
            store: self.store,
            grants: self.grants,
            environments: self.environments,
            default_grace: self.default_grace,
            max_grace: self.max_grace,
        });
        let trusted: Arc<[String]> = self.trusted_origins.into();
        let mut router = Router::new()
            .route("/v1/me", get(api::me))
            .route("/v1/scopes", get(api::scopes))
            .route("/v1/keys", get(api::list).post(api::create))
            .route("/v1/keys/{id}", get(api::show).patch(api::rename))
            .route("/v1/keys/{id}/revoke", post(api::revoke))
            .route("/v1/keys/{id}/rotate", post(api::rotate))
            .route("/v1/keys/{id}/usage", get(api::usage))
            .route("/v1/keys/{id}/audit", get(api::key_audit))
            .route("/v1/audit", get(api::owner_audit))
            .route("/v1/openapi.json", get(openapi::serve))
            .with_state(admin);
        if self.page {
            router = router.merge(page::routes());
        }
        router.layer(axum::middleware::from_fn_with_state(
            trusted,
            guard::same_origin,
        ))
    }
}

impl std::fmt::Debug for AdminRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRouter")
            .field("grants", &self.grants)
            .field("environments", &self.environments)
            .field("default_grace", &self.default_grace)
            .field("max_grace", &self.max_grace)
            .field("trusted_origins", &self.trusted_origins)
            .field("page", &self.page)
            .finish_non_exhaustive()
    }
}
