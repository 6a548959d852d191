//! Invalidations: how a change to a key reaches every cache that holds it, in this process and
//! in every other one.
//!
//! Each [`ApiKeyLayer`](crate::ApiKeyLayer) caches what its resolver said about a key. A change
//! that narrows a key (revoked, deleted, rotated, renamed, or any other change to its row) has to
//! reach every one of those caches, or a revoked key keeps working until its cached copy
//! expires. Three paths carry it:
//!
//! 1. **In this process**, at once. A store of this crate announces the key's digest on its
//!    [`Invalidations`] handle before its call returns, and every layer built on that store
//!    drops its copy, so the very next request sees the change.
//! 2. **In other processes and on other instances**, within milliseconds. The SQL stores record
//!    every change to the key table in the same transaction, with database triggers, so that a
//!    change made with plain SQL counts too: PostgreSQL sends a `NOTIFY` (delivered only if the
//!    transaction commits), SQLite appends to a small log table that every process polls
//!    (every 100 ms by default). A store starts watching on its own as soon as a layer is built
//!    on it or it resolves a key; [`SqlStore::watcher`](crate::SqlStore::watcher) reports how
//!    the watch is going.
//! 3. **Through a bus of your own**, for keys in a database of your own: publish an
//!    [`Invalidation`] on [Redis pub/sub](crate::RedisBus) (feature `redis`) or on
//!    anything that implements [`InvalidationBus`], and run a [`Watcher`] on it in each process.
//!
//! When a channel is lost (the connection dropped, the database restarted, the server killed the
//! subscriber), the [`Watcher`] empties the caches it feeds, keeps the layers serving (a miss
//! goes to the store), reconnects with exponential backoff, empties the caches again once it is
//! subscribed, and reports all of it in a `tracing` event and in its
//! [`health`](Watcher::health). So a key is never accepted for longer than the cache's
//! time-to-live after its revocation, even while the channel is down.
//!
//! # A resolver of your own
//!
//! Give the layer an [`Invalidations`] handle and announce on it after changing a key in your
//! database; to reach other processes, publish on a bus and run a watcher in each process:
//!
//! ```
//! use tower_api_key::{Environment, Invalidation, Invalidations, KeyFormat};
//!
//! let invalidations = Invalidations::new();
//! // ... ApiKeyLayer::resolver_builder(format, resolver).invalidations(invalidations.clone()) ...
//! // ... Watcher::spawn(bus, invalidations.clone()) in each process ...
//! let key = KeyFormat::new("om").unwrap().generate(Environment::Live).unwrap();
//! // After marking the key revoked in your database:
//! invalidations.invalidate(&key.digest());
//! // ... and for the other processes: bus.publish(Invalidation::Key(key.digest())).await ...
//! ```
//!
//! A resolver of your own that wraps one of this crate's stores (to add a lookup of its own,
//! say) keeps the store's invalidations without doing anything: a layer whose resolver names no
//! handle of its own listens on [`Invalidations::process_wide`], where every store of this crate
//! announces its changes too.

mod bus;
#[cfg(feature = "redis")]
pub mod redis;
mod watcher;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub use self::bus::{BusError, InvalidationBus, InvalidationStream};
#[cfg(feature = "redis")]
pub use self::redis::RedisBus;
pub use self::watcher::{ChannelHealth, Watcher, WatcherBuilder};

use crate::key::KeyDigest;

/// Something that holds cached key state and can drop it.
pub(crate) trait Invalidate: Send + Sync {
    fn invalidate(&self, digest: &KeyDigest);
    fn invalidate_all(&self);
}

/// What a cache must drop: one key, or everything.
///
/// On a bus it travels as text ([`Display`](fmt::Display) and [`FromStr`]): `key:` and the
/// digest's 64 lowercase hex digits, or `all`. The digest is the key's SHA-256, which the key
/// table holds anyway; never the key itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// The key with this digest changed (revoked, deleted, rotated, renamed, created).
    Key(KeyDigest),
    /// Anything may have changed: drop every cached key.
    All,
}

impl fmt::Display for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalidation::Key(digest) => write!(f, "key:{}", digest.to_hex()),
            Invalidation::All => f.write_str("all"),
        }
    }
}

/// The text of a message is not an [`Invalidation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidMessage(());

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an invalidation: expected `all` or `key:` and 64 hex digits")
    }
}

impl std::error::Error for InvalidMessage {}

impl FromStr for Invalidation {
    type Err = InvalidMessage;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "all" {
            return Ok(Invalidation::All);
        }
        text.strip_prefix("key:")
            .and_then(KeyDigest::from_hex)
            .map(Invalidation::Key)
            .ok_or(InvalidMessage(()))
    }
}

/// A handle on which changes to keys are announced to the caches that subscribed to it. Clones
/// share the subscribers.
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

    /// The handle of the whole process. Every store of this crate announces its changes here as
    /// well as on its own handle, and a layer whose resolver has no handle of its own (see
    /// [`KeyResolver::invalidations`](crate::KeyResolver::invalidations)) listens here, so that a
    /// resolver wrapping a store keeps the store's invalidations.
    pub fn process_wide() -> &'static Invalidations {
        static PROCESS: OnceLock<Invalidations> = OnceLock::new();
        PROCESS.get_or_init(Invalidations::new)
    }

    /// Drops `digest` from every subscribed cache before returning.
    pub fn invalidate(&self, digest: &KeyDigest) {
        self.each(|target| target.invalidate(digest));
    }

    /// Empties every subscribed cache before returning.
    pub fn invalidate_all(&self) {
        self.each(|target| target.invalidate_all());
    }

    /// Applies `message`: [`invalidate`](Self::invalidate) or
    /// [`invalidate_all`](Self::invalidate_all).
    pub fn apply(&self, message: Invalidation) {
        match message {
            Invalidation::Key(digest) => self.invalidate(&digest),
            Invalidation::All => self.invalidate_all(),
        }
    }

    /// Whether both handles share their subscribers.
    pub(crate) fn same(&self, other: &Invalidations) -> bool {
        Arc::ptr_eq(&self.subscribers, &other.subscribers)
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

/// Where a store delivers a change: its own handle and, unless that is the same, the process's.
pub(crate) fn announce(own: &Invalidations, message: Invalidation) {
    own.apply(message);
    let process = Invalidations::process_wide();
    if !own.same(process) {
        process.apply(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_text() {
        let digest = KeyDigest::of(b"om_live_example");
        let key = Invalidation::Key(digest);
        let text = key.to_string();
        assert_eq!(text, format!("key:{}", digest.to_hex()));
        assert_eq!(text.parse::<Invalidation>(), Ok(key));
        assert_eq!("all".parse::<Invalidation>(), Ok(Invalidation::All));
        for bad in [
            "",
            "ALL",
            "key:",
            "key:zz",
            &text[..text.len() - 1],
            &format!("{text}0"),
        ] {
            assert_eq!(
                bad.parse::<Invalidation>(),
                Err(InvalidMessage(())),
                "{bad:?}"
            );
        }
    }
}
