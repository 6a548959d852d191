//! Metrics: what the layer, its cache, its usage recorder and the invalidation watchers report,
//! through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The crate only emits; the application chooses an exporter (Prometheus, StatsD, …) and
//! installs it as the global recorder. With none installed, every metric costs a branch.
//!
//! **Install the recorder before you build the layer.** The layer resolves its counters once,
//! when [`ApiKeyLayerBuilder::build`](crate::ApiKeyLayerBuilder::build) runs, so that a request
//! pays for an increment and never for a look-up by name and labels; a layer built before the
//! recorder was installed reports to nobody. (Watchers resolve theirs when they start.)
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | [`tower_api_key_requests_total`](REQUESTS) | counter | `outcome`, `environment` | every request the layer decided |
//! | [`tower_api_key_key_requests_total`](KEY_REQUESTS) | counter | `key_id`, `outcome` | the same per key, only with [`metrics_per_key`](crate::ApiKeyLayerBuilder::metrics_per_key) |
//! | [`tower_api_key_cache_hits_total`](CACHE_HITS) | counter | | requests answered from the cache (found or unknown) |
//! | [`tower_api_key_cache_misses_total`](CACHE_MISSES) | counter | | requests that waited for a resolver call |
//! | [`tower_api_key_cache_entries`](CACHE_ENTRIES) | gauge | `kind` | cached keys: `found` (valid, revoked or expired) and `unknown` |
//! | [`tower_api_key_resolver_duration_seconds`](RESOLVER_DURATION) | histogram | | each resolver call, answered or failed |
//! | [`tower_api_key_resolver_errors_total`](RESOLVER_ERRORS) | counter | `reason` | failed resolver calls: `error`, `timeout`, `panic` |
//! | [`tower_api_key_usage_flushes_total`](USAGE_FLUSHES) | counter | `result` | usage written to the store: `ok` or `failed` (kept, tried again) |
//! | [`tower_api_key_usage_dropped_requests_total`](USAGE_DROPPED) | counter | | requests whose counts were dropped because the store was down for longer than memory holds |
//! | [`tower_api_key_usage_pending_entries`](USAGE_PENDING) | gauge | | counts (key and day) waiting for the store |
//! | [`tower_api_key_invalidation_channel_connected`](INVALIDATION_CONNECTED) | gauge | `watcher` | `1` while a [`Watcher`](crate::Watcher) is subscribed, `0` otherwise |
//! | [`tower_api_key_invalidation_channel_losses_total`](INVALIDATION_LOSSES) | counter | `watcher` | subscriptions lost or failed |
//! | [`tower_api_key_rate_limiter_connected`](RATE_LIMITER_CONNECTED) | gauge | | `1` while a `RedisLimiter` is connected, `0` from a failure to its reconnection (feature `redis`) |
//! | [`tower_api_key_rate_limiter_errors_total`](RATE_LIMITER_ERRORS) | counter | `reason` | rate checks Redis did not decide: `timeout`, `error` (refused, or the connection failed), `unavailable` (refused at once while reconnecting) |
//!
//! Labels:
//!
//! - `outcome`: `allowed`, `insufficient_scope`, `revoked`, `expired`, `rate_limited` for known
//!   keys;
//!   `missing`, `malformed`, `unknown` for requests whose key is not known (an optional layer's
//!   anonymous requests are `missing`); `unavailable` when the resolver failed (`503`);
//!   `network_not_allowed` for a known key used from a network its allowlist does not name.
//! - `environment`: `live` or `test`, from the key's prefix; `none` for `missing` and
//!   `malformed`.
//! - `key_id`: never by default. A label per key makes one series per key, which a team with
//!   thousands of keys may not want in Prometheus; [`KeyStore::usage`](crate::KeyStore::usage)
//!   has the same counts per day. No metric ever carries a key or a digest.
//!
//! The gauges of a layer's cache and the per-key counts are brought up to date each time the
//! layer flushes its usage counts ([`UsageSettings::flush_interval`](crate::UsageSettings::flush_interval),
//! 10 seconds by default); everything else as it happens.
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower_api_key::{ApiKeyLayer, KeyFormat, MemoryStore};
//!
//! let recorder = PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! // Installed globally with `metrics::set_global_recorder(recorder)` in a real program; here,
//! // for the layer built inside the closure only.
//! let layer = metrics::with_local_recorder(&recorder, || {
//!     ApiKeyLayer::new(MemoryStore::new(KeyFormat::new("om").unwrap()))
//! });
//! # drop(layer);
//! assert!(handle.render().contains("tower_api_key_requests_total"));
//! ```

use std::borrow::Cow;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::key::Environment;
use crate::usage::{AnonymousOutcome, KeyOutcome};

/// `tower_api_key_requests_total{outcome, environment}`: every request the layer decided.
pub const REQUESTS: &str = "tower_api_key_requests_total";
/// `tower_api_key_key_requests_total{key_id, outcome}`: requests per key, when the application
/// asks for it.
pub const KEY_REQUESTS: &str = "tower_api_key_key_requests_total";
/// `tower_api_key_cache_hits_total`: requests answered from the cache.
pub const CACHE_HITS: &str = "tower_api_key_cache_hits_total";
/// `tower_api_key_cache_misses_total`: requests that waited for a resolver call.
pub const CACHE_MISSES: &str = "tower_api_key_cache_misses_total";
/// `tower_api_key_cache_entries{kind}`: cached keys, `found` or `unknown`.
pub const CACHE_ENTRIES: &str = "tower_api_key_cache_entries";
/// `tower_api_key_resolver_duration_seconds`: how long each resolver call took.
pub const RESOLVER_DURATION: &str = "tower_api_key_resolver_duration_seconds";
/// `tower_api_key_resolver_errors_total{reason}`: failed resolver calls.
pub const RESOLVER_ERRORS: &str = "tower_api_key_resolver_errors_total";
/// `tower_api_key_usage_flushes_total{result}`: usage flushes, `ok` or `failed`.
pub const USAGE_FLUSHES: &str = "tower_api_key_usage_flushes_total";
/// `tower_api_key_usage_dropped_requests_total`: requests whose counts were dropped past the
/// recorder's cap.
pub const USAGE_DROPPED: &str = "tower_api_key_usage_dropped_requests_total";
/// `tower_api_key_usage_pending_entries`: counts waiting for the store.
pub const USAGE_PENDING: &str = "tower_api_key_usage_pending_entries";
/// `tower_api_key_invalidation_channel_connected{watcher}`: `1` while subscribed.
pub const INVALIDATION_CONNECTED: &str = "tower_api_key_invalidation_channel_connected";
/// `tower_api_key_invalidation_channel_losses_total{watcher}`: subscriptions lost or failed.
pub const INVALIDATION_LOSSES: &str = "tower_api_key_invalidation_channel_losses_total";

/// `tower_api_key_rate_limiter_connected`: `1` while a `RedisLimiter` is connected.
pub const RATE_LIMITER_CONNECTED: &str = "tower_api_key_rate_limiter_connected";
/// `tower_api_key_rate_limiter_errors_total{reason}`: rate checks Redis did not decide,
/// `timeout`, `error` or `unavailable`.
pub const RATE_LIMITER_ERRORS: &str = "tower_api_key_rate_limiter_errors_total";

/// What became of a request, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    Key(KeyOutcome),
    Anonymous(AnonymousOutcome),
    Unavailable,
    /// A known key used from a network its allowlist does not name.
    NetworkNotAllowed,
}

/// The `outcome` labels, in the order of [`RequestOutcome::index`].
const OUTCOMES: [&str; 10] = [
    "allowed",
    "insufficient_scope",
    "revoked",
    "expired",
    "rate_limited",
    "missing",
    "malformed",
    "unknown",
    "unavailable",
    "network_not_allowed",
];

impl RequestOutcome {
    const fn index(self) -> usize {
        match self {
            RequestOutcome::Key(outcome) => outcome.index(),
            RequestOutcome::Anonymous(AnonymousOutcome::Missing) => 5,
            RequestOutcome::Anonymous(AnonymousOutcome::Malformed) => 6,
            RequestOutcome::Anonymous(AnonymousOutcome::Unknown) => 7,
            RequestOutcome::Unavailable => 8,
            RequestOutcome::NetworkNotAllowed => 9,
        }
    }
}

/// The `environment` labels: a key's, or `none`.
const ENVIRONMENTS: [&str; 3] = ["live", "test", "none"];

const fn environment_index(environment: Option<Environment>) -> usize {
    match environment {
        Some(Environment::Live) => 0,
        Some(Environment::Test) => 1,
        None => 2,
    }
}

/// A layer's metric handles, resolved once when the layer is built.
pub(crate) struct LayerMetrics {
    /// By outcome, then environment; combinations that never happen are no-ops, so that they
    /// make no series.
    requests: [[Counter; 3]; OUTCOMES.len()],
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) cache_entries: Gauge,
    pub(crate) cache_unknown_entries: Gauge,
    pub(crate) resolver_duration: Histogram,
    pub(crate) resolver_errors: Counter,
    pub(crate) resolver_timeouts: Counter,
    pub(crate) resolver_panics: Counter,
    pub(crate) flushes_ok: Counter,
    pub(crate) flushes_failed: Counter,
    pub(crate) dropped: Counter,
    pub(crate) pending: Gauge,
    /// Whether per-key counts are published (from the usage recorder's flushes).
    pub(crate) per_key: bool,
}

impl LayerMetrics {
    /// Resolves every handle from the recorder installed now (global, or local to the thread).
    pub(crate) fn resolve(per_key: bool) -> Self {
        describe();
        let requests = std::array::from_fn(|outcome| {
            std::array::from_fn(|environment| {
                let anonymous = matches!(OUTCOMES[outcome], "missing" | "malformed");
                let happens = anonymous == (ENVIRONMENTS[environment] == "none");
                if happens {
                    metrics::counter!(
                        REQUESTS,
                        "outcome" => OUTCOMES[outcome],
                        "environment" => ENVIRONMENTS[environment]
                    )
                } else {
                    Counter::noop()
                }
            })
        });
        LayerMetrics {
            requests,
            cache_hits: metrics::counter!(CACHE_HITS),
            cache_misses: metrics::counter!(CACHE_MISSES),
            cache_entries: metrics::gauge!(CACHE_ENTRIES, "kind" => "found"),
            cache_unknown_entries: metrics::gauge!(CACHE_ENTRIES, "kind" => "unknown"),
            resolver_duration: metrics::histogram!(RESOLVER_DURATION),
            resolver_errors: metrics::counter!(RESOLVER_ERRORS, "reason" => "error"),
            resolver_timeouts: metrics::counter!(RESOLVER_ERRORS, "reason" => "timeout"),
            resolver_panics: metrics::counter!(RESOLVER_ERRORS, "reason" => "panic"),
            flushes_ok: metrics::counter!(USAGE_FLUSHES, "result" => "ok"),
            flushes_failed: metrics::counter!(USAGE_FLUSHES, "result" => "failed"),
            dropped: metrics::counter!(USAGE_DROPPED),
            pending: metrics::gauge!(USAGE_PENDING),
            per_key,
        }
    }

    /// Handles that report to nobody: for tests of the parts.
    #[cfg(test)]
    pub(crate) fn noop() -> Self {
        metrics::with_local_recorder(&metrics::NoopRecorder, || LayerMetrics::resolve(false))
    }

    /// Counts one request.
    #[inline]
    pub(crate) fn request(&self, outcome: RequestOutcome, environment: Option<Environment>) {
        self.requests[outcome.index()][environment_index(environment)].increment(1);
    }

    /// Adds `count` requests of key `key_id` with `outcome` to the per-key counter.
    pub(crate) fn key_requests(&self, key_id: &str, outcome: KeyOutcome, count: u64) {
        if self.per_key && count > 0 {
            metrics::counter!(
                KEY_REQUESTS,
                "key_id" => key_id.to_owned(),
                "outcome" => outcome.as_str()
            )
            .increment(count);
        }
    }
}

/// A watcher's handles.
pub(crate) struct WatcherMetrics {
    pub(crate) connected: Gauge,
    pub(crate) losses: Counter,
}

impl WatcherMetrics {
    pub(crate) fn resolve(watcher: Cow<'static, str>) -> Self {
        describe();
        WatcherMetrics {
            connected: metrics::gauge!(INVALIDATION_CONNECTED, "watcher" => watcher.clone()),
            losses: metrics::counter!(INVALIDATION_LOSSES, "watcher" => watcher),
        }
    }
}

/// Tells the recorder what each metric is, for its `# HELP` lines.
pub(crate) fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests decided by ApiKeyLayer, by outcome and key environment."
    );
    metrics::describe_counter!(
        KEY_REQUESTS,
        Unit::Count,
        "Requests decided by ApiKeyLayer per key id (published at each usage flush)."
    );
    metrics::describe_counter!(
        CACHE_HITS,
        Unit::Count,
        "Requests answered from the key cache."
    );
    metrics::describe_counter!(
        CACHE_MISSES,
        Unit::Count,
        "Requests that waited for a resolver call."
    );
    metrics::describe_gauge!(
        CACHE_ENTRIES,
        Unit::Count,
        "Cached answers: found keys (valid, revoked or expired) and unknown digests."
    );
    metrics::describe_histogram!(
        RESOLVER_DURATION,
        Unit::Seconds,
        "Duration of each resolver call."
    );
    metrics::describe_counter!(
        RESOLVER_ERRORS,
        Unit::Count,
        "Resolver calls that failed, timed out or panicked."
    );
    metrics::describe_counter!(
        USAGE_FLUSHES,
        Unit::Count,
        "Usage flushes to the key store, by result."
    );
    metrics::describe_counter!(
        USAGE_DROPPED,
        Unit::Count,
        "Requests whose usage counts were dropped: the store was down longer than memory holds."
    );
    metrics::describe_gauge!(
        USAGE_PENDING,
        Unit::Count,
        "Usage counts (per key and day) waiting to be written to the key store."
    );
    metrics::describe_gauge!(
        INVALIDATION_CONNECTED,
        Unit::Count,
        "1 while the invalidation watcher is subscribed, 0 otherwise."
    );
    metrics::describe_counter!(
        INVALIDATION_LOSSES,
        Unit::Count,
        "Invalidation subscriptions lost or failed."
    );
    metrics::describe_gauge!(
        RATE_LIMITER_CONNECTED,
        Unit::Count,
        "1 while the Redis rate limiter is connected, 0 otherwise."
    );
    metrics::describe_counter!(
        RATE_LIMITER_ERRORS,
        Unit::Count,
        "Rate checks Redis did not decide: timeout, error or unavailable."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_line_up_with_the_outcomes() {
        for outcome in KeyOutcome::ALL {
            assert_eq!(
                OUTCOMES[RequestOutcome::Key(outcome).index()],
                outcome.as_str()
            );
        }
        for outcome in AnonymousOutcome::ALL {
            assert_eq!(
                OUTCOMES[RequestOutcome::Anonymous(outcome).index()],
                outcome.as_str()
            );
        }
        assert_eq!(OUTCOMES[RequestOutcome::Unavailable.index()], "unavailable");
        assert_eq!(
            OUTCOMES[RequestOutcome::NetworkNotAllowed.index()],
            "network_not_allowed"
        );
        assert_eq!(
            ENVIRONMENTS[environment_index(Some(Environment::Live))],
            Environment::Live.as_str()
        );
        assert_eq!(
            ENVIRONMENTS[environment_index(Some(Environment::Test))],
            Environment::Test.as_str()
        );
    }
}
