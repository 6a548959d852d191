use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tower_layer::Layer;

use super::authenticator::Authenticator;
use super::housekeeping::Housekeeping;
use super::service::ApiKeyService;
use crate::cache::{CacheSettings, CacheStats, KeyCache};
use crate::client::TrustedProxies;
use crate::clock::{Clock, SystemClock};
use crate::invalidation::{Invalidate, Invalidations};
use crate::key::{Environment, KeyFormat};
use crate::limit::rules::{OwnerRates, RateRules};
use crate::limit::RateLimit;
#[cfg(feature = "redis")]
use crate::limit::{RedisDownPolicy, RedisLimiter};
use crate::metrics::LayerMetrics;
use crate::principal::Anonymous;
use crate::rejection::{ProblemJson, Responder, Responses};
use crate::resolver::KeyResolver;
use crate::store::{KeyStore, StoreError};
use crate::usage::tally::Tally;
use crate::usage::{Flush, UsageRecorder, UsageSettings};

/// Authenticates requests with API keys. See the [module docs](crate::layer).
///
/// Clones share one cache. Build it on a [`KeyStore`] with [`ApiKeyLayer::new`] for the
/// defaults or [`ApiKeyLayer::builder`] to configure it, or on a resolver of your own with
/// [`ApiKeyLayer::resolver_builder`].
#[derive(Clone)]
#[must_use]
pub struct ApiKeyLayer {
    authenticator: Arc<Authenticator>,
}

impl ApiKeyLayer {
    /// A layer with the default settings that accepts the keys of `store`, in the store's
    /// [`KeyFormat`], and records their [usage](crate::usage) in it.
    pub fn new(store: impl KeyStore) -> Self {
        ApiKeyLayer::builder(store).build()
    }

    /// A builder for a layer that accepts the keys of `store`, in the store's [`KeyFormat`],
    /// and records their [usage](crate::usage) in it.
    pub fn builder(store: impl KeyStore) -> ApiKeyLayerBuilder {
        let format = store.format().clone();
        let store = Arc::new(store);
        let mut builder = ApiKeyLayer::builder_on(format, store.clone());
        builder.usage_store = Some(store);
        builder
    }

    /// A builder for a layer that accepts keys of `format` that `resolver` knows: for keys kept
    /// in a database of your own. (A [`KeyStore`] brings its format;
    /// use [`builder`](Self::builder) for one.) It records usage only in a store given to
    /// [`usage_store`](ApiKeyLayerBuilder::usage_store).
    pub fn resolver_builder(format: KeyFormat, resolver: impl KeyResolver) -> ApiKeyLayerBuilder {
        ApiKeyLayer::builder_on(format, Arc::new(resolver))
    }

    fn builder_on(format: KeyFormat, resolver: Arc<dyn KeyResolver>) -> ApiKeyLayerBuilder {
        // A resolver with no handle of its own may wrap a store, which announces on the
        // process's handle too.
        let invalidations = vec![resolver
            .invalidations()
            .unwrap_or_else(|| Invalidations::process_wide().clone())];
        ApiKeyLayerBuilder {
            format,
            resolver,
            invalidations,
            realm: Cow::Borrowed("api"),
            responder: Arc::new(ProblemJson),
            accepts_live: true,
            accepts_test: true,
            optional: false,
            cache: CacheSettings::default(),
            retry_after: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
            system_clock: true,
            usage: UsageSettings::default(),
            usage_store: None,
            metrics_per_key: false,
            proxies: TrustedProxies::none(),
            rates: RateRules::default(),
            rate_headers: true,
            #[cfg(feature = "redis")]
            shared_limiter: None,
        }
    }

    /// Writes every usage count made so far to the store, with every key's latest use: for a
    /// graceful shutdown (after the server stopped taking requests) and for tests. Waits for a
    /// flush in progress first. `Ok` also when the layer records no usage.
    ///
    /// On an error the counts stay in memory, and the background flush tries again.
    /// [`StoreError::UsageNotKept`]: the store keeps no usage, and the layer stopped counting.
    pub async fn flush_usage(&self) -> Result<(), StoreError> {
        match &self.authenticator.recorder {
            Some(recorder) if recorder.is_active() => recorder.flush(Flush::Everything).await,
            _ => Ok(()),
        }
    }

    /// How many keys are cached, and how many resolver calls were made.
    pub fn cache_stats(&self) -> CacheStats {
        self.authenticator.cache.stats()
    }

    /// Drops every cached answer of this layer. Revocations through the crate's stores do this
    /// for the affected key on their own.
    pub fn clear_cache(&self) {
        self.authenticator.cache.invalidate_all();
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService::new(inner, self.authenticator.clone())
    }
}

impl fmt::Debug for ApiKeyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.authenticator;
        f.debug_struct("ApiKeyLayer")
            .field("format", &a.format)
            .field("accepts_live", &a.accepts_live)
            .field("accepts_test", &a.accepts_test)
            .field("optional", &a.optional)
            .field("responses", &a.responses)
            .field(
                "usage",
                &a.recorder.as_ref().map(|recorder| recorder.settings()),
            )
            .finish_non_exhaustive()
    }
}

/// Configures an [`ApiKeyLayer`]. Every setting has a default; see each method.
#[must_use]
pub struct ApiKeyLayerBuilder {
    format: KeyFormat,
    resolver: Arc<dyn KeyResolver>,
    invalidations: Vec<Invalidations>,
    realm: Cow<'static, str>,
    responder: Arc<dyn Responder>,
    accepts_live: bool,
    accepts_test: bool,
    optional: bool,
    cache: CacheSettings,
    retry_after: Duration,
    clock: Arc<dyn Clock>,
    /// Whether `clock` is the system clock, which the usage counters read faster.
    system_clock: bool,
    usage: UsageSettings,
    usage_store: Option<Arc<dyn KeyStore>>,
    metrics_per_key: bool,
    proxies: TrustedProxies,
    rates: RateRules,
    rate_headers: bool,
    #[cfg(feature = "redis")]
    shared_limiter: Option<(RedisLimiter, RedisDownPolicy)>,
}

impl ApiKeyLayerBuilder {
    /// The realm named in `WWW-Authenticate` challenges. Default: `"api"`.
    ///
    /// # Panics
    ///
    /// [`build`](Self::build) panics if the realm has characters other than printable ASCII.
    pub fn realm(mut self, realm: impl Into<Cow<'static, str>>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The only environments whose keys are accepted; keys of others get the same `401` as an
    /// unknown key, with no lookup. Default: both.
    ///
    /// # Panics
    ///
    /// [`build`](Self::build) panics if no environment is accepted.
    pub fn environments(mut self, environments: impl IntoIterator<Item = Environment>) -> Self {
        self.accepts_live = false;
        self.accepts_test = false;
        for environment in environments {
            match environment {
                Environment::Live => self.accepts_live = true,
                Environment::Test => self.accepts_test = true,
            }
        }
        self
    }

    /// Lets requests without credentials (no `Authorization`, or another scheme) through with no
    /// principal, for routes that are public but richer when authenticated. Requests with bad
    /// Bearer credentials are still refused. Default: off.
    ///
    /// Handlers take `Option<Principal>`; the `Principal` extractor and
    /// [`RequireScopes`](crate::RequireScopes) answer `401` for anonymous requests.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// How the layer answers refusals. Default: [`ProblemJson`].
    pub fn responder(mut self, responder: impl Responder) -> Self {
        self.responder = Arc::new(responder);
        self
    }

    /// How long a found key's answer is cached. Default: 30 seconds.
    ///
    /// Revocations through this crate's stores take effect at once on this instance whatever
    /// the value. For a change made elsewhere (another process, a manual `UPDATE`) it is the
    /// bound: an answer is served at most `ttl` after the lookup that produced it *started*, so
    /// every request that arrives `ttl` after the change sees it, however long the resolver
    /// takes. An entry never outlives the key's expiry.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// How many found keys are cached at most. Default: 100,000.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.cache.capacity = capacity;
        self
    }

    /// How long an unknown digest is remembered as unknown. Default: 5 seconds.
    ///
    /// Counted, like [`cache_ttl`](Self::cache_ttl), from the start of the lookup: a key created
    /// elsewhere is accepted by every request that arrives this long after its creation.
    pub fn negative_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.negative_ttl = ttl;
        self
    }

    /// How many unknown digests are remembered at most. Default: 10,000. Kept apart from the
    /// cache of found keys, so a flood of made-up keys cannot evict real ones.
    pub fn negative_cache_capacity(mut self, capacity: u64) -> Self {
        self.cache.negative_capacity = capacity;
        self
    }

    /// How long a resolver call may take before the request gets `503`. Default: 3 seconds.
    pub fn resolver_timeout(mut self, timeout: Duration) -> Self {
        self.cache.resolver_timeout = timeout;
        self
    }

    /// The `Retry-After` sent with `503`, rounded down to whole seconds (at least 1). Default: 5
    /// seconds.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Where the layer reads the time to check expiry. Default: [`SystemClock`].
    ///
    /// Usage counts are made by this clock's days too (and, with the system clock, read from a
    /// faster, coarser clock that is set by it at every flush).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.system_clock = false;
        self
    }

    /// How [usage](crate::usage) is recorded: flush interval, last-use period, memory cap while
    /// the store is down, retention; or [`UsageSettings::off`]. Default: [`UsageSettings::new`],
    /// into the layer's store (a layer on a resolver needs
    /// [`usage_store`](Self::usage_store)).
    pub fn usage(mut self, settings: UsageSettings) -> Self {
        self.usage = settings;
        self
    }

    /// Records usage into `store`: for a layer on a resolver of your own
    /// ([`ApiKeyLayer::resolver_builder`]), or into another store than the layer's.
    pub fn usage_store(mut self, store: impl KeyStore) -> Self {
        self.usage_store = Some(Arc::new(store));
        self
    }

    /// Also reports requests per key, as
    /// [`tower_api_key_key_requests_total{key_id, outcome}`](crate::metrics::KEY_REQUESTS),
    /// brought up to date at each usage flush. Default: off, since it makes a series per key.
    ///
    /// The counts come from the usage counters, so this counts requests even with
    /// [`UsageSettings::off`] or a store that keeps no usage (but writes nothing then). Since
    /// key ids are not known in advance, these series are registered at each flush, with the
    /// recorder installed then (the global one), not when the layer is built.
    pub fn metrics_per_key(mut self) -> Self {
        self.metrics_per_key = true;
        self
    }

    /// The proxies in front of the service whose forwarding header names the client, for keys
    /// limited to some networks ([`KeyLimits::networks`](crate::KeyLimits::networks)). None by
    /// default: the client is the connection's peer (axum's `ConnectInfo<SocketAddr>`, or a
    /// [`PeerAddress`](crate::PeerAddress) you insert), and forwarding headers are ignored.
    /// See [`TrustedProxies`].
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The rate that holds every key without one of its own ([`KeyLimits::rate`]), unless its
    /// environment has one ([`rate_limit_for`](Self::rate_limit_for)). None by default: only
    /// keys with a rate of their own are limited.
    ///
    /// [`KeyLimits::rate`]: crate::KeyLimits::rate
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.rates.default = Some(rate);
        self
    }

    /// The rate that holds every key of `environment` without one of its own, over the
    /// [default](Self::rate_limit): a tighter one for sandbox keys, say.
    pub fn rate_limit_for(mut self, environment: Environment, rate: RateLimit) -> Self {
        self.rates.per_environment[environment as usize] = Some(rate);
        self
    }

    /// A rate shared by all the keys of each owner, so that creating more keys does not
    /// multiply an account's allowance: a request must pass its key's rate and its owner's.
    pub fn owner_rate_limit(mut self, rate: RateLimit) -> Self {
        self.rates.owner = OwnerRates::Every(rate);
        self
    }

    /// A rate shared by all the keys of each owner, which `rate_of` gives for each owner (or
    /// none): a larger allowance for some accounts, say. Asked when a key's record is read into
    /// the cache, not on every request.
    pub fn owner_rate_limit_with(
        mut self,
        rate_of: impl Fn(&str) -> Option<RateLimit> + Send + Sync + 'static,
    ) -> Self {
        self.rates.owner = OwnerRates::Each(Arc::new(rate_of));
        self
    }

    /// Whether responses let through under a rate carry the `RateLimit-Policy` and `RateLimit`
    /// fields (on by default; a `429` always carries them).
    pub fn rate_limit_headers(mut self, on: bool) -> Self {
        self.rate_headers = on;
        self
    }

    /// Decides rates in Redis, so that instances sharing it never let more through together
    /// than a rate allows; `when_down` says what happens when Redis cannot answer within the
    /// limiter's timeout. Without it, each process keeps its own buckets.
    #[cfg(feature = "redis")]
    pub fn shared_rate_limiter(
        mut self,
        limiter: RedisLimiter,
        when_down: RedisDownPolicy,
    ) -> Self {
        self.shared_limiter = Some((limiter, when_down));
        self
    }

    /// Also drops cached keys announced on `invalidations`. The resolver's own handle, if it has
    /// one, is always used.
    pub fn invalidations(mut self, invalidations: Invalidations) -> Self {
        self.invalidations.push(invalidations);
        self
    }

    /// The layer.
    ///
    /// # Panics
    ///
    /// If the realm is not printable ASCII or no environment is accepted: both are mistakes in
    /// the program, reported when the router is built.
    pub fn build(self) -> ApiKeyLayer {
        assert!(
            self.accepts_live || self.accepts_test,
            "an ApiKeyLayer must accept at least one environment"
        );
        let responses = Arc::new(Responses::new(
            self.responder,
            &self.realm,
            self.retry_after,
        ));
        // Resolved once, here: a request pays for increments, never for a look-up by name.
        let metrics = LayerMetrics::resolve(self.metrics_per_key);
        let usage_store = self.usage_store.filter(|_| self.usage.enabled);
        let counting = usage_store.is_some() || self.metrics_per_key;
        let tally = Arc::new(Tally::new(
            self.clock.clone(),
            self.system_clock,
            counting,
            metrics,
        ));
        let recorder = counting.then(|| {
            Arc::new(UsageRecorder::new(
                tally.clone(),
                usage_store,
                self.usage.clone(),
            ))
        });
        let rates = Arc::new(self.rates);
        let cache = Arc::new(KeyCache::new(
            self.resolver,
            self.clock.clone(),
            &self.cache,
            tally.clone(),
            rates.clone(),
        ));
        let subscriber: Arc<dyn Invalidate> = cache.clone();
        for invalidations in &self.invalidations {
            invalidations.subscribe(Arc::downgrade(&subscriber) as Weak<dyn Invalidate>);
        }
        let authenticator = Arc::new(Authenticator {
            format: self.format,
            accepts_live: self.accepts_live,
            accepts_test: self.accepts_test,
            optional: self.optional,
            cache,
            clock: self.clock,
            anonymous: Anonymous(responses.clone()),
            responses,
            tally,
            recorder,
            housekeeping: Housekeeping::new(self.usage.flush_interval),
            proxies: self.proxies,
            rates,
            rate_headers: self.rate_headers,
            #[cfg(feature = "redis")]
            shared_limiter: self.shared_limiter,
        });
        // Now if this is a Tokio runtime, otherwise with the first request in one.
        authenticator.housekeeping.start(&authenticator);
        ApiKeyLayer { authenticator }
    }
}

impl fmt::Debug for ApiKeyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyLayerBuilder")
            .field("format", &self.format)
            .field("realm", &self.realm)
            .field("accepts_live", &self.accepts_live)
            .field("accepts_test", &self.accepts_test)
            .field("optional", &self.optional)
            .field("cache", &self.cache)
            .field("retry_after", &self.retry_after)
            .field("usage", &self.usage)
            .field("records_usage_in_a_store", &self.usage_store.is_some())
            .field("metrics_per_key", &self.metrics_per_key)
            .finish_non_exhaustive()
    }
}
