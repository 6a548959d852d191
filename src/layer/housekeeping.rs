//! The layer's background task: flushes usage counts, prunes old ones, brings the cache gauges
//! up to date.
//!
//! It starts with the first request made inside a Tokio runtime (or when the layer is built
//! inside one), because a layer may be built before any runtime exists. It holds no reference
//! to the layer: when the layer's shared state is dropped (every clone of the layer and every
//! service it made), a channel closes, and the task writes what is left and ends.

use crate::limit::gcra::now_nanos;
use crate::limit::rules::RateRules;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::{select, Either};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::authenticator::Authenticator;
use crate::cache::KeyCache;
use crate::store::StoreError;
use crate::usage::tally::Tally;
use crate::usage::{Flush, UsageRecorder};

/// How soon a failed prune is tried again (unless the prune interval is shorter).
const PRUNE_RETRY: Duration = Duration::from_secs(5 * 60);

/// Whether the task runs, and the channel that stops it.
pub(crate) struct Housekeeping {
    started: AtomicBool,
    every: Duration,
    /// Dropped with the layer's state: the task then writes what is left and ends.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Housekeeping {
    /// A task that will wake every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Housekeeping {
            started: AtomicBool::new(false),
            every,
            stop: Mutex::new(None),
        }
    }

    /// Starts the task, unless it runs already or there is no Tokio runtime here.
    #[inline]
    pub(crate) fn start(&self, authenticator: &Arc<Authenticator>) {
        if !self.started.load(Ordering::Relaxed) {
            self.start_now(authenticator);
        }
    }

    #[cold]
    fn start_now(&self, authenticator: &Arc<Authenticator>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        *self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(stop);
        runtime.spawn(run(
            stopped,
            self.every,
            authenticator.tally.clone(),
            authenticator.recorder.clone(),
            Arc::downgrade(&authenticator.cache),
            authenticator.rates.clone(),
        ));
    }
}

async fn run(
    mut stopped: oneshot::Receiver<()>,
    every: Duration,
    tally: Arc<Tally>,
    recorder: Option<Arc<UsageRecorder>>,
    cache: Weak<KeyCache>,
    rates: Arc<RateRules>,
) {
    let prune_every = recorder
        .as_ref()
        .filter(|recorder| recorder.settings().retention_days.is_some())
        .map(|recorder| recorder.settings().prune_interval);
    let mut next_flush = Instant::now() + every;
    // The first prune one interval after the start, then every `prune_every`.
    let mut next_prune = prune_every.map(|_| next_flush);
    loop {
        let wake = next_prune.map_or(next_flush, |prune| prune.min(next_flush));
        let sleep = std::pin::pin!(tokio::time::sleep_until(wake));
        if let Either::Right(_) = select(sleep, &mut stopped).await {
            // The layer is gone: write what is left.
            if let Some(recorder) = recorder.as_ref().filter(|r| r.is_active()) {
                let _ = recorder.flush(Flush::Everything).await;
            }
            return;
        }
        let now = Instant::now();
        if now >= next_flush {
            if let Some(recorder) = recorder.as_ref().filter(|r| r.is_active()) {
                // Failures are logged, and their counts kept for the next flush.
                let _ = recorder.flush(Flush::Periodic).await;
            }
            if let Some(cache) = cache.upgrade() {
                let stats = cache.stats();
                tally.metrics.cache_entries.set(stats.entries as f64);
                tally
                    .metrics
                    .cache_unknown_entries
                    .set(stats.negative_entries as f64);
            }
            // Buckets full again and held by no cached key are as good as new ones.
            rates.local.prune(now_nanos());
            next_flush = Instant::now() + every;
        }
        if let (Some(due), Some(recorder), Some(interval)) = (next_prune, &recorder, prune_every) {
            if now >= due {
                next_prune = match recorder.prune().await {
                    Ok(_) => Some(Instant::now() + interval),
                    Err(StoreError::UsageNotKept) => None,
                    Err(_) => Some(Instant::now() + interval.min(PRUNE_RETRY)),
                };
            }
        }
    }
}
