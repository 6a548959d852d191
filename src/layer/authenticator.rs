//! The decision the layer makes for each request, kept apart from the tower plumbing.

use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderValue};

use super::housekeeping::Housekeeping;
use crate::cache::CachedKey;
use crate::cache::{KeyCache, Lookup, Outcome, PendingLookup};
use crate::client::{peer_address, TrustedProxies};
use crate::clock::Clock;
use crate::credentials::{self, Credentials};
use crate::events::trace_rejected;
use crate::key::{Environment, KeyFormat, MalformedKey};
use crate::limit::gcra::now_nanos;
use crate::limit::rules::{rate_limit_header, RateRules};
use crate::limit::RateDecision;
#[cfg(feature = "redis")]
use crate::limit::RateLimit;
#[cfg(feature = "redis")]
use crate::limit::{LimiterError, RedisDownPolicy, RedisLimiter};
use crate::metrics::RequestOutcome;
use crate::principal::{Anonymous, Principal};
use crate::rejection::{InvalidKey, InvalidRequest, Rejection, Responses};
use crate::rejection::{RateLimited, RATE_LIMIT, RATE_LIMIT_POLICY};
#[cfg(feature = "redis")]
use crate::resolver::ResolveError;
use crate::usage::tally::Tally;
use crate::usage::{AnonymousOutcome, KeyOutcome, UsageRecorder};

/// Everything an [`ApiKeyLayer`](super::ApiKeyLayer) shares with its services.
pub(crate) struct Authenticator {
    pub(crate) format: KeyFormat,
    pub(crate) accepts_live: bool,
    pub(crate) accepts_test: bool,
    pub(crate) optional: bool,
    pub(crate) cache: Arc<KeyCache>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) responses: Arc<Responses>,
    pub(crate) anonymous: Anonymous,
    /// Where requests are counted (usage and metrics).
    pub(crate) tally: Arc<Tally>,
    /// Writes the usage counts to the store; `None` when usage is off.
    pub(crate) recorder: Option<Arc<UsageRecorder>>,
    /// The background task that flushes usage and updates the cache gauges.
    pub(crate) housekeeping: Housekeeping,
    /// The proxies whose forwarding headers say who the client is, for allowlists.
    pub(crate) proxies: TrustedProxies,
    /// Which rates hold which keys, and this process's buckets.
    pub(crate) rates: Arc<RateRules>,
    /// Whether responses let through under a rate carry its fields.
    pub(crate) rate_headers: bool,
    /// Rates decided in Redis, and what to do when it does not answer.
    #[cfg(feature = "redis")]
    pub(crate) shared_limiter: Option<(RedisLimiter, RedisDownPolicy)>,
}

/// What to do with a request.
pub(crate) enum Decision {
    Allow(Principal),
    Anonymous,
    Reject(Rejection),
    /// Wait for the resolver, then call [`Authenticator::verdict`].
    Pending(PendingLookup, Environment),
}

impl Authenticator {
    /// The decision for a request with `headers`, counted (usage and metrics) unless it lets
    /// the request through with a key: that one is counted when the response is ready, which
    /// says whether a scope check refused it.
    pub(crate) fn decide(&self, headers: &mut HeaderMap) -> Decision {
        let token = match credentials::bearer_for_layer(headers) {
            Credentials::Bearer(token) => token,
            Credentials::Missing | Credentials::OtherScheme if self.optional => {
                self.tally.count_anonymous(AnonymousOutcome::Missing, None);
                return Decision::Anonymous;
            }
            Credentials::Missing | Credentials::OtherScheme => {
                self.tally.count_anonymous(AnonymousOutcome::Missing, None);
                return Decision::Reject(Rejection::MissingCredentials);
            }
            Credentials::Malformed(reason) => {
                self.tally
                    .count_anonymous(AnonymousOutcome::Malformed, None);
                return Decision::Reject(Rejection::InvalidRequest(reason));
            }
        };
        let key = match self.format.parse_bytes(token) {
            Ok(key) => key,
            // Only now, off the fast path: a token that is not even RFC 6750 syntax is a
            // malformed request rather than a bad key. (A token that failed only the checksum
            // passed the alphabet check, so it is one.)
            Err(malformed)
                if malformed != MalformedKey::Checksum && !credentials::is_b64token(token) =>
            {
                self.tally
                    .count_anonymous(AnonymousOutcome::Malformed, None);
                return Decision::Reject(Rejection::InvalidRequest(InvalidRequest::MalformedToken));
            }
            Err(malformed) => {
                self.tally
                    .count_anonymous(AnonymousOutcome::Malformed, None);
                return Decision::Reject(Rejection::InvalidKey(InvalidKey::Malformed(malformed)));
            }
        };
        let environment = key.environment();
        let accepted = match environment {
            Environment::Live => self.accepts_live,
            Environment::Test => self.accepts_test,
        };
        if !accepted {
            self.tally
                .count_anonymous(AnonymousOutcome::Unknown, Some(environment));
            return Decision::Reject(Rejection::InvalidKey(InvalidKey::WrongEnvironment(
                environment,
            )));
        }
        match self.cache.lookup(key.digest()) {
            Ok(found) => {
                self.tally.metrics.cache_hits.increment(1);
                match self.check(found, environment) {
                    Ok(principal) => Decision::Allow(principal),
                    Err(rejection) => Decision::Reject(rejection),
                }
            }
            Err(pending) => {
                self.tally.metrics.cache_misses.increment(1);
                Decision::Pending(pending, environment)
            }
        }
    }

    /// The decision once a resolver call has answered, before the key's limits
    /// ([`admit`](Self::admit)).
    pub(crate) fn verdict(
        &self,
        outcome: Outcome,
        environment: Environment,
    ) -> Result<Principal, Rejection> {
        let result = match outcome {
            Ok(found) => self.check(found, environment),
            Err(error) => {
                self.tally
                    .metrics
                    .request(RequestOutcome::Unavailable, Some(environment));
                Err(Rejection::Unavailable(error))
            }
        };
        // A key let through is traced once its limits admit it.
        if let Err(rejection) = &result {
            trace_rejected(rejection);
        }
        result
    }

    /// Revocation and expiry, checked on every request whether the answer came from the cache or
    /// not; the principal is built only for a key that passes. Refusals are counted here.
    fn check(&self, found: Lookup, environment: Environment) -> Result<Principal, Rejection> {
        let key = match found {
            Lookup::Found(key) => key,
            Lookup::Unknown => {
                self.tally
                    .count_anonymous(AnonymousOutcome::Unknown, Some(environment));
                return Err(Rejection::InvalidKey(InvalidKey::Unknown));
            }
        };
        if key.environment != environment {
            // The record disagrees with the key text: a store bug or a forged row. Refuse.
            self.tally
                .count_anonymous(AnonymousOutcome::Unknown, Some(environment));
            return Err(Rejection::InvalidKey(InvalidKey::Unknown));
        }
        if key.revoked {
            key.usage
                .tally()
                .count_key(&key, KeyOutcome::Revoked, environment);
            return Err(Rejection::InvalidKey(InvalidKey::Revoked {
                key_id: key.id.clone(),
            }));
        }
        if let Some(expires_at) = key.expires_at {
            if expires_at <= self.clock.now() {
                key.usage
                    .tally()
                    .count_key(&key, KeyOutcome::Expired, environment);
                return Err(Rejection::InvalidKey(InvalidKey::Expired {
                    key_id: key.id.clone(),
                }));
            }
        }
        Ok(Principal::new(key, self.responses.clone()))
    }

    /// The key's own limits, for a request its key let through: its allowlist, then its rates.
    /// Refusals are counted here; the caller traces the outcome.
    #[inline]
    pub(crate) fn admit(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Admission {
        let key = principal.cached_key();
        // Most keys have no limits: nothing to look at.
        if key.networks.is_none() && key.rate.is_none() {
            return Admission::Go(None);
        }
        self.admit_limited(key, headers, extensions)
    }

    /// [`admit`](Self::admit) for a key with an allowlist or a rate.
    fn admit_limited(
        &self,
        key: &Arc<CachedKey>,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Admission {
        if let Some(networks) = &key.networks {
            // No address to tell (no connection info, or a proxy forwarded something else than
            // an address): refused, never let through on a guess.
            let client = peer_address(extensions)
                .and_then(|peer| self.proxies.client_address(peer, headers));
            if !client.is_some_and(|client| networks.contains(client)) {
                self.tally
                    .metrics
                    .request(RequestOutcome::NetworkNotAllowed, Some(key.environment));
                return Admission::Refuse(Rejection::NetworkNotAllowed {
                    key_id: key.id.clone(),
                });
            }
        }
        let Some(rate) = &key.rate else {
            return Admission::Go(None);
        };
        #[cfg(feature = "redis")]
        if let Some((limiter, _)) = &self.shared_limiter {
            return Admission::Ask(SharedCheck::start(limiter, key));
        }
        let (decision, policy) = rate.check(now_nanos());
        self.rated(key, decision, policy)
    }

    /// The admission of `key` after a rate check decided `decision` under `policy`.
    fn rated(
        &self,
        key: &Arc<CachedKey>,
        decision: RateDecision,
        policy: &'static str,
    ) -> Admission {
        // `key.rate` is there: only a key with a rate is checked.
        let Some(rate) = &key.rate else {
            return Admission::Go(None);
        };
        if decision.allowed {
            return Admission::Go(self.rate_headers.then(|| {
                Box::new(RateFields {
                    policy: rate.policy.clone(),
                    rate: rate_limit_header(policy, &decision),
                })
            }));
        }
        key.usage
            .tally()
            .count_key(key, KeyOutcome::RateLimited, key.environment);
        Admission::Refuse(Rejection::RateLimited(Box::new(RateLimited {
            key_id: key.id.clone(),
            decision,
            policy_name: policy,
            policy: rate.policy.clone(),
        })))
    }

    /// The admission of `key` once the shared limiter answered, or failed to: then the
    /// [`RedisDownPolicy`] says whether to decide here or refuse with `503`.
    #[cfg(feature = "redis")]
    pub(crate) fn after_shared(&self, key: &Arc<CachedKey>, answer: SharedAnswer) -> Admission {
        match answer {
            Ok((decision, policy)) => self.rated(key, decision, policy),
            Err(error) => match self
                .shared_limiter
                .as_ref()
                .map(|(_, when_down)| *when_down)
            {
                Some(RedisDownPolicy::Refuse) => {
                    self.tally
                        .metrics
                        .request(RequestOutcome::Unavailable, Some(key.environment));
                    Admission::Refuse(Rejection::Unavailable(ResolveError::new(error)))
                }
                _ => match &key.rate {
                    Some(rate) => {
                        let (decision, policy) = rate.check(now_nanos());
                        self.rated(key, decision, policy)
                    }
                    None => Admission::Go(None),
                },
            },
        }
    }
}

/// Whether a request let through by its key may go on: what [`Authenticator::admit`] says.
pub(crate) enum Admission {
    /// Go on, with the rate's fields for the response, if any (boxed: the response future of
    /// every request holds the slot).
    Go(Option<Box<RateFields>>),
    /// Refused by the key's allowlist or rate.
    Refuse(Rejection),
    /// Ask the shared limiter first, then call [`Authenticator::after_shared`].
    #[cfg(feature = "redis")]
    Ask(SharedCheck),
}

/// The `RateLimit-Policy` and `RateLimit` fields of a response let through under a rate.
pub(crate) struct RateFields {
    pub(crate) policy: HeaderValue,
    pub(crate) rate: HeaderValue,
}

impl RateFields {
    /// Adds the fields to `headers`, unless the inner service set its own.
    pub(crate) fn add_to(self, headers: &mut HeaderMap) {
        // One look-up of each name, whether or not it is there.
        headers.entry(RATE_LIMIT_POLICY).or_insert(self.policy);
        headers.entry(RATE_LIMIT).or_insert(self.rate);
    }
}

/// What the shared limiter decided, with the name of the policy that decided, or why it could
/// not.
#[cfg(feature = "redis")]
pub(crate) type SharedAnswer = Result<(RateDecision, &'static str), LimiterError>;

/// A rate check in Redis under way: one script call for the key's bucket and its owner's.
#[cfg(feature = "redis")]
pub(crate) struct SharedCheck(
    std::pin::Pin<Box<dyn std::future::Future<Output = SharedAnswer> + Send>>,
);

#[cfg(feature = "redis")]
impl SharedCheck {
    fn start(limiter: &RedisLimiter, key: &Arc<CachedKey>) -> Self {
        let limiter = limiter.clone();
        let key = key.clone();
        SharedCheck(Box::pin(async move {
            let (own, owner) = match &key.rate {
                Some(rate) => rate.rates(),
                None => (None, None),
            };
            let owner = owner.map(|rate| (&*key.owner, rate));
            let decision = match (own, owner) {
                (Some(rate), owner) => {
                    let owner = owner.as_ref().map(|(name, rate)| (*name, rate));
                    limiter.check(&key.id, &rate, owner).await?
                }
                // Only the owner's rate: the key's bucket in the same script call never refuses.
                (None, Some((name, rate))) => {
                    limiter
                        .check(&key.id, &RateLimit::UNREACHABLE, Some((name, &rate)))
                        .await?
                }
                (None, None) => return Err(LimiterError::Unavailable),
            };
            let policy = match (own, owner) {
                (Some(rate), _) if decision.limit == rate => "key",
                (_, Some(_)) => "owner",
                _ => "key",
            };
            Ok((decision, policy))
        }))
    }
}

#[cfg(feature = "redis")]
impl std::future::Future for SharedCheck {
    type Output = SharedAnswer;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl Decision {
    /// Emits the decision's trace event; a pending one is traced by [`Authenticator::verdict`],
    /// an allowed one once [`Authenticator::admit`] let it through.
    pub(crate) fn trace(&self) {
        match self {
            Decision::Allow(_) => {}
            Decision::Anonymous => tracing::debug!(
                target: "tower_api_key",
                outcome = "anonymous",
                "request without credentials let through"
            ),
            Decision::Reject(rejection) => trace_rejected(rejection),
            Decision::Pending(..) => {}
        }
    }
}
