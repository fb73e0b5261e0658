#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The seed app as its users meet it: the real binary, on a free loopback
//! port, with its SQLite files in a temp dir, over real HTTP.

use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::io::Read;
// The canary helpers, shared with the gateway's tests.
#[path = "../../../../crates/portcullis-gateway/tests/it/secrets.rs"]
mod secrets;
use secrets::{assert_no_secrets, secret_forms};
// Free ports below the ephemeral range, the library's helper.
#[path = "../../../../crates/portcullis/tests/it/ports.rs"]
mod ports;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KEY: &str = "my-secret-key";

struct App {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    client: Client,
    /// Everything the app printed so far, stdout and stderr.
    log: Arc<Mutex<String>>,
    /// The threads reading its pipes (so it never blocks on a full one);
    /// they end at EOF.
    readers: Vec<JoinHandle<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    fn start(extra: &[(&str, &str)]) -> App {
        // A workspace build gives reqwest rustls without a provider (the
        // gateway's tests need that feature); install ours. Already
        // installed by another test is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = ports::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seed_app"));
        cmd.env("SEED_API_KEY", KEY)
            .env("SEED_DATA_DIR", dir.path())
            .env("SEED_ADDR", format!("127.0.0.1:{port}"))
            .env("SEED_ITEMS_RATE", "3/minute")
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn seed_app");
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => log
                            .lock()
                            .expect("log")
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            }));
        }
        let app = App {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            log,
            readers,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if app.get("/public", &[]).is_ok() {
                return app;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("seed_app did not start");
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Result<Response> {
        self.send("GET", path, headers, None)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> reqwest::Result<Response> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .client
            .request(m, format!("{}{path}", self.base))
            .header("Host", "localhost");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some((ct, b)) = body {
            r = r.header("Content-Type", ct).body(b);
        }
        r.send()
    }

    /// Stops the app with SIGTERM and returns everything it logged: it
    /// must still be running (not crashed), must exit by that signal
    /// within 30 s, and both pipe readers must reach EOF, so the log is
    /// whole. (The app has no SIGTERM handler, so the signal ends it; its
    /// stdout is line-buffered and every complete log line is already
    /// written.)
    fn stop(mut self) -> String {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "seed_app exited before it was stopped:\n{}",
            self.log.lock().expect("log")
        );
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {pid}: {sent:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success() || status.signal() == Some(15),
            "seed_app ended with {status:?}, not by SIGTERM"
        );
        for r in std::mem::take(&mut self.readers) {
            r.join().expect("a log reader panicked");
        }
        self.log.lock().expect("log").clone()
    }
}

fn json(r: Response) -> (u16, HeaderMap, Value) {
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let v = r.json().unwrap_or(Value::Null);
    (status, h, v)
}

fn token(app: &App, user: &str, pw: &str) -> String {
    let form = format!("grant_type=password&username={user}&password={pw}");
    let (s, _, v) = json(
        app.send(
            "POST",
            "/token",
            &[],
            Some(("application/x-www-form-urlencoded", form)),
        )
        .expect("token"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    v["access_token"].as_str().expect("access_token").to_owned()
}

#[test]
fn every_seed_endpoint() {
    let app = App::start(&[]);
    let key = [("X-API-Key", KEY)];
    let cookie = format!("api_key={KEY}");

    // /public
    let (s, _, v) = json(app.get("/public", &[]).expect("public"));
    assert_eq!(
        (s, v["message"].as_str()),
        (200, Some("Anyone can see this"))
    );

    // the three API key places, each: missing → 401 APIKey, wrong → 401, right → 200
    type Headers = Vec<(&'static str, String)>;
    let cases: [(&str, Headers, Headers); 3] = [
        (
            "/data",
            vec![("X-API-Key", KEY.into())],
            vec![("X-API-Key", "wrong-key-value".into())],
        ),
        (
            "/users/me",
            vec![("Cookie", cookie.clone())],
            vec![("Cookie", "api_key=wrong-key-value".into())],
        ),
        ("/export", vec![], vec![]),
    ];
    for (path, good, bad) in &cases {
        let (s, h, v) = json(app.get(path, &[]).expect("missing"));
        assert_eq!(s, 401, "{path}");
        assert_eq!(h["www-authenticate"], "APIKey", "{path}");
        assert_eq!(v["detail"], "Not authenticated", "{path}");
        if *path == "/export" {
            continue;
        }
        let g: Vec<(&str, &str)> = good.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let b: Vec<(&str, &str)> = bad.iter().map(|(a, b)| (*a, b.as_str())).collect();
        assert_eq!(app.get(path, &g).expect("good").status(), 200, "{path}");
        let (s, _, v) = json(app.get(path, &b).expect("bad"));
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("invalid_credentials")),
            "{path}"
        );
    }
    assert_eq!(
        app.get(&format!("/export?api_key={KEY}"), &[])
            .expect("q")
            .status(),
        200
    );
    assert_eq!(
        app.get("/export?api_key=nope-nope-nope", &[])
            .expect("q")
            .status(),
        401
    );
    // The key in two places at once is refused, not resolved.
    let (s, _, v) = json(
        app.get(&format!("/export?api_key={KEY}&api_key={KEY}"), &[])
            .expect("dup"),
    );
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("ambiguous_credentials"))
    );
    let (s, _, v) = json(app.get("/users/me", &[("Cookie", &cookie)]).expect("me"));
    assert_eq!((s, v["username"].as_str()), (200, Some("demo")), "{v}");

    // password flow → /secure-data; Bearer or key on /both
    let t = token(&app, "johndoe", "secret-johndoe");
    let bearer = format!("Bearer {t}");
    let (s, _, v) = json(
        app.get("/secure-data", &[("Authorization", &bearer)])
            .expect("sd"),
    );
    assert_eq!((s, v["user"].as_str()), (200, Some("johndoe")));
    let (s, h, _) = json(
        app.get("/secure-data", &[("Authorization", "Bearer not.a.token")])
            .expect("sd"),
    );
    assert_eq!(s, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap_or("")
            .starts_with("Bearer")
    );
    let (s, _, v) = json(
        app.get("/both", &[("Authorization", &bearer)])
            .expect("both"),
    );
    assert_eq!(
        (s, v["user"].as_str(), v["via"].as_str()),
        (200, Some("johndoe"), Some("bearer"))
    );
    let (s, _, v) = json(app.get("/both", &key).expect("both"));
    assert_eq!(
        (s, v["user"].as_str(), v["via"].as_str()),
        (200, Some("demo"), Some("api_key"))
    );
    assert_eq!(app.get("/both", &[]).expect("both").status(), 401);
    let bad = json(
        app.send(
            "POST",
            "/token",
            &[],
            Some((
                "application/x-www-form-urlencoded",
                "grant_type=password&username=johndoe&password=wrong-password".into(),
            )),
        )
        .expect("t"),
    );
    assert_eq!(bad.0, 400);
    assert_eq!(bad.2["error"], "invalid_grant");
    assert!(bad.2.get("access_token").is_none(), "{}", bad.2);
    // alice is disabled
    let dis = json(
        app.send(
            "POST",
            "/token",
            &[],
            Some((
                "application/x-www-form-urlencoded",
                "grant_type=password&username=alice&password=secret-alice".into(),
            )),
        )
        .expect("t"),
    );
    assert_eq!(dis.0, 400, "{}", dis.2);
    assert_eq!(dis.2["error"], "invalid_grant", "{}", dis.2);

    // Basic
    let basic = format!("Basic {}", b64("johndoe:secret-johndoe"));
    let (s, _, v) = json(
        app.get("/basic", &[("Authorization", &basic)])
            .expect("basic"),
    );
    assert_eq!((s, v["username"].as_str()), (200, Some("johndoe")));
    let (s, h, _) = json(app.get("/basic", &[]).expect("basic"));
    assert_eq!(s, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap_or("")
            .starts_with("Basic")
    );
    assert_eq!(
        app.get("/basic", &[("Authorization", "Basic !!!")])
            .expect("b")
            .status(),
        401
    );

    // /items: parameterised search, a limit of 3 a minute per address
    let (s, _, v) = json(app.get("/items?q=Ba", &[]).expect("items"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    let (s, _, v) = json(
        app.get("/items?q=%27%20OR%201%3D1%20--", &[])
            .expect("items"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0), "{v}");
    let (s, _, _) = json(app.get("/items", &[]).expect("items"));
    assert_eq!(s, 200);
    let (s, h, v) = json(app.get("/items", &[]).expect("items"));
    assert_eq!((s, v["code"].as_str()), (429, Some("rate_limited")));
    assert!(h.contains_key("retry-after"));
    // POST /items validates and names the field
    let (s, _, v) = json(
        app.send(
            "POST",
            "/items",
            &[],
            Some((
                "application/json",
                r#"{"name":"Qux","price":"cheap"}"#.into(),
            )),
        )
        .expect("post"),
    );
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["loc"], serde_json::json!(["body", "price"]));
    let (s, _, v) = json(
        app.send(
            "POST",
            "/items",
            &[],
            Some(("application/json", r#"{"name":"Qux","price":3.5}"#.into())),
        )
        .expect("post"),
    );
    assert_eq!((s, v["name"].as_str()), (200, Some("Qux")));

    // /login + /orders: session cookie, CSRF token, validated body
    let r = app
        .send(
            "POST",
            "/login",
            &[],
            Some((
                "application/x-www-form-urlencoded",
                "username=johndoe&password=secret-johndoe".into(),
            )),
        )
        .expect("login");
    assert_eq!(r.status(), 200);
    let mut session = String::new();
    for c in r.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap_or("");
        if c.starts_with("__Host-portcullis_session=") {
            assert!(
                c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Lax"),
                "{c}"
            );
            session = c.split(';').next().unwrap_or("").to_owned();
        }
    }
    let (_, _, v) = json(r);
    let csrf = v["csrf_token"].as_str().expect("csrf").to_owned();
    assert!(!session.is_empty(), "no session cookie set");
    let order = || {
        Some((
            "application/json",
            r#"{"item":"Foo","quantity":2}"#.to_owned(),
        ))
    };
    let (s, _, v) = json(
        app.send(
            "POST",
            "/orders",
            &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
            order(),
        )
        .expect("o"),
    );
    assert_eq!(
        (s, v["user"].as_str(), v["quantity"].as_i64()),
        (200, Some("johndoe"), Some(2)),
        "{v}"
    );
    let (s, _, v) = json(
        app.send("POST", "/orders", &[("Cookie", &session)], order())
            .expect("o"),
    );
    assert_eq!((s, v["code"].as_str()), (403, Some("csrf_failed")));
    let (s, _, _) = json(app.send("POST", "/orders", &[], order()).expect("o"));
    assert_eq!(s, 401);
    let (s, _, v) = json(
        app.send(
            "POST",
            "/orders",
            &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
            Some(("application/json", r#"{"item":"Foo","quantity":0}"#.into())),
        )
        .expect("o"),
    );
    assert_eq!(s, 422);
    assert_eq!(
        v["errors"][0]["loc"],
        serde_json::json!(["body", "quantity"])
    );

    // one protected route in an open router
    let path = "/admin/password_reset?user=1&new_password=x";
    assert_eq!(app.send("POST", path, &[], None).expect("a").status(), 401);
    let (s, _, v) = json(app.send("POST", path, &key, None).expect("a"));
    assert_eq!((s, v["status"].as_str()), (200, Some("password reset")));

    // CORS, trusted hosts
    let r = app
        .send(
            "OPTIONS",
            "/data",
            &[
                ("Origin", "https://myapp.example.com"),
                ("Access-Control-Request-Method", "GET"),
            ],
            None,
        )
        .expect("preflight");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://myapp.example.com"
    );
    let r = app
        .send(
            "OPTIONS",
            "/data",
            &[
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            None,
        )
        .expect("preflight");
    assert_eq!(r.status(), 400);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = app
        .get(
            "/data",
            &[("Origin", "https://evil.example"), ("X-API-Key", KEY)],
        )
        .expect("cors");
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = app
        .client
        .get(format!("{}/public", app.base))
        .header("Host", "evil.com")
        .send()
        .expect("host");
    assert_eq!(r.status(), 400);

    // OpenAPI names every scheme it uses
    let (s, _, doc) = json(app.get("/openapi.json", &[]).expect("openapi"));
    assert_eq!(s, 200);
    let schemes = &doc["components"]["securitySchemes"];
    for name in [
        "APIKeyHeader",
        "APIKeyQuery",
        "APIKeyCookie",
        "HTTPBearer",
        "HTTPBasic",
        "OAuth2PasswordBearer",
    ] {
        assert!(schemes.get(name).is_some(), "{name} missing from {schemes}");
    }
    assert_eq!(
        doc["paths"]["/data"]["get"]["security"],
        serde_json::json!([{"APIKeyHeader": []}])
    );

    // Redacted logs: at trace level (RUST_LOG=trace: the app's
    // EnvFilter, so hyper, tower, sqlx and the rest at trace too), no
    // credential appears anywhere, in any encoding.
    let logs = app.stop();
    assert!(logs.contains("seed_app::access"), "no access log:\n{logs}");
    // Nothing here emits at TRACE (hyper 1 has no tracing output without
    // its unstable cfg); a dependency's DEBUG lines show the filter lets
    // dependencies through below info.
    assert!(
        logs.contains(" DEBUG sqlx::query"),
        "no dependency DEBUG line: RUST_LOG=trace not applied?\n{logs}"
    );
    // Every request above was answered and logged.
    let served = logs
        .lines()
        .filter(|l| l.contains("seed_app::access"))
        .count();
    // (39 of the requests above reach the access-log layer; the refused
    // preflight and Host are answered before it.)
    assert!(served >= 39, "only {served} access lines:\n{logs}");
    let targets: std::collections::BTreeSet<&str> = logs
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(targets.contains("seed_app::access:"), "{targets:?}");
    let session_value = &session["__Host-portcullis_session=".len()..];
    let secrets = [
        KEY,
        t.as_str(),
        "secret-johndoe",
        "wrong-password",
        "secret-alice",
        "wrong-key-value",
        "nope-nope-nope",
        &basic["Basic ".len()..],
        csrf.as_str(),
        session_value,
    ];
    let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
    assert_no_secrets(&logs, &secrets);
    // A JWT's signature, a CSRF token's parts.
    for tokenish in [t.as_str(), csrf.as_str()] {
        for part in tokenish.split('.').filter(|p| p.len() >= 16) {
            assert!(!logs.contains(part), "part of a token reached the log");
        }
    }
}

#[test]
fn secret_forms_find_encoded_secrets() {
    for prefix in ["a:", "ab:", "abc:"] {
        let basic = b64(&format!("{prefix}secret-johndoe"));
        assert!(
            secret_forms("secret-johndoe")
                .iter()
                .any(|f| basic.contains(f)),
            "{basic}"
        );
    }
    assert!(
        secret_forms("my secret/key")
            .iter()
            .any(|f| "k=my+secret%2fkey".contains(f))
    );
}

#[test]
fn one_spelling_of_each_path() {
    // The edge layer puts the path in canonical form before the router
    // sees it: an encoded letter reaches the same handler and its check,
    // and spellings servers disagree on are refused.
    let app = App::start(&[]);
    let (s, _, v) = json(app.get("/d%61ta", &[]).expect("encoded"));
    assert_eq!((s, v["detail"].as_str()), (401, Some("Not authenticated")));
    let (s, _, v) = json(
        app.get("/d%61ta", &[("X-API-Key", KEY)])
            .expect("encoded, key"),
    );
    assert_eq!((s, v["data"].as_str()), (200, Some("secret")), "{v}");
    // (reqwest resolves dot segments itself; the gateway tests send those raw.)
    for bad in ["/data;x", "/data%00", "/data%2Fx"] {
        let (s, _, v) = json(app.get(bad, &[]).expect("bad"));
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["code"], "path_not_normalized", "{bad}: {v}");
    }
}

#[test]
fn https_redirect_option() {
    let app = App::start(&[("SEED_HTTPS_REDIRECT", "1")]);
    let r = app.get("/public?x=1", &[]).expect("get");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "https://localhost/public?x=1");
    let (s, _, v) = json(app.get("/data", &[("X-API-Key", KEY)]).expect("key"));
    assert_eq!((s, v["code"].as_str()), (403, Some("https_required")));
    assert_eq!(
        app.send("POST", "/items", &[], None)
            .expect("post")
            .status(),
        403
    );
    // Behind a TLS terminator on loopback nothing says "https": the
    // forwarded header is only believed from trusted proxies.
    let r = app
        .get("/public", &[("X-Forwarded-Proto", "https")])
        .expect("xfp");
    assert_eq!(r.status(), 308);
    app.stop();
}

#[test]
fn bad_settings_stop_start_up_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_seed_app"))
        .env_remove("SEED_API_KEY")
        .env("SEED_DATA_DIR", std::env::temp_dir())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SEED_API_KEY"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_seed_app"))
        .env("SEED_API_KEY", "short")
        .env("SEED_DATA_DIR", std::env::temp_dir())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SEED_API_KEY") && !err.contains("short"),
        "{err}"
    );
}

fn b64(s: &str) -> String {
    secrets::b64(s.as_bytes())
}
