//! The security boundary, end to end: no spelling of a protected path
//! reaches an upstream that decodes its path (a real Python server that
//! reads the path as WSGI, Tomcat, nginx, IIS and a double decoder would,
//! and case-insensitively) without that route's credential; the upstream
//! receives the canonical path; forwarding and identity headers from a
//! client never reach the upstream (HTTP/1.1, h2c and TLS + HTTP/2); and
//! the edge answers broken framing with 400.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `tests/python/decoding_upstream.py` on a free port; killed on drop.
pub struct DecodingUpstream {
    child: Child,
    pub port: u16,
}

impl DecodingUpstream {
    pub fn start() -> DecodingUpstream {
        let port = free_port();
        let script = repo_root().join("tests/python/decoding_upstream.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 {}: {e}", script.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("decoding upstream exited: {s}");
            }
            assert!(
                Instant::now() < deadline,
                "decoding upstream did not listen"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        DecodingUpstream { child, port }
    }
}

impl Drop for DecodingUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request over a fresh connection, raw bytes as given (no client
/// library normalises the target): (status, body).
pub fn raw_get(port: u16, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    raw_request(
        port,
        format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{}\r\n",
            headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}\r\n"))
                .collect::<String>()
        )
        .as_bytes(),
    )
}

pub fn raw_request(port: u16, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Spellings of `/w/private/secret` an attacker would try: hand-picked
/// forms from the servers' known disagreements, then a few hundred
/// generated ones (each letter literal, escaped in upper or lower hex, or
/// upper-cased), from a fixed seed so a failure reproduces.
pub fn private_spellings() -> Vec<String> {
    let mut v: Vec<String> = [
        "/w/%70rivate/secret",
        "/w/%70%72%69%76%61%74%65/secret",
        "/w/private;x/secret",
        "/w/private;/secret",
        "/w;x/private/secret",
        "/w/x/../private/secret",
        "/w/x/%2e%2e/private/secret",
        "/w/x/%2E%2E/private/secret",
        "/w/x/.%2e/private/secret",
        "/w/./private/secret",
        "/w%2fprivate/secret",
        "/w%2Fprivate%2Fsecret",
        "/w/%2570rivate/secret",
        "/w/%25%37%30rivate/secret",
        "/w\\private\\secret",
        "/w/%5cprivate/secret",
        "/w//private/secret",
        "/w/private%00/secret",
        "/w/%C0%AFprivate/secret",
        "/w/x%C0%AF..%C0%AFprivate/secret",
        "/W/PRIVATE/secret",
        "/w/Private/secret",
        "/w/PRIV%41TE/secret",
        "/w/pr%C4%B1vate/secret",
        "/w/private%3bx/secret",
        "/w/private/%2e%2e/private/secret",
        "/w/private/secret?x=/w/public",
        "/w/private/",
        "/w/private",
        "/w/priv%61te",
        "/w/private%2F",
        // The exact route /w/admin: Express, ASP.NET and Spring also serve
        // it as /w/admin/.
        "/w/admin/",
        "/W/ADMIN/",
        "/w/%61dmin/",
        "/w/adm%C4%B0n",
        "/w/admin/?x",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut p = String::new();
        for c in "/w/private/secret".chars() {
            if c == '/' {
                p.push('/');
                continue;
            }
            match next() % 8 {
                0 => p.push_str(&format!("%{:02X}", c as u32)),
                1 => p.push_str(&format!("%{:02x}", c as u32)),
                2 => p.push(c.to_ascii_uppercase()),
                _ => p.push(c),
            }
        }
        v.push(p);
    }
    v
}

/// `/w/**` public and `/w/private/**` behind an API key, both to `up`.
pub fn protected_config(up: u16) -> String {
    format!(
        "[[routes]]\npath = \"/w/**\"\nupstream = \"http://127.0.0.1:{up}\"\nauth = []\n\n\
         [[routes]]\npath = \"/w/private/**\"\nupstream = \"http://127.0.0.1:{up}\"\nauth = [\"api_key_header\"]\n\n\
         [[routes]]\npath = \"/w/admin\"\nupstream = \"http://127.0.0.1:{up}\"\nauth = [\"api_key_header\"]\n"
    )
}

#[test]
fn no_spelling_of_a_protected_path_reaches_a_decoding_upstream_without_its_key() {
    let up = DecodingUpstream::start();
    let env = Env::with_server("trusted_proxies = []", &protected_config(up.port));
    env.init();
    let key = env.create_key(&["--name", "reader"]);
    let srv = env.serve();

    let mut refused = 0;
    let mut challenged = 0;
    for p in private_spellings() {
        let (status, body) = raw_get(env.port, &p, &[]);
        match status {
            200 => {
                let j: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(
                    j["served"],
                    "public",
                    "{p:?} reached the protected resource without a key: {j}\n{}",
                    srv.log()
                );
            }
            401 => challenged += 1,
            400 => refused += 1,
            s => panic!("{p:?}: unexpected {s}: {body}"),
        }
    }
    // Not vacuous: most spellings are recognised as the protected route
    // (401), the rest refused as ambiguous (400).
    assert!(
        challenged > 250,
        "{challenged} challenged, {refused} refused"
    );
    assert!(refused >= 20, "{challenged} challenged, {refused} refused");

    // With the key, every spelling Portcullis accepts reaches the
    // upstream in its one canonical form, and is the protected resource.
    for p in [
        "/w/%70rivate/secret",
        "/w/priv%61te/secr%65t",
        "/W/PRIVATE/secret",
    ] {
        let (status, body) = raw_get(env.port, p, &[("X-API-Key", &key)]);
        assert_eq!(status, 200, "{p}: {body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["served"], "private", "{p}: {j}");
        let canonical = p
            .replace("%70", "p")
            .replace("%61", "a")
            .replace("%65", "e");
        assert_eq!(j["raw"], canonical.as_str(), "{p}: {j}");
    }
    // Public paths pass, decoded the same way.
    let (status, body) = raw_get(env.port, "/w/%70ublic?q=%2F", &[]);
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["raw"], "/w/public?q=%2F", "the query is passed as sent");

    // A refusal says why, in problem+json.
    let (status, body) = raw_get(env.port, "/w/private;x/secret", &[]);
    assert_eq!(status, 400);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["code"], "path_not_normalized");
    assert!(j["detail"].as_str().unwrap().contains("';'"), "{j}");
    // The log names the reason and never the forwarded spelling alone.
    let log = srv.log();
    assert!(log.contains("path_parameter"), "{log}");
}

/// The headers the upstream received, from the echo upstream's JSON.
fn seen(j: &serde_json::Value, name: &str) -> Vec<String> {
    j["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

const SPOOFED: &[(&str, &str)] = &[
    ("X-Forwarded-For", "203.0.113.66"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
    (
        "Forwarded",
        "for=203.0.113.66;host=evil.example;proto=https",
    ),
    ("X-Real-IP", "203.0.113.66"),
    ("X-Client-IP", "203.0.113.66"),
    ("True-Client-IP", "203.0.113.66"),
    ("X-Portcullis-Principal", "admin"),
    ("X-Portcullis-Scopes", "admin"),
    ("X-Portcullis-Anything", "forged"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    // CGI, WSGI and Rack read `_` as `-`.
    ("X-Portcullis_Principal", "admin"),
    ("X_Forwarded_For", "203.0.113.66"),
    ("X-Real_IP", "203.0.113.66"),
    ("X-HTTP-Method_Override", "DELETE"),
];

/// What the upstream must see from an untrusted client, whatever it sent.
fn assert_clean(j: &serde_json::Value, proto: &str, host: &str, how: &str) {
    assert_eq!(seen(j, "x-forwarded-for"), ["127.0.0.1"], "{how}: {j}");
    assert_eq!(seen(j, "x-real-ip"), ["127.0.0.1"], "{how}: {j}");
    assert_eq!(seen(j, "x-forwarded-proto"), [proto], "{how}: {j}");
    assert_eq!(seen(j, "x-forwarded-host"), [host], "{how}: {j}");
    for gone in [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-client-ip",
        "true-client-ip",
        "x-portcullis-principal",
        "x-portcullis-scopes",
        "x-portcullis-anything",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-portcullis_principal",
        "x_forwarded_for",
        "x-real_ip",
        "x-http-method_override",
    ] {
        assert!(
            seen(j, gone).is_empty(),
            "{how}: {gone} reached the upstream: {j}"
        );
    }
}

fn send(c: &reqwest::blocking::Client, url: &str) -> (reqwest::Version, serde_json::Value) {
    let mut rb = c.get(url);
    for (n, v) in SPOOFED {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let v = r.version();
    (v, r.json().unwrap())
}

#[test]
fn client_forwarding_and_identity_headers_never_reach_the_upstream() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "fw", &["localhost", "127.0.0.1"]);
    let routes = format!(
        "[[routes]]\npath = \"/**\"\nupstream = \"http://{a}\"\nauth = []\n\n\
         [[routes]]\npath = \"/legacy/**\"\nupstream = \"http://{a}\"\nauth = []\nforward_override_headers = true\n",
        a = up.addr
    );
    let plain = Env::with_server("trusted_proxies = []\nh2c = true", &routes);
    plain.init();
    let _p = plain.serve();

    // HTTP/1.1 and h2c (prior knowledge).
    let h1 = client();
    let (v, j) = send(&h1, &plain.url("/x"));
    assert_eq!(v, reqwest::Version::HTTP_11);
    assert_clean(&j, "http", &format!("127.0.0.1:{}", plain.port), "HTTP/1.1");
    crypto_provider();
    let h2c = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (v, j) = send(&h2c, &plain.url("/x"));
    assert_eq!(v, reqwest::Version::HTTP_2);
    assert_clean(&j, "http", &format!("127.0.0.1:{}", plain.port), "h2c");

    // A route that opts in passes the override headers, and nothing else.
    let (_, j) = send(&h1, &plain.url("/legacy/x"));
    assert_eq!(seen(&j, "x-http-method-override"), ["DELETE"], "{j}");
    assert_eq!(seen(&j, "x-original-url"), ["/admin"], "{j}");
    assert!(seen(&j, "x-portcullis-principal").is_empty(), "{j}");
    assert_eq!(seen(&j, "x-forwarded-for"), ["127.0.0.1"], "{j}");

    // TLS with HTTP/2 (ALPN) and HTTP/1.1.
    let tls = Env::with_server(
        "trusted_proxies = []",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{routes}",
            path_str(&certs.cert),
            path_str(&certs.key)
        ),
    );
    tls.init();
    let _t = tls.serve();
    let url = format!("https://localhost:{}/x", tls.port);
    let (v, j) = send(&tls_client(&certs.ca_pem, true), &url);
    assert_eq!(v, reqwest::Version::HTTP_2);
    assert_clean(&j, "https", &format!("localhost:{}", tls.port), "TLS + h2");
    let (v, j) = send(&tls_client(&certs.ca_pem, false), &url);
    assert_eq!(v, reqwest::Version::HTTP_11);
    assert_clean(
        &j,
        "https",
        &format!("localhost:{}", tls.port),
        "TLS + HTTP/1.1",
    );
}

#[test]
fn a_trusted_proxys_chain_is_extended_and_identity_still_dropped() {
    let up = upstream();
    let env = Env::with_server(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        &format!(
            "[[routes]]\npath = \"/**\"\nupstream = \"http://{}\"\nauth = []\n",
            up.addr
        ),
    );
    env.init();
    let _s = env.serve();
    let r = client()
        .get(env.url("/x"))
        .header("X-Forwarded-For", "198.51.100.1")
        // HAProxy adds its own line rather than extending the first.
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Host", "api.example.com")
        .header("X-Forwarded-Proto", "https")
        .header("X-Portcullis-Principal", "admin")
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().unwrap();
    assert_eq!(
        seen(&j, "x-forwarded-for"),
        ["198.51.100.1, 203.0.113.7, 127.0.0.1"],
        "{j}"
    );
    assert_eq!(seen(&j, "x-real-ip"), ["203.0.113.7"], "{j}");
    assert_eq!(seen(&j, "x-forwarded-host"), ["api.example.com"], "{j}");
    assert_eq!(seen(&j, "x-forwarded-proto"), ["https"], "{j}");
    assert!(seen(&j, "x-portcullis-principal").is_empty(), "{j}");
    assert!(seen(&j, "x-http-method-override").is_empty(), "{j}");
}

#[test]
fn broken_framing_and_a_missing_host_are_the_clients_error() {
    let up = upstream();
    let env = Env::with_server(
        "trusted_proxies = []",
        &format!(
            "[[routes]]\npath = \"/**\"\nupstream = \"http://{}\"\nauth = []\n",
            up.addr
        ),
    );
    env.init();
    let srv = env.serve();
    let port = env.port;
    // A chunk size that is not hex, and a chunk longer than it says.
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "3\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\nq\r\n\r\n",
    ] {
        let (status, text) = raw_request(
            port,
            format!(
                "POST /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
            )
            .as_bytes(),
        );
        assert_eq!(status, 400, "{body:?}: {text}\n{}", srv.log());
        assert!(text.contains("malformed_body"), "{body:?}: {text}");
    }
    // HTTP/1.1 in absolute form without Host: 400, as for any HTTP/1.1
    // request without Host (RFC 9112 §3.2).
    let (status, text) = raw_request(
        port,
        format!("GET http://127.0.0.1:{port}/x HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_host"), "{text}");
    // With Host it is served.
    let (status, text) = raw_request(
        port,
        format!(
            "GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn routes_that_differ_only_in_case_are_refused_at_start() {
    let env = Env::new(
        "[[routes]]\npath = \"/Admin/**\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\n\n\
         [[routes]]\npath = \"/admin/**\"\nupstream = \"demo\"\nauth = []\n",
    );
    let o = env.cli(&["config", "check"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("routes[1].path") && err.contains("case"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
