//! Key stores: where keys live, and how they are created, listed and revoked.
//!
//! A store keeps each key's [`KeyRecord`] under the key's digest, never the key. It resolves keys
//! for [`ApiKeyLayer`](crate::ApiKeyLayer) and announces revocations on its
//! [`Invalidations`](crate::Invalidations) handle, so a layer built on it refuses a revoked key
//! on the very next request.
//!
//! [`MemoryStore`] keeps keys in memory, for tests, demos and single-process deployments whose
//! keys are provisioned at start-up.
//!
//! ```
//! use tower_api_key::{Environment, KeyFormat, MemoryStore, NewKey, Scope};
//!
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! let created = store
//!     .create(
//!         NewKey::new("Webhook Server", Environment::Live)
//!             .owner("acct_42")
//!             .scopes([Scope::from_static("orders:read")]),
//!     )
//!     .unwrap();
//!
//! // The plaintext is handed out once, here. The store keeps only the digest.
//! println!("your key: {}", created.key.expose_secret());
//!
//! let listed = store.list(Some("acct_42"));
//! assert_eq!(listed[0].record.name, "Webhook Server");
//! assert_eq!(listed[0].hint, created.key.hint());
//!
//! store.revoke(&created.record.id).unwrap();
//! assert!(store.get(&created.record.id).unwrap().record.revoked_at.is_some());
//! ```

mod memory;

use std::fmt;
use std::time::SystemTime;

pub use self::memory::MemoryStore;
use crate::key::{Environment, KeyGenerationError, PlaintextKey};
use crate::resolver::{KeyId, KeyRecord};
use crate::scope::{Scope, ScopeSet};

/// Longest key name accepted, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// What to create: a name, an environment, and optionally an owner, scopes and an expiry.
#[derive(Clone, Debug)]
#[must_use]
pub struct NewKey {
    pub(crate) name: String,
    pub(crate) environment: Environment,
    pub(crate) owner: String,
    pub(crate) scopes: ScopeSet,
    pub(crate) expires_at: Option<SystemTime>,
}

impl NewKey {
    /// A key named `name` (such as `"Production"`) for `environment`, with no scopes, no owner and
    /// no expiry.
    pub fn new(name: impl Into<String>, environment: Environment) -> Self {
        NewKey {
            name: name.into(),
            environment,
            owner: String::new(),
            scopes: ScopeSet::empty(),
            expires_at: None,
        }
    }

    /// The account or user that owns the key.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The scopes the key grants. Grant only what the integration needs.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = Scope>) -> Self {
        self.scopes = scopes.into_iter().collect();
        self
    }

    /// When the key stops working; it must be in the future.
    pub fn expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }
}

/// A newly created key: the plaintext, shown once, and its record.
#[derive(Debug)]
#[non_exhaustive]
pub struct CreatedKey {
    /// The key itself. Show it to its owner now: it cannot be shown again.
    pub key: PlaintextKey,
    /// What the store keeps about it.
    pub record: KeyRecord,
}

/// A key as a store lists it: its record, display hint and creation time. Never the plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredKey {
    /// The key's record.
    pub record: KeyRecord,
    /// A display hint such as `om_live_…x7Qa`.
    pub hint: String,
    /// When the key was created.
    pub created_at: SystemTime,
}

/// Why a store refused an operation. Messages never contain a key.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The name is empty or only whitespace.
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`] characters.
    NameTooLong,
    /// The expiry is not in the future.
    ExpiryInPast,
    /// No key has this id.
    UnknownKey(KeyId),
    /// The random number generator failed.
    KeyGeneration(KeyGenerationError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::EmptyName => f.write_str("a key needs a name"),
            StoreError::NameTooLong => {
                write!(f, "a key name is at most {MAX_NAME_LEN} characters long")
            }
            StoreError::ExpiryInPast => f.write_str("a key's expiry must be in the future"),
            StoreError::UnknownKey(id) => write!(f, "no key has the id `{id}`"),
            StoreError::KeyGeneration(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::KeyGeneration(err) => Some(err),
            _ => None,
        }
    }
}

impl From<KeyGenerationError> for StoreError {
    fn from(err: KeyGenerationError) -> Self {
        StoreError::KeyGeneration(err)
    }
}

/// Checks a new key's name and expiry against `now`.
pub(crate) fn validate(new: &NewKey, now: SystemTime) -> Result<(), StoreError> {
    if new.name.trim().is_empty() {
        return Err(StoreError::EmptyName);
    }
    if new.name.chars().count() > MAX_NAME_LEN {
        return Err(StoreError::NameTooLong);
    }
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(StoreError::ExpiryInPast);
    }
    Ok(())
}
