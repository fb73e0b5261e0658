//! Headless Chromium driven over the W3C WebDriver HTTP protocol
//! (chromedriver), for the tests that let a real browser judge what it
//! enforces: browser.rs (CORS, cookies, CSRF) and console.rs (the admin
//! console).
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian `chromium`
//! and `chromium-driver`; scripts/install-test-deps.sh installs them).

use crate::harness::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to load: a deadline, never what is tested.
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether `test` can run a browser (crate::optional: skipped where
/// Chromium is missing, unless REQUIRE_BROWSER_TESTS is set).
pub fn browser_available(test: &str) -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    crate::optional::present_or_skip(test, &missing, "Debian chromium and chromium-driver")
}

/// chromedriver on a free port with one Chromium session. Ends the session
/// and the driver on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile;
    /// `args` are Chromium switches of the test's own.
    pub fn start(args: &[&str]) -> Browser {
        // reqwest is built without a default TLS provider; it wants one
        // even for chromedriver's plain HTTP.
        crypto_provider();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            dir,
        };
        let ready = within(Duration::from_secs(20), || {
            b.http
                .get(format!("{}/status", b.base))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        assert!(
            ready.is_some(),
            "chromedriver did not become ready: {}",
            b.driver_log()
        );
        let mut switches: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect();
        switches.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"script": 30_000, "pageLoad": 30_000},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": switches},
        }}});
        let r = b
            .http
            .post(format!("{}/session", b.base))
            .json(&caps)
            .send()
            .unwrap();
        let st = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        let id = v["value"]["sessionId"].as_str().unwrap_or_default();
        assert!(
            st.is_success() && !id.is_empty(),
            "new WebDriver session: {st} {v}\n{}",
            b.driver_log()
        );
        b.session = id.to_owned();
        b
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// One command on the session; its `value`, or the WebDriver error.
    pub fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut rb = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            rb = rb.json(&b);
        } else if method == reqwest::Method::POST {
            rb = rb.json(&json!({}));
        }
        let r = rb.send().map_err(|e| format!("{method} {path}: {e}"))?;
        let st = r.status();
        let v: Value = r
            .json()
            .map_err(|e| format!("{method} {path}: {st}, not JSON: {e}"))?;
        if st.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: {st} {v}"))
        }
    }

    pub fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    pub fn current_url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `body` as the body of an async function called with `args`
    /// (`arguments[0]`…), returning what it returns. A throw is a failure
    /// of the test's script, not a finding: scenarios catch what they
    /// expect.
    pub fn run(&self, body: &str, args: &[Value]) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             const args = Array.prototype.slice.call(arguments, 0, arguments.length - 1);\n\
             (async function () {{\n{body}\n}}).apply(null, args).then(\n\
               (v) => done({{ok: true, value: v === undefined ? null : v}}),\n\
               (e) => done({{ok: false, error: String((e && e.stack) || e)}}));"
        );
        let v = self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        );
        assert!(v["ok"] == true, "the test's script threw: {v}\n{body}");
        v["value"].clone()
    }

    /// Synchronous script, for reading the page.
    pub fn eval(&self, expr: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": format!("return {expr};"), "args": []})),
        )
    }

    /// The page's text as shown.
    pub fn text(&self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The cookies the browser keeps for the current page, with their
    /// attributes.
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd(reqwest::Method::GET, "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the page is at a URL starting with `prefix` and loaded.
    pub fn wait_for(&self, prefix: &str) {
        let mut last = String::new();
        let ok = within(PAGE_WAIT, || {
            last = self.current_url();
            last.starts_with(prefix)
                && self
                    .try_cmd(
                        reqwest::Method::POST,
                        "/execute/sync",
                        Some(json!({"script": "return document.readyState;", "args": []})),
                    )
                    .is_ok_and(|v| v == "complete")
        });
        assert!(
            ok.is_some(),
            "the browser did not reach {prefix}: it is at {last}"
        );
    }

    /// Waits until the page makes `expr` (JavaScript) true: for a page
    /// whose URL cannot tell it from the one before (a form's answer).
    pub fn wait_until(&self, expr: &str) {
        let script = format!("return Boolean({expr});");
        let ok = within(PAGE_WAIT, || {
            self.try_cmd(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": []})),
            )
            .is_ok_and(|v| v == true)
        });
        assert!(
            ok.is_some(),
            "the page never made `{expr}` true: it is at {}",
            self.current_url()
        );
    }

    /// The element `css` selects, by its WebDriver reference.
    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), None);
    }

    /// Replaces the value of the field `css` selects, as typed.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/clear"), None);
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Grants the page a permission (e.g. `clipboard-read`); false where
    /// chromedriver does not support setting it.
    pub fn grant(&self, permission: &str) -> bool {
        self.try_cmd(
            reqwest::Method::POST,
            "/permissions",
            Some(json!({"descriptor": {"name": permission}, "state": "granted"})),
        )
        .is_ok()
    }

    pub fn size(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// The window as it is, as a PNG.
    pub fn png(&self) -> Vec<u8> {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None);
        unb64(b64.as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (as WebDriver sends screenshots) to bytes.
fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
