//! What `usage` and `prune-usage` print: one key's days as a table (with a bar per day where a
//! person looks at it) or JSON, and the keys with their totals and last use.
//!
//! Like everything the tool prints, no digest and no key: ids, names and owners are escaped as
//! [`output`](crate::output) escapes them.

use comfy_table::{CellAlignment, Table};
use serde::Serialize;
use tower_api_key::{DailyUsage, Day, KeyOutcome, KeyUsageSummary, OutcomeCounts, StoredKey};

use crate::output::{finish, json, new_table, or_none, printable, quoted};
use crate::time::format_utc;

/// The width of the busiest day's bar, in characters.
const BAR_WIDTH: u64 = 24;
/// A bar's last character, by eighths of a character.
const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/// Requests by outcome, as the JSON output names them.
#[derive(Serialize)]
struct CountsJson {
    allowed: u64,
    insufficient_scope: u64,
    revoked: u64,
    expired: u64,
    rate_limited: u64,
    total: u64,
}

impl From<&OutcomeCounts> for CountsJson {
    fn from(counts: &OutcomeCounts) -> Self {
        CountsJson {
            allowed: counts.get(KeyOutcome::Allowed),
            insufficient_scope: counts.get(KeyOutcome::InsufficientScope),
            revoked: counts.get(KeyOutcome::Revoked),
            expired: counts.get(KeyOutcome::Expired),
            rate_limited: counts.get(KeyOutcome::RateLimited),
            total: counts.total(),
        }
    }
}

/// One day of `usage <id> --json`.
#[derive(Serialize)]
struct DayJson {
    day: String,
    #[serde(flatten)]
    counts: CountsJson,
}

/// `usage <id> --json`.
#[derive(Serialize)]
struct SeriesJson<'a> {
    id: &'a str,
    name: &'a str,
    last_used_at: Option<String>,
    /// The first day, `YYYY-MM-DD` (UTC).
    from: String,
    /// The last day, today.
    to: String,
    days: Vec<DayJson>,
    totals: CountsJson,
}

/// One key of `usage --json`.
#[derive(Serialize)]
struct SummaryJson<'a> {
    id: &'a str,
    name: &'a str,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
    never_used: bool,
    /// Not let through on any of the days.
    unused: bool,
    totals: CountsJson,
}

/// `usage --json`.
#[derive(Serialize)]
struct SummariesJson<'a> {
    owner: Option<&'a str>,
    from: String,
    to: String,
    keys: Vec<SummaryJson<'a>>,
}

/// Every count of `series`, added up.
fn totals(series: &[DailyUsage]) -> OutcomeCounts {
    let mut totals = OutcomeCounts::default();
    for day in series {
        totals.add_all(&day.counts);
    }
    totals
}

/// The days of `series`, the first one, the last one.
fn span(series: &[DailyUsage]) -> Option<(Day, Day)> {
    Some((series.first()?.day, series.last()?.day))
}

pub(crate) fn series_json(
    key: &StoredKey,
    series: &[DailyUsage],
) -> Result<String, serde_json::Error> {
    let (from, to) = span(series).map_or((String::new(), String::new()), |(from, to)| {
        (from.to_string(), to.to_string())
    });
    json(&SeriesJson {
        id: key.record.id.as_str(),
        name: &key.record.name,
        last_used_at: key.last_used_at.map(format_utc),
        from,
        to,
        days: series
            .iter()
            .map(|day| DayJson {
                day: day.day.to_string(),
                counts: CountsJson::from(&day.counts),
            })
            .collect(),
        totals: CountsJson::from(&totals(series)),
    })
}

/// The columns of a key's days, after the date.
const OUTCOME_COLUMNS: [(&str, KeyOutcome); 5] = [
    ("ALLOWED", KeyOutcome::Allowed),
    ("INSUFFICIENT SCOPE", KeyOutcome::InsufficientScope),
    ("REVOKED", KeyOutcome::Revoked),
    ("EXPIRED", KeyOutcome::Expired),
    ("RATE LIMITED", KeyOutcome::RateLimited),
];

/// A key's days as a table, a day a row and the totals last; with `bars`, each day's total
/// drawn as a bar as long as the busiest day's allows.
pub(crate) fn series_text(key: &StoredKey, series: &[DailyUsage], bars: bool) -> String {
    let record = &key.record;
    let mut text = format!(
        "{} ({}): requests per day",
        printable(record.id.as_str()),
        quoted(&record.name)
    );
    if let Some((from, to)) = span(series) {
        text.push_str(&format!(" from {from} to {to} (UTC)"));
    }
    let last_used = key.last_used_at.map_or("never".to_owned(), format_utc);
    text.push_str(&format!(". Last used: {last_used}.\n\n"));

    let mut header: Vec<&str> = vec!["DATE"];
    header.extend(OUTCOME_COLUMNS.iter().map(|(name, _)| *name));
    header.push("TOTAL");
    if bars {
        header.push("");
    }
    let mut table = new_table(header);
    let busiest = series
        .iter()
        .map(|day| day.counts.total())
        .max()
        .unwrap_or(0);
    let row = |label: String, counts: &OutcomeCounts, bar: Option<String>| {
        let mut row = vec![label];
        row.extend(
            OUTCOME_COLUMNS
                .iter()
                .map(|(_, outcome)| counts.get(*outcome).to_string()),
        );
        row.push(counts.total().to_string());
        row.extend(bar);
        row
    };
    for day in series {
        let bar = bars.then(|| bar(day.counts.total(), busiest));
        table.add_row(row(day.day.to_string(), &day.counts, bar));
    }
    table.add_row(row(
        "TOTAL".to_owned(),
        &totals(series),
        bars.then(String::new),
    ));
    align_right(&mut table, 1..=OUTCOME_COLUMNS.len() + 1);
    text.push_str(&finish(&table));
    text
}

/// A bar for `count` out of `busiest`: [`BAR_WIDTH`] characters for the busiest, at least an
/// eighth of one for any request, none for none.
fn bar(count: u64, busiest: u64) -> String {
    if count == 0 || busiest == 0 {
        return String::new();
    }
    let eighths = (u128::from(count) * u128::from(BAR_WIDTH * 8)).div_ceil(u128::from(busiest));
    // At most BAR_WIDTH * 8, since count <= busiest.
    let eighths = usize::try_from(eighths).unwrap_or(0);
    let mut bar = "█".repeat(eighths / 8);
    bar.push_str(EIGHTHS[eighths % 8]);
    bar
}

pub(crate) fn summary_json(
    owner: Option<&str>,
    from: Day,
    to: Day,
    summary: &[KeyUsageSummary],
) -> Result<String, serde_json::Error> {
    json(&SummariesJson {
        owner,
        from: from.to_string(),
        to: to.to_string(),
        keys: summary
            .iter()
            .map(|key| SummaryJson {
                id: key.id.as_str(),
                name: &key.name,
                created_at: format_utc(key.created_at),
                last_used_at: key.last_used_at.map(format_utc),
                revoked_at: key.revoked_at.map(format_utc),
                never_used: key.never_used(),
                unused: key.unused_since(from.start()),
                totals: CountsJson::from(&key.totals),
            })
            .collect(),
    })
}

/// The keys as a table, in the order given (newest first), with their totals from `from` to
/// `to` and a note for those never used, not used on those days, or revoked.
pub(crate) fn summary_text(
    owner: Option<&str>,
    from: Day,
    to: Day,
    summary: &[KeyUsageSummary],
) -> String {
    let whose = owner.map_or("Every key".to_owned(), |owner| {
        format!("The keys of {}", quoted(owner))
    });
    let days = i64::from(to.days_since_epoch()) - i64::from(from.days_since_epoch()) + 1;
    let mut text = format!(
        "{whose}: requests from {from} to {to} (UTC), {}.\n\n",
        plural(days, "day")
    );
    if summary.is_empty() {
        text.push_str("No keys.\n");
        return text;
    }
    let mut table = new_table(vec![
        "ID",
        "NAME",
        "LAST USED",
        "ALLOWED",
        "REFUSED",
        "TOTAL",
        "NOTE",
    ]);
    for key in summary {
        let allowed = key.totals.get(KeyOutcome::Allowed);
        let total = key.totals.total();
        let mut notes = Vec::new();
        if key.revoked_at.is_some() {
            notes.push("revoked".to_owned());
        }
        if key.never_used() {
            notes.push("never used".to_owned());
        } else if key.unused_since(from.start()) {
            notes.push(format!("not used in {}", plural(days, "day")));
        }
        table.add_row(vec![
            printable(key.id.as_str()),
            printable(&key.name),
            key.last_used_at.map_or_else(|| "-".to_owned(), format_utc),
            allowed.to_string(),
            total.saturating_sub(allowed).to_string(),
            total.to_string(),
            or_none(&notes.join(", ")),
        ]);
    }
    align_right(&mut table, 3..=5);
    text.push_str(&finish(&table));
    text
}

pub(crate) fn pruned_json(deleted: u64, before: Day) -> Result<String, serde_json::Error> {
    json(&serde_json::json!({ "deleted": deleted, "before": before.to_string() }))
}

pub(crate) fn pruned_text(deleted: u64, before: Day) -> String {
    format!(
        "Deleted {} of the days before {before} (UTC). Last uses are kept.\n",
        plural(i64::try_from(deleted).unwrap_or(i64::MAX), "daily count")
    )
}

/// `1 day`, `2 days`.
fn plural(count: i64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn align_right(table: &mut Table, columns: std::ops::RangeInclusive<usize>) {
    for index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tower_api_key::{Environment, KeyRecord, ScopeSet};

    use super::*;

    fn key(id: &str, name: &str) -> StoredKey {
        let record = KeyRecord::new(id, Environment::Live, ScopeSet::empty()).with_name(name);
        StoredKey::new(
            record,
            "om_live_…x7Qa",
            UNIX_EPOCH + Duration::from_secs(1_795_929_660),
        )
    }

    fn counts(allowed: u64, revoked: u64) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        counts.add(KeyOutcome::Allowed, allowed);
        counts.add(KeyOutcome::Revoked, revoked);
        counts
    }

    fn series() -> Vec<DailyUsage> {
        let first = Day::from_days_since_epoch(20_786);
        vec![
            DailyUsage::new(first, counts(120, 0)),
            DailyUsage::new(first.add_days(1), counts(0, 0)),
            DailyUsage::new(first.add_days(2), counts(1, 0)),
            DailyUsage::new(first.add_days(3), counts(237, 3)),
        ]
    }

    #[test]
    fn bars_are_scaled_to_the_busiest_day() {
        assert_eq!(bar(0, 10), "");
        assert_eq!(bar(10, 10), "█".repeat(24));
        assert_eq!(bar(5, 10), "█".repeat(12));
        // Any request shows.
        assert_eq!(bar(1, 1_000_000), "▏");
        assert_eq!(bar(u64::MAX, u64::MAX), "█".repeat(24));
        assert_eq!(bar(1, 16), "█▌");
    }

    #[test]
    fn a_keys_days_are_a_table_with_totals() {
        let text = series_text(&key("key_1", "Production"), &series(), false);
        assert_eq!(
            text,
            "key_1 (\"Production\"): requests per day from 2026-11-29 to 2026-12-02 (UTC). \
             Last used: never.\n\
             \n\
             DATE        ALLOWED  INSUFFICIENT SCOPE  REVOKED  EXPIRED  RATE LIMITED  TOTAL\n\
             2026-11-29      120                   0        0        0             0    120\n\
             2026-11-30        0                   0        0        0             0      0\n\
             2026-12-01        1                   0        0        0             0      1\n\
             2026-12-02      237                   0        3        0             0    240\n\
             TOTAL           358                   0        3        0             0    361\n"
        );
        let with_bars = series_text(&key("key_1", "Production"), &series(), true);
        let lines: Vec<&str> = with_bars.lines().collect();
        assert!(lines[3].ends_with("   120  ████████████"), "{with_bars}");
        assert!(lines[4].ends_with("     0"), "{with_bars}");
        assert!(lines[5].ends_with("     1  ▏"), "{with_bars}");
        assert!(
            lines[6].ends_with(&format!("   240  {}", "█".repeat(24))),
            "{with_bars}"
        );
        assert!(lines[7].ends_with("   361"), "{with_bars}");
    }

    #[test]
    fn the_json_series_has_every_day_and_the_totals() {
        let value: serde_json::Value =
            serde_json::from_str(&series_json(&key("key_1", "Production"), &series()).unwrap())
                .unwrap();
        assert_eq!(value["from"], "2026-11-29");
        assert_eq!(value["to"], "2026-12-02");
        assert_eq!(value["days"].as_array().unwrap().len(), 4);
        assert_eq!(
            value["days"][3],
            serde_json::json!({
                "day": "2026-12-02",
                "allowed": 237,
                "insufficient_scope": 0,
                "revoked": 3,
                "expired": 0,
                "rate_limited": 0,
                "total": 240,
            })
        );
        assert_eq!(value["totals"]["total"], 361);
        assert_eq!(value["last_used_at"], serde_json::Value::Null);
    }

    #[test]
    fn hostile_ids_and_names_are_escaped() {
        let text = series_text(&key("key_\u{1b}[2J", "evil\u{9b}31m"), &series(), true);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
        assert!(
            text.starts_with("key_\\u{1b}[2J (\"evil\\u{9b}31m\")"),
            "{text}"
        );
    }
}
