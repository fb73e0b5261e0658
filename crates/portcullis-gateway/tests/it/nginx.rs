//! nginx `auth_request` in front of Portcullis: a real nginx, started from
//! the snippet that docs/deployment.md shows, in front of `portcullis serve`
//! (the decision endpoint) and a real echo upstream.
//!
//! nginx must be installed (`scripts/install-test-deps.sh`). Each test runs
//! its own nginx on a free loopback port, in the foreground, with its pid,
//! logs and temp files in the test's temp dir; no system nginx is used.

use crate::harness::*;
use reqwest::blocking::Response;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deployment.md");

/// Every line with its runs of whitespace collapsed, so alignment does
/// not matter when looking for a directive.
fn normalized_lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn assert_required(what: &str, text: &str) {
    let lines = normalized_lines(text);
    for (directive, why) in REQUIRED {
        assert!(
            lines.iter().any(|l| l == directive),
            "{what} lacks `{directive}` (without it: {why})"
        );
    }
}

/// The fenced ```nginx blocks of a markdown text.
fn nginx_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```nginx") => cur = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => out.extend(cur.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    out
}

#[test]
fn doc_shows_the_tested_nginx_snippet() {
    assert_required("the test's nginx template", NGINX_SNIPPET);
    let doc =
        std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("cannot read {DOC_PATH}: {e}"));
    let blocks = nginx_blocks(&doc);
    let with_auth: Vec<&String> = blocks
        .iter()
        .filter(|b| b.contains("auth_request"))
        .collect();
    assert_eq!(
        with_auth.len(),
        1,
        "docs/deployment.md should show exactly one ```nginx block with auth_request"
    );
    let shown = with_auth[0];
    assert_required("the nginx snippet in docs/deployment.md", shown);
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

/// A running nginx; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    prefix: PathBuf,
}

impl Nginx {
    /// Starts nginx in `prefix` with the documented snippet, Portcullis on
    /// `portcullis` and the app on `app`, and waits until it accepts
    /// connections.
    fn start(prefix: &Path, portcullis: u16, app: u16) -> Nginx {
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
        let child = Command::new(&bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut n = Nginx {
            child,
            port,
            prefix: prefix.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", n.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port}:\n{}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        n
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn routes(app: u16) -> String {
    format!(
        r#"
[credentials]
# Only so that a key in both the header and the query can be shown to be
# refused as ambiguous; see docs/deployment.md on query keys behind nginx.
allow_query_keys = true

[[routes]]
path = "/api/**"
methods = ["GET", "POST"]
upstream = "http://127.0.0.1:{app}"
auth = ["api_key_header", "api_key_query", "bearer"]
scopes = ["data:read"]

[[routes]]
path = "/reports/**"
methods = ["GET"]
upstream = "http://127.0.0.1:{app}"
auth = ["api_key_header", "bearer"]
scopes = ["reports:read"]

[[routes]]
path = "/public"
methods = ["GET"]
upstream = "http://127.0.0.1:{app}"
auth = []

[[routes]]
path = "/limited"
methods = ["GET", "POST"]
upstream = "http://127.0.0.1:{app}"
auth = ["api_key_header"]
rate_limit = "2/hour"
"#
    )
}

/// Echo upstream, Portcullis and nginx, in that order; dropped in reverse
/// (nginx first, then Portcullis, then the temp dir).
struct Stack {
    nginx: Nginx,
    server: Option<Server>,
    up: Upstream,
    env: Env,
    /// Scopes `data:read`.
    reader: String,
    /// Also `data:read`; a second, different key.
    other: String,
}

impl Stack {
    fn new() -> Stack {
        let up = upstream();
        let app = up.addr.port();
        let env = Env::new(&routes(app));
        env.init();
        let reader = env.create_key(&["--name", "reader", "--scopes", "data:read"]);
        let other = env.create_key(&["--name", "other", "--scopes", "data:read"]);
        let server = env.serve();
        let nginx = Nginx::start(&env.dir.path().join("nginx"), env.port, app);
        Stack {
            nginx,
            server: Some(server),
            up,
            env,
            reader,
            other,
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = client().request(m, self.nginx.url(path));
        for (n, v) in headers {
            rb = rb.header(*n, *v);
        }
        rb.send().unwrap()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }

    fn hits(&self) -> usize {
        self.up.hits.load(Ordering::SeqCst)
    }

    /// What went wrong, for assertion messages.
    fn logs(&self) -> String {
        format!(
            "--- nginx error.log ---\n{}\n--- portcullis ---\n{}",
            self.nginx.error_log(),
            self.server.as_ref().map(Server::log).unwrap_or_default()
        )
    }

    fn key_id(&self, name: &str) -> String {
        let o = self.env.cli(&["keys", "list", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("no key named {name} in {list}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// All values of a response header.
fn all(r: &Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Asserts a Portcullis denial came through nginx intact: status, problem
/// JSON body, error code. Returns the WWW-Authenticate values and body.
fn assert_denied(
    s: &Stack,
    r: Response,
    status: u16,
    code: &str,
) -> (Vec<String>, serde_json::Value) {
    let got = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let err = all(&r, "x-portcullis-error");
    let challenges = all(&r, "www-authenticate");
    let text = r.text().unwrap();
    assert_eq!(
        got,
        status,
        "expected {status} {code}, body {text}\n{}",
        s.logs()
    );
    assert!(
        ct.starts_with("application/problem+json"),
        "{status} {code}: content-type {ct:?}, body {text}"
    );
    assert_eq!(err, vec![code.to_owned()], "{status}: X-Portcullis-Error");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    (challenges, body)
}

/// What the echo upstream saw.
fn echoed(r: Response) -> serde_json::Value {
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-upstream").map(|v| v.to_str().unwrap()),
        Some("yes"),
        "the answer did not come from the upstream"
    );
    r.json().unwrap()
}

/// The values the upstream saw for one header (absent = empty).
fn seen(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn nginx_valid_key_reaches_the_upstream_with_identity_and_without_the_key() {
    let s = Stack::new();
    let id = s.key_id("reader");

    // Key in X-API-Key, with forged identity headers from the client.
    let r = s.get(
        "/api/items?page=2",
        &[
            ("X-API-Key", &s.reader),
            ("X-Portcullis-Principal", "evil"),
            ("X-Portcullis-Kind", "admin"),
            ("X-Portcullis-Scopes", "admin"),
            ("X-Portcullis-Credential-Id", "key_forged"),
        ],
    );
    let e = echoed(r);
    assert_eq!(e["method"], "GET");
    assert_eq!(e["uri"], "/api/items?page=2");
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
    assert_eq!(seen(&e, "x-portcullis-kind"), ["api_key"], "{e}");
    assert_eq!(seen(&e, "x-portcullis-scopes"), ["data:read"], "{e}");
    assert_eq!(seen(&e, "x-portcullis-credential-id"), [id.as_str()], "{e}");
    assert!(
        seen(&e, "x-api-key").is_empty(),
        "the key reached the upstream: {e}"
    );
    assert!(
        !e.to_string().contains(&s.reader),
        "the key reached the upstream: {e}"
    );

    // Key as a bearer token; the Authorization header is not forwarded.
    let bearer = format!("Bearer {}", s.reader);
    let e = echoed(s.get("/api/items", &[("Authorization", &bearer)]));
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
    assert!(seen(&e, "authorization").is_empty(), "{e}");

    // The original method is what Portcullis decides on, and the body
    // still reaches the upstream (only the auth subrequest drops it).
    let r = client()
        .post(s.nginx.url("/api/items"))
        .header("X-API-Key", &s.reader)
        .body("hello=1")
        .send()
        .unwrap();
    let e = echoed(r);
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body"], "hello=1");
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
    assert_eq!(s.hits(), 3);
}

#[test]
fn nginx_public_route_drops_client_sent_identity() {
    let s = Stack::new();
    let e = echoed(s.get(
        "/public",
        &[
            ("X-Portcullis-Principal", "evil"),
            ("X-Portcullis-Kind", "admin"),
            ("X-Portcullis-Scopes", "admin"),
            ("X-Portcullis-Credential-Id", "key_forged"),
            ("X-Forwarded-For", "203.0.113.66"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Real-IP", "203.0.113.66"),
            ("Forwarded", "for=203.0.113.66"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-Original-URL", "/api/x"),
        ],
    ));
    for h in [
        "x-portcullis-principal",
        "x-portcullis-kind",
        "x-portcullis-scopes",
        "x-portcullis-credential-id",
        "forwarded",
        "x-http-method-override",
        "x-original-url",
    ] {
        assert!(seen(&e, h).is_empty(), "{h} reached the upstream: {e}");
    }
    assert_eq!(seen(&e, "x-forwarded-for"), ["127.0.0.1"], "{e}");
    assert_eq!(seen(&e, "x-real-ip"), ["127.0.0.1"], "{e}");
    assert_eq!(seen(&e, "x-forwarded-proto"), ["http"], "{e}");
    assert_eq!(seen(&e, "x-forwarded-host"), ["127.0.0.1"], "{e}");
}

#[test]
fn nginx_passes_every_portcullis_denial_through() {
    let s = Stack::new();

    // No key: 401, FastAPI's detail, one challenge naming the schemes.
    let (ch, body) = assert_denied(&s, s.get("/api/items", &[]), 401, "not_authenticated");
    assert_eq!(body["detail"], "Not authenticated");
    assert_eq!(ch.len(), 1, "one WWW-Authenticate, got {ch:?}");
    assert!(
        ch[0].contains("APIKey") && ch[0].contains("Bearer"),
        "{ch:?}"
    );

    // A made-up key: 401 with the generic detail.
    let (ch, _) = assert_denied(
        &s,
        s.get("/api/items", &[("X-API-Key", "pc_live_madeup")]),
        401,
        "invalid_credentials",
    );
    assert_eq!(ch.len(), 1, "one WWW-Authenticate, got {ch:?}");

    // A good key without the route's scope: 403 and its challenge.
    let (ch, _) = assert_denied(
        &s,
        s.get("/reports/q1", &[("X-API-Key", &s.reader)]),
        403,
        "insufficient_scope",
    );
    assert_eq!(ch.len(), 1, "one WWW-Authenticate, got {ch:?}");
    assert!(
        ch[0].contains("insufficient_scope") && ch[0].contains("reports:read"),
        "{ch:?}"
    );

    // Two credentials: 400, not the 500 auth_request would make of it.
    let q = format!("/api/items?api_key={}", s.other);
    assert_denied(
        &s,
        s.get(&q, &[("X-API-Key", &s.reader)]),
        400,
        "ambiguous_credentials",
    );
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

    // No route: 404, not 500.
    assert_denied(
        &s,
        s.get("/nowhere", &[("X-API-Key", &s.reader)]),
        404,
        "not_found",
    );

    // Method not on the route: 405 with Allow.
    let r = s.request("DELETE", "/api/items", &[("X-API-Key", &s.reader)]);
    let allow = all(&r, "allow");
    assert_denied(&s, r, 405, "method_not_allowed");
    assert_eq!(allow.len(), 1);
    assert!(
        allow[0].contains("GET") && allow[0].contains("POST"),
        "{allow:?}"
    );

    // The auth location is internal: a client cannot ask it directly.
    let r = s.get("/_portcullis", &[("X-Original-URI", "/public")]);
    assert_eq!(r.status(), 404);

    assert!(
        !s.nginx.error_log().contains("[emerg]"),
        "{}",
        s.nginx.error_log()
    );
    assert_eq!(s.hits(), 0, "a denied request reached the upstream");
}

/// auth_request turns a 429 into a 500; the snippet gives the client the
/// real 429, with Retry-After and the RateLimit fields of the decision,
/// and the refused request reaches neither the upstream nor the counter.
#[test]
fn nginx_answers_a_rate_limited_request_with_429_and_retry_after() {
    let s = Stack::new();
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
    let s = Stack::new();
    let key = [("X-API-Key", s.reader.as_str())];
    echoed(s.get("/api/items", &key));
    let id = s.key_id("reader");
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
    let mut s = Stack::new();
    echoed(s.get("/api/items", &[("X-API-Key", &s.reader)]));
    s.server.take().unwrap().stop();
    let r = s.get("/api/items", &[("X-API-Key", &s.reader)]);
    assert_eq!(r.status(), 502, "{}", s.logs());
    assert!(r.headers().get("x-upstream").is_none());
    assert_eq!(
        s.hits(),
        1,
        "the request reached the upstream without a decision"
    );
}

#[test]
fn nginx_decision_holds_for_every_spelling_of_a_protected_path() {
    use crate::boundary::{DecodingUpstream, private_spellings, protected_config, raw_get};
    // The app behind nginx routes on the decoded path; nginx passes it the
    // request target as the client sent it, and asks Portcullis about
    // the same bytes ($request_uri).
    let up = DecodingUpstream::start();
    let env = Env::new(&protected_config(up.port));
    env.init();
    let key = env.create_key(&["--name", "reader"]);
    let srv = env.serve();
    let nginx = Nginx::start(&env.dir.path().join("nginx"), env.port, up.port);
    let mut challenged = 0;
    for p in private_spellings() {
        let (status, body) = raw_get(nginx.port, &p, &[]);
        if status == 200 {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                j["served"],
                "public",
                "{p:?} reached the protected resource through nginx without a key: {j}\n{}\n{}",
                nginx.error_log(),
                srv.log()
            );
        } else if status == 401 {
            challenged += 1;
        } else {
            assert!(
                matches!(status, 400 | 404),
                "{p:?}: unexpected {status}: {body}"
            );
        }
    }
    assert!(challenged > 250, "{challenged} challenged");
    let (status, body) = raw_get(nginx.port, "/w/%70rivate/secret", &[("X-API-Key", &key)]);
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["served"], "private", "{j}");
}
