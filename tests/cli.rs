//! The `tower-api-key` binary, run as a person or a script would: the binary cargo built for
//! this test, each test on a SQLite file of its own in a fresh temporary directory.
//!
//! Besides what each command prints and its exit code, these tests check the promises about
//! secrets: the key printed by `create` or `rotate` is one the store resolves, and no other
//! output (tables, `show`, JSON, messages) contains a key or a digest. The PostgreSQL round trip
//! uses `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) in a schema of its
//! own, dropped afterwards; it is skipped with a message when the server is unreachable, unless
//! `CI` is set: then it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use regex::Regex;
use serde_json::Value;
use tempfile::TempDir;
use tower_api_key::{
    AnonymousIncrement, AnonymousOutcome, Day, KeyDigest, KeyFormat, KeyId, KeyIncrement,
    KeyOutcome, KeyResolver, KeyStore, OutcomeCounts, SqliteStore, UsageBatch,
};

const BINARY: &str = env!("CARGO_BIN_EXE_tower-api-key");
const WARNING: &str = "only time the new key is shown";

/// A fresh, empty directory and the SQLite file the tool is pointed at in it (not created yet).
struct Sandbox {
    dir: TempDir,
    db: PathBuf,
}

/// One run of the tool.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be made");
        let db = dir.path().join("keys.db");
        Sandbox { dir, db }
    }

    /// Runs the tool on this sandbox's SQLite file.
    fn run(&self, args: &[&str]) -> Run {
        let db = self.db.to_str().expect("the temporary path is UTF-8");
        let mut all = vec!["--db", db];
        all.extend_from_slice(args);
        run_in(&self.dir, &all)
    }

    /// Runs the tool and checks it succeeded.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "{args:?} failed: {run:?}");
        run
    }

    /// Runs the tool with `--json` and checks it succeeded; returns the JSON.
    fn json(&self, args: &[&str]) -> (Value, Run) {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.ok(&all);
        let value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("{args:?} --json printed no JSON ({err}): {run:?}"));
        (value, run)
    }

    /// Creates a key with `create --json`; returns the key and its id. The first key of the
    /// sandbox's store is created with `--prefix om`, which the store then records; later
    /// commands find the prefix there, as they would for a user.
    fn create(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["create"];
        if !self.db.exists() {
            all.extend_from_slice(&["--prefix", "om"]);
        }
        all.extend_from_slice(args);
        let (created, run) = self.json(&all);
        assert!(run.stderr.contains(WARNING), "{run:?}");
        let key = created["plaintext_key"].as_str().expect("plaintext_key");
        let id = created["key"]["id"].as_str().expect("key.id");
        (key.to_owned(), id.to_owned())
    }

    /// The sandbox's file opened as a store, as a service would.
    async fn store(&self) -> SqliteStore {
        let store = SqliteStore::open(&self.db, om()).await.unwrap();
        store.migrate().await.unwrap();
        store
    }
}

/// Runs the tool in `dir` with `args`, with none of the environment variables it reads.
fn run_in(dir: &TempDir, args: &[&str]) -> Run {
    run_in_env(dir, args, &[])
}

/// Like [`run_in`], with `env` set (`Some`) or removed (`None`) too, such as the user's name.
fn run_in_env(dir: &TempDir, args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("TOWER_API_KEY_DB")
        .env_remove("TOWER_API_KEY_SCHEMA")
        .env_remove("TOWER_API_KEY_PREFIX");
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {BINARY}: {err}"));
    let run = Run {
        // `None` means killed by a signal: no exit code a script could rely on.
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "the tool panicked: {run:?}"
    );
    run
}

impl Run {
    /// Checks the exit code, and that the error is one line on stderr saying `what`.
    fn fails(&self, code: i32, what: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "not one line: {self:?}");
        assert!(
            self.stderr.starts_with("tower-api-key: "),
            "the error does not say who speaks: {self:?}"
        );
        assert!(self.stderr.contains(what), "expected {what:?} in {self:?}");
    }
}

fn om() -> KeyFormat {
    KeyFormat::new("om").unwrap()
}

fn scanner() -> Regex {
    Regex::new(&om().scanner_regex()).unwrap()
}

/// Fails if `text` holds one of `keys`, its random middle, its digest, or anything shaped like a
/// key.
fn assert_no_secret_in(text: &str, keys: &[&str]) {
    for key in keys {
        assert!(!text.contains(key), "a key was printed:\n{text}");
        assert!(
            !text.contains(&key[8..40]),
            "part of a key was printed:\n{text}"
        );
        let digest = KeyDigest::of(key.as_bytes()).to_hex();
        assert!(!text.contains(&digest), "a digest was printed:\n{text}");
    }
    assert!(
        !scanner().is_match(text),
        "something shaped like a key was printed:\n{text}"
    );
    assert!(
        !text.contains("\"digest\""),
        "a digest field was printed:\n{text}"
    );
}

/// The key printed on its own line by `create` or `rotate` without `--json`.
fn printed_key(run: &Run) -> String {
    let keys: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| scanner().is_match(line))
        .collect();
    assert_eq!(keys.len(), 1, "expected one key line: {run:?}");
    assert_eq!(
        keys[0],
        keys[0].trim(),
        "the key line holds more than the key"
    );
    keys[0].to_owned()
}

#[tokio::test]
async fn a_key_goes_through_its_whole_life() {
    let sandbox = Sandbox::new();
    let mut outputs = Vec::new();

    // create, as a person would: the fields, then the key on a line of its own. A new store needs
    // the prefix of its keys; it records it, and later commands read it from there.
    let created = sandbox.ok(&[
        "create",
        "--prefix",
        "om",
        "--name",
        "Webhook Server",
        "--owner",
        "acct_42",
        "--scope",
        "orders:read",
        "--scope",
        "products:read,products:write",
        "--meta",
        "team=integrations",
        "--expires-in",
        "30d",
    ]);
    assert!(created.stderr.contains(WARNING), "{created:?}");
    assert!(
        created.stderr.contains("cannot be shown again"),
        "{created:?}"
    );
    let key = printed_key(&created);
    assert!(key.starts_with("om_live_"), "{key}");
    assert_no_secret_in(&created.stderr, &[&key]);
    for field in [
        "name:         Webhook Server",
        "owner:        acct_42",
        "environment:  live",
        "scopes:       orders:read products:read products:write",
        "rate limit:   none",
        "allowed from: anywhere",
        "metadata:     team=integrations",
        "status:       active",
    ] {
        assert!(created.stdout.contains(field), "{field:?} in {created:?}");
    }

    // The key printed is one the store resolves: the file holds its digest.
    let store = sandbox.store().await;
    let record = store
        .resolve(&KeyDigest::of(key.as_bytes()))
        .await
        .unwrap()
        .expect("the printed key resolves");
    assert_eq!(record.name, "Webhook Server");
    let id = record.id.to_string();
    let expires = record.expires_at.expect("--expires-in 30d sets an expiry");
    let in_30_days = SystemTime::now() + Duration::from_secs(30 * 86_400);
    assert!(
        expires <= in_30_days && expires > in_30_days - Duration::from_secs(60),
        "{expires:?}"
    );

    // A second key, for scripts: JSON with the plaintext under a name nobody can miss.
    let (sandbox_key, sandbox_id) =
        sandbox.create(&["--name", "Sandbox", "--env", "test", "--owner", "acct_7"]);
    assert!(sandbox_key.starts_with("om_test_"));

    // list, newest first, as a table and as JSON.
    let table = sandbox.ok(&["list"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{table:?}");
    for column in [
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
    ] {
        assert!(lines[0].contains(column), "no {column} column: {table:?}");
    }
    assert!(lines[1].starts_with(&sandbox_id), "{table:?}");
    assert!(lines[2].starts_with(&id), "{table:?}");
    let hint = format!("om_live_…{}", &key[key.len() - 4..]);
    assert!(lines[2].contains(&hint), "no hint {hint}: {table:?}");
    assert!(
        Regex::new(r"  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  ")
            .unwrap()
            .is_match(lines[2]),
        "no UTC RFC 3339 time: {table:?}"
    );
    outputs.push(table);

    let (listed, run) = sandbox.json(&["list"]);
    outputs.push(run);
    let listed = listed.as_array().expect("list --json is an array");
    let ids: Vec<&str> = listed
        .iter()
        .map(|key| key["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sandbox_id.as_str(), id.as_str()]);
    let webhook = &listed[1];
    assert_eq!(webhook["name"], "Webhook Server");
    assert_eq!(webhook["owner"], "acct_42");
    assert_eq!(webhook["environment"], "live");
    assert_eq!(webhook["hint"], hint.as_str());
    assert_eq!(
        webhook["scopes"],
        serde_json::json!(["orders:read", "products:read", "products:write"])
    );
    assert_eq!(webhook["status"], "active");
    assert_eq!(
        webhook["metadata"],
        serde_json::json!({"team": "integrations"})
    );
    assert!(webhook["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(webhook["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(webhook["last_used_at"].is_null());
    assert!(webhook["revoked_at"].is_null());
    assert!(webhook.get("plaintext_key").is_none());

    // Filters.
    let (live, run) = sandbox.json(&["list", "--env", "live"]);
    outputs.push(run);
    assert_eq!(live.as_array().unwrap().len(), 1);
    assert_eq!(live[0]["id"], id.as_str());
    let (owned, run) = sandbox.json(&["list", "--owner", "acct_7"]);
    outputs.push(run);
    assert_eq!(owned.as_array().unwrap().len(), 1);
    assert_eq!(owned[0]["id"], sandbox_id.as_str());
    let (nobody, run) = sandbox.json(&["list", "--owner", "acct_nobody"]);
    outputs.push(run);
    assert_eq!(nobody, serde_json::json!([]));

    // show, both ways.
    let shown = sandbox.ok(&["show", &id]);
    assert!(
        shown.stdout.contains(&format!("id:           {id}\n")),
        "{shown:?}"
    );
    assert!(shown.stdout.contains("last used:    never"), "{shown:?}");
    outputs.push(shown);
    let (shown, run) = sandbox.json(&["show", &id]);
    outputs.push(run);
    assert_eq!(&shown, webhook);

    // rename.
    let renamed = sandbox.ok(&["rename", &id, "Webhook Server (EU)"]);
    assert!(
        renamed.stdout.contains("\"Webhook Server (EU)\""),
        "{renamed:?}"
    );
    outputs.push(renamed);
    assert_eq!(
        store
            .get(&KeyId::from(id.as_str()))
            .await
            .unwrap()
            .record
            .name,
        "Webhook Server (EU)"
    );

    // rotate: a new key, printed once; the old one works for the grace period.
    let before = SystemTime::now();
    let rotated = sandbox.ok(&["rotate", &id, "--grace", "24h"]);
    assert!(rotated.stderr.contains(WARNING), "{rotated:?}");
    let new_key = printed_key(&rotated);
    assert_ne!(new_key, key);
    let new_record = store
        .resolve(&KeyDigest::of(new_key.as_bytes()))
        .await
        .unwrap()
        .expect("the rotated key resolves");
    assert_eq!(new_record.name, "Webhook Server (EU)");
    assert_eq!(new_record.scopes, record.scopes);
    let old = store.get(&KeyId::from(id.as_str())).await.unwrap();
    let grace_end = old.record.expires_at.expect("the old key now expires");
    let day = Duration::from_secs(86_400);
    assert!(
        grace_end >= before + day - Duration::from_secs(1) && grace_end <= SystemTime::now() + day,
        "{grace_end:?}"
    );
    assert!(
        rotated.stdout.contains("The old key keeps working until"),
        "{rotated:?}"
    );
    assert_no_secret_in(&rotated.stderr, &[&key, &new_key]);
    assert!(!rotated.stdout.contains(&key), "rotate printed the old key");

    // rotate --json names the plaintext, and shows the old key's new expiry.
    let (rotated, run) = sandbox.json(&["rotate", &sandbox_id, "--grace", "90s"]);
    assert!(run.stderr.contains(WARNING), "{run:?}");
    let newest_key = rotated["plaintext_key"].as_str().unwrap().to_owned();
    assert!(newest_key.starts_with("om_test_"));
    assert_eq!(rotated["old"]["id"], sandbox_id.as_str());
    assert!(rotated["old"]["expires_at"].is_string(), "{rotated}");
    assert_eq!(rotated["new"]["name"], "Sandbox");
    assert!(rotated["new"].get("plaintext_key").is_none());
    let new_sandbox_id = rotated["new"]["id"].as_str().unwrap().to_owned();
    assert!(store
        .resolve(&KeyDigest::of(newest_key.as_bytes()))
        .await
        .unwrap()
        .is_some());

    // revoke: idempotent, keeps the first time.
    let new_id = new_record.id.to_string();
    let revoked = sandbox.ok(&["revoke", &new_id]);
    assert!(
        revoked.stdout.starts_with(&format!("Revoked {new_id}")),
        "{revoked:?}"
    );
    outputs.push(revoked);
    let (again, run) = sandbox.json(&["revoke", &new_id]);
    outputs.push(run);
    assert_eq!(again["status"], "revoked");
    let revoked_at = store
        .get(&KeyId::from(new_id.as_str()))
        .await
        .unwrap()
        .record
        .revoked_at;
    assert!(revoked_at.is_some());
    assert_eq!(
        again["revoked_at"].as_str().map(str::len),
        Some("2026-11-29T05:21:00Z".len())
    );

    // A revoked key cannot be rotated.
    sandbox
        .run(&["rotate", &new_id, "--grace", "1h"])
        .fails(4, "revoked");

    // delete needs --yes, then the key is gone.
    sandbox.run(&["delete", &new_id]).fails(2, "--yes");
    assert!(store.get(&KeyId::from(new_id.as_str())).await.is_ok());
    let deleted = sandbox.ok(&["delete", &new_id, "--yes"]);
    outputs.push(deleted);
    let (deleted, run) = sandbox.json(&["delete", &new_sandbox_id, "--yes"]);
    outputs.push(run);
    assert_eq!(deleted, serde_json::json!({"deleted": new_sandbox_id}));
    sandbox.run(&["show", &new_id]).fails(3, &new_id);
    assert!(store
        .resolve(&KeyDigest::of(new_key.as_bytes()))
        .await
        .unwrap()
        .is_none());
    let (rest, run) = sandbox.json(&["list"]);
    outputs.push(run);
    let rest: Vec<&str> = rest
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, [sandbox_id.as_str(), id.as_str()]);

    // Nothing but create and rotate ever printed a key, a digest, or part of one.
    let secrets = [key.as_str(), &sandbox_key, &new_key, &newest_key];
    for run in &outputs {
        assert_no_secret_in(&run.stdout, &secrets);
        assert_no_secret_in(&run.stderr, &secrets);
    }
}

/// Fails if `text` holds a control character other than the line breaks between lines.
fn assert_no_raw_control_character(text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw {raw:?} reached the output: {text:?}");
}

#[tokio::test]
async fn control_characters_in_a_hand_edited_row_are_escaped() {
    use tower_api_key::store::sqlx;

    // Clear the screen, set the window title, ring the bell, break the line, a C1 CSI, DEL.
    let id = "key_\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{9b}31m\u{7f}";
    let escaped_id = r"key_\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{9b}31m\u{7f}";
    // Turn the terminal red, back over the last character.
    let hint = "om_live_…\u{1b}[31mx7Qa\u{8}";
    let escaped_hint = r"om_live_…\u{1b}[31mx7Qa\u{8}";

    let sandbox = Sandbox::new();
    let (_, created) = sandbox.create(&["--name", "Production"]);
    let store = sandbox.store().await;
    let updated = sqlx::query("UPDATE api_keys SET id = ?, hint = ? WHERE id = ?")
        .bind(id)
        .bind(hint)
        .bind(&created)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    store.pool().close().await;

    let list = sandbox.ok(&["list"]);
    assert_no_raw_control_character(&list.stdout);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{list:?}");
    assert!(
        lines[1].starts_with(&format!("{escaped_id}  Production  ")),
        "{list:?}"
    );
    assert!(
        lines[1].contains(&format!("  {escaped_hint}  live  ")),
        "{list:?}"
    );

    let show = sandbox.ok(&["show", id]);
    assert_no_raw_control_character(&show.stdout);
    assert!(
        show.stdout
            .starts_with(&format!("id:           {escaped_id}\n")),
        "{show:?}"
    );
    assert!(
        show.stdout
            .contains(&format!("\nhint:         {escaped_hint}\n")),
        "{show:?}"
    );

    // Usage, of the key and of every key.
    let usage = sandbox.ok(&["usage", id]);
    assert_no_raw_control_character(&usage.stdout);
    assert!(usage.stdout.starts_with(escaped_id), "{usage:?}");
    let usage = sandbox.ok(&["usage"]);
    assert_no_raw_control_character(&usage.stdout);
    assert!(
        usage
            .stdout
            .lines()
            .any(|line| line.starts_with(escaped_id)),
        "{usage:?}"
    );
    let (value, run) = sandbox.json(&["usage", id]);
    assert_no_raw_control_character(&run.stdout);
    assert_eq!(value["id"], id, "{run:?}");

    // JSON escapes them too, and a script reads back what the row holds.
    for args in [&["show", id][..], &["list"]] {
        let (value, run) = sandbox.json(args);
        assert_no_raw_control_character(&run.stdout);
        let key = value.get(0).unwrap_or(&value);
        assert_eq!(key["id"], id, "{run:?}");
        assert_eq!(key["hint"], hint, "{run:?}");
    }

    // The messages that name the key.
    for (args, start) in [
        (&["rename", id, "Renamed"][..], "Renamed"),
        (&["rotate", id, "--grace", "1h"], "Rotated"),
        (&["revoke", id], "Revoked"),
        (&["delete", id, "--yes"], "Deleted"),
    ] {
        let run = sandbox.ok(args);
        assert_no_raw_control_character(&run.stdout);
        assert!(
            run.stdout.starts_with(&format!("{start} {escaped_id}")),
            "{run:?}"
        );
    }
}

/// `count` requests of `outcome`, as a flush from a running service would add them.
fn used(id: &str, day: Day, of: &[(KeyOutcome, u64)]) -> KeyIncrement {
    let mut counts = OutcomeCounts::default();
    for &(outcome, count) in of {
        counts.add(outcome, count);
    }
    KeyIncrement::new(KeyId::from(id), day, counts)
}

#[tokio::test]
async fn usage_shows_a_keys_days_and_every_keys_totals() {
    use KeyOutcome::{Allowed, InsufficientScope, Revoked};

    let sandbox = Sandbox::new();
    let (busy_key, busy) = sandbox.create(&["--name", "Busy", "--owner", "acct_42"]);
    let (idle_key, idle) = sandbox.create(&["--name", "Idle", "--owner", "acct_42"]);
    let (_, other) = sandbox.create(&["--name", "Other", "--owner", "acct_7"]);
    let today = Day::today();
    let mut flush = UsageBatch::new();
    flush.keys = vec![
        used(&busy, today, &[(Allowed, 40), (InsufficientScope, 2)]),
        used(&busy, today.add_days(-2), &[(Allowed, 10), (Revoked, 1)]),
        used(&other, today, &[(Allowed, 1)]),
    ];
    flush.anonymous = vec![AnonymousIncrement::new(today, AnonymousOutcome::Unknown, 9)];
    flush.last_used = vec![(KeyId::from(busy.as_str()), SystemTime::now())];
    let store = sandbox.store().await;
    store.record_usage(&flush).await.unwrap();
    store.pool().close().await;
    let secrets = [busy_key.as_str(), idle_key.as_str()];

    // A key's days: a row a day, oldest first, then the totals; no bars in a pipe.
    let run = sandbox.ok(&["usage", &busy, "--days", "3"]);
    assert_no_secret_in(&run.stdout, &secrets);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{run:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{busy} (\"Busy\"): requests per day from {} to {today} (UTC). Last used: 20",
            today.add_days(-2)
        )),
        "{run:?}"
    );
    assert_eq!(
        lines[2],
        "DATE        ALLOWED  INSUFFICIENT SCOPE  REVOKED  EXPIRED  RATE LIMITED  TOTAL"
    );
    assert_eq!(
        lines[3],
        format!(
            "{}       10                   0        1        0             0     11",
            today.add_days(-2)
        )
    );
    assert!(lines[4].ends_with("  0"), "{run:?}");
    assert!(lines[5].ends_with("  42"), "{run:?}");
    assert_eq!(
        lines[6],
        "TOTAL            50                   2        1        0             0     53"
    );
    assert!(!run.stdout.contains('█'), "bars in a pipe: {run:?}");
    let bars = sandbox.ok(&["usage", &busy, "--days", "3", "--bars", "always"]);
    assert!(
        bars.stdout
            .lines()
            .nth(5)
            .unwrap()
            .ends_with(&format!("  42  {}", "█".repeat(24))),
        "{bars:?}"
    );
    assert_eq!(
        sandbox
            .ok(&["usage", &busy, "--days", "3", "--bars", "never"])
            .stdout,
        run.stdout
    );

    // The same as JSON: every day, zeros included.
    let (series, run) = sandbox.json(&["usage", &busy, "--days", "3"]);
    assert_no_secret_in(&run.stdout, &secrets);
    assert_eq!(series["id"], busy.as_str());
    assert_eq!(series["from"], today.add_days(-2).to_string());
    assert_eq!(series["to"], today.to_string());
    let days = series["days"].as_array().unwrap();
    assert_eq!(days.len(), 3, "{series}");
    assert_eq!(days[1]["total"], 0);
    assert_eq!(days[2]["allowed"], 40);
    assert_eq!(days[2]["insufficient_scope"], 2);
    assert_eq!(series["totals"]["total"], 53);
    assert!(series["last_used_at"].is_string());
    // 30 days by default.
    let (series, _) = sandbox.json(&["usage", &busy]);
    assert_eq!(series["days"].as_array().unwrap().len(), 30);

    // Every key of an owner: totals, last use, and which were never used.
    let run = sandbox.ok(&["usage", "--owner", "acct_42", "--days", "7"]);
    assert_no_secret_in(&run.stdout, &secrets);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{run:?}");
    assert!(
        lines[0].starts_with("The keys of \"acct_42\": requests from "),
        "{run:?}"
    );
    assert!(lines[0].ends_with(", 7 days."), "{run:?}");
    assert!(
        lines[2].starts_with("ID") && lines[2].ends_with("ALLOWED  REFUSED  TOTAL  NOTE"),
        "{run:?}"
    );
    assert!(lines[3].starts_with(&idle), "newest first: {run:?}");
    assert!(
        lines[3].ends_with("0        0      0  never used"),
        "{run:?}"
    );
    assert!(lines[4].starts_with(&busy), "{run:?}");
    assert!(lines[4].ends_with("50        3     53  -"), "{run:?}");
    let (summary, _) = sandbox.json(&["usage", "--days", "1"]);
    let keys = summary["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "everyone's keys: {summary}");
    assert_eq!(summary["owner"], Value::Null);
    assert_eq!(summary["from"], today.to_string());
    let busy_json = keys.iter().find(|k| k["id"] == busy.as_str()).unwrap();
    assert_eq!(busy_json["totals"]["allowed"], 40);
    assert_eq!(busy_json["never_used"], false);
    assert_eq!(busy_json["unused"], false);
    let idle_json = keys.iter().find(|k| k["id"] == idle.as_str()).unwrap();
    assert_eq!(idle_json["never_used"], true);

    // `list` shows the last use.
    let (listed, _) = sandbox.json(&["list"]);
    let listed_busy = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == busy.as_str())
        .unwrap();
    assert!(listed_busy["last_used_at"].is_string(), "{listed}");

    sandbox
        .run(&["usage", "key_unknown"])
        .fails(3, "key_unknown");
    for args in [
        &["usage", &busy, "--days", "0"][..],
        &["usage", &busy, "--days", "36526"],
        &["usage", &busy, "--days", "a week"],
        &["usage", &busy, "--owner", "acct_42"],
        &["usage", &busy, "--bars", "sometimes"],
    ] {
        let run = sandbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

#[tokio::test]
async fn prune_usage_keeps_the_days_asked_for() {
    let sandbox = Sandbox::new();
    let (_, id) = sandbox.create(&["--name", "Pruned"]);
    let today = Day::today();
    let mut flush = UsageBatch::new();
    flush.keys = [0, -1, -2, -40]
        .into_iter()
        .map(|back| used(&id, today.add_days(back), &[(KeyOutcome::Allowed, 1)]))
        .collect();
    flush.anonymous = vec![AnonymousIncrement::new(
        today.add_days(-40),
        AnonymousOutcome::Missing,
        1,
    )];
    flush.last_used = vec![(KeyId::from(id.as_str()), SystemTime::now())];
    let store = sandbox.store().await;
    store.record_usage(&flush).await.unwrap();
    store.pool().close().await;

    sandbox
        .run(&["prune-usage", "--keep", "36h"])
        .fails(4, "whole days");
    sandbox
        .run(&["prune-usage", "--keep", "0d"])
        .fails(4, "whole days");
    let missing = sandbox.run(&["prune-usage"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("--keep"), "{missing:?}");

    let run = sandbox.ok(&["prune-usage", "--keep", "30d"]);
    assert_eq!(
        run.stdout,
        format!(
            "Deleted 2 daily counts of the days before {} (UTC). Last uses are kept.\n",
            today.add_days(-29)
        )
    );
    let (pruned, _) = sandbox.json(&["prune-usage", "--keep", "2d"]);
    assert_eq!(
        pruned,
        serde_json::json!({ "deleted": 1, "before": today.add_days(-1).to_string() })
    );
    let (series, _) = sandbox.json(&["usage", &id, "--days", "3"]);
    let totals: Vec<&Value> = series["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|day| &day["total"])
        .collect();
    assert_eq!(totals, [0, 1, 1]);
    let (key, _) = sandbox.json(&["show", &id]);
    assert!(key["last_used_at"].is_string(), "the last use stays: {key}");
}

#[test]
fn unknown_ids_exit_with_3() {
    let sandbox = Sandbox::new();
    sandbox.create(&["--name", "Production"]);
    for args in [
        &["show", "key_doesnotexist000"][..],
        &["rename", "key_doesnotexist000", "New name"],
        &["limits", "key_doesnotexist000", "--no-rate"],
        &["revoke", "key_doesnotexist000"],
        &["rotate", "key_doesnotexist000", "--grace", "1h"],
        &["delete", "key_doesnotexist000", "--yes"],
        &["show", "key_doesnotexist000", "--json"],
    ] {
        sandbox
            .run(args)
            .fails(3, "no key has the id `key_doesnotexist000`");
    }
}

#[test]
fn invalid_input_exits_with_4_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let (_, id) = sandbox.create(&["--name", "Production"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "--name", "x", "--scope", "productsread"],
            "malformed scope",
        ),
        (
            &["create", "--name", "x", "--scope", "orders:read,"],
            "malformed scope",
        ),
        (
            &["create", "--name", "x", "--expires-in", "30"],
            "invalid duration",
        ),
        (
            &["create", "--name", "x", "--expires-in", "1w"],
            "invalid duration",
        ),
        (
            &["create", "--name", "x", "--expires-in", "0s"],
            "in the future",
        ),
        (
            &[
                "create",
                "--name",
                "x",
                "--expires-at",
                "2026-02-30T00:00:00Z",
            ],
            "RFC 3339",
        ),
        (
            &[
                "create",
                "--name",
                "x",
                "--expires-at",
                "2001-01-01T00:00:00Z",
            ],
            "in the future",
        ),
        (
            &["create", "--name", "x", "--expires-in", "99999999d"],
            "9999-12-31",
        ),
        (&["create", "--name", "   "], "a key needs a name"),
        (&["create", "--name", "line\nbreak"], "control characters"),
        (&["create", "--name", &"n".repeat(101)], "at most 100"),
        (
            &["create", "--name", "x", "--meta", "novalue"],
            "name=value",
        ),
        (
            &["create", "--name", "x", "--prefix", "OM"],
            "invalid key prefix",
        ),
        (&["rotate", &id, "--grace", "soon"], "invalid duration"),
        (&["rename", &id, ""], "a key needs a name"),
    ];
    for (args, what) in cases {
        sandbox.run(args).fails(4, what);
    }
    let (keys, _) = sandbox.json(&["list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["name"], "Production");
    assert!(keys[0]["expires_at"].is_null());
}

#[test]
fn an_expired_key_cannot_be_rotated() {
    let sandbox = Sandbox::new();
    let (_, id) = sandbox.create(&["--name", "Short-lived", "--expires-in", "1s"]);
    std::thread::sleep(Duration::from_millis(1_100));
    let (shown, _) = sandbox.json(&["show", &id]);
    assert_eq!(shown["status"], "expired");
    sandbox
        .run(&["rotate", &id, "--grace", "1h"])
        .fails(4, "expired");
}

#[test]
fn usage_errors_exit_with_2() {
    let sandbox = Sandbox::new();
    for args in [
        &["frobnicate"][..],
        &["create"],
        &["create", "--name", "x", "--env", "prod"],
        &[
            "create",
            "--name",
            "x",
            "--expires-in",
            "1d",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ],
        &["rotate", "key_x"],
        &["list", "--colour"],
    ] {
        let run = sandbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    // Two stores named on the command line.
    sandbox
        .run(&[
            "list",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/test",
        ])
        .fails(2, "give one of them");
    assert!(!sandbox.db.exists(), "a usage error created the database");
}

#[test]
fn an_unreachable_store_exits_with_5() {
    let sandbox = Sandbox::new();
    // A directory that does not exist: the file cannot be created.
    let nowhere = sandbox.dir.path().join("missing").join("keys.db");
    let nowhere = nowhere.to_str().unwrap();
    run_in(
        &sandbox.dir,
        &["--db", nowhere, "create", "--prefix", "om", "--name", "x"],
    )
    .fails(5, "the key store is unavailable");

    // Only `create` starts a new file; the others say the file is missing and leave no file.
    for args in [&["list"][..], &["show", "key_x"], &["revoke", "key_x"]] {
        sandbox.run(args).fails(5, "does not exist");
    }
    assert!(!sandbox.db.exists());

    // Nothing listens on port 1. The message names the store without its URL.
    let url = "postgres://postgres:hunter2@127.0.0.1:1/test";
    let run = run_in(&sandbox.dir, &["--database-url", url, "list"]);
    run.fails(5, "PostgreSQL");
    assert!(
        !run.stderr.contains("hunter2"),
        "the password was printed: {run:?}"
    );
}

#[test]
fn an_empty_store_lists_no_keys() {
    let sandbox = Sandbox::new();
    let (_, id) = sandbox.create(&["--name", "Temporary"]);
    sandbox.ok(&["delete", &id, "--yes"]);
    assert_eq!(sandbox.ok(&["list"]).stdout, "No keys.\n");
    assert_eq!(sandbox.json(&["list"]).0, serde_json::json!([]));
}

#[test]
fn the_default_database_is_the_demos_file_in_the_current_directory() {
    let sandbox = Sandbox::new();
    let created = run_in(
        &sandbox.dir,
        &["create", "--prefix", "om", "--name", "Default"],
    );
    assert_eq!(created.code, 0, "{created:?}");
    assert!(sandbox.dir.path().join("ordermonk.db").is_file());

    // TOWER_API_KEY_DB points elsewhere.
    let other = sandbox.dir.path().join("other.db");
    let output = Command::new(BINARY)
        .args(["list", "--json"])
        .current_dir(sandbox.dir.path())
        .env_remove("DATABASE_URL")
        .env("TOWER_API_KEY_DB", &other)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("other.db"));
}

#[test]
fn help_documents_the_commands_and_exit_codes() {
    let sandbox = Sandbox::new();
    let help = run_in(&sandbox.dir, &["--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    for text in [
        "create",
        "list",
        "show",
        "rename",
        "limits",
        "revoke",
        "rotate",
        "delete",
        "usage",
        "prune-usage",
        "audit",
        "--actor <ID>",
        "cli:",
        "--json",
        "--db",
        "--database-url",
        "DATABASE_URL",
        "Exit codes",
        "0  success",
        "2  usage error",
        "3  no key has this id",
        "4  invalid input",
        "5  the key store is unavailable",
    ] {
        assert!(
            help.stdout.contains(text),
            "{text:?} is not in --help:\n{}",
            help.stdout
        );
    }
    for command in ["create", "limits"] {
        let help = run_in(&sandbox.dir, &[command, "--help"]);
        for text in [
            "--rate <RATE>",
            "--burst <N>",
            "--allow-ip <NET>",
            "100/s burst 20",
        ] {
            assert!(help.stdout.contains(text), "{text:?} in {help:?}");
        }
    }
    let limits = run_in(&sandbox.dir, &["limits", "--help"]);
    for text in ["<ID>", "--no-rate", "--any-ip"] {
        assert!(limits.stdout.contains(text), "{text:?} in {limits:?}");
    }
    let rotate = run_in(&sandbox.dir, &["rotate", "--help"]);
    assert!(rotate.stdout.contains("--grace <DURATION>"), "{rotate:?}");
    let usage = run_in(&sandbox.dir, &["usage", "--help"]);
    for text in ["[ID]", "--days <N>", "--owner <OWNER>", "--bars <WHEN>"] {
        assert!(usage.stdout.contains(text), "{text:?} in {usage:?}");
    }
    let prune = run_in(&sandbox.dir, &["prune-usage", "--help"]);
    assert!(prune.stdout.contains("--keep <DAYS>"), "{prune:?}");
    let audit = run_in(&sandbox.dir, &["audit", "--help"]);
    for text in [
        "[KEY_ID]",
        "--owner <OWNER>",
        "--limit <N>",
        "--before <SEQ>",
    ] {
        assert!(audit.stdout.contains(text), "{text:?} in {audit:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/// The fields of a key that hold its limits, as `show --json` and `list --json` print them.
fn limits_of(key: &Value) -> (Value, Value) {
    (key["rate_limit"].clone(), key["allowed_networks"].clone())
}

#[tokio::test]
async fn limits_are_kept_with_a_key_shown_and_changed_with_limits() {
    let sandbox = Sandbox::new();
    let alice = [("USER", Some("alice"))];
    let db = sandbox.db.to_str().unwrap().to_owned();
    let as_alice = |args: &[&str]| {
        let mut all = vec!["--db", db.as_str()];
        all.extend_from_slice(args);
        let run = run_in_env(&sandbox.dir, &all, &alice);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run
    };
    let (key, id) = sandbox.create(&[
        "--name",
        "Partner",
        "--rate",
        "100/s",
        "--burst",
        "20",
        "--allow-ip",
        "203.0.113.0/24",
        "--allow-ip",
        "2001:db8::/32",
    ]);
    let (open_key, open_id) = sandbox.create(&["--name", "Open"]);

    let rate = serde_json::json!({
        "requests": 100, "period_ms": 1000, "burst": 20, "text": "100/s burst 20"
    });
    let networks = serde_json::json!(["203.0.113.0/24", "2001:db8::/32"]);
    let (shown, _) = sandbox.json(&["show", &id]);
    assert_eq!(limits_of(&shown), (rate.clone(), networks.clone()));
    let (listed, _) = sandbox.json(&["list"]);
    assert_eq!(listed[1]["id"], id.as_str(), "{listed:#}");
    assert_eq!(limits_of(&listed[1]), (rate.clone(), networks.clone()));
    assert_eq!(limits_of(&listed[0]), (Value::Null, Value::Null));
    let text = sandbox.ok(&["show", &id]).stdout;
    assert!(text.contains("\nrate limit:   100/s burst 20\n"), "{text}");
    assert!(
        text.contains("\nallowed from: 203.0.113.0/24 2001:db8::/32\n"),
        "{text}"
    );

    // The store holds them, as a service reads them.
    let store = sandbox.store().await;
    let record = store.resolve(&KeyDigest::of(key.as_bytes())).await.unwrap();
    let limits = record.expect("the key resolves").limits;
    assert_eq!(limits.rate.unwrap().to_string(), "100/s burst 20");
    let allowed = limits.networks.unwrap();
    assert_eq!(allowed.to_string(), "203.0.113.0/24 2001:db8::/32");

    // A new rate replaces the old one; the networks stay.
    let changed = as_alice(&["limits", &id, "--rate", "5000/h"]);
    assert!(
        changed.stdout.starts_with(&format!(
            "Changed the limits of {id} (\"Partner\"): rate limit 5000/h; allowed from \
             203.0.113.0/24 2001:db8::/32.\n"
        )),
        "{changed:?}"
    );
    let (shown, _) = sandbox.json(&["show", &id]);
    let hourly = serde_json::json!({
        "requests": 5000, "period_ms": 3_600_000, "burst": 5000, "text": "5000/h"
    });
    assert_eq!(limits_of(&shown), (hourly.clone(), networks));

    // New networks replace the old ones; the rate stays. Commas work too.
    let run = as_alice(&[
        "limits",
        &id,
        "--allow-ip",
        "198.51.100.7,10.0.0.0/8",
        "--json",
    ]);
    let changed: Value = serde_json::from_str(&run.stdout).unwrap();
    let networks = serde_json::json!(["10.0.0.0/8", "198.51.100.7/32"]);
    assert_eq!(limits_of(&changed), (hourly, networks.clone()));

    // Cleared, one and then the other.
    as_alice(&["limits", &id, "--no-rate"]);
    let (shown, _) = sandbox.json(&["show", &id]);
    assert_eq!(limits_of(&shown), (Value::Null, networks));
    as_alice(&["limits", &id, "--any-ip", "--rate", "10/s burst 2"]);
    let (shown, _) = sandbox.json(&["show", &id]);
    assert_eq!(shown["rate_limit"]["text"], "10/s burst 2");
    assert!(shown["allowed_networks"].is_null(), "{shown:#}");
    as_alice(&["limits", &id, "--no-rate", "--any-ip"]);
    let text = sandbox.ok(&["show", &id]).stdout;
    assert!(text.contains("\nrate limit:   none\n"), "{text}");
    assert!(text.contains("\nallowed from: anywhere\n"), "{text}");

    // Every change is in the audit trail, by the tool's user.
    let (trail, _) = sandbox.json(&["audit", &id]);
    let entries = audit_entries(&trail);
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|(action, _, actor, _)| (action.as_str(), actor.as_str()))
        .collect();
    assert_eq!(actions.len(), 6, "{trail:#}");
    assert_eq!(actions[..5], [("limits_changed", "cli:alice"); 5]);
    assert_eq!(actions[5].0, "created");
    let table = sandbox.ok(&["audit", &id]).stdout;
    assert!(table.contains("  limits_changed  "), "{table}");

    // A rotation copies the limits.
    as_alice(&["limits", &open_id, "--rate", "1/s"]);
    let (rotated, _) = sandbox.json(&["rotate", &open_id, "--grace", "1h"]);
    assert_eq!(rotated["new"]["rate_limit"]["text"], "1/s", "{rotated:#}");
    assert_no_secret_in(&sandbox.ok(&["list"]).stdout, &[&key, &open_key]);
}

#[test]
fn bad_limits_exit_with_4_or_2_and_change_nothing() {
    let sandbox = Sandbox::new();
    let (_, id) = sandbox.create(&["--name", "Production", "--rate", "10/s"]);
    let create = |extra: &[&'static str]| {
        let mut args = vec!["create", "--name", "x"];
        args.extend_from_slice(extra);
        args
    };
    let invalid: &[(Vec<&str>, &str)] = &[
        (create(&["--rate", "0/s"]), "a count of requests is from 1"),
        (
            create(&["--rate", "fast"]),
            "expected a rate such as `100/s`",
        ),
        (
            create(&["--rate", "1/2d"]),
            "a rate's period is from 1ms to 1d",
        ),
        (create(&["--rate", "2000000/s"]), "at most a million"),
        (
            create(&["--rate", "100/s", "--burst", "0"]),
            "invalid --burst \"0\"",
        ),
        (create(&["--rate", "100/s", "--burst", "many"]), "--burst"),
        (create(&["--allow-ip", "10.0.0.0/33"]), "invalid --allow-ip"),
        (create(&["--allow-ip", "intranet"]), "a network such as"),
        (vec!["limits", &id, "--rate", "0/h"], "--rate"),
        (vec!["limits", &id, "--allow-ip", "300.1.1.1"], "--allow-ip"),
    ];
    for (args, what) in invalid {
        sandbox.run(args).fails(4, what);
    }
    let usage: &[&[&str]] = &[
        &["create", "--name", "x", "--burst", "5"],
        &["limits", &id],
        &["limits", &id, "--burst", "5"],
        &["limits", &id, "--no-rate", "--rate", "5/s"],
        &["limits", &id, "--no-rate", "--burst", "5"],
        &["limits", &id, "--any-ip", "--allow-ip", "10.0.0.0/8"],
        &["limits"],
    ];
    for args in usage {
        let run = sandbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    let (keys, _) = sandbox.json(&["list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["rate_limit"]["text"], "10/s");
    assert!(keys[0]["allowed_networks"].is_null());
    let (trail, _) = sandbox.json(&["audit"]);
    assert_eq!(audit_entries(&trail).len(), 1, "{trail:#}");
}

// ---------------------------------------------------------------------------------------------
// The audit trail
// ---------------------------------------------------------------------------------------------

/// Each entry of `audit --json` as (action, key id, actor, related key).
fn audit_entries(trail: &Value) -> Vec<(String, String, String, Option<String>)> {
    let text = |value: &Value| value.as_str().expect("a string").to_owned();
    trail
        .as_array()
        .expect("an array")
        .iter()
        .map(|entry| {
            (
                text(&entry["action"]),
                text(&entry["key_id"]),
                text(&entry["actor"]),
                entry["related_key"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn every_change_made_with_the_tool_is_in_the_audit_trail_with_its_user() {
    let sandbox = Sandbox::new();
    let alice = [("USER", Some("alice")), ("LOGNAME", Some("al"))];
    let carol = [("USER", None), ("LOGNAME", Some("carol"))];
    let nobody = [("USER", None), ("LOGNAME", None)];
    let json = |env: &[(&str, Option<&str>)], args: &[&str]| {
        let mut all = vec!["--db", sandbox.db.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push("--json");
        let run = run_in_env(&sandbox.dir, &all, env);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        let value: Value = serde_json::from_str(&run.stdout).unwrap();
        (value, run)
    };

    let args = [
        "create",
        "--prefix",
        "om",
        "--name",
        "Production",
        "--owner",
        "acct_1",
    ];
    let (created, _) = json(&alice, &args);
    let key_a = created["plaintext_key"].as_str().unwrap().to_owned();
    let a = created["key"]["id"].as_str().unwrap().to_owned();
    let (created, _) = json(
        &alice,
        &["create", "--name", "Webhook", "--owner", "acct_2"],
    );
    let key_b = created["plaintext_key"].as_str().unwrap().to_owned();
    let b = created["key"]["id"].as_str().unwrap().to_owned();
    json(&alice, &["rename", &a, "Prod EU", "--actor", "admin:bob"]);
    let (rotated, _) = json(&carol, &["rotate", &b, "--grace", "1h"]);
    let key_c = rotated["plaintext_key"].as_str().unwrap().to_owned();
    let c = rotated["new"]["id"].as_str().unwrap().to_owned();
    json(&alice, &["revoke", &a]);
    // Revoked already: nothing more is recorded.
    json(&carol, &["revoke", &a]);
    json(&nobody, &["delete", &a, "--yes"]);

    // An actor the store refuses changes nothing.
    for actor in ["", "  ", "tab\there"] {
        sandbox
            .run(&["rename", &b, "Refused", "--actor", actor])
            .fails(4, "actor");
    }

    let (trail, run) = json(&alice, &["audit"]);
    let entry = |action: &str, key: &str, actor: &str, related: Option<&str>| {
        (
            action.to_owned(),
            key.to_owned(),
            actor.to_owned(),
            related.map(str::to_owned),
        )
    };
    assert_eq!(
        audit_entries(&trail),
        [
            entry("deleted", &a, "cli", None),
            entry("revoked", &a, "cli:alice", None),
            entry("created", &c, "cli:carol", Some(&b)),
            entry("rotated", &b, "cli:carol", Some(&c)),
            entry("renamed", &a, "admin:bob", None),
            entry("created", &b, "cli:alice", None),
            entry("created", &a, "cli:alice", None),
        ],
        "{trail:#}"
    );
    let first = &trail[6];
    assert_eq!(first["owner"], "acct_1", "{first}");
    assert_eq!(first["key_name"], "Production", "{first}");
    assert_eq!(first["address"], Value::Null, "{first}");
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(trail[0]["key_name"], "Prod EU", "{trail:#}");
    let keys = [key_a.as_str(), key_b.as_str(), key_c.as_str()];
    assert_no_secret_in(&run.stdout, &keys);

    // Per key (the deleted one's trail stays) and per owner.
    let (of_a, _) = json(&alice, &["audit", &a]);
    let actions: Vec<String> = audit_entries(&of_a).into_iter().map(|e| e.0).collect();
    assert_eq!(actions, ["deleted", "revoked", "renamed", "created"]);
    let (of_acct_2, _) = json(&alice, &["audit", "--owner", "acct_2"]);
    let everything = audit_entries(&trail);
    // B's creation, its rotation and its replacement's creation.
    assert_eq!(
        audit_entries(&of_acct_2),
        [2, 3, 5].map(|i| everything[i].clone())
    );

    // A page at a time.
    let (page, _) = json(&alice, &["audit", "--limit", "4"]);
    assert_eq!(audit_entries(&page), audit_entries(&trail)[..4]);
    let last = page[3]["seq"].as_u64().unwrap().to_string();
    let (next, _) = json(&alice, &["audit", "--limit", "4", "--before", &last]);
    assert_eq!(audit_entries(&next), audit_entries(&trail)[4..]);

    // The table, newest first, with a way to the next page.
    let table = sandbox.ok(&["audit", "--limit", "2"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{table:?}");
    let header = "SEQ  TIME                  ACTION   KEY                   NAME";
    assert!(lines[0].starts_with(header), "{table:?}");
    assert!(
        lines[0].ends_with("ACTOR      ADDRESS  RELATED KEY"),
        "{table:?}"
    );
    assert!(lines[1].contains("  deleted  "), "{table:?}");
    assert!(
        lines[1].contains(&a) && lines[1].contains("Prod EU"),
        "{table:?}"
    );
    assert!(lines[2].contains("  revoked  "), "{table:?}");
    assert!(
        lines[3].starts_with("Older entries, if any: add --before "),
        "{table:?}"
    );
    assert_no_secret_in(&table.stdout, &keys);
    let all = sandbox.ok(&["audit"]);
    assert_eq!(all.stdout.lines().count(), 8, "{all:?}");
    assert_no_secret_in(&all.stdout, &keys);
    let none = sandbox.ok(&["audit", "key_doesnotexist000"]);
    assert_eq!(none.stdout, "No audit entries.\n");
    for args in [&["audit", "--limit", "0"][..], &["audit", "--before", "-1"]] {
        let run = sandbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

#[path = "common/pg.rs"]
mod pg;

mod postgres {
    use tower_api_key::store::sqlx::{self, Connection, PgConnection};
    use tower_api_key::Environment;

    use super::*;

    fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A schema of this test's own, dropped when the test ends, passed or failed.
    struct Schema(String);

    impl Drop for Schema {
        fn drop(&mut self) {
            crate::pg::clean_up(
                url(),
                vec![format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0)],
            );
        }
    }

    /// Whether PostgreSQL answers; panics when it does not and `CI` is set.
    async fn available() -> bool {
        match PgConnection::connect(&url()).await {
            Ok(conn) => {
                let _ = conn.close().await;
                true
            }
            Err(err) if std::env::var_os("CI").is_some() => {
                panic!(
                    "PostgreSQL at {} is unreachable, and CI is set: {err}",
                    url()
                )
            }
            Err(err) => {
                use std::io::Write as _;
                // Straight to stderr: the test harness captures `eprintln!` of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n\
                     ************************************************************************\n\
                     SKIPPING the PostgreSQL test of the command-line tool: {} is\n\
                     unreachable ({err}).\n\
                     Start PostgreSQL or set DATABASE_URL; with CI set, this is a failure.\n\
                     ************************************************************************\n",
                    url()
                );
                false
            }
        }
    }

    #[tokio::test]
    async fn create_list_and_revoke_in_postgres() {
        if !available().await {
            return;
        }
        let random = om().generate(Environment::Test).unwrap().digest().to_hex();
        let schema = Schema(format!("test_cli_{}", &random[..16]));
        let dir = tempfile::tempdir().unwrap();
        let url = url();
        let base = [
            "--database-url",
            url.as_str(),
            "--schema",
            schema.0.as_str(),
        ];
        let run = |args: &[&str]| {
            let mut all = base.to_vec();
            all.extend_from_slice(args);
            let run = run_in(&dir, &all);
            assert_eq!(run.code, 0, "{args:?}: {run:?}");
            run
        };

        let created = run(&[
            "create",
            "--prefix",
            "om",
            "--name",
            "Replica",
            "--scope",
            "orders:read",
            "--rate",
            "100/s",
            "--burst",
            "20",
            "--allow-ip",
            "2001:db8::/32",
            "--json",
        ]);
        let created: Value = serde_json::from_str(&created.stdout).unwrap();
        assert_eq!(created["key"]["rate_limit"]["text"], "100/s burst 20");
        let key = created["plaintext_key"].as_str().unwrap();
        let id = created["key"]["id"].as_str().unwrap();

        let listed = run(&["list"]);
        assert!(
            listed.stdout.lines().nth(1).unwrap().starts_with(id),
            "{listed:?}"
        );
        assert_no_secret_in(&listed.stdout, &[key]);

        let changed = run(&["limits", id, "--any-ip", "--json", "--actor", "ops:pg"]);
        let changed: Value = serde_json::from_str(&changed.stdout).unwrap();
        assert_eq!(changed["rate_limit"]["burst"], 20, "{changed:#}");
        assert!(changed["allowed_networks"].is_null(), "{changed:#}");

        let revoked = run(&["revoke", id, "--json", "--actor", "ops:pg"]);
        let revoked: Value = serde_json::from_str(&revoked.stdout).unwrap();
        assert_eq!(revoked["status"], "revoked");
        assert_no_secret_in(&revoked.to_string(), &[key]);

        let trail = run(&["audit", id, "--json"]);
        assert_no_secret_in(&trail.stdout, &[key]);
        let trail: Value = serde_json::from_str(&trail.stdout).unwrap();
        let entries = audit_entries(&trail);
        assert_eq!(entries.len(), 3, "{trail:#}");
        assert_eq!(
            (entries[0].0.as_str(), entries[0].2.as_str()),
            ("revoked", "ops:pg")
        );
        assert_eq!(
            (entries[1].0.as_str(), entries[1].2.as_str()),
            ("limits_changed", "ops:pg")
        );
        assert_eq!(entries[2].0, "created", "{trail:#}");
        assert!(entries[2].2.starts_with("cli"), "{trail:#}");

        // The store in that schema resolves the key, revoked.
        let store = tower_api_key::PostgresStore::connect(&url, om())
            .await
            .unwrap()
            .with_schema(schema.0.clone());
        let record = store
            .resolve(&KeyDigest::of(key.as_bytes()))
            .await
            .unwrap()
            .expect("the printed key resolves");
        assert_eq!(record.id.as_str(), id);
        assert!(record.revoked_at.is_some());
        assert_eq!(record.limits.rate.unwrap().to_string(), "100/s burst 20");
        assert_eq!(record.limits.networks, None);

        // Usage, as running services flush it, through the tool.
        let today = Day::today();
        let mut flush = UsageBatch::new();
        flush.keys = vec![
            used(id, today, &[(KeyOutcome::Revoked, 4)]),
            used(id, today.add_days(-50), &[(KeyOutcome::Allowed, 1)]),
        ];
        store.record_usage(&flush).await.unwrap();
        let series = run(&["usage", id, "--days", "2", "--json"]);
        let series: Value = serde_json::from_str(&series.stdout).unwrap();
        assert_eq!(series["days"][1]["revoked"], 4, "{series}");
        let summary = run(&["usage", "--json"]);
        let summary: Value = serde_json::from_str(&summary.stdout).unwrap();
        assert_eq!(summary["keys"][0]["totals"]["revoked"], 4, "{summary}");
        let pruned = run(&["prune-usage", "--keep", "30d", "--json"]);
        let pruned: Value = serde_json::from_str(&pruned.stdout).unwrap();
        assert_eq!(pruned["deleted"], 1, "{pruned}");
        store.pool().close().await;

        // The tables went to the schema asked for, not the default one.
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'api_keys'",
        )
        .bind(&schema.0)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(tables, 1);
        conn.close().await.unwrap();
    }
}

#[test]
fn the_prefix_is_read_from_the_store_and_another_one_is_refused() {
    let sandbox = Sandbox::new();
    // A new store: the tool does not guess its keys' prefix, and creates no file.
    sandbox
        .run(&["create", "--name", "First"])
        .fails(2, "give the prefix of its keys with --prefix");
    assert!(!sandbox.db.exists());

    // Created with --prefix acme: the store records it, and every later command reads it.
    let created = sandbox.ok(&["create", "--prefix", "acme", "--name", "First", "--json"]);
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    assert!(created["plaintext_key"]
        .as_str()
        .unwrap()
        .starts_with("acme_live_"));
    let (second, _) = sandbox.create(&["--name", "Second"]);
    assert!(second.starts_with("acme_live_"), "the recorded prefix");
    let (listed, _) = sandbox.json(&["list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Another prefix is refused, naming both, and changes nothing.
    sandbox
        .run(&["create", "--prefix", "om", "--name", "Third"])
        .fails(
            4,
            "the prefix `acme`, but it was opened for keys with the prefix `om`",
        );
    sandbox.run(&["list", "--prefix", "om"]).fails(4, "`acme`");
    assert_eq!(sandbox.json(&["list"]).0.as_array().unwrap().len(), 2);

    // A service opening the file with the recorded format finds the keys the tool made.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&sandbox.db, KeyFormat::new("acme").unwrap())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let digest = KeyDigest::of(second.as_bytes());
        assert!(store.resolve(&digest).await.unwrap().is_some());
        let other = SqliteStore::open(&sandbox.db, om()).await.unwrap();
        assert!(matches!(
            other.migrate().await,
            Err(tower_api_key::StoreError::FormatMismatch { .. })
        ));
    });
}

#[test]
fn a_key_rotated_already_cannot_be_rotated_again() {
    let sandbox = Sandbox::new();
    let (_, id) = sandbox.create(&["--name", "Production"]);
    let (rotated, _) = sandbox.json(&["rotate", &id, "--grace", "1h"]);
    let replacement = rotated["new"]["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["old"]["replaced_by"], replacement.as_str());
    assert!(sandbox
        .ok(&["show", &id])
        .stdout
        .contains(&format!("replaced by:  {replacement}\n")));

    // A second "rotate" on the old key would give a key that dies with it: refused, naming the
    // replacement, with nothing created.
    let run = sandbox.run(&["rotate", &id, "--grace", "1h"]);
    run.fails(4, &format!("its replacement is `{replacement}`"));
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(sandbox.json(&["list"]).0.as_array().unwrap().len(), 2);

    // The replacement rotates as usual.
    let (again, _) = sandbox.json(&["rotate", &replacement, "--grace", "1h"]);
    assert_eq!(again["old"]["id"], replacement.as_str());
}
