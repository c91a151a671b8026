//! The web console driven from headless Chromium (issue 16, point 8): a person's
//! walk through the pages — signing in by pasting the token into the real form,
//! filtering the matrix, moving an incident from detected to closed through its
//! forms, a refused action explained in words, a viewer without buttons, a second
//! tenant who sees nothing — with an automated accessibility check (axe-core: no
//! "serious" or "critical" violation) and a phone-width check (no horizontal
//! overflow of the page; wide tables scroll inside their `.scroll` boxes).
//!
//! Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium and
//! /usr/bin/chromedriver; `WORKFLOWOPS_CHROMIUM` / `WORKFLOWOPS_CHROMEDRIVER`
//! override the paths). Without them the tests fail and say so: they never skip.
//! The service runs on SQLite only here (the HTTP tests in `console.rs` cover both
//! backends). Each test leaves a screenshot in `target/browser-screenshots/`; with
//! `WORKFLOWOPS_README_SCREENSHOTS=1` the matrix and incident tests also write the
//! README's `docs/screenshots/matrix.png` and `docs/screenshots/incident.png`:
//!
//! ```text
//! WORKFLOWOPS_README_SCREENSHOTS=1 cargo test --test it browser
//! ```

// tests/fixtures/axe.min.js is axe-core 4.14.1 (© Deque Systems), MPL-2.0: its licence header is kept at the top of that file.
const AXE: &str = include_str!("../fixtures/axe.min.js");

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::deployments::Setup;
use crate::support::Kind;

// ---------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------

/// How long a page may take to show what a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// The desktop window the pages (and the README's screenshots) are seen in.
pub(crate) const DESKTOP: (u32, u32) = (1280, 900);
/// A phone's viewport (CSS pixels).
pub(crate) const PHONE: (u32, u32) = (390, 844);

/// A program the tests need: the environment's override, else Debian's path.
fn program(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    let found = if path.components().count() > 1 {
        path.is_file().then_some(path.clone())
    } else {
        std::env::var_os("PATH").and_then(|dirs| {
            std::env::split_paths(&dirs)
                .map(|dir| dir.join(&path))
                .find(|p| p.is_file())
        })
    };
    found.unwrap_or_else(|| {
        panic!(
            "the browser tests need headless Chromium and its WebDriver: {} is missing. \
             Install Debian's packages (`apt-get install chromium chromium-driver`, which \
             .ci/run does), or point {var} at the {package} binary.",
            path.display()
        )
    })
}

/// One request to the WebDriver server, blocking (for `Drop`, where nothing can be
/// awaited); the JSON body of its answer. (chromedriver keeps the connection open
/// whatever the request says: the body is read by its length.)
fn raw_webdriver(port: u16, method: &str, path: &str) -> Option<Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())?;
        if answer.len() >= end + 4 + length {
            answer.truncate(end + 4 + length);
            return serde_json::from_slice(&answer[end + 4..]).ok();
        }
    }
    None
}

/// A chromedriver of this test's own, on a free loopback port, in its own process
/// group, with a temporary directory of its own (Chromium's profile and sockets):
/// dropping it ends the browser session, asks chromedriver to quit, kills the
/// group (chromedriver and any Chromium left behind) and removes the directory.
struct Driver {
    child: Child,
    port: u16,
    /// Removed once the processes are gone (fields drop after `drop`).
    _tmp: tempfile::TempDir,
    /// The session still open (ended on drop).
    session: Option<String>,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        use std::os::unix::process::CommandExt as _;
        let tmp = tempfile::tempdir().expect("a temporary directory for Chromium");
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .env("TMPDIR", tmp.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
            let deadline = Instant::now() + WAIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    // (the port was taken meanwhile: try another)
                    last = format!("chromedriver exited at once ({status})");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Driver {
                        child,
                        port,
                        _tmp: tmp,
                        session: None,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("chromedriver did not listen on port {port} within {WAIT:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("cannot start chromedriver: {last}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = raw_webdriver(self.port, "DELETE", &format!("/session/{session}"));
        }
        // chromedriver quits by itself when asked (and removes what it made); the
        // process group is killed in any case
        let _ = raw_webdriver(self.port, "GET", "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on the console at `base`, for the test `name`.
pub(crate) struct Browser {
    pub(crate) client: Client,
    pub(crate) base: String,
    name: &'static str,
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×900) for test `name`.
    pub(crate) async fn start(name: &'static str, base: &str) -> Browser {
        let chromium = program("WORKFLOWOPS_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = program(
            "WORKFLOWOPS_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromedriver",
        );
        let mut driver = Driver::start(&chromedriver).await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    "--lang=en-US",
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "headless Chromium ({}) did not start under chromedriver: {e}",
                    chromium.display()
                )
            });
        driver.session = client.session_id().await.ok().flatten();
        Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            name,
            driver,
        }
    }

    /// Ends the session (Chromium quits and removes its profile); the driver is
    /// killed when the browser is dropped.
    pub(crate) async fn close(mut self) {
        if self.driver.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }

    /// Opens a page of the console (`path` from the root).
    pub(crate) async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub(crate) async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The text of the page's `main` (what a person reads), or of the whole page.
    pub(crate) async fn text(&self) -> String {
        let value = self
            .client
            .execute(
                "var m = document.querySelector('main') || document.body; return m.innerText;",
                vec![],
            )
            .await
            .expect("read the page");
        value.as_str().unwrap_or_default().to_string()
    }

    /// Waits (at most [`WAIT`]) for an element; fails with the page's text.
    pub(crate) async fn wait_for(&self, locator: Locator<'_>) -> Element {
        let what = format!("{locator:?}");
        match self.client.wait().at_most(WAIT).for_element(locator).await {
            Ok(element) => element,
            Err(error) => {
                let (path, text) = (self.path().await, self.text().await);
                panic!("waited {WAIT:?} for {what} on {path}: {error}\n--- the page ---\n{text}")
            }
        }
    }

    /// Waits for an element matching a CSS selector.
    pub(crate) async fn wait_css(&self, selector: &str) -> Element {
        self.wait_for(Locator::Css(selector)).await
    }

    /// Waits until the page's `main` contains `text` (an element's string value,
    /// as the person reads it across inline elements).
    pub(crate) async fn wait_text(&self, text: &str) -> Element {
        let xpath = format!(
            "//main[contains(normalize-space(.), {})]",
            xpath_literal(text)
        );
        self.wait_for(Locator::XPath(&xpath)).await
    }

    /// Waits for the page's `h1` to read `title`.
    pub(crate) async fn wait_title(&self, title: &str) -> Element {
        let xpath = format!("//h1[normalize-space(.) = {}]", xpath_literal(title));
        self.wait_for(Locator::XPath(&xpath)).await
    }

    /// The elements matching a CSS selector now.
    pub(crate) async fn all(&self, selector: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("find {selector}: {e}"))
    }

    /// The text of each element matching a CSS selector.
    pub(crate) async fn texts(&self, selector: &str) -> Vec<String> {
        let mut texts = vec![];
        for element in self.all(selector).await {
            texts.push(element.text().await.expect("an element's text"));
        }
        texts
    }

    /// Clicks the first element matching a CSS selector (waiting for it).
    pub(crate) async fn click(&self, selector: &str) {
        let element = self.wait_css(selector).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Types into the field matching a CSS selector (after clearing it).
    pub(crate) async fn fill(&self, selector: &str, text: &str) {
        let field = self.wait_css(selector).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {selector}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }

    /// Signs in as a person does: the sign-in page, the token pasted into its
    /// field, the button; lands on the matrix.
    pub(crate) async fn sign_in(&self, token: &str) {
        self.goto("/").await;
        self.wait_title("Sign in to workflowops").await;
        self.fill("textarea#token", token).await;
        self.click("form[action='/signin'] button[type=submit]")
            .await;
        self.wait_title("Workflow matrix").await;
        assert_eq!(self.path().await, "/matrix");
    }

    /// Signs out with the header's button; lands on the sign-in form.
    pub(crate) async fn sign_out(&self) {
        self.click("form[action='/signout'] button[type=submit]")
            .await;
        self.wait_css("textarea#token").await;
    }

    /// Runs axe-core on the page shown; fails on any "serious" or "critical"
    /// violation (and prints every violation found, whatever its impact).
    pub(crate) async fn axe(&self, page: &str) {
        let serious: Vec<String> = self
            .axe_violations(page)
            .await
            .into_iter()
            .filter(|(impact, _)| matches!(impact.as_str(), "serious" | "critical"))
            .map(|(_, line)| line)
            .collect();
        assert!(
            serious.is_empty(),
            "axe-core found serious or critical violations on {page}:\n{}",
            serious.join("\n")
        );
    }

    /// axe-core's violations on the page shown: (impact, rule and where), each
    /// printed.
    pub(crate) async fn axe_violations(&self, page: &str) -> Vec<(String, String)> {
        let loaded = self
            .client
            .execute(&format!("{AXE}\n;return typeof window.axe.run;"), vec![])
            .await
            .expect("load axe-core into the page");
        assert_eq!(loaded, json!("function"), "axe-core did not load");
        let result = self
            .client
            .execute_async(
                "var done = arguments[arguments.length - 1];
                 window.axe.run(document, { resultTypes: ['violations'] }).then(function (r) {
                   done({ passed: r.passes.length, violations: r.violations.map(function (v) {
                     return { id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.map(function (n) {
                         return n.target.join(' ') + ' — ' + (n.failureSummary || '').replace(/\\s+/g, ' ');
                       }) };
                   }) });
                 }, function (e) { done({ error: String(e) }); });",
                vec![],
            )
            .await
            .expect("run axe-core");
        let violations = result["violations"]
            .as_array()
            .unwrap_or_else(|| panic!("axe-core failed on {page}: {result}"));
        assert!(
            result["passed"].as_u64().unwrap_or(0) > 10,
            "axe-core checked next to nothing on {page}: {result}"
        );
        let mut found = vec![];
        for v in violations {
            let line = format!(
                "[{}] {}: {} ({} nodes: {})",
                v["impact"].as_str().unwrap_or("?"),
                v["id"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or(""),
                v["nodes"].as_array().map_or(0, Vec::len),
                v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            eprintln!("axe on {page}: {line}");
            found.push((v["impact"].as_str().unwrap_or("?").to_string(), line));
        }
        found
    }

    /// Sets the window so that the page's viewport is `width`×`height` CSS pixels.
    pub(crate) async fn viewport(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("read the viewport");
        // a window has borders in some modes: make up the difference once
        let (w, h) = (
            inner[0].as_u64().unwrap_or(0) as u32,
            inner[1].as_u64().unwrap_or(0) as u32,
        );
        if (w, h) != (width, height) && w > 0 && h > 0 {
            self.client
                .set_window_size(
                    width + width.saturating_sub(w),
                    height + height.saturating_sub(h),
                )
                .await
                .expect("resize the window");
        }
    }

    /// At a phone's width the page does not overflow sideways (a wide table scrolls
    /// in its own box), and axe-core still finds nothing serious; back to the
    /// desktop size after.
    pub(crate) async fn check_phone_width(&self, page: &str) {
        self.viewport(PHONE).await;
        let sizes = self
            .client
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .expect("measure the page");
        let (scroll, inner) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
        assert!(
            inner <= u64::from(PHONE.0) + 20,
            "the window did not shrink to a phone's width: {sizes}"
        );
        if scroll > inner + 1 {
            let wide = self
                .client
                .execute(
                    "var w = window.innerWidth; return Array.from(document.querySelectorAll('body *'))
                       .filter(function (e) { var r = e.getBoundingClientRect(); return r.right > w + 1; })
                       .filter(function (e) { return !e.closest('.scroll') || e.matches('.scroll'); })
                       .slice(0, 10).map(function (e) { return e.tagName.toLowerCase() + '.' + e.className + ' right=' + Math.round(e.getBoundingClientRect().right); });",
                    vec![],
                )
                .await
                .unwrap_or(Value::Null);
            self.save(&format!("{}-phone", self.name)).await;
            panic!(
                "{page} overflows a {}px wide phone screen: the page is {scroll}px wide; \
                 too wide: {wide}",
                PHONE.0
            );
        }
        self.axe(&format!("{page} at a phone's width")).await;
        self.save(&format!("{}-phone", self.name)).await;
        self.viewport(DESKTOP).await;
    }

    /// Saves a screenshot of the viewport as `target/browser-screenshots/<file>.png`.
    async fn save(&self, file: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{file}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The test's screenshot: `target/browser-screenshots/<test>.png`.
    pub(crate) async fn screenshot(&self) -> PathBuf {
        self.save(self.name).await
    }

    /// With `WORKFLOWOPS_README_SCREENSHOTS=1`, the README's picture of this page:
    /// `docs/screenshots/<file>.png`, 1280 wide, as tall as the page (up to 1600).
    pub(crate) async fn readme_screenshot(&self, file: &str) {
        if std::env::var("WORKFLOWOPS_README_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(u64::from(DESKTOP.1))
            .clamp(400, 1600) as u32;
        self.viewport((DESKTOP.0, height)).await;
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("create docs/screenshots");
        let path = dir.join(format!("{file}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("README screenshot: {}", path.display());
        self.viewport(DESKTOP).await;
    }
}

impl Drop for Browser {
    /// A failed test leaves the page as it was: `<test>-failure.png` (taken before
    /// the session ends, blocking: nothing can be awaited here).
    fn drop(&mut self) {
        let Some(session) = self.driver.session.as_deref() else {
            return;
        };
        if !std::thread::panicking() {
            return;
        }
        let png = raw_webdriver(
            self.driver.port,
            "GET",
            &format!("/session/{session}/screenshot"),
        )
        .and_then(|v| v["value"].as_str().map(str::to_string))
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        });
        let path = screenshot_dir().join(format!("{}-failure.png", self.name));
        if png.is_some_and(|png| std::fs::write(&path, png).is_ok()) {
            eprintln!("the page when the test failed: {}", path.display());
        }
    }
}

/// `target/browser-screenshots/` (relative to the crate; made if missing).
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/browser-screenshots");
    dir
}

/// `text` as an XPath string literal (`concat` when it has both kinds of quote).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

/// Waits until the read models the pages read hold every event so far (the pages,
/// like a person, read them as they stand).
pub(crate) async fn settle(s: &Setup) {
    let head = s.api.store.store.last_position().await.unwrap();
    s.api
        .ok(
            &s.admin,
            "query($p: Int) { workflowMatrix(first: 1, minPosition: $p) { nodes { name } }
               environments(minPosition: $p) { id }
               incidents(first: 1, minPosition: $p) { nodes { id } } }",
            json!({ "p": head }),
        )
        .await;
}

/// The incident page's status (the summary's "Status" entry).
fn status_is(status: &str) -> String {
    format!(
        "//dt[normalize-space(.)='Status']/following-sibling::dd[1][normalize-space(.)={}]",
        xpath_literal(status)
    )
}

/// The form of the transition to `to` on an incident page.
fn transition_form(to: &str) -> String {
    format!("main form:has(input[name='to'][value='{to}'])")
}

/// The rows of the incident page's timeline.
async fn timeline_rows(b: &Browser) -> usize {
    b.all("main table tbody tr").await.len()
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

/// Sign in through the form, the matrix and its filters (rows and counts), the
/// environments page; axe-core on the sign-in, matrix and environments pages, at a
/// desktop's and a phone's width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_filters_accessibility_and_phone_width() {
    let s = Setup::new(Kind::Sqlite).await;
    // everything promoted to staging (a second column), and a hotfix in dev: Daily
    // Report drifts there
    s.drift_incident_on_staging().await;
    s.dev.modify(&s.dev_ids[2], |w| {
        w["nodes"][1]["parameters"]["url"] = json!("https://reports.example.com/hotfix");
    });
    s.api
        .ok(
            &s.admin,
            "mutation { syncEnvironment(environmentId: \"dev\") { position } }",
            json!({}),
        )
        .await;
    settle(&s).await;
    let b = Browser::start("matrix_filters_accessibility_and_phone_width", &s.api.base).await;

    b.goto("/").await;
    b.wait_title("Sign in to workflowops").await;
    b.axe("the sign-in page").await;
    // the check sees a real problem: an image without a text alternative
    b.client
        .execute(
            "var i = document.createElement('img'); i.src = '/nothing.png';
             document.querySelector('main').appendChild(i);",
            vec![],
        )
        .await
        .expect("add an image");
    let found = b.axe_violations("the sign-in page with a bad image").await;
    assert!(
        found
            .iter()
            .any(|(impact, line)| impact == "critical" && line.contains("image-alt")),
        "axe-core missed an image without alt text: {found:?}"
    );
    b.goto("/").await;
    b.wait_title("Sign in to workflowops").await;
    b.check_phone_width("the sign-in page").await;

    b.sign_in(&s.admin).await;
    b.wait_text("3 workflows match.").await;
    assert_eq!(
        b.texts("main table tbody th[scope=row]").await,
        ["Daily Report", "Enrich Order", "Order Sync"],
    );
    assert_eq!(
        b.texts("main table thead th").await,
        ["Workflow", "dev", "staging"]
    );
    let text = b.text().await;
    assert!(text.contains("Drift only (1)"), "{text}");
    assert!(text.contains("All (3)"), "{text}");
    b.readme_screenshot("matrix").await;
    b.axe("the matrix").await;
    b.check_phone_width("the matrix").await;

    // a name search that matches one workflow
    b.fill("input[name=q]", "daily").await;
    b.click("form.filters button[type=submit]").await;
    b.wait_text("1 workflow matches.").await;
    assert_eq!(b.path().await, "/matrix?env=&q=daily");
    assert_eq!(
        b.texts("main table tbody th[scope=row]").await,
        ["Daily Report"]
    );
    // drift only, with the search cleared: the workflow hotfixed in dev
    b.fill("input[name=q]", "").await;
    b.click("input[name=drift]").await;
    b.click("form.filters button[type=submit]").await;
    b.wait_for(Locator::XPath("//input[@name='drift' and @checked]"))
        .await;
    b.wait_text("1 workflow matches.").await;
    assert_eq!(b.path().await, "/matrix?env=&q=&drift=1");
    let rows = b.texts("main table tbody tr").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].starts_with("Daily Report") && rows[0].contains("DRIFT"),
        "{rows:?}"
    );
    assert!(b.text().await.contains("Drift only (1)"));
    b.axe("the matrix, filtered").await;
    // clearing the filters shows all again
    b.click("form.filters a[href='/matrix']").await;
    b.wait_text("3 workflows match.").await;

    // the environments page, through the navigation
    b.click("nav a[href='/environments']").await;
    b.wait_title("Environments").await;
    assert_eq!(
        b.texts("main table tbody th[scope=row]").await.len(),
        2,
        "dev and staging"
    );
    let text = b.text().await;
    assert!(
        text.contains("dev") && text.contains("staging") && text.contains("DRIFT"),
        "{text}"
    );
    b.axe("the environments page").await;
    b.check_phone_width("the environments page").await;

    b.goto("/matrix").await;
    b.wait_text("3 workflows match.").await;
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}

/// An incident walked from detected to closed through the forms: the required
/// fields filled, each step shown with its new status and a longer timeline;
/// axe-core on the incidents list and the incident page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_walked_from_detected_to_closed() {
    let s = Setup::new(Kind::Sqlite).await;
    let id = s.drift_incident_on_staging().await;
    settle(&s).await;
    let b = Browser::start("incident_walked_from_detected_to_closed", &s.api.base).await;
    b.sign_in(&s.admin).await;

    // the list, filtered to the detected ones, links to the incident
    b.click("nav a[href='/incidents']").await;
    b.wait_title("Incidents").await;
    b.wait_css("main form.filters select[name=status]")
        .await
        .select_by_value("detected")
        .await
        .expect("choose a status");
    b.click("main form.filters button[type=submit]").await;
    let link = format!("main table a[href='/incidents/{id}']");
    b.wait_css(&link).await;
    assert_eq!(b.path().await, "/incidents?status=detected&severity=&sla=");
    b.axe("the incidents list").await;
    b.check_phone_width("the incidents list").await;
    b.click(&link).await;
    b.wait_title(&format!("Incident {id}")).await;
    b.wait_for(Locator::XPath(&status_is("detected"))).await;
    let text = b.text().await;
    assert!(
        text.contains("Daily Report"),
        "the drifted workflow: {text}"
    );
    assert!(text.contains("staging"), "{text}");
    b.axe("the incident page").await;
    b.check_phone_width("the incident page").await;

    // detected → acknowledged: reason, owner and ticket
    let mut rows = timeline_rows(&b).await;
    assert!(rows >= 1, "the detection is on the timeline");
    let form = transition_form("acknowledged");
    b.fill(&format!("{form} input[name=reason]"), "looking into it")
        .await;
    b.fill(&format!("{form} input[name=owner_user_id]"), "ops-anna")
        .await;
    b.fill(&format!("{form} input[name=ticket_ref]"), "OPS-7")
        .await;
    b.click(&format!("{form} button[type=submit]")).await;
    b.wait_for(Locator::XPath(&status_is("acknowledged"))).await;
    let text = b.text().await;
    assert!(
        text.contains("OPS-7") && text.contains("ops-anna"),
        "{text}"
    );
    assert!(text.contains("looking into it"), "on the timeline: {text}");
    assert!(timeline_rows(&b).await > rows, "the timeline grew: {text}");
    rows = timeline_rows(&b).await;
    b.readme_screenshot("incident").await;
    b.axe("the incident page, acknowledged").await;

    // acknowledged → stabilized
    let form = transition_form("stabilized");
    b.fill(&format!("{form} input[name=reason]"), "hotfix kept for now")
        .await;
    b.click(&format!("{form} button[type=submit]")).await;
    b.wait_for(Locator::XPath(&status_is("stabilized"))).await;
    assert!(timeline_rows(&b).await > rows, "the timeline grew");
    rows = timeline_rows(&b).await;

    // stabilized → reconciled: the resolution type is required
    let form = transition_form("reconciled");
    b.wait_css(&format!("{form} select[name=resolution_type]"))
        .await
        .select_by_value("revert")
        .await
        .expect("choose a resolution");
    b.fill(
        &format!("{form} input[name=resolution_details]"),
        "staging reset to Git",
    )
    .await;
    b.click(&format!("{form} button[type=submit]")).await;
    b.wait_for(Locator::XPath(&status_is("reconciled"))).await;
    assert!(timeline_rows(&b).await > rows, "the timeline grew");
    rows = timeline_rows(&b).await;

    // reconciled → closed: the browser itself refuses the form without a reason
    let form = transition_form("closed");
    b.click(&format!("{form} button[type=submit]")).await;
    let invalid = b
        .client
        .execute(
            "return document.querySelector(arguments[0]).validity.valueMissing;",
            vec![json!(format!("{form} input[name=reason]"))],
        )
        .await
        .expect("read the field's validity");
    assert_eq!(invalid, json!(true), "a reason is required");
    assert_eq!(
        b.path().await,
        format!("/incidents/{id}"),
        "nothing was sent"
    );
    b.wait_for(Locator::XPath(&status_is("reconciled"))).await;
    b.fill(&format!("{form} input[name=reason]"), "resolved")
        .await;
    b.click(&format!("{form} button[type=submit]")).await;
    b.wait_for(Locator::XPath(&status_is("closed"))).await;
    b.wait_text("Closed: no transition is left.").await;
    assert!(timeline_rows(&b).await > rows, "the timeline grew");
    assert!(
        b.all("main form button").await.is_empty(),
        "no action is left"
    );
    let events = b.texts("main table tbody tr td:nth-child(3)").await;
    for step in [
        "detected → acknowledged",
        "acknowledged → stabilized",
        "stabilized → reconciled",
        "reconciled → closed",
    ] {
        assert!(
            events.iter().any(|e| e == step),
            "{step} on the timeline: {events:?}"
        );
    }
    assert!(b.text().await.contains("admin-1 (admin)"));
    b.axe("the incident page, closed").await;

    // the list shows it closed
    b.goto("/incidents?status=closed").await;
    b.wait_css(&link).await;
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}

/// Refused actions say why, in words, with the transitions allowed instead, and
/// change nothing: a form whose hidden target was changed in the page, and a form
/// left open while the incident moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_transitions_are_refused_in_words() {
    let s = Setup::new(Kind::Sqlite).await;
    let id = s.drift_incident_on_staging().await;
    settle(&s).await;
    let developer = s.api.token("acme", "developer", "d-1");
    let b = Browser::start("invalid_transitions_are_refused_in_words", &s.api.base).await;
    b.sign_in(&developer).await;
    b.goto(&format!("/incidents/{id}")).await;
    b.wait_for(Locator::XPath(&status_is("detected"))).await;
    let rows = timeline_rows(&b).await;
    // a developer is offered acknowledging only
    let offered: Vec<String> = b.texts("main form button[type=submit]").await;
    assert_eq!(offered, ["Move to acknowledged"]);

    // the page's form tampered with: its hidden target set to one not offered
    let form = transition_form("acknowledged");
    b.client
        .execute(
            "document.querySelector(arguments[0]).value = 'stabilized';",
            vec![json!(format!("{form} input[name=to]"))],
        )
        .await
        .expect("change the hidden field");
    b.click("main form button[type=submit]").await;
    let refusal = b
        .wait_for(Locator::Css("main p.error[role=alert]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(refusal.starts_with("Refused:"), "{refusal}");
    assert!(
        refusal.contains("From detected it can move to: acknowledged, closed."),
        "{refusal}"
    );
    b.wait_for(Locator::XPath(&status_is("detected"))).await;
    assert_eq!(timeline_rows(&b).await, rows, "nothing was recorded");
    b.axe("the incident page with a refusal").await;

    // a stale form: the page still offers acknowledging, but someone else
    // acknowledged the incident from the API meanwhile
    b.goto(&format!("/incidents/{id}")).await;
    b.wait_for(Locator::XPath(&status_is("detected"))).await;
    s.api
        .ok(
            &s.admin,
            "mutation($id: ID!) { acknowledgeIncident(id: $id, reason: \"from the API\") { position } }",
            json!({ "id": id }),
        )
        .await;
    settle(&s).await;
    b.fill(&format!("{form} input[name=reason]"), "me too")
        .await;
    b.click(&format!("{form} button[type=submit]")).await;
    let refusal = b
        .wait_for(Locator::Css("main p.error[role=alert]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(refusal.starts_with("Refused:"), "{refusal}");
    assert!(
        refusal.contains("From acknowledged it can move to: stabilized, reconciled, closed."),
        "{refusal}"
    );
    b.wait_for(Locator::XPath(&status_is("acknowledged"))).await;
    let text = b.text().await;
    assert!(text.contains("from the API"), "{text}");
    assert!(
        !text.contains("me too"),
        "the refused reason is not recorded: {text}"
    );
    assert_eq!(timeline_rows(&b).await, rows + 1, "only the API's step");
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}

/// A viewer reads the incident and the environments but is offered no action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_action_buttons() {
    let s = Setup::new(Kind::Sqlite).await;
    let id = s.drift_incident_on_staging().await;
    settle(&s).await;
    let viewer = s.api.token("acme", "viewer", "v-1");
    let b = Browser::start("a_viewer_sees_no_action_buttons", &s.api.base).await;
    b.sign_in(&viewer).await;
    assert!(b.text().await.contains("Daily Report"));

    b.goto(&format!("/incidents/{id}")).await;
    b.wait_for(Locator::XPath(&status_is("detected"))).await;
    b.wait_text("Your role may not move this incident.").await;
    assert!(b.text().await.contains("Daily Report"));
    assert!(
        b.all("main form[method=post], main button")
            .await
            .is_empty(),
        "no action for a viewer: {}",
        b.text().await
    );
    // the header says who is signed in, and only signing out is offered there
    let who = b.wait_css("header .who").await.text().await.unwrap();
    assert_eq!(who, "v-1 · acme · viewer");
    assert_eq!(b.texts("button").await, ["Sign out"]);

    b.click("nav a[href='/environments']").await;
    b.wait_title("Environments").await;
    assert!(b.text().await.contains("staging"));
    assert!(
        b.all("main form[method=post], main button")
            .await
            .is_empty(),
        "no action for a viewer: {}",
        b.text().await
    );
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}

/// A second tenant sees nothing of the first: no matrix, no environment, no
/// incident, and the first tenant's incident address is "No such incident".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tenant_sees_nothing_of_the_first() {
    let s = Setup::new(Kind::Sqlite).await;
    let id = s.drift_incident_on_staging().await;
    settle(&s).await;
    let b = Browser::start("a_second_tenant_sees_nothing_of_the_first", &s.api.base).await;
    // acme sees its incident …
    b.sign_in(&s.admin).await;
    b.goto("/incidents").await;
    b.wait_css(&format!("main table a[href='/incidents/{id}']"))
        .await;
    b.sign_out().await;

    // … globex, in the same browser, nothing of acme's
    b.sign_in(&s.api.token("globex", "admin", "g-1")).await;
    b.wait_text("No environment is registered yet").await;
    assert!(b.all("main table").await.is_empty());
    for page in ["/matrix", "/environments", "/incidents"] {
        b.goto(page).await;
        b.wait_css("main h1").await;
        let text = b.text().await;
        for leak in ["Daily Report", "Enrich Order", "staging", id.as_str()] {
            assert!(!text.contains(leak), "{page} shows {leak}: {text}");
        }
    }
    b.goto("/incidents").await;
    b.wait_text("No incident matches.").await;
    b.goto(&format!("/incidents/{id}")).await;
    b.wait_title("No such incident").await;
    let text = b.text().await;
    assert!(!text.contains("Daily Report"), "{text}");
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}

// ---------------------------------------------------------------------------------
// Live deployment progress (issue 16): its browser test goes here, on the harness
// above (Browser::start, sign_in, wait_css / wait_text, axe, screenshot).
// ---------------------------------------------------------------------------------

/// A deployment's progress appears without a reload: staging's n8n answers each
/// create slowly, the page follows the deployment's events (SSE) and re-renders
/// its progress until it ends; the page is never reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_deployment_progress_without_a_reload() {
    let s = Setup::new(Kind::Sqlite).await;
    s.approved("p1").await;
    settle(&s).await;
    // each of the three creates answers after 1.5 s: about 4.5 s of pushing
    s.staging.fault_next_on(
        axum::http::Method::POST,
        "/workflows",
        3,
        crate::fakes::n8n::Fault::Slow(Duration::from_millis(1500)),
    );
    let b = Browser::start("live_deployment_progress_without_a_reload", &s.api.base).await;
    b.sign_in(&s.admin).await;
    b.goto("/promotions/p1").await;
    b.wait_text("approved by admin-2").await;
    b.axe("promotion").await;
    b.click("form:has(input[name=to][value=deploy]):not(:has(input[name=scheduled_for])) button")
        .await;
    b.wait_css("#deployment-status").await;
    assert!(
        b.path().await.starts_with("/deployments/"),
        "{}",
        b.path().await
    );
    // a mark that a reload would wipe out
    b.client
        .execute("window.__no_reload = 'still here'; return null;", vec![])
        .await
        .unwrap();
    let first = b.wait_css("#deployment-status").await.text().await.unwrap();
    assert_ne!(
        first, "success",
        "the deployment must still be running when the page opens"
    );
    // progress shows while it runs: a workflow done, not all
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_partial = false;
    loop {
        // read in one script: the progress is re-rendered under the test's feet, so
        // an element found a moment ago may already be replaced
        let read = b
            .client
            .execute(
                "var p = document.getElementById('progress'), \
                     s = document.getElementById('deployment-status'); \
                 return [p ? p.textContent : '', s ? s.textContent.trim() : ''];",
                vec![],
            )
            .await
            .unwrap();
        let text = read[0].as_str().unwrap_or_default().to_string();
        if text.contains("1 of 3") || text.contains("2 of 3") {
            seen_partial = true;
        }
        if read[1] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "no success within 20 s: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_partial, "a partial progress showed before the end");
    b.wait_text("Finished.").await;
    let mark = b
        .client
        .execute("return window.__no_reload || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("still here"), "the page was reloaded");
    let text = b.text().await;
    assert!(text.contains("3 of 3"), "{text}");
    for name in ["Enrich Order", "Order Sync", "Daily Report"] {
        assert!(text.contains(name), "{name}: {text}");
    }
    b.axe("deployment").await;
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}
