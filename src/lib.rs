#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    clippy::unwrap_used
)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

// Every public type and trait is re-exported here, at the crate root: import from
// `tower_api_key::` and nothing deeper. The modules hold the guides (their docs) and keep the
// code apart; `tests/public_surface.rs` checks that nothing public is left out.
#[cfg(feature = "admin")]
pub mod admin;
mod cache;
pub mod client;
pub mod clock;
pub mod credentials;
mod events;
pub mod invalidation;
pub mod key;
pub mod layer;
pub mod limit;
pub mod metrics;
pub mod principal;
pub mod rejection;
pub mod resolver;
pub mod scope;
pub mod store;
pub mod usage;

#[cfg(feature = "admin")]
pub use crate::admin::{AdminIdentity, AdminRouter};
pub use crate::cache::CacheStats;
pub use crate::client::{PeerAddress, TrustedProxies};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::credentials::Credentials;
#[cfg(feature = "redis")]
pub use crate::invalidation::RedisBus;
pub use crate::invalidation::{
    BusError, ChannelHealth, InvalidMessage, Invalidation, InvalidationBus, InvalidationStream,
    Invalidations, Watcher, WatcherBuilder,
};
pub use crate::key::{
    Environment, InvalidPrefix, KeyDigest, KeyFormat, KeyGenerationError, MalformedKey, ParsedKey,
    PlaintextKey, UnknownEnvironment,
};
pub use crate::layer::{ApiKeyLayer, ApiKeyLayerBuilder, ApiKeyResponseFuture, ApiKeyService};
pub use crate::limit::{AllowedNetworks, InvalidLimit, KeyLimits, RateDecision, RateLimit};
#[cfg(feature = "redis")]
pub use crate::limit::{LimiterError, RedisDownPolicy, RedisLimiter};
pub use crate::principal::{Principal, PrincipalRejection};
pub use crate::rejection::{
    InsufficientScope, InvalidKey, InvalidRequest, MissingLayer, ProblemJson, RateLimited, Refused,
    Rejection, Responder,
};
pub use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};
pub use crate::scope::{
    RequireScopes, RequireScopesResponseFuture, RequireScopesService, Scope, ScopeCatalog,
    ScopeError, ScopeRequirement, ScopeSet,
};
#[cfg(feature = "axum")]
pub use crate::scope::{RequiredScopes, Scoped};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use crate::store::SqliteStore;
pub use crate::store::{
    Actor, AuditAction, AuditEvent, AuditQuery, CreatedKey, KeyStore, MemoryStore, NewKey,
    Rotation, StoreError, StoreSettings, StoredKey,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use crate::store::{SqlDatabase, SqlStore};
pub use crate::usage::{
    AnonymousIncrement, AnonymousOutcome, BatchId, DailyUsage, Day, KeyIncrement, KeyOutcome,
    KeyUsageSummary, OutcomeCounts, UsageBatch, UsageSettings,
};

#[doc(hidden)]
pub mod __private {
    //! Used by the crate's macros; not part of the API.

    use crate::scope::{ScopeError, ScopeRequirement};

    /// One look at a SQLite store's invalidation log from `seq` `last` on, as its watcher takes
    /// every interval: for the benchmark of what watching costs when nothing changes.
    #[cfg(feature = "sqlite")]
    pub async fn read_invalidation_log(
        store: &crate::SqliteStore,
        last: i64,
    ) -> Result<usize, crate::StoreError> {
        crate::store::sqlite::read_log(store.pool(), last)
            .await
            .map(|rows| rows.len())
            .map_err(crate::store::sql::table::unavailable)
    }

    /// The decisions of a fresh key bucket at `rate` (and a fresh owner bucket at `owner`, if
    /// given) for requests at `times` (nanoseconds): what `tests/redis_limiter.rs` compares the
    /// Redis script with.
    pub fn gcra_decisions(
        rate: &crate::RateLimit,
        owner: Option<&crate::RateLimit>,
        times: &[u64],
    ) -> Vec<crate::RateDecision> {
        use crate::limit::{check_both, GcraCell};
        let (key_cell, owner_cell) = (GcraCell::new(), GcraCell::new());
        times
            .iter()
            .map(|&now| match owner {
                Some(owner) => check_both((&key_cell, rate), (&owner_cell, owner), now),
                None => key_cell.check(rate, now),
            })
            .collect()
    }

    /// One bucket at `rate`, checked at the `now` it is given (nanoseconds): for the benchmark
    /// of `GcraCell::check`.
    pub fn gcra_check(rate: crate::RateLimit) -> impl FnMut(u64) -> crate::RateDecision {
        let cell = crate::limit::GcraCell::new();
        move |now| cell.check(&rate, now)
    }

    /// One bucket that threads share: for the benchmark of checks from several cores at once.
    pub fn gcra_shared(
        rate: crate::RateLimit,
    ) -> std::sync::Arc<dyn Fn(u64) -> crate::RateDecision + Send + Sync> {
        let cell = crate::limit::GcraCell::new();
        std::sync::Arc::new(move |now| cell.check(&rate, now))
    }

    /// A key's bucket and its owner's, checked together: for the benchmark of `check_both`.
    pub fn gcra_check_both(
        rate: crate::RateLimit,
        owner: crate::RateLimit,
    ) -> impl FnMut(u64) -> crate::RateDecision {
        let (key_cell, owner_cell) = (crate::limit::GcraCell::new(), crate::limit::GcraCell::new());
        move |now| crate::limit::check_both((&key_cell, &rate), (&owner_cell, &owner), now)
    }

    /// A `LocalLimiter` holding `held` buckets, and a look-up of a key it does not hold (the
    /// miss path: a new bucket made and inserted), followed by taking that bucket out again so
    /// that every call is a miss: for the benchmark of `LocalLimiter::cell`.
    pub fn local_limiter_miss(held: usize) -> impl FnMut(&crate::KeyId) {
        use crate::limit::{LimitKey, LocalLimiter};
        let limiter = LocalLimiter::default();
        let kept: Vec<_> = (0..held)
            .map(|n| limiter.cell(&LimitKey::Key(crate::KeyId::from(format!("held_{n}")))))
            .collect();
        move |key| {
            let key = LimitKey::Key(key.clone());
            drop(limiter.cell(&key));
            limiter.forget(&key);
            debug_assert_eq!(limiter.len(), kept.len());
        }
    }

    /// The clock of the in-process buckets, in nanoseconds.
    pub fn now_nanos() -> u64 {
        crate::limit::now_nanos()
    }

    /// [`RedisLimiter::check`](crate::RedisLimiter::check) at `at` (seconds and microseconds, as
    /// Redis's `TIME` gives them) instead of Redis's clock: for tests.
    #[cfg(feature = "redis")]
    pub async fn redis_check_at(
        limiter: &crate::RedisLimiter,
        key: &crate::KeyId,
        rate: &crate::RateLimit,
        owner: Option<(&str, &crate::RateLimit)>,
        at: (u64, u32),
    ) -> Result<crate::RateDecision, crate::LimiterError> {
        limiter.check_at(key, rate, owner, Some(at)).await
    }

    /// The requirement built by `scope_requirement!`.
    pub fn non_empty(built: Result<ScopeRequirement, ScopeError>) -> ScopeRequirement {
        // The macro only accepts one scope or more, so the requirement is never empty.
        built.unwrap_or_else(|err| panic!("scope_requirement!: {err}"))
    }
}
