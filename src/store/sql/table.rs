//! The key table, described once for both databases: its columns (what each holds, how it is
//! written from a key and read back), its migrations, and the decoding of a row.
//!
//! Adding a column is one change here: an entry in [`KEY_COLUMNS`] (with how to write it), a
//! field read in [`RawRow::read`] and decoded in [`RawRow::decode`], and a step in
//! [`MIGRATIONS`]. Both databases take the column from these.
//!
//! Decoding never trusts the database: a row someone edited by hand, with an unknown
//! environment, a malformed scope, a digest of the wrong length, a rate limit out of range or
//! only partly set, or a network that is not one, gives a [`CorruptRow`] error naming the key and
//! the column, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backend::{Cell, ColumnType, Param, Read};
use crate::key::{Environment, KeyDigest};
use crate::limit::{AllowedNetworks, KeyLimits, RateLimit};
use crate::resolver::{KeyId, KeyRecord, ResolveError};
use crate::scope::{Scope, ScopeSet};
use crate::store::{CreatedKey, StoreError, StoredKey};
use crate::usage::Day;

/// The table of keys.
pub(super) const KEYS: &str = "api_keys";
/// The table of migrations applied.
pub(super) const MIGRATIONS_TABLE: &str = "api_key_migrations";
/// The table of the store's own settings, such as the key format it was migrated with.
pub(super) const SETTINGS: &str = "api_key_settings";
/// The table of requests per key, day and outcome.
pub(super) const USAGE: &str = "api_key_usage";
/// The table of requests per day and outcome whose key was not known.
pub(super) const ANONYMOUS_USAGE: &str = "api_key_anonymous_usage";
/// The table of the usage batches applied, by id.
pub(super) const USAGE_BATCHES: &str = "api_key_usage_batches";
/// The audit trail: one row per change to a key.
pub(super) const AUDIT: &str = "api_key_audit";

/// The setting that records the product prefix of the store's keys.
pub(super) const KEY_PREFIX_SETTING: &str = "key_prefix";

/// A column of the key table.
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) ty: ColumnType,
    /// The column's value for a key being inserted.
    pub(super) write: for<'a> fn(&'a KeyValues<'a>) -> Param<'a>,
}

/// A key being inserted, with the values its columns need computed once.
pub(super) struct KeyValues<'a> {
    stored: &'a StoredKey,
    digest: &'a [u8],
    scopes: String,
    metadata: String,
    limits: LimitValues,
}

impl<'a> KeyValues<'a> {
    pub(super) fn new(created: &'a CreatedKey, digest: &'a KeyDigest) -> Result<Self, StoreError> {
        Ok(KeyValues {
            stored: &created.stored,
            digest: digest.as_bytes(),
            // Scope names, space-separated, in sorted order.
            scopes: created.stored.record.scopes.to_string(),
            // A JSON object of strings.
            metadata: serde_json::to_string(&created.stored.metadata)
                .map_err(StoreError::unavailable)?,
            limits: LimitValues::new(&created.stored.record.limits),
        })
    }

    /// The parameters of an insert, in the order of [`KEY_COLUMNS`].
    pub(super) fn params(&'a self) -> Vec<Param<'a>> {
        KEY_COLUMNS
            .iter()
            .map(|column| (column.write)(self))
            .collect()
    }
}

/// The columns that hold a key's limits, in the order of [`LimitValues::params`].
pub(super) const LIMIT_COLUMNS: [&str; 4] = [
    "rate_requests",
    "rate_period_ms",
    "rate_burst",
    "allowed_networks",
];

/// A key's limits as the columns of [`LIMIT_COLUMNS`] hold them: the rate as three integers
/// (all `NULL` for none) and the networks as their `Display` form, CIDR ranges separated by
/// spaces (`NULL` for anywhere).
pub(super) struct LimitValues {
    requests: Option<i64>,
    period_ms: Option<i64>,
    burst: Option<i64>,
    networks: Option<String>,
}

impl LimitValues {
    pub(super) fn new(limits: &KeyLimits) -> Self {
        let rate = limits.rate.as_ref();
        LimitValues {
            requests: rate.map(|rate| i64::from(rate.requests().get())),
            // A rate's period is at most a day, in whole milliseconds once `normalize_limits`
            // has been applied.
            period_ms: rate
                .map(|rate| i64::try_from(rate.period().as_millis()).unwrap_or(i64::MAX)),
            burst: rate.map(|rate| i64::from(rate.burst().get())),
            networks: limits.networks.as_ref().map(ToString::to_string),
        }
    }

    /// The values of [`LIMIT_COLUMNS`], in order.
    pub(super) fn params(&self) -> [Param<'_>; 4] {
        [
            Param::Int(self.requests),
            Param::Int(self.period_ms),
            Param::Int(self.burst),
            Param::Text(self.networks.as_deref()),
        ]
    }
}

/// `limits` as the SQL stores keep them: a rate's period rounded up to the millisecond (which
/// never loosens the rate), so that the limits handed back are exactly those read back later.
pub(super) fn normalize_limits(mut limits: KeyLimits) -> KeyLimits {
    if let Some(rate) = limits.rate {
        let millis = rate.period().as_nanos().div_ceil(1_000_000);
        let period = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        // A longer period keeps the rate valid (it is at most a day, a whole number of
        // milliseconds); should it not, the rate is kept as it was.
        if let Ok(normalized) = RateLimit::new(rate.requests(), period) {
            limits.rate = Some(normalized.with_burst(rate.burst()));
        }
    }
    limits
}

fn text(text: &str) -> Param<'_> {
    Param::Text(Some(text))
}

fn time(at: Option<SystemTime>) -> Param<'static> {
    Param::Int(at.map(to_micros))
}

/// The columns of the key table, in the order statements list them.
pub(super) const KEY_COLUMNS: &[Column] = &[
    Column {
        name: "id",
        ty: ColumnType::Text,
        write: |k| text(k.stored.record.id.as_str()),
    },
    Column {
        name: "digest",
        ty: ColumnType::Bytes,
        write: |k| Param::Bytes(k.digest),
    },
    Column {
        name: "hint",
        ty: ColumnType::Text,
        write: |k| text(&k.stored.hint),
    },
    Column {
        name: "name",
        ty: ColumnType::Text,
        write: |k| text(&k.stored.record.name),
    },
    Column {
        name: "owner",
        ty: ColumnType::Text,
        write: |k| text(&k.stored.record.owner),
    },
    Column {
        name: "environment",
        ty: ColumnType::Text,
        write: |k| text(k.stored.record.environment.as_str()),
    },
    Column {
        name: "scopes",
        ty: ColumnType::Text,
        write: |k| text(&k.scopes),
    },
    Column {
        name: "metadata",
        ty: ColumnType::Json,
        write: |k| text(&k.metadata),
    },
    Column {
        name: "created_at",
        ty: ColumnType::Time,
        write: |k| time(Some(k.stored.created_at)),
    },
    Column {
        name: "expires_at",
        ty: ColumnType::Time,
        write: |k| time(k.stored.record.expires_at),
    },
    Column {
        name: "revoked_at",
        ty: ColumnType::Time,
        write: |k| time(k.stored.record.revoked_at),
    },
    Column {
        name: "last_used_at",
        ty: ColumnType::Time,
        write: |k| time(k.stored.last_used_at),
    },
    Column {
        name: "replaced_by",
        ty: ColumnType::Text,
        write: |k| Param::Text(k.stored.replaced_by.as_ref().map(KeyId::as_str)),
    },
    Column {
        name: "rate_requests",
        ty: ColumnType::Int,
        write: |k| k.limits.params()[0],
    },
    Column {
        name: "rate_period_ms",
        ty: ColumnType::Int,
        write: |k| k.limits.params()[1],
    },
    Column {
        name: "rate_burst",
        ty: ColumnType::Int,
        write: |k| k.limits.params()[2],
    },
    Column {
        name: "allowed_networks",
        ty: ColumnType::Text,
        write: |k| k.limits.params()[3],
    },
];

/// The type of the column of [`KEY_COLUMNS`] named `name` (text, should there be none).
pub(super) fn key_column_type(name: &str) -> ColumnType {
    KEY_COLUMNS
        .iter()
        .find(|column| column.name == name)
        .map_or(ColumnType::Text, |column| column.ty)
}

/// How each column of [`KEY_COLUMNS`] is read.
pub(super) fn key_reads() -> Vec<Read> {
    KEY_COLUMNS.iter().map(|column| column.ty.read()).collect()
}

/// A schema change shipped with the crate, applied once by a store's `migrate`.
pub(super) struct Migration {
    /// Applied in increasing order; recorded once applied.
    pub(super) version: i64,
    pub(super) description: &'static str,
    pub(super) steps: &'static [Step],
}

/// One step of a [`Migration`].
pub(super) enum Step {
    /// Statements written for each database (with unqualified table names).
    Script {
        sqlite: &'static str,
        postgres: &'static str,
    },
    /// Statements that read the same in both databases.
    Both(&'static str),
    /// Adds the column of [`KEY_COLUMNS`] with this name, nullable, to the key table.
    AddKeyColumn(&'static str),
    /// Statements for SQLite only: PostgreSQL needs nothing for this step.
    Sqlite(&'static str),
}

/// The migrations shipped with the crate, in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "create api_keys",
        steps: &[Step::Script {
            sqlite: include_str!("../../../migrations/sqlite/0001_create_api_keys.sql"),
            postgres: include_str!("../../../migrations/postgres/0001_create_api_keys.sql"),
        }],
    },
    Migration {
        version: 2,
        description: "api_keys.replaced_by; api_key_settings",
        steps: &[
            // The key that replaced this one in a rotation, while this one is in its grace.
            Step::AddKeyColumn("replaced_by"),
            // The store's settings, such as the format of its keys.
            Step::Both(
                "CREATE TABLE api_key_settings (\
                 name TEXT NOT NULL PRIMARY KEY, \
                 value TEXT NOT NULL)",
            ),
        ],
    },
    Migration {
        version: 3,
        description: "announce every change to api_keys to other processes",
        steps: &[Step::Script {
            sqlite: include_str!("../../../migrations/sqlite/0003_invalidation_log.sql"),
            postgres: include_str!("../../../migrations/postgres/0003_notify_changes.sql"),
        }],
    },
    Migration {
        version: 4,
        description: "api_key_usage, api_key_anonymous_usage: requests per day",
        steps: &[Step::Script {
            sqlite: include_str!("../../../migrations/sqlite/0004_usage.sql"),
            postgres: include_str!("../../../migrations/postgres/0004_usage.sql"),
        }],
    },
    Migration {
        version: 5,
        description: "api_key_usage_batches: each usage batch applied once",
        steps: &[Step::Script {
            sqlite: include_str!("../../../migrations/sqlite/0005_usage_batches.sql"),
            postgres: include_str!("../../../migrations/postgres/0005_usage_batches.sql"),
        }],
    },
    Migration {
        version: 6,
        description: "api_key_audit: the audit trail",
        steps: &[
            // The table differs only in the types of `seq` and `at`.
            Step::Script {
                sqlite: include_str!("../../../migrations/sqlite/0006_audit.sql"),
                postgres: include_str!("../../../migrations/postgres/0006_audit.sql"),
            },
            // One owner's entries, and one key's, newest first.
            Step::Both("CREATE INDEX api_key_audit_owner ON api_key_audit (owner, seq)"),
            Step::Both("CREATE INDEX api_key_audit_key ON api_key_audit (key_id, seq)"),
        ],
    },
    Migration {
        version: 7,
        description: "api_keys.rate_requests, rate_period_ms, rate_burst, allowed_networks",
        steps: &[
            // A key's rate limit: all three NULL (none) or all set.
            Step::AddKeyColumn("rate_requests"),
            Step::AddKeyColumn("rate_period_ms"),
            Step::AddKeyColumn("rate_burst"),
            // The networks a key may be used from, separated by spaces; NULL for anywhere.
            Step::AddKeyColumn("allowed_networks"),
            // SQLite's update trigger names its columns; PostgreSQL's `api_key_changed()`
            // compares whole rows, so it covers the new columns as it is.
            Step::Sqlite(include_str!("../../../migrations/sqlite/0007_limits.sql")),
        ],
    },
];

/// A database failure, as the lifecycle calls report it.
pub(crate) fn unavailable(err: sqlx::Error) -> StoreError {
    StoreError::unavailable(err)
}

/// The earliest time the SQL stores keep: 0001-01-01T00:00:00Z, in microseconds since the epoch.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The latest time the SQL stores keep: 9999-12-31T23:59:59.999999Z, in microseconds.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// `at` as microseconds since the Unix epoch, rounded down and clamped to years 1 to 9999,
/// which both SQLite integers and PostgreSQL `timestamptz` hold exactly.
pub(super) fn to_micros(at: SystemTime) -> i64 {
    let micros = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            // Round towards the past, as for times after the epoch.
            let whole = i64::try_from(before.as_micros()).unwrap_or(i64::MAX);
            let partial = i64::from(before.subsec_nanos() % 1_000 != 0);
            whole.saturating_add(partial).saturating_neg()
        }
    };
    micros.clamp(MIN_MICROS, MAX_MICROS)
}

/// The time `micros` microseconds after the Unix epoch (before it, if negative).
pub(super) fn from_micros(micros: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// The earliest day the SQL stores keep: 0001-01-01, in days since the epoch.
const MIN_DAY: i32 = -719_162;
/// The latest day the SQL stores keep: 9999-12-31, in days since the epoch.
const MAX_DAY: i32 = 2_932_896;

/// `day` as days since the Unix epoch, clamped to years 1 to 9999 as times are: the days both
/// SQLite integers and PostgreSQL `date`s hold, so that every range read from them is exact.
pub(super) fn to_days(day: Day) -> i64 {
    i64::from(day.days_since_epoch().clamp(MIN_DAY, MAX_DAY))
}

/// `at` as the SQL stores keep it: to the microsecond, within years 1 to 9999.
pub(super) fn normalize(at: SystemTime) -> SystemTime {
    // Every value `to_micros` returns is in range for `SystemTime` on the platforms Rust
    // supports; should one not be, the time is kept as it was.
    from_micros(to_micros(at)).unwrap_or(at)
}

/// The digest in a `digest` column; `None` if it is not 32 bytes long, as no key's is.
pub(super) fn digest_of(bytes: &[u8]) -> Option<KeyDigest> {
    <[u8; 32]>::try_from(bytes).ok().map(KeyDigest::from_bytes)
}

/// A key's row as read from the database, before any of it is trusted.
#[derive(Debug)]
pub(super) struct RawRow {
    pub(super) id: String,
    pub(super) digest: Vec<u8>,
    pub(super) hint: String,
    pub(super) name: String,
    pub(super) owner: String,
    pub(super) environment: String,
    pub(super) scopes: String,
    pub(super) metadata: String,
    pub(super) created_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
    pub(super) last_used_at: Option<i64>,
    pub(super) replaced_by: Option<String>,
    pub(super) rate_requests: Option<i64>,
    pub(super) rate_period_ms: Option<i64>,
    pub(super) rate_burst: Option<i64>,
    pub(super) allowed_networks: Option<String>,
}

/// The cells of one row of [`KEY_COLUMNS`], by column name.
struct Cells<'a> {
    id: Option<&'a str>,
    cells: &'a [Cell],
}

impl<'a> Cells<'a> {
    fn get(&self, name: &'static str) -> Result<&'a Cell, CorruptRow> {
        KEY_COLUMNS
            .iter()
            .position(|column| column.name == name)
            .and_then(|index| self.cells.get(index))
            .ok_or_else(|| self.corrupt(name, "missing from the result".to_owned()))
    }

    fn corrupt(&self, column: &'static str, problem: String) -> CorruptRow {
        CorruptRow {
            id: self.id.unwrap_or("?").to_owned(),
            column,
            problem,
        }
    }

    fn optional_text(&self, name: &'static str) -> Result<Option<String>, CorruptRow> {
        match self.get(name)? {
            Cell::Text(text) => Ok(text.clone()),
            other => Err(self.corrupt(name, format!("{other:?} is not text"))),
        }
    }

    fn text(&self, name: &'static str) -> Result<String, CorruptRow> {
        self.optional_text(name)?
            .ok_or_else(|| self.corrupt(name, "NULL".to_owned()))
    }

    fn bytes(&self, name: &'static str) -> Result<Vec<u8>, CorruptRow> {
        match self.get(name)? {
            Cell::Bytes(Some(bytes)) => Ok(bytes.clone()),
            other => Err(self.corrupt(name, format!("{other:?} is not bytes"))),
        }
    }

    fn optional_int(&self, name: &'static str) -> Result<Option<i64>, CorruptRow> {
        match self.get(name)? {
            Cell::Int(int) => Ok(*int),
            other => Err(self.corrupt(name, format!("{other:?} is not an integer"))),
        }
    }

    fn int(&self, name: &'static str) -> Result<i64, CorruptRow> {
        self.optional_int(name)?
            .ok_or_else(|| self.corrupt(name, "NULL".to_owned()))
    }
}

impl RawRow {
    /// The row in `cells`, read as [`key_reads`] describes.
    pub(super) fn read(cells: &[Cell]) -> Result<RawRow, CorruptRow> {
        let id = match cells.first() {
            Some(Cell::Text(Some(id))) => Some(id.as_str()),
            _ => None,
        };
        let cells = Cells { id, cells };
        Ok(RawRow {
            id: cells.text("id")?,
            digest: cells.bytes("digest")?,
            hint: cells.text("hint")?,
            name: cells.text("name")?,
            owner: cells.text("owner")?,
            environment: cells.text("environment")?,
            scopes: cells.text("scopes")?,
            metadata: cells.text("metadata")?,
            created_at: cells.int("created_at")?,
            expires_at: cells.optional_int("expires_at")?,
            revoked_at: cells.optional_int("revoked_at")?,
            last_used_at: cells.optional_int("last_used_at")?,
            replaced_by: cells.optional_text("replaced_by")?,
            rate_requests: cells.optional_int("rate_requests")?,
            rate_period_ms: cells.optional_int("rate_period_ms")?,
            rate_burst: cells.optional_int("rate_burst")?,
            allowed_networks: cells.optional_text("allowed_networks")?,
        })
    }

    /// The key's digest and everything the store keeps about it.
    pub(super) fn decode(self) -> Result<(KeyDigest, StoredKey), CorruptRow> {
        let corrupt = |column: &'static str, problem: String| CorruptRow {
            id: self.id.clone(),
            column,
            problem,
        };
        let digest = digest_of(&self.digest).ok_or_else(|| {
            corrupt(
                "digest",
                format!("{} bytes instead of 32", self.digest.len()),
            )
        })?;
        let environment: Environment = self.environment.parse().map_err(|_| {
            corrupt(
                "environment",
                format!("{:?} is neither `live` nor `test`", self.environment),
            )
        })?;
        let scopes = self
            .scopes
            .split_ascii_whitespace()
            .map(|name| Scope::new(name.to_owned()))
            .collect::<Result<ScopeSet, _>>()
            .map_err(|err| corrupt("scopes", err.to_string()))?;
        let metadata: BTreeMap<String, String> = serde_json::from_str(&self.metadata)
            .map_err(|err| corrupt("metadata", format!("not a JSON object of strings: {err}")))?;
        let time = |column: &'static str, micros: i64| {
            from_micros(micros).ok_or_else(|| corrupt(column, format!("{micros} is out of range")))
        };
        let optional_time = |column: &'static str, micros: Option<i64>| {
            micros.map(|micros| time(column, micros)).transpose()
        };
        let created_at = time("created_at", self.created_at)?;
        let expires_at = optional_time("expires_at", self.expires_at)?;
        let revoked_at = optional_time("revoked_at", self.revoked_at)?;
        let last_used_at = optional_time("last_used_at", self.last_used_at)?;
        let rate = self
            .rate()
            .map_err(|(column, problem)| corrupt(column, problem))?;
        let networks = self
            .allowed_networks
            .as_deref()
            .map(|text| {
                text.parse::<AllowedNetworks>()
                    .map_err(|err| corrupt("allowed_networks", format!("{text:?}: {err}")))
            })
            .transpose()?;

        let record = KeyRecord::new(KeyId::from(self.id), environment, scopes)
            .with_name(self.name)
            .with_owner(self.owner)
            .with_expires_at(expires_at)
            .with_revoked_at(revoked_at)
            .with_limits(KeyLimits::none().with_rate(rate).with_networks(networks));
        let mut stored = StoredKey::new(record, self.hint, created_at);
        stored.last_used_at = last_used_at;
        stored.metadata = metadata;
        stored.replaced_by = self.replaced_by.map(KeyId::from);
        Ok((digest, stored))
    }

    /// The rate limit in the three rate columns: none when all are `NULL`; otherwise the column
    /// at fault and what is wrong with it.
    fn rate(&self) -> Result<Option<RateLimit>, (&'static str, String)> {
        let (requests, period_ms, burst) =
            match (self.rate_requests, self.rate_period_ms, self.rate_burst) {
                (None, None, None) => return Ok(None),
                (Some(requests), Some(period_ms), Some(burst)) => (requests, period_ms, burst),
                (requests, period_ms, _) => {
                    let column = match (requests, period_ms) {
                        (None, _) => "rate_requests",
                        (_, None) => "rate_period_ms",
                        _ => "rate_burst",
                    };
                    return Err((column, "NULL while other rate columns are set".to_owned()));
                }
            };
        let count = |column: &'static str, count: i64| {
            u32::try_from(count)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    (
                        column,
                        format!("{count} is not a count from 1 to 4294967295"),
                    )
                })
        };
        let requests = count("rate_requests", requests)?;
        let burst = count("rate_burst", burst)?;
        let period = u64::try_from(period_ms)
            .map(Duration::from_millis)
            .map_err(|_| ("rate_period_ms", format!("{period_ms} is negative")))?;
        let rate = RateLimit::new(requests, period)
            .map_err(|err| ("rate_period_ms", format!("{period_ms}: {err}")))?;
        Ok(Some(rate.with_burst(burst)))
    }
}

/// A row that cannot be a key: edited by hand, or written by something other than this crate.
///
/// Stores report it as [`StoreError::Unavailable`] and resolvers as a [`ResolveError`] (so the
/// layer answers `503`, never `401`), with this message.
#[derive(Debug)]
pub(super) struct CorruptRow {
    id: String,
    column: &'static str,
    problem: String,
}

impl fmt::Display for CorruptRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the stored key {:?} is corrupted: column `{}`: {}",
            self.id, self.column, self.problem
        )
    }
}

impl std::error::Error for CorruptRow {}

impl From<CorruptRow> for StoreError {
    fn from(err: CorruptRow) -> Self {
        StoreError::unavailable(err)
    }
}

impl From<CorruptRow> for ResolveError {
    fn from(err: CorruptRow) -> Self {
        ResolveError::new(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> RawRow {
        RawRow {
            id: "key_1".to_owned(),
            digest: vec![7; 32],
            hint: "om_live_…abcd".to_owned(),
            name: "Production".to_owned(),
            owner: "acct_1".to_owned(),
            environment: "live".to_owned(),
            scopes: "orders:read products:read".to_owned(),
            metadata: r#"{"team":"integrations"}"#.to_owned(),
            created_at: 1_700_000_000_000_000,
            expires_at: Some(1_800_000_000_000_001),
            revoked_at: None,
            last_used_at: Some(-1),
            replaced_by: None,
            rate_requests: Some(100),
            rate_period_ms: Some(1000),
            rate_burst: Some(20),
            allowed_networks: Some("203.0.113.0/24 2001:db8::/32".to_owned()),
        }
    }

    #[test]
    fn a_sound_row_decodes() {
        let (digest, stored) = row().decode().unwrap();
        assert_eq!(digest.as_bytes(), &[7; 32]);
        assert_eq!(stored.record.scopes.len(), 2);
        assert_eq!(stored.metadata["team"], "integrations");
        assert_eq!(
            stored.record.expires_at,
            Some(UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_001))
        );
        assert_eq!(
            stored.last_used_at,
            Some(UNIX_EPOCH - Duration::from_micros(1))
        );
        let limits = &stored.record.limits;
        assert_eq!(limits.rate.unwrap().to_string(), "100/s burst 20");
        let networks = limits.networks.as_ref().unwrap();
        assert_eq!(networks.to_string(), "203.0.113.0/24 2001:db8::/32");
        let mut unlimited = row();
        unlimited.rate_requests = None;
        unlimited.rate_period_ms = None;
        unlimited.rate_burst = None;
        unlimited.allowed_networks = None;
        assert!(unlimited.decode().unwrap().1.record.limits.is_none());
    }

    #[test]
    fn limits_are_written_as_they_are_read() {
        let (_, stored) = row().decode().unwrap();
        let values = LimitValues::new(&stored.record.limits);
        let params = format!("{:?}", values.params());
        assert_eq!(
            params,
            r#"[Int(Some(100)), Int(Some(1000)), Int(Some(20)), Text(Some("203.0.113.0/24 2001:db8::/32"))]"#
        );
        let none = LimitValues::new(&KeyLimits::none());
        assert_eq!(
            format!("{:?}", none.params()),
            "[Int(None), Int(None), Int(None), Text(None)]"
        );
        // Periods are kept to the millisecond, rounded up.
        let rate = RateLimit::new(NonZeroU32::MIN, Duration::from_micros(1500)).unwrap();
        let normalized = normalize_limits(KeyLimits::none().with_rate(rate));
        assert_eq!(normalized.rate.unwrap().period(), Duration::from_millis(2));
    }

    #[test]
    fn each_corruption_names_the_key_and_the_column() {
        type Corrupt = fn(&mut RawRow);
        let cases: [(Corrupt, &str); 14] = [
            (|r| r.digest = vec![1; 31], "column `digest`: 31 bytes"),
            (
                |r| r.environment = "prod".to_owned(),
                "column `environment`",
            ),
            (
                |r| r.scopes = "orders:read bad".to_owned(),
                "column `scopes`",
            ),
            (|r| r.metadata = "[1]".to_owned(), "column `metadata`"),
            (
                |r| r.metadata = r#"{"a":1}"#.to_owned(),
                "column `metadata`",
            ),
            (|r| r.rate_requests = Some(0), "column `rate_requests`: 0"),
            (|r| r.rate_requests = Some(-5), "column `rate_requests`: -5"),
            (|r| r.rate_burst = Some(i64::MAX), "column `rate_burst`"),
            (
                |r| r.rate_period_ms = Some(-1),
                "column `rate_period_ms`: -1",
            ),
            (|r| r.rate_period_ms = Some(0), "column `rate_period_ms`: 0"),
            (
                |r| r.rate_period_ms = Some(86_400_001),
                "column `rate_period_ms`",
            ),
            (|r| r.rate_period_ms = None, "column `rate_period_ms`: NULL"),
            (|r| r.rate_requests = None, "column `rate_requests`: NULL"),
            (
                |r| r.allowed_networks = Some("10.0.0.0/33".to_owned()),
                "column `allowed_networks`",
            ),
        ];
        for (corrupt, expected) in cases {
            let mut raw = row();
            corrupt(&mut raw);
            let message = raw.decode().unwrap_err().to_string();
            assert!(message.contains("\"key_1\""), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn times_round_down_to_the_microsecond_on_both_sides_of_the_epoch() {
        let after = UNIX_EPOCH + Duration::from_nanos(1_500);
        assert_eq!(to_micros(after), 1);
        let before = UNIX_EPOCH - Duration::from_nanos(1_500);
        assert_eq!(to_micros(before), -2);
        assert_eq!(normalize(before), UNIX_EPOCH - Duration::from_micros(2));
        for micros in [0, 1, -1, MIN_MICROS, MAX_MICROS, 1_700_000_000_123_456] {
            assert_eq!(to_micros(from_micros(micros).unwrap()), micros);
        }
    }

    #[test]
    fn days_are_kept_within_years_1_to_9999() {
        assert_eq!(
            Day::from_days_since_epoch(MIN_DAY).to_string(),
            "0001-01-01"
        );
        assert_eq!(
            Day::from_days_since_epoch(MAX_DAY).to_string(),
            "9999-12-31"
        );
        assert_eq!(
            to_days(Day::from_days_since_epoch(i32::MIN)),
            i64::from(MIN_DAY)
        );
        assert_eq!(
            to_days(Day::from_days_since_epoch(i32::MAX)),
            i64::from(MAX_DAY)
        );
        assert_eq!(to_days(Day::from_days_since_epoch(-1)), -1);
    }

    #[test]
    fn times_beyond_year_9999_are_clamped() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(to_micros(far), MAX_MICROS);
    }
}
