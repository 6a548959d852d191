//! The audit trail in the SQL stores: the table `api_key_audit`, written in the transaction of
//! each change ([`write`]) and read a page at a time ([`read`]).
//!
//! Reading never trusts the database: a row edited by hand, with an unknown action, an address
//! that is not an IP address or a time out of range, gives a [`CorruptAudit`] error naming the
//! entry and the column, never a panic.

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use super::backend::{Cell, ColumnType, Param, Read};
use super::table::{from_micros, to_micros, unavailable, AUDIT};
use super::{SqlDatabase, SqlStore};
use crate::resolver::KeyId;
use crate::store::{Actor, AuditAction, AuditEvent, AuditQuery, StoreError};

/// The audit statements of one store, with its table name in them.
pub(super) struct AuditStatements {
    insert: String,
    /// The columns of an entry, from the table: a query adds its filters and its order.
    select: String,
}

/// How each column of [`AuditStatements::select`] is read.
const READS: [Read; 9] = [
    Read::Int,
    Read::Int,
    Read::Text,
    Read::Text,
    Read::Text,
    Read::Text,
    Read::Text,
    Read::Text,
    Read::Text,
];

impl AuditStatements {
    pub(super) fn new<DB: SqlDatabase>(namespace: Option<&str>) -> Self {
        let audit = DB::table(namespace, AUDIT);
        let p = DB::param;
        AuditStatements {
            insert: format!(
                "INSERT INTO {audit} \
                 (at, action, key_id, owner, key_name, actor, address, related_key) \
                 VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
                DB::value(1, ColumnType::Time),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7),
                p(8)
            ),
            select: format!(
                "SELECT seq, {}, action, key_id, owner, key_name, actor, address, related_key \
                 FROM {audit}",
                DB::select("at", ColumnType::Time)
            ),
        }
    }

    /// The statement for `query`: only the filters it asks for, so that each can use its
    /// index. Its parameters are, in order, the owner, the key and the `before` cursor asked
    /// for, then the page size.
    fn query<DB: SqlDatabase>(&self, query: &AuditQuery) -> String {
        let mut filters = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            DB::param(n)
        };
        if query.owner_filter().is_some() {
            filters.push(format!("owner = {}", next()));
        }
        if query.key_filter().is_some() {
            filters.push(format!("key_id = {}", next()));
        }
        if query.before_seq().is_some() {
            filters.push(format!("seq < {}", next()));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        };
        format!("{}{filter} ORDER BY seq DESC LIMIT {}", self.select, next())
    }
}

/// One entry to write: `action` on the key `key_id` (of `owner`, named `key_name`) by `actor`
/// at `at`.
pub(super) struct Entry<'a> {
    pub(super) at: SystemTime,
    pub(super) action: AuditAction,
    pub(super) key_id: &'a str,
    pub(super) owner: &'a str,
    pub(super) key_name: &'a str,
    pub(super) actor: &'a Actor,
    pub(super) related_key: Option<&'a str>,
}

/// Writes `entry` in the transaction (or on the connection) of the change it records.
pub(super) async fn write<DB: SqlDatabase>(
    connection: &mut DB::Connection,
    statements: &AuditStatements,
    entry: Entry<'_>,
) -> Result<(), StoreError> {
    let address = entry.actor.address().map(|address| address.to_string());
    let params = [
        Param::Int(Some(to_micros(entry.at))),
        Param::Text(Some(entry.action.as_str())),
        Param::Text(Some(entry.key_id)),
        Param::Text(Some(entry.owner)),
        Param::Text(Some(entry.key_name)),
        Param::Text(Some(entry.actor.id())),
        Param::Text(address.as_deref()),
        Param::Text(entry.related_key),
    ];
    DB::execute(connection, &statements.insert, &params)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// The entries `query` asks for, newest first.
pub(super) async fn read<DB: SqlDatabase>(
    store: &SqlStore<DB>,
    query: &AuditQuery,
) -> Result<Vec<AuditEvent>, StoreError> {
    let statements = &store.statements.audit;
    let sql = statements.query::<DB>(query);
    let mut params = Vec::new();
    if let Some(owner) = query.owner_filter() {
        params.push(Param::Text(Some(owner)));
    }
    if let Some(key) = query.key_filter() {
        params.push(Param::Text(Some(key.as_str())));
    }
    if let Some(before) = query.before_seq() {
        // Every `seq` is below `i64::MAX`, so a larger cursor filters nothing out.
        params.push(Param::Int(Some(i64::try_from(before).unwrap_or(i64::MAX))));
    }
    params.push(Param::Int(Some(i64::from(query.page_size()))));
    let mut connection = store.connection().await?;
    let rows = DB::fetch(&mut connection, &sql, &params, &READS)
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|row| decode(row).map_err(StoreError::unavailable))
        .collect()
}

/// An entry read back, checked.
fn decode(row: &[Cell]) -> Result<AuditEvent, CorruptAudit> {
    let [seq, at, action, key_id, owner, key_name, actor, address, related_key] = row else {
        return Err(CorruptAudit::new(None, "*", format!("{row:?}")));
    };
    let seq = match seq {
        Cell::Int(Some(seq)) => u64::try_from(*seq)
            .map_err(|_| CorruptAudit::new(None, "seq", format!("{seq} is negative")))?,
        other => return Err(CorruptAudit::new(None, "seq", format!("{other:?}"))),
    };
    let corrupt = |column, problem| CorruptAudit::new(Some(seq), column, problem);
    let text = |column: &'static str, cell: &Cell| match cell {
        Cell::Text(Some(text)) => Ok(text.clone()),
        other => Err(corrupt(column, format!("{other:?} is not text"))),
    };
    let optional_text = |column: &'static str, cell: &Cell| match cell {
        Cell::Text(text) => Ok(text.clone()),
        other => Err(corrupt(column, format!("{other:?} is not text"))),
    };
    let at = match at {
        Cell::Int(Some(micros)) => from_micros(*micros)
            .ok_or_else(|| corrupt("at", format!("{micros} is out of range")))?,
        other => return Err(corrupt("at", format!("{other:?} is not a time"))),
    };
    let action_name = text("action", action)?;
    let action = AuditAction::from_name(&action_name)
        .ok_or_else(|| corrupt("action", format!("{action_name:?} is no action")))?;
    let address = optional_text("address", address)?
        .map(|address| {
            address
                .parse::<IpAddr>()
                .map_err(|_| corrupt("address", format!("{address:?} is not an IP address")))
        })
        .transpose()?;
    Ok(AuditEvent {
        seq,
        at,
        action,
        key_id: KeyId::from(text("key_id", key_id)?),
        owner: text("owner", owner)?,
        key_name: text("key_name", key_name)?,
        actor: text("actor", actor)?,
        address,
        related_key: optional_text("related_key", related_key)?.map(KeyId::from),
    })
}

/// An audit row that cannot be what the crate wrote: edited by hand, or by something else.
///
/// The store reports it as [`StoreError::Unavailable`], with this message.
#[derive(Debug)]
struct CorruptAudit {
    seq: Option<u64>,
    column: &'static str,
    problem: String,
}

impl CorruptAudit {
    fn new(seq: Option<u64>, column: &'static str, problem: String) -> Self {
        CorruptAudit {
            seq,
            column,
            problem,
        }
    }
}

impl fmt::Display for CorruptAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the audit entry ")?;
        match self.seq {
            Some(seq) => write!(f, "{seq}")?,
            None => f.write_str("?")?,
        }
        write!(
            f,
            " in `{AUDIT}` is corrupted: column `{}`: {}",
            self.column, self.problem
        )
    }
}

impl std::error::Error for CorruptAudit {}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Vec<Cell> {
        let text = |text: &str| Cell::Text(Some(text.to_owned()));
        vec![
            Cell::Int(Some(7)),
            Cell::Int(Some(1_700_000_000_000_000)),
            text("rotated"),
            text("key_1"),
            text("acct_1"),
            text("Production"),
            text("user:42"),
            text("2001:db8::1"),
            text("key_2"),
        ]
    }

    #[test]
    fn a_sound_row_decodes() {
        let event = decode(&row()).unwrap();
        assert_eq!(event.seq, 7);
        assert_eq!(event.action, AuditAction::Rotated);
        assert_eq!(event.address, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(event.related_key, Some(KeyId::from("key_2")));
        let mut bare = row();
        bare[7] = Cell::Text(None);
        bare[8] = Cell::Text(None);
        let event = decode(&bare).unwrap();
        assert_eq!((event.address, event.related_key), (None, None));
    }

    #[test]
    fn each_corruption_names_the_entry_and_the_column() {
        let cases: [(usize, Cell, &str); 6] = [
            (
                0,
                Cell::Int(Some(-1)),
                "entry ? in `api_key_audit` is corrupted: column `seq`",
            ),
            (
                1,
                Cell::Int(None),
                "entry 7 in `api_key_audit` is corrupted: column `at`",
            ),
            (2, Cell::Text(Some("exploded".into())), "column `action`"),
            (2, Cell::Text(None), "column `action`"),
            (7, Cell::Text(Some("localhost".into())), "column `address`"),
            (6, Cell::Int(Some(1)), "column `actor`"),
        ];
        for (index, cell, expected) in cases {
            let mut row = row();
            row[index] = cell;
            let message = decode(&row).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
        let message = decode(&row()[..3]).unwrap_err().to_string();
        assert!(message.contains("corrupted"), "{message}");
    }
}
