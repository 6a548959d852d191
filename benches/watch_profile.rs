//! What a process watching a SQLite file pays per interval when nothing changed, for
//! `valgrind --tool=callgrind`, beside the cache-miss lookup it is compared with.
//! Usage: `watch_profile <poll|resolve> <iterations>`. `scripts/bench.sh` runs it twice per
//! variant and takes the difference, which leaves out start-up.

use std::hint::black_box;

use std::time::Duration;

use tower_api_key::{Environment, KeyFormat, KeyResolver, KeyStore, NewKey, SqliteStore};

/// As in `benches/stores.rs`: the log holds a row per key created.
const KEYS: usize = 1_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_default();
    let iterations: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: watch_profile <poll|resolve> <iterations>");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime can be built");
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    runtime.block_on(async {
        let format = KeyFormat::new("om").expect("`om` is a valid prefix");
        let store = SqliteStore::open(dir.path().join("profile.db"), format)
            .await
            .expect("the file can be opened")
            // Resolving starts the store's own watch: keep it from polling during the count.
            .with_poll_interval(Duration::from_secs(3600));
        store.migrate().await.expect("the tables can be made");
        let mut digest = None;
        for i in 0..KEYS {
            let created = store
                .create(NewKey::new(format!("Key {i}"), Environment::Live))
                .await
                .expect("a key can be created");
            digest.get_or_insert(created.key.digest());
        }
        let digest = digest.expect("KEYS is above zero");
        let last = i64::try_from(KEYS).expect("KEYS fits");
        for _ in 0..iterations {
            match variant.as_str() {
                "poll" => {
                    let rows = tower_api_key::__private::read_invalidation_log(&store, last)
                        .await
                        .expect("the log can be read");
                    black_box(rows);
                }
                "resolve" => {
                    black_box(store.resolve(&digest).await.expect("the store answers"));
                }
                other => panic!("unknown variant {other:?}: poll or resolve"),
            }
        }
    });
}
