//! The flushing side: takes the [tally](super::tally)'s counts, holds them until the store has
//! them, and writes them in one batch.
//!
//! # Invariants
//!
//! 1. **One flush at a time**, under an async lock that also guards the counts held; a flush
//!    requested while another runs waits for it and then writes what came since.
//! 2. **Nothing taken is lost while memory holds it.** Counts taken from the tally join the
//!    ones held, and are let go only when the store said it kept the batch (stores add a batch
//!    all or nothing).
//! 3. **Nothing is counted twice.** Each batch has a random id, and a store applies an id once.
//!    A batch whose write failed may have been applied all the same (a timeout, a connection
//!    lost after the commit), so it stays in flight, and the next flush writes it again as it
//!    is, with its id, before a new batch of the counts taken since; a batch the store already
//!    had changes nothing.
//! 4. **Bounded.** At most `max_pending` entries (a key's day, in flight or held, or a key's
//!    last use) are held; the counts of new entries past it are dropped, and counted and logged
//!    as dropped.
//! 5. **A store that keeps no usage is told once.** On [`StoreError::UsageNotKept`] the recorder
//!    logs it, forgets what it held, and stops counting (unless per-key metrics need the counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::settings::UsageSettings;
use super::tally::{Taken, Tally};
use super::{
    AnonymousIncrement, AnonymousOutcome, BatchId, Day, KeyIncrement, OutcomeCounts, UsageBatch,
};
use crate::resolver::KeyId;
use crate::store::{KeyStore, StoreError};

/// How long one write of a batch may take before it counts as failed (and is tried again).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a flush writes every last use, or only those [`UsageSettings::last_used_period`]
/// allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    Periodic,
    /// `flush_usage`, shutdown: everything.
    Everything,
}

/// A layer's usage recorder: its tally, and the store the counts go to.
pub(crate) struct UsageRecorder {
    tally: Arc<Tally>,
    store: Option<Arc<dyn KeyStore>>,
    settings: UsageSettings,
    /// Whether the store keeps usage (false without a store, or once it said it keeps none).
    keeps_usage: AtomicBool,
    held: tokio::sync::Mutex<Held>,
}

/// What the recorder holds between flushes.
#[derive(Default)]
struct Held {
    /// The batch last written, if the store did not acknowledge it: it may have been applied
    /// (a timeout, a connection lost after the commit), so it is written again as it is, with
    /// its id, before anything newer. Its counts are no longer in `keys` and `anonymous`; its
    /// last uses stay in `last_used`, not yet written.
    in_flight: Option<UsageBatch>,
    /// Taken from the tally since, and not yet in a batch.
    keys: HashMap<(KeyId, Day), OutcomeCounts>,
    anonymous: HashMap<(Day, AnonymousOutcome), u64>,
    last_used: HashMap<KeyId, LastUse>,
    /// The tally's counts as last taken (kept for their room).
    taken: Taken,
    /// Requests dropped past the cap since the last warning.
    dropped_unlogged: u64,
    /// Failed writes in a row.
    failures: u32,
}

impl Held {
    /// The keys' days not yet written, in the batch in flight or since.
    fn pending(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |batch| batch.keys.len()) + self.keys.len()
    }
}

/// Writes `batch`, within [`WRITE_TIMEOUT`].
async fn write(store: &dyn KeyStore, batch: &UsageBatch) -> Result<(), StoreError> {
    match tokio::time::timeout(WRITE_TIMEOUT, store.record_usage(batch)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(StoreError::unavailable(format!(
            "writing usage took longer than {} s",
            WRITE_TIMEOUT.as_secs()
        ))),
    }
}

/// A key's last use, as seen and as written.
#[derive(Clone, Copy, Default)]
struct LastUse {
    /// Seconds since the epoch of the latest use seen.
    seen: u32,
    /// Of the latest use written (0: none by this recorder).
    written: u32,
}

fn system_time(second: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(second))
}

impl UsageRecorder {
    pub(crate) fn new(
        tally: Arc<Tally>,
        store: Option<Arc<dyn KeyStore>>,
        settings: UsageSettings,
    ) -> Self {
        UsageRecorder {
            keeps_usage: AtomicBool::new(store.is_some()),
            tally,
            store,
            settings,
            held: tokio::sync::Mutex::new(Held::default()),
        }
    }

    pub(crate) fn settings(&self) -> &UsageSettings {
        &self.settings
    }

    /// Whether there is anything to flush or prune for: a store that keeps usage, or per-key
    /// metrics.
    pub(crate) fn is_active(&self) -> bool {
        self.keeps_usage.load(Ordering::Relaxed) || self.tally.metrics.per_key
    }

    /// Takes the tally's counts and writes everything held to the store.
    pub(crate) async fn flush(&self, mode: Flush) -> Result<(), StoreError> {
        let mut held = self.held.lock().await;
        let held = &mut *held;
        let now = self.tally.take(&mut held.taken);
        self.publish_per_key(&held.taken);
        let keeps_usage = self.keeps_usage.load(Ordering::Relaxed);
        if keeps_usage {
            self.hold(held);
        }
        held.taken.keys.clear();
        held.taken.anonymous.clear();
        held.taken.last_used.clear();
        let (Some(store), true) = (&self.store, keeps_usage) else {
            return Ok(());
        };
        // A batch that failed goes first, as it was: the store may have applied it, and knows
        // it by its id. Newer counts wait for it.
        let mut wrote = false;
        loop {
            let fresh = held.in_flight.is_none();
            if fresh {
                let batch = batch(held, mode, &self.settings);
                if batch.is_empty() {
                    break;
                }
                held.keys.clear();
                held.anonymous.clear();
                held.in_flight = Some(batch);
            }
            self.tally.metrics.pending.set(held.pending() as f64);
            let Some(batch) = &held.in_flight else {
                break;
            };
            match write(store.as_ref(), batch).await {
                Ok(()) => {
                    // Only now are its last uses written.
                    for (id, at) in &batch.last_used {
                        if let Some(last) = held.last_used.get_mut(id) {
                            last.written = last.written.max(second_of(*at));
                        }
                    }
                    held.in_flight = None;
                    wrote = true;
                    if fresh {
                        break;
                    }
                    // A retried batch written: then what is held, in a batch of its own.
                }
                Err(StoreError::UsageNotKept) => {
                    self.keeps_usage.store(false, Ordering::Relaxed);
                    *held = Held::default();
                    if !self.tally.metrics.per_key {
                        self.tally.stop_recording();
                    }
                    tracing::info!(
                        target: "tower_api_key",
                        "the key store keeps no usage counts: usage is not recorded \
                         (turn it off with UsageSettings::off to skip counting)"
                    );
                    return Err(StoreError::UsageNotKept);
                }
                Err(error) => {
                    held.failures = held.failures.saturating_add(1);
                    self.tally.metrics.flushes_failed.increment(1);
                    // The first failure, then every power of two: a long outage is not a log
                    // flood.
                    if held.failures.is_power_of_two() {
                        tracing::warn!(
                            target: "tower_api_key",
                            error = %error,
                            failed_attempts = held.failures,
                            held = held.pending(),
                            "usage counts could not be written to the key store; kept in memory \
                             and tried again at the next flush"
                        );
                    }
                    return Err(error);
                }
            }
        }
        if !wrote {
            return Ok(());
        }
        forget_old_last_uses(&mut held.last_used, now, &self.settings);
        self.tally.metrics.flushes_ok.increment(1);
        self.tally.metrics.pending.set(0.0);
        if held.failures > 0 {
            tracing::info!(
                target: "tower_api_key",
                failed_attempts = held.failures,
                "usage counts written to the key store again"
            );
        }
        held.failures = 0;
        Ok(())
    }

    /// Deletes the counts older than the retention, if there is one.
    pub(crate) async fn prune(&self) -> Result<u64, StoreError> {
        let (Some(store), Some(days)) = (&self.store, self.settings.retention_days) else {
            return Ok(0);
        };
        if !self.keeps_usage.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let today = Day::of(self.tally.now());
        let before = today.add_days(1 - i32::try_from(days).unwrap_or(i32::MAX));
        let pruned = match tokio::time::timeout(WRITE_TIMEOUT, store.prune_usage(before)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(StoreError::unavailable(format!(
                "pruning usage took longer than {} s",
                WRITE_TIMEOUT.as_secs()
            ))),
        };
        match &pruned {
            Ok(rows) => tracing::debug!(
                target: "tower_api_key",
                before = %before,
                rows,
                "old usage counts pruned"
            ),
            // Said once, by the flush.
            Err(StoreError::UsageNotKept) => {}
            Err(error) => tracing::warn!(
                target: "tower_api_key",
                error = %error,
                "old usage counts could not be pruned; trying again later"
            ),
        }
        pruned
    }

    /// Adds the per-key counts just taken to the per-key metric, if the application asked.
    fn publish_per_key(&self, taken: &Taken) {
        if !self.tally.metrics.per_key {
            return;
        }
        for ((id, _day), counts) in &taken.keys {
            for outcome in super::KeyOutcome::ALL {
                self.tally
                    .metrics
                    .key_requests(id.as_str(), outcome, counts.get(outcome));
            }
        }
    }

    /// Adds what was just taken to what is held, within the cap.
    fn hold(&self, held: &mut Held) {
        let cap = self.settings.max_pending;
        // The batch in flight takes room until the store has it.
        let in_flight = held.in_flight.as_ref().map_or(0, |batch| batch.keys.len());
        let mut dropped = 0u64;
        for (slot, counts) in held.taken.keys.drain() {
            if let Some(kept) = held.keys.get_mut(&slot) {
                kept.add_all(&counts);
            } else if in_flight + held.keys.len() + held.last_used.len() < cap {
                held.keys.insert(slot, counts);
            } else {
                dropped = dropped.saturating_add(counts.total());
            }
        }
        for (slot, count) in held.taken.anonymous.drain() {
            // A handful a day: never dropped.
            *held.anonymous.entry(slot).or_default() += count;
        }
        for (id, second) in held.taken.last_used.drain() {
            if let Some(last) = held.last_used.get_mut(&id) {
                last.seen = last.seen.max(second);
            } else if in_flight + held.keys.len() + held.last_used.len() < cap {
                held.last_used.insert(
                    id,
                    LastUse {
                        seen: second,
                        written: 0,
                    },
                );
            }
        }
        if dropped > 0 {
            self.tally.metrics.dropped.increment(dropped);
            held.dropped_unlogged = held.dropped_unlogged.saturating_add(dropped);
        }
        if held.dropped_unlogged > 0 && (held.failures == 0 || held.failures.is_power_of_two()) {
            tracing::warn!(
                target: "tower_api_key",
                dropped_requests = held.dropped_unlogged,
                max_pending = cap,
                "usage counts dropped: the key store has not taken them for so long that more \
                 keys and days are waiting than UsageSettings::max_pending allows"
            );
            held.dropped_unlogged = 0;
        }
    }
}

/// The batch for what is held: every count, and the last uses due.
fn batch(held: &Held, mode: Flush, settings: &UsageSettings) -> UsageBatch {
    let period = u32::try_from(settings.last_used_period.as_secs()).unwrap_or(u32::MAX);
    let mut batch = UsageBatch::new().with_id(BatchId::random());
    batch.keys = held
        .keys
        .iter()
        .map(|((id, day), counts)| KeyIncrement::new(id.clone(), *day, *counts))
        .collect();
    batch.anonymous = held
        .anonymous
        .iter()
        .map(|(&(day, outcome), &count)| AnonymousIncrement::new(day, outcome, count))
        .collect();
    batch.last_used = held
        .last_used
        .iter()
        .filter(|(_, last)| {
            last.seen > last.written
                && (mode == Flush::Everything
                    || last.written == 0
                    || last.seen - last.written >= period)
        })
        .map(|(id, last)| (id.clone(), system_time(last.seen)))
        .collect();
    // In a stable order, so that stores lock rows in the same order in every instance.
    batch
        .keys
        .sort_unstable_by(|a, b| (&a.id, a.day).cmp(&(&b.id, b.day)));
    batch
        .anonymous
        .sort_unstable_by_key(|increment| (increment.day, increment.outcome));
    batch.last_used.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    batch
}

fn second_of(at: SystemTime) -> u32 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u32::try_from(since.as_secs()).unwrap_or(u32::MAX)
    })
}

/// Forgets the last uses that were written and can no longer hold back a write.
fn forget_old_last_uses(
    last_used: &mut HashMap<KeyId, LastUse>,
    now: SystemTime,
    settings: &UsageSettings,
) {
    let now = u64::from(second_of(now));
    let period = settings.last_used_period.as_secs();
    last_used.retain(|_, last| {
        last.seen > last.written || now.saturating_sub(u64::from(last.written)) < period
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_uses_are_written_once_a_period_unless_everything_is_flushed() {
        let settings = UsageSettings::new().last_used_period(Duration::from_secs(60));
        let mut held = Held::default();
        let id: KeyId = "key_1".into();
        held.last_used.insert(
            id.clone(),
            LastUse {
                seen: 1_000,
                written: 0,
            },
        );
        assert_eq!(batch(&held, Flush::Periodic, &settings).last_used.len(), 1);
        held.last_used.get_mut(&id).unwrap().written = 1_000;
        held.last_used.get_mut(&id).unwrap().seen = 1_030;
        assert!(batch(&held, Flush::Periodic, &settings)
            .last_used
            .is_empty());
        assert_eq!(
            batch(&held, Flush::Everything, &settings).last_used,
            vec![(id.clone(), system_time(1_030))]
        );
        held.last_used.get_mut(&id).unwrap().seen = 1_060;
        assert_eq!(batch(&held, Flush::Periodic, &settings).last_used.len(), 1);

        // Written, and a period old: forgotten; younger, or unwritten: kept.
        held.last_used.get_mut(&id).unwrap().written = 1_060;
        forget_old_last_uses(&mut held.last_used, system_time(1_100), &settings);
        assert!(held.last_used.contains_key(&id));
        forget_old_last_uses(&mut held.last_used, system_time(1_120), &settings);
        assert!(held.last_used.is_empty());
    }
}
