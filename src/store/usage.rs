//! What every store does alike with usage counts: merging a batch into the increments to write,
//! and the limits on counts and series.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{StoreError, MAX_SERIES_DAYS};
use crate::resolver::KeyId;
use crate::usage::{AnonymousOutcome, DailyUsage, Day, KeyOutcome, OutcomeCounts, UsageBatch};

/// The largest count a store keeps for one key, day and outcome (or one day and anonymous
/// outcome): `i64::MAX`, the most a SQL `BIGINT` holds. Counts saturate there.
pub(crate) const MAX_COUNT: u64 = i64::MAX.unsigned_abs();

/// How long a store remembers the id of a batch it applied, at least: a batch written again
/// after this may count twice. Far longer than any retry (a recorder retries a failed batch at
/// every flush, seconds apart), and few rows (one per flush and instance).
pub(crate) const BATCH_ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Adds `count` to `slot`, saturating at [`MAX_COUNT`].
pub(crate) fn add_count(slot: &mut u64, count: u64) {
    *slot = slot.saturating_add(count).min(MAX_COUNT);
}

/// A [`UsageBatch`] merged: one count per key, day and outcome (and per day and anonymous
/// outcome), zeros left out, each at most [`MAX_COUNT`]; one last use per key, the latest. In
/// sorted order, so that stores that lock rows take them in the same order in every flush.
#[derive(Debug, Default)]
pub(crate) struct Increments {
    pub(crate) keys: BTreeMap<(KeyId, Day, KeyOutcome), u64>,
    pub(crate) anonymous: BTreeMap<(Day, AnonymousOutcome), u64>,
    pub(crate) last_used: BTreeMap<KeyId, SystemTime>,
}

impl Increments {
    pub(crate) fn of(batch: &UsageBatch) -> Self {
        let mut merged = Increments::default();
        for increment in &batch.keys {
            for outcome in KeyOutcome::ALL {
                let count = increment.counts.get(outcome);
                if count > 0 {
                    let slot = merged
                        .keys
                        .entry((increment.id.clone(), increment.day, outcome))
                        .or_default();
                    add_count(slot, count);
                }
            }
        }
        for increment in &batch.anonymous {
            if increment.count > 0 {
                let slot = merged
                    .anonymous
                    .entry((increment.day, increment.outcome))
                    .or_default();
                add_count(slot, increment.count);
            }
        }
        for (id, at) in &batch.last_used {
            merged
                .last_used
                .entry(id.clone())
                .and_modify(|last| *last = (*last).max(*at))
                .or_insert(*at);
        }
        merged
    }

    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.anonymous.is_empty() && self.last_used.is_empty()
    }

    /// Every key named, in order.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn ids(&self) -> std::collections::BTreeSet<&KeyId> {
        self.keys
            .keys()
            .map(|(id, _, _)| id)
            .chain(self.last_used.keys())
            .collect()
    }

    /// Drops what concerns keys for which `exists` says no.
    pub(crate) fn retain_keys(&mut self, exists: impl Fn(&KeyId) -> bool) {
        self.keys.retain(|(id, _, _), _| exists(id));
        self.last_used.retain(|id, _| exists(id));
    }
}

/// A series of zero counts for every day from `from` to `to`, both included: empty when `from`
/// is after `to`.
///
/// # Errors
///
/// [`StoreError::SeriesTooLong`] for more than [`MAX_SERIES_DAYS`] days.
pub(crate) fn zero_series(from: Day, to: Day) -> Result<Vec<DailyUsage>, StoreError> {
    let days = i64::from(to.days_since_epoch()) - i64::from(from.days_since_epoch()) + 1;
    if days > i64::from(MAX_SERIES_DAYS) {
        return Err(StoreError::SeriesTooLong);
    }
    // Within MAX_SERIES_DAYS, so `i32` holds every offset.
    let days = i32::try_from(days.max(0)).unwrap_or(0);
    Ok((0..days)
        .map(|offset| DailyUsage::new(from.add_days(offset), OutcomeCounts::default()))
        .collect())
}

/// The entry of `day` in a series that starts on `from`, if the series reaches it.
pub(crate) fn day_in(series: &mut [DailyUsage], from: Day, day: Day) -> Option<&mut DailyUsage> {
    let offset = i64::from(day.days_since_epoch()) - i64::from(from.days_since_epoch());
    usize::try_from(offset)
        .ok()
        .and_then(|offset| series.get_mut(offset))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::usage::{AnonymousIncrement, KeyIncrement};

    fn counts(allowed: u64, revoked: u64) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        counts.add(KeyOutcome::Allowed, allowed);
        counts.add(KeyOutcome::Revoked, revoked);
        counts
    }

    #[test]
    fn a_batch_is_merged_sorted_and_capped() {
        let day = Day::from_days_since_epoch(19_700);
        let (a, b) = (KeyId::from("key_a"), KeyId::from("key_b"));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut batch = UsageBatch::new();
        batch.keys = vec![
            KeyIncrement::new(b.clone(), day, counts(2, 0)),
            KeyIncrement::new(a.clone(), day, counts(1, 1)),
            KeyIncrement::new(b.clone(), day, counts(u64::MAX, 0)),
            KeyIncrement::new(a.clone(), day.add_days(1), OutcomeCounts::default()),
        ];
        batch.anonymous = vec![
            AnonymousIncrement::new(day, AnonymousOutcome::Unknown, 3),
            AnonymousIncrement::new(day, AnonymousOutcome::Unknown, 4),
            AnonymousIncrement::new(day, AnonymousOutcome::Missing, 0),
        ];
        batch.last_used = vec![
            (a.clone(), at),
            (a.clone(), at + Duration::from_secs(1)),
            (a.clone(), at - Duration::from_secs(1)),
        ];
        let merged = Increments::of(&batch);
        let keys: Vec<_> = merged.keys.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(
            keys,
            [
                ((a.clone(), day, KeyOutcome::Allowed), 1),
                ((a.clone(), day, KeyOutcome::Revoked), 1),
                ((b.clone(), day, KeyOutcome::Allowed), MAX_COUNT),
            ]
        );
        assert_eq!(
            merged.anonymous.into_iter().collect::<Vec<_>>(),
            [((day, AnonymousOutcome::Unknown), 7)]
        );
        assert_eq!(merged.last_used[&a], at + Duration::from_secs(1));
    }

    #[test]
    fn series_are_checked() {
        let day = Day::from_days_since_epoch(100);
        assert_eq!(zero_series(day, day.add_days(-1)).unwrap(), []);
        assert_eq!(zero_series(day, day).unwrap().len(), 1);
        let longest = i32::try_from(MAX_SERIES_DAYS).unwrap();
        assert_eq!(
            zero_series(day, day.add_days(longest - 1)).unwrap().len(),
            usize::try_from(MAX_SERIES_DAYS).unwrap()
        );
        assert!(matches!(
            zero_series(day, day.add_days(longest)),
            Err(StoreError::SeriesTooLong)
        ));
        let extremes = (
            Day::from_days_since_epoch(i32::MIN),
            Day::from_days_since_epoch(i32::MAX),
        );
        assert!(zero_series(extremes.0, extremes.1).is_err());
        assert_eq!(zero_series(extremes.1, extremes.0).unwrap(), []);
        let mut series = zero_series(day, day.add_days(2)).unwrap();
        assert!(day_in(&mut series, day, day.add_days(-1)).is_none());
        assert!(day_in(&mut series, day, day.add_days(3)).is_none());
        assert_eq!(
            day_in(&mut series, day, day.add_days(2)).unwrap().day,
            day.add_days(2)
        );
    }
}
