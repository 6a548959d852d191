//! What every store is configured with, written once for all of them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::{Clock, SystemClock};
use crate::invalidation::{Invalidation, Invalidations};
use crate::key::KeyDigest;
use crate::key::KeyFormat;
use crate::scope::ScopeCatalog;

/// What a store is configured with: the [`KeyFormat`] of its keys, the [`ScopeCatalog`] that
/// new keys' scopes must come from (if any), the [`Clock`] for creation, revocation and rotation
/// times, and the [`Invalidations`] on which it announces changes.
///
/// Every store takes one (a [`KeyFormat`] alone converts into the defaults), and clones of a
/// store share it.
///
/// ```
/// use tower_api_key::{KeyFormat, MemoryStore, Scope, ScopeCatalog, StoreSettings};
///
/// let settings = StoreSettings::new(KeyFormat::new("om").unwrap())
///     .catalog(ScopeCatalog::new([Scope::from_static("orders:read")]));
/// let store = MemoryStore::new(settings);
/// # let _ = store;
/// ```
#[derive(Clone)]
#[must_use]
pub struct StoreSettings {
    pub(crate) format: KeyFormat,
    pub(crate) catalog: Option<ScopeCatalog>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) invalidations: Invalidations,
}

impl StoreSettings {
    /// Keys of `format`, any well-formed scope, the system clock, and a fresh [`Invalidations`].
    pub fn new(format: KeyFormat) -> Self {
        StoreSettings {
            format,
            catalog: None,
            clock: Arc::new(SystemClock),
            invalidations: Invalidations::new(),
        }
    }

    /// Only accepts keys whose scopes are in `catalog`.
    pub fn catalog(mut self, catalog: ScopeCatalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Uses `clock` for creation, revocation and rotation times.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Announces changes on `invalidations` (for example one shared with other stores) rather
    /// than on a handle of the store's own.
    pub fn invalidations(mut self, invalidations: Invalidations) -> Self {
        self.invalidations = invalidations;
        self
    }

    /// The format of the keys the store creates.
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Tells the caches of this process that the key with `digest` changed: those subscribed to
    /// the store's handle, and those listening process-wide.
    pub(crate) fn announce(&self, digest: &KeyDigest) {
        crate::invalidation::announce(&self.invalidations, Invalidation::Key(*digest));
    }
}

impl From<KeyFormat> for StoreSettings {
    fn from(format: KeyFormat) -> Self {
        StoreSettings::new(format)
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("format", &self.format)
            .field("catalog", &self.catalog)
            .field("invalidations", &self.invalidations)
            .finish_non_exhaustive()
    }
}

/// `with_catalog` and `with_clock` for a store holding its [`StoreSettings`] in `self.settings`:
/// the same two methods on every store, written once.
macro_rules! settings_methods {
    () => {
        /// Only accepts keys whose scopes are in `catalog`
        /// (see [`StoreSettings::catalog`](crate::StoreSettings::catalog)).
        pub fn with_catalog(mut self, catalog: $crate::ScopeCatalog) -> Self {
            self.settings = self.settings.catalog(catalog);
            self
        }

        /// Uses `clock` for creation, revocation and rotation times
        /// (see [`StoreSettings::clock`](crate::StoreSettings::clock)).
        pub fn with_clock(mut self, clock: impl $crate::Clock) -> Self {
            self.settings = self.settings.clock(clock);
            self
        }

        /// What the store is configured with.
        pub fn settings(&self) -> &$crate::StoreSettings {
            &self.settings
        }
    };
}

pub(crate) use settings_methods;
