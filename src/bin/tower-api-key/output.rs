//! What the tool prints: text for people (a table, or one field a line) and JSON for scripts.
//!
//! Nothing here ever sees a digest. The plaintext of a new key reaches the output only through
//! [`created_text`], [`created_json`], [`rotated_text`] and [`rotated_json`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;
use tower_api_key::{AuditEvent, CreatedKey, KeyLimits, RateLimit, Rotation, StoredKey};

use crate::time::format_utc;

/// Printed to stderr whenever a key is shown.
pub(crate) const SHOWN_ONCE: &str = "WARNING: this is the only time the new key is shown: the \
     store keeps only its SHA-256 digest, so it cannot be shown again. Copy it now.";

/// What a service in another process does after a revoke or a delete.
const OTHER_PROCESSES: &str = "Running services on this store refuse it from their next request \
     on, in every process and on every instance.";

/// A key as the JSON output shows it: every field a store keeps, except the digest.
#[derive(Serialize)]
struct KeyJson<'a> {
    id: &'a str,
    name: &'a str,
    owner: &'a str,
    environment: &'static str,
    hint: &'a str,
    scopes: Vec<&'a str>,
    /// `active`, `revoked` or `expired`.
    status: &'static str,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
    /// The key that replaced this one in a rotation.
    replaced_by: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
    /// `null` for no rate limit of the key's own.
    rate_limit: Option<RateLimitJson>,
    /// The networks the key may be used from, in CIDR form; `null` for anywhere.
    allowed_networks: Option<Vec<String>>,
}

/// A rate limit as the JSON output shows it: its parts, and its text as `--rate` takes it.
#[derive(Serialize)]
struct RateLimitJson {
    requests: u32,
    period_ms: u64,
    burst: u32,
    text: String,
}

impl RateLimitJson {
    fn new(rate: &RateLimit) -> Self {
        RateLimitJson {
            requests: rate.requests().get(),
            // A rate's period is at most a day.
            period_ms: u64::try_from(rate.period().as_millis()).unwrap_or(u64::MAX),
            burst: rate.burst().get(),
            text: rate.to_string(),
        }
    }
}

impl<'a> KeyJson<'a> {
    fn new(key: &'a StoredKey, now: SystemTime) -> Self {
        let record = &key.record;
        KeyJson {
            id: record.id.as_str(),
            name: &record.name,
            owner: &record.owner,
            environment: record.environment.as_str(),
            hint: &key.hint,
            scopes: record.scopes.iter().map(|scope| scope.as_str()).collect(),
            status: status(key, now),
            created_at: format_utc(key.created_at),
            expires_at: record.expires_at.map(format_utc),
            last_used_at: key.last_used_at.map(format_utc),
            revoked_at: record.revoked_at.map(format_utc),
            replaced_by: key.replaced_by.as_ref().map(|id| id.as_str()),
            metadata: &key.metadata,
            rate_limit: record.limits.rate.as_ref().map(RateLimitJson::new),
            allowed_networks: record.limits.networks.as_ref().map(|networks| {
                let networks = networks.networks().iter();
                networks.map(ToString::to_string).collect()
            }),
        }
    }
}

/// The output of `create --json`: the plaintext, named so that nobody mistakes it for an id.
#[derive(Serialize)]
struct CreatedJson<'a> {
    plaintext_key: &'a str,
    key: KeyJson<'a>,
}

/// The output of `rotate --json`.
#[derive(Serialize)]
struct RotatedJson<'a> {
    plaintext_key: &'a str,
    new: KeyJson<'a>,
    old: KeyJson<'a>,
}

/// `active`, `revoked` or `expired`, at `now`.
fn status(key: &StoredKey, now: SystemTime) -> &'static str {
    if key.record.revoked_at.is_some() {
        "revoked"
    } else if key.record.is_expired_at(now) {
        "expired"
    } else {
        "active"
    }
}

/// `value` as indented JSON, ending with a newline, with no control character left raw.
///
/// serde_json escapes the control characters below U+0020 but writes DEL and the C1 controls
/// (U+007F to U+009F, among them the one-character CSI) as they are, and some terminals act on
/// those too. Outside strings JSON holds only ASCII below DEL, so they can only be in a string,
/// where `\uXXXX` reads back as the same character.
pub(crate) fn json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    let raw = serde_json::to_string_pretty(value)?;
    let mut text = String::with_capacity(raw.len() + 1);
    for c in raw.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            // Writing to a `String` cannot fail.
            let _ = write!(text, "\\u{:04x}", u32::from(c));
        } else {
            text.push(c);
        }
    }
    text.push('\n');
    Ok(text)
}

pub(crate) fn created_json(
    created: &CreatedKey,
    now: SystemTime,
) -> Result<String, serde_json::Error> {
    json(&CreatedJson {
        plaintext_key: created.key.expose_secret(),
        key: KeyJson::new(&created.stored, now),
    })
}

pub(crate) fn rotated_json(
    rotation: &Rotation,
    now: SystemTime,
) -> Result<String, serde_json::Error> {
    json(&RotatedJson {
        plaintext_key: rotation.new.key.expose_secret(),
        new: KeyJson::new(&rotation.new.stored, now),
        old: KeyJson::new(&rotation.old, now),
    })
}

pub(crate) fn key_json(key: &StoredKey, now: SystemTime) -> Result<String, serde_json::Error> {
    json(&KeyJson::new(key, now))
}

pub(crate) fn deleted_json(id: &str) -> Result<String, serde_json::Error> {
    json(&serde_json::json!({ "deleted": id }))
}

pub(crate) fn keys_json(keys: &[StoredKey], now: SystemTime) -> Result<String, serde_json::Error> {
    json(
        &keys
            .iter()
            .map(|key| KeyJson::new(key, now))
            .collect::<Vec<_>>(),
    )
}

/// An audit entry as the JSON output shows it: the columns of [`audit_table`], and the owner.
#[derive(Serialize)]
struct AuditJson<'a> {
    seq: u64,
    at: String,
    action: &'static str,
    key_id: &'a str,
    owner: &'a str,
    key_name: &'a str,
    actor: &'a str,
    address: Option<String>,
    related_key: Option<&'a str>,
}

impl<'a> AuditJson<'a> {
    fn new(event: &'a AuditEvent) -> Self {
        AuditJson {
            seq: event.seq,
            at: format_utc(event.at),
            action: event.action.as_str(),
            key_id: event.key_id.as_str(),
            owner: &event.owner,
            key_name: &event.key_name,
            actor: &event.actor,
            address: event.address.map(|address| address.to_string()),
            related_key: event.related_key.as_ref().map(|id| id.as_str()),
        }
    }
}

/// The audit entries as a JSON array, in the order given (newest first).
pub(crate) fn audit_json(trail: &[AuditEvent]) -> Result<String, serde_json::Error> {
    json(&trail.iter().map(AuditJson::new).collect::<Vec<_>>())
}

/// The audit entries as a table, one a row, in the order given (newest first); when there are
/// `limit` of them, a last line saying how to see the older ones.
pub(crate) fn audit_table(trail: &[AuditEvent], limit: u32) -> String {
    let Some(last) = trail.last() else {
        return "No audit entries.\n".to_owned();
    };
    let mut table = new_table(vec![
        "SEQ",
        "TIME",
        "ACTION",
        "KEY",
        "NAME",
        "ACTOR",
        "ADDRESS",
        "RELATED KEY",
    ]);
    let none = || "-".to_owned();
    for event in trail {
        table.add_row([
            event.seq.to_string(),
            format_utc(event.at),
            event.action.to_string(),
            printable(event.key_id.as_str()),
            printable(&event.key_name),
            printable(&event.actor),
            event
                .address
                .map_or_else(none, |address| address.to_string()),
            event
                .related_key
                .as_ref()
                .map_or_else(none, |id| printable(id.as_str())),
        ]);
    }
    let mut text = finish(&table);
    if u32::try_from(trail.len()).is_ok_and(|shown| shown >= limit) {
        // Writing to a `String` cannot fail.
        let _ = writeln!(text, "Older entries, if any: add --before {}", last.seq);
    }
    text
}

/// A new key's fields, then the key on a line of its own.
pub(crate) fn created_text(created: &CreatedKey, now: SystemTime) -> String {
    let mut text = "Created a key:\n\n".to_owned();
    text.push_str(&fields(&created.stored, now));
    text.push('\n');
    text.push_str(created.key.expose_secret());
    text.push('\n');
    text
}

/// What a rotation did to the old key, the new key's fields, then the new key.
pub(crate) fn rotated_text(rotation: &Rotation, now: SystemTime) -> String {
    let old = &rotation.old.record;
    let mut text = format!(
        "Rotated {} ({}). The old key keeps working until {}, then it is refused.\n\n\
         The new key:\n\n",
        printable(old.id.as_str()),
        quoted(&old.name),
        old.expires_at.map_or_else(|| "now".to_owned(), format_utc),
    );
    text.push_str(&fields(&rotation.new.stored, now));
    text.push('\n');
    text.push_str(rotation.new.key.expose_secret());
    text.push('\n');
    text
}

pub(crate) fn renamed_text(key: &StoredKey) -> String {
    format!(
        "Renamed {} to {}.\n",
        printable(key.record.id.as_str()),
        quoted(&key.record.name)
    )
}

pub(crate) fn revoked_text(key: &StoredKey) -> String {
    let record = &key.record;
    let at = record
        .revoked_at
        .map_or_else(|| "now".to_owned(), format_utc);
    format!(
        "Revoked {} ({}) at {at}.\n{OTHER_PROCESSES}\n",
        printable(record.id.as_str()),
        quoted(&record.name)
    )
}

/// A key's limits after `limits` changed them.
pub(crate) fn limits_text(key: &StoredKey) -> String {
    let (rate, networks) = limits(&key.record.limits);
    format!(
        "Changed the limits of {} ({}): rate limit {rate}; allowed from {networks}.\n\
         Running services on this store check its next request against them.\n",
        printable(key.record.id.as_str()),
        quoted(&key.record.name)
    )
}

/// A key's rate limit (or `none`) and the networks it may be used from (or `anywhere`).
fn limits(limits: &KeyLimits) -> (String, String) {
    (
        limits
            .rate
            .map_or_else(|| "none".to_owned(), |rate| rate.to_string()),
        limits
            .networks
            .as_ref()
            .map_or_else(|| "anywhere".to_owned(), ToString::to_string),
    )
}

pub(crate) fn deleted_text(id: &str) -> String {
    format!("Deleted {}.\n{OTHER_PROCESSES}\n", printable(id))
}

/// Every field of one key, one a line: what `show` prints.
pub(crate) fn fields(key: &StoredKey, now: SystemTime) -> String {
    let record = &key.record;
    let scopes = if record.scopes.is_empty() {
        "none".to_owned()
    } else {
        record.scopes.to_string()
    };
    let (rate, networks) = limits(&record.limits);
    let rows = [
        ("id", printable(record.id.as_str())),
        ("name", printable(&record.name)),
        ("owner", or_none(&printable(&record.owner))),
        ("environment", record.environment.to_string()),
        ("hint", printable(&key.hint)),
        ("scopes", scopes),
        ("rate limit", rate),
        ("allowed from", networks),
        ("status", status(key, now).to_owned()),
        ("created", format_utc(key.created_at)),
        (
            "expires",
            record.expires_at.map_or("never".to_owned(), format_utc),
        ),
        (
            "last used",
            key.last_used_at.map_or("never".to_owned(), format_utc),
        ),
        (
            "revoked",
            record.revoked_at.map_or("no".to_owned(), format_utc),
        ),
        (
            "replaced by",
            key.replaced_by
                .as_ref()
                .map_or("no".to_owned(), |id| printable(id.as_str())),
        ),
    ];
    let mut text = String::new();
    for (label, value) in rows {
        // Writing to a `String` cannot fail.
        let _ = writeln!(text, "{:<13} {value}", format!("{label}:"));
    }
    if key.metadata.is_empty() {
        text.push_str("metadata:     none\n");
    }
    for (i, (name, value)) in key.metadata.iter().enumerate() {
        let label = if i == 0 { "metadata:" } else { "" };
        let _ = writeln!(text, "{label:<13} {}={}", printable(name), printable(value));
    }
    text
}

/// The keys as a table, one a row, in the order given (the stores list newest first).
///
/// Columns are two spaces apart and as wide as their widest cell on screen, so that names in
/// CJK or with emoji, two columns wide per character, keep them lined up.
pub(crate) fn table(keys: &[StoredKey]) -> String {
    if keys.is_empty() {
        return "No keys.\n".to_owned();
    }
    let mut table = new_table(vec![
        "ID",
        "NAME",
        "OWNER",
        "HINT",
        "ENV",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "REVOKED",
    ]);
    let never = || "-".to_owned();
    for key in keys {
        let record = &key.record;
        let scopes: Vec<&str> = record.scopes.iter().map(|scope| scope.as_str()).collect();
        table.add_row([
            printable(record.id.as_str()),
            printable(&record.name),
            or_none(&printable(&record.owner)),
            printable(&key.hint),
            record.environment.to_string(),
            or_none(&scopes.join(",")),
            format_utc(key.created_at),
            record.expires_at.map_or_else(never, format_utc),
            key.last_used_at.map_or_else(never, format_utc),
            record.revoked_at.map_or_else(never, format_utc),
        ]);
    }
    finish(&table)
}

/// A table as the tool draws them: no borders and no wrapping, so that it prints the same lines
/// on a terminal, in a pipe and in a file.
pub(crate) fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    table
}

/// The table's lines, columns two spaces apart, without the spaces that pad the end of each.
pub(crate) fn finish(table: &Table) -> String {
    let mut table = table.clone();
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// `text` in double quotes, control characters escaped.
pub(crate) fn quoted(text: &str) -> String {
    format!("\"{}\"", printable(text))
}

/// `text` with control characters escaped, so that an id, a hint or a name edited into the
/// database by hand cannot move the cursor or recolour the terminal.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(crate) fn or_none(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tower_api_key::{AllowedNetworks, Environment, KeyRecord, Scope, ScopeSet};

    use super::*;

    fn key(id: &str, name: &str) -> StoredKey {
        let scopes: ScopeSet = [
            Scope::from_static("products:read"),
            Scope::from_static("orders:read"),
        ]
        .into_iter()
        .collect();
        let record = KeyRecord::new(id, Environment::Live, scopes)
            .with_name(name)
            .with_owner("acct_42");
        StoredKey::new(
            record,
            "om_live_…x7Qa",
            UNIX_EPOCH + Duration::from_secs(1_795_929_660),
        )
    }

    #[test]
    fn table_aligns_columns_and_marks_missing_times() {
        let mut revoked = key("key_2", "Webhook Server");
        revoked.record.revoked_at = Some(UNIX_EPOCH + Duration::from_secs(1_795_933_260));
        let text = table(&[key("key_1", "Production"), revoked]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("ID     NAME            OWNER    HINT"),
            "{text}"
        );
        let first = "key_1  Production      acct_42  om_live_…x7Qa  live  \
                     orders:read,products:read  2026-11-29T05:21:00Z  -";
        assert!(lines[1].starts_with(first), "{text}");
        // The REVOKED column starts at the same character in every row.
        let column = lines[0][..lines[0].find("REVOKED").unwrap()]
            .chars()
            .count();
        let revoked_at: String = lines[2].chars().skip(column).collect();
        assert_eq!(revoked_at, "2026-11-29T06:21:00Z", "{text}");
        assert!(lines.iter().all(|line| *line == line.trim_end()), "{text}");
    }

    #[test]
    fn wide_characters_keep_the_columns_lined_up() {
        use unicode_width::UnicodeWidthStr as _;

        // CJK characters and these emoji take two columns on screen each.
        let text = table(&[
            key("key_1", "Production"),
            key("key_2", "本番の鍵"),
            key("key_3", "Deploy 🚀"),
            key("key_4", "日本 🔑 prod"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        // Each column starts at the same screen column in every row as in the header.
        let header = lines[0];
        for (column, cell) in [
            ("OWNER", "acct_42"),
            ("HINT", "om_live_…x7Qa"),
            ("ENV", "live"),
            ("CREATED", "2026-11-29T05:21:00Z"),
        ] {
            // Cells are two spaces apart; `live` is also in the hint.
            let start = header[..header.find(column).unwrap()].width();
            for line in &lines[1..] {
                let at = line[..line.find(&format!("  {cell}  ")).unwrap() + 2].width();
                assert_eq!(at, start, "{column} in {line:?}:\n{text}");
            }
        }
        // The widest name, 12 columns on screen but 9 characters, sets its column's width.
        assert_eq!(
            header.find("OWNER"),
            Some("key_1  ".len() + 12 + 2),
            "{text}"
        );
        assert!(lines[4].contains("日本 🔑 prod  acct_42"), "{text}");
        assert!(lines[2].contains("本番の鍵      acct_42"), "{text}");
    }

    #[test]
    fn no_keys_is_said_in_words() {
        assert_eq!(table(&[]), "No keys.\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        let text = table(&[key("key_1", "evil\u{1b}[2Jname\n")]);
        assert!(text.contains("evil\\u{1b}[2Jname\\n"), "{text}");
        assert!(!text.contains('\u{1b}'));
        let text = fields(&key("key_1", "bell\u{7}"), SystemTime::now());
        assert!(text.contains("name:         bell\\u{7}\n"), "{text}");
    }

    /// An id as a row edited by hand could hold it: clear the screen, set the window title,
    /// ring the bell, break the line, then a C1 control (CSI) and DEL.
    const HOSTILE_ID: &str = "key_\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{9b}31m\u{7f}";
    /// [`HOSTILE_ID`] as the tool prints it.
    const ESCAPED_ID: &str = r"key_\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{9b}31m\u{7f}";
    /// A hint that turns the terminal red and backs over its last character.
    const HOSTILE_HINT: &str = "om_live_…\u{1b}[31mx7Qa\u{8}";
    /// [`HOSTILE_HINT`] as the tool prints it.
    const ESCAPED_HINT: &str = r"om_live_…\u{1b}[31mx7Qa\u{8}";

    /// Fails if `text` holds a control character other than the line breaks between lines.
    fn assert_no_raw_control_character(text: &str) {
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c.is_control() && c != '\n')
            .collect();
        assert!(raw.is_empty(), "raw {raw:?} in {text:?}");
    }

    fn hostile_key() -> StoredKey {
        let mut stored = key(HOSTILE_ID, "Production");
        stored.hint = HOSTILE_HINT.to_owned();
        stored
    }

    #[test]
    fn ids_and_hints_are_escaped_like_names() {
        let stored = hostile_key();

        let text = table(std::slice::from_ref(&stored));
        assert_no_raw_control_character(&text);
        assert_eq!(text.lines().count(), 2, "{text}");
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with(&format!("{ESCAPED_ID}  Production  ")),
            "{text}"
        );
        assert!(row.contains(&format!("  {ESCAPED_HINT}  live  ")), "{text}");

        let text = fields(&stored, SystemTime::now());
        assert_no_raw_control_character(&text);
        assert_eq!(text.lines().count(), 15, "{text}");
        assert!(
            text.starts_with(&format!("id:           {ESCAPED_ID}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("\nhint:         {ESCAPED_HINT}\n")),
            "{text}"
        );

        let messages = [
            (renamed_text(&stored), "Renamed"),
            (revoked_text(&stored), "Revoked"),
            (deleted_text(HOSTILE_ID), "Deleted"),
        ];
        for (text, verb) in messages {
            assert_no_raw_control_character(&text);
            assert!(text.starts_with(&format!("{verb} {ESCAPED_ID}")), "{text}");
        }
    }

    #[tokio::test]
    async fn a_rotated_keys_id_is_escaped() {
        use tower_api_key::{KeyFormat, KeyId, KeyStore as _, MemoryStore, NewKey};

        let store = MemoryStore::new(KeyFormat::new("om").unwrap());
        let created = store
            .create(NewKey::new("Production", Environment::Live))
            .await
            .unwrap();
        let mut rotation = store
            .rotate(created.id(), Duration::from_secs(3600))
            .await
            .unwrap();
        rotation.old.record.id = KeyId::from(HOSTILE_ID);
        let text = rotated_text(&rotation, SystemTime::now());
        assert_no_raw_control_character(&text);
        assert!(
            text.starts_with(&format!("Rotated {ESCAPED_ID} (\"Production\").")),
            "{text}"
        );
    }

    #[test]
    fn json_escapes_every_control_character() {
        let mut stored = hostile_key();
        stored.record.name = "bell\u{7}, CSI\u{9b}".into();
        let text = key_json(&stored, SystemTime::now()).unwrap();
        assert_no_raw_control_character(&text);
        assert!(
            text.contains(r#""id": "key_\u001b[2J\u001b]0;pwned\u0007\r\n\u009b31m\u007f","#),
            "{text}"
        );
        // Scripts read back exactly what the store holds.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["id"], HOSTILE_ID);
        assert_eq!(value["hint"], HOSTILE_HINT);
        assert_eq!(value["name"], "bell\u{7}, CSI\u{9b}");
    }

    fn audit_event(seq: u64, name: &str) -> AuditEvent {
        use tower_api_key::{Actor, AuditAction, KeyId};

        let actor = Actor::new("cli:alice").from_address("203.0.113.7".parse().unwrap());
        let mut event = AuditEvent::new(
            seq,
            UNIX_EPOCH + Duration::from_secs(1_795_929_660),
            AuditAction::Rotated,
            KeyId::from("key_1"),
            &actor,
        );
        event.owner = "acct_42".to_owned();
        event.key_name = name.to_owned();
        event.related_key = Some(KeyId::from("key_2"));
        event
    }

    #[test]
    fn the_audit_table_has_a_row_an_entry_and_says_how_to_page() {
        let trail = [
            audit_event(8, "Production"),
            audit_event(7, "evil\u{1b}[2J\u{9b}"),
        ];
        let text = audit_table(&trail, 2);
        assert_no_raw_control_character(&text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("SEQ  TIME                  ACTION   KEY    NAME"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("8    2026-11-29T05:21:00Z  rotated  key_1  Production"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("cli:alice  203.0.113.7  key_2"),
            "{text}"
        );
        assert!(lines[2].contains(r"evil\u{1b}[2J\u{9b}"), "{text}");
        assert_eq!(lines[3], "Older entries, if any: add --before 7");
        assert!(!audit_table(&trail, 3).contains("--before"));
        assert_eq!(audit_table(&[], 10), "No audit entries.\n");
    }

    #[test]
    fn audit_json_has_every_field_and_escapes_control_characters() {
        let text = audit_json(&[audit_event(8, "bell\u{7}, CSI\u{9b}")]).unwrap();
        assert_no_raw_control_character(&text);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!([{
                "seq": 8,
                "at": "2026-11-29T05:21:00Z",
                "action": "rotated",
                "key_id": "key_1",
                "owner": "acct_42",
                "key_name": "bell\u{7}, CSI\u{9b}",
                "actor": "cli:alice",
                "address": "203.0.113.7",
                "related_key": "key_2",
            }])
        );
    }

    #[test]
    fn fields_show_every_field() {
        let mut stored = key("key_1", "Production");
        stored.metadata.insert("team".into(), "integrations".into());
        stored.metadata.insert("region".into(), "eu".into());
        stored.record.limits = limits();
        let text = fields(&stored, SystemTime::now());
        assert_eq!(
            text,
            "id:           key_1\n\
             name:         Production\n\
             owner:        acct_42\n\
             environment:  live\n\
             hint:         om_live_…x7Qa\n\
             scopes:       orders:read products:read\n\
             rate limit:   100/s burst 20\n\
             allowed from: 203.0.113.0/24 2001:db8::/32\n\
             status:       active\n\
             created:      2026-11-29T05:21:00Z\n\
             expires:      never\n\
             last used:    never\n\
             revoked:      no\n\
             replaced by:  no\n\
             metadata:     region=eu\n\
             \x20             team=integrations\n"
        );
        stored.record.limits = KeyLimits::none();
        let text = fields(&stored, SystemTime::now());
        assert!(text.contains("\nrate limit:   none\n"), "{text}");
        assert!(text.contains("\nallowed from: anywhere\n"), "{text}");
    }

    fn limits() -> KeyLimits {
        KeyLimits::none()
            .with_rate("100/s burst 20".parse::<RateLimit>().unwrap())
            .with_networks(
                "2001:db8::/32 203.0.113.0/24"
                    .parse::<AllowedNetworks>()
                    .unwrap(),
            )
    }

    #[test]
    fn limits_are_in_the_json_as_parts_and_text() {
        let mut stored = key("key_1", "Production");
        stored.record.limits = limits();
        let value = serde_json::to_value(KeyJson::new(&stored, SystemTime::now())).unwrap();
        assert_eq!(
            value["rate_limit"],
            serde_json::json!({
                "requests": 100,
                "period_ms": 1000,
                "burst": 20,
                "text": "100/s burst 20",
            })
        );
        assert_eq!(
            value["allowed_networks"],
            serde_json::json!(["203.0.113.0/24", "2001:db8::/32"])
        );
        let text = limits_text(&stored);
        assert!(
            text.starts_with(
                "Changed the limits of key_1 (\"Production\"): rate limit 100/s burst 20; \
                 allowed from 203.0.113.0/24 2001:db8::/32.\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_has_every_field_and_the_status() {
        let mut stored = key("key_1", "Production");
        stored.record.expires_at = Some(UNIX_EPOCH + Duration::from_secs(1_795_929_661));
        let now = UNIX_EPOCH + Duration::from_secs(1_795_929_661);
        let value = serde_json::to_value(KeyJson::new(&stored, now)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "id": "key_1",
                "name": "Production",
                "owner": "acct_42",
                "environment": "live",
                "hint": "om_live_…x7Qa",
                "scopes": ["orders:read", "products:read"],
                "status": "expired",
                "created_at": "2026-11-29T05:21:00Z",
                "expires_at": "2026-11-29T05:21:01Z",
                "last_used_at": null,
                "revoked_at": null,
                "replaced_by": null,
                "metadata": {},
                "rate_limit": null,
                "allowed_networks": null,
            })
        );
    }
}
