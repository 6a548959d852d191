//! Key stores: where keys live, and their lifecycle.
//!
//! A [`KeyStore`] keeps each key's record under the key's digest, never the key. It creates keys
//! (handing out the plaintext exactly once), lists them, renames, revokes, rotates and deletes
//! them, and resolves keys for [`ApiKeyLayer`](crate::ApiKeyLayer). Every change that affects
//! authentication is announced on the store's [`Invalidations`](crate::Invalidations) handle, so
//! a layer built on the store honours it on the very next request.
//!
//! | store | feature | for |
//! |---|---|---|
//! | [`MemoryStore`] | always | tests, demos, keys provisioned at start-up |
//! | [`SqliteStore`] | `sqlite` (default) | one machine: keys in a file |
//! | [`PostgresStore`] | `postgres` | several instances sharing keys |
//!
//! Every change is recorded in the store's [audit trail](audit), with who made it, in the same
//! transaction as the change.
//!
//! The SQL stores ship their migrations: call `migrate()` once at start-up. Their module docs
//! ([`sqlite`], [`postgres`]) describe the tables. All stores pass one conformance suite
//! (`tests/store_conformance.rs`), so they keep the rules below alike.
//!
//! ```
//! use std::time::Duration;
//! use tower_api_key::{Environment, KeyFormat, KeyStore, MemoryStore, NewKey, Scope};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! let created = store
//!     .create(
//!         NewKey::new("Webhook Server", Environment::Live)
//!             .owner("acct_42")
//!             .scopes([Scope::from_static("orders:read")]),
//!     )
//!     .await
//!     .unwrap();
//!
//! // The plaintext is handed out once, here. The store keeps only the digest.
//! println!("your key: {}", created.key.expose_secret());
//!
//! let listed = store.list(Some("acct_42")).await.unwrap();
//! assert_eq!(listed[0].record.name, "Webhook Server");
//! assert_eq!(listed[0].hint, created.key.hint());
//!
//! // Rotate: a new key now, the old one keeps working for an hour, then dies.
//! let rotation = store.rotate(created.id(), Duration::from_secs(3600)).await.unwrap();
//! assert_eq!(rotation.new.stored.record.scopes, created.stored.record.scopes);
//!
//! store.revoke(rotation.new.id()).await.unwrap();
//! assert!(store.get(rotation.new.id()).await.unwrap().record.revoked_at.is_some());
//! # });
//! ```

pub mod audit;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod settings;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod usage;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use self::audit::{Actor, AuditAction, AuditEvent, AuditQuery, MAX_ACTOR_LEN, MAX_AUDIT_PAGE};
pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStore;
pub use self::settings::StoreSettings;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use self::sql::{SqlDatabase, SqlStore};
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteStore;
use crate::key::{push_random_base62, Environment, KeyFormat, KeyGenerationError, PlaintextKey};
use crate::limit::{AllowedNetworks, KeyLimits, RateLimit};
use crate::resolver::{KeyId, KeyRecord, KeyResolver};
use crate::scope::{Scope, ScopeCatalog, ScopeError, ScopeSet};
use crate::usage::{AnonymousIncrement, DailyUsage, Day, KeyUsageSummary, UsageBatch};
/// The version of [sqlx](https://docs.rs/sqlx) the SQL stores are built on, to configure pools
/// with.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sqlx;

/// Longest key name accepted, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// Most days one usage series may cover ([`KeyStore::usage`]): 36,525, a hundred years.
pub const MAX_SERIES_DAYS: u32 = 36_525;

/// The lifecycle of keys. Every store implements it, and resolves keys for the layer.
///
/// Rules every implementation keeps (the crate's conformance tests check them):
///
/// - `create` validates the name (1 to [`MAX_NAME_LEN`] characters, not blank, no control
///   characters), the scopes (against the store's [`ScopeCatalog`], if it has one) and the expiry
///   (in the future), and stores only the digest; the plaintext is in the result and nowhere else.
/// - `list` returns one owner's keys (or everyone's), newest first.
/// - `revoke` is idempotent and records when the key was first revoked.
/// - `rotate` creates a key with the same name, owner, environment, scopes, metadata and
///   [limits](crate::limit), expiring
///   no later than the old one; the old key keeps working for `grace` (never past its own
///   expiry) and is then rejected, and records its replacement. A revoked or expired key cannot
///   be rotated, nor one rotated already ([`StoreError::AlreadyRotated`]).
/// - A failed operation changes nothing.
/// - `set_limits` replaces both of a key's limits (a `None` clears one) and keeps everything
///   else; the key's next request is checked against the new limits.
/// - Every change (`create`, `rename`, `set_limits`, the first `revoke`, `rotate`, `delete` and
///   their `_by` forms) is written to the audit trail in the same transaction, with its
///   [`Actor`]; an invalid actor refuses the change ([`StoreError::InvalidActor`]).
/// - `revoke`, `rotate`, `rename`, `set_limits` and `delete` announce the key on the store's
///   [`Invalidations`](crate::Invalidations) before returning.
#[async_trait]
pub trait KeyStore: KeyResolver {
    /// The format of the keys this store creates.
    fn format(&self) -> &KeyFormat;

    /// Creates a key, recorded in the audit trail as made by [`Actor::system`]. The plaintext
    /// in the result is the only copy there will ever be.
    async fn create(&self, new: NewKey) -> Result<CreatedKey, StoreError> {
        self.create_by(new, &Actor::system()).await
    }

    /// Creates a key for `actor`, and records it in the audit trail. The plaintext in the
    /// result is the only copy there will ever be.
    async fn create_by(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError>;

    /// The key with id `id`.
    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError>;

    /// The keys of `owner` (everyone's for `None`), newest first.
    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError>;

    /// Gives the key a new name, as [`Actor::system`].
    async fn rename(&self, id: &KeyId, name: &str) -> Result<StoredKey, StoreError> {
        self.rename_by(id, name, &Actor::system()).await
    }

    /// Gives the key a new name for `actor`, and records it in the audit trail.
    async fn rename_by(
        &self,
        id: &KeyId,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError>;

    /// Replaces the key's limits, as [`Actor::system`]: see [`set_limits_by`](Self::set_limits_by).
    async fn set_limits(&self, id: &KeyId, limits: KeyLimits) -> Result<StoredKey, StoreError> {
        self.set_limits_by(id, limits, &Actor::system()).await
    }

    /// Replaces the key's rate limit and allowlist for `actor` (a `None` clears one), records
    /// `limits_changed` in the audit trail, and announces the key, so that layers check its
    /// next request against the new limits.
    async fn set_limits_by(
        &self,
        id: &KeyId,
        limits: KeyLimits,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError>;

    /// Revokes the key, as [`Actor::system`]: see [`revoke_by`](Self::revoke_by).
    async fn revoke(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        self.revoke_by(id, &Actor::system()).await
    }

    /// Revokes the key for `actor`: refused from the next request on. Revoking a revoked key
    /// succeeds, keeps the first revocation time and records nothing more in the audit trail.
    async fn revoke_by(&self, id: &KeyId, actor: &Actor) -> Result<StoredKey, StoreError>;

    /// Replaces the key with a new one, as [`Actor::system`]; the old key keeps working for
    /// `grace`.
    async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<Rotation, StoreError> {
        self.rotate_by(id, grace, &Actor::system()).await
    }

    /// Replaces the key with a new one for `actor`; the old key keeps working for `grace`. The
    /// audit trail records `rotated` on the old key and `created` on the new one.
    async fn rotate_by(
        &self,
        id: &KeyId,
        grace: Duration,
        actor: &Actor,
    ) -> Result<Rotation, StoreError>;

    /// Deletes the key for good, as [`Actor::system`].
    async fn delete(&self, id: &KeyId) -> Result<(), StoreError> {
        self.delete_by(id, &Actor::system()).await
    }

    /// Deletes the key for good for `actor`. Its audit trail stays, with a `deleted` entry.
    async fn delete_by(&self, id: &KeyId, actor: &Actor) -> Result<(), StoreError>;

    /// The entries of the audit trail that `query` asks for, newest first.
    ///
    /// The default keeps nothing: [`StoreError::AuditNotKept`].
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let _ = query;
        Err(StoreError::AuditNotKept)
    }

    /// Records that the key was used at `at`; the stored time only moves forward.
    async fn record_use(&self, id: &KeyId, at: SystemTime) -> Result<(), StoreError>;

    /// Adds `batch`'s counts to the counts kept (never overwriting them, so that instances
    /// flushing into one store add up) and moves each key's `last_used_at` forward to the time
    /// given, if later. All of it or nothing. Counts of keys that no longer exist are dropped.
    ///
    /// A count kept for one key, day and outcome (or one day and anonymous outcome) saturates
    /// at `i64::MAX`, the most a SQL `BIGINT` holds, in every store. Moving `last_used_at`
    /// announces nothing on the [`Invalidations`](crate::Invalidations): it changes no answer a
    /// cache holds.
    ///
    /// A batch with an [`id`](UsageBatch::id) that the store already applied is not applied
    /// again, and the call succeeds: a flush whose acknowledgement was lost is written again as
    /// it was, and must count once. A store remembers the ids it applied for at least seven
    /// days; a batch without an id is applied every time.
    ///
    /// The default keeps nothing: [`StoreError::UsageNotKept`].
    async fn record_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let _ = batch;
        Err(StoreError::UsageNotKept)
    }

    /// The requests of key `id` on each day from `from` to `to` (both included), every day in
    /// order, days without requests included with zero counts; none if `from` is after `to`.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownKey`] if no key has this id, and [`StoreError::SeriesTooLong`] for
    /// more than [`MAX_SERIES_DAYS`] days.
    ///
    /// The default keeps nothing: [`StoreError::UsageNotKept`].
    async fn usage(&self, id: &KeyId, from: Day, to: Day) -> Result<Vec<DailyUsage>, StoreError> {
        let _ = (id, from, to);
        Err(StoreError::UsageNotKept)
    }

    /// The keys of `owner` (everyone's for `None`), newest first as [`list`](Self::list)
    /// orders them, each with its requests from `from` to `to` (both included) and its last
    /// use. Keys with no requests are there, with zero totals (as is every key when `from` is
    /// after `to`). A total saturates at `u64::MAX`.
    ///
    /// [`KeyUsageSummary::never_used`] and [`KeyUsageSummary::unused_since`] find the keys to
    /// clean up.
    ///
    /// The default keeps nothing: [`StoreError::UsageNotKept`].
    async fn usage_summary(
        &self,
        owner: Option<&str>,
        from: Day,
        to: Day,
    ) -> Result<Vec<KeyUsageSummary>, StoreError> {
        let _ = (owner, from, to);
        Err(StoreError::UsageNotKept)
    }

    /// The requests whose key was not known, from `from` to `to` (both included), per day and
    /// outcome, in order of day, then of outcome as [`AnonymousOutcome::ALL`] lists them; only
    /// what was counted (no zeros).
    ///
    /// [`AnonymousOutcome::ALL`]: crate::AnonymousOutcome::ALL
    ///
    /// The default keeps nothing: [`StoreError::UsageNotKept`].
    async fn anonymous_usage(
        &self,
        from: Day,
        to: Day,
    ) -> Result<Vec<AnonymousIncrement>, StoreError> {
        let _ = (from, to);
        Err(StoreError::UsageNotKept)
    }

    /// Deletes the daily counts of the days before `before` (keys' and anonymous ones); how
    /// many went, one for each key, day and outcome and each day and anonymous outcome (a row,
    /// in the SQL stores). Last uses stay.
    ///
    /// The default keeps nothing: [`StoreError::UsageNotKept`].
    async fn prune_usage(&self, before: Day) -> Result<u64, StoreError> {
        let _ = before;
        Err(StoreError::UsageNotKept)
    }
}

#[async_trait]
impl<S: KeyStore + ?Sized> KeyStore for Arc<S> {
    fn format(&self) -> &KeyFormat {
        (**self).format()
    }

    async fn create_by(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError> {
        (**self).create_by(new, actor).await
    }

    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        (**self).get(id).await
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError> {
        (**self).list(owner).await
    }

    async fn rename_by(
        &self,
        id: &KeyId,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        (**self).rename_by(id, name, actor).await
    }

    async fn set_limits_by(
        &self,
        id: &KeyId,
        limits: KeyLimits,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        (**self).set_limits_by(id, limits, actor).await
    }

    async fn revoke_by(&self, id: &KeyId, actor: &Actor) -> Result<StoredKey, StoreError> {
        (**self).revoke_by(id, actor).await
    }

    async fn rotate_by(
        &self,
        id: &KeyId,
        grace: Duration,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        (**self).rotate_by(id, grace, actor).await
    }

    async fn delete_by(&self, id: &KeyId, actor: &Actor) -> Result<(), StoreError> {
        (**self).delete_by(id, actor).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        (**self).audit(query).await
    }

    async fn record_use(&self, id: &KeyId, at: SystemTime) -> Result<(), StoreError> {
        (**self).record_use(id, at).await
    }

    async fn record_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        (**self).record_usage(batch).await
    }

    async fn usage(&self, id: &KeyId, from: Day, to: Day) -> Result<Vec<DailyUsage>, StoreError> {
        (**self).usage(id, from, to).await
    }

    async fn usage_summary(
        &self,
        owner: Option<&str>,
        from: Day,
        to: Day,
    ) -> Result<Vec<KeyUsageSummary>, StoreError> {
        (**self).usage_summary(owner, from, to).await
    }

    async fn anonymous_usage(
        &self,
        from: Day,
        to: Day,
    ) -> Result<Vec<AnonymousIncrement>, StoreError> {
        (**self).anonymous_usage(from, to).await
    }

    async fn prune_usage(&self, before: Day) -> Result<u64, StoreError> {
        (**self).prune_usage(before).await
    }
}

/// What to create: a name, an environment, and optionally an owner, scopes, an expiry, metadata
/// and limits.
#[derive(Clone, Debug)]
#[must_use]
pub struct NewKey {
    pub(crate) name: String,
    pub(crate) environment: Environment,
    pub(crate) owner: String,
    pub(crate) scopes: ScopeSet,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) limits: KeyLimits,
}

impl NewKey {
    /// A key named `name` (such as `"Production"`) for `environment`, with no scopes, no owner, no
    /// expiry, no metadata and no limits.
    pub fn new(name: impl Into<String>, environment: Environment) -> Self {
        NewKey {
            name: name.into(),
            environment,
            owner: String::new(),
            scopes: ScopeSet::empty(),
            expires_at: None,
            metadata: BTreeMap::new(),
            limits: KeyLimits::none(),
        }
    }

    /// The account or user that owns the key.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The scopes the key grants. Grant only what the integration needs.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = Scope>) -> Self {
        self.scopes = scopes.into_iter().collect();
        self
    }

    /// When the key stops working; it must be in the future.
    pub fn expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Adds a metadata entry, such as `("team", "integrations")`.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The key's rate limit and allowlist ([`limit`](crate::limit)), replacing any given before.
    pub fn limits(mut self, limits: KeyLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How fast the key may call, such as `"100/s burst 20".parse()?`.
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.limits.rate = Some(rate);
        self
    }

    /// The networks the key may be used from.
    pub fn allowed_networks(mut self, networks: AllowedNetworks) -> Self {
        self.limits.networks = Some(networks);
        self
    }
}

/// A newly created key: the plaintext, shown once, and what the store keeps about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct CreatedKey {
    /// The key itself. Show it to its owner now: it cannot be shown again.
    pub key: PlaintextKey,
    /// Everything the store keeps about the key.
    pub stored: StoredKey,
}

impl CreatedKey {
    /// The new key's id.
    pub fn id(&self) -> &KeyId {
        &self.stored.record.id
    }
}

/// The result of [`KeyStore::rotate`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Rotation {
    /// The replacement, with its plaintext shown once.
    pub new: CreatedKey,
    /// The old key, with its shortened expiry.
    pub old: StoredKey,
}

/// A key as a store lists it. Never the plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredKey {
    /// The key's record: id, name, owner, environment, scopes, expiry, revocation.
    pub record: KeyRecord,
    /// A display hint such as `om_live_…x7Qa`.
    pub hint: String,
    /// When the key was created.
    pub created_at: SystemTime,
    /// When the key was last used, if it was.
    pub last_used_at: Option<SystemTime>,
    /// Free-form metadata given at creation.
    pub metadata: BTreeMap<String, String>,
    /// The key that replaced this one in a rotation: this one then works only until the end of
    /// its grace period.
    pub replaced_by: Option<KeyId>,
}

impl StoredKey {
    /// A stored key, for stores outside this crate that build their own.
    pub fn new(record: KeyRecord, hint: impl Into<String>, created_at: SystemTime) -> Self {
        StoredKey {
            record,
            hint: hint.into(),
            created_at,
            last_used_at: None,
            metadata: BTreeMap::new(),
            replaced_by: None,
        }
    }
}

/// Why a store refused or failed an operation. Messages never contain a key.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The name is empty or only whitespace.
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`] characters.
    NameTooLong,
    /// The name has control characters such as a newline.
    NameHasControlCharacters,
    /// A scope is malformed or not in the store's catalogue.
    InvalidScope(ScopeError),
    /// The expiry is not in the future.
    ExpiryInPast,
    /// No key has this id.
    UnknownKey(KeyId),
    /// The key is revoked, so it cannot be rotated.
    Revoked(KeyId),
    /// The key is expired, so it cannot be rotated.
    Expired(KeyId),
    /// The key was rotated already and is in its grace period: rotating it again would give a
    /// new key that dies with the old one. Rotate its replacement instead.
    AlreadyRotated {
        /// The key asked for.
        id: KeyId,
        /// The key that replaced it.
        replacement: KeyId,
    },
    /// The database's keys have another format than the store was configured with: the store
    /// would refuse every one of them.
    FormatMismatch {
        /// The prefix recorded in the database.
        recorded: String,
        /// The prefix of the store's format.
        configured: String,
    },
    /// The database has no key format recorded yet: it is new, or was not migrated by a version
    /// that records it. Open it with a format and migrate it.
    NoRecordedFormat,
    /// A PostgreSQL schema name that PostgreSQL cannot hold exactly.
    InvalidSchemaName(String),
    /// The random number generator failed.
    KeyGeneration(KeyGenerationError),
    /// The store keeps no usage counts (a store of your own that does not implement them).
    UsageNotKept,
    /// A usage series of more than [`MAX_SERIES_DAYS`] days was asked for.
    SeriesTooLong,
    /// The store keeps no audit trail (a store of your own that does not implement one).
    AuditNotKept,
    /// An [`Actor`] id that is blank, longer than [`MAX_ACTOR_LEN`] characters or holds control
    /// characters.
    InvalidActor,
    /// The store could not be reached or failed; nothing was changed.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A failure of the database or service behind a store.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Unavailable(source.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::EmptyName => f.write_str("a key needs a name"),
            StoreError::NameTooLong => {
                write!(f, "a key name is at most {MAX_NAME_LEN} characters long")
            }
            StoreError::NameHasControlCharacters => {
                f.write_str("a key name cannot contain control characters")
            }
            StoreError::InvalidScope(err) => err.fmt(f),
            StoreError::ExpiryInPast => f.write_str("a key's expiry must be in the future"),
            StoreError::UnknownKey(id) => write!(f, "no key has the id `{id}`"),
            StoreError::Revoked(id) => write!(f, "key `{id}` is revoked"),
            StoreError::Expired(id) => write!(f, "key `{id}` is expired"),
            StoreError::AlreadyRotated { id, replacement } => write!(
                f,
                "key `{id}` was rotated already and is in its grace period: its replacement is \
                 `{replacement}`; rotate that one instead"
            ),
            StoreError::FormatMismatch {
                recorded,
                configured,
            } => write!(
                f,
                "the store's keys have the prefix `{recorded}`, but it was opened for keys with \
                 the prefix `{configured}`: open it with the format it was created with"
            ),
            StoreError::UsageNotKept => f.write_str("the key store keeps no usage counts"),
            StoreError::SeriesTooLong => {
                write!(f, "a usage series covers at most {MAX_SERIES_DAYS} days")
            }
            StoreError::AuditNotKept => f.write_str("the key store keeps no audit trail"),
            StoreError::InvalidActor => write!(
                f,
                "an actor id must be 1 to {MAX_ACTOR_LEN} characters long, not blank, without \
                 control characters"
            ),
            StoreError::NoRecordedFormat => f.write_str(
                "the store has no key format recorded yet: open it with a format and migrate it",
            ),
            StoreError::InvalidSchemaName(reason) => {
                write!(f, "invalid PostgreSQL schema name: {reason}")
            }
            StoreError::KeyGeneration(err) => err.fmt(f),
            StoreError::Unavailable(err) => write!(f, "the key store is unavailable: {err}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::InvalidScope(err) => Some(err),
            StoreError::KeyGeneration(err) => Some(err),
            StoreError::Unavailable(err) => Some(&**err),
            _ => None,
        }
    }
}

impl From<KeyGenerationError> for StoreError {
    fn from(err: KeyGenerationError) -> Self {
        StoreError::KeyGeneration(err)
    }
}

impl From<ScopeError> for StoreError {
    fn from(err: ScopeError) -> Self {
        StoreError::InvalidScope(err)
    }
}

/// Checks a name: not blank, not too long, no control characters. Returns it trimmed.
pub(crate) fn validate_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::EmptyName);
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(StoreError::NameTooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::NameHasControlCharacters);
    }
    Ok(name)
}

/// Checks a new key against `now` and the store's catalogue.
pub(crate) fn validate(
    new: &NewKey,
    now: SystemTime,
    catalog: Option<&ScopeCatalog>,
) -> Result<(), StoreError> {
    validate_name(&new.name)?;
    if let Some(catalog) = catalog {
        for scope in &new.scopes {
            catalog.get(scope.as_str())?;
        }
    }
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(StoreError::ExpiryInPast);
    }
    Ok(())
}

/// A fresh key id: `key_` and 16 base62 characters.
pub(crate) fn new_key_id() -> Result<KeyId, KeyGenerationError> {
    let mut id = String::from("key_");
    push_random_base62(&mut id, 16)?;
    Ok(KeyId::from(id))
}

/// Generates a key for `new` and builds what a store keeps about it, at `now`.
pub(crate) fn prepare(
    format: &KeyFormat,
    new: NewKey,
    now: SystemTime,
    catalog: Option<&ScopeCatalog>,
) -> Result<CreatedKey, StoreError> {
    validate(&new, now, catalog)?;
    let key = format.generate(new.environment)?;
    let record = KeyRecord::new(new_key_id()?, new.environment, new.scopes)
        .with_name(new.name.trim())
        .with_owner(new.owner)
        .with_expires_at(new.expires_at)
        .with_limits(new.limits);
    let mut stored = StoredKey::new(record, key.hint(), now);
    stored.metadata = new.metadata;
    Ok(CreatedKey { key, stored })
}

/// What a rotation of `old` at `now` with `grace` creates, and the old key's new expiry.
///
/// # Errors
///
/// If the old key is revoked or expired.
pub(crate) fn plan_rotation(
    format: &KeyFormat,
    old: &StoredKey,
    grace: Duration,
    now: SystemTime,
) -> Result<(CreatedKey, SystemTime), StoreError> {
    let record = &old.record;
    if record.revoked_at.is_some() {
        return Err(StoreError::Revoked(record.id.clone()));
    }
    if record.is_expired_at(now) {
        return Err(StoreError::Expired(record.id.clone()));
    }
    if let Some(replacement) = &old.replaced_by {
        return Err(StoreError::AlreadyRotated {
            id: record.id.clone(),
            replacement: replacement.clone(),
        });
    }
    let grace_end = now.checked_add(grace).unwrap_or(now);
    let old_expires_at = match record.expires_at {
        Some(expires_at) => expires_at.min(grace_end),
        None => grace_end,
    };
    let mut new = NewKey::new(record.name.clone(), record.environment)
        .owner(record.owner.clone())
        .scopes(record.scopes.iter().cloned());
    new.expires_at = record.expires_at;
    new.metadata = old.metadata.clone();
    new.limits = record.limits.clone();
    // The new key copies a key that passed validation, so only generation can fail here.
    let created = prepare(format, new, now, None)?;
    Ok((created, old_expires_at))
}
