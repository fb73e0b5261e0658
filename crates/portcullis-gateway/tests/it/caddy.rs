//! Caddy `forward_auth` in front of Portcullis: a real Caddy (Debian's
//! `caddy` package), started from docs/deploy/Caddyfile — the file
//! docs/deployment.md shows, byte for byte — in front of `portcullis
//! serve` (the decision endpoint) and a real echo upstream.
//!
//! Each test runs its own Caddy on a free loopback port, in the
//! foreground, with the admin endpoint off, no automatic HTTPS, and its
//! home, data and config directories in the test's temp dir; no system
//! Caddy is used. Without /usr/bin/caddy the tests are skipped, unless
//! REQUIRE_BROWSER_TESTS is set (CI sets it), when they fail.

use crate::harness::*;
use crate::proxies::{
    FORGED, Proxy, Spellings, Stack, all, assert_required, seen, shown_in_deployment_doc,
};
use reqwest::blocking::Response;
use std::path::Path;
use std::process::{Command, Stdio};

/// The site block docs/deployment.md shows ("Caddy forward_auth"). The
/// tests replace the site address (`api.example.com`), Portcullis's
/// address (`127.0.0.1:8080`) and the app's (`127.0.0.1:9000`) with
/// loopback ports, and nothing else.
const CADDYFILE: &str = include_str!("../../../../docs/deploy/Caddyfile");
const CADDYFILE_PATH: &str = "docs/deploy/Caddyfile";
const CADDY: &str = "/usr/bin/caddy";

/// Lines the deployment cannot work without, each named for what breaks
/// when it goes missing.
const REQUIRED: &[(&str, &str)] = &[
    (
        "route {",
        "Caddy reorders the directives: request_header would remove the key before forward_auth sends it",
    ),
    (
        "request_header -X-Portcullis-*",
        "client-sent identity reaches the upstream",
    ),
    ("forward_auth 127.0.0.1:8080 {", "no decision is asked for"),
    (
        "uri /auth/verify",
        "the decision is asked at the wrong path",
    ),
    (
        "header_up -X-Original-URI",
        "a client-sent X-Original-URI turns the answer into 400",
    ),
    (
        "header_up -X-Original-Method",
        "a client-sent X-Original-Method turns the answer into 400",
    ),
    (
        "copy_headers X-Portcullis-Principal X-Portcullis-Kind X-Portcullis-Scopes X-Portcullis-Credential-Id X-Portcullis-Issuer",
        "the upstream does not learn who called",
    ),
    (
        r"@anonymous header_regexp X-Portcullis-Principal ^\{http\.reverse_proxy\.header\.X-Portcullis-Principal\}$",
        "before Caddy 2.9, public routes reach the upstream with placeholder text as identity",
    ),
    (
        "request_header @anonymous -X-Portcullis-*",
        "before Caddy 2.9, public routes reach the upstream with placeholder text as identity",
    ),
    (
        "request_header -X-API-Key",
        "the key is forwarded to the upstream",
    ),
    (
        "request_header -Authorization",
        "bearer credentials are forwarded to the upstream",
    ),
    (
        "reverse_proxy 127.0.0.1:9000",
        "nothing reaches the upstream",
    ),
];

#[test]
fn doc_shows_the_tested_caddyfile() {
    assert_required(CADDYFILE_PATH, CADDYFILE, REQUIRED);
    let shown = shown_in_deployment_doc("caddy", "forward_auth");
    assert_eq!(
        shown.trim_end(),
        CADDYFILE.trim_end(),
        "the Caddyfile in docs/deployment.md differs from {CADDYFILE_PATH}, which the tests run: \
         change both together"
    );
}

/// Whether Caddy can run (crate::optional).
fn caddy_available() -> bool {
    let missing: &[&str] = if Path::new(CADDY).is_file() {
        &[]
    } else {
        &[CADDY]
    };
    crate::optional::present_or_skip("Caddy test", missing, "Debian caddy")
}

/// Starts Caddy in `dir` with the documented site block, Portcullis on
/// `portcullis` and the app on `app`, and waits until it accepts
/// connections.
fn start_caddy(dir: &Path, portcullis: u16, app: u16) -> Proxy {
    let port = free_port();
    for d in ["home", "data", "config"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let mut site = CADDYFILE.to_owned();
    for (from, to) in [
        ("api.example.com {", format!("http://127.0.0.1:{port} {{")),
        ("127.0.0.1:8080", format!("127.0.0.1:{portcullis}")),
        ("127.0.0.1:9000", format!("127.0.0.1:{app}")),
    ] {
        assert_eq!(site.matches(from).count(), 1, "`{from}` in the Caddyfile");
        site = site.replace(from, &to);
    }
    // The test's own global options: no admin endpoint, no certificate
    // management (the site is plain http://), loopback only.
    let conf = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n\tstorage file_system {}\n}}\n\n{site}",
        dir.join("data").display()
    );
    let conf_path = dir.join("Caddyfile");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    let mut cmd = Command::new(CADDY);
    cmd.arg("run")
        .arg("--config")
        .arg(&conf_path)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir.join("home"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    Proxy::start("caddy", &mut cmd, port, dir.join("caddy.log"))
}

/// None when Caddy is not installed and not required.
fn stack() -> Option<Stack> {
    caddy_available().then(|| Stack::new(start_caddy))
}

/// Asserts a Portcullis denial came through Caddy intact (as
/// crate::proxies::assert_denied), and not from the upstream.
fn assert_denied(
    s: &Stack,
    r: Response,
    status: u16,
    code: &str,
) -> (Vec<String>, serde_json::Value) {
    let upstream = r.headers().get("x-upstream").is_some();
    let out = crate::proxies::assert_denied(s, r, status, code);
    assert!(!upstream, "{status} {code} came from the upstream");
    out
}

/// The forged identity fields, and one more of the prefix that the
/// Caddyfile removes as a whole.
fn forged() -> Vec<(&'static str, &'static str)> {
    let mut h = FORGED.to_vec();
    h.push(("X-Portcullis-Extra", "forged"));
    // Spellings an upstream on CGI / WSGI / Rack / PHP reads as the
    // dashed ones (nginx drops such fields by default; Caddy does not).
    h.push(("X_Portcullis_Principal", "evil"));
    h.push(("X-Portcullis_Kind", "apikey"));
    h.push(("X_Portcullis-Scopes", "admin"));
    h
}

#[test]
fn caddy_valid_key_reaches_the_upstream_with_identity_and_without_the_key() {
    let Some(s) = stack() else { return };
    let e = crate::proxies::assert_key_becomes_identity(&s, &forged());
    assert!(seen(&e, "x-portcullis-extra").is_empty(), "{e}");
    // A key has no issuer: Caddy before 2.9 would otherwise fill the
    // copied field with its placeholder's text.
    assert!(seen(&e, "x-portcullis-issuer").is_empty(), "{e}");
    crate::proxies::assert_bearer_becomes_identity(&s);

    // Key in the query: decided on from X-Forwarded-Uri, and (a limit
    // the docs state) passed on to the upstream, which Caddy cannot strip.
    let q = format!("/api/items?api_key={}", s.reader);
    let e = s.echoed(s.get(&q, &[]));
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
    assert_eq!(e["uri"], q.as_str(), "{e}");

    // forward_auth itself always asks with GET.
    crate::proxies::assert_post_keeps_its_body(&s);
    assert_eq!(s.hits(), 4);
}

#[test]
fn caddy_public_route_drops_client_sent_identity() {
    let Some(s) = stack() else { return };
    // Caddy's reverse_proxy trusts no client's forwarding fields by
    // default: it sets its own.
    let e = crate::proxies::assert_public_route_drops_client_fields(&s, &forged(), &[]);
    assert_eq!(
        seen(&e, "x-forwarded-host"),
        [format!("127.0.0.1:{}", s.proxy.port)],
        "{e}"
    );
}

#[test]
fn caddy_passes_every_portcullis_denial_through() {
    let Some(s) = stack() else { return };
    crate::proxies::assert_denials_pass_through(&s, assert_denied);

    // A client naming a public URI in X-Original-* does not change the
    // question: the Caddyfile drops those fields.
    let (ch, _) = assert_denied(
        &s,
        s.get(
            "/api/items",
            &[("X-Original-URI", "/public"), ("X-Original-Method", "GET")],
        ),
        401,
        "not_authenticated",
    );
    assert_eq!(ch.len(), 1, "{ch:?}");
    // Nor does one naming it in X-Forwarded-*: forward_auth sets those.
    assert_denied(
        &s,
        s.get(
            "/api/items",
            &[
                ("X-Forwarded-Uri", "/public"),
                ("X-Forwarded-Method", "GET"),
            ],
        ),
        401,
        "not_authenticated",
    );

    assert_eq!(s.hits(), 0, "a denied request reached the upstream");
}

/// forward_auth hands a non-2xx decision to the client as it is: the 429
/// keeps Retry-After and the RateLimit fields, and the refused request
/// reaches neither the upstream nor the counter.
#[test]
fn caddy_answers_a_rate_limited_request_with_429_and_retry_after() {
    let Some(s) = stack() else { return };
    let key = [("X-API-Key", s.reader.as_str())];
    for i in 0..2 {
        let r = s.request("POST", "/limited", &key);
        assert_eq!(r.status(), 200, "request {i}: {}", s.logs());
    }
    for _ in 0..3 {
        let r = s.request("POST", "/limited", &key);
        let ra = all(&r, "retry-after");
        let policy = all(&r, "ratelimit-policy");
        let limit = all(&r, "ratelimit");
        let (_, body) = assert_denied(&s, r, 429, "rate_limited");
        assert_eq!(ra.len(), 1, "{ra:?}");
        let secs: u64 = ra[0].parse().unwrap();
        assert!((1..=3600).contains(&secs), "{secs}");
        assert_eq!(policy, ["\"p0\";q=2;w=3600"]);
        assert_eq!(limit.len(), 1, "{limit:?}");
        assert_eq!(body["code"], "rate_limited");
    }
    // Another key still passes; only the two admitted requests arrived.
    let r = s.get("/limited", &[("X-API-Key", s.other.as_str())]);
    assert_eq!(r.status(), 200);
    assert_eq!(s.hits(), 3);
}

#[test]
fn caddy_fails_closed_when_portcullis_is_down() {
    let Some(mut s) = stack() else { return };
    crate::proxies::assert_fails_closed(&mut s);
}

#[test]
fn caddy_decision_holds_for_every_spelling_of_a_protected_path() {
    if !caddy_available() {
        return;
    }
    // The app behind Caddy routes on the decoded path; Caddy passes it the
    // request target as the client sent it, and asks Portcullis about the
    // same bytes ({http.request.uri} in X-Forwarded-Uri).
    let s = Spellings::start(start_caddy);
    s.assert_none_reaches_the_protected_resource();
    // With the key, an escaped letter is decided as /w/private/secret and
    // the upstream gets the bytes the client sent, which it decodes to
    // the same path.
    let j = s.assert_key_opens_an_escaped_spelling();
    assert_eq!(j["raw"], "/w/%70rivate/secret", "{j}");
    // Caddy passes dot segments through unresolved; Portcullis refuses
    // them (as the gateway does) rather than guess how the app resolves
    // them, so nothing reaches the upstream.
    for p in [
        "/w/x/../private/secret",
        "/w/./private/secret",
        "/w/x/%2e%2e/private/secret",
    ] {
        let (status, body) = s.with_key(p);
        assert_eq!(status, 400, "{p}: {body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["code"], "path_not_normalized", "{p}: {j}");
    }
}
