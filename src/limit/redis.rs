//! Rate limits shared by every instance through Redis: [`RedisLimiter`] (feature `redis`).
//!
//! Each instance of a service keeps its own buckets in memory, so with `n` instances behind a
//! load balancer a key could make `n` times its rate. A [`RedisLimiter`] keeps the buckets in
//! Redis instead: every decision is one `EVALSHA` of a small Lua script that runs the same GCRA
//! arithmetic as the in-process cells (see [`gcra`](crate::limit::gcra)) on Redis's own clock
//! (`TIME`), so that the instances' clocks do not matter and the limit is exact across them. The
//! script checks the key's bucket and, when given, its owner's, and updates both only when both
//! let the request through; each bucket expires when it would be full again, so idle keys leave
//! nothing behind.
//!
//! ```
//! use std::time::Duration;
//! use tower_api_key::{KeyId, LimiterError, RateLimit, RedisLimiter};
//!
//! // What a request of `key_42`, owned by `acme`, gets: `None` to go on, or a status.
//! async fn decide(limiter: &RedisLimiter) -> Option<u16> {
//!     let key_rate: RateLimit = "100/s burst 20".parse().ok()?;
//!     let owner_rate: RateLimit = "500/s".parse().ok()?;
//!     let key = KeyId::from("key_42");
//!     match limiter.check(&key, &key_rate, Some(("acme", &owner_rate))).await {
//!         Ok(decision) if decision.allowed => None,
//!         // With `Retry-After: decision.retry_after`, rounded up to seconds.
//!         Ok(_) => Some(429),
//!         // Redis did not answer within the timeout: the layer's `RedisDownPolicy` decides
//!         // (`Refuse`, here).
//!         Err(_) => Some(503),
//!     }
//! }
//!
//! // Connects on the first check, not here.
//! let limiter = RedisLimiter::open("redis://cache.internal:6379")?
//!     .with_prefix("ordermonk:rate:")
//!     .with_timeout(Duration::from_millis(50));
//! assert_eq!(limiter.prefix(), "ordermonk:rate:");
//! assert!(!limiter.is_healthy());
//! # drop(decide(&limiter));
//! # Ok::<(), LimiterError>(())
//! ```
//!
//! # Keys in Redis
//!
//! `{prefix}key:{key id}` and `{prefix}owner:{owner}`, with the prefix `tower-api-key:rate:` by
//! default ([`with_prefix`](RedisLimiter::with_prefix)). Each holds a string `"{day}
//! {nanoseconds}"`: the bucket's theoretical arrival time as nanoseconds since the start of a UTC
//! day of Redis's clock, which keeps every number the script handles an exact integer in Lua's
//! doubles (while `interval × burst` stays under a hundred days). No key's text is ever stored,
//! only its id. Both keys go to one script, so on Redis Cluster they would have to share a hash
//! slot; this feature does not speak Cluster.
//!
//! # When Redis does not answer
//!
//! A decision never waits longer than the [timeout](RedisLimiter::with_timeout) (50 ms by
//! default): past it, or when Redis cannot be reached, [`check`](RedisLimiter::check) returns a
//! [`LimiterError`], and the layer decides according to its [`RedisDownPolicy`]. The limiter
//! connects on first use, keeps one multiplexed connection, and when that connection fails (or
//! three decisions in a row time out) drops it and reconnects in the background, with a backoff
//! from 50 ms to 1 s; meanwhile checks fail at once, without waiting. The outage is logged once
//! (`warn`), and so is the recovery (`info`); [`is_healthy`](RedisLimiter::is_healthy) tells
//! which, and so do the metrics `tower_api_key_rate_limiter_connected` and
//! `tower_api_key_rate_limiter_errors_total` (see [`metrics`](crate::metrics)).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError};

use super::gcra::RateDecision;
use super::RateLimit;
use crate::metrics::{RATE_LIMITER_CONNECTED, RATE_LIMITER_ERRORS};
use crate::resolver::KeyId;

/// Default for [`RedisLimiter::with_prefix`].
pub const DEFAULT_RATE_PREFIX: &str = "tower-api-key:rate:";
/// Default for [`RedisLimiter::with_timeout`].
const TIMEOUT: Duration = Duration::from_millis(50);
/// Decisions timed out in a row after which the connection is taken for dead.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;
/// First and longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));
/// How long a reconnection in the background may take, at least.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The GCRA of [`GcraCell`](crate::limit::gcra), for one or two buckets, on Redis's clock.
///
/// KEYS: the key's bucket, and the owner's if any. ARGV: the key's interval and tolerance in
/// nanoseconds, the owner's, then seconds and microseconds to use instead of `TIME` (tests) or
/// nothing. Returns `{allowed, decided by (1 key, 2 owner), remaining, reset ns, retry ns}`.
const SCRIPT: &str = r#"
-- Replicate the writes, not the script, which reads the clock (the default from Redis 5 on).
if redis.replicate_commands then redis.replicate_commands() end
local DAY = 86400
local NS = 1000000000
local sec, usec
if ARGV[5] and ARGV[5] ~= '' then
  sec, usec = tonumber(ARGV[5]), tonumber(ARGV[6])
else
  local time = redis.call('TIME')
  sec, usec = tonumber(time[1]), tonumber(time[2])
end
local day = math.floor(sec / DAY)
local now = (sec - day * DAY) * NS + usec * 1000

local function stored(name)
  local value = redis.call('GET', name)
  if value then
    local d, t = string.match(value, '^(%-?%d+) (%-?%d+)$')
    if d then
      return tonumber(t) + (tonumber(d) - day) * DAY * NS
    end
  end
  return now
end

local function decide(tat, interval, tolerance)
  if tat < now then tat = now end
  local allow_at = tat - tolerance
  if now < allow_at then
    return {0, 0, tat - now, allow_at - now, tat}
  end
  local next = tat + interval
  local slack = now + tolerance - next
  local remaining = 0
  if slack >= 0 then
    local n = math.floor(slack / interval)
    while (n + 1) * interval <= slack do n = n + 1 end
    while n > 0 and n * interval > slack do n = n - 1 end
    remaining = n + 1
  end
  return {1, remaining, next - now, 0, next}
end

local function store(name, d)
  redis.call('SET', name, string.format('%.0f %.0f', day, d[5]),
    'PX', string.format('%.0f', math.max(1, math.ceil(d[3] / 1000000))))
end

local key = decide(stored(KEYS[1]), tonumber(ARGV[1]), tonumber(ARGV[2]))
if key[1] == 0 then
  return {0, 1, key[2], key[3], key[4]}
end
if #KEYS == 1 then
  store(KEYS[1], key)
  return {1, 1, key[2], key[3], key[4]}
end
local owner = decide(stored(KEYS[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if owner[1] == 0 then
  return {0, 2, owner[2], owner[3], owner[4]}
end
store(KEYS[1], key)
store(KEYS[2], owner)
if owner[2] < key[2] or (owner[2] == key[2] and owner[3] > key[3]) then
  return {1, 2, owner[2], owner[3], owner[4]}
end
return {1, 1, key[2], key[3], key[4]}
"#;

/// What to do when Redis cannot answer a rate check within the limiter's timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisDownPolicy {
    /// Decide with this instance's own buckets, as if it were alone: the service stays up, and
    /// each key may make up to its rate on every instance until Redis is back. The default.
    #[default]
    Local,
    /// Refuse the request with `503 Service Unavailable` and `Retry-After`: no key ever goes
    /// over its rate, at the price of the service while Redis is down.
    Refuse,
}

/// Why a [`RedisLimiter`] could not decide. Never holds a key's text or id, nor the URL's
/// password.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimiterError {
    /// The URL given to [`RedisLimiter::open`] is not one this build can use.
    InvalidUrl,
    /// Redis could not be reached; the limiter reconnects in the background.
    Unavailable,
    /// Redis did not answer within the timeout.
    Timeout(Duration),
    /// Redis answered with an error (its code, such as `NOPERM` or `OOM`).
    Refused(String),
}

impl fmt::Display for LimiterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimiterError::InvalidUrl => f.write_str("not a Redis URL this build can use"),
            LimiterError::Unavailable => f.write_str("Redis cannot be reached for rate limits"),
            LimiterError::Timeout(timeout) => write!(
                f,
                "Redis did not answer a rate check within {} ms",
                timeout.as_millis()
            ),
            LimiterError::Refused(code) => {
                write!(f, "Redis refused the rate-limit script: {code}")
            }
        }
    }
}

impl std::error::Error for LimiterError {}

/// Rate limits kept in Redis, shared by every instance, decided by one script call each. Clones
/// share the connection. See the [module docs](crate::limit::redis).
#[derive(Clone)]
pub struct RedisLimiter {
    client: Client,
    prefix: Arc<str>,
    timeout: Duration,
    shared: Arc<Shared>,
}

/// What clones share: the connection and its health.
#[derive(Default)]
struct Shared {
    link: Mutex<Link>,
    /// Held while connecting on first use, so that concurrent first checks connect once.
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    healthy: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    /// Whether Redis refused the script since the last decision (logged once).
    refusing: AtomicBool,
    /// The script's SHA-1, as Redis told it on `SCRIPT LOAD`.
    sha: OnceLock<String>,
}

#[derive(Default)]
enum Link {
    /// Never connected: the next check connects.
    #[default]
    Idle,
    /// Connected, with the connection's generation.
    Up(MultiplexedConnection, u64),
    /// Lost; a task reconnects.
    Down,
}

impl RedisLimiter {
    /// A limiter on the server `client` points at. Connects on the first check.
    pub fn new(client: Client) -> RedisLimiter {
        crate::metrics::describe();
        RedisLimiter {
            client,
            prefix: DEFAULT_RATE_PREFIX.into(),
            timeout: TIMEOUT,
            shared: Arc::default(),
        }
    }

    /// A limiter on the server at `url`, such as `redis://:password@cache:6379/0`.
    ///
    /// # Errors
    ///
    /// [`LimiterError::InvalidUrl`] when `url` is not a Redis URL this build can use. Nothing is
    /// connected yet.
    pub fn open(url: &str) -> Result<RedisLimiter, LimiterError> {
        Client::open(url)
            .map(RedisLimiter::new)
            .map_err(|_| LimiterError::InvalidUrl)
    }

    /// The prefix of the limiter's keys in Redis. Default: `tower-api-key:rate:`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// The longest a decision waits for Redis, connecting included. Default: 50 ms.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The prefix of the limiter's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the last attempt to reach Redis succeeded; `false` before the first check, and
    /// from a failure to the reconnection.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Decides a request of `key` at `rate` and, if given, of its owner at the owner's rate, on
    /// the buckets in Redis: let through only when both allow it, and then counted in both.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached, does not answer within the
    /// [timeout](Self::with_timeout), or refuses the script; the layer then follows its
    /// [`RedisDownPolicy`].
    pub async fn check(
        &self,
        key: &KeyId,
        rate: &RateLimit,
        owner: Option<(&str, &RateLimit)>,
    ) -> Result<RateDecision, LimiterError> {
        self.check_at(key, rate, owner, None).await
    }

    /// As [`check`](Self::check), at `at` (Redis `TIME`'s seconds and microseconds) instead of
    /// Redis's clock when given: for tests.
    pub(crate) async fn check_at(
        &self,
        key: &KeyId,
        rate: &RateLimit,
        owner: Option<(&str, &RateLimit)>,
        at: Option<(u64, u32)>,
    ) -> Result<RateDecision, LimiterError> {
        let mut generation = None;
        let decided = tokio::time::timeout(
            self.timeout,
            self.decide(key, rate, owner, at, &mut generation),
        )
        .await;
        let error = match decided {
            Ok(Ok(answer)) => {
                // Written only when set: a success leaves the shared cache line alone.
                if self.shared.timeouts_in_a_row.load(Ordering::Relaxed) > 0 {
                    self.shared.timeouts_in_a_row.store(0, Ordering::Relaxed);
                }
                if self.shared.refusing.load(Ordering::Relaxed)
                    && self.shared.refusing.swap(false, Ordering::AcqRel)
                {
                    tracing::info!("Redis runs the rate-limit script again");
                }
                return Ok(decision(&answer, rate, owner.map(|(_, rate)| rate)));
            }
            Ok(Err(error)) => error,
            Err(_) => {
                metrics::counter!(RATE_LIMITER_ERRORS, "reason" => "timeout").increment(1);
                let in_a_row = self
                    .shared
                    .timeouts_in_a_row
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                // Connecting on first use took too long, or several answers in a row did: the
                // connection is taken for dead (a partition never closes it).
                if generation.is_none() || in_a_row >= TIMEOUTS_BEFORE_RECONNECT {
                    self.down(generation, "no answer within the timeout");
                }
                return Err(LimiterError::Timeout(self.timeout));
            }
        };
        Err(error)
    }

    /// One script call on the connection, which `generation` names once it is known.
    async fn decide(
        &self,
        key: &KeyId,
        rate: &RateLimit,
        owner: Option<(&str, &RateLimit)>,
        at: Option<(u64, u32)>,
        generation: &mut Option<u64>,
    ) -> Result<Vec<i64>, LimiterError> {
        let (used, mut connection) = self.connection().await?;
        *generation = Some(used);
        let (interval, tolerance) = super::gcra::nanos(rate);
        let mut keys = vec![format!("{}key:{}", self.prefix, key.as_str())];
        let mut args = vec![interval, tolerance, 0, 0];
        if let Some((owner, owner_rate)) = owner {
            keys.push(format!("{}owner:{owner}", self.prefix));
            let (interval, tolerance) = super::gcra::nanos(owner_rate);
            args[2] = interval;
            args[3] = tolerance;
        }
        let at = at.map(|(sec, usec)| (sec.to_string(), usec.to_string()));
        let fill = |command: &mut ::redis::Cmd| {
            command.arg(keys.len()).arg(&keys).arg(&args);
            if let Some((sec, usec)) = &at {
                command.arg(sec).arg(usec);
            }
        };
        let answer = match self.shared.sha.get() {
            Some(sha) => {
                let mut command = ::redis::cmd("EVALSHA");
                command.arg(sha.as_str());
                fill(&mut command);
                command.query_async(&mut connection).await
            }
            None => Err(RedisError::from((
                ::redis::ErrorKind::Client,
                "the script was not loaded",
            ))),
        };
        let answer = match answer {
            Err(error) if error.code() == Some("NOSCRIPT") || self.shared.sha.get().is_none() => {
                // Not loaded on this server (it restarted, or `SCRIPT FLUSH`): EVAL sends the text
                // and caches it there.
                let mut command = ::redis::cmd("EVAL");
                command.arg(SCRIPT);
                fill(&mut command);
                command.query_async(&mut connection).await
            }
            answer => answer,
        };
        answer.map_err(|error| self.failed(used, error))
    }

    /// The kept connection and its generation, made now on first use.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), LimiterError> {
        if let Some(up) = self.kept()? {
            return Ok(up);
        }
        let _connecting = self.shared.connecting.lock().await;
        if let Some(up) = self.kept()? {
            return Ok(up);
        }
        match connect(&self.client, &self.shared, self.timeout).await {
            Ok(up) => Ok(up),
            Err(error) => {
                metrics::counter!(RATE_LIMITER_ERRORS, "reason" => "error").increment(1);
                self.down(None, &error);
                Err(LimiterError::Unavailable)
            }
        }
    }

    /// The connection if up; `None` if never connected; an error at once while reconnecting.
    fn kept(&self) -> Result<Option<(u64, MultiplexedConnection)>, LimiterError> {
        match &*self.shared.lock() {
            Link::Up(connection, generation) => Ok(Some((*generation, connection.clone()))),
            Link::Idle => Ok(None),
            Link::Down => {
                metrics::counter!(RATE_LIMITER_ERRORS, "reason" => "unavailable").increment(1);
                Err(LimiterError::Unavailable)
            }
        }
    }

    /// What an error from Redis means: a lost connection is dropped and replaced in the
    /// background; an error Redis answered with leaves it be.
    fn failed(&self, generation: u64, error: RedisError) -> LimiterError {
        metrics::counter!(RATE_LIMITER_ERRORS, "reason" => "error").increment(1);
        if let Some(code) = error.code() {
            // Once until a check succeeds again: every request would log it otherwise.
            if !self.shared.refusing.swap(true, Ordering::AcqRel) {
                tracing::warn!(code, "Redis refuses the rate-limit script");
            }
            return LimiterError::Refused(code.to_owned());
        }
        self.down(Some(generation), &error.to_string());
        LimiterError::Unavailable
    }

    /// Takes the connection of `generation` (or, with `None`, a first connection that failed)
    /// for lost, and starts reconnecting in the background unless that is under way.
    fn down(&self, generation: Option<u64>, why: &str) {
        {
            let mut link = self.shared.lock();
            match (&*link, generation) {
                (Link::Down, _) => return,
                // A newer connection than the one that failed: keep it.
                (Link::Up(_, current), Some(failed)) if *current != failed => return,
                (Link::Up(..), None) => return,
                _ => {}
            }
            *link = Link::Down;
        }
        if self.shared.healthy.swap(false, Ordering::AcqRel) || generation.is_none() {
            tracing::warn!(
                server = %self.client.get_connection_info().addr(),
                why,
                "Redis is unavailable for rate limits; reconnecting in the background"
            );
        }
        metrics::gauge!(RATE_LIMITER_CONNECTED).set(0.0);
        let shared = Arc::downgrade(&self.shared);
        let client = self.client.clone();
        let timeout = self.timeout.max(RECONNECT_TIMEOUT);
        tokio::spawn(reconnect(client, shared, timeout));
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Connects, loads the script, and keeps the connection as the current one.
async fn connect(
    client: &Client,
    shared: &Shared,
    timeout: Duration,
) -> Result<(u64, MultiplexedConnection), String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|error| error.to_string())?;
    let sha: String = ::redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(&mut connection)
        .await
        .map_err(|error| error.to_string())?;
    // The same text always has the same SHA-1; the first one learned stays.
    let _ = shared.sha.set(sha);
    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    *shared.lock() = Link::Up(connection.clone(), generation);
    shared.timeouts_in_a_row.store(0, Ordering::Relaxed);
    shared.healthy.store(true, Ordering::Release);
    metrics::gauge!(RATE_LIMITER_CONNECTED).set(1.0);
    Ok((generation, connection))
}

/// Tries to connect again, waiting longer after each failure, until it succeeds or the limiter
/// is dropped.
async fn reconnect(client: Client, shared: Weak<Shared>, timeout: Duration) {
    let mut wait = BACKOFF.0;
    loop {
        tokio::time::sleep(wait).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match tokio::time::timeout(timeout, connect(&client, &shared, timeout)).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    server = %client.get_connection_info().addr(),
                    "Redis is back for rate limits"
                );
                return;
            }
            Ok(Err(error)) => tracing::debug!(%error, "could not reconnect to Redis yet"),
            Err(_) => tracing::debug!("could not reconnect to Redis yet: no answer"),
        }
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// The script's answer as a decision.
fn decision(answer: &[i64], rate: &RateLimit, owner: Option<&RateLimit>) -> RateDecision {
    let field = |at: usize| answer.get(at).copied().unwrap_or(0);
    let nanos = |at: usize| Duration::from_nanos(u64::try_from(field(at)).unwrap_or(0));
    let limit = match (field(1), owner) {
        (2, Some(owner)) => *owner,
        _ => *rate,
    };
    RateDecision {
        allowed: field(0) == 1,
        limit,
        remaining: u32::try_from(field(2).max(0)).unwrap_or(u32::MAX),
        reset: nanos(3),
        retry_after: nanos(4),
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address only: the connection settings hold the password.
        let info = self.client.get_connection_info();
        f.debug_struct("RedisLimiter")
            .field("server", &format_args!("{}", info.addr()))
            .field("db", &info.redis_settings().db())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_debug_show_neither_password_nor_key() {
        let limiter = RedisLimiter::open("redis://user:hunter2@cache.internal:6380/3").unwrap();
        let debug = format!("{limiter:?}");
        assert!(debug.contains("cache.internal:6380"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            RedisLimiter::open("http://user:hunter2@x/0").unwrap_err(),
            LimiterError::InvalidUrl
        );
        for error in [
            LimiterError::InvalidUrl,
            LimiterError::Unavailable,
            LimiterError::Timeout(TIMEOUT),
            LimiterError::Refused("NOPERM".into()),
        ] {
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn answers_become_decisions() {
        let rate: RateLimit = "10/s".parse().unwrap();
        let owner: RateLimit = "1/s".parse().unwrap();
        let refused = decision(&[0, 2, 0, 900, 800], &rate, Some(&owner));
        assert!(!refused.allowed);
        assert_eq!(refused.limit, owner);
        assert_eq!(refused.retry_after, Duration::from_nanos(800));
        let allowed = decision(&[1, 1, 4, 100, 0], &rate, Some(&owner));
        assert!(allowed.allowed);
        assert_eq!(allowed.limit, rate);
        assert_eq!(allowed.remaining, 4);
        // Garbage does not panic.
        let _ = decision(&[], &rate, None);
        let _ = decision(&[1, 2, -5, -1, i64::MAX], &rate, None);
    }
}
