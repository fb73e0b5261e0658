//! CORS over real HTTP: preflights answered before authentication and
//! never forwarded, a table of hostile origins that get no allow header,
//! `Vary: Origin`, a route's own policy, upstream CORS headers replaced,
//! bad policies refused at start-up, and the security headers on
//! Portcullis's own answers and on proxied ones.

use crate::harness::*;
use std::sync::atomic::Ordering;

const APP: &str = "https://app.example.com";

fn config(up: &Upstream) -> String {
    format!(
        r#"
[cors]
allow_origins = ["{APP}", "http://localhost:3000"]
allow_methods = ["GET", "POST"]
allow_headers = ["X-API-Key", "Content-Type", "X-CSRF-Token"]
expose_headers = ["RateLimit", "X-Request-Id"]
allow_credentials = true
max_age = 600

[security_headers]
proxied = {{ "X-Content-Type-Options" = "nosniff", "Referrer-Policy" = "strict-origin" }}

[[routes]]
path = "/data"
methods = ["GET", "POST"]
upstream = "http://{up}"
auth = ["api_key_header"]

[[routes]]
path = "/partner/**"
upstream = "http://{up}"
auth = ["api_key_header"]
cors = {{ allow_origins = ["https://partner.example.org"], allow_methods = ["GET"], allow_headers = ["X-API-Key"] }}
"#,
        up = up.addr
    )
}

#[test]
fn preflights_hostile_origins_and_route_policies() {
    let up = upstream();
    let env = Env::new(&config(&up));
    env.init();
    let key = env.create_key(&["--name", "k"]);
    let _srv = env.serve();
    let c = client();
    let preflight = |path: &str, origin: &str, method: &str, headers: &str| {
        let mut rb = c
            .request(reqwest::Method::OPTIONS, env.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            rb = rb.header("access-control-request-headers", headers);
        }
        rb.send().unwrap()
    };

    // An allowed preflight: 200, no credential needed, never forwarded.
    let r = preflight("/data", APP, "POST", "x-api-key, content-type");
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"), "{h:?}");
    assert_eq!(r.text().unwrap(), "OK");
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "a preflight was forwarded"
    );

    // Refused preflights: 400, Starlette's words, no allow-origin.
    for (origin, method, headers, detail) in [
        ("https://evil.example", "GET", "", "Disallowed CORS origin"),
        (APP, "DELETE", "", "Disallowed CORS method"),
        (APP, "get", "", "Disallowed CORS method"),
        (APP, "GET", "x-evil", "Disallowed CORS headers"),
        (APP, "GET", "x-api-key,", "Disallowed CORS headers"),
        (
            "null",
            "PUT",
            "x-evil",
            "Disallowed CORS origin, method, headers",
        ),
    ] {
        let r = preflight("/data", origin, method, headers);
        assert_eq!(r.status(), 400, "{origin} {method} {headers}");
        if detail.contains("origin") {
            assert!(r.headers().get("access-control-allow-origin").is_none());
            assert!(
                r.headers()
                    .get("access-control-allow-credentials")
                    .is_none()
            );
        }
        let b: serde_json::Value = r.json().unwrap();
        assert_eq!(b["code"], "cors_rejected");
        assert_eq!(b["detail"], detail);
    }

    // A table of hostile origins on a real credentialed request: none gets
    // an allow header; the request itself is authenticated as usual.
    let hostile = [
        "null",
        "NULL",
        "https://app.example.com.evil.net",
        "https://evilapp.example.com",
        "https://evil-app.example.com",
        "https://appXexample.com",
        "http://app.example.com",
        "https://app.example.com:444",
        "https://app.example.com:443",
        "https://APP.example.com",
        "https://app.example.com%60.evil.net",
        "https://app.example.com_.evil.net",
        "https://sub.app.example.com",
        "https://example.com",
        "https://app.example.co",
        "https://app.example.com/",
        "https://app.example.com.",
        "http://localhost:3001",
        "http://localhost",
        "https://localhost:3000",
        "file://",
        "",
    ];
    for origin in hostile {
        let r = c
            .get(env.url("/data"))
            .header("origin", origin)
            .header("x-api-key", &key)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{origin:?}");
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{origin:?} got {:?}",
            r.headers()
        );
        assert!(
            r.headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
        assert!(r.headers()["vary"].to_str().unwrap().contains("Origin"));
        let r = preflight("/data", origin, "GET", "x-api-key");
        assert_eq!(r.status(), 400, "{origin:?}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    // Two Origin lines, each allowed on its own: no allow header.
    let r = c
        .get(env.url("/data"))
        .header("origin", APP)
        .header("origin", "http://localhost:3000")
        .header("x-api-key", &key)
        .send()
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // The allowed origin on a real request: allow headers, exposed
    // headers, and the upstream's own CORS headers replaced.
    let r = c
        .get(env.url("/data"))
        .header("origin", APP)
        .header("x-api-key", &key)
        .send()
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("X-Request-Id")
    );
    // Without a credential the 401 still carries CORS headers, so the
    // page can read why.
    let r = c
        .get(env.url("/data"))
        .header("origin", APP)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);

    // A route's own policy replaces the global one.
    let r = preflight(
        "/partner/x",
        "https://partner.example.org",
        "GET",
        "x-api-key",
    );
    assert_eq!(r.status(), 200);
    let r = preflight("/partner/x", APP, "GET", "x-api-key");
    assert_eq!(
        r.status(),
        400,
        "the global origin leaked into the route's policy"
    );
    let r = c
        .get(env.url("/partner/x"))
        .header("origin", APP)
        .header("x-api-key", &key)
        .send()
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(up.hits.load(Ordering::SeqCst), hostile.len() + 3);
}

#[test]
fn security_headers_on_own_and_proxied_answers() {
    let up = upstream();
    let env = Env::new(&config(&up));
    env.init();
    let key = env.create_key(&["--name", "k"]);
    let _srv = env.serve();
    let c = client();
    // Portcullis's own answers: all of them.
    for r in [
        c.get(env.url("/healthz")).send().unwrap(),
        c.get(env.url("/data")).send().unwrap(),
        c.get(env.url("/nowhere")).send().unwrap(),
    ] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{h:?}");
        assert_eq!(h["cache-control"], "no-store", "{h:?}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{h:?}");
        assert_eq!(h["x-frame-options"], "DENY", "{h:?}");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        // No HSTS over plain HTTP.
        assert!(h.get("strict-transport-security").is_none());
    }
    // The upstream's: the configured set only.
    let r = c
        .get(env.url("/data"))
        .header("x-api-key", &key)
        .send()
        .unwrap();
    let h = r.headers();
    assert_eq!(h["x-upstream"], "yes");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin");
    assert!(h.get("content-security-policy").is_none(), "{h:?}");
}

#[test]
fn bad_cors_config_is_refused_at_start_up() {
    for (body, want) in [
        (
            "[cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n",
            "cors.allow_origins[0]",
        ),
        (
            "[cors]\nallow_origins = [\"null\"]\n",
            "cors.allow_origins[0]",
        ),
        (
            "[cors]\nallow_origins = [\"https://*.example.com\"]\n",
            "cors.allow_origins[0]",
        ),
        (
            "[cors]\nallow_origins = [\"https://a.example.com/\"]\n",
            "cors.allow_origins[0]",
        ),
        ("[cors]\nmax_age = 100000\n", "cors.max_age"),
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"demo\"\ncors = { allow_origins = [\"ftp://x\"] }\n",
            "routes[0].cors.allow_origins[0]",
        ),
        ("[server]\ntrusted_hosts = [\"*\"]\n", "trusted_hosts"),
        (
            "[server]\ntrusted_hosts = [\"*example.com\"]\n",
            "trusted_hosts",
        ),
        (
            "[security_headers]\nproxied = { \"Access-Control-Allow-Origin\" = \"*\" }\n",
            "security_headers.proxied",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, body).unwrap();
        let o = std::process::Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(want), "{body}: expected {want:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn with_no_policy_the_upstreams_cors_headers_do_not_pass() {
    use std::io::{BufRead, BufReader, Write};
    // An upstream that opens itself to every origin.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\naccess-control-allow-origin: *\r\naccess-control-allow-credentials: true\r\naccess-control-expose-headers: x-secret\r\nconnection: close\r\n\r\nok");
        }
    });
    let env = Env::new(&format!(
        "[[routes]]\npath = \"/**\"\nupstream = \"http://127.0.0.1:{port}\"\nauth = []\n"
    ));
    env.init();
    let _s = env.serve();
    let r = client()
        .get(env.url("/x"))
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    for h in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        assert!(
            r.headers().get(h).is_none(),
            "{h} passed: {:?}",
            r.headers()
        );
    }
}
