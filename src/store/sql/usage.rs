//! Usage counts in the SQL stores: their statements, and reading back what they return.
//!
//! A flush ([`record`]) is one write transaction of at most four statements, whatever the size
//! of the batch, after claiming the batch's id if it has one: lock the keys it names (learning
//! which still exist), add the counts, add the anonymous counts, move the last uses forward. A
//! batch whose id is already in `api_key_usage_batches` was applied, and nothing is written. Each statement takes all its rows in one JSON
//! parameter ([`Dialect::json_rows`]), so its text never changes with the batch and each
//! connection prepares it once. Counts are added in the database (`requests = requests + ...`),
//! never read and written back, so that instances flushing into one database add up exactly.
//!
//! On PostgreSQL the lock is `FOR NO KEY UPDATE`, taken in order of id: two flushes naming the
//! same keys run one after the other instead of deadlocking, and a key deleted meanwhile is
//! skipped rather than failing the flush on its foreign key. Reads, the layer's lookups among
//! them, are not held up; a change to one of the keys waits for the flush to commit.
//! Anonymous rows are written in order of day and outcome, so that flushes wait for each other
//! there in one order too. On SQLite the transaction holds the write lock from its start.
//!
//! [`Dialect::json_rows`]: super::backend::Dialect::json_rows

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_json::Value;

use super::backend::{Cell, ColumnType, Param, Read};
use super::table::{
    from_micros, to_days, to_micros, unavailable, ANONYMOUS_USAGE, KEYS, USAGE, USAGE_BATCHES,
};
use super::{SqlDatabase, SqlStore};
use crate::resolver::KeyId;
use crate::store::usage::{add_count, day_in, zero_series, Increments, BATCH_ID_RETENTION};
use crate::store::StoreError;
use crate::usage::{
    AnonymousIncrement, AnonymousOutcome, DailyUsage, Day, KeyOutcome, KeyUsageSummary,
    OutcomeCounts, UsageBatch,
};

/// The usage statements of one store, with its table names in them.
pub(super) struct UsageStatements {
    claim_batch: String,
    forget_batches: String,
    lock_keys: String,
    add_counts: String,
    add_anonymous: String,
    record_last_uses: String,
    series: String,
    summary_all: String,
    summary_by_owner: String,
    anonymous: String,
    prune: String,
    prune_anonymous: String,
}

/// `column = column + excluded.column`, saturating at `i64::MAX` where a plain sum would fail
/// (PostgreSQL) or turn into a float that a `STRICT` table refuses (SQLite). Both sides are
/// positive, so the subtraction cannot overflow.
fn saturating_add(table: &str, column: &str) -> String {
    format!(
        "CASE WHEN excluded.{column} > 9223372036854775807 - {table}.{column} \
         THEN 9223372036854775807 ELSE {table}.{column} + excluded.{column} END"
    )
}

/// The sum of `column` in two halves, its high and low 32 bits, so that neither sum can
/// overflow a `BIGINT` (SQLite's `sum` fails on overflow) however many days it covers; read
/// back with [`total`].
fn split_sum(column: &str) -> String {
    format!(
        "CAST(sum({column} / 4294967296) AS BIGINT), CAST(sum({column} % 4294967296) AS BIGINT)"
    )
}

impl UsageStatements {
    pub(super) fn new<DB: SqlDatabase>(namespace: Option<&str>) -> Self {
        let keys = DB::table(namespace, KEYS);
        let usage = DB::table(namespace, USAGE);
        let anonymous = DB::table(namespace, ANONYMOUS_USAGE);
        let batches = DB::table(namespace, USAGE_BATCHES);
        let p = DB::param;
        let day = |n| DB::value(n, ColumnType::Day);
        let (text, int) = (Read::Text, Read::Int);
        let ids = DB::json_rows(1, &[("id", text)]);
        let counts = DB::json_rows(
            1,
            &[
                ("key_id", text),
                ("day", int),
                ("outcome", text),
                ("requests", int),
            ],
        );
        let anonymous_counts =
            DB::json_rows(1, &[("day", int), ("outcome", text), ("requests", int)]);
        let last_uses = DB::json_rows(1, &[("id", text), ("at", int)]);
        let at = DB::from_rust("v.at", ColumnType::Time);
        let v_day = DB::from_rust("v.day", ColumnType::Day);
        let summary = |filter: &str| {
            format!(
                "SELECT k.id, k.name, {}, {}, {}, u.outcome, {} \
                 FROM {keys} AS k LEFT JOIN {usage} AS u \
                 ON u.key_id = k.id AND u.day BETWEEN {} AND {}{filter} \
                 GROUP BY k.id, u.outcome \
                 ORDER BY k.created_at DESC, k.id ASC",
                DB::select("k.created_at", ColumnType::Time),
                DB::select("k.last_used_at", ColumnType::Time),
                DB::select("k.revoked_at", ColumnType::Time),
                split_sum("u.requests"),
                day(1),
                day(2),
            )
        };
        UsageStatements {
            // No row back: the batch was applied before.
            claim_batch: format!(
                "INSERT INTO {batches} (id, applied_at) VALUES ({}, {}) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                p(1),
                DB::value(2, ColumnType::Time)
            ),
            forget_batches: format!(
                "DELETE FROM {batches} WHERE applied_at < {}",
                DB::value(1, ColumnType::Time)
            ),
            lock_keys: format!(
                "SELECT id FROM {keys} WHERE id IN (SELECT v.id FROM {ids} AS v) \
                 ORDER BY id{}",
                DB::FOR_NO_KEY_UPDATE
            ),
            // `WHERE true` tells SQLite that `ON CONFLICT` is the upsert's, not a join's.
            add_counts: format!(
                "INSERT INTO {usage} AS u (key_id, day, outcome, requests) \
                 SELECT v.key_id, {v_day}, v.outcome, v.requests FROM {counts} AS v WHERE true \
                 ON CONFLICT (key_id, day, outcome) DO UPDATE SET requests = {}",
                saturating_add("u", "requests")
            ),
            add_anonymous: format!(
                "INSERT INTO {anonymous} AS u (day, outcome, requests) \
                 SELECT {v_day}, v.outcome, v.requests FROM {anonymous_counts} AS v WHERE true \
                 ORDER BY v.day, v.outcome \
                 ON CONFLICT (day, outcome) DO UPDATE SET requests = {}",
                saturating_add("u", "requests")
            ),
            // Only rows whose time moves forward are written; `last_used_at` alone fires no
            // invalidation trigger.
            record_last_uses: format!(
                "UPDATE {keys} AS k SET last_used_at = {at} FROM {last_uses} AS v \
                 WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < {at})"
            ),
            // One row with no usage at least, when the key exists.
            series: format!(
                "SELECT {}, u.outcome, u.requests \
                 FROM {keys} AS k LEFT JOIN {usage} AS u \
                 ON u.key_id = k.id AND u.day BETWEEN {} AND {} \
                 WHERE k.id = {}",
                DB::select("u.day", ColumnType::Day),
                day(2),
                day(3),
                p(1)
            ),
            summary_all: summary(""),
            summary_by_owner: summary(&format!(" WHERE k.owner = {}", p(3))),
            anonymous: format!(
                "SELECT {}, outcome, requests FROM {anonymous} WHERE day BETWEEN {} AND {}",
                DB::select("day", ColumnType::Day),
                day(1),
                day(2)
            ),
            prune: format!("DELETE FROM {usage} WHERE day < {}", day(1)),
            prune_anonymous: format!("DELETE FROM {anonymous} WHERE day < {}", day(1)),
        }
    }
}

/// `rows` as a JSON array of arrays, for `Dialect::json_rows`.
fn json_rows(rows: impl IntoIterator<Item = Vec<Value>>) -> String {
    Value::Array(rows.into_iter().map(Value::Array).collect()).to_string()
}

/// A count as the databases keep it (every count of [`Increments`] fits).
fn to_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Adds `batch` to the counts of the store: one transaction, all of it or nothing.
pub(super) async fn record<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    batch: &UsageBatch,
) -> Result<(), StoreError> {
    store.usable()?;
    let mut increments = Increments::of(batch);
    // No key's id holds a NUL (PostgreSQL text cannot), and PostgreSQL refuses one in JSON
    // text: such an id names no key, so its counts are dropped like those of a deleted key.
    increments.retain_keys(|id| !id.as_str().contains('\0'));
    if increments.is_empty() {
        return Ok(());
    }
    let statements = &store.statements.usage;
    let mut tx = store
        .pool
        .begin_with(DB::BEGIN_WRITE)
        .await
        .map_err(unavailable)?;

    if let Some(batch_id) = batch.id {
        // In the transaction that adds the counts: the id is kept exactly when they are.
        let id = batch_id.to_string();
        let now = store.settings.now();
        let rows = DB::fetch(
            &mut tx,
            &statements.claim_batch,
            &[Param::Text(Some(&id)), Param::Int(Some(to_micros(now)))],
            &[Read::Text],
        )
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            // Applied before; nothing was written.
            return tx.commit().await.map_err(unavailable);
        }
        // Also without a retention, which leaves `prune` to nobody: one flush in 256 (by its
        // random id) deletes the old ids, an index range in a transaction that holds the write
        // lock anyway.
        if batch_id.as_u128() % 256 == 0 {
            forget_batches::<DB>(store, &mut tx).await?;
        }
    }

    let ids = increments.ids();
    if !ids.is_empty() {
        let ids = json_rows(ids.into_iter().map(|id| vec![id.as_str().into()]));
        let rows = DB::fetch(
            &mut tx,
            &statements.lock_keys,
            &[Param::Text(Some(&ids))],
            &[Read::Text],
        )
        .await
        .map_err(unavailable)?;
        let existing: HashSet<String> = rows
            .into_iter()
            .filter_map(|row| match row.into_iter().next() {
                Some(Cell::Text(id)) => id,
                _ => None,
            })
            .collect();
        increments.retain_keys(|id| existing.contains(id.as_str()));
    }

    // Days as the database keeps them; two days outside years 1 to 9999 may become one, so
    // they are merged again (a statement may not change one row twice).
    let mut counts: BTreeMap<(&str, i64, &str), u64> = BTreeMap::new();
    for ((id, day, outcome), count) in &increments.keys {
        let slot = counts
            .entry((id.as_str(), to_days(*day), outcome.as_str()))
            .or_default();
        add_count(slot, *count);
    }
    if !counts.is_empty() {
        let rows = json_rows(counts.into_iter().map(|((id, day, outcome), count)| {
            vec![
                id.into(),
                day.into(),
                outcome.into(),
                to_count(count).into(),
            ]
        }));
        DB::execute(&mut tx, &statements.add_counts, &[Param::Text(Some(&rows))])
            .await
            .map_err(unavailable)?;
    }

    let mut anonymous: BTreeMap<(i64, &str), u64> = BTreeMap::new();
    for ((day, outcome), count) in &increments.anonymous {
        let slot = anonymous
            .entry((to_days(*day), outcome.as_str()))
            .or_default();
        add_count(slot, *count);
    }
    if !anonymous.is_empty() {
        let rows = json_rows(anonymous.into_iter().map(|((day, outcome), count)| {
            vec![day.into(), outcome.into(), to_count(count).into()]
        }));
        DB::execute(
            &mut tx,
            &statements.add_anonymous,
            &[Param::Text(Some(&rows))],
        )
        .await
        .map_err(unavailable)?;
    }

    if !increments.last_used.is_empty() {
        let rows = json_rows(
            increments
                .last_used
                .iter()
                .map(|(id, at)| vec![id.as_str().into(), to_micros(*at).into()]),
        );
        DB::execute(
            &mut tx,
            &statements.record_last_uses,
            &[Param::Text(Some(&rows))],
        )
        .await
        .map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)
}

/// Key `id`'s requests on each day from `from` to `to`.
pub(super) async fn series<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    id: &KeyId,
    from: Day,
    to: Day,
) -> Result<Vec<DailyUsage>, StoreError> {
    let mut series = zero_series(from, to)?;
    let mut connection = store.connection().await?;
    let params = [
        Param::Text(Some(id.as_str())),
        Param::Int(Some(to_days(from))),
        Param::Int(Some(to_days(to))),
    ];
    let rows = DB::fetch(
        &mut connection,
        &store.statements.usage.series,
        &params,
        &[Read::Int, Read::Text, Read::Int],
    )
    .await
    .map_err(unavailable)?;
    if rows.is_empty() {
        return Err(StoreError::UnknownKey(id.clone()));
    }
    for row in &rows {
        // The row of a key with no usage in the range.
        if let [Cell::Int(None), Cell::Text(None), Cell::Int(None)] = row.as_slice() {
            continue;
        }
        let (day, outcome, count) = count_row(USAGE, row)?;
        let Some(outcome) = KeyOutcome::from_name(&outcome) else {
            // Written by a newer version of the crate.
            continue;
        };
        if let Some(entry) = day_in(&mut series, from, day) {
            entry.counts.add(outcome, count);
        }
    }
    Ok(series)
}

/// The keys of `owner` (everyone's for `None`), with their totals from `from` to `to`.
pub(super) async fn summary<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    owner: Option<&str>,
    from: Day,
    to: Day,
) -> Result<Vec<KeyUsageSummary>, StoreError> {
    let statements = &store.statements.usage;
    let mut params = vec![
        Param::Int(Some(to_days(from))),
        Param::Int(Some(to_days(to))),
    ];
    let sql = match owner {
        Some(owner) => {
            params.push(Param::Text(Some(owner)));
            &statements.summary_by_owner
        }
        None => &statements.summary_all,
    };
    let mut connection = store.connection().await?;
    let reads = [
        Read::Text,
        Read::Text,
        Read::Int,
        Read::Int,
        Read::Int,
        Read::Text,
        Read::Int,
        Read::Int,
    ];
    let rows = DB::fetch(&mut connection, sql, &params, &reads)
        .await
        .map_err(unavailable)?;
    let mut summaries: Vec<KeyUsageSummary> = Vec::new();
    for row in &rows {
        let [id, name, created_at, last_used_at, revoked_at, outcome, high, low] = row.as_slice()
        else {
            return Err(corrupt(KEYS, format!("a row of {} columns", row.len())));
        };
        let Cell::Text(Some(id)) = id else {
            return Err(corrupt(KEYS, format!("a key's id is {id:?}")));
        };
        // Rows of one key are next to each other: they are ordered by key.
        let same_key = summaries
            .last()
            .is_some_and(|last| last.id.as_str() == id.as_str());
        if !same_key {
            summaries.push(KeyUsageSummary {
                id: KeyId::from(id.as_str()),
                name: match name {
                    Cell::Text(Some(name)) => name.clone(),
                    other => return Err(corrupt_key(id, "name", format!("{other:?}"))),
                },
                created_at: time(id, "created_at", created_at)?
                    .ok_or_else(|| corrupt_key(id, "created_at", "NULL".to_owned()))?,
                last_used_at: time(id, "last_used_at", last_used_at)?,
                revoked_at: time(id, "revoked_at", revoked_at)?,
                totals: OutcomeCounts::default(),
            });
        }
        let outcome = match outcome {
            // A key with no usage in the range.
            Cell::Text(None) => continue,
            Cell::Text(Some(outcome)) => outcome,
            other => return Err(corrupt(USAGE, format!("an outcome is {other:?}"))),
        };
        let Some(outcome) = KeyOutcome::from_name(outcome) else {
            // Written by a newer version of the crate.
            continue;
        };
        let total = total(high, low).ok_or_else(|| {
            corrupt(
                USAGE,
                format!("the requests of key {id:?} sum to {high:?} and {low:?}"),
            )
        })?;
        if let Some(summary) = summaries.last_mut() {
            summary.totals.add(outcome, total);
        }
    }
    Ok(summaries)
}

/// The requests whose key was not known, from `from` to `to`.
pub(super) async fn anonymous<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    from: Day,
    to: Day,
) -> Result<Vec<AnonymousIncrement>, StoreError> {
    if from > to {
        return Ok(Vec::new());
    }
    let mut connection = store.connection().await?;
    let params = [
        Param::Int(Some(to_days(from))),
        Param::Int(Some(to_days(to))),
    ];
    let rows = DB::fetch(
        &mut connection,
        &store.statements.usage.anonymous,
        &params,
        &[Read::Int, Read::Text, Read::Int],
    )
    .await
    .map_err(unavailable)?;
    let mut counts = BTreeMap::new();
    for row in &rows {
        let (day, outcome, count) = count_row(ANONYMOUS_USAGE, row)?;
        // Outcomes of a newer version of the crate are skipped.
        if let Some(outcome) = AnonymousOutcome::from_name(&outcome) {
            counts.insert((day, outcome), count);
        }
    }
    Ok(counts
        .into_iter()
        .map(|((day, outcome), count)| AnonymousIncrement::new(day, outcome, count))
        .collect())
}

/// Deletes the ids of the batches applied longer than [`BATCH_ID_RETENTION`] ago.
async fn forget_batches<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    tx: &mut sqlx::Transaction<'static, DB>,
) -> Result<(), StoreError> {
    let Some(before) = store.settings.now().checked_sub(BATCH_ID_RETENTION) else {
        return Ok(());
    };
    DB::execute(
        tx,
        &store.statements.usage.forget_batches,
        &[Param::Int(Some(to_micros(before)))],
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Deletes the counts of the days before `before`; how many rows went.
pub(super) async fn prune<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    before: Day,
) -> Result<u64, StoreError> {
    store.usable()?;
    let statements = &store.statements.usage;
    let params = [Param::Int(Some(to_days(before)))];
    let mut tx = store
        .pool
        .begin_with(DB::BEGIN_WRITE)
        .await
        .map_err(unavailable)?;
    let keys = DB::execute(&mut tx, &statements.prune, &params)
        .await
        .map_err(unavailable)?;
    let anonymous = DB::execute(&mut tx, &statements.prune_anonymous, &params)
        .await
        .map_err(unavailable)?;
    // Not counted among the rows pruned: they are no usage.
    forget_batches::<DB>(store, &mut tx).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(keys.saturating_add(anonymous))
}

/// A row of `(day, outcome, requests)` from `table`, checked.
fn count_row(table: &'static str, row: &[Cell]) -> Result<(Day, String, u64), StoreError> {
    let [Cell::Int(Some(day)), Cell::Text(Some(outcome)), Cell::Int(Some(count))] = row else {
        return Err(corrupt(table, format!("a row reads {row:?}")));
    };
    let day = i32::try_from(*day)
        .map(Day::from_days_since_epoch)
        .map_err(|_| corrupt(table, format!("the day {day} is out of range")))?;
    let count = u64::try_from(*count).map_err(|_| {
        corrupt(
            table,
            format!("{outcome:?} on {day} counts {count} requests"),
        )
    })?;
    Ok((day, outcome.clone(), count))
}

/// A sum read back from [`split_sum`]'s halves; `None` if either is negative or missing.
fn total(high: &Cell, low: &Cell) -> Option<u64> {
    let (Cell::Int(Some(high)), Cell::Int(Some(low))) = (high, low) else {
        return None;
    };
    let high = u128::from(u64::try_from(*high).ok()?);
    let low = u128::from(u64::try_from(*low).ok()?);
    let total = high.saturating_mul(1 << 32).saturating_add(low);
    Some(u64::try_from(total).unwrap_or(u64::MAX))
}

/// The time in `cell`, a column of key `id`.
fn time(
    id: &str,
    column: &'static str,
    cell: &Cell,
) -> Result<Option<std::time::SystemTime>, StoreError> {
    match cell {
        Cell::Int(None) => Ok(None),
        Cell::Int(Some(micros)) => from_micros(*micros)
            .map(Some)
            .ok_or_else(|| corrupt_key(id, column, format!("{micros} is out of range"))),
        other => Err(corrupt_key(id, column, format!("{other:?} is not a time"))),
    }
}

/// Usage rows that cannot be what the crate wrote: edited by hand, or by something else.
#[derive(Debug)]
struct CorruptUsage {
    table: &'static str,
    problem: String,
}

impl fmt::Display for CorruptUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the table `{}` is corrupted: {}",
            self.table, self.problem
        )
    }
}

impl std::error::Error for CorruptUsage {}

fn corrupt(table: &'static str, problem: String) -> StoreError {
    StoreError::unavailable(CorruptUsage { table, problem })
}

fn corrupt_key(id: &str, column: &'static str, problem: String) -> StoreError {
    corrupt(KEYS, format!("key {id:?}, column `{column}`: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_add_up_exactly_and_saturate() {
        let split = |n: u64| {
            (
                Cell::Int(Some((n >> 32) as i64)),
                Cell::Int(Some((n & 0xffff_ffff) as i64)),
            )
        };
        for n in [
            0,
            1,
            u64::from(u32::MAX),
            1 << 32,
            i64::MAX.unsigned_abs(),
            u64::MAX,
        ] {
            let (high, low) = split(n);
            assert_eq!(total(&high, &low), Some(n));
        }
        // Two days at the most a row keeps, and more.
        let max = Cell::Int(Some(i64::MAX));
        assert_eq!(total(&max, &max), Some(u64::MAX));
        let two_days = (
            Cell::Int(Some(2 * (i64::MAX >> 32))),
            Cell::Int(Some(2 * 0xffff_ffff)),
        );
        assert_eq!(
            total(&two_days.0, &two_days.1),
            Some(2 * i64::MAX.unsigned_abs())
        );
        assert_eq!(total(&Cell::Int(Some(-1)), &Cell::Int(Some(0))), None);
        assert_eq!(total(&Cell::Int(None), &Cell::Int(Some(0))), None);
    }

    #[test]
    fn corrupted_rows_are_named_never_a_panic() {
        let row = |day: Option<i64>, outcome: Option<&str>, count: Option<i64>| {
            vec![
                Cell::Int(day),
                Cell::Text(outcome.map(str::to_owned)),
                Cell::Int(count),
            ]
        };
        let (day, outcome, count) =
            count_row(USAGE, &row(Some(19_700), Some("allowed"), Some(3))).unwrap();
        assert_eq!(
            (day.to_string().as_str(), outcome.as_str(), count),
            ("2023-12-09", "allowed", 3)
        );
        for bad in [
            row(Some(19_700), Some("allowed"), Some(-3)),
            row(Some(i64::MAX), Some("allowed"), Some(3)),
            row(None, Some("allowed"), Some(3)),
            vec![Cell::Text(Some("19700".into()))],
        ] {
            let message = count_row(USAGE, &bad).unwrap_err().to_string();
            assert!(
                message.contains("`api_key_usage` is corrupted"),
                "{message}"
            );
        }
        let message = time("key_1", "created_at", &Cell::Text(Some("yesterday".into())))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("\"key_1\", column `created_at`"),
            "{message}"
        );
    }
}
