//! The `Scoped<R>` extractor: a principal whose key meets a requirement known to the type system.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use axum_core::extract::FromRequestParts;
use http::request::Parts;

use super::require::authorize;
use super::ScopeRequirement;
use crate::principal::{Principal, PrincipalRejection};

/// A requirement of scopes as a type, for the [`Scoped`] extractor. Declare one with
/// [`scope_requirement!`](crate::scope_requirement).
pub trait RequiredScopes: Send + Sync + 'static {
    /// The requirement, built once.
    fn requirement() -> &'static ScopeRequirement;
}

/// Extracts the [`Principal`] if its key meets `R`'s requirement; otherwise the request gets
/// `403 insufficient_scope` (`401` behind an optional layer without credentials, `500` without
/// an [`ApiKeyLayer`](crate::ApiKeyLayer)), exactly as [`RequireScopes`](crate::RequireScopes)
/// answers.
///
/// The check runs in the handler's own extraction, with no extra service around the route, so
/// it is the cheapest way to require scopes. Dereferences to the principal.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_api_key::{scope_requirement, Scope, Scoped};
///
/// const PRODUCTS_READ: Scope = Scope::from_static("products:read");
///
/// scope_requirement! {
///     /// What listing products takes.
///     pub struct ReadProducts = all(PRODUCTS_READ);
/// }
///
/// async fn list_products(principal: Scoped<ReadProducts>) -> String {
///     format!("products of {}", principal.owner())
/// }
///
/// let app: Router = Router::new().route("/v1/products", get(list_products));
/// ```
pub struct Scoped<R: RequiredScopes> {
    principal: Principal,
    requirement: PhantomData<fn() -> R>,
}

impl<R: RequiredScopes> Scoped<R> {
    /// The principal.
    pub fn into_inner(self) -> Principal {
        self.principal
    }
}

impl<R: RequiredScopes> Deref for Scoped<R> {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<R: RequiredScopes> Clone for Scoped<R> {
    fn clone(&self) -> Self {
        Scoped {
            principal: self.principal.clone(),
            requirement: PhantomData,
        }
    }
}

impl<R: RequiredScopes> fmt::Debug for Scoped<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("requirement", R::requirement())
            .field("principal", &self.principal)
            .finish()
    }
}

impl<S: Send + Sync, R: RequiredScopes> FromRequestParts<S> for Scoped<R> {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let principal = authorize(&parts.extensions, R::requirement())?;
        Ok(Scoped {
            principal: principal.clone(),
            requirement: PhantomData,
        })
    }
}

/// Declares a type for the [`Scoped`] extractor: `all(...)` requires every scope, `any(...)` at
/// least one. The scopes are [`Scope`](crate::Scope) constants or expressions.
///
/// ```
/// use tower_api_key::{scope_requirement, RequiredScopes, Scope};
///
/// const ORDERS_READ: Scope = Scope::from_static("orders:read");
/// const ANALYTICS_READ: Scope = Scope::from_static("analytics:read");
///
/// scope_requirement! {
///     /// Reports need orders or analytics.
///     pub struct Reports = any(ORDERS_READ, ANALYTICS_READ);
/// }
///
/// assert_eq!(Reports::requirement().to_string(), "analytics:read or orders:read");
/// ```
#[macro_export]
macro_rules! scope_requirement {
    ($(#[$meta:meta])* $vis:vis struct $name:ident = all($($scope:expr),+ $(,)?);) => {
        $crate::scope_requirement!(@define $(#[$meta])* $vis $name all $($scope),+);
    };
    ($(#[$meta:meta])* $vis:vis struct $name:ident = any($($scope:expr),+ $(,)?);) => {
        $crate::scope_requirement!(@define $(#[$meta])* $vis $name any $($scope),+);
    };
    (@define $(#[$meta:meta])* $vis:vis $name:ident $mode:ident $($scope:expr),+) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        $vis struct $name;

        impl $crate::RequiredScopes for $name {
            fn requirement() -> &'static $crate::ScopeRequirement {
                static REQUIREMENT: ::std::sync::OnceLock<$crate::ScopeRequirement> =
                    ::std::sync::OnceLock::new();
                REQUIREMENT.get_or_init(|| {
                    $crate::__private::non_empty($crate::ScopeRequirement::$mode([$($scope),+]))
                })
            }
        }
    };
}
