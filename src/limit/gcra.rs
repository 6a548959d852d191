//! The generic cell rate algorithm (GCRA) in one atomic word per bucket, and what a check
//! decides: [`RateDecision`].
//!
//! A bucket remembers one instant, its *theoretical arrival time* (TAT): when the next request
//! would be due if every request so far had come exactly at the sustained rate. With `T` the
//! [interval](RateLimit::interval) and `τ` the [tolerance](RateLimit::tolerance) (`T × (burst −
//! 1)`), a request at `now` is let through when `now ≥ max(TAT, now) − τ`, and then moves the
//! TAT to `max(TAT, now) + T`; a refused request changes nothing. So:
//!
//! - **The bound.** In any window `[t, t + w]`, at most `burst + ⌊w / T⌋` requests go through:
//!   the first moves the TAT to at least `t + T`, each one after it by `T` more, and the `n`-th
//!   needs `t + w ≥ TAT − τ ≥ t + (n − 1)·T − (burst − 1)·T`. (`T` is `period / requests`
//!   rounded down to a nanosecond, so the rate may be a hair faster than written, never slower.)
//! - **The sustained rate never waits.** Requests every `T` are always let through.
//! - **`retry_after` is exact.** A refused request may come back after exactly `retry_after`
//!   (`TAT − τ − now`) and not a nanosecond earlier, if nothing else came in between.
//! - **`reset`** is `TAT − now`: after it, the bucket holds its whole burst again.
//!
//! The layer checks a key's bucket and, when the key has an owner with a limit of its own, the
//! owner's: a request goes through only when both let it, and one refused by either takes
//! nothing from the other. The `RedisLimiter` (feature `redis`) runs the
//! same arithmetic in Redis, so that several instances share the buckets.
//!
//! ```
//! use std::time::Duration;
//! use tower_api_key::{RateDecision, RateLimit};
//!
//! let rate: RateLimit = "10/s burst 2".parse()?;
//! assert_eq!(rate.interval(), Duration::from_millis(100));
//! assert_eq!(rate.tolerance(), Duration::from_millis(100));
//! # fn show(decision: RateDecision) -> Option<Duration> {
//! // What the layer makes of a decision: `Retry-After` when refused.
//! (!decision.allowed).then_some(decision.retry_after)
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The layer reaches the cells through `crate::limit`; until it does, they are used by tests,
// benchmarks and the Redis limiter's fallback only.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::RateLimit;
use crate::resolver::KeyId;

/// What a rate check decided, and what the layer tells the client about the bucket
/// (`Retry-After`, and the `RateLimit` header's remaining requests and reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateDecision {
    /// Whether the request may go through.
    pub allowed: bool,
    /// The limit that decided: the one that refused, or, when a request passed two limits (the
    /// key's and its owner's), the one with fewer requests remaining.
    pub limit: RateLimit,
    /// Requests that could still go through right now, after this one.
    pub remaining: u32,
    /// How long until the bucket holds its whole burst again.
    pub reset: Duration,
    /// Zero when allowed; otherwise how long until this request would be allowed.
    pub retry_after: Duration,
}

/// The interval and tolerance of `rate` in nanoseconds, saturating.
pub(super) fn nanos(rate: &RateLimit) -> (u64, u64) {
    // `period / requests` to the nanosecond, as `RateLimit::interval` rounds it, with one
    // division instead of a `Duration`'s two.
    let interval = (duration_nanos(rate.period()) / u64::from(rate.requests().get())).max(1);
    let tolerance = interval.saturating_mul(u64::from(rate.burst().get() - 1));
    (interval, tolerance)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One bucket's state: its theoretical arrival time, in nanoseconds on the [`now_nanos`] clock.
/// A TAT at or before `now` is a full bucket.
#[derive(Debug, Default)]
pub(crate) struct GcraCell {
    tat: AtomicU64,
}

/// What one cell would do with a request at `now`.
#[derive(Clone, Copy)]
struct Step {
    /// The TAT seen.
    seen: u64,
    /// The TAT to store when the request goes through; `None` when refused.
    next: Option<u64>,
    decision: RateDecision,
}

/// The decision for a request at `now` on a bucket whose TAT is `stored`.
fn step(rate: &RateLimit, stored: u64, now: u64) -> Step {
    let (interval, tolerance) = nanos(rate);
    // A tolerance that saturated is longer than any TAT: no difference to `allow_at`.
    let tat = stored.max(now);
    let allow_at = tat.saturating_sub(tolerance);
    if now < allow_at {
        return Step {
            seen: stored,
            next: None,
            decision: RateDecision {
                allowed: false,
                limit: *rate,
                remaining: 0,
                reset: Duration::from_nanos(tat - now),
                retry_after: Duration::from_nanos(allow_at - now),
            },
        };
    }
    let next = tat.saturating_add(interval);
    Step {
        seen: stored,
        next: Some(next),
        decision: RateDecision {
            allowed: true,
            limit: *rate,
            remaining: remaining(rate, interval, tolerance, next, now),
            reset: Duration::from_nanos(next - now),
            retry_after: Duration::ZERO,
        },
    }
}

/// How many requests at `now` a bucket with TAT `tat` would let through: the `k`-th needs
/// `now ≥ tat + (k − 1)·T − τ`. In 128 bits when the tolerance saturated (a day's interval
/// times a burst of billions) or `now + τ` would overflow.
fn remaining(rate: &RateLimit, interval: u64, tolerance: u64, tat: u64, now: u64) -> u32 {
    let slack = match now.checked_add(tolerance) {
        Some(end) if tolerance < u64::MAX => end.checked_sub(tat).map(|slack| slack / interval),
        _ => {
            let tolerance = u128::from(interval) * u128::from(rate.burst().get() - 1);
            (u128::from(now) + tolerance)
                .checked_sub(u128::from(tat))
                .map(|slack| u64::try_from(slack / u128::from(interval)).unwrap_or(u64::MAX))
        }
    };
    slack.map_or(0, |whole| {
        u32::try_from(whole.saturating_add(1)).unwrap_or(u32::MAX)
    })
}

impl GcraCell {
    /// A full bucket.
    pub(crate) fn new() -> Self {
        GcraCell::default()
    }

    /// Decides a request at `now` (nanoseconds on the [`now_nanos`] clock) and, when it goes
    /// through, takes its slot. Lock-free: one compare-and-swap, tried again only when another
    /// request changed the bucket in between.
    pub(crate) fn check(&self, rate: &RateLimit, now: u64) -> RateDecision {
        self.take(rate, now).decision
    }

    /// As [`check`](Self::check), with what was seen and stored, so that the slot can be given
    /// back.
    fn take(&self, rate: &RateLimit, now: u64) -> Step {
        let mut stored = self.tat.load(Ordering::Acquire);
        loop {
            let step = step(rate, stored, now);
            let Some(next) = step.next else {
                return step;
            };
            match self
                .tat
                .compare_exchange_weak(stored, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return step,
                Err(current) => stored = current,
            }
        }
    }

    /// Gives back the slot that `taken` took, for a request that another bucket refused.
    ///
    /// When nothing else took a slot since, the TAT goes back to what it was, exactly. When
    /// other requests did, it goes back by one interval, which frees the same amount; a request
    /// that came in between may have been refused for want of the slot given back here: under
    /// contention, the bucket can refuse a little early, never let through more.
    fn give_back(&self, rate: &RateLimit, taken: &Step) {
        let Some(next) = taken.next else { return };
        let (interval, _) = nanos(rate);
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let back = if current == next {
                taken.seen
            } else {
                current.saturating_sub(interval)
            };
            match self
                .tat
                .compare_exchange_weak(current, back, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The TAT, for pruning and tests.
    fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }
}

/// Checks a request against a key's bucket and its owner's: it goes through only when both let
/// it, and a request refused by one takes nothing from the other. The key's bucket is taken
/// first, then the owner's; when the owner's refuses, the key's slot is given back (see
/// [`GcraCell::give_back`] for the small imprecision this allows under contention).
pub(crate) fn check_both(
    key: (&GcraCell, &RateLimit),
    owner: (&GcraCell, &RateLimit),
    now: u64,
) -> RateDecision {
    let taken = key.0.take(key.1, now);
    if !taken.decision.allowed {
        return taken.decision;
    }
    let owner_decision = owner.0.check(owner.1, now);
    if !owner_decision.allowed {
        key.0.give_back(key.1, &taken);
        return owner_decision;
    }
    tighter(taken.decision, owner_decision)
}

/// Of two decisions that both let a request through, the one to report: fewer remaining, then
/// the longer reset, then the key's.
pub(crate) fn tighter(key: RateDecision, owner: RateDecision) -> RateDecision {
    if (owner.remaining, std::cmp::Reverse(owner.reset))
        < (key.remaining, std::cmp::Reverse(key.reset))
    {
        owner
    } else {
        key
    }
}

/// The clock the cells use: nanoseconds since the first call in this process, on the coarse
/// monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux), which costs a few nanoseconds and moves
/// once per kernel tick. Requests within one tick are seen as simultaneous, which the burst
/// absorbs; the bound holds on this clock as on any other.
pub(crate) fn now_nanos() -> u64 {
    static ORIGIN: OnceLock<u64> = OnceLock::new();
    // Not `now()`, which also stores the reading in a global that every core would write.
    let ticks = coarsetime::Instant::now_without_cache_update().as_ticks();
    let origin = *ORIGIN.get_or_init(|| ticks);
    // Ticks are seconds in 32.32 fixed point.
    let nanos = (u128::from(ticks.saturating_sub(origin)) * 1_000_000_000) >> 32;
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// Whose bucket: a key's, or an owner's shared by all of the owner's keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LimitKey {
    Key(KeyId),
    Owner(Box<str>),
}

/// The buckets of one process, by key and owner. Reached when a key's cache entry is filled,
/// which keeps the bucket's [`Arc`]; a cache hit touches only that.
#[derive(Debug, Default)]
pub(crate) struct LocalLimiter {
    cells: Mutex<HashMap<LimitKey, Arc<GcraCell>, foldhash::fast::RandomState>>,
}

impl LocalLimiter {
    /// The bucket of `key`, made full when there is none.
    pub(crate) fn cell(&self, key: &LimitKey) -> Arc<GcraCell> {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = cells.get(key) {
            return cell.clone();
        }
        let cell = Arc::new(GcraCell::new());
        cells.insert(key.clone(), cell.clone());
        cell
    }

    /// Drops the buckets that are full at `now` (TAT in the past: identical to a new one) and
    /// that no cache entry holds, so nothing is lost.
    pub(crate) fn prune(&self, now: u64) {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        // Only this map hands out clones, under this lock: a count of one stays one.
        cells.retain(|_, cell| Arc::strong_count(cell) > 1 || cell.tat() > now);
    }

    /// Drops the bucket of `key`, if any.
    pub(crate) fn forget(&self, key: &LimitKey) {
        self.cells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// How many buckets are kept.
    pub(crate) fn len(&self) -> usize {
        self.cells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A decision for `key` at `rate` and, if given, its owner at the owner's rate, on this
    /// process's buckets: what the layer falls back to when Redis does not answer.
    pub(crate) fn check(
        &self,
        key: &KeyId,
        rate: &RateLimit,
        owner: Option<(&str, &RateLimit)>,
        now: u64,
    ) -> RateDecision {
        let key_cell = self.cell(&LimitKey::Key(key.clone()));
        match owner {
            None => key_cell.check(rate, now),
            Some((owner, owner_rate)) => {
                let owner_cell = self.cell(&LimitKey::Owner(owner.into()));
                check_both((&key_cell, rate), (&owner_cell, owner_rate), now)
            }
        }
    }
}

#[cfg(test)]
#[path = "gcra_tests.rs"]
mod tests;
