//! The counting on the request path: in memory, with no await, no I/O, and no lock on a hit.
//!
//! # Where the counts live
//!
//! - **Let through** (the common case): in the key's cache entry ([`KeyUsage`], 24 bytes), one
//!   atomic counter per day parity. A request adds one to the counter of its day's parity; the
//!   entry was reached through the cache anyway, and its reference count is already written by
//!   every request that uses it, so counting adds no new memory that cores must share, and no
//!   lookup.
//! - **Refused** (revoked, expired, insufficient scope): per thread shard, a small map from key
//!   and day to counts behind a lock that only that shard's threads and the flusher take.
//! - **Key not known** (missing, malformed, unknown): per thread shard, atomic counters by day
//!   parity and outcome. Never per digest.
//!
//! A key's last use is the time of the flush that took its counts (let through, or refused by a
//! route's scope): accurate to the flush interval, at no cost on the request path.
//!
//! # Invariants
//!
//! 1. **No count is lost between a request and a flush.** The request whose addition finds its
//!    counter at zero registers the entry for the next flush; the flusher takes a counter by
//!    swapping it with zero. So after every take, the next addition to that counter registers
//!    the entry again, and every addition is followed, in the counter's order of changes, by a
//!    take that a registration made after it (or after an earlier addition since the last take)
//!    leads to. An entry is registered at most twice (once per parity) per flush period.
//! 2. **No count is lost with its entry.** The registry holds weak references, so it never
//!    keeps an evicted entry alive; when an entry is dropped with counts in it, its `Drop` hands
//!    them to a shard ([`KeyUsage::release`]), where the next flush finds them.
//! 3. **A flush never races a day change.** Counts are kept per day *parity*: a request made on
//!    day `d` adds to slot `d % 2`. The flusher reads the day only *after* it has taken the
//!    counters, so every count it took was made on that day or the one before, and the
//!    slot's parity says which. (A count older than the day before would need a flusher that
//!    did not run for a whole day.)
//! 4. **Time costs almost nothing.** With the system clock, a request reads the kernel's coarse
//!    monotonic clock (a few nanoseconds, no system call) and adds an offset to the wall clock
//!    that the flusher sets again at every flush; a layer with another [`Clock`] (tests) asks it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{AnonymousOutcome, Day, KeyOutcome, OutcomeCounts};
use crate::clock::Clock;
use crate::key::Environment;
use crate::metrics::{LayerMetrics, RequestOutcome};
use crate::resolver::KeyId;

/// What a cached key counts of its own use. Lives in the cache entry.
pub(crate) struct KeyUsage {
    /// Requests let through, by the parity of their day.
    allowed: [AtomicU64; 2],
    tally: Arc<Tally>,
}

impl KeyUsage {
    pub(crate) fn new(tally: Arc<Tally>) -> Self {
        KeyUsage {
            allowed: [AtomicU64::new(0), AtomicU64::new(0)],
            tally,
        }
    }

    /// The layer's tally this entry counts into.
    pub(crate) fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Hands whatever the entry counted and no flush took to its tally. For the entry's `Drop`.
    pub(crate) fn release(&self, id: &KeyId) {
        let allowed = [
            self.allowed[0].swap(0, Ordering::SeqCst),
            self.allowed[1].swap(0, Ordering::SeqCst),
        ];
        if allowed != [0, 0] {
            self.tally.release(id, allowed);
        }
    }
}

/// A cache entry that counts its use: the key's id and its [`KeyUsage`].
pub(crate) trait CountedKey: Send + Sync + 'static {
    fn key_id(&self) -> &KeyId;
    fn usage(&self) -> &KeyUsage;
}

/// Where a layer's requests are counted until the next flush. See the [module docs](self).
pub(crate) struct Tally {
    /// Whether counts are kept at all (metrics are reported either way).
    recording: AtomicBool,
    time: TimeSource,
    /// Entries with counts since the last flush (weak: an evicted entry hands its counts over
    /// when dropped).
    registry: Mutex<Vec<Weak<dyn CountedKey>>>,
    shards: Box<[Shard]>,
    pub(crate) metrics: LayerMetrics,
}

/// One shard of the per-thread counts, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    /// Requests whose key is not known, by day parity and outcome.
    anonymous: [[AtomicU64; 3]; 2],
    keys: Mutex<ShardKeys>,
}

#[derive(Default)]
struct ShardKeys {
    /// Refusals of known keys, and the counts of entries dropped before a flush took them.
    counts: HashMap<(KeyId, Day), OutcomeCounts>,
}

/// What a flush takes from a [`Tally`]; kept by the flusher between flushes, so that its maps
/// keep their room.
#[derive(Default)]
pub(crate) struct Taken {
    pub(crate) keys: HashMap<(KeyId, Day), OutcomeCounts>,
    pub(crate) anonymous: HashMap<(Day, AnonymousOutcome), u64>,
    /// Seconds since the epoch.
    pub(crate) last_used: HashMap<KeyId, u32>,
    /// The registry's spare list, swapped with the live one at each flush.
    spare: Vec<Weak<dyn CountedKey>>,
}

impl Taken {
    fn add_key(&mut self, id: &KeyId, day: Day, outcome: KeyOutcome, count: u64) {
        if count > 0 {
            self.keys
                .entry((id.clone(), day))
                .or_default()
                .add(outcome, count);
        }
    }
}

/// The day of each parity, seen from `today`: today's, or the day before.
fn day_of_parity(today: Day, parity: usize) -> Day {
    if parity == parity_of(today) {
        today
    } else {
        today.add_days(-1)
    }
}

fn parity_of(day: Day) -> usize {
    (day.days_since_epoch() & 1) as usize
}

const ANONYMOUS: [AnonymousOutcome; 3] = [
    AnonymousOutcome::Missing,
    AnonymousOutcome::Malformed,
    AnonymousOutcome::Unknown,
];

const fn anonymous_index(outcome: AnonymousOutcome) -> usize {
    match outcome {
        AnonymousOutcome::Missing => 0,
        AnonymousOutcome::Malformed => 1,
        AnonymousOutcome::Unknown => 2,
    }
}

impl Tally {
    /// A tally reading the time from `clock` (`system` when it is the system clock), counting
    /// when `recording`, reporting to `metrics`.
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        system: bool,
        recording: bool,
        metrics: LayerMetrics,
    ) -> Self {
        let shards = std::thread::available_parallelism()
            .map_or(4, usize::from)
            .next_power_of_two()
            .clamp(1, 256);
        Tally {
            recording: AtomicBool::new(recording),
            time: if system {
                TimeSource::system()
            } else {
                TimeSource::Clock(clock)
            },
            registry: Mutex::new(Vec::new()),
            shards: (0..shards)
                .map(|_| Shard {
                    anonymous: Default::default(),
                    keys: Mutex::new(ShardKeys::default()),
                })
                .collect(),
            metrics,
        }
    }

    /// Whether counts are kept.
    pub(crate) fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// Stops keeping counts (metrics go on).
    pub(crate) fn stop_recording(&self) {
        self.recording.store(false, Ordering::Relaxed);
    }

    /// Counts a request of the key `key` with `outcome`.
    #[inline]
    pub(crate) fn count_key<K: CountedKey>(
        &self,
        key: &Arc<K>,
        outcome: KeyOutcome,
        environment: Environment,
    ) {
        self.metrics
            .request(RequestOutcome::Key(outcome), Some(environment));
        if !self.is_recording() {
            return;
        }
        let day = self.time.day();
        if outcome == KeyOutcome::Allowed {
            let counter = &key.usage().allowed[parity_of(day)];
            // The first addition since the last take registers the entry: see invariant 1.
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                self.register(key);
            }
        } else {
            lock(&self.shard().keys)
                .counts
                .entry((key.key_id().clone(), day))
                .or_default()
                .add(outcome, 1);
        }
    }

    #[cold]
    fn register<K: CountedKey>(&self, key: &Arc<K>) {
        let weak: Weak<K> = Arc::downgrade(key);
        lock(&self.registry).push(weak as Weak<dyn CountedKey>);
    }

    /// Counts a request whose key is not known (of `environment`, when its prefix said).
    #[inline]
    pub(crate) fn count_anonymous(
        &self,
        outcome: AnonymousOutcome,
        environment: Option<Environment>,
    ) {
        self.metrics
            .request(RequestOutcome::Anonymous(outcome), environment);
        if !self.is_recording() {
            return;
        }
        let day = self.time.day();
        self.shard().anonymous[parity_of(day)][anonymous_index(outcome)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts of an entry being dropped (see [`KeyUsage::release`]).
    fn release(&self, id: &KeyId, allowed: [u64; 2]) {
        // After the counters were taken: see invariant 3.
        let today = self.time.day();
        let mut keys = lock(&self.shard().keys);
        for (parity, count) in allowed.into_iter().enumerate() {
            if count > 0 {
                keys.counts
                    .entry((id.clone(), day_of_parity(today, parity)))
                    .or_default()
                    .add(KeyOutcome::Allowed, count);
            }
        }
    }

    /// Moves every count into `into`, which the caller has emptied; returns the time the
    /// counts were taken at.
    pub(crate) fn take(&self, into: &mut Taken) -> SystemTime {
        self.time.refresh();
        // Swapped with the spare list, so that both keep their room.
        std::mem::swap(&mut *lock(&self.registry), &mut into.spare);
        let mut entries = std::mem::take(&mut into.spare);
        let mut allowed = Vec::with_capacity(entries.len());
        for weak in entries.drain(..) {
            // An entry that is gone handed its counts to a shard as it went.
            let Some(key) = weak.upgrade() else { continue };
            let usage = key.usage();
            let counts = [
                usage.allowed[0].swap(0, Ordering::SeqCst),
                usage.allowed[1].swap(0, Ordering::SeqCst),
            ];
            if counts != [0, 0] {
                allowed.push((key.key_id().clone(), counts));
            }
            // Dropping the last reference here hands any later count to a shard: not under a
            // shard's lock.
            drop(key);
        }
        into.spare = entries;
        let mut anonymous = [[0u64; 3]; 2];
        for shard in self.shards.iter() {
            for (parity, counters) in shard.anonymous.iter().enumerate() {
                for (index, counter) in counters.iter().enumerate() {
                    anonymous[parity][index] += counter.swap(0, Ordering::Relaxed);
                }
            }
        }
        // Only now, after every counter was taken: see invariant 3.
        let now = self.time.now();
        for (id, counts) in allowed {
            for (parity, count) in counts.into_iter().enumerate() {
                into.add_key(
                    &id,
                    day_of_parity(now.day, parity),
                    KeyOutcome::Allowed,
                    count,
                );
            }
        }
        for (parity, counts) in anonymous.into_iter().enumerate() {
            for (index, count) in counts.into_iter().enumerate() {
                if count > 0 {
                    *into
                        .anonymous
                        .entry((day_of_parity(now.day, parity), ANONYMOUS[index]))
                        .or_default() += count;
                }
            }
        }
        for shard in self.shards.iter() {
            let mut keys = lock(&shard.keys);
            for ((id, day), counts) in keys.counts.drain() {
                into.keys.entry((id, day)).or_default().add_all(&counts);
            }
        }
        // Keys used since the last flush (let through, or refused only by a route's scope)
        // were last used now, to within the flush interval.
        for ((id, _), counts) in &into.keys {
            if counts.allowed > 0 || counts.insufficient_scope > 0 {
                into.last_used.insert(id.clone(), now.second);
            }
        }
        now.at
    }

    /// The time, as the tally reads it.
    pub(crate) fn now(&self) -> SystemTime {
        self.time.now().at
    }

    fn shard(&self) -> &Shard {
        &self.shards[thread_shard() & (self.shards.len() - 1)]
    }
}

/// Locks `mutex`, which no code holding it panics under.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The calling thread's shard number (before masking): threads take numbers in turn.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD
        .try_with(|shard| {
            let mut number = shard.get();
            if number == usize::MAX {
                number = NEXT.fetch_add(1, Ordering::Relaxed);
                shard.set(number);
            }
            number
        })
        .unwrap_or(0)
}

/// A request's time: its second since the epoch and its UTC day.
#[derive(Clone, Copy)]
struct Stamp {
    second: u32,
    day: Day,
    at: SystemTime,
}

impl Stamp {
    fn of(at: SystemTime) -> Stamp {
        let second = at.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u32::try_from(since.as_secs()).unwrap_or(u32::MAX)
        });
        Stamp {
            second,
            day: Day::of(at),
            at,
        }
    }
}

/// Where a tally reads the time.
enum TimeSource {
    /// The system clock, read as the coarse monotonic clock plus an offset.
    System {
        start: coarsetime::Instant,
        /// The wall clock at `start`, in `coarsetime`'s ticks since the epoch, as the latest
        /// reading of the wall clock puts it.
        epoch_ticks_at_start: AtomicU64,
    },
    Clock(Arc<dyn Clock>),
}

impl TimeSource {
    fn system() -> Self {
        let source = TimeSource::System {
            start: coarsetime::Instant::now_without_cache_update(),
            epoch_ticks_at_start: AtomicU64::new(0),
        };
        source.refresh();
        source
    }

    /// Ticks since the epoch now, by the coarse clock.
    #[inline]
    fn system_ticks(start: &coarsetime::Instant, epoch_ticks_at_start: &AtomicU64) -> u64 {
        let elapsed = coarsetime::Instant::now_without_cache_update()
            .duration_since(*start)
            .as_ticks();
        epoch_ticks_at_start
            .load(Ordering::Relaxed)
            .saturating_add(elapsed)
    }

    /// Today: on the request path, so only a clock read, an addition and a division.
    #[inline]
    fn day(&self) -> Day {
        match self {
            TimeSource::System {
                start,
                epoch_ticks_at_start,
            } => {
                let seconds = coarsetime::Duration::from_ticks(Self::system_ticks(
                    start,
                    epoch_ticks_at_start,
                ))
                .as_secs();
                Day::from_days_since_epoch(i32::try_from(seconds / 86_400).unwrap_or(i32::MAX))
            }
            TimeSource::Clock(clock) => Day::of(clock.now()),
        }
    }

    /// The time, for the flusher.
    fn now(&self) -> Stamp {
        match self {
            TimeSource::System {
                start,
                epoch_ticks_at_start,
            } => {
                let ticks = coarsetime::Duration::from_ticks(Self::system_ticks(
                    start,
                    epoch_ticks_at_start,
                ));
                Stamp::of(UNIX_EPOCH + Duration::from(ticks))
            }
            TimeSource::Clock(clock) => Stamp::of(clock.now()),
        }
    }

    /// Sets the offset between the monotonic clock and the wall clock again.
    fn refresh(&self) {
        if let TimeSource::System {
            start,
            epoch_ticks_at_start,
        } = self
        {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| coarsetime::Duration::from(since).as_ticks());
            let elapsed = coarsetime::Instant::now_without_cache_update()
                .duration_since(*start)
                .as_ticks();
            epoch_ticks_at_start.store(wall.saturating_sub(elapsed), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    struct Entry {
        id: KeyId,
        usage: KeyUsage,
    }

    impl CountedKey for Entry {
        fn key_id(&self) -> &KeyId {
            &self.id
        }
        fn usage(&self) -> &KeyUsage {
            &self.usage
        }
    }

    impl Drop for Entry {
        fn drop(&mut self) {
            self.usage.release(&self.id);
        }
    }

    fn tally(clock: &ManualClock) -> Arc<Tally> {
        Arc::new(Tally::new(
            Arc::new(clock.clone()),
            false,
            true,
            LayerMetrics::noop(),
        ))
    }

    fn entry(tally: &Arc<Tally>, id: &str) -> Arc<Entry> {
        Arc::new(Entry {
            id: id.into(),
            usage: KeyUsage::new(tally.clone()),
        })
    }

    const NOON: u64 = 20_000 * 86_400 + 43_200;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn counts_split_at_midnight_by_the_day_they_were_made_on() {
        let clock = ManualClock::new(at(NOON + 43_199)); // 23:59:59
        let tally = tally(&clock);
        let key = entry(&tally, "key_1");
        for _ in 0..3 {
            tally.count_key(&key, KeyOutcome::Allowed, Environment::Live);
        }
        tally.count_anonymous(AnonymousOutcome::Unknown, Some(Environment::Live));
        clock.advance(Duration::from_secs(2)); // the next day
        tally.count_key(&key, KeyOutcome::Allowed, Environment::Live);
        tally.count_key(&key, KeyOutcome::Revoked, Environment::Live);
        tally.count_anonymous(AnonymousOutcome::Unknown, None);

        clock.advance(Duration::from_secs(5));
        let mut taken = Taken::default();
        tally.take(&mut taken);
        let day = Day::of(at(NOON));
        let id: KeyId = "key_1".into();
        assert_eq!(taken.keys[&(id.clone(), day)].allowed, 3);
        let next = taken.keys[&(id.clone(), day.add_days(1))];
        assert_eq!((next.allowed, next.revoked), (1, 1));
        assert_eq!(taken.anonymous[&(day, AnonymousOutcome::Unknown)], 1);
        assert_eq!(
            taken.anonymous[&(day.add_days(1), AnonymousOutcome::Unknown)],
            1
        );
        assert_eq!(
            taken.last_used[&id],
            u32::try_from(NOON + 43_206).unwrap(),
            "used since the last flush: last used when the flush took the counts"
        );
    }

    #[test]
    fn an_entry_is_visited_once_per_flush_and_again_only_when_used_again() {
        let clock = ManualClock::new(at(NOON));
        let tally = tally(&clock);
        let key = entry(&tally, "key_1");
        for _ in 0..1_000 {
            tally.count_key(&key, KeyOutcome::Allowed, Environment::Live);
        }
        assert_eq!(lock(&tally.registry).len(), 1, "registered once");
        assert!(
            std::mem::size_of::<KeyUsage>() <= 24,
            "what each cached key carries for its counts"
        );
        let mut taken = Taken::default();
        tally.take(&mut taken);
        assert_eq!(taken.keys.values().map(|c| c.allowed).sum::<u64>(), 1_000);
        assert!(lock(&tally.registry).is_empty());

        let mut again = Taken::default();
        tally.take(&mut again);
        assert!(again.keys.is_empty(), "nothing new");
        tally.count_key(&key, KeyOutcome::Allowed, Environment::Live);
        assert_eq!(lock(&tally.registry).len(), 1, "registered again");
    }

    #[test]
    fn a_dropped_entry_hands_its_counts_over() {
        let clock = ManualClock::new(at(NOON));
        let tally = tally(&clock);
        let key = entry(&tally, "key_1");
        for _ in 0..5 {
            tally.count_key(&key, KeyOutcome::Allowed, Environment::Test);
        }
        drop(key);
        let mut taken = Taken::default();
        tally.take(&mut taken);
        let id: KeyId = "key_1".into();
        assert_eq!(taken.keys[&(id.clone(), Day::of(at(NOON)))].allowed, 5);
        assert_eq!(taken.last_used[&id], u32::try_from(NOON).unwrap());
        // A key refused by the layer only was not used.
        let revoked = entry(&tally, "key_2");
        tally.count_key(&revoked, KeyOutcome::Revoked, Environment::Live);
        let mut taken = Taken::default();
        tally.take(&mut taken);
        assert_eq!(taken.keys.len(), 1);
        assert!(taken.last_used.is_empty());
    }

    #[test]
    fn counting_from_many_threads_loses_nothing_while_flushes_run() {
        let clock = ManualClock::new(at(NOON));
        let tally = tally(&clock);
        let keys: Vec<_> = (0..4).map(|i| entry(&tally, &format!("key_{i}"))).collect();
        let mut total = 0;
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (tally, keys) = (&tally, &keys);
                scope.spawn(move || {
                    for i in 0..25_000usize {
                        let key = &keys[(i + thread) % keys.len()];
                        tally.count_key(key, KeyOutcome::Allowed, Environment::Live);
                        if i % 100 == 0 {
                            tally.count_anonymous(AnonymousOutcome::Missing, None);
                        }
                    }
                });
            }
            let mut taken = Taken::default();
            for _ in 0..50 {
                tally.take(&mut taken);
                total += taken.keys.values().map(|c| c.allowed).sum::<u64>();
                total += taken.anonymous.values().sum::<u64>();
                taken.keys.clear();
                taken.anonymous.clear();
                std::thread::yield_now();
            }
        });
        let mut taken = Taken::default();
        tally.take(&mut taken);
        total += taken.keys.values().map(|c| c.allowed).sum::<u64>();
        total += taken.anonymous.values().sum::<u64>();
        assert_eq!(total, 100_000 + 1_000);
    }

    #[test]
    fn the_system_time_source_follows_the_wall_clock() {
        let source = TimeSource::system();
        let now = source.now();
        let wall = Stamp::of(SystemTime::now());
        assert!(
            now.second.abs_diff(wall.second) <= 1,
            "{} {}",
            now.second,
            wall.second
        );
        assert_eq!(now.day, Day::today());
    }
}
