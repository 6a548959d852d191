//! The audit trail: who changed which key, when, and from where.
//!
//! Every lifecycle change a store makes through [`KeyStore`](super::KeyStore) (created, renamed,
//! limits changed, rotated, revoked, deleted) is written to the store's audit trail in the same transaction as
//! the change itself, with the [`Actor`] that asked for it: a change and its entry are kept or
//! lost together. The trail never holds a key's text or digest: only ids, owners, names and who
//! did what.
//!
//! The `_by` forms of the lifecycle methods ([`create_by`], [`rename_by`], [`set_limits_by`],
//! [`revoke_by`], [`rotate_by`], [`delete_by`]) take the actor, which the host application names (the crate
//! authenticates nobody); the plain forms record [`Actor::system`]. An actor id that is blank,
//! longer than [`MAX_ACTOR_LEN`] characters or holds control characters is refused before
//! anything is written ([`StoreError::InvalidActor`](super::StoreError::InvalidActor)).
//!
//! What each change records, as an [`AuditEvent`]:
//!
//! | change | entries |
//! |---|---|
//! | create | `created` |
//! | rename | `renamed`, with the new name |
//! | set limits | `limits_changed` (the entry names no limits: read them from the key) |
//! | revoke | `revoked`, the first time only: revoking a revoked key records nothing |
//! | rotate | `rotated` on the old key and `created` on the new one, each naming the other as `related_key` |
//! | delete | `deleted`, with the key's last owner and name; the key's earlier entries stay |
//!
//! [`KeyStore::audit`](super::KeyStore::audit) reads the trail newest first, filtered by an
//! [`AuditQuery`]: one owner's keys, one key (deleted or not), a page of at most
//! [`MAX_AUDIT_PAGE`] entries, and the next page [`before`](AuditQuery::before) the last entry
//! read. The SQL stores keep the trail in the table `api_key_audit` (see their module docs).
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use tower_api_key::{
//!     Actor, AuditAction, AuditQuery, Environment, KeyFormat, KeyStore, MemoryStore, NewKey,
//! };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! // Who the host application says is signed in, and where the request came from.
//! let alice = Actor::new("user:alice").from_address(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
//!
//! let new = NewKey::new("Webhook Server", Environment::Live).owner("acct_42");
//! let created = store.create_by(new, &alice).await.unwrap();
//! store.revoke_by(created.id(), &alice).await.unwrap();
//! // Revoked already: nothing changes, and nothing more is recorded.
//! store.revoke(created.id()).await.unwrap();
//!
//! let trail = store
//!     .audit(&AuditQuery::all().key(created.id().clone()))
//!     .await
//!     .unwrap();
//! let actions: Vec<AuditAction> = trail.iter().map(|event| event.action).collect();
//! assert_eq!(actions, [AuditAction::Revoked, AuditAction::Created]);
//! assert_eq!(trail[0].actor, "user:alice");
//! assert_eq!(trail[0].address, alice.address());
//! assert_eq!((trail[1].owner.as_str(), trail[1].key_name.as_str()), ("acct_42", "Webhook Server"));
//!
//! // The next page: the entries before the last one read (none left here).
//! let older = AuditQuery::all().key(created.id().clone()).before(trail[1].seq);
//! assert!(store.audit(&older).await.unwrap().is_empty());
//! # });
//! ```
//!
//! [`create_by`]: super::KeyStore::create_by
//! [`rename_by`]: super::KeyStore::rename_by
//! [`set_limits_by`]: super::KeyStore::set_limits_by
//! [`revoke_by`]: super::KeyStore::revoke_by
//! [`rotate_by`]: super::KeyStore::rotate_by
//! [`delete_by`]: super::KeyStore::delete_by

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::resolver::KeyId;

/// Longest actor id accepted, in characters.
pub const MAX_ACTOR_LEN: usize = 200;

/// Who made a change, and from which address: what the audit trail records about them.
///
/// The host application says who the actor is (a user id, an e-mail address, `cli:alice`); the
/// crate never authenticates anyone. Changes made through the lifecycle methods without an actor
/// (such as [`KeyStore::revoke`](super::KeyStore::revoke)) are recorded as [`Actor::system`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Actor {
    id: String,
    address: Option<IpAddr>,
}

impl Actor {
    /// The actor `id`, such as `"user:1234"` or `"alice@example.com"`, from no known address.
    ///
    /// A store refuses an id that is blank, longer than [`MAX_ACTOR_LEN`] characters or holds
    /// control characters ([`StoreError::InvalidActor`](super::StoreError::InvalidActor)).
    pub fn new(id: impl Into<String>) -> Self {
        Actor {
            id: id.into(),
            address: None,
        }
    }

    /// The actor of changes made without one: `system`.
    pub fn system() -> Self {
        Actor::new("system")
    }

    /// The address the change came from.
    pub fn from_address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }

    /// Who the actor is.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the change came from, if known.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// Checks the id: not blank, not too long, no control characters.
    pub(crate) fn validate(&self) -> Result<(), super::StoreError> {
        let id = self.id.as_str();
        if id.trim().is_empty()
            || id.chars().count() > MAX_ACTOR_LEN
            || id.chars().any(char::is_control)
        {
            return Err(super::StoreError::InvalidActor);
        }
        Ok(())
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AuditAction {
    /// The key was created (on its own, or as the replacement in a rotation).
    Created,
    /// The key was given a new name.
    Renamed,
    /// The key's rate limit or allowlist was replaced.
    LimitsChanged,
    /// The key was replaced by a new one and entered its grace period.
    Rotated,
    /// The key was revoked (recorded once: revoking a revoked key changes nothing).
    Revoked,
    /// The key was deleted.
    Deleted,
}

impl AuditAction {
    /// Every action, in lifecycle order.
    pub const ALL: [AuditAction; 6] = [
        AuditAction::Created,
        AuditAction::Renamed,
        AuditAction::LimitsChanged,
        AuditAction::Rotated,
        AuditAction::Revoked,
        AuditAction::Deleted,
    ];

    /// The action's name: `created`, `renamed`, `limits_changed`, `rotated`, `revoked` or
    /// `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Created => "created",
            AuditAction::Renamed => "renamed",
            AuditAction::LimitsChanged => "limits_changed",
            AuditAction::Rotated => "rotated",
            AuditAction::Revoked => "revoked",
            AuditAction::Deleted => "deleted",
        }
    }

    /// The action named `name`, as [`as_str`](Self::as_str) writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the audit trail. Never a key's text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEvent {
    /// The entry's number in its store: later entries have larger numbers.
    pub seq: u64,
    /// When the change was made.
    pub at: SystemTime,
    /// What was done.
    pub action: AuditAction,
    /// The key it was done to.
    pub key_id: KeyId,
    /// The key's owner.
    pub owner: String,
    /// The key's name after the change (before it, for a deletion).
    pub key_name: String,
    /// Who did it.
    pub actor: String,
    /// From where, if known.
    pub address: Option<IpAddr>,
    /// The other key of a rotation: the replacement on the old key's `rotated` entry, the old
    /// key on the replacement's `created` entry.
    pub related_key: Option<KeyId>,
}

impl AuditEvent {
    /// An entry, for stores outside this crate that build their own.
    pub fn new(
        seq: u64,
        at: SystemTime,
        action: AuditAction,
        key_id: KeyId,
        actor: &Actor,
    ) -> Self {
        AuditEvent {
            seq,
            at,
            action,
            key_id,
            owner: String::new(),
            key_name: String::new(),
            actor: actor.id.clone(),
            address: actor.address,
            related_key: None,
        }
    }
}

/// Which entries of the audit trail to read: one owner's or one key's (or all), newest first,
/// a page at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct AuditQuery {
    pub(crate) owner: Option<String>,
    pub(crate) key: Option<KeyId>,
    pub(crate) before: Option<u64>,
    pub(crate) limit: Option<u32>,
}

/// Most entries one [`AuditQuery`] returns, and how many it returns unless told otherwise.
pub const MAX_AUDIT_PAGE: u32 = 1000;

impl AuditQuery {
    /// Every entry, newest first.
    pub fn all() -> Self {
        AuditQuery::default()
    }

    /// Only the entries of keys owned by `owner`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Only the entries of key `id` (deleted keys included).
    pub fn key(mut self, id: KeyId) -> Self {
        self.key = Some(id);
        self
    }

    /// Only entries older than entry `seq`: the next page after one that ended at `seq`.
    pub fn before(mut self, seq: u64) -> Self {
        self.before = Some(seq);
        self
    }

    /// At most `limit` entries (at most [`MAX_AUDIT_PAGE`]).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The owner asked for, if any.
    pub fn owner_filter(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The key asked for, if any.
    pub fn key_filter(&self) -> Option<&KeyId> {
        self.key.as_ref()
    }

    /// The entry the page starts after, if any.
    pub fn before_seq(&self) -> Option<u64> {
        self.before
    }

    /// How many entries the page holds at most: the limit asked for, within
    /// 1..=[`MAX_AUDIT_PAGE`].
    pub fn page_size(&self) -> u32 {
        self.limit
            .unwrap_or(MAX_AUDIT_PAGE)
            .clamp(1, MAX_AUDIT_PAGE)
    }

    /// Whether `event` is one this query asks for (ignoring the page size).
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.owner
            .as_deref()
            .is_none_or(|owner| event.owner == owner)
            && self.key.as_ref().is_none_or(|key| &event.key_id == key)
            && self.before.is_none_or(|before| event.seq < before)
    }
}
