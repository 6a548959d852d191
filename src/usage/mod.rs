//! Usage per key: what each key did, day by day, counted without a write per request.
//!
//! An [`ApiKeyLayer`](crate::ApiKeyLayer) built on a [`KeyStore`](crate::KeyStore) counts every
//! request it decides, in memory, per key, per UTC day and per [`KeyOutcome`]: let through
//! (`allowed`), refused for a missing scope, revoked or expired. Requests whose key is not known
//! (no key, a malformed key, an unknown key) are counted only in aggregate, per
//! [`AnonymousOutcome`], never per digest, so made-up keys cannot fill the store.
//!
//! Counting costs a request an atomic addition in the key's cache entry: no await, no I/O, no
//! lock (see `BENCHMARKS.md` for the figures). A request let through is counted when its response
//! comes back, as `insufficient_scope` if a scope check further in ([`RequireScopes`](crate::RequireScopes),
//! the `Scoped` extractor) refused it, which the [`Rejection`](crate::Rejection)
//! in the response's extensions says (a middleware between them that drops a response's
//! extensions makes such a refusal count as `allowed`), and as `allowed` otherwise, also when the
//! response never comes (the client went away). A background task hands the counts to the store
//! every [`flush_interval`](UsageSettings::flush_interval) (10 seconds by default) in one
//! [`UsageBatch`] of increments, so that any number of instances flushing into one database add
//! up exactly; a key's `last_used_at` is written at most once a
//! [`last_used_period`](UsageSettings::last_used_period) (a minute). While the store cannot take
//! a batch, the counts stay in memory and are tried again at the next flush, up to
//! [`max_pending`](UsageSettings::max_pending) keys and days; past that, new ones are dropped,
//! counted and logged. Flushes are idempotent: a failed batch is written again as it was, with
//! its [`BatchId`], which a store applies once, so a retried batch is never counted twice, even
//! when the store had committed it and only the acknowledgement was lost. Once a day the task deletes counts older than the
//! [retention](UsageSettings::retention_days) (90 days).
//!
//! The task starts with the first request inside a Tokio runtime and stops when the layer (every
//! clone of it, and every service it made) is dropped, writing what is left. For a graceful
//! shutdown, call [`ApiKeyLayer::flush_usage`](crate::ApiKeyLayer::flush_usage) after the server
//! stopped taking requests: it writes everything counted so far and says whether the store took
//! it.
//!
//! A store answers for what it kept: [`KeyStore::usage`](crate::KeyStore::usage) gives one key's
//! [`DailyUsage`] over a range of days, and
//! [`KeyStore::usage_summary`](crate::KeyStore::usage_summary) an owner's keys with their
//! totals and last use, to find unused keys or a leaked one at work.
//!
//! Every store of the crate keeps them: [`MemoryStore`](crate::MemoryStore) in memory, and the
//! SQL stores in two tables, `api_key_usage` (`key_id`, `day`, `outcome`, `requests`: one row per
//! key, day and outcome that had requests, deleted with the key) and `api_key_anonymous_usage`
//! (`day`, `outcome`, `requests`), and the ids of the batches applied in
//! `api_key_usage_batches`. A flush is one transaction; counts saturate at `i64::MAX`.
//! [`KeyStore::prune_usage`](crate::KeyStore::prune_usage) deletes the days past a retention
//! (the command-line tool's `prune-usage --keep 90d`), and `tower-api-key usage` shows them.
//!
//! A store that keeps no usage ([`StoreError::UsageNotKept`](crate::StoreError::UsageNotKept)) is
//! told once in the log, and the layer stops counting.
//!
//! A layer on a resolver of your own records usage only when given a store for it
//! ([`ApiKeyLayerBuilder::usage_store`](crate::ApiKeyLayerBuilder::usage_store));
//! [`UsageSettings::off`] turns recording off for any layer.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{header, Request};
//! use tower::ServiceExt;
//! use tower_api_key::{
//!     ApiKeyLayer, Day, Environment, KeyFormat, KeyStore, MemoryStore, NewKey, UsageSettings,
//! };
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(KeyFormat::new("om").unwrap());
//! let created = store.create(NewKey::new("Production", Environment::Live)).await.unwrap();
//! let layer = ApiKeyLayer::builder(store.clone())
//!     .usage(UsageSettings::new().retention_days(Some(30)))
//!     .build();
//! let app = Router::new().route("/", get(|| async { "ok" })).layer(layer.clone());
//!
//! let bearer = format!("Bearer {}", created.key.expose_secret());
//! for _ in 0..3 {
//!     let request = Request::get("/").header(header::AUTHORIZATION, &bearer);
//!     app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
//! }
//!
//! // On shutdown (here at once): everything counted reaches the store.
//! layer.flush_usage().await.unwrap();
//! let today = Day::today();
//! let usage = store.usage(created.id(), today, today).await.unwrap();
//! assert_eq!(usage[0].counts.allowed, 3);
//! let stored = store.get(created.id()).await.unwrap();
//! assert!(stored.last_used_at.is_some());
//! # });
//! ```

mod recorder;
mod settings;
pub(crate) mod tally;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use self::recorder::{Flush, UsageRecorder};
pub use self::settings::UsageSettings;
use crate::resolver::KeyId;

const SECONDS_PER_DAY: u64 = 86_400;

/// A UTC calendar day, counted from 1970-01-01 (day 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i32);

impl Day {
    /// The day `at` falls on, in UTC.
    pub fn of(at: SystemTime) -> Day {
        let days = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs() / SECONDS_PER_DAY).unwrap_or(i64::MAX),
            // Before the epoch: the day that holds the instant, rounding down.
            Err(before) => {
                let before = before.duration();
                let whole = before.as_secs() / SECONDS_PER_DAY;
                let partial = before > Duration::from_secs(whole * SECONDS_PER_DAY);
                -i64::try_from(whole + u64::from(partial)).unwrap_or(i64::MAX)
            }
        };
        Day(i32::try_from(days).unwrap_or(if days < 0 { i32::MIN } else { i32::MAX }))
    }

    /// Today, in UTC.
    pub fn today() -> Day {
        Day::of(SystemTime::now())
    }

    /// The day `days` days after 1970-01-01 (before it, for a negative number).
    pub const fn from_days_since_epoch(days: i32) -> Day {
        Day(days)
    }

    /// How many days after 1970-01-01 this day is.
    pub const fn days_since_epoch(self) -> i32 {
        self.0
    }

    /// The day `days` days later (earlier, for a negative number), saturating.
    pub const fn add_days(self, days: i32) -> Day {
        Day(self.0.saturating_add(days))
    }

    /// Midnight UTC at the start of the day.
    pub fn start(self) -> SystemTime {
        let seconds = u64::from(self.0.unsigned_abs()) * SECONDS_PER_DAY;
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_secs(seconds)
        } else {
            UNIX_EPOCH - Duration::from_secs(seconds)
        }
    }

    /// The calendar date: year, month (1 to 12), day of the month (1 to 31).
    pub fn date(self) -> (i32, u8, u8) {
        // Howard Hinnant's `civil_from_days`, in whole numbers.
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (
            i32::try_from(year).unwrap_or(i32::MAX),
            u8::try_from(month).unwrap_or(1),
            u8::try_from(day).unwrap_or(1),
        )
    }
}

/// `YYYY-MM-DD`.
impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.date();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

/// What became of a request that presented a known key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyOutcome {
    /// Let through to the service (whatever the service then answered).
    Allowed,
    /// Refused with `403`: the key lacks a scope the route requires.
    InsufficientScope,
    /// Refused with `401`: the key is revoked.
    Revoked,
    /// Refused with `401`: the key has expired.
    Expired,
    /// Refused with `429`: the key (or its owner) is over its rate limit.
    RateLimited,
}

impl KeyOutcome {
    /// Every outcome, in the order of [`OutcomeCounts`]' fields.
    pub const ALL: [KeyOutcome; 5] = [
        KeyOutcome::Allowed,
        KeyOutcome::InsufficientScope,
        KeyOutcome::Revoked,
        KeyOutcome::Expired,
        KeyOutcome::RateLimited,
    ];

    /// `allowed`, `insufficient_scope`, `revoked`, `expired` or `rate_limited`: the name stores,
    /// metrics and JSON use.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyOutcome::Allowed => "allowed",
            KeyOutcome::InsufficientScope => "insufficient_scope",
            KeyOutcome::Revoked => "revoked",
            KeyOutcome::Expired => "expired",
            KeyOutcome::RateLimited => "rate_limited",
        }
    }

    /// The outcome named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn from_name(name: &str) -> Option<KeyOutcome> {
        KeyOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }

    /// Its place in [`ALL`](Self::ALL).
    pub(crate) const fn index(self) -> usize {
        match self {
            KeyOutcome::Allowed => 0,
            KeyOutcome::InsufficientScope => 1,
            KeyOutcome::Revoked => 2,
            KeyOutcome::Expired => 3,
            KeyOutcome::RateLimited => 4,
        }
    }
}

impl fmt::Display for KeyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a request whose key is not known: counted in aggregate only, since counting
/// per digest would let anyone fill the store with made-up keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AnonymousOutcome {
    /// No credentials (refused with `401`, or let through by an optional layer).
    Missing,
    /// Credentials that are not a well-formed key of the layer's format (`400`, or `401` for a
    /// key whose checksum is wrong).
    Malformed,
    /// A well-formed key that no store knows, or of an environment the layer does not accept.
    Unknown,
}

impl AnonymousOutcome {
    /// Every outcome.
    pub const ALL: [AnonymousOutcome; 3] = [
        AnonymousOutcome::Missing,
        AnonymousOutcome::Malformed,
        AnonymousOutcome::Unknown,
    ];

    /// `missing`, `malformed` or `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AnonymousOutcome::Missing => "missing",
            AnonymousOutcome::Malformed => "malformed",
            AnonymousOutcome::Unknown => "unknown",
        }
    }

    /// The outcome named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn from_name(name: &str) -> Option<AnonymousOutcome> {
        AnonymousOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }
}

impl fmt::Display for AnonymousOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Requests counted by [`KeyOutcome`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OutcomeCounts {
    /// Let through.
    pub allowed: u64,
    /// Refused for a missing scope.
    pub insufficient_scope: u64,
    /// Refused as revoked.
    pub revoked: u64,
    /// Refused as expired.
    pub expired: u64,
    /// Refused as over the rate limit.
    pub rate_limited: u64,
}

impl OutcomeCounts {
    /// The count of `outcome`.
    pub fn get(&self, outcome: KeyOutcome) -> u64 {
        match outcome {
            KeyOutcome::Allowed => self.allowed,
            KeyOutcome::InsufficientScope => self.insufficient_scope,
            KeyOutcome::Revoked => self.revoked,
            KeyOutcome::Expired => self.expired,
            KeyOutcome::RateLimited => self.rate_limited,
        }
    }

    /// Adds `count` to `outcome`'s count, saturating.
    pub fn add(&mut self, outcome: KeyOutcome, count: u64) {
        let slot = match outcome {
            KeyOutcome::Allowed => &mut self.allowed,
            KeyOutcome::InsufficientScope => &mut self.insufficient_scope,
            KeyOutcome::Revoked => &mut self.revoked,
            KeyOutcome::Expired => &mut self.expired,
            KeyOutcome::RateLimited => &mut self.rate_limited,
        };
        *slot = slot.saturating_add(count);
    }

    /// Adds every count of `other`.
    pub fn add_all(&mut self, other: &OutcomeCounts) {
        for outcome in KeyOutcome::ALL {
            self.add(outcome, other.get(outcome));
        }
    }

    /// Every request counted.
    pub fn total(&self) -> u64 {
        KeyOutcome::ALL
            .into_iter()
            .fold(0u64, |sum, outcome| sum.saturating_add(self.get(outcome)))
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// Counts to add to one key's day.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyIncrement {
    /// The key.
    pub id: KeyId,
    /// The UTC day the requests were made on.
    pub day: Day,
    /// How many requests, by outcome.
    pub counts: OutcomeCounts,
}

impl KeyIncrement {
    /// Counts to add to key `id`'s `day`.
    pub fn new(id: KeyId, day: Day, counts: OutcomeCounts) -> Self {
        KeyIncrement { id, day, counts }
    }
}

/// A count to add to the requests of one day whose key was not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnonymousIncrement {
    /// The UTC day the requests were made on.
    pub day: Day,
    /// What became of them.
    pub outcome: AnonymousOutcome,
    /// How many.
    pub count: u64,
}

impl AnonymousIncrement {
    /// `count` requests of `outcome` on `day`.
    pub fn new(day: Day, outcome: AnonymousOutcome, count: u64) -> Self {
        AnonymousIncrement {
            day,
            outcome,
            count,
        }
    }
}

/// What a flush hands the store: counts to add (never to overwrite, so that instances add up),
/// and the last uses to record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageBatch {
    /// The batch's identity, for a store to apply it once however often it is written: a write
    /// whose acknowledgement was lost (a timeout, a dropped connection after the commit) is
    /// written again with the same id, and must not count twice. `None` (the default, and what
    /// batches built by hand carry): applied every time.
    pub id: Option<BatchId>,
    /// Per key and day.
    pub keys: Vec<KeyIncrement>,
    /// Per day and outcome, for requests whose key was not known.
    pub anonymous: Vec<AnonymousIncrement>,
    /// When each key was last let through; a store keeps the later of this and what it has.
    pub last_used: Vec<(KeyId, SystemTime)>,
}

impl UsageBatch {
    /// An empty batch, without an id.
    pub fn new() -> Self {
        UsageBatch::default()
    }

    /// The batch with id `id`, which a store applies once.
    #[must_use]
    pub fn with_id(mut self, id: BatchId) -> Self {
        self.id = Some(id);
        self
    }

    /// Whether the batch holds nothing to write.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.anonymous.is_empty() && self.last_used.is_empty()
    }
}

/// The identity of a [`UsageBatch`]: 128 random bits, shown as 32 hexadecimal digits.
///
/// A store that saw an id applies its batch again only once it has forgotten the id, after at
/// least seven days (see [`KeyStore::record_usage`](crate::KeyStore::record_usage)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(u128);

impl BatchId {
    /// A new id from the OS's random numbers; should they fail, from the time and a counter
    /// of this process, which still never repeats within it.
    pub fn random() -> Self {
        let mut random = [0u8; 16];
        if getrandom::fill(&mut random).is_ok() {
            return BatchId(u128::from_le_bytes(random));
        }
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        BatchId((nanos << 64) ^ u128::from(count))
    }

    /// The id of these 128 bits, as [`BatchId::as_u128`] gives them back.
    pub const fn from_u128(bits: u128) -> Self {
        BatchId(bits)
    }

    /// The id's 128 bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One key's requests on one day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DailyUsage {
    /// The UTC day.
    pub day: Day,
    /// Its requests, by outcome.
    pub counts: OutcomeCounts,
}

impl DailyUsage {
    /// `counts` on `day`.
    pub fn new(day: Day, counts: OutcomeCounts) -> Self {
        DailyUsage { day, counts }
    }
}

/// One key in an owner's usage summary.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUsageSummary {
    /// The key.
    pub id: KeyId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was last let through, if ever.
    pub last_used_at: Option<SystemTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// Its requests over the summary's days, by outcome.
    pub totals: OutcomeCounts,
}

impl KeyUsageSummary {
    /// Whether the key was never let through.
    pub fn never_used(&self) -> bool {
        self.last_used_at.is_none()
    }

    /// Whether the key was not let through since `since` (never, or before it).
    pub fn unused_since(&self, since: SystemTime) -> bool {
        self.last_used_at.is_none_or(|at| at < since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days_on_both_sides_of_the_epoch() {
        let at = |seconds: i64| {
            if seconds >= 0 {
                UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
            } else {
                UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
            }
        };
        assert_eq!(Day::of(at(0)).to_string(), "1970-01-01");
        assert_eq!(Day::of(at(86_399)).to_string(), "1970-01-01");
        assert_eq!(Day::of(at(86_400)).to_string(), "1970-01-02");
        assert_eq!(Day::of(at(-1)).to_string(), "1969-12-31");
        assert_eq!(Day::of(at(-86_400)).to_string(), "1969-12-31");
        assert_eq!(Day::of(at(-86_401)).to_string(), "1969-12-30");
        // 2024-02-29, a leap day, and the day after.
        assert_eq!(Day::of(at(1_709_164_800)).to_string(), "2024-02-29");
        assert_eq!(Day::of(at(1_709_251_200)).to_string(), "2024-03-01");
        assert_eq!(Day::of(at(1_709_164_800)).start(), at(1_709_164_800));
        assert_eq!(Day::from_days_since_epoch(-1).start(), at(-86_400));
        assert_eq!(Day::of(at(4_102_444_800)).to_string(), "2100-01-01");
    }

    #[test]
    fn outcome_names_round_trip() {
        for outcome in KeyOutcome::ALL {
            assert_eq!(KeyOutcome::from_name(outcome.as_str()), Some(outcome));
            assert_eq!(KeyOutcome::ALL[outcome.index()], outcome);
        }
        for outcome in AnonymousOutcome::ALL {
            assert_eq!(AnonymousOutcome::from_name(outcome.as_str()), Some(outcome));
        }
        assert_eq!(KeyOutcome::from_name("Allowed"), None);
    }

    #[test]
    fn counts_add_up_and_saturate() {
        let mut counts = OutcomeCounts::default();
        assert!(counts.is_empty());
        counts.add(KeyOutcome::Allowed, 2);
        counts.add(KeyOutcome::Revoked, 1);
        let mut more = counts;
        more.add_all(&counts);
        assert_eq!(more.get(KeyOutcome::Allowed), 4);
        assert_eq!(more.total(), 6);
        more.add(KeyOutcome::Expired, u64::MAX);
        assert_eq!(more.total(), u64::MAX);
    }
}
