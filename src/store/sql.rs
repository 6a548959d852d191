//! What the SQL stores share: how a key's fields become column values and back.
//!
//! Both stores read a row into a [`RawRow`] of plain values (timestamps as signed microseconds
//! since the Unix epoch, UTC) and decode it here, so that they agree on every rule and on every
//! error message. Decoding never trusts the database: a row someone edited by hand, with an
//! unknown environment, a malformed scope or a digest of the wrong length, gives a
//! [`CorruptRow`] error naming the key and the column, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{prepare, CreatedKey, NewKey, StoreError, StoredKey};
use crate::key::{Environment, KeyDigest, KeyFormat};
use crate::resolver::{KeyId, KeyRecord, ResolveError};
use crate::scope::{Scope, ScopeCatalog, ScopeSet};

/// A schema change shipped with the crate, applied once by a store's `migrate`.
pub(crate) struct Migration {
    /// Applied in increasing order; recorded once applied.
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    /// One or more statements.
    pub(crate) sql: &'static str,
}

/// A database failure, as the lifecycle calls report it.
pub(crate) fn unavailable(err: sqlx::Error) -> StoreError {
    StoreError::unavailable(err)
}

/// Like [`prepare`], with every time cut to what the database keeps, so that the key handed back
/// is exactly the key read back later.
pub(crate) fn prepare_row(
    format: &KeyFormat,
    mut new: NewKey,
    now: SystemTime,
    catalog: Option<&ScopeCatalog>,
) -> Result<CreatedKey, StoreError> {
    new.expires_at = new.expires_at.map(normalize);
    prepare(format, new, normalize(now), catalog)
}

/// The earliest time the SQL stores keep: 0001-01-01T00:00:00Z, in microseconds since the epoch.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The latest time the SQL stores keep: 9999-12-31T23:59:59.999999Z, in microseconds.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// `at` as microseconds since the Unix epoch, rounded down and clamped to years 1 to 9999,
/// which both SQLite integers and PostgreSQL `timestamptz` hold exactly.
pub(crate) fn to_micros(at: SystemTime) -> i64 {
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
pub(crate) fn from_micros(micros: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// `at` as the SQL stores keep it: to the microsecond, within years 1 to 9999.
pub(crate) fn normalize(at: SystemTime) -> SystemTime {
    // Every value `to_micros` returns is in range for `SystemTime` on the platforms Rust
    // supports; should one not be, the time is kept as it was.
    from_micros(to_micros(at)).unwrap_or(at)
}

/// The digest in a `digest` column; `None` if it is not 32 bytes long, as no key's is.
pub(crate) fn digest_of(bytes: &[u8]) -> Option<KeyDigest> {
    <[u8; 32]>::try_from(bytes).ok().map(KeyDigest::from_bytes)
}

/// Scopes as stored: their names, space-separated, in sorted order.
pub(crate) fn encode_scopes(scopes: &ScopeSet) -> String {
    scopes.to_string()
}

/// Metadata as stored: a JSON object of strings.
pub(crate) fn encode_metadata(metadata: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(metadata).map_err(StoreError::unavailable)
}

/// A key's row as read from the database, before any of it is trusted.
#[derive(Debug)]
pub(crate) struct RawRow {
    pub(crate) id: String,
    pub(crate) digest: Vec<u8>,
    pub(crate) hint: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) environment: String,
    pub(crate) scopes: String,
    pub(crate) metadata: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
}

impl RawRow {
    /// The key's digest and everything the store keeps about it.
    pub(crate) fn decode(self) -> Result<(KeyDigest, StoredKey), CorruptRow> {
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

        let record = KeyRecord::new(KeyId::from(self.id), environment, scopes)
            .with_name(self.name)
            .with_owner(self.owner)
            .with_expires_at(expires_at)
            .with_revoked_at(revoked_at);
        let mut stored = StoredKey::new(record, self.hint, created_at);
        stored.last_used_at = last_used_at;
        stored.metadata = metadata;
        Ok((digest, stored))
    }
}

/// A row that cannot be a key: edited by hand, or written by something other than this crate.
///
/// Stores report it as [`StoreError::Unavailable`] and resolvers as a [`ResolveError`] (so the
/// layer answers `503`, never `401`), with this message.
#[derive(Debug)]
pub(crate) struct CorruptRow {
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
    }

    #[test]
    fn each_corruption_names_the_key_and_the_column() {
        type Corrupt = fn(&mut RawRow);
        let cases: [(Corrupt, &str); 5] = [
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
    fn times_beyond_year_9999_are_clamped() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(to_micros(far), MAX_MICROS);
    }
}
