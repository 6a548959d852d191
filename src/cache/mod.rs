//! The cache in front of the resolver: what the resolver said about each key, by digest.
//!
//! Two bounded [moka](https://docs.rs/moka) caches keyed by [`KeyDigest`]: one for keys the
//! resolver found (valid, revoked or expired alike: the layer checks revocation and expiry on
//! every request, hit or miss), and a separate, smaller, shorter-lived one for digests the resolver
//! did not know, so that a flood of made-up keys cannot push real keys out. Before both sits the
//! per-thread [front table](front).
//!
//! The cache knows keys, digests, resolvers and clocks, and nothing of HTTP: it keeps each answer
//! as a [`CachedKey`], and the layer builds principals and responses from it.
//!
//! The rules it keeps:
//!
//! - Concurrent misses for one key share one resolver call. The call runs in its own task, so a
//!   client that goes away does not cancel it for the others.
//! - An answer's life is counted from the moment its lookup **started**, not from when the
//!   resolver answered: a found key is served at most `ttl` after its lookup began (and never
//!   past its `expires_at`), an unknown one at most `negative_ttl`. A request joins a lookup in
//!   flight only if that lookup started less than `min(ttl, negative_ttl)` ago; otherwise it
//!   starts a fresh one. So a change made outside the crate's stores (another process, a manual
//!   `UPDATE`) is seen by every request that arrives `ttl` after it, however slow the resolver.
//! - Resolver errors and timeouts are never cached.
//! - An invalidation (a revocation through a store of this crate) removes the key's entries and
//!   detaches any resolver call in flight for it: that call's answer, read before the
//!   revocation, is not cached, and later requests start a fresh call. So the next request after
//!   a revocation is refused even when a call that began before it ends after it.
//!
//! Coalescing is done here rather than with moka's `get_with` because an invalidation has to be
//! atomic with respect to the insertion of an in-flight answer; both happen under one lock.

mod front;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use self::front::Front;
use crate::clock::Clock;
use crate::invalidation::Invalidate;
use crate::key::{Environment, KeyDigest};
use crate::limit::rules::{KeyRate, RateRules};
use crate::limit::AllowedNetworks;
use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};
use crate::scope::ScopeSet;
use crate::usage::tally::{CountedKey, KeyUsage, Tally};

/// What the resolver said about a key it found, as the cache keeps it, and what the layer
/// counted of its use since the last usage flush.
///
/// Revoked and expired keys are kept too, so that the next request is refused with no lookup;
/// the layer checks both on every request.
pub(crate) struct CachedKey {
    pub(crate) id: KeyId,
    pub(crate) name: Box<str>,
    pub(crate) owner: Box<str>,
    pub(crate) environment: Environment,
    pub(crate) scopes: ScopeSet,
    pub(crate) expires_at: Option<SystemTime>,
    /// Whether the key was revoked when it was looked up.
    pub(crate) revoked: bool,
    /// When the lookup that found it started: the answer is served at most `ttl` after.
    pub(crate) looked_up_at: Instant,
    /// Requests counted since the last flush; handed to the tally when the entry is dropped.
    pub(crate) usage: KeyUsage,
    /// The networks the key may be used from, if it is limited to some.
    pub(crate) networks: Option<AllowedNetworks>,
    /// The rates that hold the key and their buckets, if any holds it.
    pub(crate) rate: Option<Box<KeyRate>>,
}

impl CachedKey {
    pub(crate) fn new(
        record: KeyRecord,
        scopes: ScopeSet,
        looked_up_at: Instant,
        tally: Arc<Tally>,
        rules: &RateRules,
    ) -> Self {
        CachedKey {
            rate: rules.buckets_for(&record),
            usage: KeyUsage::new(tally),
            revoked: record.revoked_at.is_some(),
            id: record.id,
            name: record.name.into_boxed_str(),
            owner: record.owner.into_boxed_str(),
            environment: record.environment,
            scopes,
            expires_at: record.expires_at,
            looked_up_at,
            networks: record.limits.networks,
        }
    }
}

impl CountedKey for CachedKey {
    fn key_id(&self) -> &KeyId {
        &self.id
    }

    fn usage(&self) -> &KeyUsage {
        &self.usage
    }
}

impl Drop for CachedKey {
    fn drop(&mut self) {
        // Counts that no flush took yet go to the tally, for the next one.
        self.usage.release(&self.id);
    }
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("environment", &self.environment)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("looked_up_at", &self.looked_up_at)
            .finish_non_exhaustive()
    }
}

/// What is known about a digest.
#[derive(Clone)]
pub(crate) enum Lookup {
    Found(Arc<CachedKey>),
    Unknown,
}

pub(crate) type Outcome = Result<Lookup, ResolveError>;

/// A resolver call that one or more requests are waiting for.
pub(crate) type PendingLookup = Shared<BoxFuture<'static, Outcome>>;

/// Sizes and lifetimes of the caches, and the resolver's time limit.
#[derive(Clone, Debug)]
pub(crate) struct CacheSettings {
    pub(crate) ttl: Duration,
    pub(crate) capacity: u64,
    pub(crate) negative_ttl: Duration,
    pub(crate) negative_capacity: u64,
    pub(crate) resolver_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(30),
            capacity: 100_000,
            negative_ttl: Duration::from_secs(5),
            negative_capacity: 10_000,
            resolver_timeout: Duration::from_secs(3),
        }
    }
}

/// A snapshot of a layer's cache, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Keys the resolver found (valid, revoked or expired) that are cached.
    pub entries: u64,
    /// Digests the resolver did not know that are cached.
    pub negative_entries: u64,
    /// Resolver calls in flight.
    pub in_flight: u64,
    /// Resolver calls started since the layer was built.
    pub resolver_calls: u64,
}

pub(crate) struct KeyCache {
    resolver: Arc<dyn KeyResolver>,
    positive: moka::sync::Cache<Slot, Arc<CachedKey>, SlotHasher>,
    /// Unknown digests, with when the lookup that did not find them started.
    negative: moka::sync::Cache<Slot, Instant, SlotHasher>,
    /// Resolver calls in flight, by digest. Also the lock that orders insertions after
    /// invalidations.
    flights: Mutex<HashMap<Slot, Flight>>,
    next_flight: AtomicU64,
    ttl: Duration,
    negative_ttl: Duration,
    resolver_timeout: Duration,
    /// Distinct scope sets seen, to share among cached keys.
    scope_sets: Mutex<HashSet<ScopeSet>>,
    front: Front,
    /// Where found keys count their use, and the resolver's metrics go.
    tally: Arc<Tally>,
    /// Which rates hold which keys; found keys take their buckets from it.
    rules: Arc<RateRules>,
}

/// How many distinct scope sets a cache shares at most.
const MAX_SHARED_SCOPE_SETS: usize = 4_096;

/// The caches' hasher: fast, and seeded at random per process, so that nobody outside can grind
/// keys whose digests crowd one bucket.
type SlotHasher = foldhash::fast::RandomState;

/// A digest as the caches' key.
///
/// Equality is plain, not constant-time, and the hash reads 8 of the 32 bytes: a digest is
/// SHA-256 of a key, not a secret, so the time a table probe takes reveals nothing about any key,
/// and its bytes are uniformly spread already. (The public [`KeyDigest`] compares in constant
/// time for callers who compare digests of their own.)
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot([u64; 4]);

impl Slot {
    fn of(digest: &KeyDigest) -> Self {
        // Held as words, so that comparing two slots is four comparisons rather than a call.
        let mut words = [0u64; 4];
        for (word, bytes) in words.iter_mut().zip(digest.as_bytes().chunks_exact(8)) {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(bytes);
            *word = u64::from_ne_bytes(chunk);
        }
        Slot(words)
    }
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

struct Flight {
    id: u64,
    /// When the resolver call started.
    started: Instant,
    pending: PendingLookup,
}

/// How long is left of `life` for an answer whose lookup started at `looked_up_at`.
fn remaining(life: Duration, looked_up_at: Instant) -> Duration {
    life.saturating_sub(looked_up_at.elapsed())
}

/// Keeps a found key no longer than `ttl` after its lookup started, nor past its expiry.
struct PositiveExpiry {
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl PositiveExpiry {
    fn lifetime(&self, key: &CachedKey) -> Duration {
        let left = remaining(self.ttl, key.looked_up_at);
        let until_expiry = key
            .expires_at
            .and_then(|at| at.duration_since(self.clock.now()).ok());
        match until_expiry {
            // Not expired yet: never cache past the expiry.
            Some(until_expiry) => until_expiry.min(left),
            // Expired already, or never expires: the verdict holds for the rest of the ttl.
            None => left,
        }
    }
}

impl moka::Expiry<Slot, Arc<CachedKey>> for PositiveExpiry {
    fn expire_after_create(
        &self,
        _key: &Slot,
        value: &Arc<CachedKey>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _key: &Slot,
        value: &Arc<CachedKey>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }
}

/// Keeps an unknown digest no longer than `negative_ttl` after its lookup started.
struct NegativeExpiry {
    negative_ttl: Duration,
}

impl moka::Expiry<Slot, Instant> for NegativeExpiry {
    fn expire_after_create(
        &self,
        _key: &Slot,
        looked_up_at: &Instant,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(remaining(self.negative_ttl, *looked_up_at))
    }

    fn expire_after_update(
        &self,
        _key: &Slot,
        looked_up_at: &Instant,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(self.negative_ttl, *looked_up_at))
    }
}

impl KeyCache {
    pub(crate) fn new(
        resolver: Arc<dyn KeyResolver>,
        clock: Arc<dyn Clock>,
        settings: &CacheSettings,
        tally: Arc<Tally>,
        rules: Arc<RateRules>,
    ) -> Self {
        KeyCache {
            tally,
            rules,
            positive: moka::sync::Cache::builder()
                .max_capacity(settings.capacity)
                .expire_after(PositiveExpiry {
                    ttl: settings.ttl,
                    clock,
                })
                .build_with_hasher(SlotHasher::default()),
            negative: moka::sync::Cache::builder()
                .max_capacity(settings.negative_capacity)
                .expire_after(NegativeExpiry {
                    negative_ttl: settings.negative_ttl,
                })
                .build_with_hasher(SlotHasher::default()),
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            scope_sets: Mutex::new(HashSet::new()),
            front: Front::new(settings.ttl, settings.negative_ttl),
            ttl: settings.ttl,
            negative_ttl: settings.negative_ttl,
            resolver_timeout: settings.resolver_timeout,
            resolver,
        }
    }

    fn cached(&self, slot: &Slot) -> Option<Lookup> {
        // Read before moka: an invalidation that moka's answer predates has bumped it since.
        let epoch = self.front.epoch();
        if let Some(found) = self.front.get(slot, epoch) {
            return Some(found);
        }
        if let Some(key) = self.positive.get(slot) {
            let looked_up_at = key.looked_up_at;
            self.front
                .put(*slot, Lookup::Found(key.clone()), looked_up_at, epoch);
            return Some(Lookup::Found(key));
        }
        if let Some(looked_up_at) = self.negative.get(slot) {
            self.front.put(*slot, Lookup::Unknown, looked_up_at, epoch);
            return Some(Lookup::Unknown);
        }
        None
    }

    /// The cached answer for `digest`, or the resolver call to wait for.
    ///
    /// Needs a Tokio runtime: a miss spawns the resolver call as a task.
    pub(crate) fn lookup(self: &Arc<Self>, digest: KeyDigest) -> Result<Lookup, PendingLookup> {
        let slot = Slot::of(&digest);
        if let Some(found) = self.cached(&slot) {
            return Ok(found);
        }
        let mut flights = self.lock_flights();
        // A call may have finished between the look above and taking the lock.
        if let Some(found) = self.cached(&slot) {
            return Ok(found);
        }
        if let Some(flight) = flights.get(&slot) {
            // Join it only while its answer could still be served; an older call is left to the
            // requests already waiting, and its answer will not be cached.
            if flight.started.elapsed() < self.ttl.min(self.negative_ttl) {
                return Err(flight.pending.clone());
            }
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let task = tokio::spawn(Arc::clone(self).resolve(digest, id, started));
        // Weak: the flight map holds this future, which must not keep the cache alive.
        let cache = Arc::downgrade(self);
        let pending = async move {
            match task.await {
                Ok(outcome) => outcome,
                // The task catches resolver panics itself, so it was cancelled: the runtime that
                // ran it shut down first. Forget the call, or every later request for this key
                // would join it and fail.
                Err(_) => {
                    if let Some(cache) = cache.upgrade() {
                        cache.forget_flight(&digest, id);
                    }
                    Err(ResolveError::cancelled())
                }
            }
        }
        .boxed()
        .shared();
        flights.insert(
            slot,
            Flight {
                id,
                started,
                pending: pending.clone(),
            },
        );
        Err(pending)
    }

    async fn resolve(self: Arc<Self>, digest: KeyDigest, id: u64, started: Instant) -> Outcome {
        let call = tokio::time::timeout(self.resolver_timeout, self.resolver.resolve(&digest));
        // A panicking resolver must not skip the bookkeeping below, or the key would stay
        // "in flight" for good.
        let metrics = &self.tally.metrics;
        let answer = match AssertUnwindSafe(call).catch_unwind().await {
            Ok(Ok(answer)) => {
                if answer.is_err() {
                    metrics.resolver_errors.increment(1);
                }
                answer
            }
            Ok(Err(_elapsed)) => {
                metrics.resolver_timeouts.increment(1);
                Err(ResolveError::timed_out(self.resolver_timeout))
            }
            Err(_panic) => {
                metrics.resolver_panics.increment(1);
                Err(ResolveError::panicked())
            }
        };
        metrics.resolver_duration.record(started.elapsed());
        let outcome = answer.map(|record| match record {
            Some(record) => {
                let scopes = self.shared_scopes(&record.scopes);
                Lookup::Found(Arc::new(CachedKey::new(
                    record,
                    scopes,
                    started,
                    self.tally.clone(),
                    &self.rules,
                )))
            }
            None => Lookup::Unknown,
        });

        let slot = Slot::of(&digest);
        let mut flights = self.lock_flights();
        if flights.get(&slot).is_some_and(|flight| flight.id == id) {
            flights.remove(&slot);
            // Not when the answer's life is over already (a resolver slower than the TTL).
            match &outcome {
                Ok(Lookup::Found(key)) if !remaining(self.ttl, started).is_zero() => {
                    self.positive.insert(slot, key.clone());
                }
                Ok(Lookup::Unknown) if !remaining(self.negative_ttl, started).is_zero() => {
                    self.negative.insert(slot, started);
                }
                _ => {}
            }
        }
        // Otherwise an invalidation detached this call while it ran, or a later request started
        // a fresh one: its answer may predate a change, so it is handed to the requests already
        // waiting and not cached.
        outcome
    }

    /// An already-held set equal to `scopes`, or `scopes` itself: keys of one deployment share a
    /// few scope sets, and each cached key then costs a pointer rather than a copy.
    fn shared_scopes(&self, scopes: &ScopeSet) -> ScopeSet {
        let mut sets = self
            .scope_sets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = sets.get(scopes) {
            return shared.clone();
        }
        // Bounded: past this many distinct sets, new ones are simply not shared.
        if sets.len() < MAX_SHARED_SCOPE_SETS {
            sets.insert(scopes.clone());
        }
        scopes.clone()
    }

    /// Removes the flight `id` for `digest`, if it is still the current one.
    fn forget_flight(&self, digest: &KeyDigest, id: u64) {
        let slot = Slot::of(digest);
        let mut flights = self.lock_flights();
        if flights.get(&slot).is_some_and(|flight| flight.id == id) {
            flights.remove(&slot);
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.positive.run_pending_tasks();
        self.negative.run_pending_tasks();
        CacheStats {
            entries: self.positive.entry_count(),
            negative_entries: self.negative.entry_count(),
            in_flight: self.lock_flights().len() as u64,
            resolver_calls: self.next_flight.load(Ordering::Relaxed),
        }
    }

    fn lock_flights(&self) -> MutexGuard<'_, HashMap<Slot, Flight>> {
        // The lock is never held across code that can panic, so poisoning cannot leave the map
        // inconsistent.
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Invalidate for KeyCache {
    fn invalidate(&self, digest: &KeyDigest) {
        let slot = Slot::of(digest);
        let mut flights = self.lock_flights();
        flights.remove(&slot);
        self.positive.invalidate(&slot);
        self.negative.invalidate(&slot);
        self.front.clear();
    }

    fn invalidate_all(&self) {
        let mut flights = self.lock_flights();
        flights.clear();
        self.positive.invalidate_all();
        self.negative.invalidate_all();
        self.front.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::scope::Scope;

    fn cache() -> KeyCache {
        let resolver = |_: KeyDigest| async { Ok::<Option<KeyRecord>, ResolveError>(None) };
        KeyCache::new(
            Arc::new(resolver),
            Arc::new(SystemClock),
            &CacheSettings::default(),
            Arc::new(Tally::new(
                Arc::new(SystemClock),
                true,
                false,
                crate::metrics::LayerMetrics::noop(),
            )),
            Arc::new(RateRules::default()),
        )
    }

    fn set(names: &[String]) -> ScopeSet {
        names
            .iter()
            .map(|n| Scope::new(n.clone()).unwrap())
            .collect()
    }

    #[test]
    fn table_hashes_are_seeded_at_random() {
        use std::hash::BuildHasher;
        let slot = Slot([7; 4]);
        let hashes: HashSet<u64> = (0..8)
            .map(|_| SlotHasher::default().hash_one(slot))
            .collect();
        assert!(
            hashes.len() > 1,
            "every hasher gave the same hash: not seeded"
        );
    }

    #[test]
    fn equal_scope_sets_are_shared_up_to_a_bound() {
        let cache = cache();
        let names = vec!["a:read".to_owned(), "b:write".to_owned()];
        let first = cache.shared_scopes(&set(&names));
        let second = cache.shared_scopes(&set(&names));
        assert!(
            Arc::ptr_eq(&first.0, &second.0),
            "equal sets share one allocation"
        );

        for i in 0..MAX_SHARED_SCOPE_SETS + 10 {
            cache.shared_scopes(&set(&[format!("r{i}:read")]));
        }
        assert_eq!(
            cache.scope_sets.lock().unwrap().len(),
            MAX_SHARED_SCOPE_SETS
        );
        let fresh = set(&["late:read".to_owned()]);
        let returned = cache.shared_scopes(&fresh);
        assert!(
            Arc::ptr_eq(&returned.0, &fresh.0),
            "past the bound, sets are not kept"
        );
    }
}
