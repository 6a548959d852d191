//! The rate-limit engine alone: one GCRA check on an in-process bucket (allowed and refused),
//! a key's and its owner's buckets together, the clock they read, a `LocalLimiter` look-up of a
//! key it does not hold (the miss path, when a key's cache entry is filled), and one
//! `RedisLimiter` decision over loopback, with and without an owner. What a limit costs inside
//! the layer is measured by `benches/layer.rs`.
//!
//! ```text
//! cargo bench --bench limiter --features redis
//! ```
//!
//! Redis is found at `REDIS_URL` (default `redis://127.0.0.1:6379`); the Redis variants are
//! skipped with a message when it cannot be reached (or without the `redis` feature). Their
//! buckets live under a prefix of their own and expire by themselves within a second. After
//! criterion's report, a table gives each variant's median and its ratio to one in-process
//! check.

mod report;
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use tower_api_key::__private::{
    gcra_check, gcra_check_both, gcra_shared, local_limiter_miss, now_nanos,
};
use tower_api_key::{KeyId, RateLimit};

const GROUP: &str = "limiter";

fn rate(text: &str) -> RateLimit {
    text.parse().expect("a valid rate")
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    print_ratios();
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);

    group.bench_function("now_nanos", |b| b.iter(now_nanos));

    // A rate never reached at one request a microsecond: every check lets the request through
    // and stores a new TAT (the compare-and-swap).
    let mut allowed = gcra_check(rate("1000000/s"));
    let mut now = 0u64;
    group.bench_function("gcra_check_allowed", |b| {
        b.iter(|| {
            now += 1_000;
            let decision = allowed(black_box(now));
            assert!(decision.allowed);
            decision
        })
    });

    // One request a day, already made: every check is refused and stores nothing.
    let mut refused = gcra_check(rate("1/d burst 1"));
    let _ = refused(0);
    group.bench_function("gcra_check_refused", |b| {
        b.iter(|| {
            let decision = refused(black_box(1));
            assert!(!decision.allowed);
            decision
        })
    });

    let mut both = gcra_check_both(rate("1000000/s"), rate("1000000/s"));
    let mut now = 0u64;
    group.bench_function("check_both_allowed", |b| {
        b.iter(|| {
            now += 1_000;
            both(black_box(now))
        })
    });

    // The owner refuses: the key's slot is taken, then given back.
    let mut given_back = gcra_check_both(rate("1000000/s"), rate("1/d burst 1"));
    let _ = given_back(0);
    group.bench_function("check_both_owner_refuses", |b| {
        b.iter(|| {
            let decision = given_back(black_box(1));
            assert!(!decision.allowed);
            decision
        })
    });

    // With 10,000 buckets held: a new key's bucket made and inserted, then taken out again so
    // that the next call misses too (so this is a miss plus a removal).
    let mut miss = local_limiter_miss(10_000);
    let key = KeyId::from("key_not_held");
    group.bench_function("local_limiter_miss", |b| b.iter(|| miss(black_box(&key))));

    contention(&mut group);
    redis(&mut group);
    group.finish();
}

/// Two threads checking at once, on one bucket (one hot key: the cores share its cache line and
/// its compare-and-swap) and on a bucket each (two keys: nothing shared). No lock either way;
/// the time is per check, each thread doing half of them.
fn contention(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use std::sync::Arc;
    use std::time::Instant;

    type Bucket = Arc<dyn Fn(u64) -> tower_api_key::RateDecision + Send + Sync>;
    fn run(buckets: [Bucket; 2], iters: u64) -> Duration {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for (thread, bucket) in buckets.iter().enumerate() {
                scope.spawn(move || {
                    // Distinct, rising times per thread, a microsecond apart: always allowed.
                    for n in 0..iters.div_ceil(2) {
                        black_box(bucket(black_box(n * 2_000 + thread as u64 * 1_000)));
                    }
                });
            }
        });
        start.elapsed()
    }

    let shared = gcra_shared(rate("1000000/s burst 4000000000"));
    group.bench_function("two_threads_one_bucket", |b| {
        b.iter_custom(|iters| run([shared.clone(), shared.clone()], iters))
    });
    group.bench_function("two_threads_own_buckets", |b| {
        b.iter_custom(|iters| {
            run(
                [
                    gcra_shared(rate("1000000/s burst 4000000000")),
                    gcra_shared(rate("1000000/s burst 4000000000")),
                ],
                iters,
            )
        })
    });
}

#[cfg(feature = "redis")]
fn redis(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use tower_api_key::RedisLimiter;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!(
        "tower-api-key-bench:{:016x}:",
        getrandom::u64().expect("random bytes")
    );
    let limiter = RedisLimiter::open(&url)
        .expect("REDIS_URL is a Redis URL")
        .with_prefix(prefix)
        .with_timeout(Duration::from_secs(1));
    let key = KeyId::from("key_1");
    let (key_rate, owner_rate) = (rate("1000000/s"), rate("1000000/s"));
    if let Err(error) = runtime.block_on(limiter.check(&key, &key_rate, None)) {
        println!("Redis at REDIS_URL cannot be reached ({error}): skipping the Redis variants");
        return;
    }
    group.bench_function("redis_check", |b| {
        b.iter(|| {
            runtime
                .block_on(limiter.check(black_box(&key), &key_rate, None))
                .expect("Redis answers")
        })
    });
    group.bench_function("redis_check_with_owner", |b| {
        b.iter(|| {
            runtime
                .block_on(limiter.check(black_box(&key), &key_rate, Some(("acme", &owner_rate))))
                .expect("Redis answers")
        })
    });
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    println!("built without the `redis` feature: skipping the Redis variants");
}

/// Each variant's median and its ratio to one allowed in-process check, from criterion's
/// estimates of this run.
fn print_ratios() {
    let median = |name: &str| report::median(GROUP, name);
    let Some(check) = median("gcra_check_allowed") else {
        return;
    };
    println!();
    println!("{:<28} {:>12} {:>10}", "variant", "median", "ratio");
    for name in [
        "now_nanos",
        "gcra_check_allowed",
        "gcra_check_refused",
        "check_both_allowed",
        "check_both_owner_refuses",
        "local_limiter_miss",
        "two_threads_one_bucket",
        "two_threads_own_buckets",
        "redis_check",
        "redis_check_with_owner",
    ] {
        if let Some(ns) = median(name) {
            println!("{name:<28} {ns:>9.1} ns {:>9.2}x", ns / check);
        }
    }
}
