#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    clippy::unwrap_used
)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cache;
pub mod clock;
pub mod credentials;
pub mod invalidation;
pub mod key;
pub mod layer;
pub mod principal;
pub mod rejection;
pub mod resolver;
pub mod scope;
pub mod store;

pub use crate::cache::CacheStats;
pub use crate::invalidation::Invalidations;
pub use crate::key::{Environment, KeyDigest, KeyFormat, PlaintextKey};
pub use crate::layer::{ApiKeyLayer, ApiKeyLayerBuilder, ApiKeyService};
pub use crate::principal::Principal;
#[cfg(feature = "axum")]
pub use crate::principal::PrincipalRejection;
pub use crate::rejection::{ProblemJson, Rejection, Responder};
pub use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};
pub use crate::scope::{RequireScopes, Scope, ScopeCatalog, ScopeRequirement, ScopeSet};
#[cfg(feature = "axum")]
pub use crate::scope::{RequiredScopes, Scoped};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteStore;
pub use crate::store::{
    CreatedKey, KeyStore, MemoryStore, NewKey, Rotation, StoreError, StoredKey,
};

#[doc(hidden)]
pub mod __private {
    //! Used by the crate's macros; not part of the API.

    use crate::scope::{ScopeError, ScopeRequirement};

    /// The requirement built by `scope_requirement!`.
    pub fn non_empty(built: Result<ScopeRequirement, ScopeError>) -> ScopeRequirement {
        // The macro only accepts one scope or more, so the requirement is never empty.
        built.unwrap_or_else(|err| panic!("scope_requirement!: {err}"))
    }
}
