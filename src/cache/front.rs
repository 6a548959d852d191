//! The front table: a small direct-mapped table per thread before moka, for the keys in use
//! right now, found or unknown.
//!
//! A moka read costs about as much as the rest of the layer's work together (it records the read
//! for its eviction policy and checks expiry); a hit here is a comparison, with no lock: the
//! entries live in a table per thread ([`FRONT_ENTRIES`]), shared by every cache of the process
//! and told apart by the cache's `id`. A flood of made-up keys only pushes entries out of this
//! table, back to moka.
//!
//! # Invariants
//!
//! 1. **Never past an invalidation.** Every invalidation moves the table's epoch on, which
//!    empties it on every thread at once: an entry is only used while the epoch it was read
//!    under is current, and the caller reads the epoch *before* it reads moka, so an entry can
//!    never hold an answer that an invalidation has removed from moka.
//! 2. **Never past the lookup's TTL.** An entry serves at most [`FRONT_TTL`] (then moka is asked
//!    again, so moka's eviction policy stays in charge), and never past `ttl` (or `negative_ttl`
//!    for unknown keys) counted from the moment its resolver lookup *started*: the same bound as
//!    its moka entry.
//! 3. **Never past the precise clock.** Entries are timed on the coarse monotonic clock, which
//!    lags the precise one by at most one kernel tick; each entry's life is shortened by
//!    [`COARSE_CLOCK_LAG`] so that it never serves past either bound above.
//! 4. **No lock, no shared writes on a hit.** A hit reads the calling thread's table and one
//!    shared atomic (the epoch), and writes nothing another core reads.
//! 5. **Bounded.** At most [`FRONT_SIZE`] entries per thread. An entry of a cache that was
//!    dropped stays in a thread's table, unused, until another entry takes its place or the
//!    thread ends.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Lookup, Slot};

/// One cache's view of the per-thread front table. See the [module docs](self).
pub(super) struct Front {
    /// Tells this cache's entries from other caches' in a thread's [`FRONT_ENTRIES`].
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

/// How many keys the front table holds per thread (a power of two).
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
    pub(super) fn new(ttl: Duration, negative_ttl: Duration) -> Self {
        Front {
            id: NEXT_FRONT_ID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
            ttl,
            negative_ttl,
        }
    }

    /// The current epoch: read it before reading moka, and give it to [`put`](Self::put).
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn index(slot: &Slot) -> usize {
        // The digest's bits are uniformly spread; the second word is not the one the tables hash.
        (slot.0[1] as usize) % FRONT_SIZE
    }

    /// This thread's entry for `slot`, if it is this cache's, of `epoch`, and still alive.
    pub(super) fn get(&self, slot: &Slot, epoch: u64) -> Option<Lookup> {
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

    /// Keeps `found`, read from moka under `epoch`, from a resolver lookup that started at
    /// `looked_up_at`; it is usable only while no invalidation comes.
    pub(super) fn put(&self, slot: Slot, found: Lookup, looked_up_at: Instant, epoch: u64) {
        let ttl = match found {
            Lookup::Found(_) => self.ttl,
            Lookup::Unknown => self.negative_ttl,
        };
        // Read on the coarse clock, which may lag by up to `COARSE_CLOCK_LAG`: the entry's life
        // is shortened by that much, so that it never serves past either bound.
        let remaining = looked_up_at.checked_add(ttl).map_or(FRONT_TTL, |end| {
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
        // the table is let go, in case dropping it ever runs code that comes back here.
        let replaced = FRONT_ENTRIES.try_with(|entries| {
            let mut entries = entries.try_borrow_mut().ok()?;
            if entries.is_empty() {
                entries.resize_with(FRONT_SIZE, || None);
            }
            entries[Self::index(&slot)].replace(entry)
        });
        drop(replaced);
    }

    /// Makes every entry unusable, on every thread.
    pub(super) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::CachedKey;
    use crate::clock::SystemClock;
    use crate::key::Environment;
    use crate::resolver::KeyRecord;
    use crate::scope::ScopeSet;
    use crate::usage::tally::Tally;

    fn front() -> Front {
        Front::new(Duration::from_secs(30), Duration::from_secs(5))
    }

    /// Puts a key whose lookup started `ago` into `front`.
    fn put(front: &Front, slot: Slot, ago: Duration, epoch: u64) {
        let looked_up_at = Instant::now() - ago;
        let record = KeyRecord::new("key_1", Environment::Live, ScopeSet::empty());
        let tally = Tally::new(
            Arc::new(SystemClock),
            true,
            false,
            crate::metrics::LayerMetrics::noop(),
        );
        let key = CachedKey::new(
            record,
            ScopeSet::empty(),
            looked_up_at,
            Arc::new(tally),
            &crate::limit::rules::RateRules::default(),
        );
        front.put(slot, Lookup::Found(Arc::new(key)), looked_up_at, epoch);
    }

    #[test]
    fn the_front_table_forgets_everything_on_an_invalidation() {
        let front = front();
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
        let (a, b) = (front(), front());
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
        let front = front();
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
    fn a_front_entry_never_outlives_the_cache_ttl_counted_from_its_lookup() {
        let front = front();
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
}
