//! nginx `auth_request` in front of Portcullis: a real nginx, started from
//! the snippet that docs/deployment.md shows, in front of `portcullis serve`
//! (the decision endpoint) and a real echo upstream.
//!
//! nginx must be installed (`scripts/install-test-deps.sh`). Each test runs
//! its own nginx on a free loopback port, in the foreground, with its pid,
//! logs and temp files in the test's temp dir; no system nginx is used.

use crate::harness::*;
use crate::proxies::{
    FORGED, Proxy, Spellings, Stack, all, assert_denied, assert_required, seen,
    shown_in_deployment_doc,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The nginx configuration the docs show (docs/deployment.md, "nginx
/// auth_request"), byte for byte: `doc_shows_the_tested_nginx_snippet`
/// fails if the two differ. It goes inside `http { }`. The tests replace
/// `listen 80;`, Portcullis's address (`127.0.0.1:8080`) and the app's
/// (`127.0.0.1:9000`) with free ports, and nothing else.
const NGINX_SNIPPET: &str = r#"# Portcullis's public listener: it answers GET /auth/verify.
upstream portcullis {
    server 127.0.0.1:8080;
    keepalive 16;
}

# The application Portcullis protects.
upstream app {
    server 127.0.0.1:9000;
}

# auth_request already copies WWW-Authenticate from a 401 decision; for
# every other denial it is copied from Portcullis's second answer.
map $status $portcullis_challenge {
    401     "";
    default $upstream_http_www_authenticate;
}

server {
    listen 80;

    location / {
        auth_request /_portcullis;
        auth_request_set $pc_principal $upstream_http_x_portcullis_principal;
        auth_request_set $pc_kind $upstream_http_x_portcullis_kind;
        auth_request_set $pc_scopes $upstream_http_x_portcullis_scopes;
        auth_request_set $pc_credential $upstream_http_x_portcullis_credential_id;
        auth_request_set $pc_issuer $upstream_http_x_portcullis_issuer;
        auth_request_set $pc_status $upstream_http_x_portcullis_status;
        auth_request_set $pc_error $upstream_http_x_portcullis_error;
        auth_request_set $pc_retry_after $upstream_http_retry_after;
        auth_request_set $pc_ratelimit $upstream_http_ratelimit;
        auth_request_set $pc_ratelimit_policy $upstream_http_ratelimit_policy;
        error_page 401 403 500 = @portcullis_denied;
        add_header RateLimit $pc_ratelimit;
        add_header RateLimit-Policy $pc_ratelimit_policy;

        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Forwarded "";
        # Headers that make an app re-method or re-route a request after
        # Portcullis decided on its method and path.
        proxy_set_header X-HTTP-Method-Override "";
        proxy_set_header X-HTTP-Method "";
        proxy_set_header X-Method-Override "";
        proxy_set_header X-Original-URL "";
        proxy_set_header X-Rewrite-URL "";
        proxy_set_header X-API-Key "";
        proxy_set_header Authorization "";
        proxy_set_header X-Portcullis-Principal $pc_principal;
        proxy_set_header X-Portcullis-Kind $pc_kind;
        proxy_set_header X-Portcullis-Scopes $pc_scopes;
        proxy_set_header X-Portcullis-Credential-Id $pc_credential;
        proxy_set_header X-Portcullis-Issuer $pc_issuer;
        proxy_pass http://app;
    }

    location = /_portcullis {
        internal;
        proxy_pass http://portcullis/auth/verify;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
    }

    location @portcullis_denied {
        # 429 (rate limit or quota) is answered from the first decision:
        # asking again could be admitted, and would be counted.
        default_type application/problem+json;
        add_header Retry-After $pc_retry_after always;
        add_header RateLimit $pc_ratelimit always;
        add_header RateLimit-Policy $pc_ratelimit_policy always;
        if ($pc_status = 429) {
            return 429 '{"type":"https://portcullis.dev/errors/$pc_error","title":"Too Many Requests","status":429,"detail":"Too many requests; retry after the time in Retry-After","code":"$pc_error"}';
        }
        rewrite ^ /auth/verify break;
        proxy_method GET;
        proxy_pass http://portcullis;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
        proxy_hide_header WWW-Authenticate;
        proxy_hide_header Retry-After;
        proxy_hide_header RateLimit;
        proxy_hide_header RateLimit-Policy;
        add_header WWW-Authenticate $portcullis_challenge always;
    }
}
"#;

/// Lines the deployment cannot work without, each named for what breaks
/// when it goes missing. Checked in the template and in the doc's snippet.
const REQUIRED: &[(&str, &str)] = &[
    ("auth_request /_portcullis;", "no decision is asked for"),
    (
        "error_page 401 403 500 = @portcullis_denied;",
        "denials other than 401/403 become 500, and bodies are nginx's",
    ),
    (
        "location @portcullis_denied {",
        "no named location for denials",
    ),
    (
        "rewrite ^ /auth/verify break;",
        "a named location cannot proxy_pass with a URI",
    ),
    (
        "proxy_method GET;",
        "the re-ask would carry the client's method",
    ),
    ("internal;", "clients could call the auth location directly"),
    (
        "proxy_pass_request_body off;",
        "bodies are sent to Portcullis",
    ),
    (
        "proxy_set_header Content-Length \"\";",
        "a length without a body",
    ),
    (
        "proxy_set_header X-Original-URI $request_uri;",
        "Portcullis cannot see the original URI",
    ),
    (
        "proxy_set_header X-Original-Method $request_method;",
        "Portcullis cannot see the original method",
    ),
    (
        "proxy_set_header X-API-Key \"\";",
        "the key is forwarded to the upstream",
    ),
    (
        "proxy_set_header Authorization \"\";",
        "bearer credentials are forwarded to the upstream",
    ),
    (
        "auth_request_set $pc_principal $upstream_http_x_portcullis_principal;",
        "identity is not captured",
    ),
    (
        "proxy_set_header X-Portcullis-Principal $pc_principal;",
        "client-sent identity reaches the upstream",
    ),
    (
        "proxy_set_header X-Portcullis-Kind $pc_kind;",
        "client-sent identity reaches the upstream",
    ),
    (
        "proxy_set_header X-Portcullis-Scopes $pc_scopes;",
        "client-sent scopes reach the upstream",
    ),
    (
        "proxy_set_header X-Portcullis-Credential-Id $pc_credential;",
        "client-sent credential ids reach the upstream",
    ),
    (
        "proxy_hide_header WWW-Authenticate;",
        "a 401 carries WWW-Authenticate twice",
    ),
    (
        "add_header WWW-Authenticate $portcullis_challenge always;",
        "a 403 loses its insufficient_scope challenge",
    ),
    (
        "auth_request_set $pc_status $upstream_http_x_portcullis_status;",
        "a 429 cannot be told from other failures",
    ),
    (
        "if ($pc_status = 429) {",
        "a rate-limited client gets 500, or is counted again",
    ),
    (
        "add_header Retry-After $pc_retry_after always;",
        "a 429 comes without Retry-After",
    ),
];

#[test]
fn doc_shows_the_tested_nginx_snippet() {
    assert_required("the test's nginx template", NGINX_SNIPPET, REQUIRED);
    let shown = shown_in_deployment_doc("nginx", "auth_request");
    assert_required("the nginx snippet in docs/deployment.md", &shown, REQUIRED);
    assert_eq!(
        shown.trim_end(),
        NGINX_SNIPPET.trim_end(),
        "the nginx snippet in docs/deployment.md differs from the one the tests run \
         (NGINX_SNIPPET in tests/it/nginx.rs): change both together"
    );
}

/// The nginx binary, or a panic telling how to install it.
fn nginx_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| panic!("nginx not installed: run scripts/install-test-deps.sh"))
}

/// Starts nginx in `prefix` with the documented snippet, Portcullis on
/// `portcullis` and the app on `app`, and waits until it accepts
/// connections.
fn start_nginx(prefix: &Path, portcullis: u16, app: u16) -> Proxy {
    let bin = nginx_bin();
    let port = free_port();
    for p in ["logs", "tmp"] {
        std::fs::create_dir_all(prefix.join(p)).unwrap();
    }
    let mut snippet = NGINX_SNIPPET.to_owned();
    for (from, to) in [
        ("listen 80;", format!("listen 127.0.0.1:{port};")),
        (
            "server 127.0.0.1:8080;",
            format!("server 127.0.0.1:{portcullis};"),
        ),
        ("server 127.0.0.1:9000;", format!("server 127.0.0.1:{app};")),
    ] {
        assert_eq!(snippet.matches(from).count(), 1, "`{from}` in the snippet");
        snippet = snippet.replace(from, &to);
    }
    let d = prefix.display();
    let conf = format!(
        "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {d}/logs/nginx.pid;\n\
             error_log {d}/logs/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log {d}/logs/access.log;\n\
             client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n\
             fastcgi_temp_path {d}/tmp/fastcgi;\n\
             uwsgi_temp_path {d}/tmp/uwsgi;\n\
             scgi_temp_path {d}/tmp/scgi;\n\
             default_type application/octet-stream;\n\
             {snippet}\n\
             }}\n"
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proxy::start("nginx", &mut cmd, port, prefix.join("logs/error.log"))
}

fn stack() -> Stack {
    Stack::new(start_nginx)
}

#[test]
fn nginx_valid_key_reaches_the_upstream_with_identity_and_without_the_key() {
    let s = stack();
    crate::proxies::assert_key_becomes_identity(&s, FORGED);
    crate::proxies::assert_bearer_becomes_identity(&s);
    // Only the auth subrequest drops the body.
    crate::proxies::assert_post_keeps_its_body(&s);
    assert_eq!(s.hits(), 3);
}

#[test]
fn nginx_public_route_drops_client_sent_identity() {
    let s = stack();
    let e = crate::proxies::assert_public_route_drops_client_fields(
        &s,
        FORGED,
        &[("X-Real-IP", "203.0.113.66")],
    );
    assert_eq!(seen(&e, "x-real-ip"), ["127.0.0.1"], "{e}");
    assert_eq!(seen(&e, "x-forwarded-host"), ["127.0.0.1"], "{e}");
}

#[test]
fn nginx_passes_every_portcullis_denial_through() {
    let s = stack();
    crate::proxies::assert_denials_pass_through(&s, assert_denied);

    // A key and a bearer token: 400 too.
    let bearer = format!("Bearer {}", s.other);
    assert_denied(
        &s,
        s.get(
            "/api/items",
            &[("X-API-Key", &s.reader), ("Authorization", &bearer)],
        ),
        400,
        "ambiguous_credentials",
    );

    // The auth location is internal: a client cannot ask it directly.
    let r = s.get("/_portcullis", &[("X-Original-URI", "/public")]);
    assert_eq!(r.status(), 404);

    assert!(!s.proxy.log().contains("[emerg]"), "{}", s.proxy.log());
    assert_eq!(s.hits(), 0, "a denied request reached the upstream");
}

/// auth_request turns a 429 into a 500; the snippet gives the client the
/// real 429, with Retry-After and the RateLimit fields of the decision,
/// and the refused request reaches neither the upstream nor the counter.
#[test]
fn nginx_answers_a_rate_limited_request_with_429_and_retry_after() {
    let s = stack();
    let key = [("X-API-Key", s.reader.as_str())];
    for i in 0..2 {
        let r = s.request("POST", "/limited", &key);
        assert_eq!(r.status(), 200, "request {i}: {}", s.logs());
        assert_eq!(all(&r, "ratelimit-policy"), ["\"p0\";q=2;w=3600"]);
        assert!(all(&r, "ratelimit")[0].starts_with(&format!("\"p0\";r={};", 1 - i)));
    }
    for _ in 0..3 {
        let r = s.request("POST", "/limited", &key);
        assert_eq!(r.status(), 429, "{}", s.logs());
        let ra = all(&r, "retry-after");
        assert_eq!(ra.len(), 1, "{ra:?}");
        let secs: u64 = ra[0].parse().unwrap();
        assert!((1..=3600).contains(&secs), "{secs}");
        assert_eq!(all(&r, "ratelimit-policy"), ["\"p0\";q=2;w=3600"]);
        assert_eq!(all(&r, "ratelimit").len(), 1);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["status"], 429);
        assert_eq!(body["code"], "rate_limited");
    }
    // Another key still passes; only the two admitted requests arrived.
    let r = s.get("/limited", &[("X-API-Key", s.other.as_str())]);
    assert_eq!(r.status(), 200);
    assert_eq!(s.hits(), 3);
    // Other denials still go through the re-ask, one Retry-After at most.
    let r = s.get("/limited", &[]);
    assert_eq!(r.status(), 401);
    assert!(all(&r, "retry-after").is_empty());
}

#[test]
fn nginx_refuses_a_revoked_key_within_1_5_s() {
    let s = stack();
    let key = [("X-API-Key", s.reader.as_str())];
    s.echoed(s.get("/api/items", &key));
    let id = crate::proxies::key_id(&s.env, "reader");
    let o = s.env.cli(&["keys", "revoke", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Until the running server has synced (at most the sync interval plus
    // one query) the key still passes; after that it must be refused.
    let took = within(Duration::from_secs(30), || {
        let status = s.get("/api/items", &key).status().as_u16();
        assert!(status == 200 || status == 401, "got {status}\n{}", s.logs());
        status == 401
    });
    assert!(
        took.is_some(),
        "revocation never seen through nginx\n{}",
        s.logs()
    );
    let hits = s.hits();
    assert_denied(&s, s.get("/api/items", &key), 401, "invalid_credentials");
    assert_eq!(s.hits(), hits, "a revoked key reached the upstream");
}

#[test]
fn nginx_fails_closed_when_portcullis_is_down() {
    crate::proxies::assert_fails_closed(&mut stack());
}

#[test]
fn nginx_decision_holds_for_every_spelling_of_a_protected_path() {
    // The app behind nginx routes on the decoded path; nginx passes it the
    // request target as the client sent it, and asks Portcullis about
    // the same bytes ($request_uri).
    let s = Spellings::start(start_nginx);
    s.assert_none_reaches_the_protected_resource();
    s.assert_key_opens_an_escaped_spelling();
}
