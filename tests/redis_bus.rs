//! `RedisBus` against a real Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), seen as a
//! user of several instances sees it: keys in a database of their own (a shared table here), one
//! `ApiKeyLayer` per instance with its own `Invalidations` and its own `Watcher` on its own bus.
//!
//! Every test has a channel of its own, so they run in parallel on one server. Without Redis the
//! tests say so loudly and pass, unless `CI` is set, where they fail.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower_api_key::{
    ApiKeyLayer, ChannelHealth, Environment, Invalidation, Invalidations, KeyDigest, KeyFormat,
    KeyRecord, KeyResolver, PlaintextKey, Principal, RedisBus, ResolveError, ScopeSet, Watcher,
};

/// How long anything that should happen at once may take before the test fails.
const CEILING: Duration = Duration::from_secs(5);

/// The server, or `None` (after saying so) when it is unreachable and `CI` is unset.
async fn redis() -> Option<redis::Client> {
    common::redis("the Redis bus tests").await
}

/// A channel no other test uses.
fn channel(test: &str) -> String {
    format!(
        "tower-api-key-test:{test}:{:016x}",
        getrandom::u64().unwrap()
    )
}

async fn admin(client: &redis::Client) -> MultiplexedConnection {
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The key table of "your own database", shared by every instance.
#[derive(Clone, Default)]
struct Table(Arc<Mutex<HashMap<KeyDigest, KeyRecord>>>);

impl Table {
    fn add(&self, key: &PlaintextKey, name: &str) {
        let record = KeyRecord::new(name, Environment::Live, ScopeSet::empty()).with_name(name);
        self.0.lock().unwrap().insert(key.digest(), record);
    }

    fn revoke(&self, key: &PlaintextKey) {
        let mut keys = self.0.lock().unwrap();
        let record = keys.get_mut(&key.digest()).unwrap();
        record.revoked_at = Some(SystemTime::now());
    }
}

/// One instance's resolver over the table, counting its lookups.
#[derive(Clone)]
struct Lookup {
    table: Table,
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl KeyResolver for Lookup {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.table.0.lock().unwrap().get(digest).cloned())
    }
}

/// One instance of the service.
struct Instance {
    app: Router,
    calls: Arc<AtomicUsize>,
    invalidations: Invalidations,
    watcher: Watcher,
}

impl Instance {
    fn start(table: &Table, bus: RedisBus) -> Instance {
        Instance::start_with(table, bus, Watcher::builder().name("redis"))
    }

    fn start_with(
        table: &Table,
        bus: RedisBus,
        watcher: tower_api_key::WatcherBuilder,
    ) -> Instance {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = Lookup {
            table: table.clone(),
            calls: calls.clone(),
        };
        let invalidations = Invalidations::new();
        let watcher = watcher.spawn(bus, invalidations.clone());
        let layer = ApiKeyLayer::resolver_builder(KeyFormat::new("om").unwrap(), lookup)
            .invalidations(invalidations.clone())
            .build();
        let app = Router::new()
            .route(
                "/v1/orders",
                get(|principal: Principal| async move { principal.name().to_owned() }),
            )
            .layer(layer);
        Instance {
            app,
            calls,
            invalidations,
            watcher,
        }
    }

    async fn status(&self, key: &PlaintextKey) -> StatusCode {
        let request = Request::get("/v1/orders")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", key.expose_secret()),
            )
            .body(Body::empty())
            .unwrap();
        self.app.clone().oneshot(request).await.unwrap().status()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Answers `200` from the cache: no lookup.
    async fn assert_cached(&self, key: &PlaintextKey) {
        let before = self.calls();
        assert_eq!(self.status(key).await, StatusCode::OK);
        assert_eq!(self.calls(), before, "the key was not cached");
    }

    /// Answers `200` after a lookup: the key was not cached.
    async fn assert_looked_up(&self, key: &PlaintextKey) {
        let before = self.calls();
        assert_eq!(self.status(key).await, StatusCode::OK);
        assert_eq!(
            self.calls(),
            before + 1,
            "the key was answered from the cache"
        );
    }

    /// Asks until the answer is `status`; how long that took.
    async fn until(&self, key: &PlaintextKey, status: StatusCode) -> Duration {
        let start = Instant::now();
        loop {
            if self.status(key).await == status {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < CEILING,
                "still not {status} after {CEILING:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until the next request goes to the resolver (the cache was emptied); how long that
    /// took. Every request before that is a cache hit, which changes nothing.
    async fn until_emptied(&self, key: &PlaintextKey) -> Duration {
        let start = Instant::now();
        let before = self.calls();
        loop {
            assert_eq!(self.status(key).await, StatusCode::OK);
            if self.calls() > before {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < CEILING,
                "the cache was not emptied within {CEILING:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn until_health(&self, wanted: impl Fn(&ChannelHealth) -> bool) -> ChannelHealth {
        let mut changes = self.watcher.health_changes();
        let health = tokio::time::timeout(CEILING, changes.wait_for(|h| wanted(h)))
            .await
            .unwrap_or_else(|_| panic!("health still {} after {CEILING:?}", self.watcher.health()))
            .unwrap()
            .clone();
        health
    }

    async fn until_connected(&self) {
        self.until_health(ChannelHealth::is_connected).await;
    }
}

fn is_lost(health: &ChannelHealth) -> bool {
    matches!(health, ChannelHealth::Lost { .. })
}

fn new_key() -> PlaintextKey {
    KeyFormat::new("om")
        .unwrap()
        .generate(Environment::Live)
        .unwrap()
}

/// Kills the subscriptions' connections on `channel` (found by their name in `CLIENT LIST`), as
/// an administrator or a failover would; how many there were.
async fn kill_subscribers(admin: &mut MultiplexedConnection, channel: &str) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await
        .unwrap();
    let name = format!("name=tower-api-key:{channel}");
    let ids: Vec<String> = clients
        .lines()
        .filter(|line| line.split(' ').any(|field| field == name))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect();
    for id in &ids {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await
            .unwrap();
        assert_eq!(killed, 1, "client {id} was not killed");
    }
    ids.len()
}

/// How many connections are subscribed to `channel`.
async fn subscribers(admin: &mut MultiplexedConnection, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(admin)
        .await
        .unwrap();
    counts[0].1
}

#[tokio::test]
async fn a_revocation_published_by_one_instance_is_refused_by_every_instance() {
    common::init_tracing();
    let Some(client) = redis().await else { return };
    let channel = channel("revocation");
    let table = Table::default();
    let (revoked, kept) = (new_key(), new_key());
    table.add(&revoked, "Webhook Server");
    table.add(&kept, "Production");
    let bus_a = RedisBus::new(client.clone(), &channel);
    let a = Instance::start(&table, bus_a.clone());
    let b = Instance::start(&table, RedisBus::new(client.clone(), &channel));
    a.until_connected().await;
    b.until_connected().await;

    for instance in [&a, &b] {
        for key in [&revoked, &kept] {
            instance.assert_looked_up(key).await;
            instance.assert_cached(key).await;
        }
    }

    // Revoked in "your database", then published; no instance is told any other way.
    table.revoke(&revoked);
    bus_a
        .publish(Invalidation::Key(revoked.digest()))
        .await
        .unwrap();
    let published = Instant::now();
    a.until(&revoked, StatusCode::UNAUTHORIZED).await;
    let on_a = published.elapsed();
    b.until(&revoked, StatusCode::UNAUTHORIZED).await;
    let on_b = published.elapsed();
    eprintln!(
        "revoked key refused after the PUBLISH was acknowledged: by the publishing instance \
         within {on_a:?}, by the other within {on_b:?}"
    );

    // Only that key was dropped.
    a.assert_cached(&kept).await;
    b.assert_cached(&kept).await;
    assert!(a.watcher.health().is_connected() && b.watcher.health().is_connected());

    // No key, nor part of one, in any log line.
    common::assert_logs_clean(&[revoked.expose_secret(), kept.expose_secret()]);
}

#[tokio::test]
async fn revoking_locally_and_publishing_reaches_this_instance_at_once() {
    let Some(client) = redis().await else { return };
    let channel = channel("local");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Staging");
    let bus = RedisBus::new(client.clone(), &channel);
    let here = Instance::start(&table, bus.clone());
    let there = Instance::start(&table, RedisBus::new(client, &channel));
    there.until_connected().await;
    here.assert_looked_up(&key).await;
    there.assert_looked_up(&key).await;

    // What the module docs tell users to do.
    table.revoke(&key);
    here.invalidations.invalidate(&key.digest());
    assert_eq!(here.status(&key).await, StatusCode::UNAUTHORIZED);
    bus.publish(Invalidation::Key(key.digest())).await.unwrap();
    let took = there.until(&key, StatusCode::UNAUTHORIZED).await;
    eprintln!("the other instance refused the key after {took:?}");
}

#[tokio::test]
async fn the_watcher_survives_its_connection_being_killed() {
    let Some(client) = redis().await else { return };
    let mut admin = admin(&client).await;
    let channel = channel("killed");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Webhook Server");
    let bus = RedisBus::new(client.clone(), &channel);
    // Pauses of 0.5 to 1 s before reconnecting leave time to look at the instance meanwhile.
    let watcher = Watcher::builder().backoff(Duration::from_secs(1), Duration::from_secs(1));
    let instance = Instance::start_with(&table, bus.clone(), watcher);
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;
    instance.assert_cached(&key).await;

    let killed_at = Instant::now();
    assert_eq!(kill_subscribers(&mut admin, &channel).await, 1);
    let health = instance.until_health(is_lost).await;
    eprintln!(
        "killed subscription seen as lost after {:?}: {health}",
        killed_at.elapsed()
    );

    // The cache was emptied, and keys are still served, by the resolver, while it is down.
    instance.assert_looked_up(&key).await;
    instance.assert_cached(&key).await;
    assert!(
        is_lost(&instance.watcher.health()),
        "reconnected too soon to tell"
    );

    instance.until_connected().await;
    eprintln!("subscribed again {:?} after the kill", killed_at.elapsed());
    assert_eq!(subscribers(&mut admin, &channel).await, 1);
    // Emptied again once subscribed: what changed in between was missed.
    instance.assert_looked_up(&key).await;
    instance.assert_cached(&key).await;

    // A revocation published on the new subscription is honoured.
    table.revoke(&key);
    bus.publish(Invalidation::Key(key.digest())).await.unwrap();
    let took = instance.until(&key, StatusCode::UNAUTHORIZED).await;
    eprintln!("revocation after the reconnect honoured after {took:?}");

    // The new connection has the name too.
    assert_eq!(kill_subscribers(&mut admin, &channel).await, 1);
    instance.until_health(is_lost).await;
}

#[tokio::test]
async fn a_revocation_missed_while_the_channel_is_down_is_not_served_after_it_is_back() {
    let Some(client) = redis().await else { return };
    let mut admin = admin(&client).await;
    let channel = channel("missed");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Webhook Server");
    let bus = RedisBus::new(client.clone(), &channel);
    // At least a second before reconnecting.
    let watcher = Watcher::builder().backoff(Duration::from_secs(2), Duration::from_secs(2));
    let instance = Instance::start_with(&table, bus.clone(), watcher);
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;

    assert_eq!(kill_subscribers(&mut admin, &channel).await, 1);
    instance.until_health(is_lost).await;
    // Looked up and cached again while the channel is down.
    instance.assert_looked_up(&key).await;

    // Revoked, and published to nobody: the message is lost.
    table.revoke(&key);
    assert_eq!(subscribers(&mut admin, &channel).await, 0);
    bus.publish(Invalidation::Key(key.digest())).await.unwrap();
    // The copy cached while the channel was down is all this instance has: it is served until
    // the watcher is back (or the copy expires).
    assert_eq!(instance.status(&key).await, StatusCode::OK);
    assert!(is_lost(&instance.watcher.health()));

    // Subscribing again empties the cache before the watcher says it is connected.
    instance.until_connected().await;
    assert_eq!(instance.status(&key).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unreachable_redis_neither_stops_requests_nor_busy_loops() {
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Production");
    // Nothing listens on port 1.
    let bus = RedisBus::open("redis://127.0.0.1:1", "unreachable").unwrap();
    let started = Instant::now();
    let instance = Instance::start(&table, bus.clone());

    instance.assert_looked_up(&key).await;
    instance.assert_cached(&key).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let ChannelHealth::Lost {
        attempts, error, ..
    } = instance.watcher.health()
    else {
        panic!("health is {}", instance.watcher.health());
    };
    eprintln!(
        "after {:?}: {attempts} attempts, last error: {error}",
        started.elapsed()
    );
    assert!(
        (1..=6).contains(&attempts),
        "{attempts} attempts in a second"
    );
    assert!(error.contains("could not connect to Redis"), "{error}");
    // Still trying.
    instance
        .until_health(|h| matches!(h, ChannelHealth::Lost { attempts: n, .. } if *n > attempts))
        .await;
    instance.assert_cached(&key).await;

    let publishing = Instant::now();
    let error = bus.publish(Invalidation::All).await.unwrap_err();
    assert!(
        publishing.elapsed() < Duration::from_secs(3),
        "{:?}",
        publishing.elapsed()
    );
    assert!(
        error.to_string().contains("could not connect to Redis"),
        "{error}"
    );
}

#[tokio::test]
async fn a_message_that_is_not_an_invalidation_empties_the_caches() {
    let Some(client) = redis().await else { return };
    let mut admin = admin(&client).await;
    let channel = channel("garbage");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Production");
    let instance = Instance::start(&table, RedisBus::new(client, &channel));
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;

    for payload in [&b"garbage"[..], b"key:not-hex", b"\xff\xfe not UTF-8", b""] {
        instance.assert_cached(&key).await;
        let received: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(received, 1);
        let took = instance.until_emptied(&key).await;
        eprintln!(
            "{:?} emptied the cache after {took:?}",
            String::from_utf8_lossy(payload)
        );
    }
    // The subscription is still there.
    assert!(instance.watcher.health().is_connected());
    assert_eq!(subscribers(&mut admin, &channel).await, 1);
}

/// A TCP proxy between the buses and Redis that can break the links through it: close them, as
/// a restarting server does, or freeze them, as a network partition or a hung server does
/// (nothing gets through, nothing is closed).
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    /// Whether new links start frozen.
    freeze_new: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

struct Link {
    frozen: Arc<AtomicBool>,
    pumps: [JoinHandle<()>; 2],
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let freeze_new = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn({
            let links = links.clone();
            let freeze_new = freeze_new.clone();
            async move {
                loop {
                    let (client, _) = listener.accept().await.unwrap();
                    let server = TcpStream::connect(target).await.unwrap();
                    let frozen = Arc::new(AtomicBool::new(freeze_new.load(Ordering::SeqCst)));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let pumps = [
                        tokio::spawn(pump(client_read, server_write, frozen.clone())),
                        tokio::spawn(pump(server_read, client_write, frozen.clone())),
                    ];
                    links.lock().unwrap().push(Link { frozen, pumps });
                }
            }
        });
        Proxy {
            addr,
            links,
            freeze_new,
            accept,
        }
    }

    /// A client for Redis through the proxy, with `REDIS_URL`'s other settings.
    fn client(&self, through: &redis::Client) -> redis::Client {
        let info = through
            .get_connection_info()
            .clone()
            .set_addr(redis::ConnectionAddr::Tcp(
                self.addr.ip().to_string(),
                self.addr.port(),
            ));
        redis::Client::open(info).unwrap()
    }

    /// Every link open now stops forwarding, silently; new links work.
    fn freeze_open(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.frozen.store(true, Ordering::SeqCst);
        }
    }

    /// Every link, open now or made later, stops forwarding, until [`Self::thaw_new`].
    fn freeze_all(&self) {
        self.freeze_new.store(true, Ordering::SeqCst);
        self.freeze_open();
    }

    /// New links work again (frozen ones stay frozen).
    fn thaw_new(&self) {
        self.freeze_new.store(false, Ordering::SeqCst);
    }

    /// Every link open now is closed.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            for pump in link.pumps {
                pump.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The address of `REDIS_URL`'s server, for the proxy.
async fn server_addr(client: &redis::Client) -> SocketAddr {
    let addr = client.get_connection_info().addr().to_string();
    tokio::net::lookup_host(addr).await.unwrap().next().unwrap()
}

#[tokio::test]
async fn a_subscription_that_dies_silently_is_noticed_by_the_heartbeat() {
    let Some(client) = redis().await else { return };
    let proxy = Proxy::start(server_addr(&client).await).await;
    let channel = channel("silent");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Webhook Server");
    let bus = RedisBus::new(proxy.client(&client), &channel)
        .with_heartbeat(Duration::from_millis(200))
        .with_timeout(Duration::from_millis(300));
    let instance = Instance::start(&table, bus);
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;
    instance.assert_cached(&key).await;

    // A partition: the subscription's connection stays open, and nothing comes through it.
    let frozen_at = Instant::now();
    proxy.freeze_open();
    let health = instance.until_health(is_lost).await;
    let noticed = frozen_at.elapsed();
    eprintln!("silent subscription noticed after {noticed:?}: {health}");
    // At most one heartbeat and one timeout (500 ms), with room for a busy machine.
    assert!(noticed < Duration::from_millis(1500), "{noticed:?}");
    instance.assert_looked_up(&key).await;

    // Subscribed again on a new connection, which gets through.
    instance.until_connected().await;
    table.revoke(&key);
    RedisBus::new(client, &channel)
        .publish(Invalidation::Key(key.digest()))
        .await
        .unwrap();
    instance.until(&key, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn publishing_never_hangs_on_a_silent_connection_or_server() {
    let Some(client) = redis().await else { return };
    let proxy = Proxy::start(server_addr(&client).await).await;
    let channel = channel("silent-publish");
    let table = Table::default();
    let (first, second) = (new_key(), new_key());
    table.add(&first, "Production");
    table.add(&second, "Staging");
    let timeout = Duration::from_millis(300);
    let publisher = RedisBus::new(proxy.client(&client), &channel).with_timeout(timeout);
    let instance = Instance::start(&table, RedisBus::new(client.clone(), &channel));
    instance.until_connected().await;
    instance.assert_looked_up(&first).await;
    instance.assert_looked_up(&second).await;
    // The publishing connection is made and kept.
    publisher
        .publish(Invalidation::Key(new_key().digest()))
        .await
        .unwrap();

    // The kept connection goes silent: replaced within the call.
    proxy.freeze_open();
    table.revoke(&first);
    let publishing = Instant::now();
    publisher
        .publish(Invalidation::Key(first.digest()))
        .await
        .unwrap();
    let took = publishing.elapsed();
    eprintln!("published past a silent connection in {took:?}");
    assert!(took < timeout + Duration::from_millis(500), "{took:?}");
    instance.until(&first, StatusCode::UNAUTHORIZED).await;

    // The server goes silent: the call gives up within the timeout.
    proxy.freeze_all();
    let publishing = Instant::now();
    let error = publisher.publish(Invalidation::All).await.unwrap_err();
    let took = publishing.elapsed();
    eprintln!("publishing to a silent server failed after {took:?}: {error}");
    assert!(took < timeout + Duration::from_millis(500), "{took:?}");
    assert!(error.to_string().contains("300 ms"), "{error}");

    // Back: the next call connects anew.
    proxy.thaw_new();
    table.revoke(&second);
    publisher
        .publish(Invalidation::Key(second.digest()))
        .await
        .unwrap();
    instance.until(&second, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn publishing_after_redis_closed_the_connection_reconnects_within_the_call() {
    let Some(client) = redis().await else { return };
    let proxy = Proxy::start(server_addr(&client).await).await;
    let channel = channel("restart");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Webhook Server");
    let publisher = RedisBus::new(proxy.client(&client), &channel);
    let instance = Instance::start(&table, RedisBus::new(client.clone(), &channel));
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;
    publisher
        .publish(Invalidation::Key(new_key().digest()))
        .await
        .unwrap();

    // As a server restart does to the connection kept for publishing.
    proxy.cut();
    table.revoke(&key);
    publisher
        .publish(Invalidation::Key(key.digest()))
        .await
        .unwrap();
    instance.until(&key, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_subscription_whose_connection_redis_closed_ends_and_comes_back() {
    let Some(client) = redis().await else { return };
    let proxy = Proxy::start(server_addr(&client).await).await;
    let channel = channel("closed");
    let table = Table::default();
    let key = new_key();
    table.add(&key, "Webhook Server");
    let instance = Instance::start(&table, RedisBus::new(proxy.client(&client), &channel));
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;

    let cut_at = Instant::now();
    proxy.cut();
    let health = instance.until_health(is_lost).await;
    eprintln!(
        "closed connection seen after {:?}: {health}",
        cut_at.elapsed()
    );
    instance.until_connected().await;
    instance.assert_looked_up(&key).await;
    table.revoke(&key);
    RedisBus::new(client, &channel)
        .publish(Invalidation::Key(key.digest()))
        .await
        .unwrap();
    instance.until(&key, StatusCode::UNAUTHORIZED).await;
}
