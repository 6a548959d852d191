//! [`Watcher`]: runs a bus subscription for the life of the process, and survives losing it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bus::{BusError, InvalidationBus};
use super::{Invalidation, Invalidations};
use crate::metrics::WatcherMetrics;

/// How a [`Watcher`]'s subscription is doing: what an application's health endpoint can show.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelHealth {
    /// Subscribing for the first time.
    Starting,
    /// Subscribed: changes made elsewhere reach the caches within milliseconds.
    Connected {
        /// When the subscription was made.
        since: SystemTime,
    },
    /// Not subscribed: the caches were emptied when it was lost, keys are cached for at most
    /// the cache's time-to-live, and the watcher is trying again with growing pauses (unless
    /// its task ended, with the Tokio runtime it ran on: `error` then says that it stopped).
    Lost {
        /// When the subscription was lost (or the first attempt failed).
        since: SystemTime,
        /// The last failure.
        error: Arc<str>,
        /// How many attempts to subscribe have failed since.
        attempts: u32,
    },
}

impl ChannelHealth {
    /// Whether the subscription is in place.
    pub fn is_connected(&self) -> bool {
        matches!(self, ChannelHealth::Connected { .. })
    }

    /// `"starting"`, `"connected"` or `"lost"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelHealth::Starting => "starting",
            ChannelHealth::Connected { .. } => "connected",
            ChannelHealth::Lost { .. } => "lost",
        }
    }
}

impl fmt::Display for ChannelHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelHealth::Lost {
                error, attempts, ..
            } => write!(f, "lost ({error}; {attempts} attempts since)"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Runs an [`InvalidationBus`] subscription in a background task and applies every message to
/// an [`Invalidations`] handle, for as long as the watcher lives (dropping it stops the task).
///
/// When the subscription is lost or cannot be made, the watcher empties the caches, logs a
/// warning, and tries again after a pause that doubles from 100 ms up to 5 s (with jitter, so
/// that instances do not reconnect in step); once subscribed again it empties the caches once
/// more, since changes made in between were missed, and logs that it recovered. It never gives
/// up, and never spins while the server is down.
///
/// The SQL stores run one of their own; see [`SqlStore::watcher`](crate::SqlStore::watcher).
///
/// ```
/// use futures_util::StreamExt;
/// use tower_api_key::{
///     BusError, ChannelHealth, Invalidation, InvalidationBus, InvalidationStream, Invalidations,
///     Watcher,
/// };
///
/// /// A bus whose subscription holds one message and then stays open.
/// struct OneMessage;
///
/// #[async_trait::async_trait]
/// impl InvalidationBus for OneMessage {
///     async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
///         let message = futures_util::stream::iter([Ok(Invalidation::All)]);
///         Ok(message.chain(futures_util::stream::pending()).boxed())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let invalidations = Invalidations::new();
/// let watcher = Watcher::spawn(OneMessage, invalidations.clone());
/// let mut changes = watcher.health_changes();
/// changes.wait_for(ChannelHealth::is_connected).await.unwrap();
/// assert_eq!(watcher.health().as_str(), "connected");
/// # }
/// ```
pub struct Watcher {
    name: Cow<'static, str>,
    health: watch::Receiver<ChannelHealth>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Starts watching `bus` with the default settings, applying its messages to
    /// `invalidations`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(bus: impl InvalidationBus, invalidations: Invalidations) -> Watcher {
        Watcher::builder().spawn(bus, invalidations)
    }

    /// A builder for a watcher with other settings.
    pub fn builder() -> WatcherBuilder {
        WatcherBuilder::default()
    }

    /// How the subscription is doing now.
    pub fn health(&self) -> ChannelHealth {
        self.health.borrow().clone()
    }

    /// A receiver that sees every change of [`health`](Self::health).
    pub fn health_changes(&self) -> watch::Receiver<ChannelHealth> {
        self.health.clone()
    }

    /// The name the watcher's log events give its bus.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("name", &self.name)
            .field("health", &*self.health.borrow())
            .finish()
    }
}

/// Configures a [`Watcher`].
#[derive(Clone, Debug)]
#[must_use]
pub struct WatcherBuilder {
    name: Cow<'static, str>,
    first_pause: Duration,
    longest_pause: Duration,
    subscribe_timeout: Duration,
}

impl Default for WatcherBuilder {
    fn default() -> Self {
        WatcherBuilder {
            name: Cow::Borrowed("invalidations"),
            first_pause: Duration::from_millis(100),
            longest_pause: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(5),
        }
    }
}

impl WatcherBuilder {
    /// The name log events give the bus, such as `"redis"`. Default: `"invalidations"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The pause after the first failure, and the longest pause, between which pauses double.
    /// Default: 100 ms and 5 s.
    pub fn backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.first_pause = first.max(Duration::from_millis(1));
        self.longest_pause = longest.max(self.first_pause);
        self
    }

    /// How long an attempt to subscribe may take before it counts as failed. Default: 5 s.
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.subscribe_timeout = timeout;
        self
    }

    /// Starts watching `bus`, applying its messages to `invalidations`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self, bus: impl InvalidationBus, invalidations: Invalidations) -> Watcher {
        self.spawn_for(bus, vec![invalidations])
    }

    /// Starts watching `bus`, applying its messages to every handle of `targets`.
    pub(crate) fn spawn_for(
        self,
        bus: impl InvalidationBus,
        targets: Vec<Invalidations>,
    ) -> Watcher {
        let (sender, health) = watch::channel(ChannelHealth::Starting);
        let name = self.name.clone();
        let metrics = WatcherMetrics::resolve(name.clone());
        metrics.connected.set(0.0);
        let task = tokio::spawn(run(self, bus, Targets(targets), sender, metrics));
        Watcher { name, health, task }
    }
}

/// The handles a watcher applies messages to.
struct Targets(Vec<Invalidations>);

impl Targets {
    fn apply(&self, message: Invalidation) {
        for target in &self.0 {
            target.apply(message);
        }
    }
}

/// A subscription that lasted this long counts as a success: the next failure starts the
/// pauses from the first again.
const STABLE: Duration = Duration::from_secs(1);

async fn run(
    settings: WatcherBuilder,
    bus: impl InvalidationBus,
    targets: Targets,
    health: watch::Sender<ChannelHealth>,
    metrics: WatcherMetrics,
) {
    let _stopped = Stopped {
        health: &health,
        targets: &targets,
        metrics: &metrics,
    };
    let name = &settings.name;
    let mut failures: u32 = 0;
    loop {
        let subscribed = tokio::time::timeout(settings.subscribe_timeout, bus.subscribe()).await;
        let error = match subscribed {
            Ok(Ok(mut stream)) => {
                // Whatever changed while there was no subscription was missed: forget it all.
                targets.apply(Invalidation::All);
                let connected_at = Instant::now();
                health.send_replace(ChannelHealth::Connected {
                    since: SystemTime::now(),
                });
                metrics.connected.set(1.0);
                if failures > 0 {
                    tracing::info!(bus = %name, "invalidation channel is back; caches emptied");
                } else {
                    tracing::debug!(bus = %name, "invalidation channel subscribed");
                }
                let error = loop {
                    match stream.next().await {
                        Some(Ok(message)) => targets.apply(message),
                        Some(Err(error)) => break error,
                        None => break BusError::new("the subscription ended"),
                    }
                };
                drop(stream);
                targets.apply(Invalidation::All);
                if connected_at.elapsed() >= STABLE {
                    failures = 0;
                }
                error
            }
            Ok(Err(error)) => error,
            Err(_) => BusError::new(format!(
                "no subscription within {} ms",
                settings.subscribe_timeout.as_millis()
            )),
        };
        failures = failures.saturating_add(1);
        metrics.connected.set(0.0);
        metrics.losses.increment(1);
        let pause = pause(&settings, failures);
        let error: Arc<str> = error.to_string().into();
        tracing::warn!(
            bus = %name,
            error = %error,
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "invalidation channel lost; caches emptied, keys cached for at most their time-to-live until it is back"
        );
        health.send_modify(|state| {
            let since = match state {
                ChannelHealth::Lost { since, .. } => *since,
                _ => SystemTime::now(),
            };
            *state = ChannelHealth::Lost {
                since,
                error,
                attempts: failures,
            };
        });
        tokio::time::sleep(pause).await;
    }
}

/// Says that the watcher stopped when its task ends while someone still reads its health: the
/// Tokio runtime it ran on shut down, and the [`Watcher`] (or a receiver of its health) lives
/// on. Otherwise the health would keep its last value, `connected` included, while nothing
/// watches any more.
struct Stopped<'a> {
    health: &'a watch::Sender<ChannelHealth>,
    targets: &'a Targets,
    metrics: &'a WatcherMetrics,
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.metrics.connected.set(0.0);
        // Nobody reads the health: the watcher was dropped, and the store or code that ran it
        // with it.
        if self.health.receiver_count() == 0 {
            return;
        }
        // No change reaches the caches any more: from here on, keys are cached for at most
        // their time-to-live.
        self.targets.apply(Invalidation::All);
        tracing::warn!(
            "invalidation watcher stopped (its Tokio runtime shut down); caches emptied, keys \
             cached for at most their time-to-live from now on"
        );
        self.health.send_modify(|state| {
            let (since, attempts) = match state {
                ChannelHealth::Lost {
                    since, attempts, ..
                } => (*since, *attempts),
                _ => (SystemTime::now(), 0),
            };
            *state = ChannelHealth::Lost {
                since,
                error: Arc::from(STOPPED),
                attempts,
            };
        });
    }
}

/// The error of a watcher whose task ended.
const STOPPED: &str = "the watcher stopped: its Tokio runtime shut down";

/// The pause after `failures` failures in a row: doubling from the first pause up to the
/// longest, then between half of that and all of it, at random.
fn pause(settings: &WatcherBuilder, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let full = settings
        .first_pause
        .saturating_mul(1 << doublings)
        .min(settings.longest_pause);
    let mut random = [0u8; 8];
    // Without randomness the pause is simply the longest of its range.
    let random = getrandom::fill(&mut random).map_or(u64::MAX, |()| u64::from_le_bytes(random));
    let half = full / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    half + Duration::from_micros(random % spread.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus whose subscription stays open and carries nothing.
    struct Quiet;

    #[async_trait::async_trait]
    impl InvalidationBus for Quiet {
        async fn subscribe(&self) -> Result<super::super::InvalidationStream, BusError> {
            Ok(futures_util::stream::pending().boxed())
        }
    }

    #[test]
    fn a_watcher_whose_runtime_shut_down_says_it_stopped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let watcher = runtime.block_on(async {
            let watcher = Watcher::spawn(Quiet, Invalidations::new());
            let mut health = watcher.health_changes();
            health.wait_for(ChannelHealth::is_connected).await.unwrap();
            watcher
        });
        drop(runtime);
        match watcher.health() {
            ChannelHealth::Lost { error, .. } => assert_eq!(&*error, STOPPED),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn pauses_double_up_to_the_longest_with_jitter_below() {
        let settings = WatcherBuilder::default();
        for (failures, full_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (6, 3200),
            (7, 5000),
            (99, 5000),
        ] {
            for _ in 0..50 {
                let pause = pause(&settings, failures);
                let full = Duration::from_millis(full_ms);
                assert!(pause >= full / 2 && pause <= full, "{failures}: {pause:?}");
            }
        }
    }
}
