//! One cache-miss resolution per backend: `KeyResolver::resolve` for a known digest, as the
//! layer calls it when its cache does not hold the key. Each store holds 1,000 keys. And what a
//! process watching a SQLite file for changes made by other processes pays per interval when
//! nothing changed, to set beside a resolution.
//!
//! ```text
//! cargo bench --bench stores --all-features
//! ```
//!
//! PostgreSQL is found at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! the benchmark works in a schema of its own and drops it afterwards, and skips PostgreSQL
//! with a message when the server cannot be reached. Everything runs on a `current_thread`
//! runtime, as a single request would see it; the whole run takes well under a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use tower_api_key::store::sqlx;
use tower_api_key::{
    Environment, KeyDigest, KeyFormat, KeyStore, MemoryStore, NewKey, PostgresStore, Scope,
    SqliteStore,
};

/// How many keys each store holds; the benchmark resolves the one in the middle.
const KEYS: usize = 1_000;

fn format() -> KeyFormat {
    KeyFormat::new("om").expect("`om` is a valid prefix")
}

/// Fills `store` and returns the digest of a key in the middle.
async fn seed(store: &impl KeyStore) -> KeyDigest {
    let mut middle = None;
    for i in 0..KEYS {
        let created = store
            .create(
                NewKey::new(format!("Key {i}"), Environment::Live)
                    .owner(format!("acct_{}", i % 10))
                    .scopes([
                        Scope::from_static("orders:read"),
                        Scope::from_static("products:read"),
                    ])
                    .metadata("team", "integrations"),
            )
            .await
            .expect("a key can be created");
        if i == KEYS / 2 {
            middle = Some(created.key.digest());
        }
    }
    middle.expect("KEYS is above zero")
}

fn bench_resolve(c: &mut Criterion, runtime: &Runtime, name: &str, store: &impl KeyStore) {
    let digest = runtime.block_on(seed(store));
    c.bench_function(name, |b| {
        b.iter(|| {
            let record = runtime.block_on(store.resolve(black_box(&digest)));
            black_box(
                record
                    .expect("the store answers")
                    .expect("the key is known"),
            )
        })
    });
}

fn resolve(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime can be built");

    let memory = MemoryStore::new(format());
    bench_resolve(c, &runtime, "resolve (cache miss)/memory", &memory);

    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let sqlite = runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("bench.db"), format())
            .await
            .expect("the SQLite file can be opened");
        store
            .migrate()
            .await
            .expect("the SQLite tables can be made");
        store
    });
    bench_resolve(c, &runtime, "resolve (cache miss)/sqlite", &sqlite);

    // What a process watching the file pays every interval (100 ms by default) when nothing
    // changed: one look at the invalidation log past the last row it read. The 1,000 keys above
    // left 1,000 rows in it.
    let last = runtime.block_on(async {
        sqlx::query_scalar::<_, i64>("SELECT max(seq) FROM api_key_invalidations")
            .fetch_one(sqlite.pool())
            .await
            .expect("the log has rows")
    });
    c.bench_function("watch the log, nothing changed/sqlite", |b| {
        b.iter(|| {
            let rows = runtime
                .block_on(tower_api_key::__private::read_invalidation_log(
                    &sqlite,
                    black_box(last),
                ))
                .expect("the log can be read");
            // Only the row last read comes back.
            assert_eq!(rows, 1);
        })
    });

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    match runtime.block_on(PostgresStore::connect(&url, format())) {
        Ok(store) => {
            // A schema of its own, so that runs never meet.
            let random = format()
                .generate(Environment::Test)
                .expect("a key can be made");
            let schema = format!("bench_{}", &random.digest().to_hex()[..16]);
            let store = store.with_schema(&schema);
            runtime
                .block_on(store.migrate())
                .expect("the PostgreSQL tables can be made");
            bench_resolve(c, &runtime, "resolve (cache miss)/postgres", &store);
            runtime.block_on(drop_schema(&store, &schema));
        }
        Err(err) => eprintln!("SKIPPING the PostgreSQL benchmark: {url} is unreachable ({err})"),
    }
}

async fn drop_schema(store: &PostgresStore, schema: &str) {
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(store.pool())
        .await
        .expect("the benchmark's schema can be dropped");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = resolve
}
criterion_main!(benches);
