use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::settings::{settings_methods, StoreSettings};
use super::usage::{add_count, day_in, zero_series, Increments, BATCH_ID_RETENTION, MAX_COUNT};
use super::{
    plan_rotation, prepare, validate_name, Actor, AuditAction, AuditEvent, AuditQuery, CreatedKey,
    KeyStore, NewKey, Rotation, StoreError, StoredKey,
};
use crate::invalidation::Invalidations;
use crate::key::{KeyDigest, KeyFormat};
use crate::limit::KeyLimits;
use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};
use crate::usage::{
    AnonymousIncrement, AnonymousOutcome, BatchId, DailyUsage, Day, KeyOutcome, KeyUsageSummary,
    OutcomeCounts, UsageBatch,
};

/// Keys in memory. Clones share the keys.
///
/// See the [module docs](crate::store) for an example.
#[derive(Clone)]
pub struct MemoryStore {
    settings: StoreSettings,
    keys: Arc<RwLock<Keys>>,
}

#[derive(Default)]
struct Keys {
    by_digest: HashMap<KeyDigest, StoredKey>,
    digest_by_id: HashMap<KeyId, KeyDigest>,
    /// Each key's requests by day; a key's entry goes with the key.
    usage: HashMap<KeyId, BTreeMap<Day, OutcomeCounts>>,
    /// The requests whose key was not known, by day and outcome.
    anonymous: BTreeMap<Day, BTreeMap<AnonymousOutcome, u64>>,
    /// The ids of the batches applied, with when, for [`BATCH_ID_RETENTION`].
    batches: HashMap<BatchId, SystemTime>,
    /// The audit trail, oldest first; entries stay when their key goes.
    audit: Vec<AuditEvent>,
    /// The `seq` of the last audit entry written (0: none yet).
    audit_seq: u64,
}

impl Keys {
    fn digest_of(&self, id: &KeyId) -> Result<KeyDigest, StoreError> {
        self.digest_by_id
            .get(id)
            .copied()
            .ok_or_else(|| StoreError::UnknownKey(id.clone()))
    }

    /// The key with id `id`, to change in place.
    fn entry(&mut self, id: &KeyId) -> Result<(KeyDigest, &mut StoredKey), StoreError> {
        let digest = self.digest_of(id)?;
        let stored = self
            .by_digest
            .get_mut(&digest)
            .ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
        Ok((digest, stored))
    }

    /// The keys of `owner` (everyone's for `None`), newest first.
    fn listed(&self, owner: Option<&str>) -> Vec<&StoredKey> {
        let mut listed: Vec<&StoredKey> = self
            .by_digest
            .values()
            .filter(|stored| owner.is_none_or(|owner| stored.record.owner == owner))
            .collect();
        listed.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.record.id.cmp(&b.record.id))
        });
        listed
    }

    fn insert(&mut self, created: &CreatedKey) {
        let digest = created.key.digest();
        self.digest_by_id.insert(created.id().clone(), digest);
        self.by_digest.insert(digest, created.stored.clone());
    }

    /// Appends `action` on `key` by `actor` at `at` to the audit trail.
    fn record(
        &mut self,
        at: SystemTime,
        action: AuditAction,
        key: &StoredKey,
        actor: &Actor,
        related_key: Option<&KeyId>,
    ) {
        self.audit_seq += 1;
        let mut event = AuditEvent::new(self.audit_seq, at, action, key.record.id.clone(), actor);
        event.owner = key.record.owner.clone();
        event.key_name = key.record.name.clone();
        event.related_key = related_key.cloned();
        self.audit.push(event);
    }
}

impl MemoryStore {
    /// An empty store for keys as `settings` says (a [`KeyFormat`](crate::KeyFormat) is enough).
    pub fn new(settings: impl Into<StoreSettings>) -> Self {
        MemoryStore {
            settings: settings.into(),
            keys: Arc::default(),
        }
    }

    settings_methods!();

    /// Changes the key with id `id` under the write lock, records the action `f` returns (if
    /// any) by `actor` at `now` in the audit trail under the same lock, then announces the
    /// key's digest.
    fn change(
        &self,
        id: &KeyId,
        now: SystemTime,
        actor: &Actor,
        f: impl FnOnce(&mut StoredKey) -> Option<AuditAction>,
    ) -> Result<StoredKey, StoreError> {
        let (digest, stored) = {
            let mut keys = self.write();
            let (digest, stored) = keys.entry(id)?;
            let action = f(stored);
            let stored = stored.clone();
            if let Some(action) = action {
                keys.record(now, action, &stored, actor, None);
            }
            (digest, stored)
        };
        // After the write: a lookup that starts now reads the new state.
        self.settings.announce(&digest);
        Ok(stored)
    }

    fn read(&self) -> RwLockReadGuard<'_, Keys> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Keys> {
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    fn format(&self) -> &KeyFormat {
        &self.settings.format
    }

    async fn create_by(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError> {
        actor.validate()?;
        let settings = &self.settings;
        let now = settings.now();
        let created = prepare(&settings.format, new, now, settings.catalog.as_ref())?;
        let mut keys = self.write();
        keys.insert(&created);
        keys.record(now, AuditAction::Created, &created.stored, actor, None);
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let keys = self.read();
        let digest = keys.digest_of(id)?;
        keys.by_digest
            .get(&digest)
            .cloned()
            .ok_or_else(|| StoreError::UnknownKey(id.clone()))
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.read().listed(owner).into_iter().cloned().collect())
    }

    async fn rename_by(
        &self,
        id: &KeyId,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        actor.validate()?;
        let name = validate_name(name)?;
        self.change(id, self.settings.now(), actor, |stored| {
            stored.record.name = name.to_owned();
            Some(AuditAction::Renamed)
        })
    }

    async fn set_limits_by(
        &self,
        id: &KeyId,
        limits: KeyLimits,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        actor.validate()?;
        self.change(id, self.settings.now(), actor, |stored| {
            stored.record.limits = limits;
            Some(AuditAction::LimitsChanged)
        })
    }

    async fn revoke_by(&self, id: &KeyId, actor: &Actor) -> Result<StoredKey, StoreError> {
        actor.validate()?;
        let now = self.settings.now();
        self.change(id, now, actor, |stored| {
            // Only the first revocation is a change.
            let first = stored.record.revoked_at.is_none();
            stored.record.revoked_at.get_or_insert(now);
            first.then_some(AuditAction::Revoked)
        })
    }

    async fn rotate_by(
        &self,
        id: &KeyId,
        grace: Duration,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        actor.validate()?;
        let now = self.settings.now();
        let (old_digest, rotation) = {
            let mut keys = self.write();
            let (old_digest, old) = keys.entry(id)?;
            let (new, old_expires_at) = plan_rotation(&self.settings.format, old, grace, now)?;
            old.record.expires_at = Some(old_expires_at);
            old.replaced_by = Some(new.id().clone());
            let old = old.clone();
            keys.insert(&new);
            keys.record(now, AuditAction::Rotated, &old, actor, Some(new.id()));
            let old_id = Some(&old.record.id);
            keys.record(now, AuditAction::Created, &new.stored, actor, old_id);
            (old_digest, Rotation { new, old })
        };
        self.settings.announce(&old_digest);
        Ok(rotation)
    }

    async fn delete_by(&self, id: &KeyId, actor: &Actor) -> Result<(), StoreError> {
        actor.validate()?;
        let now = self.settings.now();
        let digest = {
            let mut keys = self.write();
            let digest = keys.digest_of(id)?;
            keys.digest_by_id.remove(id);
            if let Some(gone) = keys.by_digest.remove(&digest) {
                keys.record(now, AuditAction::Deleted, &gone, actor, None);
            }
            keys.usage.remove(id);
            digest
        };
        self.settings.announce(&digest);
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let keys = self.read();
        let page = usize::try_from(query.page_size()).unwrap_or(usize::MAX);
        Ok(keys
            .audit
            .iter()
            .rev()
            .filter(|event| query.matches(event))
            .take(page)
            .cloned()
            .collect())
    }

    async fn record_use(&self, id: &KeyId, at: SystemTime) -> Result<(), StoreError> {
        let mut keys = self.write();
        let (_, stored) = keys.entry(id)?;
        if stored.last_used_at.is_none_or(|last| last < at) {
            stored.last_used_at = Some(at);
        }
        Ok(())
    }

    async fn record_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let mut increments = Increments::of(batch);
        if increments.is_empty() {
            return Ok(());
        }
        // One write lock for the whole batch: no reader sees half of it.
        let mut keys = self.write();
        if let Some(id) = batch.id {
            let now = self.settings.now();
            // Pruned here: a few entries a minute, and no other task to do it.
            keys.batches.retain(|_, applied| {
                now.duration_since(*applied)
                    .map_or(true, |age| age < BATCH_ID_RETENTION)
            });
            if keys.batches.contains_key(&id) {
                return Ok(());
            }
            keys.batches.insert(id, now);
        }
        increments.retain_keys(|id| keys.digest_by_id.contains_key(id));
        for ((id, day, outcome), count) in increments.keys {
            let counts = keys.usage.entry(id).or_default().entry(day).or_default();
            // Counts never exceed MAX_COUNT, so this saturates there.
            let room = MAX_COUNT.saturating_sub(counts.get(outcome));
            counts.add(outcome, count.min(room));
        }
        for ((day, outcome), count) in increments.anonymous {
            let slot = keys
                .anonymous
                .entry(day)
                .or_default()
                .entry(outcome)
                .or_default();
            add_count(slot, count);
        }
        for (id, at) in increments.last_used {
            if let Ok((_, stored)) = keys.entry(&id) {
                if stored.last_used_at.is_none_or(|last| last < at) {
                    stored.last_used_at = Some(at);
                }
            }
        }
        Ok(())
    }

    async fn usage(&self, id: &KeyId, from: Day, to: Day) -> Result<Vec<DailyUsage>, StoreError> {
        let mut series = zero_series(from, to)?;
        let keys = self.read();
        keys.digest_of(id)?;
        if let (Some(days), false) = (keys.usage.get(id), series.is_empty()) {
            for (day, counts) in days.range(from..=to) {
                if let Some(entry) = day_in(&mut series, from, *day) {
                    entry.counts = *counts;
                }
            }
        }
        Ok(series)
    }

    async fn usage_summary(
        &self,
        owner: Option<&str>,
        from: Day,
        to: Day,
    ) -> Result<Vec<KeyUsageSummary>, StoreError> {
        let keys = self.read();
        Ok(keys
            .listed(owner)
            .into_iter()
            .map(|stored| {
                let mut totals = OutcomeCounts::default();
                if let (Some(days), true) = (keys.usage.get(&stored.record.id), from <= to) {
                    for counts in days.range(from..=to).map(|(_, counts)| counts) {
                        totals.add_all(counts);
                    }
                }
                KeyUsageSummary {
                    id: stored.record.id.clone(),
                    name: stored.record.name.clone(),
                    created_at: stored.created_at,
                    last_used_at: stored.last_used_at,
                    revoked_at: stored.record.revoked_at,
                    totals,
                }
            })
            .collect())
    }

    async fn anonymous_usage(
        &self,
        from: Day,
        to: Day,
    ) -> Result<Vec<AnonymousIncrement>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let keys = self.read();
        let days = keys.anonymous.range(from..=to);
        Ok(days
            .flat_map(|(&day, outcomes)| {
                outcomes
                    .iter()
                    .map(move |(&outcome, &count)| AnonymousIncrement::new(day, outcome, count))
            })
            .collect())
    }

    async fn prune_usage(&self, before: Day) -> Result<u64, StoreError> {
        let mut keys = self.write();
        let mut pruned = 0usize;
        for days in keys.usage.values_mut() {
            let kept = days.split_off(&before);
            for counts in std::mem::replace(days, kept).values() {
                let outcomes = KeyOutcome::ALL.into_iter();
                pruned += outcomes.filter(|outcome| counts.get(*outcome) > 0).count();
            }
        }
        keys.usage.retain(|_, days| !days.is_empty());
        let kept = keys.anonymous.split_off(&before);
        let gone = std::mem::replace(&mut keys.anonymous, kept);
        pruned += gone.values().map(BTreeMap::len).sum::<usize>();
        Ok(u64::try_from(pruned).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl KeyResolver for MemoryStore {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        Ok(self
            .read()
            .by_digest
            .get(digest)
            .map(|stored| stored.record.clone()))
    }

    fn invalidations(&self) -> Option<Invalidations> {
        Some(self.settings.invalidations.clone())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("format", &self.settings.format)
            .field("keys", &self.read().by_digest.len())
            .finish_non_exhaustive()
    }
}
