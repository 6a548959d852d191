//! The demo and the command-line tool as separate processes, as a user runs them: the built
//! `ordermonk` example and `tower-api-key` binaries, started with the settings a test gives.
//! Included by the tests that run them (`#[path = "common/demo.rs"] mod demo;`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use tower_api_key::KeyFormat;

/// How long the example may take to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a demo or the tool keeps its keys.
#[derive(Clone, Debug)]
pub enum Keys {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A schema of the PostgreSQL database at the URL.
    Postgres { url: String, schema: String },
}

impl Keys {
    /// The environment of a demo process for these keys.
    fn demo_env(&self) -> Vec<(&'static str, OsString)> {
        match self {
            Keys::Sqlite(db) => vec![("ORDERMONK_DB", db.clone().into())],
            Keys::Postgres { url, schema } => vec![
                ("DATABASE_URL", url.into()),
                ("ORDERMONK_SCHEMA", schema.into()),
            ],
        }
    }

    /// The tool's options for these keys.
    fn tool_args(&self) -> Vec<OsString> {
        match self {
            Keys::Sqlite(db) => vec!["--db".into(), db.clone().into()],
            Keys::Postgres { url, schema } => vec![
                "--database-url".into(),
                url.into(),
                "--schema".into(),
                schema.into(),
            ],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The example's process
// ---------------------------------------------------------------------------------------------

/// The running example. Dropping it kills the process, whatever the test's outcome.
pub struct Server {
    child: Child,
    /// Reads stderr all along, so that a full pipe never blocks the server.
    stderr: Option<JoinHandle<String>>,
}

/// What the example printed before it started listening.
pub struct Banner {
    pub addr: SocketAddr,
    /// Where it serves its metrics, if it said.
    pub metrics: Option<SocketAddr>,
    /// Each key, by the name printed above it.
    pub keys: HashMap<String, String>,
    /// Everything printed up to the `listening on` line.
    pub transcript: String,
}

impl Server {
    /// Starts the example on `keys`, caching found keys for `cache_ttl`, with `env` added to
    /// its environment.
    pub fn start(keys: &Keys, cache_ttl: Duration, env: &[(&str, &str)]) -> (Server, Banner) {
        let binary = example_binary();
        let mut command = Command::new(&binary);
        // Whatever the environment says, the test says where the keys are.
        command
            .env_remove("DATABASE_URL")
            .env_remove("ORDERMONK_DB");
        command
            .env("ORDERMONK_ADDR", "127.0.0.1:0")
            // Never the default port, which another demo (or program) may hold.
            .env("ORDERMONK_METRICS_ADDR", "127.0.0.1:0")
            .env("ORDERMONK_CACHE_TTL", cache_ttl.as_secs().to_string())
            .env("RUST_LOG", "trace");
        // The test's own settings win.
        command.envs(keys.demo_env()).envs(env.iter().copied());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut server = Server {
            child,
            stderr: Some(std::thread::spawn(move || {
                let mut logs = Vec::new();
                // An error only ends the capture early; the assertions on its content still run.
                let _ = stderr.read_to_end(&mut logs);
                String::from_utf8_lossy(&logs).into_owned()
            })),
        };

        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        match read_banner(&lines) {
            Ok(banner) => (server, banner),
            Err(problem) => {
                let logs = server.stop();
                panic!("{problem}\n--- stderr of the example ---\n{logs}");
            }
        }
    }

    /// Sends the process SIGINT, as Ctrl-C does, waits (up to 30 s) until it exits, and returns
    /// whether it exited successfully and everything it wrote to stderr.
    pub fn interrupt(&mut self) -> (bool, String) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill can be run");
        assert!(sent.success(), "kill -INT failed");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the example did not exit within 30 s of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let logs = self
            .stderr
            .take()
            .map(|reader| reader.join().expect("the stderr reader does not panic"))
            .unwrap_or_default();
        (status.success(), logs)
    }

    /// Kills the process and returns everything it wrote to stderr.
    pub fn stop(&mut self) -> String {
        self.kill();
        self.stderr
            .take()
            .map(|reader| reader.join().expect("the stderr reader does not panic"))
            .unwrap_or_default()
    }

    pub fn kill(&mut self) {
        // Errors mean the process is gone already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Banner {
    pub fn key(&self, name: &str) -> &str {
        self.keys
            .get(name)
            .unwrap_or_else(|| panic!("no key named {name:?} was printed"))
    }
}

/// Reads stdout up to `listening on http://…`: each `Key "<name>" (…)` line names the first key
/// printed after it.
fn read_banner(lines: &mpsc::Receiver<std::io::Result<String>>) -> Result<Banner, String> {
    let scanner = scanner();
    let metrics_line = Regex::new(r"curl http://([0-9.:]+)/metrics").expect("a valid regex");
    let mut keys = HashMap::new();
    let mut metrics = None;
    let mut name: Option<String> = None;
    let mut transcript = String::new();
    loop {
        let line = match lines.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(err)) => return Err(format!("cannot read the example's stdout: {err}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "the example printed no `listening on` line within {STARTUP_TIMEOUT:?}; \
                     stdout so far:\n{transcript}"
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "the example exited before listening; stdout:\n{transcript}"
                ))
            }
        };
        transcript.push_str(&line);
        transcript.push('\n');

        if let Some(addr) = line.strip_prefix("listening on http://") {
            let addr = addr
                .parse()
                .map_err(|err| format!("bad address in {line:?}: {err}"))?;
            return Ok(Banner {
                addr,
                metrics,
                keys,
                transcript,
            });
        }
        if let Some(found) = metrics_line.captures(&line) {
            metrics = Some(
                found[1]
                    .parse()
                    .map_err(|err| format!("bad metrics address in {line:?}: {err}"))?,
            );
        }
        if let Some(rest) = line.strip_prefix("Key \"") {
            name = rest.split('"').next().map(str::to_owned);
        } else if let (Some(name), Some(key)) = (&name, scanner.find(&line)) {
            keys.entry(name.clone())
                .or_insert_with(|| key.as_str().to_owned());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command-line tool
// ---------------------------------------------------------------------------------------------

/// `tower-api-key` pointed at the demo's SQLite file.
pub struct Tool {
    binary: PathBuf,
    keys: Keys,
}

impl Tool {
    pub fn new(keys: &Keys) -> Tool {
        Tool {
            binary: tool_binary(),
            keys: keys.clone(),
        }
    }

    /// Runs the tool with `args`, checks that it succeeded, and returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.binary)
            .args(self.keys.tool_args())
            .args(args)
            // Whatever the environment says, the test says where the keys are.
            .env_remove("DATABASE_URL")
            .env_remove("TOWER_API_KEY_DB")
            .env_remove("TOWER_API_KEY_SCHEMA")
            .env_remove("TOWER_API_KEY_PREFIX")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", self.binary.display()));
        assert!(
            output.status.success(),
            "tower-api-key {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the tool prints UTF-8")
    }

    /// Runs the tool with `args` and `--json`, and returns what it printed.
    pub fn json(&self, args: &[&str]) -> Value {
        let stdout = self.run(&[args, &["--json"]].concat());
        serde_json::from_str(&stdout).expect("--json prints JSON")
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// `target/<profile>/examples/ordermonk`, built first if needed with this test's features, so
/// that the library is not rebuilt with others (which would also make the next `cargo test`
/// rebuild it back).
pub fn example_binary() -> PathBuf {
    let features = features();
    built(&["--example", "ordermonk"], &features, "examples/ordermonk")
}

/// `target/<profile>/tower-api-key`, built first if needed with this test's features and `cli`,
/// which the tool requires (under `--all-features`, as in CI, that is the same set).
pub fn tool_binary() -> PathBuf {
    let mut features = features();
    if !features.contains(&"cli") {
        features.push("cli");
    }
    built(&["--bin", "tower-api-key"], &features, "tower-api-key")
}

/// `target/<profile>/<path>`, found from this test's own binary in `target/<profile>/deps/`,
/// and built first with `cargo build <target> --features <features>` when cargo runs the test.
fn built(target: &[&str], features: &[&str], path: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    // A plain `cargo test` builds the examples, but `cargo test --test ordermonk_demo` does not,
    // and would run a stale binary. Asking cargo costs nothing when the target is up to date.
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let build = Command::new(cargo)
            .arg("build")
            .args(target)
            .args(["--profile", profile])
            .args(["--no-default-features", "--features", &features.join(",")])
            .arg("--manifest-path")
            .arg(manifest)
            .output()
            .expect("cargo can be run");
        assert!(
            build.status.success(),
            "cannot build {target:?}:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
    }
    let binary = profile_dir.join(format!("{path}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build {} --features {}`",
        binary.display(),
        target.join(" "),
        features.join(","),
    );
    binary
}

/// The crate's features this test binary was compiled with. A new feature goes here too.
pub fn features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "axum") {
        features.push("axum");
    }
    if cfg!(feature = "sqlite") {
        features.push("sqlite");
    }
    if cfg!(feature = "postgres") {
        features.push("postgres");
    }
    if cfg!(feature = "cli") {
        features.push("cli");
    }
    if cfg!(feature = "redis") {
        features.push("redis");
    }
    if cfg!(feature = "admin") {
        features.push("admin");
    }
    features
}

pub fn om() -> KeyFormat {
    KeyFormat::new("om").expect("`om` is a valid prefix")
}

pub fn scanner() -> Regex {
    Regex::new(&om().scanner_regex()).expect("the scanner regex compiles")
}
