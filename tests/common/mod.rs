//! Helpers shared by the integration tests: a raw HTTP/1.1 client for loopback, a server
//! launcher, and a tracing capture that checks no key ever reaches the logs.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Everything every test binary has logged, at every level.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary), at `TRACE` for everything.
pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| Capture)
            .with_ansi(false)
            .init();
    });
}

/// The captured log text so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// Fails if the logs contain any of `secrets`, any 32-character run of one (its random middle),
/// or anything shaped like an `om` key. One pass over the logs per pattern set.
pub fn assert_logs_clean(secrets: &[&str]) {
    let logs = logs();
    if !secrets.is_empty() {
        let middles: Vec<String> = secrets.iter().map(|s| regex::escape(&s[8..40])).collect();
        let leaked = regex::Regex::new(&middles.join("|")).unwrap();
        assert!(
            !leaked.is_match(&logs),
            "a key, or part of one, reached the logs"
        );
    }
    let scanner =
        regex::Regex::new(&tower_api_key::KeyFormat::new("om").unwrap().scanner_regex()).unwrap();
    assert!(
        !scanner.is_match(&logs),
        "something shaped like a key reached the logs"
    );
}

/// Serves `app` on a fresh loopback port until the test's runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves `app` at `bind` (such as `127.0.0.1:0` or `[::]:0`) with each connection's address
/// (`ConnectInfo<SocketAddr>`), as axum applications serve it, until the test's runtime ends.
pub async fn serve_with_peers(bind: &str, app: Router) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, values as raw bytes, in wire order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Every value of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The single value of header `name` as text; fails if absent or repeated.
    pub fn header(&self, name: &str) -> &str {
        let values = self.header_values(name);
        assert_eq!(
            values.len(),
            1,
            "expected exactly one {name} header in {self:?}"
        );
        std::str::from_utf8(values[0]).unwrap()
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.header_values(name).is_empty()
    }

    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends `head` (request line and header lines, each ending in CRLF, without the blank line) over
/// a new connection and reads the whole response. Adds `Host` and `Connection: close`.
pub async fn send_raw(addr: SocketAddr, head: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = head.to_vec();
    request.extend_from_slice(b"Host: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    parse_response(&bytes)
}

/// `GET path` with the given extra header lines (raw bytes, each without CRLF).
pub async fn get(addr: SocketAddr, path: &str, headers: &[&[u8]]) -> RawResponse {
    request(addr, "GET", path, headers, None).await
}

/// A request with optional JSON body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&[u8]],
    json: Option<&str>,
) -> RawResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for header in headers {
        head.extend_from_slice(header);
        head.extend_from_slice(b"\r\n");
    }
    if let Some(json) = json {
        head.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                json.len()
            )
            .as_bytes(),
        );
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    head.extend_from_slice(b"Host: localhost\r\nConnection: close\r\n\r\n");
    if let Some(json) = json {
        head.extend_from_slice(json.as_bytes());
    }
    stream.write_all(&head).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    parse_response(&bytes)
}

/// `Authorization: Bearer <key>` as a header line.
pub fn bearer(key: &str) -> Vec<u8> {
    format!("Authorization: Bearer {key}").into_bytes()
}

/// Reads a whole HTTP/1.1 response as received.
pub fn parse_response(bytes: &[u8]) -> RawResponse {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(bytes)));
    let head = &bytes[..split];
    let mut body = bytes[split + 4..].to_vec();
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = std::str::from_utf8(lines.next().unwrap()).unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    for line in lines {
        let colon = line.iter().position(|&b| b == b':').unwrap();
        let name = std::str::from_utf8(&line[..colon])
            .unwrap()
            .to_ascii_lowercase();
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..])
            .to_vec();
        headers.push((name, value));
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap().trim(), 16)
                .unwrap();
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

/// A resolver in front of a [`MemoryStore`] that counts its calls and can be told to fail, hang,
/// wait, or hold its first call at a gate.
#[derive(Clone)]
pub struct Probe {
    pub store: tower_api_key::MemoryStore,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    behaviour: std::sync::Arc<Mutex<Behaviour>>,
}

#[derive(Clone)]
pub enum Behaviour {
    /// Answer from the store.
    Normal,
    /// Answer with an error.
    Fail,
    /// Never answer.
    Hang,
    /// Panic.
    Panic,
    /// Answer from the store after a delay.
    Delay(std::time::Duration),
    /// The first call reads the store, signals `entered`, then waits for `release` before
    /// answering; later calls answer at once.
    GateFirst {
        entered: std::sync::Arc<tokio::sync::Notify>,
        release: std::sync::Arc<tokio::sync::Notify>,
    },
}

impl Probe {
    pub fn new(store: tower_api_key::MemoryStore) -> Self {
        Probe {
            store,
            calls: Default::default(),
            behaviour: std::sync::Arc::new(Mutex::new(Behaviour::Normal)),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

#[async_trait::async_trait]
impl tower_api_key::KeyResolver for Probe {
    async fn resolve(
        &self,
        digest: &tower_api_key::KeyDigest,
    ) -> Result<Option<tower_api_key::KeyRecord>, tower_api_key::ResolveError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let behaviour = self.behaviour.lock().unwrap().clone();
        match behaviour {
            Behaviour::Normal => self.store.resolve(digest).await,
            Behaviour::Fail => Err(tower_api_key::ResolveError::new("database is down")),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Panic => panic!("resolver bug"),
            Behaviour::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.store.resolve(digest).await
            }
            Behaviour::GateFirst { entered, release } => {
                let answer = self.store.resolve(digest).await;
                if call == 0 {
                    entered.notify_one();
                    release.notified().await;
                }
                answer
            }
        }
    }

    fn invalidations(&self) -> Option<tower_api_key::Invalidations> {
        self.store.invalidations()
    }
}

/// The Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), or `None` (after saying so,
/// naming `tests`) when it is unreachable and `CI` is unset; with `CI` set, unreachable fails.
#[cfg(feature = "redis")]
pub async fn redis(tests: &str) -> Option<redis::Client> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url.as_str()).expect("REDIS_URL is not a Redis URL");
    let reached = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await;
    let why = match reached {
        Ok(Ok(_)) => return Some(client),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 3 s".to_owned(),
    };
    // The address only: the URL may hold a password.
    let server = client.get_connection_info().addr().to_string();
    if std::env::var_os("CI").is_some() {
        panic!(
            "Redis at {server} is unreachable ({why}), and CI is set: start it or set REDIS_URL"
        );
    }
    // Straight to the standard error, which the test harness does not capture as it does
    // `eprintln!`: a skipped test must be seen. Once per run.
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let banner = format!(
            "\n**********\nSKIPPED: {tests}. Redis at {server} is unreachable \
             ({why}). Start Redis or set REDIS_URL to run them; with CI set they fail instead.\n\
             **********\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
    });
    None
}
