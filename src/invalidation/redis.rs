//! Invalidations over Redis pub/sub: [`RedisBus`] (feature `redis`), for keys kept by a resolver
//! of your own on several instances.
//!
//! This crate's SQL stores tell every process about a change on their own. Keys in a database of
//! your own have no such channel: after revoking a key there, your code has to tell the other
//! instances, or they keep accepting the key until their cached copy expires (the layer's
//! `cache_ttl`, 30 seconds by default). A [`RedisBus`] carries that message over one Redis
//! pub/sub channel:
//!
//! - every instance runs a [`Watcher`](crate::Watcher) on the bus, which subscribes to the
//!   channel and applies each message to the instance's [`Invalidations`](crate::Invalidations)
//!   handle, and so to its layers;
//! - the instance that revoked the key drops it from its own caches with
//!   [`Invalidations::invalidate`](crate::Invalidations::invalidate) and publishes the key's
//!   digest with [`RedisBus::publish`].
//!
//! # Example
//!
//! ```no_run
//! use tower_api_key::{
//!     ApiKeyLayer, Invalidation, Invalidations, KeyDigest, KeyFormat, KeyRecord, RedisBus,
//!     ResolveError, Watcher,
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = RedisBus::open("redis://cache.internal:6379", "api-key-invalidations")?;
//! let invalidations = Invalidations::new();
//! // Applies what the other instances publish, for as long as it lives: keep it with the app.
//! let watcher = Watcher::spawn(bus.clone(), invalidations.clone());
//!
//! // Your own lookup, by the key's SHA-256 digest.
//! let resolver = |digest: KeyDigest| async move {
//!     // SELECT ... FROM api_keys WHERE digest = $1
//!     # let _ = digest;
//!     Ok::<Option<KeyRecord>, ResolveError>(None)
//! };
//! let layer = ApiKeyLayer::resolver_builder(KeyFormat::new("om")?, resolver)
//!     .invalidations(invalidations.clone())
//!     .build();
//! let app: axum::Router = axum::Router::new()
//!     .route("/v1/orders", axum::routing::get(|| async { "orders" }))
//!     .layer(layer);
//!
//! // Later, revoking a key:
//! # let digest = KeyDigest::of(b"om_live_...");
//! // UPDATE api_keys SET revoked_at = now() WHERE digest = $1, then:
//! invalidations.invalidate(&digest); // this instance, before it returns
//! bus.publish(Invalidation::Key(digest)).await?; // every other instance
//! # let _ = (app, watcher);
//! # Ok(())
//! # }
//! ```
//!
//! If `publish` fails (Redis is down), the key is still revoked in your database and on this
//! instance; the others drop their copy when it expires, or sooner if their watchers lose the
//! channel too. Publishing [`Invalidation::All`] empties every instance's caches.
//!
//! # On the wire
//!
//! A message is the text of an [`Invalidation`]: `key:` and the digest's 64 lowercase hex digits,
//! or `all`. Any program can publish one (`PUBLISH api-key-invalidations key:9f86d0…`); a
//! message that is not one of these empties the caches, to be safe. The digest is what your key
//! table holds anyway, never the key.
//!
//! # When the channel is lost
//!
//! Each subscription has a connection of its own, separate from the one `publish` uses, named
//! `tower-api-key:<channel>` so that it can be told apart in `CLIENT LIST`. When it closes (the
//! server restarted, `CLIENT KILL`, a proxy dropped it), the subscription ends at once and the
//! [`Watcher`](crate::Watcher) empties the caches, reconnects and reports it in its
//! [`health`](crate::Watcher::health). A connection that dies without closing (a network
//! partition) is noticed by a `PING` sent every 10 seconds, which must be answered within 2
//! seconds ([`with_heartbeat`](RedisBus::with_heartbeat),
//! [`with_timeout`](RedisBus::with_timeout)).
//! So, with these defaults, another instance accepts a revoked key for milliseconds while the
//! channel is up, and for at most the shorter of `cache_ttl` and 12 seconds if the channel
//! silently died just before the revocation.
//!
//! The subscription speaks RESP3, which lets it name its connection and `PING` it while
//! subscribed: it needs Redis 6 or later (or another server that speaks RESP3, such as Valkey).
//! `publish` speaks whatever the [`Client`] was opened with. The feature builds the `redis` crate
//! for Tokio without TLS; for `rediss://` URLs, enable one of its TLS features
//! (`tokio-rustls-comp`, say) in your own `Cargo.toml`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bus::{BusError, InvalidationBus, InvalidationStream};
use super::Invalidation;

/// Default for [`RedisBus::with_timeout`].
const TIMEOUT: Duration = Duration::from_secs(2);
/// Default for [`RedisBus::with_heartbeat`].
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Carries [`Invalidation`]s between instances over one Redis pub/sub channel. Clones share the
/// connection used to publish.
///
/// Run a [`Watcher`](crate::Watcher) on it in every instance, and [`publish`](Self::publish)
/// after changing a key. See the [module docs](crate::invalidation::redis) for an example.
#[derive(Clone)]
pub struct RedisBus {
    client: Client,
    channel: Arc<str>,
    timeout: Duration,
    heartbeat: Duration,
    publisher: Arc<tokio::sync::Mutex<Publisher>>,
}

/// The connection `publish` reuses, and how many were made, so that a call that saw one fail
/// drops that one and not a newer one.
#[derive(Default)]
struct Publisher {
    connection: Option<MultiplexedConnection>,
    generation: u64,
}

impl RedisBus {
    /// A bus on `channel` of the server `client` points at. Connects only when subscribing or
    /// publishing.
    pub fn new(client: Client, channel: impl Into<String>) -> RedisBus {
        RedisBus {
            client,
            channel: channel.into().into(),
            timeout: TIMEOUT,
            heartbeat: HEARTBEAT,
            publisher: Arc::default(),
        }
    }

    /// A bus on `channel` of the server at `url`, such as `redis://:password@cache:6379/0`.
    ///
    /// # Errors
    ///
    /// When `url` is not a Redis URL this build can use (`rediss://` needs a TLS feature of the
    /// `redis` crate). Nothing is connected yet.
    pub fn open(url: &str, channel: impl Into<String>) -> Result<RedisBus, BusError> {
        Ok(RedisBus::new(
            Client::open(url).map_err(BusError::new)?,
            channel,
        ))
    }

    /// How long Redis may take to connect and to answer a `PUBLISH` or a heartbeat `PING`.
    /// Default: 2 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How often a subscription `PING`s the server, to notice a connection that died without
    /// closing. Default: 10 s.
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(1));
        self
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Publishes `message` to every instance subscribed to the channel, on a connection kept
    /// for the next call. A kept connection that fails or stops answering is replaced, and the
    /// message sent again on the new one, within the same call.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached, refuses the command, or does not answer within the
    /// [timeout](Self::with_timeout); the next call connects again.
    pub async fn publish(&self, message: Invalidation) -> Result<(), BusError> {
        let payload = message.to_string();
        let mut used = None;
        let sent = tokio::time::timeout(self.timeout, self.try_publish(&payload, &mut used)).await;
        let error = match sent {
            Ok(Ok(receivers)) => {
                tracing::debug!(channel = %self.channel, receivers, "invalidation published");
                return Ok(());
            }
            Ok(Err(error)) => error,
            Err(_) => BusError::new(format!(
                "Redis did not answer within {} ms",
                self.timeout.as_millis()
            )),
        };
        if let Some(generation) = used {
            self.forget(generation).await;
        }
        Err(error)
    }

    /// Sends `payload` once, or twice when a kept connection fails; `used` is the connection
    /// last tried, for the caller to drop if this fails or takes too long.
    async fn try_publish(&self, payload: &str, used: &mut Option<u64>) -> Result<i64, BusError> {
        let (generation, fresh, mut connection) = self.publisher().await?;
        *used = Some(generation);
        if fresh {
            return publish_on(&mut connection, &self.channel, payload).await;
        }
        // A kept connection gets half the time, so that one that stopped answering is replaced
        // within this call.
        let kept = publish_on(&mut connection, &self.channel, payload);
        let error = match tokio::time::timeout(self.timeout / 2, kept).await {
            Ok(Ok(receivers)) => return Ok(receivers),
            Ok(Err(error)) => error,
            Err(_) => BusError::new("no answer on the kept connection"),
        };
        // Likely closed or cut off since the last call (Redis restarted, an idle timeout, a
        // partition): once more on a new one, which tells an outage from a stale connection.
        tracing::debug!(
            channel = %self.channel,
            %error,
            "the connection kept for publishing failed; reconnecting"
        );
        self.forget(generation).await;
        let (generation, _, mut connection) = self.publisher().await?;
        *used = Some(generation);
        publish_on(&mut connection, &self.channel, payload).await
    }

    /// The kept connection (made now if there is none), its generation, and whether it is new.
    async fn publisher(&self) -> Result<(u64, bool, MultiplexedConnection), BusError> {
        // Held while connecting, so that concurrent calls wait for one connection instead of
        // opening one each.
        let mut publisher = self.publisher.lock().await;
        if let Some(connection) = &publisher.connection {
            return Ok((publisher.generation, false, connection.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| failed("could not connect to Redis", error))?;
        publisher.generation += 1;
        publisher.connection = Some(connection.clone());
        Ok((publisher.generation, true, connection))
    }

    /// Drops the kept connection if it is still the one of `generation`.
    async fn forget(&self, generation: u64) {
        let mut publisher = self.publisher.lock().await;
        if publisher.generation == generation {
            publisher.connection = None;
        }
    }

    /// The name of the subscription's connection in `CLIENT LIST`: no spaces or control
    /// characters, which Redis refuses in names.
    fn connection_name(&self) -> String {
        let channel: String = self
            .channel
            .chars()
            .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
            .collect();
        format!("tower-api-key:{channel}")
    }

    /// The client's connection settings with RESP3, in which a subscribed connection can still
    /// run `CLIENT SETNAME` and `PING`, and which tells of a closed connection.
    fn subscriber(&self) -> Result<Client, BusError> {
        let info: &ConnectionInfo = self.client.get_connection_info();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Client::open(info.clone().set_redis_settings(settings)).map_err(BusError::new)
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address only: the connection settings hold the password.
        let info = self.client.get_connection_info();
        f.debug_struct("RedisBus")
            .field("server", &format_args!("{}", info.addr()))
            .field("db", &info.redis_settings().db())
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

async fn publish_on(
    connection: &mut MultiplexedConnection,
    channel: &str,
    payload: &str,
) -> Result<i64, BusError> {
    ::redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(connection)
        .await
        .map_err(|error| failed("Redis refused or lost the PUBLISH", error))
}

fn failed(what: &str, error: ::redis::RedisError) -> BusError {
    BusError::new(format!("{what}: {error}"))
}

#[async_trait]
impl InvalidationBus for RedisBus {
    async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(sender);
        let mut connection = self
            .subscriber()?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| failed("could not connect to Redis", error))?;
        // Only the connection holds the sender now: the pushes end when it closes.
        drop(config);
        let named: Result<(), _> = ::redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(self.connection_name())
            .query_async(&mut connection)
            .await;
        if let Err(error) = named {
            // A courtesy to administrators, which an ACL may forbid; the subscription works
            // without it.
            tracing::debug!(
                channel = %self.channel,
                %error,
                "could not name the subscription's connection"
            );
        }
        // Returns once Redis confirmed the subscription.
        connection
            .subscribe(&*self.channel)
            .await
            .map_err(|error| failed("Redis refused the SUBSCRIBE", error))?;
        let subscription = Subscription {
            connection,
            pushes,
            channel: self.channel.clone(),
            timeout: self.timeout,
            heartbeat: self.heartbeat,
            next_ping: Instant::now() + self.heartbeat,
        };
        let messages = stream::unfold(Some(subscription), |subscription| async move {
            let mut subscription = subscription?;
            Some(match subscription.next().await {
                Ok(message) => (Ok(message), Some(subscription)),
                // Lost for good: end the stream after the error.
                Err(error) => (Err(error), None),
            })
        });
        Ok(messages.boxed())
    }
}

/// One subscribed connection and what it received.
struct Subscription {
    connection: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    channel: Arc<str>,
    timeout: Duration,
    heartbeat: Duration,
    next_ping: Instant,
}

impl Subscription {
    /// The next message; an error once the subscription is lost.
    async fn next(&mut self) -> Result<Invalidation, BusError> {
        loop {
            let push = match tokio::time::timeout_at(self.next_ping, self.pushes.recv()).await {
                Ok(Some(push)) => push,
                Ok(None) => return Err(BusError::new("the connection to Redis was closed")),
                Err(_) => {
                    self.ping().await?;
                    continue;
                }
            };
            match push.kind {
                PushKind::Message => {
                    if let Some(message) = message_for(&self.channel, &push.data) {
                        return Ok(message);
                    }
                }
                PushKind::Disconnection => {
                    return Err(BusError::new("the connection to Redis was closed"))
                }
                PushKind::Unsubscribe if is_channel(&self.channel, push.data.first()) => {
                    return Err(BusError::new("Redis ended the subscription"))
                }
                // The confirmation of our SUBSCRIBE, and kinds that carry no message.
                _ => {}
            }
        }
    }

    /// Checks that the server still answers, as a connection that died without closing would
    /// never tell.
    async fn ping(&mut self) -> Result<(), BusError> {
        let command = ::redis::cmd("PING");
        let ping = command.query_async::<::redis::Value>(&mut self.connection);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => {
                self.next_ping = Instant::now() + self.heartbeat;
                Ok(())
            }
            Ok(Err(error)) => Err(failed("the heartbeat PING failed", error)),
            Err(_) => Err(BusError::new(format!(
                "Redis did not answer the heartbeat PING within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// The message in a `message` push (`[channel, payload]`), if it is on `channel`. A payload that
/// is not an invalidation empties the caches, to be safe.
fn message_for(channel: &str, data: &[::redis::Value]) -> Option<Invalidation> {
    let [on, payload] = data else {
        return Some(unreadable("a message of an unexpected shape"));
    };
    if !is_channel(channel, Some(on)) {
        return None;
    }
    let ::redis::Value::BulkString(payload) = payload else {
        return Some(unreadable("a message that is not a string"));
    };
    match std::str::from_utf8(payload).ok().map(str::parse) {
        Some(Ok(message)) => Some(message),
        _ => Some(unreadable("a message that is not an invalidation")),
    }
}

fn unreadable(what: &str) -> Invalidation {
    // What was sent is not logged: it is not ours, and may be anything.
    tracing::warn!("{what} on the Redis invalidation channel; emptying the caches to be safe");
    Invalidation::All
}

fn is_channel(channel: &str, value: Option<&::redis::Value>) -> bool {
    matches!(value, Some(::redis::Value::BulkString(name)) if name.as_slice() == channel.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyDigest;
    use ::redis::Value;

    fn text(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn messages_are_read_and_anything_else_empties_the_caches() {
        let digest = KeyDigest::of(b"om_live_example");
        let key = format!("key:{}", digest.to_hex());
        let read = |data: &[Value]| message_for("keys", data);
        assert_eq!(
            read(&[text(b"keys"), text(key.as_bytes())]),
            Some(Invalidation::Key(digest))
        );
        assert_eq!(
            read(&[text(b"keys"), text(b"all")]),
            Some(Invalidation::All)
        );
        for payload in [
            text(b"garbage"),
            text(b""),
            text(b"\xff\xfe"),
            Value::Int(1),
        ] {
            assert_eq!(
                read(&[text(b"keys"), payload.clone()]),
                Some(Invalidation::All),
                "{payload:?}"
            );
        }
        assert_eq!(read(&[text(b"keys")]), Some(Invalidation::All));
        assert_eq!(read(&[text(b"other"), text(b"all")]), None);
    }

    #[test]
    fn debug_shows_the_channel_but_not_the_password() {
        let bus = RedisBus::open("redis://user:hunter2@cache.internal:6380/3", "keys").unwrap();
        let debug = format!("{bus:?}");
        assert!(debug.contains("\"keys\""), "{debug}");
        assert!(debug.contains("cache.internal:6380"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("user"), "{debug}");
    }

    #[test]
    fn errors_do_not_show_the_password() {
        for url in [
            "redis://user:hunter2@cache.internal:port/0",
            "redis://user:hunter2@cache.internal:6379/db",
            "http://user:hunter2@cache.internal:6379/0",
        ] {
            let error = RedisBus::open(url, "keys").unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn connection_names_have_no_spaces() {
        let bus = RedisBus::open("redis://127.0.0.1", "api keys\n\u{e9}").unwrap();
        assert_eq!(bus.connection_name(), "tower-api-key:api_keys__");
    }
}
