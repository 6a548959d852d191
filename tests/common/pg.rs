//! Dropping what a PostgreSQL test made, from a `Drop` impl.
//!
//! The statements run on a thread and a runtime of their own (the drop runs inside the test's
//! runtime, and also while a failed test unwinds), and run again when PostgreSQL ends one as a
//! deadlock's victim: a store's background work (a usage flush, the listener) can hold a lock
//! on the schema's tables for a moment after the test is done with them.

use std::time::Duration;

use tower_api_key::store::sqlx::{self, Connection, PgConnection};

/// Runs `statements` on a new connection to `url`, in order, trying the whole list up to five
/// times; on failure, says so on the standard error (a schema left behind fails no test).
pub fn clean_up(url: String, statements: Vec<String>) {
    let what = statements.join("; ");
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?;
        runtime.block_on(async {
            let mut last = String::new();
            for attempt in 1..=5u64 {
                match run(&url, &statements).await {
                    Ok(()) => return Ok(()),
                    Err(err) => last = err.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(last)
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the clean-up thread panicked".to_owned()));
    if let Err(err) = outcome {
        eprintln!("could not clean up after the test ({what}): {err}");
    }
}

async fn run(url: &str, statements: &[String]) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    for statement in statements {
        sqlx::raw_sql(statement).execute(&mut conn).await?;
    }
    conn.close().await
}
