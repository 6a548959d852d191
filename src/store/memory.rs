use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use super::{validate, CreatedKey, NewKey, StoreError, StoredKey};
use crate::clock::{Clock, SystemClock};
use crate::invalidation::Invalidations;
use crate::key::{push_random_base62, KeyDigest, KeyFormat};
use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};

/// Keys in memory. Clones share the keys.
///
/// See the [module docs](crate::store) for an example.
#[derive(Clone)]
pub struct MemoryStore {
    format: KeyFormat,
    keys: Arc<RwLock<Keys>>,
    invalidations: Invalidations,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Keys {
    by_digest: HashMap<KeyDigest, StoredKey>,
    digest_by_id: HashMap<KeyId, KeyDigest>,
}

impl MemoryStore {
    /// An empty store that creates keys of `format`.
    pub fn new(format: KeyFormat) -> Self {
        MemoryStore {
            format,
            keys: Arc::default(),
            invalidations: Invalidations::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for creation and revocation times and expiry checks.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The format of the keys this store creates.
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// Creates a key. The plaintext in the result is the only copy there will ever be.
    pub fn create(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        let now = self.clock.now();
        validate(&new, now)?;
        let key = self.format.generate(new.environment)?;
        let mut id = String::from("key_");
        push_random_base62(&mut id, 16)?;
        let record = KeyRecord::new(id, new.environment, new.scopes)
            .with_name(new.name.trim())
            .with_owner(new.owner)
            .with_expires_at(new.expires_at);
        let stored = StoredKey {
            record: record.clone(),
            hint: key.hint(),
            created_at: now,
        };
        let mut keys = self.write();
        keys.digest_by_id.insert(record.id.clone(), key.digest());
        keys.by_digest.insert(key.digest(), stored);
        Ok(CreatedKey { key, record })
    }

    /// The key with id `id`.
    pub fn get(&self, id: &KeyId) -> Option<StoredKey> {
        let keys = self.read();
        keys.digest_by_id
            .get(id)
            .and_then(|digest| keys.by_digest.get(digest))
            .cloned()
    }

    /// Every key of `owner` (or of everyone, for `None`), newest first.
    pub fn list(&self, owner: Option<&str>) -> Vec<StoredKey> {
        let keys = self.read();
        let mut listed: Vec<StoredKey> = keys
            .by_digest
            .values()
            .filter(|stored| owner.is_none_or(|owner| stored.record.owner == owner))
            .cloned()
            .collect();
        listed.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.record.id.cmp(&b.record.id))
        });
        listed
    }

    /// Revokes the key with id `id`: every layer built on this store refuses it from the next
    /// request on. Revoking a revoked key changes nothing and succeeds.
    pub fn revoke(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let now = self.clock.now();
        let (digest, stored) = {
            let mut keys = self.write();
            let digest = *keys
                .digest_by_id
                .get(id)
                .ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
            let stored = keys
                .by_digest
                .get_mut(&digest)
                .ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
            if stored.record.revoked_at.is_none() {
                stored.record.revoked_at = Some(now);
            }
            (digest, stored.clone())
        };
        // After the write: a lookup that starts now reads the revoked record.
        self.invalidations.invalidate(&digest);
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
impl KeyResolver for MemoryStore {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        Ok(self
            .read()
            .by_digest
            .get(digest)
            .map(|stored| stored.record.clone()))
    }

    fn invalidations(&self) -> Option<Invalidations> {
        Some(self.invalidations.clone())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("format", &self.format)
            .field("keys", &self.read().by_digest.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::clock::ManualClock;
    use crate::key::Environment;
    use crate::scope::Scope;

    fn store() -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let store = MemoryStore::new(KeyFormat::new("om").unwrap()).with_clock(clock.clone());
        (store, clock)
    }

    #[tokio::test]
    async fn created_keys_resolve_by_digest_only() {
        let (store, _) = store();
        let created = store
            .create(
                NewKey::new("  Production ", Environment::Live).scopes([Scope::from_static("a:b")]),
            )
            .unwrap();
        assert_eq!(created.record.name, "Production");
        let found = store.resolve(&created.key.digest()).await.unwrap().unwrap();
        assert_eq!(found, created.record);
        let other = KeyDigest::of(b"something else");
        assert_eq!(store.resolve(&other).await.unwrap(), None);
    }

    #[test]
    fn validation_errors() {
        let (store, clock) = store();
        assert!(matches!(
            store.create(NewKey::new(" ", Environment::Live)),
            Err(StoreError::EmptyName)
        ));
        assert!(matches!(
            store.create(NewKey::new("x".repeat(101), Environment::Live)),
            Err(StoreError::NameTooLong)
        ));
        assert!(matches!(
            store.create(NewKey::new("old", Environment::Live).expires_at(clock.now())),
            Err(StoreError::ExpiryInPast)
        ));
        let missing = KeyId::from("key_missing");
        let err = store.revoke(&missing).unwrap_err();
        assert_eq!(err.to_string(), "no key has the id `key_missing`");
        assert!(
            store.list(None).is_empty(),
            "a failed create must leave nothing behind"
        );
    }

    #[test]
    fn list_is_per_owner_and_newest_first() {
        let (store, clock) = store();
        let first = store
            .create(NewKey::new("first", Environment::Live).owner("a"))
            .unwrap();
        clock.advance(Duration::from_secs(1));
        let second = store
            .create(NewKey::new("second", Environment::Test).owner("a"))
            .unwrap();
        store
            .create(NewKey::new("other", Environment::Live).owner("b"))
            .unwrap();
        let listed: Vec<_> = store
            .list(Some("a"))
            .into_iter()
            .map(|k| k.record.id)
            .collect();
        assert_eq!(listed, vec![second.record.id, first.record.id]);
        assert_eq!(store.list(None).len(), 3);
        let debug = format!("{:?}", store.list(None));
        assert!(!debug.contains(first.key.expose_secret()));
    }

    #[test]
    fn revoke_is_idempotent_and_records_when() {
        let (store, clock) = store();
        let created = store.create(NewKey::new("k", Environment::Live)).unwrap();
        let at = clock.now();
        assert_eq!(
            store.revoke(&created.record.id).unwrap().record.revoked_at,
            Some(at)
        );
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            store.revoke(&created.record.id).unwrap().record.revoked_at,
            Some(at)
        );
    }
}
