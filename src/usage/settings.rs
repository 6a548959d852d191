use std::time::Duration;

/// How a layer records usage: see the [module docs](crate::usage). Every setting has a
/// default; [`UsageSettings::off`] records nothing.
///
/// ```
/// use std::time::Duration;
/// use tower_api_key::{ApiKeyLayer, KeyFormat, MemoryStore, UsageSettings};
///
/// let store = MemoryStore::new(KeyFormat::new("om").unwrap());
/// let layer = ApiKeyLayer::builder(store)
///     .usage(
///         UsageSettings::new()
///             .flush_interval(Duration::from_secs(30))
///             .retention_days(Some(400)),
///     )
///     .build();
/// # drop(layer);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct UsageSettings {
    pub(crate) enabled: bool,
    pub(crate) flush_interval: Duration,
    pub(crate) last_used_period: Duration,
    pub(crate) max_pending: usize,
    pub(crate) retention_days: Option<u32>,
    pub(crate) prune_interval: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            enabled: true,
            flush_interval: Duration::from_secs(10),
            last_used_period: Duration::from_secs(60),
            max_pending: 100_000,
            retention_days: Some(90),
            prune_interval: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl UsageSettings {
    /// The defaults: record, flush every 10 seconds, `last_used_at` at most once a minute per
    /// key, up to 100,000 counts held while the store is down, 90 days kept.
    pub fn new() -> Self {
        UsageSettings::default()
    }

    /// Records nothing: no counting on the request path, no background task for usage.
    pub fn off() -> Self {
        UsageSettings {
            enabled: false,
            ..UsageSettings::default()
        }
    }

    /// How often the counts are written to the store, in one batch. Default: 10 seconds.
    ///
    /// Also how often the cache gauges and per-key metrics are brought up to date. At least
    /// 1 millisecond.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often a key's `last_used_at` is written at most: a flush writes a key's last use
    /// only when it is this much later than the last one written. Default: 60 seconds.
    ///
    /// A key's last use is the time of the flush that took its counts (requests let through, or
    /// refused only by a route's scope), so `last_used_at` is behind the key's last request by
    /// up to the flush interval, or this period when a write was held back;
    /// [`ApiKeyLayer::flush_usage`](crate::ApiKeyLayer::flush_usage) writes the latest whatever
    /// its age.
    pub fn last_used_period(mut self, period: Duration) -> Self {
        self.last_used_period = period;
        self
    }

    /// How many counts (one per key and day, plus last uses) are held in memory at most while
    /// the store cannot take them. Default: 100,000, about 10 MB. Past it, the counts of keys
    /// and days not held already are dropped, counted
    /// ([`tower_api_key_usage_dropped_requests_total`](crate::metrics::USAGE_DROPPED)) and
    /// logged; counts of keys and days held already keep adding up.
    pub fn max_pending(mut self, entries: usize) -> Self {
        self.max_pending = entries;
        self
    }

    /// How many days of counts the store keeps, today included: the layer deletes older ones
    /// with [`KeyStore::prune_usage`](crate::KeyStore::prune_usage) every
    /// [`prune_interval`](Self::prune_interval), the first time one flush interval after it
    /// starts. `None` keeps them for ever. Default: 90 days. At least 1.
    ///
    /// Several instances on one database may all prune: deleting is idempotent.
    pub fn retention_days(mut self, days: Option<u32>) -> Self {
        self.retention_days = days.map(|days| days.max(1));
        self
    }

    /// How often old counts are pruned. Default: once a day.
    pub fn prune_interval(mut self, interval: Duration) -> Self {
        self.prune_interval = interval.max(Duration::from_millis(1));
        self
    }
}
