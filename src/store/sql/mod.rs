//! [`SqlStore`]: the key lifecycle on a SQL database, written once for SQLite and PostgreSQL.
//!
//! The store is generic over the sqlx database it runs on. What is the same for both databases
//! (the statements, the key table's columns, decoding rows, migrating, the lifecycle rules) is
//! here and in `table`; what truly differs (placeholders, how times and JSON are stored, how a
//! write transaction locks, schemas) is each database's small `Dialect`, in
//! [`sqlite`](crate::store::sqlite) and [`postgres`](crate::store::postgres).
//! Use it through its names for each database: [`SqliteStore`](crate::SqliteStore) and
//! [`PostgresStore`](crate::PostgresStore).

mod audit;
pub(super) mod backend;
pub(crate) mod table;
mod usage;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Pool, Transaction};

use self::audit::Entry;
use self::backend::{Cell, ColumnType, Dialect, Param, Read};
use self::table::{
    key_column_type, key_reads, normalize, normalize_limits, to_micros, unavailable, KeyValues,
    LimitValues, RawRow, Step, KEYS, KEY_COLUMNS, KEY_PREFIX_SETTING, LIMIT_COLUMNS, MIGRATIONS,
    MIGRATIONS_TABLE, SETTINGS,
};
use super::settings::{settings_methods, StoreSettings};
use super::{
    plan_rotation, prepare, validate_name, Actor, AuditAction, AuditEvent, AuditQuery, CreatedKey,
    KeyStore, NewKey, Rotation, StoreError, StoredKey,
};
use crate::invalidation::{Invalidations, Watcher};
use crate::key::{KeyDigest, KeyFormat};
use crate::limit::KeyLimits;
use crate::resolver::{KeyId, KeyRecord, KeyResolver, ResolveError};
use crate::usage::{AnonymousIncrement, DailyUsage, Day, KeyUsageSummary, UsageBatch};

/// A database the SQL store runs on: [`sqlx::Sqlite`] (feature `sqlite`) or [`sqlx::Postgres`]
/// (feature `postgres`). Sealed: the crate implements it for these two only.
pub trait SqlDatabase: Dialect {}

/// Keys in a SQL database: [`SqliteStore`](crate::SqliteStore) or
/// [`PostgresStore`](crate::PostgresStore). Clones share the connection pool and the settings.
///
/// See the module docs of [`sqlite`](crate::store::sqlite) and
/// [`postgres`](crate::store::postgres) for the schema and examples.
pub struct SqlStore<DB: SqlDatabase> {
    pool: Pool<DB>,
    settings: StoreSettings,
    /// The PostgreSQL schema holding the tables; `None` for SQLite.
    namespace: Option<Arc<str>>,
    statements: Arc<Statements>,
    watch: Arc<Watch>,
}

/// The store's watch for changes made by other processes, shared by its clones and started
/// once.
struct Watch {
    watcher: OnceLock<Watcher>,
    /// How often a database that cannot push changes is asked for them.
    poll: Duration,
}

impl Watch {
    fn new(poll: Duration) -> Arc<Self> {
        Arc::new(Watch {
            watcher: OnceLock::new(),
            poll,
        })
    }
}

/// How often SQLite is asked for changes unless the store says otherwise.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_millis(100);
/// How long a watcher may take to read a change and drop the key, once the change reached it.
pub(crate) const PROPAGATION_MARGIN: Duration = Duration::from_millis(20);

impl<DB: SqlDatabase> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            settings: self.settings.clone(),
            namespace: self.namespace.clone(),
            statements: self.statements.clone(),
            watch: self.watch.clone(),
        }
    }
}

/// The statements of one store, with its table names in them.
struct Statements {
    insert: String,
    by_id: String,
    by_id_for_update: String,
    by_digest: String,
    all: String,
    by_owner: String,
    rename: String,
    set_limits: String,
    revoke: String,
    retire: String,
    delete: String,
    record_use: String,
    read_setting: String,
    write_setting: String,
    record_migration: String,
    usage: usage::UsageStatements,
    audit: audit::AuditStatements,
}

impl Statements {
    fn new<DB: SqlDatabase>(namespace: Option<&str>) -> Self {
        let keys = DB::table(namespace, KEYS);
        let settings = DB::table(namespace, SETTINGS);
        let p = DB::param;
        let columns = KEY_COLUMNS
            .iter()
            .map(|column| DB::select(column.name, column.ty))
            .collect::<Vec<_>>()
            .join(", ");
        let names = KEY_COLUMNS
            .iter()
            .map(|column| column.name)
            .collect::<Vec<_>>()
            .join(", ");
        let values = KEY_COLUMNS
            .iter()
            .enumerate()
            .map(|(index, column)| DB::value(index + 1, column.ty))
            .collect::<Vec<_>>()
            .join(", ");
        let time = |n| DB::value(n, ColumnType::Time);
        let limits = LIMIT_COLUMNS
            .iter()
            .enumerate()
            .map(|(index, name)| {
                format!("{name} = {}", DB::value(index + 1, key_column_type(name)))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let select = format!("SELECT {columns} FROM {keys}");
        Statements {
            insert: format!("INSERT INTO {keys} ({names}) VALUES ({values})"),
            by_id: format!("{select} WHERE id = {}", p(1)),
            // Holds the row until the transaction ends, so that concurrent rotations of one key
            // run one after the other.
            by_id_for_update: format!("{select} WHERE id = {}{}", p(1), DB::FOR_UPDATE),
            by_digest: format!("{select} WHERE digest = {}", p(1)),
            all: format!("{select} ORDER BY created_at DESC, id ASC"),
            by_owner: format!(
                "{select} WHERE owner = {} ORDER BY created_at DESC, id ASC",
                p(1)
            ),
            rename: format!(
                "UPDATE {keys} SET name = {} WHERE id = {} RETURNING {columns}",
                p(1),
                p(2)
            ),
            // Both limits at once: the values of `LIMIT_COLUMNS`, then the id.
            set_limits: format!(
                "UPDATE {keys} SET {limits} WHERE id = {} RETURNING {columns}",
                p(LIMIT_COLUMNS.len() + 1)
            ),
            // Only the first revocation changes the row (and its time is kept): no row back
            // means no such key, or a key revoked already.
            revoke: format!(
                "UPDATE {keys} SET revoked_at = {} WHERE id = {} AND revoked_at IS NULL \
                 RETURNING {columns}",
                time(1),
                p(2)
            ),
            // The old key of a rotation: its grace period, and the key that replaces it.
            retire: format!(
                "UPDATE {keys} SET expires_at = {}, replaced_by = {} WHERE id = {}",
                time(1),
                p(2),
                p(3)
            ),
            // What the audit trail records of the key, and the digest to announce.
            delete: format!(
                "DELETE FROM {keys} WHERE id = {} RETURNING digest, owner, name",
                p(1)
            ),
            // Matches the row whatever its time, so that no row means no such key; moves only
            // forward.
            record_use: format!(
                "UPDATE {keys} SET last_used_at = {} WHERE id = {} RETURNING id",
                DB::later_of("last_used_at", &time(1)),
                p(2)
            ),
            read_setting: format!("SELECT value FROM {settings} WHERE name = {}", p(1)),
            write_setting: format!(
                "INSERT INTO {settings} (name, value) VALUES ({}, {}) \
                 ON CONFLICT (name) DO NOTHING",
                p(1),
                p(2)
            ),
            // Inside a migration, whose table names are unqualified.
            record_migration: format!(
                "INSERT INTO {MIGRATIONS_TABLE} (version, description, applied_at) \
                 VALUES ({}, {}, {})",
                p(1),
                p(2),
                time(3)
            ),
            usage: usage::UsageStatements::new::<DB>(namespace),
            audit: audit::AuditStatements::new::<DB>(namespace),
        }
    }
}

impl<DB: SqlDatabase> SqlStore<DB> {
    /// A store on a pool you configured, creating keys as `settings` says (a [`KeyFormat`] is
    /// enough). Call [`migrate`](Self::migrate) before using a new database.
    pub fn from_pool(pool: Pool<DB>, settings: impl Into<StoreSettings>) -> Self {
        SqlStore::in_namespace(pool, settings.into(), DB::DEFAULT_NAMESPACE.map(Arc::from))
    }

    fn in_namespace(pool: Pool<DB>, settings: StoreSettings, namespace: Option<Arc<str>>) -> Self {
        SqlStore {
            statements: Arc::new(Statements::new::<DB>(namespace.as_deref())),
            pool,
            settings,
            namespace,
            watch: Watch::new(DEFAULT_POLL),
        }
    }

    /// The same store with its tables in `namespace`.
    #[cfg(feature = "postgres")]
    pub(super) fn in_schema(self, namespace: Arc<str>) -> Self {
        SqlStore::in_namespace(self.pool, self.settings, Some(namespace))
    }

    /// Where the tables are (a PostgreSQL schema), if the database has such a thing.
    #[cfg(feature = "postgres")]
    pub(super) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// A store on `pool` with its tables in `namespace`, using the key format recorded there.
    pub(super) async fn open_recorded_pool(
        pool: Pool<DB>,
        namespace: Option<Arc<str>>,
    ) -> Result<Self, StoreError> {
        // Any valid format: it is replaced by the recorded one before the store is handed out.
        let unrecorded = KeyFormat::new("unrecorded").map_err(StoreError::unavailable)?;
        let namespace = namespace.or(DB::DEFAULT_NAMESPACE.map(Arc::from));
        let store = SqlStore::in_namespace(pool, unrecorded.into(), namespace);
        match store.recorded_format().await? {
            Some(format) => Ok(store.with_format(format)),
            None => Err(StoreError::NoRecordedFormat),
        }
    }

    settings_methods!();

    /// The same store, asking the database for changes made by other processes every `poll`
    /// where the database cannot push them (SQLite; PostgreSQL pushes). Call it before the
    /// store starts watching.
    #[cfg(feature = "sqlite")]
    pub(super) fn with_poll(mut self, poll: Duration) -> Self {
        self.watch = Watch::new(poll);
        self
    }

    /// The watch for changes made to the key table by other processes (and by plain SQL),
    /// started now if it is not running yet. Every layer built on the store, and every clone of
    /// it, is fed by this one watch; it stops when the last clone is dropped.
    ///
    /// It starts on its own when a layer is built on the store inside a Tokio runtime, or when
    /// the store first resolves a key, so calling this is only needed to read its
    /// [`health`](Watcher::health) (for an application's health endpoint, say) or to start it
    /// earlier. A command-line tool that only changes keys never starts it.
    ///
    /// PostgreSQL pushes changes (`LISTEN`/`NOTIFY`) on a connection of the watch's own,
    /// outside the pool, whose `application_name` is `tower-api-key listener <schema>` (cut to
    /// 63 bytes, as PostgreSQL cuts every name); SQLite is asked every 100 ms by default (see
    /// [`SqliteStore::with_poll_interval`](crate::SqliteStore::with_poll_interval)).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, when the watch is not running yet.
    pub fn watcher(&self) -> &Watcher {
        self.watch.watcher.get_or_init(|| {
            let (bus, name) =
                DB::invalidation_bus(&self.pool, self.namespace.as_ref(), self.watch.poll);
            let own = self.settings.invalidations.clone();
            let process = Invalidations::process_wide();
            let mut targets = vec![own.clone()];
            if !own.same(process) {
                targets.push(process.clone());
            }
            Watcher::builder().name(name).spawn_for(bus, targets)
        })
    }

    /// Returns once every process watching this database with the default settings has seen
    /// the changes this store committed before the call, so that a key revoked just before is
    /// refused by all of them from now on: for a tool that revokes a key and then says so.
    ///
    /// On PostgreSQL it sends a notification of its own after the changes' and waits until it
    /// comes back (PostgreSQL delivers notifications in commit order), plus a few milliseconds
    /// for the watchers to drop their copies; typically a millisecond or two in all. On SQLite it
    /// waits one default polling interval (100 ms) and a little more; a process polling less
    /// often sees the change later.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database fails; the changes stand, and reach the
    /// watchers anyway.
    pub async fn propagated(&self) -> Result<(), StoreError> {
        self.usable()?;
        DB::propagated(&self.pool, self.namespace.as_deref())
            .await
            .map_err(unavailable)
    }

    /// Starts the watch if it is not running and a Tokio runtime is at hand.
    fn start_watching(&self) {
        if self.watch.watcher.get().is_none() && tokio::runtime::Handle::try_current().is_ok() {
            self.watcher();
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Applies the migrations shipped with the crate that the database has not had yet, and
    /// records the store's key format in the database, in one transaction. Calling it again
    /// does nothing; processes migrating at the same time wait for each other.
    ///
    /// # Errors
    ///
    /// [`StoreError::FormatMismatch`] if the database's keys have another format than this
    /// store's, which would otherwise refuse every key; [`StoreError::Unavailable`] if the
    /// database fails or refuses (for example, the user may not create a PostgreSQL schema).
    /// Nothing is changed then.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.usable()?;
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(unavailable)?;
        DB::prepare_migration(&mut tx, self.namespace.as_deref())
            .await
            .map_err(unavailable)?;
        DB::run_script(&mut tx, DB::CREATE_MIGRATIONS_TABLE)
            .await
            .map_err(unavailable)?;
        let applied = DB::fetch(
            &mut tx,
            &format!("SELECT version FROM {MIGRATIONS_TABLE}"),
            &[],
            &[Read::Int],
        )
        .await
        .map_err(unavailable)?;
        let applied: Vec<i64> = applied
            .iter()
            .filter_map(|row| match row.first() {
                Some(Cell::Int(version)) => *version,
                _ => None,
            })
            .collect();
        for migration in MIGRATIONS {
            if applied.contains(&migration.version) {
                continue;
            }
            for sql in migration.steps.iter().filter_map(script::<DB>) {
                DB::run_script(&mut tx, &sql).await.map_err(unavailable)?;
            }
            let params = [
                Param::Int(Some(migration.version)),
                Param::Text(Some(migration.description)),
                Param::Int(Some(to_micros(SystemTime::now()))),
            ];
            DB::fetch(&mut tx, &self.statements.record_migration, &params, &[])
                .await
                .map_err(unavailable)?;
        }
        // The first migration records the format; every later one checks it.
        let prefix = self.settings.format.prefix();
        let params = [
            Param::Text(Some(KEY_PREFIX_SETTING)),
            Param::Text(Some(prefix)),
        ];
        DB::fetch(&mut tx, &self.statements.write_setting, &params, &[])
            .await
            .map_err(unavailable)?;
        let recorded = read_prefix::<DB>(&mut tx, &self.statements)
            .await
            .map_err(unavailable)?;
        if recorded.as_deref() != Some(prefix) {
            return Err(StoreError::FormatMismatch {
                recorded: recorded.unwrap_or_default(),
                configured: prefix.to_owned(),
            });
        }
        tx.commit().await.map_err(unavailable)
    }

    /// The key format that [`migrate`](Self::migrate) recorded in the database, or `None` if
    /// the database was never migrated by a version of the crate that records it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database fails, or if it holds a prefix that is not a
    /// valid [`KeyFormat`] prefix.
    pub async fn recorded_format(&self) -> Result<Option<KeyFormat>, StoreError> {
        let mut connection = self.connection().await?;
        let prefix = match read_prefix::<DB>(&mut connection, &self.statements).await {
            Ok(prefix) => prefix,
            // No settings table yet: never migrated by a version that records the format.
            Err(sqlx::Error::Database(err)) if DB::is_missing_table(&*err) => None,
            Err(err) => return Err(unavailable(err)),
        };
        prefix
            .map(|prefix| {
                KeyFormat::new(prefix.clone()).map_err(|err| {
                    StoreError::unavailable(format!(
                        "the database records the key prefix {prefix:?}: {err}"
                    ))
                })
            })
            .transpose()
    }

    /// The same store, for keys of `format`.
    fn with_format(mut self, format: KeyFormat) -> Self {
        self.settings.format = format;
        self
    }

    /// Fails for a store that cannot be used as configured (a schema name PostgreSQL cannot
    /// hold).
    fn usable(&self) -> Result<(), StoreError> {
        self.namespace
            .as_deref()
            .map_or(Ok(()), DB::check_namespace)
    }

    async fn connection(&self) -> Result<PoolConnection<DB>, StoreError> {
        self.usable()?;
        self.pool.acquire().await.map_err(unavailable)
    }

    /// Runs a statement that returns key rows.
    async fn keys(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Cell>>, StoreError> {
        let mut connection = self.connection().await?;
        DB::fetch(&mut connection, sql, params, &key_reads())
            .await
            .map_err(unavailable)
    }

    /// Announces the key of a row just changed (and committed) on the invalidations, then
    /// decodes it.
    ///
    /// The announcement comes first and needs only the digest, so that a change to a row that
    /// is otherwise corrupted still reaches the layers.
    fn announce(&self, raw: RawRow) -> Result<StoredKey, StoreError> {
        if let Some(digest) = table::digest_of(&raw.digest) {
            // After the commit: a lookup that starts now reads the changed row.
            self.settings.announce(&digest);
        }
        Ok(raw.decode()?.1)
    }

    /// Starts a write transaction: a change and its audit entry are written together or not at
    /// all.
    async fn begin_write(&self) -> Result<Transaction<'static, DB>, StoreError> {
        self.usable()?;
        self.pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(unavailable)
    }

    /// Changes key `id` with `sql` (an `UPDATE ... RETURNING` the key's columns) and records
    /// `action` by `actor` in the same transaction, then announces the key.
    async fn update(
        &self,
        id: &KeyId,
        sql: &str,
        params: &[Param<'_>],
        action: AuditAction,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = DB::fetch(&mut tx, sql, params, &key_reads())
            .await
            .map_err(unavailable)?;
        let raw = first_row(id, rows)?;
        let now = normalize(self.settings.now());
        self.record(&mut tx, now, action, &raw, actor).await?;
        tx.commit().await.map_err(unavailable)?;
        self.announce(raw)
    }

    /// Writes `action` on the key in `raw` by `actor` at `at` to the audit trail, in `tx`.
    async fn record(
        &self,
        tx: &mut DB::Connection,
        at: SystemTime,
        action: AuditAction,
        raw: &RawRow,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            at,
            action,
            key_id: &raw.id,
            owner: &raw.owner,
            key_name: &raw.name,
            actor,
            related_key: None,
        };
        audit::write::<DB>(tx, &self.statements.audit, entry).await
    }
}

/// The statements of a migration step in database `DB`; `None` when it has none there.
fn script<DB: SqlDatabase>(step: &Step) -> Option<String> {
    Some(match step {
        Step::Script { sqlite, postgres } => {
            if DB::IS_POSTGRES { postgres } else { sqlite }.to_string()
        }
        Step::Both(sql) => (*sql).to_owned(),
        Step::AddKeyColumn(name) => format!(
            "ALTER TABLE {KEYS} ADD COLUMN {name} {}",
            DB::column_type(key_column_type(name))
        ),
        Step::Sqlite(_) if DB::IS_POSTGRES => return None,
        Step::Sqlite(sql) => (*sql).to_owned(),
    })
}

/// The prefix in a `read_setting` result.
fn prefix_of(rows: &[Vec<Cell>]) -> Option<String> {
    match rows.first().and_then(|row| row.first()) {
        Some(Cell::Text(Some(prefix))) => Some(prefix.clone()),
        _ => None,
    }
}

/// The key prefix recorded in the settings table, if any.
async fn read_prefix<DB: SqlDatabase>(
    connection: &mut DB::Connection,
    statements: &Statements,
) -> Result<Option<String>, sqlx::Error> {
    let rows = DB::fetch(
        connection,
        &statements.read_setting,
        &[Param::Text(Some(KEY_PREFIX_SETTING))],
        &[Read::Text],
    )
    .await?;
    Ok(prefix_of(&rows))
}

/// The first row of `rows`, read but not decoded, or [`StoreError::UnknownKey`].
fn first_row(id: &KeyId, rows: Vec<Vec<Cell>>) -> Result<RawRow, StoreError> {
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
    Ok(RawRow::read(&row)?)
}

/// The key of the first row of `rows`, or [`StoreError::UnknownKey`].
fn found(id: &KeyId, rows: Vec<Vec<Cell>>) -> Result<(KeyDigest, StoredKey), StoreError> {
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::UnknownKey(id.clone()))?;
    Ok(RawRow::read(&row)?.decode()?)
}

/// Inserts a new key.
async fn insert<DB: SqlDatabase>(
    connection: &mut DB::Connection,
    statements: &Statements,
    created: &CreatedKey,
) -> Result<(), StoreError> {
    let digest = created.key.digest();
    let values = KeyValues::new(created, &digest)?;
    DB::fetch(connection, &statements.insert, &values.params(), &[])
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Like [`prepare`], with every time (and rate period) cut to what the database keeps, so that the key handed back
/// is exactly the key read back later.
fn prepare_row(settings: &StoreSettings, mut new: NewKey) -> Result<CreatedKey, StoreError> {
    new.expires_at = new.expires_at.map(normalize);
    new.limits = normalize_limits(new.limits);
    prepare(
        &settings.format,
        new,
        normalize(settings.now()),
        settings.catalog.as_ref(),
    )
}

#[async_trait]
impl<DB: SqlDatabase> KeyStore for SqlStore<DB> {
    fn format(&self) -> &KeyFormat {
        &self.settings.format
    }

    async fn create_by(&self, new: NewKey, actor: &Actor) -> Result<CreatedKey, StoreError> {
        actor.validate()?;
        let created = prepare_row(&self.settings, new)?;
        let mut tx = self.begin_write().await?;
        insert::<DB>(&mut tx, &self.statements, &created).await?;
        let record = &created.stored.record;
        let entry = Entry {
            at: created.stored.created_at,
            action: AuditAction::Created,
            key_id: record.id.as_str(),
            owner: &record.owner,
            key_name: &record.name,
            actor,
            related_key: None,
        };
        audit::write::<DB>(&mut tx, &self.statements.audit, entry).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    async fn get(&self, id: &KeyId) -> Result<StoredKey, StoreError> {
        let rows = self
            .keys(&self.statements.by_id, &[Param::Text(Some(id.as_str()))])
            .await?;
        Ok(found(id, rows)?.1)
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<StoredKey>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                self.keys(&self.statements.by_owner, &[Param::Text(Some(owner))])
                    .await?
            }
            None => self.keys(&self.statements.all, &[]).await?,
        };
        rows.iter()
            .map(|row| Ok(RawRow::read(row)?.decode()?.1))
            .collect()
    }

    async fn rename_by(
        &self,
        id: &KeyId,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        actor.validate()?;
        let name = validate_name(name)?;
        let params = [Param::Text(Some(name)), Param::Text(Some(id.as_str()))];
        let sql = &self.statements.rename;
        self.update(id, sql, &params, AuditAction::Renamed, actor)
            .await
    }

    async fn set_limits_by(
        &self,
        id: &KeyId,
        limits: KeyLimits,
        actor: &Actor,
    ) -> Result<StoredKey, StoreError> {
        actor.validate()?;
        let values = LimitValues::new(&normalize_limits(limits));
        let mut params = values.params().to_vec();
        params.push(Param::Text(Some(id.as_str())));
        let sql = &self.statements.set_limits;
        self.update(id, sql, &params, AuditAction::LimitsChanged, actor)
            .await
    }

    async fn revoke_by(&self, id: &KeyId, actor: &Actor) -> Result<StoredKey, StoreError> {
        actor.validate()?;
        let now = normalize(self.settings.now());
        let params = [
            Param::Int(Some(to_micros(now))),
            Param::Text(Some(id.as_str())),
        ];
        let mut tx = self.begin_write().await?;
        let revoked = DB::fetch(&mut tx, &self.statements.revoke, &params, &key_reads())
            .await
            .map_err(unavailable)?;
        let raw = match revoked.into_iter().next() {
            Some(row) => {
                let raw = RawRow::read(&row)?;
                self.record(&mut tx, now, AuditAction::Revoked, &raw, actor)
                    .await?;
                raw
            }
            // Revoked already (a concurrent revocation that committed first included), or no
            // such key: nothing to record.
            None => {
                let params = [Param::Text(Some(id.as_str()))];
                let rows = DB::fetch(&mut tx, &self.statements.by_id, &params, &key_reads())
                    .await
                    .map_err(unavailable)?;
                first_row(id, rows)?
            }
        };
        tx.commit().await.map_err(unavailable)?;
        self.announce(raw)
    }

    async fn rotate_by(
        &self,
        id: &KeyId,
        grace: Duration,
        actor: &Actor,
    ) -> Result<Rotation, StoreError> {
        actor.validate()?;
        let now = normalize(self.settings.now());
        // A write transaction, and the old row locked, so that the old key cannot change
        // between the read and the writes.
        let mut tx = self.begin_write().await?;
        let rows = DB::fetch(
            &mut tx,
            &self.statements.by_id_for_update,
            &[Param::Text(Some(id.as_str()))],
            &key_reads(),
        )
        .await
        .map_err(unavailable)?;
        let (old_digest, mut old) = found(id, rows)?;
        let (new, old_expires_at) = plan_rotation(&self.settings.format, &old, grace, now)?;
        let old_expires_at = normalize(old_expires_at);
        let params = [
            Param::Int(Some(to_micros(old_expires_at))),
            Param::Text(Some(new.id().as_str())),
            Param::Text(Some(id.as_str())),
        ];
        DB::fetch(&mut tx, &self.statements.retire, &params, &[])
            .await
            .map_err(unavailable)?;
        insert::<DB>(&mut tx, &self.statements, &new).await?;
        let record = &old.record;
        let entries = [
            (AuditAction::Rotated, id, new.id()),
            (AuditAction::Created, new.id(), id),
        ];
        for (action, key, related) in entries {
            let entry = Entry {
                at: now,
                action,
                key_id: key.as_str(),
                owner: &record.owner,
                key_name: &record.name,
                actor,
                related_key: Some(related.as_str()),
            };
            audit::write::<DB>(&mut tx, &self.statements.audit, entry).await?;
        }
        tx.commit().await.map_err(unavailable)?;

        old.record.expires_at = Some(old_expires_at);
        old.replaced_by = Some(new.id().clone());
        self.settings.announce(&old_digest);
        Ok(Rotation { new, old })
    }

    async fn delete_by(&self, id: &KeyId, actor: &Actor) -> Result<(), StoreError> {
        actor.validate()?;
        let mut tx = self.begin_write().await?;
        let rows = DB::fetch(
            &mut tx,
            &self.statements.delete,
            &[Param::Text(Some(id.as_str()))],
            &[Read::Bytes, Read::Text, Read::Text],
        )
        .await
        .map_err(unavailable)?;
        let Some(row) = rows.first() else {
            return Err(StoreError::UnknownKey(id.clone()));
        };
        // Only the owner and the name are read: a key whose other columns are corrupted can
        // still be deleted.
        let [digest, Cell::Text(Some(owner)), Cell::Text(Some(name))] = row.as_slice() else {
            return Err(StoreError::unavailable(format!(
                "the stored key {:?} is corrupted: its owner or name is not text",
                id.as_str()
            )));
        };
        let entry = Entry {
            at: normalize(self.settings.now()),
            action: AuditAction::Deleted,
            key_id: id.as_str(),
            owner,
            key_name: name,
            actor,
            related_key: None,
        };
        audit::write::<DB>(&mut tx, &self.statements.audit, entry).await?;
        tx.commit().await.map_err(unavailable)?;
        if let Cell::Bytes(Some(digest)) = digest {
            if let Some(digest) = table::digest_of(digest) {
                self.settings.announce(&digest);
            }
        }
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        audit::read(self, query).await
    }

    async fn record_use(&self, id: &KeyId, at: SystemTime) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        let params = [
            Param::Int(Some(to_micros(at))),
            Param::Text(Some(id.as_str())),
        ];
        let rows = DB::fetch(
            &mut connection,
            &self.statements.record_use,
            &params,
            &[Read::Text],
        )
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            return Err(StoreError::UnknownKey(id.clone()));
        }
        Ok(())
    }

    async fn record_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        usage::record(self, batch).await
    }

    async fn usage(&self, id: &KeyId, from: Day, to: Day) -> Result<Vec<DailyUsage>, StoreError> {
        usage::series(self, id, from, to).await
    }

    async fn usage_summary(
        &self,
        owner: Option<&str>,
        from: Day,
        to: Day,
    ) -> Result<Vec<KeyUsageSummary>, StoreError> {
        usage::summary(self, owner, from, to).await
    }

    async fn anonymous_usage(
        &self,
        from: Day,
        to: Day,
    ) -> Result<Vec<AnonymousIncrement>, StoreError> {
        usage::anonymous(self, from, to).await
    }

    async fn prune_usage(&self, before: Day) -> Result<u64, StoreError> {
        usage::prune(self, before).await
    }
}

#[async_trait]
impl<DB: SqlDatabase> KeyResolver for SqlStore<DB> {
    async fn resolve(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, ResolveError> {
        self.usable().map_err(ResolveError::new)?;
        self.start_watching();
        let mut connection = self.pool.acquire().await.map_err(ResolveError::new)?;
        let rows = DB::fetch(
            &mut connection,
            &self.statements.by_digest,
            &[Param::Bytes(digest.as_bytes())],
            &key_reads(),
        )
        .await
        .map_err(ResolveError::new)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (_, stored) = RawRow::read(row)?.decode()?;
        Ok(Some(stored.record))
    }

    fn invalidations(&self) -> Option<Invalidations> {
        self.start_watching();
        Some(self.settings.invalidations.clone())
    }
}

impl<DB: SqlDatabase> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct(DB::STORE_NAME);
        debug.field("format", &self.settings.format);
        if let Some(namespace) = &self.namespace {
            debug.field("schema", namespace);
        }
        debug.field("pool", &self.pool).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The futures of the inherent methods can move between threads, as `tokio::spawn` and axum
    /// handlers need (the trait's are boxed as `Send` by `async_trait`).
    #[allow(dead_code)]
    fn futures_are_send<DB: SqlDatabase>(store: &SqlStore<DB>) {
        fn send<T: Send>(_: T) {}
        send(store.migrate());
        send(store.recorded_format());
    }
}
