//! The cache in front of the resolver.
//!
//! Two bounded [moka](https://docs.rs/moka) caches keyed by [`KeyDigest`]: one for keys the
//! resolver found (valid, revoked or expired alike: the layer checks revocation and expiry on
//! every request, hit or miss), and a separate, smaller, shorter-lived one for digests the resolver
//! did not know, so that a flood of made-up keys cannot push real keys out.
//!
//! The rules it keeps:
//!
//! - Concurrent misses for one key share one resolver call. The call runs in its own task, so a
//!   client that goes away does not cancel it for the others.
//! - An entry for a key that has not expired yet never outlives `min(ttl, expires_at - now)`.
//! - Resolver errors and timeouts are never cached.
//! - An invalidation (a revocation through a store of this crate) removes the key's entries and
//!   detaches any resolver call in flight for it: that call's answer, read before the
//!   revocation, is not cached, and later requests start a fresh call. So the next request after
//!   a revocation is refused even when a call that began before it ends after it.
//!
//! Coalescing is done here rather than with moka's `get_with` because an invalidation has to be
//! atomic with respect to the insertion of an in-flight answer; both happen under one lock.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::clock::Clock;
use crate::invalidation::Invalidate;
use crate::key::KeyDigest;
use crate::principal::Principal;
use crate::rejection::Responses;
use crate::resolver::{KeyResolver, ResolveError};
use crate::scope::ScopeSet;

/// What is known about a digest.
#[derive(Clone)]
pub(crate) enum Lookup {
    Found(Principal),
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
    responses: Arc<Responses>,
    positive: moka::sync::Cache<Slot, Principal, SlotHasher>,
    /// Unknown digests, with when the resolver said so.
    negative: moka::sync::Cache<Slot, Instant, SlotHasher>,
    /// Resolver calls in flight, by digest. Also the lock that orders insertions after
    /// invalidations.
    flights: Mutex<HashMap<Slot, Flight>>,
    next_flight: AtomicU64,
    resolver_timeout: Duration,
    /// Distinct scope sets seen, to share among cached principals.
    scope_sets: Mutex<HashSet<ScopeSet>>,
    front: Front,
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
    pending: PendingLookup,
}

/// Keeps entries for keys that expire soon no longer than their remaining lifetime.
struct PositiveExpiry {
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl PositiveExpiry {
    fn lifetime(&self, principal: &Principal) -> Duration {
        let remaining = principal
            .expires_at()
            .and_then(|at| at.duration_since(self.clock.now()).ok());
        match remaining {
            // Not expired yet: never cache past the expiry.
            Some(remaining) => remaining.min(self.ttl),
            // Expired already, or never expires: the verdict holds for the whole ttl.
            None => self.ttl,
        }
    }
}

impl moka::Expiry<Slot, Principal> for PositiveExpiry {
    fn expire_after_create(
        &self,
        _key: &Slot,
        value: &Principal,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _key: &Slot,
        value: &Principal,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }
}

impl KeyCache {
    pub(crate) fn new(
        resolver: Arc<dyn KeyResolver>,
        responses: Arc<Responses>,
        clock: Arc<dyn Clock>,
        settings: &CacheSettings,
    ) -> Self {
        KeyCache {
            positive: moka::sync::Cache::builder()
                .max_capacity(settings.capacity)
                .expire_after(PositiveExpiry {
                    ttl: settings.ttl,
                    clock,
                })
                .build_with_hasher(SlotHasher::default()),
            negative: moka::sync::Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build_with_hasher(SlotHasher::default()),
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            scope_sets: Mutex::new(HashSet::new()),
            front: Front::new(settings.ttl, settings.negative_ttl),
            resolver_timeout: settings.resolver_timeout,
            resolver,
            responses,
        }
    }

    fn cached(&self, slot: &Slot) -> Option<Lookup> {
        // Read before moka: an invalidation that moka's answer predates has bumped it since.
        let epoch = self.front.epoch();
        if let Some(found) = self.front.get(slot, epoch) {
            return Some(found);
        }
        if let Some(principal) = self.positive.get(slot) {
            self.front.put(
                *slot,
                Lookup::Found(principal.clone()),
                principal.loaded_at(),
                epoch,
            );
            return Some(Lookup::Found(principal));
        }
        if let Some(answered_at) = self.negative.get(slot) {
            self.front.put(*slot, Lookup::Unknown, answered_at, epoch);
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
            return Err(flight.pending.clone());
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(Arc::clone(self).resolve(digest, id));
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
                pending: pending.clone(),
            },
        );
        Err(pending)
    }

    async fn resolve(self: Arc<Self>, digest: KeyDigest, id: u64) -> Outcome {
        let call = tokio::time::timeout(self.resolver_timeout, self.resolver.resolve(&digest));
        // A panicking resolver must not skip the bookkeeping below, or the key would stay
        // "in flight" for good.
        let answer = match AssertUnwindSafe(call).catch_unwind().await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_elapsed)) => Err(ResolveError::timed_out(self.resolver_timeout)),
            Err(_panic) => Err(ResolveError::panicked()),
        };
        let outcome = answer.map(|record| match record {
            Some(record) => {
                let scopes = self.shared_scopes(&record.scopes);
                Lookup::Found(Principal::new(
                    record,
                    scopes,
                    self.responses.clone(),
                    Instant::now(),
                ))
            }
            None => Lookup::Unknown,
        });

        let slot = Slot::of(&digest);
        let mut flights = self.lock_flights();
        if flights.get(&slot).is_some_and(|flight| flight.id == id) {
            flights.remove(&slot);
            match &outcome {
                Ok(Lookup::Found(entry)) => self.positive.insert(slot, entry.clone()),
                Ok(Lookup::Unknown) => self.negative.insert(slot, Instant::now()),
                Err(_) => {}
            }
        }
        // Otherwise an invalidation detached this call while it ran: its answer may predate a
        // revocation, so it is handed to the requests already waiting and not cached.
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

/// A small direct-mapped table in front of moka for the keys in use right now, found or unknown.
///
/// A moka read costs about as much as the rest of the layer's work together (it records the read
/// for its eviction policy and checks expiry); a hit here is a comparison, with no lock: the
/// entries live in a table per thread ([`FRONT_ENTRIES`]), shared by every cache of the process
/// and told apart by the cache's `id`. Each entry lives at most [`FRONT_TTL`], then the key is
/// read from moka again, so moka's policy stays in charge; and never past the TTL of its moka
/// entry, counted from the resolver's answer. A flood of made-up keys only pushes entries out of
/// this table, back to moka.
///
/// Every invalidation empties the table on every thread at once by moving its epoch on: an entry
/// is only used while the epoch it was read under is current, and it was read from moka after
/// that epoch began, so no entry can hold an answer an invalidation has removed.
///
/// An entry of a cache that was dropped stays in a thread's table, unused, until another entry
/// takes its place or the thread ends: at most [`FRONT_SIZE`] principals per thread.
struct Front {
    /// Tells this table's entries from other tables' in a thread's [`FRONT_ENTRIES`].
    id: u64,
    epoch: AtomicU64,
    ttl: Duration,
    negative_ttl: Duration,
}

/// The next [`Front::id`].
static NEXT_FRONT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The entries of every front table, per thread: a hit then takes no lock and writes no
    /// memory that another core reads. Empty until the thread's first entry, then
    /// [`FRONT_SIZE`] slots.
    static FRONT_ENTRIES: RefCell<Vec<Option<FrontEntry>>> = const { RefCell::new(Vec::new()) };
}

struct FrontEntry {
    front: u64,
    slot: Slot,
    found: Lookup,
    epoch: u64,
    until: coarsetime::Instant,
}

/// How many keys the front table holds (a power of two).
const FRONT_SIZE: usize = 256;
/// How long an entry of the front table serves before moka is asked again.
const FRONT_TTL: Duration = Duration::from_secs(1);
/// How far the coarse clock may lag behind the precise one: one kernel tick, 10 ms at the
/// lowest tick rate Linux offers, with room to spare.
const COARSE_CLOCK_LAG: Duration = Duration::from_millis(20);

/// The monotonic time of the kernel's last tick (`CLOCK_MONOTONIC_COARSE` on Linux): read in a
/// few nanoseconds where a precise read takes several times as long. It is never ahead of the
/// precise clock, and behind it by one tick at most ([`COARSE_CLOCK_LAG`] allows for that).
fn coarse_now() -> coarsetime::Instant {
    // Not `now()`, which also stores the reading in a global that every core would write.
    coarsetime::Instant::now_without_cache_update()
}

impl Front {
    fn new(ttl: Duration, negative_ttl: Duration) -> Self {
        Front {
            id: NEXT_FRONT_ID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
            ttl,
            negative_ttl,
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn index(slot: &Slot) -> usize {
        // The digest's bits are uniformly spread; the second word is not the one the tables hash.
        (slot.0[1] as usize) % FRONT_SIZE
    }

    fn get(&self, slot: &Slot, epoch: u64) -> Option<Lookup> {
        FRONT_ENTRIES
            .try_with(|entries| {
                let entries = entries.try_borrow().ok()?;
                let entry = entries.get(Self::index(slot))?.as_ref()?;
                (entry.front == self.id
                    && entry.slot == *slot
                    && entry.epoch == epoch
                    && coarse_now() < entry.until)
                    .then(|| entry.found.clone())
            })
            .ok()
            .flatten()
    }

    /// Keeps `found`, read from moka under `epoch` and answered by the resolver at
    /// `answered_at`; it is usable only while no invalidation comes.
    fn put(&self, slot: Slot, found: Lookup, answered_at: Instant, epoch: u64) {
        let ttl = match found {
            Lookup::Found(_) => self.ttl,
            Lookup::Unknown => self.negative_ttl,
        };
        // Read on the coarse clock, which may lag by up to `COARSE_CLOCK_LAG`: the entry's life
        // is shortened by that much, so that it never serves past either bound.
        let remaining = answered_at.checked_add(ttl).map_or(FRONT_TTL, |end| {
            end.saturating_duration_since(Instant::now())
        });
        let life = remaining.min(FRONT_TTL).saturating_sub(COARSE_CLOCK_LAG);
        let until = coarse_now() + coarsetime::Duration::from(life);
        let entry = FrontEntry {
            front: self.id,
            slot,
            found,
            epoch,
            until,
        };
        // Not while the thread is being torn down; and the entry put out is dropped only after
        // the table is let go, since dropping the last handle on a principal runs the layer's
        // responder's `Drop`, which could come back here.
        let replaced = FRONT_ENTRIES.try_with(|entries| {
            let mut entries = entries.try_borrow_mut().ok()?;
            if entries.is_empty() {
                entries.resize_with(FRONT_SIZE, || None);
            }
            entries[Self::index(&slot)].replace(entry)
        });
        drop(replaced);
    }

    /// Makes every entry unusable.
    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::key::KeyDigest;
    use crate::resolver::KeyRecord;
    use crate::scope::Scope;

    fn cache() -> KeyCache {
        let resolver = |_: KeyDigest| async { Ok::<Option<KeyRecord>, ResolveError>(None) };
        KeyCache::new(
            Arc::new(resolver),
            test_responses(),
            Arc::new(SystemClock),
            &CacheSettings::default(),
        )
    }

    fn set(names: &[String]) -> ScopeSet {
        names
            .iter()
            .map(|n| Scope::new(n.clone()).unwrap())
            .collect()
    }

    /// Puts a principal whose lookup happened `ago` into `front`.
    fn put(front: &Front, slot: Slot, ago: Duration, epoch: u64) {
        let principal = principal(ago);
        front.put(
            slot,
            Lookup::Found(principal.clone()),
            principal.loaded_at(),
            epoch,
        );
    }

    /// A principal whose lookup happened `ttl_ago` ago.
    fn principal(ttl_ago: Duration) -> Principal {
        let record = KeyRecord::new("key_1", crate::Environment::Live, ScopeSet::empty());
        let looked_up = Instant::now() - ttl_ago;
        Principal::new(record, ScopeSet::empty(), test_responses(), looked_up)
    }

    fn test_responses() -> Arc<Responses> {
        Arc::new(Responses::new(
            Arc::new(crate::ProblemJson),
            "api",
            Duration::from_secs(1),
        ))
    }

    #[test]
    fn the_front_table_forgets_everything_on_an_invalidation() {
        let front = Front::new(Duration::from_secs(30), Duration::from_secs(5));
        let slot = Slot([1; 4]);
        let epoch = front.epoch();
        put(&front, slot, Duration::ZERO, epoch);
        assert!(front.get(&slot, front.epoch()).is_some());
        assert!(
            front.get(&Slot([2; 4]), front.epoch()).is_none(),
            "another key"
        );
        front.clear();
        assert!(front.get(&slot, front.epoch()).is_none());
        // An answer read from moka before the invalidation is not kept usable after it.
        put(&front, slot, Duration::ZERO, epoch);
        assert!(front.get(&slot, front.epoch()).is_none());
    }

    #[test]
    fn front_tables_share_a_threads_slots_without_mixing_their_entries() {
        let (a, b) = (
            Front::new(Duration::from_secs(30), Duration::from_secs(5)),
            Front::new(Duration::from_secs(30), Duration::from_secs(5)),
        );
        let slot = Slot([4; 4]);
        put(&a, slot, Duration::ZERO, a.epoch());
        assert!(a.get(&slot, a.epoch()).is_some());
        assert!(b.get(&slot, b.epoch()).is_none(), "another cache's entry");
        // Same digest, same slot of the thread's table: `b`'s entry takes `a`'s place.
        put(&b, slot, Duration::ZERO, b.epoch());
        assert!(b.get(&slot, b.epoch()).is_some());
        assert!(a.get(&slot, a.epoch()).is_none());
    }

    #[test]
    fn front_entries_are_per_thread_and_invalidations_reach_every_thread() {
        let front = Front::new(Duration::from_secs(30), Duration::from_secs(5));
        let slot = Slot([5; 4]);
        put(&front, slot, Duration::ZERO, front.epoch());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert!(
                    front.get(&slot, front.epoch()).is_none(),
                    "not this thread's"
                );
                put(&front, slot, Duration::ZERO, front.epoch());
                assert!(front.get(&slot, front.epoch()).is_some());
            });
        });
        assert!(front.get(&slot, front.epoch()).is_some());
        // An invalidation on this thread empties the other thread's table too.
        std::thread::scope(|scope| {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (cleared_tx, cleared_rx) = std::sync::mpsc::channel::<()>();
            let front = &front;
            scope.spawn(move || {
                put(front, slot, Duration::ZERO, front.epoch());
                assert!(front.get(&slot, front.epoch()).is_some());
                ready_tx.send(()).unwrap();
                cleared_rx.recv().unwrap();
                assert!(front.get(&slot, front.epoch()).is_none());
            });
            ready_rx.recv().unwrap();
            front.clear();
            cleared_tx.send(()).unwrap();
        });
        assert!(front.get(&slot, front.epoch()).is_none());
    }

    #[test]
    fn a_front_entry_never_outlives_the_cache_ttl_of_its_lookup() {
        let front = Front::new(Duration::from_secs(30), Duration::from_secs(5));
        let slot = Slot([3; 4]);
        put(&front, slot, Duration::from_secs(31), front.epoch());
        assert!(front.get(&slot, front.epoch()).is_none());
        put(&front, slot, Duration::from_secs(29), front.epoch());
        assert!(front.get(&slot, front.epoch()).is_some());
        // Within the coarse clock's possible lag of the end: not served at all.
        put(&front, slot, Duration::from_millis(29_990), front.epoch());
        assert!(front.get(&slot, front.epoch()).is_none());
        // Unknown digests follow the negative TTL.
        let now = Instant::now();
        front.put(
            slot,
            Lookup::Unknown,
            now - Duration::from_secs(6),
            front.epoch(),
        );
        assert!(front.get(&slot, front.epoch()).is_none());
        front.put(
            slot,
            Lookup::Unknown,
            now - Duration::from_secs(4),
            front.epoch(),
        );
        assert!(matches!(
            front.get(&slot, front.epoch()),
            Some(Lookup::Unknown)
        ));
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
