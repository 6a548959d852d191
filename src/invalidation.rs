//! Invalidations: how a revocation reaches every cache that holds the key.
//!
//! Each [`ApiKeyLayer`](crate::ApiKeyLayer) caches what its resolver said about a key. When a key
//! is revoked, rotated or deleted through a store of this crate, the store announces the key's
//! digest on its [`Invalidations`] handle, and every layer built on that store drops its cached
//! copy before the store's call returns, so the very next request on this instance sees the
//! change. A layer subscribes to its resolver's handle on its own
//! ([`KeyResolver::invalidations`](crate::KeyResolver::invalidations)).
//!
//! A custom resolver can do the same: give the layer an `Invalidations` with
//! [`ApiKeyLayerBuilder::invalidations`](crate::ApiKeyLayerBuilder::invalidations) and call
//! [`Invalidations::invalidate`] after changing a key in your database.
//!
//! ```
//! use tower_api_key::{Environment, Invalidations, KeyFormat};
//!
//! let invalidations = Invalidations::new();
//! // ... ApiKeyLayer::resolver_builder(format, resolver).invalidations(invalidations.clone()) ...
//! let key = KeyFormat::new("om").unwrap().generate(Environment::Live).unwrap();
//! // After marking the key revoked in your database:
//! invalidations.invalidate(&key.digest());
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use crate::key::KeyDigest;

/// Something that holds cached key state and can drop it.
pub(crate) trait Invalidate: Send + Sync {
    fn invalidate(&self, digest: &KeyDigest);
    fn invalidate_all(&self);
}

/// A handle on which revocations are announced to the caches that subscribed to it. Clones share
/// the subscribers.
///
/// See the [module docs](crate::invalidation).
#[derive(Clone, Default)]
pub struct Invalidations {
    subscribers: Arc<Mutex<Vec<Weak<dyn Invalidate>>>>,
}

impl Invalidations {
    /// A handle with no subscribers yet.
    pub fn new() -> Self {
        Invalidations::default()
    }

    /// Drops `digest` from every subscribed cache before returning.
    pub fn invalidate(&self, digest: &KeyDigest) {
        self.each(|target| target.invalidate(digest));
    }

    /// Empties every subscribed cache before returning.
    pub fn invalidate_all(&self) {
        self.each(|target| target.invalidate_all());
    }

    pub(crate) fn subscribe(&self, target: Weak<dyn Invalidate>) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| s.strong_count() > 0);
        subscribers.push(target);
    }

    fn each(&self, f: impl Fn(&dyn Invalidate)) {
        // Collect first so that no lock is held while caches do their work.
        let live: Vec<Arc<dyn Invalidate>> = {
            let mut subscribers = self.lock();
            subscribers.retain(|s| s.strong_count() > 0);
            subscribers.iter().filter_map(Weak::upgrade).collect()
        };
        for target in live {
            f(&*target);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Invalidate>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidations")
            .field("subscribers", &self.lock().len())
            .finish()
    }
}
