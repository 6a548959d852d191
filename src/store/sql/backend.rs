//! The two halves of what the SQL store needs from a database: what truly differs between
//! SQLite and PostgreSQL ([`Dialect`], a few lines per database), and the sqlx plumbing that
//! runs a statement ([`Driver`], written once for every database sqlx supports with the types
//! the key table uses).
//!
//! Both traits are public only in name: this module is private, so nobody outside the crate can
//! implement or call them, and [`SqlDatabase`](super::SqlDatabase) stays sealed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::invalidation::InvalidationBus;
use crate::store::StoreError;

/// A value bound to a statement's parameter. Every column of the crate's tables is text, bytes
/// or an integer (times are microseconds since the Unix epoch, days are days since it) on the
/// Rust side.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Text(Option<&'a str>),
    Bytes(&'a [u8]),
    Int(Option<i64>),
}

/// A value read from a result column, before any of it is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Int(Option<i64>),
}

/// How a result column is read into a [`Cell`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Text,
    Bytes,
    Int,
}

/// What a column holds, as the key table declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Bytes,
    /// A point in time: `INTEGER` microseconds in SQLite, `TIMESTAMPTZ` in PostgreSQL, and
    /// microseconds since the epoch on the Rust side.
    Time,
    /// A JSON object: `TEXT` in SQLite, `JSONB` in PostgreSQL, and text on the Rust side.
    Json,
    /// A UTC calendar day: `INTEGER` days since 1970-01-01 in SQLite, `DATE` in PostgreSQL, and
    /// days since 1970-01-01 on the Rust side.
    Day,
    /// A whole number: `INTEGER` in SQLite, `BIGINT` in PostgreSQL, `i64` on the Rust side.
    Int,
}

impl ColumnType {
    /// How the column is read.
    pub fn read(self) -> Read {
        match self {
            ColumnType::Text | ColumnType::Json => Read::Text,
            ColumnType::Bytes => Read::Bytes,
            ColumnType::Time | ColumnType::Day | ColumnType::Int => Read::Int,
        }
    }
}

/// What differs between the databases: placeholders, how times and JSON are written and read,
/// column types, how a write transaction locks, and where tables live.
pub trait Dialect: Driver {
    /// The store's name in `Debug` output.
    const STORE_NAME: &'static str;

    /// Which historical migration scripts apply.
    const IS_POSTGRES: bool;

    /// Where the tables are when the store names no place (a PostgreSQL schema).
    const DEFAULT_NAMESPACE: Option<&'static str> = None;

    /// Creates the table of migrations applied, unless it exists (inside a migration, with
    /// unqualified names).
    const CREATE_MIGRATIONS_TABLE: &'static str;

    /// Starts a transaction that holds other writers off until it ends.
    const BEGIN_WRITE: &'static str;

    /// Ends a `SELECT` that reads a row the transaction is about to change.
    const FOR_UPDATE: &'static str;

    /// Ends a `SELECT` that reads a row whose `last_used_at` or usage counts the transaction is
    /// about to change: it keeps other such writers (and deletions) off the row until the end,
    /// without holding off readers, nor inserts naming the row in a foreign key.
    const FOR_NO_KEY_UPDATE: &'static str;

    /// The placeholder of parameter `n` (from 1); numbered, so a statement may use one twice.
    fn param(n: usize) -> String;

    /// An expression reading `column` of type `ty` the way [`Driver::fetch`] decodes it.
    fn select(column: &str, ty: ColumnType) -> String;

    /// An expression turning parameter `n` into a value of type `ty`.
    fn value(n: usize, ty: ColumnType) -> String {
        Self::from_rust(&Self::param(n), ty)
    }

    /// An expression turning `expr`, a value as the Rust side holds it (see [`ColumnType`]),
    /// into a value of type `ty`.
    fn from_rust(expr: &str, ty: ColumnType) -> String;

    /// A subquery reading parameter `n`, a JSON array of arrays, as rows: one column per entry
    /// of `columns` (its name, and [`Read::Text`] or [`Read::Int`] for a JSON string or
    /// number), from the entries of each inner array in order. How the SQL stores send many
    /// rows in one parameter, whatever their number.
    fn json_rows(n: usize, columns: &[(&str, Read)]) -> String;

    /// The type of a new column of type `ty`, nullable, for `ALTER TABLE ... ADD COLUMN`.
    fn column_type(ty: ColumnType) -> &'static str;

    /// The later of `column` and `value`, where `column` may be `NULL`.
    fn later_of(column: &str, value: &str) -> String;

    /// `name` as a table in `namespace` (a PostgreSQL schema; SQLite has none).
    fn table(namespace: Option<&str>, name: &str) -> String;

    /// Whether `namespace` can name the store's schema exactly; by default any name can.
    fn check_namespace(namespace: &str) -> Result<(), StoreError> {
        let _ = namespace;
        Ok(())
    }

    /// The bus on which the database carries changes to the key table in `namespace` to every
    /// process: what the migrations' triggers write, read as often as `poll` says where the
    /// database cannot push it. Its name for log events comes with it.
    fn invalidation_bus(
        pool: &Pool<Self>,
        namespace: Option<&Arc<str>>,
        poll: Duration,
    ) -> (Box<dyn InvalidationBus>, String);

    /// Returns once every process watching `namespace` with the default settings has been
    /// told of the changes committed before the call.
    fn propagated<'c>(
        pool: &'c Pool<Self>,
        namespace: Option<&'c str>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Whether `err` says that a table does not exist.
    fn is_missing_table(err: &dyn sqlx::error::DatabaseError) -> bool;

    /// Prepares a migration in `namespace` once its transaction has begun: waits for other
    /// migrating processes, creates the namespace if it is missing, and makes unqualified table
    /// names refer to it until the transaction ends. Nothing to do by default.
    fn prepare_migration<'c>(
        connection: &'c mut Self::Connection,
        namespace: Option<&'c str>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        let _ = (connection, namespace);
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// Runs statements with [`Param`]s and reads [`Cell`]s: the only code that touches sqlx's
/// generic types, written once.
pub trait Driver: Database {
    /// Runs `sql` with `params`, reading `columns` from each row it returns.
    fn fetch<'c>(
        connection: &'c mut Self::Connection,
        sql: &'c str,
        params: &'c [Param<'c>],
        columns: &'c [Read],
    ) -> BoxFuture<'c, Result<Vec<Vec<Cell>>, sqlx::Error>>;

    /// Runs `sql` with `params`; how many rows it changed.
    fn execute<'c>(
        connection: &'c mut Self::Connection,
        sql: &'c str,
        params: &'c [Param<'c>],
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Runs one or more statements with no parameters, such as a migration script.
    fn run_script<'c>(
        connection: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
}

/// How many rows a statement changed, as each database reports it.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

#[cfg(feature = "sqlite")]
impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "postgres")]
impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// `sql` with `params` bound.
fn bind<'q, DB>(
    sql: &'q str,
    params: &'q [Param<'q>],
) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql);
    for param in params {
        query = match *param {
            Param::Text(text) => query.bind(text),
            Param::Bytes(bytes) => query.bind(bytes),
            Param::Int(int) => query.bind(int),
        };
    }
    query
}

impl<DB> Driver for DB
where
    DB: Database,
    DB::QueryResult: RowsAffected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> Option<Vec<u8>>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn fetch<'c>(
        connection: &'c mut Self::Connection,
        sql: &'c str,
        params: &'c [Param<'c>],
        columns: &'c [Read],
    ) -> BoxFuture<'c, Result<Vec<Vec<Cell>>, sqlx::Error>> {
        let query = bind::<DB>(sql, params);
        async move {
            let rows = query.fetch_all(connection).await?;
            rows.iter()
                .map(|row| {
                    columns
                        .iter()
                        .enumerate()
                        .map(|(index, read)| {
                            Ok(match read {
                                Read::Text => Cell::Text(row.try_get(index)?),
                                Read::Bytes => Cell::Bytes(row.try_get(index)?),
                                Read::Int => Cell::Int(row.try_get(index)?),
                            })
                        })
                        .collect()
                })
                .collect()
        }
        .boxed()
    }

    fn execute<'c>(
        connection: &'c mut Self::Connection,
        sql: &'c str,
        params: &'c [Param<'c>],
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
        let query = bind::<DB>(sql, params);
        async move { Ok(query.execute(connection).await?.rows_affected()) }.boxed()
    }

    fn run_script<'c>(
        connection: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        // Through `Executor::execute`, whose boxed future is `Send`; the compiler cannot prove
        // that of `RawSql::execute`'s, which would make `migrate` unusable in `tokio::spawn`.
        connection
            .execute(sqlx::raw_sql(sql))
            .map(|done| done.map(|_| ()))
            .boxed()
    }
}
