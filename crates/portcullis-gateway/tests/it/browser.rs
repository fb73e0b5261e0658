//! A real browser against the gateway: headless Chromium driven over the
//! W3C WebDriver HTTP protocol (chromedriver), so CORS, cookies, SameSite
//! and CSRF are judged by the browser that enforces them, not by our own
//! reading of the headers.
//!
//! One gateway (HTTPS on `api.test`), one page server (plain HTTP on
//! `app.test` / `evil.test`, and behind the gateway's `/app/**` route), one
//! browser session; every scenario runs through them in turn. Chromium
//! maps the `.test` names to 127.0.0.1 (`--host-resolver-rules`).
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian `chromium`
//! and `chromium-driver`; scripts/install-test-deps.sh installs them).
//! Without them the test is skipped, unless REQUIRE_BROWSER_TESTS is
//! set (CI sets it), when it fails.

use crate::harness::*;
use crate::webdriver::{Browser, browser_available};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";
const SESSION: &str = "__Host-portcullis_session";
const CSRF: &str = "__Host-portcullis_csrf";
/// How long to wait for anything asynchronous (a log line, a message
/// from a frame). Generous: nothing here asserts on timing.
const WAIT: Duration = Duration::from_secs(10);

// --- The page server -----------------------------------------------------------

/// Plain HTTP on a free loopback port: the page registered for a path, or
/// a blank page. Records (host, method, path) of what it served.
struct Pages {
    port: u16,
    pages: Arc<Mutex<HashMap<String, String>>>,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

const BLANK: &str = "<!doctype html><html><head><title>blank</title></head><body><p>portcullis browser test page</p></body></html>";

impl Pages {
    fn start() -> Pages {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let pages = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (p, s) = (pages.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(stream) = stream else { continue };
                let (p, s) = (p.clone(), s.clone());
                std::thread::spawn(move || serve_page(stream, &p, &s));
            }
        });
        Pages { port, pages, seen }
    }

    fn set(&self, path: &str, html: String) {
        self.pages.lock().unwrap().insert(path.to_owned(), html);
    }

    fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_page(
    stream: TcpStream,
    pages: &Mutex<HashMap<String, String>>,
    seen: &Mutex<Vec<(String, String, String)>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let (mut host, mut len) = (String::new(), 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            if n.eq_ignore_ascii_case("host") {
                host = v.trim().to_owned();
            } else if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    seen.lock().unwrap().push((host, method, path.clone()));
    let (status, page) = if path == "/favicon.ico" {
        ("404 Not Found", String::new())
    } else {
        let page = pages.lock().unwrap().get(&path).cloned();
        ("200 OK", page.unwrap_or_else(|| BLANK.to_owned()))
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(resp.as_bytes());
    let _ = stream.flush();
}

/// Escapes text for an HTML attribute value in double quotes.
fn attr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// --- The gateway's access log ----------------------------------------------------

/// The gateway's access log lines, parsed.
fn access(srv: &Server) -> Vec<Value> {
    srv.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect()
}

fn count(srv: &Server, method: &str, path: &str, status: Option<u64>) -> usize {
    access(srv)
        .iter()
        .filter(|v| {
            v["method"] == method
                && v["path"] == path
                && status.is_none_or(|s| v["status"].as_u64() == Some(s))
        })
        .count()
}

/// Waits until the access log has more than `before` lines for
/// `method path`; returns the newest of them.
fn next_access(srv: &Server, method: &str, path: &str, before: usize) -> Value {
    let mut found = None;
    within(WAIT, || {
        let lines: Vec<Value> = access(srv)
            .into_iter()
            .filter(|v| v["method"] == method && v["path"] == path)
            .collect();
        if lines.len() > before {
            found = lines.last().cloned();
            true
        } else {
            false
        }
    });
    found.unwrap_or_else(|| {
        panic!(
            "no new access log line for {method} {path} (had {before}):\n{}",
            srv.log()
        )
    })
}

// --- Scenario scripts --------------------------------------------------------------

/// `fetch(url)` with optional headers and credentials mode; the outcome
/// as the page sees it: readable (status, body, a header) or rejected.
const FETCH: &str = r#"
const [url, headers, credentials] = arguments;
const opts = {};
if (headers) opts.headers = headers;
if (credentials) opts.credentials = credentials;
try {
  const r = await fetch(url, opts);
  const body = await r.text();
  return {ok: true, status: r.status, body, request_id: r.headers.get('X-Request-Id')};
} catch (e) {
  return {ok: false, name: e.name, message: String(e.message)};
}
"#;

/// Login, then POST /orders with and without the token, same-origin.
const SESSION_FLOW: &str = r#"
const [password] = arguments;
const out = {};
let r = await fetch('/auth/login', {method: 'POST', body: new URLSearchParams({username: 'alice', password})});
out.login_status = r.status;
out.login_body = await r.text();
let token = null;
try { token = JSON.parse(out.login_body).csrf_token; } catch (e) {}
out.token = token;
out.cookie_after_login = document.cookie;
r = await fetch('/orders', {method: 'POST', headers: {'X-CSRF-Token': token || ''}, body: '{}'});
out.with_status = r.status;
out.with_body = await r.text();
r = await fetch('/orders', {method: 'POST', body: '{}'});
out.without_status = r.status;
out.without_body = await r.text();
r = await fetch('/auth/csrf');
out.csrf_status = r.status;
out.csrf_body = await r.text();
out.cookie = document.cookie;
return out;
"#;

fn json_body(s: &str, what: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {s}"))
}

fn assert_blocked(v: &Value, what: &str) {
    assert!(
        v["ok"] == false && v["name"] == "TypeError",
        "{what}: the browser should have refused the page this response, got {v}"
    );
}

fn config(pages: u16, certs: &TestCerts) -> String {
    format!(
        r#"
[tls]
cert = {cert:?}
key = {key:?}

[cors]
allow_origins = ["http://app.test:{pages}"]
allow_methods = ["GET", "POST"]
allow_headers = ["X-API-Key", "Content-Type", "X-CSRF-Token"]
expose_headers = ["RateLimit", "X-Request-Id"]
allow_credentials = true
max_age = 600

[[routes]]
path = "/data"
upstream = "demo"
auth = ["api_key_header"]
scopes = ["data:read"]

[[routes]]
path = "/orders"
methods = ["GET", "POST"]
upstream = "demo"
auth = ["session"]

[[routes]]
path = "/app/**"
upstream = "http://127.0.0.1:{pages}"
auth = []
"#,
        cert = path_str(&certs.cert),
        key = path_str(&certs.key),
    )
}

#[test]
fn browser_cors_sessions_csrf_and_hosts() {
    if !browser_available("browser test") {
        return;
    }
    let started = Instant::now();
    let pages = Pages::start();
    let pp = pages.port;
    let cert_dir = tempfile::tempdir().unwrap();
    let certs = make_certs(cert_dir.path(), "api", &["api.test", "127.0.0.1"]);
    let env = Env::with_server(r#"trusted_hosts = ["api.test"]"#, &config(pp, &certs));
    env.init();
    let key = env.create_key(&["--name", "browser", "--scopes", "data:read"]);
    env.add_user("alice", PASSWORD, "data:read");
    let srv = env.serve();
    let api = format!("https://api.test:{}", env.port);
    let app = format!("http://app.test:{pp}");
    let evil = format!("http://evil.test:{pp}");
    let data = format!("{api}/data");

    // A page on app.test whose sandboxed (origin `null`) frame fetches
    // /data with the key and reports to its parent.
    let frame_script = format!(
        "<script>fetch({url}, {{headers: {{'X-API-Key': {key}}}, credentials: 'include'}})\
         .then((r) => r.text().then((t) => parent.postMessage({{ok: true, status: r.status, body: t}}, '*')))\
         .catch((e) => parent.postMessage({{ok: false, name: e.name, message: String(e.message)}}, '*'));</script>",
        url = json!(data),
        key = json!(key),
    );
    pages.set(
        "/null-frame",
        format!(
            "<!doctype html><html><body><script>window.__result = null;\
             window.addEventListener('message', (e) => {{ window.__result = {{origin: e.origin, data: e.data}}; }});</script>\
             <iframe sandbox=\"allow-scripts\" srcdoc=\"{}\"></iframe></body></html>",
            attr_escape(&frame_script)
        ),
    );
    // A page on evil.test that signs a POST to the API with the browser's
    // cookies, as a cross-site form does.
    pages.set(
        "/form",
        format!(
            "<!doctype html><html><body><form id=\"f\" method=\"POST\" action=\"{api}/orders\">\
             <input type=\"hidden\" name=\"item\" value=\"widget\"></form>\
             <script>document.getElementById('f').submit();</script></body></html>"
        ),
    );

    let b = Browser::start(&[
        "--disable-quic",
        "--host-resolver-rules=MAP api.test 127.0.0.1, MAP app.test 127.0.0.1, MAP evil.test 127.0.0.1",
        "--ignore-certificate-errors",
    ]);

    // 1. The allowed origin reads /data with the key, and an exposed header.
    b.goto(&format!("{app}/blank"));
    let v = b.run(
        FETCH,
        &[json!(data), json!({"X-API-Key": key}), json!("include")],
    );
    assert!(
        v["ok"] == true && v["status"] == 200,
        "1. allowed origin: {v}\n{}",
        srv.log()
    );
    let body = json_body(v["body"].as_str().unwrap(), "1. /data");
    assert_eq!(body["data"], "secret", "1. {body}");
    assert!(
        v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "1. X-Request-Id is exposed, so the page must read it: {v}"
    );
    let line = next_access(&srv, "GET", "/data", 0);
    assert_eq!(line["status"], 200, "1. {line}");
    eprintln!("1. allowed origin: read /data (200) and X-Request-Id");

    // 2. Another origin: the preflight is refused, the browser rejects the
    // fetch, and /data is never asked.
    let gets_before = count(&srv, "GET", "/data", None);
    let options_before = count(&srv, "OPTIONS", "/data", None);
    let health_before = count(&srv, "GET", "/healthz", None);
    b.goto(&format!("{evil}/blank"));
    let v = b.run(
        FETCH,
        &[json!(data), json!({"X-API-Key": key}), json!("include")],
    );
    assert_blocked(&v, "2. evil origin, /data with the key");
    let v = b.run(
        FETCH,
        &[json!(format!("{api}/healthz")), json!(null), json!(null)],
    );
    assert_blocked(&v, "2. evil origin, simple GET /healthz");
    let pre = next_access(&srv, "OPTIONS", "/data", options_before);
    assert_eq!(pre["status"], 400, "2. the refused preflight: {pre}");
    assert_eq!(pre["reason"], "cors_rejected", "2. {pre}");
    // The simple GET was sent (and answered) but not readable; it came
    // after the /data attempt, so that attempt is fully logged by now.
    let health = next_access(&srv, "GET", "/healthz", health_before);
    assert_eq!(health["status"], 200, "2. {health}");
    assert_eq!(
        count(&srv, "GET", "/data", None),
        gets_before,
        "2. a GET /data followed the refused preflight:\n{}",
        srv.log()
    );
    eprintln!("2. evil origin: preflight 400 cors_rejected, fetches rejected, no GET /data");

    // 3. The `null` origin of a sandboxed frame is not an allowed origin.
    let options_before = count(&srv, "OPTIONS", "/data", None);
    b.goto(&format!("{app}/null-frame"));
    let v = b.run(
        r#"
for (let i = 0; i < 100; i++) {
  if (window.__result) return window.__result;
  await new Promise((r) => setTimeout(r, 100));
}
return null;
"#,
        &[],
    );
    assert!(!v.is_null(), "3. the sandboxed frame never reported");
    assert_eq!(v["origin"], "null", "3. the frame's origin: {v}");
    assert_blocked(&v["data"], "3. null origin, /data with the key");
    let pre = next_access(&srv, "OPTIONS", "/data", options_before);
    assert_eq!(pre["status"], 400, "3. {pre}");
    assert_eq!(pre["reason"], "cors_rejected", "3. {pre}");
    assert_eq!(
        count(&srv, "GET", "/data", None),
        gets_before,
        "3. a GET /data followed the refused preflight:\n{}",
        srv.log()
    );
    eprintln!("3. null origin: preflight 400 cors_rejected, fetch rejected");

    // 4. Same-origin page (through /app/**): login, then CSRF.
    b.goto(&format!("{api}/app/page"));
    b.wait_for(&format!("{api}/app/page"));
    let text = b.text();
    assert!(
        text.contains("portcullis browser test page"),
        "4. /app/page through the gateway: {text}"
    );
    let v = b.run(SESSION_FLOW, &[json!(PASSWORD)]);
    assert_eq!(v["login_status"], 200, "4. login: {v}");
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("4. no csrf_token from login: {v}"))
        .to_owned();
    assert!(!token.is_empty(), "4. {v}");
    assert_eq!(v["with_status"], 200, "4. POST /orders with the token: {v}");
    let with = json_body(v["with_body"].as_str().unwrap(), "4. POST /orders");
    assert_eq!(with["identity"]["principal"], "alice", "4. {with}");
    assert_eq!(
        v["without_status"], 403,
        "4. POST /orders without the token: {v}"
    );
    let without = json_body(v["without_body"].as_str().unwrap(), "4. refusal");
    assert_eq!(without["code"], "csrf_failed", "4. {without}");
    assert_eq!(v["csrf_status"], 200, "4. GET /auth/csrf: {v}");
    let csrf = json_body(v["csrf_body"].as_str().unwrap(), "4. /auth/csrf");
    assert!(csrf["csrf_token"].is_string(), "4. {csrf}");
    let doc_cookie = v["cookie"].as_str().unwrap_or_default();
    assert!(
        !doc_cookie.contains(SESSION),
        "4. the session cookie is readable by scripts: {doc_cookie:?}"
    );
    // The CSRF cookie, when scripts see it, is the token last issued:
    // login's, then the fresh one from /auth/csrf.
    let fresh = csrf["csrf_token"].as_str().unwrap();
    for (jar, want) in [
        (&v["cookie_after_login"], token.as_str()),
        (&v["cookie"], fresh),
    ] {
        let jar = jar.as_str().unwrap_or_default();
        assert!(!jar.contains(SESSION), "4. {jar:?}");
        for c in jar.split(';').map(str::trim) {
            if let Some(val) = c.strip_prefix(&format!("{CSRF}=")) {
                assert_eq!(val, want, "4. the CSRF cookie is not the token last issued");
            }
        }
    }
    eprintln!(
        "4. same-origin login 200; POST with token 200, without 403 csrf_failed; session cookie hidden from JS"
    );

    // 5. The cookies' attributes, as the browser stored them.
    let cookies = b.cookies();
    let find = |n: &str| {
        cookies
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("5. no {n} cookie in the browser: {cookies:?}"))
            .clone()
    };
    let sc = find(SESSION);
    assert_eq!(sc["secure"], true, "5. {sc}");
    assert_eq!(sc["httpOnly"], true, "5. {sc}");
    assert!(
        sc["sameSite"] == "Lax" || sc["sameSite"] == "Strict",
        "5. {sc}"
    );
    assert_eq!(sc["path"], "/", "5. {sc}");
    // Host-only: WebDriver names the host itself; a Domain attribute
    // would show as ".api.test" or a parent.
    assert_eq!(sc["domain"], "api.test", "5. {sc}");
    let cc = find(CSRF);
    assert_eq!(cc["secure"], true, "5. {cc}");
    assert_eq!(cc["httpOnly"], false, "5. scripts must read it: {cc}");
    assert_eq!(cc["path"], "/", "5. {cc}");
    assert_eq!(cc["domain"], "api.test", "5. {cc}");
    assert_eq!(cc["value"], fresh, "5. {cc}");
    let shown = |c: &Value| {
        let mut c = c.clone();
        c["value"] = json!("(redacted)");
        c
    };
    eprintln!("5. cookies: {}\n   {}", shown(&sc), shown(&cc));

    // 6. A cross-site form POST carries no session (SameSite) and no
    // token: refused.
    let posts_before = count(&srv, "POST", "/orders", None);
    let posts_ok = count(&srv, "POST", "/orders", Some(200));
    b.goto(&format!("{evil}/form"));
    b.wait_for(&format!("{api}/orders"));
    let text = b.text();
    assert!(
        text.contains("not_authenticated") || text.contains("csrf_failed"),
        "6. the browser shows no refusal after the cross-site form POST: {text}"
    );
    let line = next_access(&srv, "POST", "/orders", posts_before);
    let st = line["status"].as_u64().unwrap_or(0);
    assert!(st == 401 || st == 403, "6. cross-site form POST: {line}");
    assert_eq!(
        count(&srv, "POST", "/orders", Some(200)),
        posts_ok,
        "6. a cross-site POST /orders was let through:\n{}",
        srv.log()
    );
    assert!(
        pages
            .seen()
            .iter()
            .any(|(h, m, p)| h == &format!("evil.test:{pp}") && m == "GET" && p == "/form"),
        "6. the form page was never loaded from evil.test: {:?}",
        pages.seen()
    );
    eprintln!("6. cross-site form POST refused: {st} {}", line["reason"]);

    // 7. A Host outside trusted_hosts.
    let health_before = count(&srv, "GET", "/healthz", None);
    let ip_url = format!("https://127.0.0.1:{}/healthz", env.port);
    b.goto(&ip_url);
    b.wait_for(&ip_url);
    let text = b.text();
    assert!(
        text.contains("Invalid host header"),
        "7. Host 127.0.0.1: {text}"
    );
    let line = next_access(&srv, "GET", "/healthz", health_before);
    assert_eq!(line["status"], 400, "7. {line}");
    eprintln!("7. Host 127.0.0.1: 400 Invalid host header");

    drop(b);
    drop(srv);
    eprintln!("browser test took {:?}", started.elapsed());
}
