//! Resolvers: how the layer turns a key digest into a key's record.
//!
//! A [`KeyResolver`] receives the SHA-256 [`KeyDigest`] of a presented, well-formed key and
//! answers with the key's [`KeyRecord`], with `None` when no such key exists, or with a
//! [`ResolveError`] when it cannot tell (database down, timeout). The layer caches answers, checks
//! revocation and expiry itself on every request, and turns an error into `503`, never `401`.
//!
//! Implementing it for your own database is a few lines; a closure works too:
//!
//! ```
//! use std::collections::HashMap;
//! use tower_api_key::{
//!     Environment, KeyDigest, KeyFormat, KeyRecord, KeyResolver, ResolveError, Scope, ScopeSet,
//! };
//!
//! // A table keyed by digest, as a database would hold it.
//! let format = KeyFormat::new("om").unwrap();
//! let key = format.generate(Environment::Live).unwrap();
//! let scopes: ScopeSet = [Scope::from_static("orders:read")].into_iter().collect();
//! let table = HashMap::from([(
//!     key.digest(),
//!     KeyRecord::new("key_1", Environment::Live, scopes).with_name("Webhook Server"),
//! )]);
//!
//! let resolver = move |digest: KeyDigest| {
//!     let found = table.get(&digest).cloned();
//!     async move { Ok::<_, ResolveError>(found) }
//! };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let record = resolver.resolve(&key.digest()).await.unwrap().unwrap();
//! assert_eq!(record.name, "Webhook Server");
//! # });
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::invalidation::Invalidations;
use crate::key::{Environment, KeyDigest};
use crate::limit::KeyLimits;
use crate::scope::ScopeSet;

/// Looks up keys by digest for [`ApiKeyLayer`](crate::ApiKeyLayer).
///
/// Implemented by the crate's stores, by any `Fn(KeyDigest) -> impl Future<Output =
/// Result<Option<KeyRecord>, ResolveError>>`, and by `Arc<R>` for any resolver `R`.
///
/// See the [module docs](crate::resolver) for an example.
#[async_trait]
pub trait KeyResolver: Send + Sync + 'static {
    /// The record of the key whose digest is `digest`; `Ok(None)` when there is none.
    ///
    /// Return revoked and expired keys as they are: the layer rejects them itself and caches the
    /// verdict. Return `Err` only when the answer is unknown, for example because the database
    /// is unreachable.
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError>;

    /// Where this resolver announces changes to keys, so that a layer built on it drops its
    /// cached copy at once. Stores return theirs (and start watching for changes made by other
    /// processes).
    ///
    /// The default is `None`: a layer on such a resolver listens on
    /// [`Invalidations::process_wide`], where every store of this crate announces its changes,
    /// so a resolver that wraps a store keeps the store's invalidations.
    fn invalidations(&self) -> Option<Invalidations> {
        None
    }
}

#[async_trait]
impl<F, Fut> KeyResolver for F
where
    F: Fn(KeyDigest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<KeyRecord>, ResolveError>> + Send,
{
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        (self)(*digest).await
    }
}

#[async_trait]
impl<R: KeyResolver + ?Sized> KeyResolver for Arc<R> {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        (**self).resolve(digest).await
    }

    fn invalidations(&self) -> Option<Invalidations> {
        (**self).invalidations()
    }
}

/// A key's identifier: stable, not secret, safe to log.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for KeyId {
    fn from(id: &str) -> Self {
        KeyId(id.into())
    }
}

impl From<String> for KeyId {
    fn from(id: String) -> Self {
        KeyId(id.into())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a resolver knows about one key. Never holds the plaintext.
///
/// Build one with [`KeyRecord::new`] and the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The key's identifier.
    pub id: KeyId,
    /// A descriptive name such as `"Production"` or `"Webhook Server"`.
    pub name: String,
    /// The account or user that owns the key.
    pub owner: String,
    /// The environment the key was created for.
    pub environment: Environment,
    /// The scopes the key grants.
    pub scopes: ScopeSet,
    /// When the key stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// How fast and from where the key may be used ([`limit`](crate::limit)).
    pub limits: KeyLimits,
}

impl KeyRecord {
    /// A record with no name, no owner, no expiry, not revoked.
    pub fn new(id: impl Into<KeyId>, environment: Environment, scopes: ScopeSet) -> Self {
        KeyRecord {
            id: id.into(),
            name: String::new(),
            owner: String::new(),
            environment,
            scopes,
            expires_at: None,
            revoked_at: None,
            limits: KeyLimits::none(),
        }
    }

    /// Sets the descriptive name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the owner.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Sets when the key expires.
    pub fn with_expires_at(mut self, expires_at: impl Into<Option<SystemTime>>) -> Self {
        self.expires_at = expires_at.into();
        self
    }

    /// Sets when the key was revoked.
    pub fn with_revoked_at(mut self, revoked_at: impl Into<Option<SystemTime>>) -> Self {
        self.revoked_at = revoked_at.into();
        self
    }

    /// Sets the key's rate limit and allowlist.
    pub fn with_limits(mut self, limits: KeyLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether the key is expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why a resolver could not answer. The layer answers `503` with `Retry-After`, and never caches
/// it.
#[derive(Clone)]
pub struct ResolveError {
    kind: ErrorKind,
}

#[derive(Clone)]
enum ErrorKind {
    Failed(Arc<dyn Error + Send + Sync>),
    TimedOut(Duration),
    Panicked,
    Cancelled,
}

impl ResolveError {
    /// A failure caused by `source`, such as a database error.
    ///
    /// The source's message reaches logs through the [`Rejection`](crate::Rejection), never the
    /// client; it must not contain secrets.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        ResolveError {
            kind: ErrorKind::Failed(Arc::from(source.into())),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        ResolveError {
            kind: ErrorKind::TimedOut(after),
        }
    }

    pub(crate) fn panicked() -> Self {
        ResolveError {
            kind: ErrorKind::Panicked,
        }
    }

    pub(crate) fn cancelled() -> Self {
        ResolveError {
            kind: ErrorKind::Cancelled,
        }
    }

    /// Whether the resolver did not answer within the layer's timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::TimedOut(_))
    }
}

impl fmt::Debug for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Failed(source) => f.debug_tuple("ResolveError").field(source).finish(),
            ErrorKind::TimedOut(after) => f
                .debug_tuple("ResolveError::TimedOut")
                .field(after)
                .finish(),
            ErrorKind::Panicked => f.write_str("ResolveError::Panicked"),
            ErrorKind::Cancelled => f.write_str("ResolveError::Cancelled"),
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Failed(source) => write!(f, "key resolver failed: {source}"),
            ErrorKind::TimedOut(after) => write!(f, "key resolver timed out after {after:?}"),
            ErrorKind::Panicked => f.write_str("key resolver panicked"),
            ErrorKind::Cancelled => {
                f.write_str("key resolver call was cancelled: its runtime shut down")
            }
        }
    }
}

impl Error for ResolveError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            ErrorKind::Failed(source) => Some(&**source),
            _ => None,
        }
    }
}
