//! End to end in a real browser: the built `ordermonk` demo serves the Settings → API page, and
//! headless Chromium, driven over WebDriver (chromedriver, through fantoccini), signs in, makes
//! a key on the page, uses it against the demo's API, revokes it on the page, and reads its usage
//! and audit trail there. Screenshots go to `target/screenshots/` (`settings-api-list.png`,
//! `-usage.png`, `-audit.png` and `-phone.png`, 375 × 800).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Without them the test fails under `CI=true` and
//! is skipped, loudly, otherwise.

mod common;
#[path = "common/demo.rs"]
mod demo;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use demo::{Keys, Server};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The demo's password in this test (`ORDERMONK_DEMO_PASSWORD`).
const PASSWORD: &str = "correct horse battery staple";
/// How long the page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(15);
const KEY_NAME: &str = "Browser test key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_api_page_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let (mut server, banner) = Server::start(
        &Keys::Sqlite(dir.path().join("ordermonk.db")),
        Duration::from_secs(600),
        &[
            ("ORDERMONK_DEMO_PASSWORD", PASSWORD),
            // Usage reaches the database, and so the page, a moment after each request.
            ("ORDERMONK_USAGE_FLUSH_MS", "100"),
        ],
    );
    let addr = banner.addr;
    assert!(
        banner.transcript.contains(&format!(
            "Settings → API page: http://{addr}/settings/api (sign in at http://{addr}/login \
             with password {PASSWORD})"
        )),
        "the banner does not say where the page is:\n{}",
        banner.transcript
    );
    without_a_session_nothing_is_served(addr).await;

    let driver = ChromeDriver::start(&dir.path().join("chromium-profile"));
    let browser = driver.connect().await;
    let base = format!("http://{addr}");

    sign_in(&browser, &base).await;
    the_form_shows_every_scope_by_resource(&browser).await;
    a_422_is_shown_next_to_its_field(&browser).await;

    let key = create_key_on_the_page(&browser).await;
    assert_eq!(
        common::get(addr, "/v1/products", &[&common::bearer(&key)])
            .await
            .status,
        200,
        "the key made on the page is refused"
    );
    assert_eq!(
        common::get(addr, "/v1/inventory", &[&common::bearer(&key)])
            .await
            .status,
        403,
        "the key made on the page has a scope that was not ticked"
    );
    done_removes_the_key_from_the_page(&browser, &key).await;
    screenshot_of_the_list(&browser).await;

    revoke_on_the_page(&browser).await;
    let refused = common::get(addr, "/v1/products", &[&common::bearer(&key)]).await;
    assert_eq!(refused.status, 401, "the revoked key still works");

    usage_shows_the_requests(&browser).await;
    save_screenshot(&browser, "settings-api-usage.png").await;
    audit_shows_who_did_what(&browser).await;
    save_screenshot(&browser, "settings-api-audit.png").await;

    the_form_works_with_the_keyboard_alone(&browser).await;
    rotate_on_the_page(&browser).await;
    readable_on_a_phone(&browser).await;
    no_script_errors_or_policy_violations(&browser).await;

    browser.close().await.expect("the browser session closes");
    let logs = server.stop();
    assert!(
        !logs.contains(&key),
        "the key made on the page reached the logs"
    );
}

/// Whether Chromium and chromedriver are here; a failure under CI when they are not.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    assert!(
        !ci,
        "{missing:?} missing: install Debian's chromium and chromium-driver (.ci/run does)"
    );
    eprintln!();
    eprintln!("!!!!!!!! SKIPPED: the Settings → API browser test needs {missing:?}.");
    eprintln!("!!!!!!!! Install them with `apt-get install chromium chromium-driver`.");
    eprintln!();
    false
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

/// Without a session, the page sends people to `/login` and the API answers `401`.
async fn without_a_session_nothing_is_served(addr: SocketAddr) {
    for path in ["/settings/api", "/settings/api/"] {
        let mut response = common::get(addr, path, &[]).await;
        // One of the two redirects to the other first.
        if response.status == 303 && response.header("location") != "/login" {
            let next = response.header("location").to_owned();
            response = common::get(addr, &next, &[]).await;
        }
        assert_eq!(response.status, 303, "{path} without a session");
        assert_eq!(response.header("location"), "/login", "{path}");
    }
    let api = common::get(addr, "/settings/api/v1/keys", &[]).await;
    assert_eq!(api.status, 401);
    assert_eq!(api.header("content-type"), "application/problem+json");
}

async fn sign_in(browser: &Client, base: &str) {
    browser
        .goto(&format!("{base}/settings/api/"))
        .await
        .expect("the page opens");
    wait_for_path(browser, "/login").await;
    let password = find(browser, "#password").await;
    password
        .send_keys(PASSWORD)
        .await
        .expect("the password can be typed");
    find(browser, "#sign-in")
        .await
        .click()
        .await
        .expect("sign in");
    wait_for_path(browser, "/settings/api").await;
    eventually(
        browser,
        "the page to load its data",
        "document.body.dataset.ready === 'true'",
    )
    .await;
    let who = find(browser, "#who").await.text().await.expect("who");
    assert_eq!(who, "demo@ordermonk.test");
    let heading = find(browser, "h1").await.text().await.expect("h1");
    assert_eq!(heading, "Settings → API");
}

/// The permissions are grouped by resource, each with what it grants.
async fn the_form_shows_every_scope_by_resource(browser: &Client) {
    let groups: Vec<String> = texts(browser, ".scope-group h3").await;
    assert_eq!(
        groups,
        ["Products", "Inventory", "Orders", "Keywords", "Analytics"]
    );
    let read = find(browser, "#scope-products-read-desc").await;
    assert_eq!(
        read.text().await.expect("description"),
        "View products and catalog data"
    );
    let environments = texts(browser, "#environments label").await;
    assert_eq!(environments.len(), 2, "{environments:?}");
}

/// A key with no permission is refused by the API, and the page says why next to the field.
async fn a_422_is_shown_next_to_its_field(browser: &Client) {
    let name = find(browser, "#key-name").await;
    name.send_keys("No permissions").await.expect("type");
    find(browser, "#create-submit")
        .await
        .click()
        .await
        .expect("submit");
    eventually(
        browser,
        "the error next to the permissions",
        "document.getElementById('error-scopes').textContent.trim() !== ''",
    )
    .await;
    let status = find(browser, "#status").await.text().await.expect("status");
    assert!(!status.is_empty(), "the status region says nothing");
    name.clear().await.expect("clear");
}

/// Name, two permissions, live: the key is shown once, focused, with the warning.
async fn create_key_on_the_page(browser: &Client) -> String {
    find(browser, "#key-name")
        .await
        .send_keys(KEY_NAME)
        .await
        .expect("type the name");
    for id in ["#scope-products-read", "#scope-orders-read", "#env-live"] {
        find(browser, id).await.click().await.expect("tick");
    }
    find(browser, "#create-submit")
        .await
        .click()
        .await
        .expect("submit");
    eventually(
        browser,
        "the new key",
        "!document.getElementById('new-key-panel').hidden",
    )
    .await;
    let panel = find(browser, "#new-key-panel").await;
    let text = panel.text().await.expect("panel text");
    assert!(
        text.contains("Copy this key now: it will not be shown again."),
        "{text}"
    );
    let field = find(browser, "#new-key-secret").await;
    let key = field.prop("value").await.expect("value").expect("a value");
    assert!(
        demo::scanner().is_match(&key) && key.starts_with("om_live_"),
        "not a live key: {key:?}"
    );
    assert_eq!(
        field.attr("readonly").await.expect("attr").as_deref(),
        Some("true")
    );
    let focused = browser.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("id").await.expect("id").as_deref(),
        Some("new-key-secret")
    );
    // Copied through the clipboard API, or selected for Ctrl+C where it is not available.
    find(browser, "#copy-key")
        .await
        .click()
        .await
        .expect("copy");
    eventually(
        browser,
        "the copy to be confirmed",
        "/copied|copy it/.test(document.getElementById('status').textContent)",
    )
    .await;
    eventually(
        browser,
        "the new key in the list",
        &format!("document.querySelector('tr[data-name=\"{KEY_NAME}\"][data-status=\"active\"]') !== null"),
    )
    .await;
    key
}

/// "Done" takes the key out of the page, and it was never stored by the page.
async fn done_removes_the_key_from_the_page(browser: &Client, key: &str) {
    find(browser, "#done-key")
        .await
        .click()
        .await
        .expect("done");
    let hidden = browser
        .execute(
            "return document.getElementById('new-key-panel').hidden \
             && document.getElementById('new-key-secret').value === '' \
             && JSON.stringify(localStorage).length + JSON.stringify(sessionStorage).length",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        hidden,
        json!(4),
        "the panel is still shown, or storage is not empty"
    );
    let source = browser.source().await.expect("source");
    assert!(!source.contains(key), "the key is still in the page");
    assert!(!browser
        .current_url()
        .await
        .expect("url")
        .as_str()
        .contains(key));
}

async fn revoke_on_the_page(browser: &Client) {
    find(
        browser,
        &format!("tr[data-name=\"{KEY_NAME}\"] button[data-action=\"revoke\"]"),
    )
    .await
    .click()
    .await
    .expect("revoke");
    let question = wait_for_alert(browser).await;
    assert!(
        question.contains(KEY_NAME),
        "the confirmation does not name the key: {question}"
    );
    browser.accept_alert().await.expect("confirm");
    eventually(
        browser,
        "the key shown as revoked",
        &format!("document.querySelector('tr[data-name=\"{KEY_NAME}\"][data-status=\"revoked\"]') !== null"),
    )
    .await;
}

/// The chart and the totals count the three requests made with the key: one allowed, one
/// refused for a missing scope, one refused as revoked.
async fn usage_shows_the_requests(browser: &Client) {
    let started = Instant::now();
    loop {
        find(
            browser,
            &format!("tr[data-name=\"{KEY_NAME}\"] button[data-action=\"usage\"]"),
        )
        .await
        .click()
        .await
        .expect("usage");
        eventually(
            browser,
            "the usage chart",
            "document.querySelector('#usage-chart svg rect, #usage-chart svg title') !== null",
        )
        .await;
        let totals = browser
            .execute(
                "const t = {}; for (const row of document.querySelectorAll('#usage-totals tbody tr')) \
                 t[row.dataset.outcome] = Number(row.querySelector('td').textContent); return t;",
                vec![],
            )
            .await
            .expect("totals");
        if totals["allowed"] == 1 && totals["insufficient_scope"] == 1 && totals["revoked"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the usage totals are not the three requests: {totals}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chart = browser
        .execute(
            "const svg = document.querySelector('#usage-chart svg'); \
             return [svg.querySelectorAll('rect').length, svg.querySelector('title').textContent, \
                     document.querySelectorAll('#usage-legend li').length];",
            vec![],
        )
        .await
        .expect("chart");
    assert!(chart[0].as_u64().unwrap_or(0) >= 3, "bars: {chart}");
    assert!(
        chart[1]
            .as_str()
            .is_some_and(|t| t.contains("Requests per day")),
        "{chart}"
    );
    assert!(chart[2].as_u64().unwrap_or(0) >= 4, "legend: {chart}");
    browser
        .execute(
            "document.getElementById('usage-panel').scrollIntoView({block: 'start'});",
            vec![],
        )
        .await
        .expect("scroll");
}

/// The whole page, form and list, in a window tall enough for both.
async fn screenshot_of_the_list(browser: &Client) {
    browser.set_window_size(1280, 1400).await.expect("resize");
    browser
        .execute("window.scrollTo(0, 0);", vec![])
        .await
        .expect("scroll");
    save_screenshot(browser, "settings-api-list.png").await;
    browser.set_window_size(1280, 900).await.expect("resize");
}

/// The audit trail shows the key's creation and revocation, by the signed-in person.
async fn audit_shows_who_did_what(browser: &Client) {
    find(
        browser,
        &format!("tr[data-name=\"{KEY_NAME}\"] button[data-action=\"audit\"]"),
    )
    .await
    .click()
    .await
    .expect("activity");
    eventually(
        browser,
        "the audit trail",
        "document.querySelectorAll('#audit-table tbody tr').length >= 2",
    )
    .await;
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#audit-table tbody tr')].map(row => \
             [...row.cells].map(cell => cell.textContent));",
            vec![],
        )
        .await
        .expect("rows");
    let rows = rows.as_array().expect("an array");
    for action in ["created", "revoked"] {
        let row = rows
            .iter()
            .find(|row| row[1] == action)
            .unwrap_or_else(|| panic!("no {action} event in {rows:?}"));
        assert_eq!(row[2], "demo@ordermonk.test", "{row}");
    }
    browser
        .execute(
            "document.getElementById('audit-panel').scrollIntoView({block: 'start'});",
            vec![],
        )
        .await
        .expect("scroll");
}

/// Tab to the name, type it, Tab to a permission and tick it with Space, Tab to the button and
/// press Enter: a key is made without the mouse, and its field has the focus.
async fn the_form_works_with_the_keyboard_alone(browser: &Client) {
    browser.refresh().await.expect("reload");
    eventually(
        browser,
        "the page to load its data",
        "document.body.dataset.ready === 'true'",
    )
    .await;
    tab_to(browser, "key-name").await;
    type_keys(browser, "Keyboard key").await;
    // Month, day and year, as a person types them into the date field.
    tab_to(browser, "key-expires").await;
    type_keys(browser, "12312030").await;
    tab_to(browser, "scope-analytics-read").await;
    type_keys(browser, &Key::Space).await;
    tab_to(browser, "create-submit").await;
    type_keys(browser, &Key::Enter).await;
    eventually(
        browser,
        "the new key",
        "!document.getElementById('new-key-panel').hidden",
    )
    .await;
    let focused = browser.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("id").await.expect("id").as_deref(),
        Some("new-key-secret")
    );
    // Sent as the end of that day, UTC.
    eventually(
        browser,
        "the key listed with its expiry",
        "[...document.querySelectorAll('tr[data-name=\"Keyboard key\"] td')]\
         .some(td => td.textContent === '2030-12-31 23:59 UTC')",
    )
    .await;
    tab_to(browser, "done-key").await;
    type_keys(browser, &Key::Enter).await;
    eventually(
        browser,
        "the key to go",
        "document.getElementById('new-key-panel').hidden",
    )
    .await;
    let focus_ring = find(browser, "#key-name")
        .await
        .css_value("outline-style")
        .await
        .expect("css");
    assert_ne!(focus_ring, "none", "the focused field shows no focus");
}

/// Rotating the keyboard's key shows the new key once, and lists the old one as rotated.
async fn rotate_on_the_page(browser: &Client) {
    find(
        browser,
        "tr[data-name=\"Keyboard key\"][data-status=\"active\"] button[data-action=\"rotate\"]",
    )
    .await
    .click()
    .await
    .expect("rotate");
    let question = wait_for_alert(browser).await;
    assert!(question.contains("Keyboard key"), "{question}");
    browser.accept_alert().await.expect("confirm");
    eventually(
        browser,
        "the new key",
        "!document.getElementById('new-key-panel').hidden",
    )
    .await;
    let key = find(browser, "#new-key-secret")
        .await
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    assert!(demo::scanner().is_match(&key), "not a key: {key:?}");
    eventually(
        browser,
        "the old key shown as rotated",
        "document.querySelector('tr[data-name=\"Keyboard key\"][data-status=\"rotated\"]') !== null",
    )
    .await;
    find(browser, "#done-key")
        .await
        .click()
        .await
        .expect("done");
}

/// At 375 × 800 nothing is wider than the screen, and the list is still there.
async fn readable_on_a_phone(browser: &Client) {
    browser.set_window_size(375, 800).await.expect("resize");
    let fits = browser
        .execute(
            "window.scrollTo(0, document.getElementById('keys-title').offsetTop); \
             return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("widths");
    assert!(
        fits[0].as_u64() <= fits[1].as_u64(),
        "the page is wider than a phone: {fits}"
    );
    save_screenshot(browser, "settings-api-phone.png").await;
    browser.set_window_size(1280, 900).await.expect("resize");
}

/// No script error and no Content-Security-Policy violation, as counted by the page itself and
/// as logged by the browser.
async fn no_script_errors_or_policy_violations(browser: &Client) {
    let counted = browser
        .execute("return document.body.dataset.errors;", vec![])
        .await
        .expect("errors");
    assert_eq!(counted, json!("0"), "the page counted errors");
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the browser log");
    let problems: Vec<&Value> = log
        .as_array()
        .expect("log entries")
        .iter()
        .filter(|entry| entry["level"] == "SEVERE" || entry["level"] == "WARNING")
        // The deliberate 401, 403 and 422 answers are logged as failed loads.
        .filter(|entry| {
            let message = entry["message"].as_str().unwrap_or_default();
            !message.contains("status of 4")
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the browser logged problems: {problems:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Driving the browser
// ---------------------------------------------------------------------------------------------

/// chromedriver on a free loopback port; killed when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl ChromeDriver {
    fn start(profile: &Path) -> ChromeDriver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        ChromeDriver {
            child,
            port,
            profile: profile.to_owned(),
        }
    }

    /// A new headless Chromium session, once chromedriver answers.
    async fn connect(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", self.profile.display()),
                    "--window-size=1280,900",
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let url = format!("http://127.0.0.1:{}", self.port);
        let started = Instant::now();
        loop {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match connected {
                Ok(client) => return client,
                Err(err) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("cannot start Chromium through chromedriver: {err}"),
            }
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Errors mean it is gone already.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that failed never closed its session, and killing chromedriver leaves its
        // Chromium running: end the browser started with this test's own profile directory.
        let profile = format!("--user-data-dir={}", self.profile.display());
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return;
        };
        for process in processes.flatten() {
            let Ok(command_line) = std::fs::read(process.path().join("cmdline")) else {
                continue;
            };
            let ours = command_line
                .split(|&byte| byte == 0)
                .any(|arg| arg == profile.as_bytes());
            if ours {
                let _ = Command::new("kill")
                    .arg(process.file_name())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// chromedriver's browser console log (`goog:loggingPrefs`), which WebDriver itself lacks.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

async fn find(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no {css} on the page: {err}"))
}

async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser.find_all(Locator::Css(css)).await.expect("find") {
        texts.push(element.text().await.expect("text"));
    }
    texts
}

/// Waits until `condition`, a JavaScript expression, is true.
async fn eventually(browser: &Client, what: &str, condition: &str) {
    let started = Instant::now();
    loop {
        let value = browser
            .execute(&format!("return Boolean({condition});"), vec![])
            .await
            .expect("the condition runs");
        if value == json!(true) {
            return;
        }
        if started.elapsed() > PATIENCE {
            // What the page told its user, which often says why.
            let status = browser
                .execute(
                    "const s = document.getElementById('status'); return s && s.textContent;",
                    vec![],
                )
                .await
                .unwrap_or_default();
            panic!("waited {PATIENCE:?} for {what}; the page says: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_path(browser: &Client, path: &str) {
    let started = Instant::now();
    loop {
        let url = browser.current_url().await.expect("url");
        if url.path().trim_end_matches('/') == path {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "never reached {path}: at {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_alert(browser: &Client) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = browser.get_alert_text().await {
            return text;
        }
        assert!(started.elapsed() < PATIENCE, "no confirmation was asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses Tab (at most 40 times) until the element with `id` has the focus.
async fn tab_to(browser: &Client, id: &str) {
    for _ in 0..40 {
        let focused = browser
            .execute(
                "return document.activeElement && document.activeElement.id;",
                vec![],
            )
            .await
            .expect("focus");
        if focused == json!(id) {
            return;
        }
        type_keys(browser, &Key::Tab).await;
    }
    panic!("Tab never reached #{id}");
}

/// Sends `keys` to whatever has the focus, as a person typing.
async fn type_keys(browser: &Client, keys: &str) {
    let mut actions = KeyActions::new("keyboard".to_owned());
    for key in keys.chars() {
        actions = actions
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
    }
    browser.perform_actions(actions).await.expect("keys");
    browser.release_actions().await.expect("release");
}

/// Saves the browser's viewport as `target/screenshots/<name>` and checks it is a real PNG.
async fn save_screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let (width, height) = png_size(&png).unwrap_or_else(|| panic!("{name} is not a PNG"));
    assert!(width > 0 && height > 0, "{name} is {width}×{height}");
    assert!(png.len() > 5_000, "{name} is only {} bytes", png.len());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp is in the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory can be made");
    std::fs::write(dir.join(name), &png).expect("the screenshot can be saved");
}

/// Width and height from a PNG's signature and IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((width, height))
}
