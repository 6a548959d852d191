//! `RedisLimiter` against a real Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`): the
//! script decides as the in-process cells do, two instances together never pass the bound, an
//! owner's bucket is shared by its keys; and against a `redis-server` of the test's own, killed
//! and restarted mid-run, the limiter fails fast and recovers by itself.
//!
//! Every test has a key prefix of its own, so they run in parallel on one server. Without Redis
//! the tests say so loudly and pass, unless `CI` is set, where they fail.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tower_api_key::{KeyId, LimiterError, RateLimit, RedisLimiter};

/// The server's URL, or `None` (after saying so) when it is unreachable and `CI` is unset.
async fn redis() -> Option<String> {
    common::redis("the Redis limiter tests").await?;
    Some(std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()))
}

/// A key prefix no other test uses.
fn prefix(test: &str) -> String {
    format!(
        "tower-api-key-test:{test}:{:016x}:",
        getrandom::u64().unwrap()
    )
}

fn rate(text: &str) -> RateLimit {
    text.parse().unwrap()
}

/// Requests at most in a window of `window` for `rate`: `burst + ⌊window / interval⌋`.
fn bound(rate: &RateLimit, window: Duration) -> u64 {
    u64::from(rate.burst().get()) + (window.as_nanos() / rate.interval().as_nanos()) as u64
}

fn any_rate() -> impl Strategy<Value = RateLimit> {
    (1u32..1000, 1_000u64..=3_600_000_000)
        .prop_flat_map(|(requests, period)| (Just(requests), Just(period), 1..=requests * 2))
        .prop_map(|(requests, period, burst)| {
            RateLimit::new(requests.try_into().unwrap(), Duration::from_micros(period))
                .unwrap()
                .with_burst(burst.try_into().unwrap())
        })
}

/// Arrivals in microseconds from 0, non-decreasing, with gaps around `rate`'s interval.
fn arrivals(rate: &RateLimit) -> impl Strategy<Value = Vec<u64>> {
    let interval = (rate.interval().as_micros() as u64).max(1);
    let gap = prop_oneof![Just(0), 0..interval, Just(interval), 0..interval * 4];
    proptest::collection::vec(gap, 1..40).prop_map(|gaps| {
        gaps.iter()
            .scan(0, |now, gap| {
                *now += gap;
                Some(*now)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For the same arrivals (given to the script in place of Redis's `TIME`, from a start that
    /// may sit just before a UTC midnight), the script decides exactly as the in-process cells:
    /// allowed, limit, remaining, reset and retry_after, with and without an owner.
    #[test]
    fn the_script_decides_as_the_cells_do(
        (key_rate, times) in any_rate().prop_flat_map(|rate| (Just(rate), arrivals(&rate))),
        owner_rate in proptest::option::of(any_rate()),
        start in prop_oneof![Just(1_800_000_000u64 * 1_000_000 - 1_000), 1_700_000_000_000_000u64..1_900_000_000_000_000],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let Some(url) = redis().await else { return Ok(()) };
            let limiter = RedisLimiter::open(&url)
                .unwrap()
                .with_prefix(prefix("parity"))
                .with_timeout(Duration::from_secs(2));
            let nanos: Vec<u64> = times.iter().map(|us| us * 1000).collect();
            let expected =
                tower_api_key::__private::gcra_decisions(&key_rate, owner_rate.as_ref(), &nanos);
            let key = KeyId::from("key_1");
            for (at, expected) in times.iter().zip(expected) {
                let micros = start + at;
                let when = (micros / 1_000_000, (micros % 1_000_000) as u32);
                let owner = owner_rate.as_ref().map(|rate| ("acme", rate));
                let got = tower_api_key::__private::redis_check_at(
                    &limiter, &key, &key_rate, owner, when,
                )
                .await
                .unwrap();
                prop_assert_eq!(got, expected, "at {} µs", at);
            }
            Ok(())
        })?;
    }
}

/// Two instances (separate limiters, separate connections), each with many tasks, hammering one
/// key for about two seconds on Redis's clock: together never more than the bound, and near it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_together_never_pass_the_bound() {
    let Some(url) = redis().await else { return };
    let prefix = prefix("instances");
    let rate = rate("200/s burst 20");
    let instances = [0, 1].map(|_| {
        RedisLimiter::open(&url)
            .unwrap()
            .with_prefix(prefix.clone())
            .with_timeout(Duration::from_secs(2))
    });
    let allowed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run = Duration::from_secs(2);
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let limiter = instances[task % 2].clone();
            let allowed = allowed.clone();
            tokio::spawn(async move {
                let key = KeyId::from("shared");
                let mut checks = 0u64;
                while started.elapsed() < run {
                    let decision = limiter.check(&key, &rate, None).await.unwrap();
                    if decision.allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let mut checks = 0;
    for task in tasks {
        checks += task.await.unwrap();
    }
    // Every script ran between `started` and now, on a clock that runs as fast as ours.
    let window = started.elapsed();
    let allowed = allowed.load(Ordering::Relaxed);
    let bound = bound(&rate, window);
    eprintln!("{allowed} let through of a bound of {bound}, in {checks} checks over {window:?}");
    assert!(allowed <= bound, "{allowed} let through, bound {bound}");
    assert!(
        allowed >= bound * 9 / 10,
        "only {allowed} of {bound} let through in {checks} checks"
    );
    assert!(
        checks > allowed * 2,
        "the key was not hammered: {checks} checks"
    );
}

/// Two keys of one owner on two instances: the owner's bucket holds them both together, and
/// a request the owner refuses takes nothing from the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_bucket_is_shared_by_its_keys() {
    let Some(url) = redis().await else { return };
    let prefix = prefix("owner");
    let key_rate = rate("10/s burst 5");
    let owner_rate = rate("10/s burst 6");
    let [first, second] = [0, 1].map(|_| {
        RedisLimiter::open(&url)
            .unwrap()
            .with_prefix(prefix.clone())
            .with_timeout(Duration::from_secs(2))
    });
    let (a, b) = (KeyId::from("key_a"), KeyId::from("key_b"));
    let owner = Some(("acme", &owner_rate));
    let mut passed = 0;
    for _ in 0..5 {
        passed += u32::from(first.check(&a, &key_rate, owner).await.unwrap().allowed);
    }
    assert_eq!(passed, 5);
    // Key b has its whole burst, but the owner only one request left.
    let decision = second.check(&b, &key_rate, owner).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.limit, owner_rate);
    assert_eq!(decision.remaining, 0);
    let refused = second.check(&b, &key_rate, owner).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.limit, owner_rate);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(100)
    );
    // Key b's bucket kept what the owner refused: alone, it has four left.
    let alone = second.check(&b, &key_rate, None).await.unwrap();
    assert!(alone.allowed);
    assert_eq!(alone.remaining, 3);

    // The buckets expire when full again.
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}owner:acme"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 700, "owner bucket PTTL {ttl}");
}

/// A `redis-server` of the test's own on a free port, killed when dropped.
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(port: u16) -> Server {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        Server {
            port,
            child: Some(child),
        }
    }

    async fn wait_until_up(&self) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.get_multiplexed_async_connection().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `redis-server` can be started; when it cannot, says so loudly, or fails under `CI`.
fn redis_server_installed() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "redis-server is not installed, and CI is set"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"\n**********\nSKIPPED: a Redis limiter test: redis-server is not installed.\n**********\n",
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Redis killed mid-run: checks fail within the timeout, never hang; restarted on the same
/// port: checks succeed again by themselves within a couple of seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run() {
    if !redis_server_installed() {
        return;
    }
    let port = free_port();
    let mut server = Server::start(port);
    server.wait_until_up().await;
    let timeout = Duration::from_millis(50);
    let limiter = RedisLimiter::open(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .with_timeout(timeout);
    let key = KeyId::from("key_1");
    let rate = rate("1000/s");
    assert!(
        !limiter.is_healthy(),
        "not connected before the first check"
    );
    for _ in 0..10 {
        assert!(limiter.check(&key, &rate, None).await.unwrap().allowed);
    }
    assert!(limiter.is_healthy());

    // Tasks keep checking while the server dies under them: no check, in flight or not, waits
    // past the timeout (with some room for scheduling).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammering: Vec<_> = (0..4)
        .map(|_| {
            let (limiter, key, stop) = (limiter.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let _ = limiter.check(&key, &rate, None).await;
                    longest = longest.max(asked.elapsed());
                    tokio::task::yield_now().await;
                }
                longest
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in hammering {
        let longest = task.await.unwrap();
        assert!(
            longest < timeout + Duration::from_millis(200),
            "a check took {longest:?}"
        );
    }
    // Within the timeout (and some scheduling room), for every check during the outage.
    let mut errors = 0;
    for _ in 0..20 {
        let asked = Instant::now();
        let answer = limiter.check(&key, &rate, None).await;
        let took = asked.elapsed();
        assert!(took < timeout + Duration::from_millis(200), "took {took:?}");
        match answer {
            Err(LimiterError::Unavailable | LimiterError::Timeout(_)) => errors += 1,
            Err(other) => panic!("unexpected error {other}"),
            Ok(decision) => panic!("decided with Redis down: {decision:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(errors, 20);
    assert!(!limiter.is_healthy());

    let mut server = Server::start(port);
    server.wait_until_up().await;
    let back = Instant::now();
    loop {
        let asked = Instant::now();
        let answer = limiter.check(&key, &rate, None).await;
        assert!(asked.elapsed() < timeout + Duration::from_millis(200));
        if let Ok(decision) = answer {
            // A new server: a new, full bucket.
            assert!(decision.allowed);
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(3),
            "not back 3 s after the restart: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limiter.is_healthy());
    server.kill();
}

/// The outage and the recovery in the metrics: the connection gauge goes to 0 and back to 1,
/// and the checks Redis could not decide are counted by reason.
#[test]
fn an_outage_shows_in_the_metrics() {
    if !redis_server_installed() {
        return;
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A current-thread runtime runs the limiter's background task on this thread too, where the
    // local recorder is installed.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let port = free_port();
            let mut server = Server::start(port);
            server.wait_until_up().await;
            let limiter = RedisLimiter::open(&format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .with_timeout(Duration::from_millis(50));
            let (key, rate) = (KeyId::from("key_1"), rate("1000/s"));
            limiter.check(&key, &rate, None).await.unwrap();
            let gauge = |text: &str| {
                text.lines()
                    .find(|line| line.starts_with("tower_api_key_rate_limiter_connected "))
                    .map(str::to_owned)
            };
            assert_eq!(
                gauge(&handle.render()).as_deref(),
                Some("tower_api_key_rate_limiter_connected 1")
            );

            server.kill();
            for _ in 0..3 {
                assert!(limiter.check(&key, &rate, None).await.is_err());
            }
            let text = handle.render();
            assert_eq!(
                gauge(&text).as_deref(),
                Some("tower_api_key_rate_limiter_connected 0")
            );
            assert!(
                text.contains("tower_api_key_rate_limiter_errors_total{reason=\"unavailable\"}"),
                "{text}"
            );
            assert!(!text.contains("key_1"), "no key id in the metrics: {text}");

            let mut server = Server::start(port);
            server.wait_until_up().await;
            let back = Instant::now();
            while limiter.check(&key, &rate, None).await.is_err() {
                assert!(back.elapsed() < Duration::from_secs(3), "not back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                gauge(&handle.render()).as_deref(),
                Some("tower_api_key_rate_limiter_connected 1")
            );
            server.kill();
        })
    });
}

/// A server that forgot the script (`SCRIPT FLUSH`, as after a restart the limiter did not
/// notice) is sent it again within the same check.
#[tokio::test]
async fn a_forgotten_script_is_sent_again() {
    if !redis_server_installed() {
        return;
    }
    let port = free_port();
    let server = Server::start(port);
    server.wait_until_up().await;
    let url = format!("redis://127.0.0.1:{port}");
    let limiter = RedisLimiter::open(&url)
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    let (key, rate) = (KeyId::from("key_1"), rate("1/s burst 2"));
    assert!(limiter.check(&key, &rate, None).await.unwrap().allowed);
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    let decision = limiter.check(&key, &rate, None).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 0, "the bucket survived the flush");
    assert!(!limiter.check(&key, &rate, None).await.unwrap().allowed);
    assert!(limiter.is_healthy());
}

// ---------------------------------------------------------------------------------------------
// Through the layer: separate stacks sharing Redis, as instances behind a load balancer do
// ---------------------------------------------------------------------------------------------

/// One instance: its own layer (its own cache and buckets) on a resolver that knows `key`,
/// deciding rates in Redis through `limiter`, served on loopback.
async fn instance(
    key: &tower_api_key::PlaintextKey,
    record: tower_api_key::KeyRecord,
    limiter: RedisLimiter,
    when_down: tower_api_key::RedisDownPolicy,
) -> std::net::SocketAddr {
    use tower_api_key::{ApiKeyLayer, KeyDigest, KeyFormat, ResolveError};
    let digest = key.digest();
    let layer =
        ApiKeyLayer::resolver_builder(KeyFormat::new("om").unwrap(), move |asked: KeyDigest| {
            let record = record.clone();
            async move { Ok::<_, ResolveError>((asked == digest).then_some(record)) }
        })
        .shared_rate_limiter(limiter, when_down)
        .build();
    let app = axum::Router::new()
        .route("/v1/orders", axum::routing::get(|| async { "orders" }))
        .layer(layer);
    common::serve(app).await
}

fn limited_key(rate: RateLimit) -> (tower_api_key::PlaintextKey, tower_api_key::KeyRecord) {
    use tower_api_key::{Environment, KeyFormat, KeyLimits, KeyRecord, ScopeSet};
    let key = KeyFormat::new("om")
        .unwrap()
        .generate(Environment::Live)
        .unwrap();
    let id = format!("key_{:016x}", getrandom::u64().unwrap());
    let record = KeyRecord::new(id, Environment::Live, ScopeSet::empty())
        .with_limits(KeyLimits::none().with_rate(rate));
    (key, record)
}

/// Two instances, each a layer of its own on its own server, hammered together over HTTP:
/// together they never let through more than the rate allows, and they let through nearly
/// that much (the buckets are shared, not split).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_sharing_redis_never_let_more_through_together() {
    let Some(client) = common::redis("the Redis limiter tests").await else {
        return;
    };
    let rate = rate("20/s burst 5");
    let (key, record) = limited_key(rate);
    let prefix = prefix("layers");
    let policy = tower_api_key::RedisDownPolicy::Refuse;
    let limiter = || {
        RedisLimiter::new(client.clone())
            .with_prefix(prefix.clone())
            .with_timeout(Duration::from_millis(500))
    };
    let addrs = [
        instance(&key, record.clone(), limiter(), policy).await,
        instance(&key, record, limiter(), policy).await,
    ];
    let auth = common::bearer(key.expose_secret());
    let started = Instant::now();
    let run_for = Duration::from_millis(1500);
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let addr = addrs[task % 2];
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut counts = [0u64; 3];
                while started.elapsed() < run_for {
                    let response = common::get(addr, "/v1/orders", &[&auth]).await;
                    match response.status {
                        200 => counts[0] += 1,
                        429 => counts[1] += 1,
                        other => panic!("{addr} answered {other}: {}", response.body_text()),
                    }
                }
                counts[2] = 1;
                counts
            })
        })
        .collect();
    let mut allowed = 0;
    let mut refused = 0;
    for task in tasks {
        let [ok, too_many, _] = task.await.unwrap();
        allowed += ok;
        refused += too_many;
    }
    let window = started.elapsed();
    let most = bound(&rate, window);
    println!(
        "two layers sharing Redis: {allowed} let through, {refused} refused in {window:?}; \
         the rate allows at most {most}"
    );
    assert!(allowed <= most, "{allowed} let through, more than {most}");
    assert!(refused > 0, "the load was not over the rate");
    // Shared, not split between the two: well over what one instance's share would be.
    assert!(
        allowed * 4 >= most * 3,
        "only {allowed} of {most} let through"
    );
}

/// Redis killed under two layers, one that falls back to its own buckets and one that refuses:
/// each follows its policy at once (no request waits past the timeout), and both decide in
/// Redis again by themselves once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_layer_follows_its_policy_and_recovers() {
    use tower_api_key::RedisDownPolicy;
    if !redis_server_installed() {
        return;
    }
    let port = free_port();
    let mut server = Server::start(port);
    server.wait_until_up().await;
    let timeout = Duration::from_millis(50);
    let limiter = || {
        RedisLimiter::open(&format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .with_timeout(timeout)
    };
    // A rate no test request reaches, and one that refuses the second request.
    let (key, record) = limited_key(rate("1000/s"));
    let local = instance(&key, record.clone(), limiter(), RedisDownPolicy::Local).await;
    let refuse = instance(&key, record, limiter(), RedisDownPolicy::Refuse).await;
    let auth = common::bearer(key.expose_secret());
    let status = |addr| {
        let auth = auth.clone();
        async move {
            let asked = Instant::now();
            let response = common::get(addr, "/v1/orders", &[&auth]).await;
            let took = asked.elapsed();
            assert!(
                took < timeout + Duration::from_millis(400),
                "{addr} took {took:?}"
            );
            response
        }
    };
    assert_eq!(status(local).await.status, 200);
    assert_eq!(status(refuse).await.status, 200);

    server.kill();
    for _ in 0..5 {
        // Decided by the instance's own buckets.
        assert_eq!(status(local).await.status, 200);
        // Refused, as for any dependency that cannot answer: 503, never 401.
        let refused = status(refuse).await;
        assert_eq!(refused.status, 503, "{}", refused.body_text());
        assert_eq!(refused.header("retry-after"), "5");
        assert!(!refused.has_header("www-authenticate"));
    }

    let mut server = Server::start(port);
    server.wait_until_up().await;
    let back = Instant::now();
    while status(refuse).await.status != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the refusing layer is not back 5 s after Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(local).await.status, 200);
    server.kill();
}
