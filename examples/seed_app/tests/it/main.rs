#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The seed app as its users meet it: the real binary, on a free loopback
//! port, with its SQLite files in a temp dir, over real HTTP.

use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "my-secret-key";

struct App {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    client: Client,
}

impl App {
    fn start(extra: &[(&str, &str)]) -> App {
        // A workspace build gives reqwest rustls without a provider (the
        // gateway's tests need that feature); install ours. Already
        // installed by another test is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
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
        let child = cmd.spawn().expect("spawn seed_app");
        let app = App {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
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

    /// Stops the app and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
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
    let (_, _, v) = json(app.get("/users/me", &[("Cookie", &cookie)]).expect("me"));
    assert_eq!(v["username"], "demo");

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
    let (_, _, v) = json(
        app.get("/both", &[("Authorization", &bearer)])
            .expect("both"),
    );
    assert_eq!(
        (v["user"].as_str(), v["via"].as_str()),
        (Some("johndoe"), Some("bearer"))
    );
    let (_, _, v) = json(app.get("/both", &key).expect("both"));
    assert_eq!(
        (v["user"].as_str(), v["via"].as_str()),
        (Some("demo"), Some("api_key"))
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
    let (_, _, v) = json(app.get("/items?q=Ba", &[]).expect("items"));
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, _, v) = json(
        app.get("/items?q=%27%20OR%201%3D1%20--", &[])
            .expect("items"),
    );
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
    let (_, _, doc) = json(app.get("/openapi.json", &[]).expect("openapi"));
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

    // Redacted logs: at trace level, no credential appears anywhere.
    let logs = app.stop();
    assert!(logs.contains("seed_app::access"), "no access log:\n{logs}");
    for secret in [
        KEY,
        t.as_str(),
        "secret-johndoe",
        csrf.as_str(),
        &session["__Host-portcullis_session=".len()..],
    ] {
        assert!(!logs.contains(secret), "a credential reached the log");
    }
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
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
