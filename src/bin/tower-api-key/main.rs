//! `tower-api-key`: manage the API keys of a `tower-api-key` store from the command line.
//!
//! Works on a SQLite file (`--db`, default `ordermonk.db`) or on PostgreSQL (`--database-url` or
//! `DATABASE_URL`), creating or updating the tables first. Run `tower-api-key --help` for the
//! commands and the exit codes; the README has examples.

#![forbid(unsafe_code)]
#![warn(
    rust_2018_idioms,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod output;
mod time;
mod usage;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal as _, Write as _};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use futures_util::future::BoxFuture;
use tower_api_key::limit::parse_network;
use tower_api_key::store::{MAX_AUDIT_PAGE, MAX_SERIES_DAYS};
use tower_api_key::{
    Actor, AllowedNetworks, AuditQuery, Day, Environment, InvalidLimit, KeyFormat, KeyId,
    KeyLimits, KeyStore, NewKey, PostgresStore, RateLimit, Scope, SqlDatabase, SqlStore,
    SqliteStore, StoreError,
};

use crate::time::{latest_storable, parse_duration, parse_rfc3339};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure
  2  usage error: unknown command or flag, missing argument, a value not among the choices,
     conflicting flags, --burst without --rate, `limits` with nothing to change, `delete`
     without --yes, no --prefix for a store that records none
  3  no key has this id
  4  invalid input: a name, scope, duration, time, metadata entry, rate, burst or network, an
     expiry in the past, a revoked, expired or already rotated key given to `rotate`, a
     retention that is not whole days, a --prefix other than the store's, a PostgreSQL schema
     name over 63 bytes, or an --actor that is blank, over 200 characters or holds control
     characters
  5  the key store is unavailable: the database cannot be opened or reached, or it failed

Errors are one line on stderr, starting with `tower-api-key: `.";

/// Manage the API keys of a tower-api-key store: create, list, show, rename, limit, revoke,
/// rotate and delete them, see how they are used, and who changed them.
///
/// The keys live in a SQLite file (--db, default `ordermonk.db`, the OrderMonk demo's) or in
/// PostgreSQL when --database-url or DATABASE_URL is given. The tables are created or updated
/// first. A key's plaintext is printed once, by `create` or `rotate`, and never again: the store
/// keeps only its SHA-256 digest. Every change is written to the store's audit trail as made by
/// `cli:$USER` (or --actor).
#[derive(Parser)]
#[command(name = "tower-api-key", version, after_help = EXIT_CODES)]
struct Cli {
    /// Print JSON for scripts instead of text. Never includes a digest; includes the plaintext
    /// key only for `create` and `rotate`, as `plaintext_key`.
    #[arg(long, global = true)]
    json: bool,

    /// Who the audit trail records as making the changes (default: `cli:` and $USER, or
    /// $LOGNAME; `cli` when neither is set). 1 to 200 characters, no control characters.
    #[arg(long, global = true, value_name = "ID")]
    actor: Option<String>,

    #[command(flatten, next_help_heading = "Store options")]
    store: StoreArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct StoreArgs {
    /// The SQLite file that holds the keys (created by `create` if missing).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "TOWER_API_KEY_DB",
        hide_env_values = true,
        default_value = "ordermonk.db"
    )]
    db: PathBuf,

    /// Keep the keys in PostgreSQL at this URL instead of a SQLite file. A --db given on the
    /// command line wins over DATABASE_URL from the environment.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,

    /// The PostgreSQL schema that holds the tables (created if missing).
    #[arg(
        long,
        global = true,
        value_name = "SCHEMA",
        env = "TOWER_API_KEY_SCHEMA",
        hide_env_values = true,
        default_value = "ordermonk"
    )]
    schema: String,

    /// The product prefix of the store's keys, as `om` in `om_live_…`. Needed only for a new
    /// store: the store records it when its tables are created, and the tool reads it from
    /// there. A prefix other than the recorded one is refused.
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        env = "TOWER_API_KEY_PREFIX",
        hide_env_values = true
    )]
    prefix: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a key and print it, once.
    ///
    /// The key is printed on stdout (as `plaintext_key` with --json) with a warning on stderr:
    /// it cannot be shown again.
    Create(CreateArgs),

    /// List keys in a table, newest first.
    List {
        /// Only the keys of this owner.
        #[arg(long, value_name = "OWNER")]
        owner: Option<String>,

        /// Only the keys of this environment (default: both).
        #[arg(long = "env", value_name = "ENV", value_enum)]
        environment: Option<EnvironmentArg>,
    },

    /// Show every field of one key.
    Show {
        /// The key's id, such as `key_3hV9yQ2mW7pL1xKd`.
        id: String,
    },

    /// Give a key a new name.
    Rename {
        /// The key's id.
        id: String,
        /// The new name: 1 to 100 characters, no control characters.
        name: String,
    },

    /// Change a key's rate limit or the networks it may be used from.
    ///
    /// The options given replace that limit; a limit not mentioned is kept as it is. --no-rate
    /// and --any-ip remove one. Every service built on the same store checks the key's next
    /// request against the new limits: the tool returns once they have had time to see the
    /// change, as `revoke` does.
    #[command(group(
        clap::ArgGroup::new("change")
            .args(["rate", "allowed_networks", "no_rate", "any_ip"])
            .required(true)
            .multiple(true)
    ))]
    Limits {
        /// The key's id.
        id: String,

        #[command(flatten)]
        limits: LimitArgs,

        /// Remove the key's rate limit.
        #[arg(long, conflicts_with_all = ["rate", "burst"])]
        no_rate: bool,

        /// Let the key be used from any address: remove its allowlist.
        #[arg(long, conflicts_with = "allowed_networks")]
        any_ip: bool,
    },

    /// Revoke a key: it is refused from the next request on.
    ///
    /// Every service built on the same store refuses it from its next request on, in whatever
    /// process or instance it runs: the tool returns once they have had time to see the change
    /// (on PostgreSQL a millisecond or two; on SQLite one polling interval, 100 ms). Revoking a
    /// revoked key succeeds and keeps the first revocation time.
    Revoke {
        /// The key's id.
        id: String,
    },

    /// Replace a key with a new one; the old key keeps working for the grace period.
    ///
    /// The new key has the old one's name, owner, environment, scopes, metadata, limits and
    /// expiry; it is printed once, like `create` does. The old key is refused after the grace period (or
    /// its own expiry, if sooner). Revoked and expired keys cannot be rotated, nor a key rotated
    /// already: rotate its replacement, which the error names.
    Rotate {
        /// The key's id.
        id: String,

        /// How long the old key keeps working: `90s`, `15m`, `24h`, `30d`; `0s` ends it now.
        #[arg(long, value_name = "DURATION")]
        grace: String,
    },

    /// Delete a key for good (revoke it to keep its record).
    Delete {
        /// The key's id.
        id: String,

        /// Confirm the deletion: the tool never prompts, so that scripts cannot hang.
        #[arg(long)]
        yes: bool,
    },

    /// Show a key's requests day by day, or every key's totals and last use.
    ///
    /// With a key id: a row per UTC day over the last --days days, today included, counting
    /// the requests let through (ALLOWED) and those refused for a missing scope, as revoked, as
    /// expired or over a rate limit, with a bar per day when stdout is a terminal. Without one:
    /// every key (or --owner's), newest first, with its last use and its requests over those
    /// days, noting keys never used or not used on any of them. Running services add their
    /// counts to the store every few seconds.
    Usage(UsageArgs),

    /// Show the audit trail: who created, renamed, changed the limits of, rotated, revoked or
    /// deleted keys, newest first.
    ///
    /// With a key id, that key's entries (a deleted key's included); with --owner, the entries
    /// of that owner's keys; otherwise every entry. Each shows its number (SEQ), the time (UTC),
    /// the action, the key, its name, the actor and the address the change came from, and for a
    /// rotation the other key. At most --limit entries are shown; the next page starts
    /// --before the last number shown.
    Audit(AuditArgs),

    /// Delete the daily usage counts of days past a retention; last uses are kept.
    ///
    /// `--keep 90d` keeps today and the 89 days before it, for every key and for the requests
    /// made with unknown keys, and deletes the counts of earlier days.
    PruneUsage {
        /// How many days of counts to keep, today included, in whole days: `30d`, `90d`.
        #[arg(long, value_name = "DAYS")]
        keep: String,
    },
}

#[derive(Args)]
struct UsageArgs {
    /// The key's id; without it, every key (or --owner's) with its totals.
    id: Option<String>,

    /// Only the keys of this owner.
    #[arg(long, value_name = "OWNER", conflicts_with = "id")]
    owner: Option<String>,

    /// How many days to show, ending today (UTC): 1 to 36525.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SERIES_DAYS))
    )]
    days: u32,

    /// When to draw a bar per day: `auto` when stdout is a terminal, `always` or `never`.
    #[arg(long, value_name = "WHEN", value_enum, default_value = "auto")]
    bars: BarsArg,
}

#[derive(Args)]
struct AuditArgs {
    /// Only the entries of this key (a deleted key's included).
    #[arg(value_name = "KEY_ID")]
    id: Option<String>,

    /// Only the entries of this owner's keys.
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,

    /// How many entries to show at most: 1 to 1000.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_AUDIT_PAGE))
    )]
    limit: u32,

    /// Only entries older than entry SEQ: the next page after one that ended at SEQ.
    #[arg(long, value_name = "SEQ")]
    before: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BarsArg {
    Auto,
    Always,
    Never,
}

impl BarsArg {
    fn draw(self) -> bool {
        match self {
            BarsArg::Auto => std::io::stdout().is_terminal(),
            BarsArg::Always => true,
            BarsArg::Never => false,
        }
    }
}

#[derive(Args)]
struct CreateArgs {
    /// A name that says where the key is used, such as "Production" or "Webhook Server".
    #[arg(long, value_name = "NAME")]
    name: String,

    /// The account or user that owns the key (default: none).
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,

    /// A scope the key grants, as `resource:action` (repeat the flag, or separate with commas).
    /// Grant only what the integration needs.
    #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
    scopes: Vec<String>,

    /// `live` keys reach production data, `test` keys sandbox data only.
    #[arg(long = "env", value_name = "ENV", value_enum, default_value = "live")]
    environment: EnvironmentArg,

    /// Expire the key after this long: `90s`, `15m`, `24h`, `30d` (default: never).
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    expires_in: Option<String>,

    /// Expire the key at this RFC 3339 time, such as `2026-12-31T23:59:59Z` (default: never).
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,

    /// A metadata entry kept with the key, as `name=value` (repeat for more).
    #[arg(long = "meta", value_name = "NAME=VALUE")]
    metadata: Vec<String>,

    #[command(flatten)]
    limits: LimitArgs,
}

/// A key's limits, as `create` and `limits` take them.
#[derive(Args)]
struct LimitArgs {
    /// Limit the key to this rate: `100/s`, `5000/h`, `10/30s` (units ms, s, m, h, d),
    /// optionally with a burst as in `100/s burst 20`.
    #[arg(long, value_name = "RATE")]
    rate: Option<String>,

    /// At most this many requests at once (with --rate; without it, a whole period's
    /// requests).
    #[arg(long, value_name = "N", requires = "rate")]
    burst: Option<String>,

    /// A network the key may be used from, in CIDR form (`203.0.113.0/24`, `2001:db8::/32`) or
    /// one address; repeat the flag or separate with commas.
    #[arg(long = "allow-ip", value_name = "NET", value_delimiter = ',')]
    allowed_networks: Vec<String>,
}

impl LimitArgs {
    /// The rate asked for, if any, with its burst.
    fn rate(&self) -> Result<Option<RateLimit>, Failure> {
        let Some(text) = &self.rate else {
            return Ok(None);
        };
        let invalid = |flag: &str, text: &str, err: InvalidLimit| {
            Failure::invalid(format_args!("invalid {flag} {text:?}: {err}"))
        };
        let mut rate: RateLimit = text.parse().map_err(|err| invalid("--rate", text, err))?;
        if let Some(burst) = &self.burst {
            let count = burst
                .parse::<NonZeroU32>()
                .map_err(|_| invalid("--burst", burst, InvalidLimit::Count))?;
            rate = rate.with_burst(count);
        }
        Ok(Some(rate))
    }

    /// The networks asked for, if any.
    fn networks(&self) -> Result<Option<AllowedNetworks>, Failure> {
        if self.allowed_networks.is_empty() {
            return Ok(None);
        }
        let networks = self
            .allowed_networks
            .iter()
            .map(|text| {
                parse_network(text).map_err(|err| {
                    Failure::invalid(format_args!("invalid --allow-ip {text:?}: {err}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowedNetworks::new(networks)
            .map(Some)
            .map_err(|err| Failure::invalid(format_args!("invalid --allow-ip: {err}")))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EnvironmentArg {
    Live,
    Test,
}

impl From<EnvironmentArg> for Environment {
    fn from(environment: EnvironmentArg) -> Self {
        match environment {
            EnvironmentArg::Live => Environment::Live,
            EnvironmentArg::Test => Environment::Test,
        }
    }
}

/// Why the tool failed: the exit code and one line for stderr.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    const OTHER: u8 = 1;
    const USAGE: u8 = 2;
    const UNKNOWN_KEY: u8 = 3;
    const INVALID: u8 = 4;
    const UNAVAILABLE: u8 = 5;

    fn new(code: u8, message: impl fmt::Display) -> Self {
        Failure {
            code,
            message: message.to_string(),
        }
    }

    fn invalid(message: impl fmt::Display) -> Self {
        Failure::new(Failure::INVALID, message)
    }

    /// A store error, with `context` (such as "cannot open the SQLite file x.db") before it.
    fn store(context: &str, err: StoreError) -> Self {
        Failure::new(exit_code(&err), format_args!("{context}: {err}"))
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::new(exit_code(&err), err)
    }
}

/// The exit code of a store error.
fn exit_code(err: &StoreError) -> u8 {
    match err {
        StoreError::UnknownKey(_) => Failure::UNKNOWN_KEY,
        StoreError::EmptyName
        | StoreError::NameTooLong
        | StoreError::NameHasControlCharacters
        | StoreError::InvalidScope(_)
        | StoreError::ExpiryInPast
        | StoreError::Revoked(_)
        | StoreError::Expired(_)
        | StoreError::AlreadyRotated { .. }
        | StoreError::FormatMismatch { .. }
        | StoreError::InvalidSchemaName(_)
        | StoreError::InvalidActor
        | StoreError::SeriesTooLong => Failure::INVALID,
        StoreError::NoRecordedFormat => Failure::USAGE,
        StoreError::Unavailable(_) => Failure::UNAVAILABLE,
        // Random number generator failures, and errors added to the library later.
        _ => Failure::OTHER,
    }
}

/// What a command prints.
struct Printed {
    stdout: String,
    /// The id of a key whose plaintext is in `stdout`: printing it is the only chance to see it.
    shows_key: Option<KeyId>,
}

impl Printed {
    fn text(stdout: String) -> Self {
        Printed {
            stdout,
            shows_key: None,
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    // `get_matches` has checked the arguments against this very definition, so this does not
    // fail in practice; should it, clap reports it as a usage error.
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let source = StoreSource::choose(&cli.store, &matches);
    let outcome = source.and_then(|source| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failure::new(Failure::OTHER, format_args!("cannot start: {err}")))?
            .block_on(run(cli, source))
    });
    match outcome.and_then(print) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One line, whatever the database's message looked like.
            let message: Vec<&str> = failure.message.lines().map(str::trim).collect();
            let _ = writeln!(std::io::stderr(), "tower-api-key: {}", message.join(" "));
            ExitCode::from(failure.code)
        }
    }
}

/// Writes the output; a shown key gets the warning on stderr first.
fn print(printed: Printed) -> Result<(), Failure> {
    if printed.shows_key.is_some() {
        let _ = writeln!(std::io::stderr(), "{}", output::SHOWN_ONCE);
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(printed.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    written.map_err(|err| match printed.shows_key {
        Some(id) => Failure::new(
            Failure::OTHER,
            format_args!(
                "key {id} was created, but it could not be printed ({err}) and cannot be shown \
                 again: revoke it with `tower-api-key revoke {id}`"
            ),
        ),
        None => Failure::new(
            Failure::OTHER,
            format_args!("cannot write to stdout: {err}"),
        ),
    })
}

/// Where the keys are.
enum StoreSource {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl StoreSource {
    /// PostgreSQL if --database-url is given, SQLite if --db is; otherwise PostgreSQL if
    /// `DATABASE_URL` is set, and the SQLite file of `TOWER_API_KEY_DB` or the default if not.
    fn choose(args: &StoreArgs, matches: &clap::ArgMatches) -> Result<StoreSource, Failure> {
        let typed = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
        let postgres = |url: &String| StoreSource::Postgres {
            url: url.clone(),
            schema: args.schema.clone(),
        };
        match &args.database_url {
            Some(_) if typed("database_url") && typed("db") => Err(Failure::new(
                Failure::USAGE,
                "--db and --database-url name two different stores: give one of them",
            )),
            Some(url) if typed("database_url") || !typed("db") => Ok(postgres(url)),
            _ => Ok(StoreSource::Sqlite(args.db.clone())),
        }
    }

    /// Says where the keys are, for messages: never the URL, which may hold a password.
    fn describe(&self) -> String {
        match self {
            StoreSource::Sqlite(path) => format!("the SQLite file {}", path.display()),
            StoreSource::Postgres { schema, .. } => format!("PostgreSQL, schema {schema}"),
        }
    }

    /// Opens the store and brings its tables up to date. `create_file` lets a missing SQLite
    /// file be created; other commands have nothing to do in a new file.
    ///
    /// With a prefix, the store is opened for keys of that format (migrating refuses it if the
    /// store records another); without one, with the format the store records.
    async fn open(
        &self,
        prefix: Option<&str>,
        create_file: bool,
    ) -> Result<Box<dyn ToolStore>, Failure> {
        let place = self.describe();
        let format = prefix
            .map(|prefix| KeyFormat::new(prefix.to_owned()).map_err(Failure::invalid))
            .transpose()?;
        let opening = |err| Failure::store(&format!("cannot open {place}"), err);
        let migrating = |err| Failure::store(&format!("cannot use {place}"), err);
        let store: Box<dyn ToolStore> = match self {
            StoreSource::Sqlite(path) => {
                // Only `create` starts a file, and only when it knows the prefix of its keys.
                let may_start = create_file && format.is_some();
                if !path.exists() && !may_start {
                    return Err(Failure::new(
                        if create_file {
                            Failure::USAGE
                        } else {
                            Failure::UNAVAILABLE
                        },
                        if create_file {
                            format!(
                                "{place} does not exist yet: give the prefix of its keys with \
                                 --prefix (as `om` in `om_live_…`) to create it"
                            )
                        } else {
                            format!(
                                "{place} does not exist: give the right file with --db (or \
                                 TOWER_API_KEY_DB), or create a key to start one"
                            )
                        },
                    ));
                }
                let store = match format {
                    Some(format) => SqliteStore::open(path, format).await,
                    None => SqliteStore::open_recorded(path).await,
                }
                .map_err(|err| self.no_prefix(err).unwrap_or_else(opening))?;
                store.migrate().await.map_err(migrating)?;
                Box::new(store)
            }
            StoreSource::Postgres { url, schema } => {
                let store = match format {
                    Some(format) => PostgresStore::connect(url, format)
                        .await
                        .map(|store| store.with_schema(schema.clone())),
                    None => PostgresStore::connect_recorded(url, schema).await,
                }
                .map_err(|err| self.no_prefix(err).unwrap_or_else(opening))?;
                store.migrate().await.map_err(migrating)?;
                Box::new(store)
            }
        };
        Ok(store)
    }

    /// The failure for a store that records no key format, opened without --prefix.
    fn no_prefix(&self, err: StoreError) -> Result<Failure, StoreError> {
        match err {
            StoreError::NoRecordedFormat => Ok(Failure::new(
                Failure::USAGE,
                format_args!(
                    "{} records no key format yet: give the prefix of its keys with --prefix (as \
                     `om` in `om_live_…`)",
                    self.describe()
                ),
            )),
            other => Err(other),
        }
    }
}

/// A store the tool can use: the key lifecycle, and waiting until running services have seen
/// a change.
trait ToolStore: KeyStore {
    /// Returns once services watching the store with the default settings have seen the
    /// changes made so far ([`SqlStore::propagated`](tower_api_key::SqlStore::propagated)).
    fn propagated(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl<DB: SqlDatabase> ToolStore for SqlStore<DB> {
    fn propagated(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SqlStore::propagated(self))
    }
}

/// Waits until running services have seen a change that narrows a key, so that they refuse it
/// once the tool has said it is done. The change stands either way: a failure to wait is only
/// a warning, since the services will see it anyway.
async fn wait_for_services(store: &dyn ToolStore) {
    if let Err(err) = store.propagated().await {
        eprintln!(
            "warning: the change is made, but the tool could not confirm that running services \
             have seen it yet: {err}"
        );
    }
}

/// Who the audit trail records as making the tool's changes: `--actor`, or `cli:` and the
/// user's login name from the environment.
fn actor(given: Option<String>) -> Actor {
    let login = |name| std::env::var(name).ok().filter(|user| !user.is_empty());
    let id = given.unwrap_or_else(|| match login("USER").or_else(|| login("LOGNAME")) {
        Some(user) => format!("cli:{user}"),
        None => "cli".to_owned(),
    });
    Actor::new(id)
}

async fn run(cli: Cli, source: StoreSource) -> Result<Printed, Failure> {
    let prefix = cli.store.prefix.as_deref();
    let json = cli.json;
    let actor = actor(cli.actor);
    match cli.command {
        Command::Create(args) => {
            // Everything the tool can check is checked before the store is touched.
            let new = new_key(args)?;
            let store = source.open(prefix, true).await?;
            let created = store.create_by(new, &actor).await?;
            let now = SystemTime::now();
            let stdout = if json {
                json_text(output::created_json(&created, now))?
            } else {
                output::created_text(&created, now)
            };
            Ok(Printed {
                stdout,
                shows_key: Some(created.id().clone()),
            })
        }
        Command::List { owner, environment } => {
            let store = source.open(prefix, false).await?;
            let mut keys = store.list(owner.as_deref()).await?;
            if let Some(environment) = environment {
                let environment = Environment::from(environment);
                keys.retain(|key| key.record.environment == environment);
            }
            Ok(Printed::text(if json {
                json_text(output::keys_json(&keys, SystemTime::now()))?
            } else {
                output::table(&keys)
            }))
        }
        Command::Show { id } => {
            let store = source.open(prefix, false).await?;
            let key = store.get(&KeyId::from(id)).await?;
            let now = SystemTime::now();
            Ok(Printed::text(if json {
                json_text(output::key_json(&key, now))?
            } else {
                output::fields(&key, now)
            }))
        }
        Command::Rename { id, name } => {
            let store = source.open(prefix, false).await?;
            let key = store.rename_by(&KeyId::from(id), &name, &actor).await?;
            wait_for_services(&*store).await;
            Ok(Printed::text(if json {
                json_text(output::key_json(&key, SystemTime::now()))?
            } else {
                output::renamed_text(&key)
            }))
        }
        Command::Limits {
            id,
            limits,
            no_rate,
            any_ip,
        } => {
            let (rate, networks) = (limits.rate()?, limits.networks()?);
            let store = source.open(prefix, false).await?;
            let id = KeyId::from(id);
            let mut changed = store.get(&id).await?.record.limits;
            if no_rate || rate.is_some() {
                changed.rate = rate;
            }
            if any_ip || networks.is_some() {
                changed.networks = networks;
            }
            let key = store.set_limits_by(&id, changed, &actor).await?;
            wait_for_services(&*store).await;
            Ok(Printed::text(if json {
                json_text(output::key_json(&key, SystemTime::now()))?
            } else {
                output::limits_text(&key)
            }))
        }
        Command::Revoke { id } => {
            let store = source.open(prefix, false).await?;
            let key = store.revoke_by(&KeyId::from(id), &actor).await?;
            wait_for_services(&*store).await;
            Ok(Printed::text(if json {
                json_text(output::key_json(&key, SystemTime::now()))?
            } else {
                output::revoked_text(&key)
            }))
        }
        Command::Rotate { id, grace } => {
            let grace = parse_duration(&grace).map_err(Failure::invalid)?;
            let store = source.open(prefix, false).await?;
            let rotation = store.rotate_by(&KeyId::from(id), grace, &actor).await?;
            wait_for_services(&*store).await;
            let now = SystemTime::now();
            let stdout = if json {
                json_text(output::rotated_json(&rotation, now))?
            } else {
                output::rotated_text(&rotation, now)
            };
            Ok(Printed {
                stdout,
                shows_key: Some(rotation.new.id().clone()),
            })
        }
        Command::Delete { id, yes } => {
            if !yes {
                return Err(Failure::new(
                    Failure::USAGE,
                    format_args!(
                        "deleting a key cannot be undone: add --yes to delete {id} (or revoke \
                         it to keep its record)"
                    ),
                ));
            }
            let store = source.open(prefix, false).await?;
            store.delete_by(&KeyId::from(id.as_str()), &actor).await?;
            wait_for_services(&*store).await;
            Ok(Printed::text(if json {
                json_text(output::deleted_json(&id))?
            } else {
                output::deleted_text(&id)
            }))
        }
        Command::Usage(args) => {
            let store = source.open(prefix, false).await?;
            let (from, to) = last_days(args.days);
            let stdout = match args.id {
                Some(id) => {
                    let id = KeyId::from(id);
                    let key = store.get(&id).await?;
                    let series = store.usage(&id, from, to).await?;
                    if json {
                        json_text(usage::series_json(&key, &series))?
                    } else {
                        usage::series_text(&key, &series, args.bars.draw())
                    }
                }
                None => {
                    let owner = args.owner.as_deref();
                    let summary = store.usage_summary(owner, from, to).await?;
                    if json {
                        json_text(usage::summary_json(owner, from, to, &summary))?
                    } else {
                        usage::summary_text(owner, from, to, &summary)
                    }
                }
            };
            Ok(Printed::text(stdout))
        }
        Command::Audit(args) => {
            let store = source.open(prefix, false).await?;
            let mut query = AuditQuery::all().limit(args.limit);
            if let Some(id) = args.id {
                query = query.key(KeyId::from(id));
            }
            if let Some(owner) = args.owner {
                query = query.owner(owner);
            }
            if let Some(before) = args.before {
                query = query.before(before);
            }
            let trail = store.audit(&query).await?;
            Ok(Printed::text(if json {
                json_text(output::audit_json(&trail))?
            } else {
                output::audit_table(&trail, args.limit)
            }))
        }
        Command::PruneUsage { keep } => {
            let keep = retention(&keep)?;
            let store = source.open(prefix, false).await?;
            let (before, _) = last_days(keep);
            let deleted = store.prune_usage(before).await?;
            Ok(Printed::text(if json {
                json_text(usage::pruned_json(deleted, before))?
            } else {
                usage::pruned_text(deleted, before)
            }))
        }
    }
}

/// The first and the last of the `days` UTC days that end today.
fn last_days(days: u32) -> (Day, Day) {
    let today = Day::today();
    let back = i32::try_from(days.saturating_sub(1)).unwrap_or(i32::MAX);
    (today.add_days(-back), today)
}

/// How many days a retention such as `90d` keeps: whole days, at least one.
fn retention(text: &str) -> Result<u32, Failure> {
    const DAY: u64 = 86_400;
    let duration = parse_duration(text).map_err(Failure::invalid)?;
    let seconds = duration.as_secs();
    if seconds < DAY || seconds % DAY != 0 {
        return Err(Failure::invalid(format_args!(
            "invalid retention {text:?}: expected whole days, at least one, such as 30d or 90d"
        )));
    }
    // `parse_duration` reads up to about 20,000 years: far fewer days than a `u32` holds.
    u32::try_from(seconds / DAY).map_err(Failure::invalid)
}

/// The JSON output, or a failure. Only strings, maps of strings and options are serialized,
/// which cannot fail; this keeps even that case from being a panic.
fn json_text(json: Result<String, serde_json::Error>) -> Result<String, Failure> {
    json.map_err(|err| Failure::new(Failure::OTHER, format_args!("cannot write JSON: {err}")))
}

/// The key `create` asks for, with its scopes, expiry, metadata and limits checked.
fn new_key(args: CreateArgs) -> Result<NewKey, Failure> {
    let scopes = args
        .scopes
        .into_iter()
        .map(Scope::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::invalid)?;
    let mut new = NewKey::new(args.name, args.environment.into())
        .owner(args.owner.unwrap_or_default())
        .scopes(scopes);
    if let Some(expires_at) = expires_at(args.expires_in, args.expires_at)? {
        new = new.expires_at(expires_at);
    }
    for (name, value) in metadata(args.metadata)? {
        new = new.metadata(name, value);
    }
    let limits = KeyLimits::none()
        .with_rate(args.limits.rate()?)
        .with_networks(args.limits.networks()?);
    Ok(new.limits(limits))
}

/// The expiry given as a duration from now or as a time, if any.
fn expires_at(
    expires_in: Option<String>,
    expires_at: Option<String>,
) -> Result<Option<SystemTime>, Failure> {
    let at = match (expires_in, expires_at) {
        (Some(duration), _) => {
            let duration = parse_duration(&duration).map_err(Failure::invalid)?;
            SystemTime::now().checked_add(duration)
        }
        (None, Some(time)) => Some(parse_rfc3339(&time).map_err(Failure::invalid)?),
        (None, None) => return Ok(None),
    };
    match at {
        // Checked here because the stores keep times up to the end of year 9999 only.
        Some(at) if at <= latest_storable() => Ok(Some(at)),
        _ => Err(Failure::invalid(
            "a key's expiry must be no later than 9999-12-31T23:59:59Z",
        )),
    }
}

/// `name=value` entries, each name once.
fn metadata(entries: Vec<String>) -> Result<BTreeMap<String, String>, Failure> {
    let mut metadata = BTreeMap::new();
    for entry in entries {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(Failure::invalid(format_args!(
                "invalid metadata entry {entry:?}: expected name=value"
            )));
        };
        if name.is_empty() {
            return Err(Failure::invalid(format_args!(
                "invalid metadata entry {entry:?}: the name is empty"
            )));
        }
        if entry.chars().any(char::is_control) {
            return Err(Failure::invalid(format_args!(
                "invalid metadata entry {entry:?}: control characters are not allowed"
            )));
        }
        if metadata.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(Failure::invalid(format_args!(
                "metadata entry {name:?} is given twice"
            )));
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn metadata_entries_are_checked() {
        let entries = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = metadata(entries(&["team=integrations", "note=a=b", "empty="])).unwrap();
        assert_eq!(parsed["team"], "integrations");
        assert_eq!(parsed["note"], "a=b");
        assert_eq!(parsed["empty"], "");
        for bad in [
            &["no-equals"][..],
            &["=value"],
            &["a=1", "a=2"],
            &["a=\u{1b}[31m"],
        ] {
            let failure = metadata(entries(bad)).unwrap_err();
            assert_eq!(failure.code, Failure::INVALID, "{bad:?}");
        }
    }

    #[test]
    fn expiries_are_checked() {
        assert!(expires_at(None, None).unwrap().is_none());
        let in_a_day = expires_at(Some("1d".into()), None).unwrap().unwrap();
        let from_now = in_a_day.duration_since(SystemTime::now()).unwrap();
        assert!(from_now > Duration::from_secs(86_300), "{from_now:?}");
        assert!(expires_at(None, Some("9999-12-31T23:59:59Z".into())).is_ok());
        for (expires_in, at) in [
            (Some("1y"), None),
            (None, Some("tomorrow")),
            (None, Some("9999-12-31T23:59:59-01:00")),
            (Some("3000000d"), None),
        ] {
            let failure = expires_at(expires_in.map(Into::into), at.map(Into::into)).unwrap_err();
            assert_eq!(failure.code, Failure::INVALID, "{expires_in:?} {at:?}");
        }
    }

    #[test]
    fn retentions_are_whole_days() {
        assert_eq!(retention("90d").unwrap(), 90);
        assert_eq!(retention("1d").unwrap(), 1);
        assert_eq!(retention("48h").unwrap(), 2);
        assert_eq!(retention("3000000d").unwrap(), 3_000_000);
        for bad in ["0d", "36h", "90", "-1d", "1w", "99999999999d"] {
            assert_eq!(retention(bad).unwrap_err().code, Failure::INVALID, "{bad}");
        }
    }

    #[test]
    fn the_last_days_end_today() {
        let (from, to) = last_days(30);
        assert_eq!(to, Day::today());
        assert_eq!(from, to.add_days(-29));
        assert_eq!(last_days(1), (to, to));
    }

    #[test]
    fn store_errors_have_their_exit_codes() {
        let id = KeyId::from("key_x");
        let cases = [
            (StoreError::UnknownKey(id.clone()), 3),
            (StoreError::EmptyName, 4),
            (StoreError::Revoked(id.clone()), 4),
            (StoreError::Expired(id), 4),
            (StoreError::ExpiryInPast, 4),
            (StoreError::SeriesTooLong, 4),
            (StoreError::InvalidActor, 4),
            (StoreError::unavailable("down"), 5),
        ];
        for (err, code) in cases {
            let failure = Failure::from(err);
            assert_eq!(failure.code, code, "{}", failure.message);
        }
    }
}
